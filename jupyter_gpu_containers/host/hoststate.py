"""The host-wide state every Jupyter server on a host shares: the GPU allocation lock, and which
servers are alive.

A shared GPU host has many local accounts, and every one of them may be hostile (README,
Security). So this state lives in one fixed directory that root provisions, never in a path a
user could create first (a directory under /tmp belongs to whoever makes it, and follows TMPDIR,
which differs per user under pam_tmpdir or systemd's PrivateTmp):

    /run/jupyter-gpu-containers    owner root, group docker, mode 1770

(``jupyter gpu-containers setup-host`` makes it, and installs a tmpfiles.d entry so that it
comes back after a reboot; ``ContainerPolicy.state_dir`` names another one.)

- Only root, or the service account an administrator names (``ContainerPolicy.state_dir_owner``),
  may own it; nobody outside its group may enter it; its group may create files but, the
  directory being sticky, remove or rename only their own. A directory that is not so is refused
  with a sentence, and so is GPU allocation with it (CPU kernels still start).
- **The allocation lock is an flock on the directory itself.** Opening it needs its group, so no
  one outside the docker group can hold it (and the docker group is root-equivalent anyway).
  Waiting for it polls on the event loop: a held lock occupies no thread, and cannot slow any
  other request.
- **Liveness.** Each server creates ``server-<id>.lock`` with ``O_EXCL | O_NOFOLLOW``, mode 0600,
  and holds an exclusive flock on it for its lifetime; the kernel drops it when the process dies,
  however it dies. Nobody else can open the file, so nobody can fake a live server (hold the
  lock of a dead one) or hide one (hold a shared lock that makes a live one unclaimable, or look
  dead to a test that takes it). Other servers read whether it is held from /proc/locks, which
  lists every flock by device and inode. A name another user took first is never used: the server
  serves under another id, and says so.

When the shared directory cannot be used, liveness goes to a private directory of the server's
user (its own servers still see each other) and GPU allocation is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import grp
import os
import re
import secrets
import stat
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from jupyter_core.paths import jupyter_runtime_dir

from ..base.errors import ContainerKernelError, PathRefused
from ..base.safefiles import account_uid, describe_mode, open_dir, owner_name, private_dir

DEFAULT_STATE_DIR = "/run/jupyter-gpu-containers"
DEFAULT_GROUP = "docker"
TMPFILES_PATH = "/etc/tmpfiles.d/jupyter-gpu-containers.conf"

# Server ids name files: what a kernel id may hold, and the fallback's ".<pid>.<random>".
_SERVER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,159}")


# The options that say where the host state directory is, and whose it may be.
STATE_DIR = "ContainerPolicy.state_dir"
STATE_DIR_OWNER = "ContainerPolicy.state_dir_owner"


class StateDirUnusable(ContainerKernelError):
    """The host-wide state directory is missing or not provisioned safely."""

    status = 503
    reason_phrase = "GPU allocation unavailable"


class AllocationBusy(ContainerKernelError):
    status = 503
    reason_phrase = "GPU allocation busy"


def server_lock_name(server_id: str) -> str:
    if not _SERVER_ID.fullmatch(server_id):
        raise PathRefused(
            f"{server_id!r} cannot be a server id: use letters, digits, '.', '_' and '-'.",
            setting="ContainerPolicy.server_id",
        )
    return f"server-{server_id}.lock"


def service_uid(owner: str) -> int | None:
    """The uid of ContainerPolicy.state_dir_owner ("" for root only)."""
    if not owner:
        return None
    if owner.isdigit():
        return int(owner)
    found = account_uid(owner)
    if found is None:
        raise PathRefused(
            f"The account named as the owner of the host state directory, {owner!r}, is no user "
            "on this host.",
            setting=STATE_DIR_OWNER,
        )
    return found


@dataclass
class StateDir:
    """An open, verified state directory. ``problem`` is "" for the host-wide one; otherwise it
    says why the host-wide one could not be used, and ``path`` is this user's private one
    (liveness among its own servers only, no GPU allocation)."""

    path: str
    fd: int
    problem: str = ""
    problem_setting: str = ""  # the option that decided the problem, for the log
    # The user's own directory by design, not for want of the host's: the engine shows each user
    # only their own containers (rootless Podman), so GPUs are booked among this user's kernels.
    per_user: bool = False
    _locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = field(
        default_factory=weakref.WeakKeyDictionary, repr=False
    )
    # Server id -> the descriptor holding its lock, for as long as this object is open.
    _held: dict[str, int] = field(default_factory=dict, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Serialises this process's writes of its own files here (privateimages.py).
    write_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # What readers of this directory's files keep between readings, by what they read (the
    # queue's parsed tickets: tickets.py): gone with this object.
    readings: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def shared(self) -> bool:
        return not self.problem

    @property
    def identity(self) -> str:
        """Which directory this is, by any path to it (its device and inode), as a kernel
        container's label records it (labels.STATE_DIR); "" when it cannot be read."""
        try:
            info = os.fstat(self.fd)
        except OSError:
            return ""
        return f"{info.st_dev}:{info.st_ino}"

    def service_uids(self) -> frozenset[int]:
        """Who may write records here for any user: root, and the directory's owner (root, or
        the kernel service's account, ContainerPolicy.state_dir_owner). Their files are
        believed whatever user they concern; anyone else's only for that user themselves."""
        try:
            return frozenset({0, os.fstat(self.fd).st_uid})
        except OSError:
            return frozenset({0})

    def require_shared(self) -> None:
        """Refuse GPU allocation unless this is the host-wide directory."""
        if self.problem:
            raise StateDirUnusable(self.problem, setting=self.problem_setting)

    # ---------------------------------------------------------------- allocation lock

    @contextlib.asynccontextmanager
    async def allocation_lock(
        self, timeout: float, on_wait: Callable[[], None] | None = None
    ) -> AsyncIterator[None]:
        """Hold the host-wide allocation lock. The wait is a coroutine that polls with a
        non-blocking flock: no thread waits, however many launches do, and however long another
        process holds the lock. One waiter per process polls; the others wait behind it.
        ``on_wait`` is called once if the lock is not free at once."""
        self.require_shared()
        loop = asyncio.get_running_loop()
        local = self._locks.setdefault(loop, asyncio.Lock())
        deadline = loop.time() + timeout
        waiting = False
        if local.locked() and on_wait is not None:
            waiting = True
            on_wait()
        async with local:
            delay = 0.002
            while True:
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waiting and on_wait is not None:
                        waiting = True
                        on_wait()
                if loop.time() >= deadline:
                    raise AllocationBusy(
                        f"Could not take the host-wide GPU allocation lock ({self.path}) within "
                        f"{timeout:.0f} s: another server is holding it. Try again."
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
            try:
                yield
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)

    # ---------------------------------------------------------------- liveness

    def claim(self, server_id: str) -> bool:
        """Hold ``server_id`` for this process's lifetime. False when another live process of
        this user holds it, or another user took its name first."""
        with self._guard:
            if server_id in self._held:
                return True
            name = server_lock_name(server_id)
            fd = _open_own_lock(self.fd, name)
            if fd is None:
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._held[server_id] = fd  # kept open: the lock lives until close() or exit
            return True

    def close(self) -> None:
        """Release every server id this object holds (its files stay, for the next start of
        this user's server to reuse) and the directory."""
        with self._guard:
            for fd in self._held.values():
                os.close(fd)
            self._held.clear()
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def claim_or_fallback(self, server_id: str) -> str:
        """The id this process serves under: ``server_id`` when free, else a per-process id
        (another live server of this user serves ``server_id``, or someone took its name)."""
        if self.claim(server_id):
            return server_id
        for fallback in (f"{server_id}.{os.getpid()}", f"{server_id}.{secrets.token_hex(4)}"):
            if self.claim(fallback):
                return fallback
        raise PathRefused(
            f"No server id could be claimed in {self.path}: its names are taken by another user."
        )

    def alive_servers(
        self, servers: Iterable[tuple[str, str | int | None]]
    ) -> dict[tuple[str, str | int | None], bool]:
        """:meth:`is_alive` of each (server id, uid), with /proc/locks read once (the admin
        view and quotas ask about every holder's server). Blocking: a worker thread."""
        locks = flocked_files()
        return {(sid, uid): self.is_alive(sid, uid, locks) for sid, uid in set(servers)}

    def is_alive(
        self, server_id: str, uid: str | int | None = None, locks: frozenset[str] | None = None
    ) -> bool:
        """Whether a live process holds ``server_id`` here. ``uid``: the user the id belongs to
        (from the container's labels); a file of another owner is no proof of life. ``locks``:
        :func:`flocked_files`, when the caller asks about many ids (read once)."""
        if server_id in self._held:
            return True
        try:
            name = server_lock_name(server_id)
            info = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except (OSError, ContainerKernelError):
            return False
        if not stat.S_ISREG(info.st_mode):
            return False
        if uid not in (None, "") and str(info.st_uid) != str(uid):
            return False
        held = flock_held(info, locks if locks is not None else flocked_files())
        if held is not None:
            return held
        # No /proc/locks (unusual): only a file of our own can be tested by taking its lock.
        if info.st_uid != os.geteuid():
            return True  # cannot tell: never judge another user's server dead
        fd = _open_own_lock(self.fd, name, create=False)
        if fd is None:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also drops the lock we may have taken
        return False


