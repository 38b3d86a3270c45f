"""The labels that make a container our record, and which server owns it.

Design decision 1 (DESIGN.md): the Docker engine is the source of truth. Every kernel container
carries these labels; reattach, orphan sweeps and the GPU ledger are rebuilt from them, so several
Jupyter servers on one host share one truth. The connection key is never a label (labels are
world-readable through ``docker inspect``).

Whether a container's server is alive is asked of the server *id*, not of the process that created
the container: a restarted server that reattached a kernel is its owner now, although the
container's (immutable) labels still name the process that died. Each live server holds an
exclusive flock on ``<state dir>/servers/<server id>.lock``; the kernel drops it when the process
dies, however it dies, and any process on the host can test it without signalling anyone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import socket
import tempfile
import threading
from dataclasses import dataclass

PREFIX = "org.jupyter.gpu-containers."
MANAGED = PREFIX + "managed"
KERNEL_ID = PREFIX + "kernel-id"
KERNEL_NAME = PREFIX + "kernel-name"
SERVER_ID = PREFIX + "server-id"
OWNER_PROCESS = PREFIX + "owner-process"
USER = PREFIX + "user"
UID = PREFIX + "uid"
NOTEBOOK = PREFIX + "notebook"
CWD = PREFIX + "cwd"
IMAGE = PREFIX + "image"
CONNECTION_DIR = PREFIX + "connection-dir"
TRANSPORT = PREFIX + "transport"
GPUS = PREFIX + "gpus"  # comma-separated UUIDs the kernel holds ("" for none)
PROBE = PREFIX + "probe"  # "true" on readiness-probe containers, which never carry MANAGED
# On warm-pool containers (warmpool.py): the id of the pool that started them. Their KERNEL_ID is
# the pool's own; once handed over, the kernel they serve is named by the claim record in their
# private directory (labels cannot change after creation).
POOL = PREFIX + "pool"


def default_server_id(uid: int, root_dir: str) -> str:
    """A stable id for "this user's server on this workspace", the same after a restart.

    A server restarted after a crash reattaches to containers carrying its id. Two servers that
    share an id are told apart by OWNER_PROCESS: a live owner's kernels are never adopted.
    """
    digest = hashlib.sha256(f"{uid}\0{os.path.realpath(root_dir)}".encode()).hexdigest()[:12]
    return f"{uid}-{digest}"


def default_state_dir() -> str:
    """Host-wide directory shared by every server on the host (all users): server liveness locks
    and the allocation lock. Sticky and world-writable, like /tmp itself."""
    return os.path.join(tempfile.gettempdir(), "jupyter-gpu-containers")


def ensure_shared_dir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    with contextlib.suppress(PermissionError):  # another user's: made shared by its creator
        os.chmod(path, 0o1777)
    return path


class ServerRegistry:
    """Which server ids have a live server on this host (see the module docstring)."""

    _held: dict[tuple[str, str], int] = {}
    _guard = threading.Lock()

    @staticmethod
    def _path(state_dir: str, server_id: str) -> str:
        return os.path.join(
            ensure_shared_dir(os.path.join(state_dir, "servers")), f"{server_id}.lock"
        )

    @classmethod
    def claim(cls, state_dir: str, server_id: str) -> bool:
        """Hold ``server_id`` for this process's lifetime. False when another live process holds
        it (two servers of one user on one workspace): that one owns the id's kernels."""
        with cls._guard:
            if (state_dir, server_id) in cls._held:
                return True
            fd = os.open(cls._path(state_dir, server_id), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return False
                raise
            cls._held[(state_dir, server_id)] = fd  # kept open: the lock lives as long as we do
            return True

    @classmethod
    def claim_or_fallback(cls, state_dir: str, server_id: str) -> str:
        """The id this process serves under: ``server_id`` when free, else (another live server
        already serves it) a per-process id whose kernels are never adopted by anyone."""
        if cls.claim(state_dir, server_id):
            return server_id
        fallback = f"{server_id}.{os.getpid()}"
        cls.claim(state_dir, fallback)
        return fallback

    @classmethod
    def is_alive(cls, state_dir: str, server_id: str) -> bool:
        if (state_dir, server_id) in cls._held:
            return True
        try:
            fd = os.open(cls._path(state_dir, server_id), os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return True
            raise
        finally:
            os.close(fd)  # also drops the shared lock we may have taken
        return False


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "unknown-boot"


def _process_start_time(pid: int) -> str | None:
    """Clock ticks since boot at which ``pid`` started; tells a live owner from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22, counted after the parenthesised command name, which may itself contain spaces.
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass(frozen=True)
class OwnerProcess:
    """Host, boot, pid and start time of the Jupyter server process that owns a container."""

    host: str
    boot: str
    pid: int
    start: str

    @classmethod
    def current(cls) -> OwnerProcess:
        pid = os.getpid()
        return cls(socket.gethostname(), _boot_id(), pid, _process_start_time(pid) or "0")

    def token(self) -> str:
        return f"{self.host}/{self.boot}/{self.pid}/{self.start}"

    def is_alive(self) -> bool:
        """Whether this process still runs (on this host, since this boot, the same process and
        not a later one that reuses its pid). Another host's processes cannot be judged: True."""
        me = OwnerProcess.current()
        if self.host != me.host:
            return True
        if self.boot != me.boot:
            return False
        return _process_start_time(self.pid) == self.start

    @classmethod
    def parse(cls, token: str) -> OwnerProcess | None:
        parts = token.split("/")
        if len(parts) != 4 or not parts[2].isdigit():
            return None
        return cls(parts[0], parts[1], int(parts[2]), parts[3])