def _open_own_lock(dir_fd: int, name: str, create: bool = True) -> int | None:
    """A lock file of this user's at ``name``: created O_EXCL|O_NOFOLLOW 0600, or an existing one
    that is a regular file of ours, 0600, with one link. None when the name is taken by anything
    else (another user's file, a symlink, a hard link): it is never used, and never chmod-ed."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    if create:
        try:
            return os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            pass
    try:
        fd = os.open(name, flags | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return None  # not ours to open (another user's), or a symlink (ELOOP)
    info = os.fstat(fd)
    if (
        not stat.S_ISREG(info.st_mode)
        or info.st_uid != os.geteuid()
        or info.st_nlink != 1
        or stat.S_IMODE(info.st_mode) != 0o600
    ):
        os.close(fd)
        return None
    return fd


def flocked_files() -> frozenset[str] | None:
    """Every file some process holds an flock on, as /proc/locks names them ("fe:00:5678":
    device major and minor in hex, inode); None when /proc/locks cannot be read."""
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    held = set()
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; "1: -> FLOCK …" lines are waiters.
        if len(fields) >= 6 and fields[1] == "FLOCK":
            held.add(fields[5])
    return frozenset(held)


def flock_held(info: os.stat_result, locks: frozenset[str] | None = None) -> bool | None:
    """Whether some process holds an flock on the file ``info`` describes (None when that cannot
    be known). ``locks``: :func:`flocked_files`, read now when not given."""
    locks = locks if locks is not None else flocked_files()
    if locks is None:
        return None
    return f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}" in locks


# ---------------------------------------------------------------------- opening it


def open_state_dir(configured: str, owner: str = "", *, per_user: bool = False) -> StateDir:
    """Open and verify the state directory a server uses. ``configured``: ContainerPolicy.state_dir
    ("" for the default); ``owner``: ContainerPolicy.state_dir_owner. Blocking (a few system
    calls): start-up or a worker thread. The owner of the result closes it (services.py).

    ``per_user``: the engine shows each user only their own containers (rootless Podman), whose
    labels are the ledger, so no directory can make that ledger host-wide: the user's private
    directory is used, and GPUs are booked among their own kernels (``StateDir.per_user``)."""
    if per_user:
        return _private_state_dir("", per_user=True)
    path = os.path.normpath(configured) if configured else DEFAULT_STATE_DIR
    try:
        return StateDir(path, _open_shared(path, service_uid(owner)))
    except PathRefused as e:
        return _private_state_dir(e.sentence, e.setting)


def _open_shared(path: str, service: int | None) -> int:
    trusted = {service} if service is not None else set()
    what = "host state directory"
    try:
        fd = open_dir(path, trusted=trusted, what=what)
    except PathRefused as e:
        raise PathRefused(
            f"{e.sentence} The host state directory must be root's (or the account an "
            "administrator names as its owner), reached through directories only root can "
            "change: `sudo jupyter gpu-containers setup-host` makes one.",
            setting=f"{STATE_DIR}, {STATE_DIR_OWNER}",
        ) from None
    except FileNotFoundError:
        if os.geteuid() != 0:
            raise PathRefused(
                f"The host state directory {path} does not exist. An administrator creates it "
                "once per host: `sudo jupyter gpu-containers setup-host`.",
                setting=STATE_DIR,
            ) from None
        # Root may make it, as setup-host would (nobody else could have made it meanwhile
        # unseen: the check below runs on what is there).
        provision(path, DEFAULT_GROUP if _group_exists(DEFAULT_GROUP) else "")
        fd = open_dir(path, trusted=trusted, what=what)
    info = os.fstat(fd)
    problem = ""
    if info.st_uid not in {0, *trusted}:
        problem = f"it belongs to {owner_name(info.st_uid)}"
    elif info.st_mode & 0o007:
        problem = (
            f"its mode {describe_mode(info.st_mode)} lets every local user in (open it, hold "
            "its lock)"
        )
    if problem:
        os.close(fd)
        raise PathRefused(
            f"The host state directory {path} cannot be used: {problem}. It must belong to root "
            "(or the account an administrator names as its owner), with mode 1770 and the group "
            "of the users who run kernels: `sudo jupyter gpu-containers setup-host` makes it so.",
            setting=f"{STATE_DIR}, {STATE_DIR_OWNER}",
        )
    return fd


def _private_state_dir(problem: str, setting: str = "", per_user: bool = False) -> StateDir:
    path = private_dir(
        os.path.join(jupyter_runtime_dir(), "gpu-containers-state"), what="private state directory"
    )
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    if per_user:
        return StateDir(path, fd, per_user=True)
    return StateDir(
        path,
        fd,
        problem=f"{problem} Until then, and this server restarted, GPU kernels cannot start.",
        problem_setting=setting,
    )


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def provision(path: str, group: str) -> str:
    """Create (or correct) the host state directory as root: owner root, ``group``, mode 1770
    (the group's members create their own files, remove only their own). What it returns says
    what was done. Root only."""
    if os.geteuid() != 0:
        raise PermissionError("Only root can provision the host state directory.")
    try:
        gid = grp.getgrnam(group).gr_gid if group else 0
    except KeyError:
        raise PathRefused(f"There is no group {group!r} on this host.") from None
    parent = os.path.dirname(path)
    os.makedirs(parent, mode=0o755, exist_ok=True)
    created = False
    try:
        os.mkdir(path, 0o700)
        created = True
    except FileExistsError:
        pass
    # Root acts on what it opened without following links, so a planted symlink is refused.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchown(fd, 0, gid)
        os.fchmod(fd, 0o1770 if gid else 0o700)
    finally:
        os.close(fd)
    return f"{'created' if created else 'checked'} {path} (root:{group or 'root'}, " + (
        "1770)" if gid else "0700)"
    )


def tmpfiles_entry(path: str, group: str) -> str:
    """The systemd-tmpfiles line that recreates the state directory at every boot (/run is
    emptied)."""
    return f"d {path} {'1770' if group else '0700'} root {group or 'root'} -\n"
