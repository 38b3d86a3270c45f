"""File operations that another local user, or code in a kernel, cannot redirect.

On a shared host every path a server writes to may have been prepared by someone else: a
directory created first by another user, a name replaced by a symlink to the victim's
``~/.bashrc``, a kernel's own private directory (which code in the kernel can write). So:

- directories are opened one component at a time with ``O_NOFOLLOW`` and checked with ``fstat``
  (owner and mode), and every later operation is relative to that directory's descriptor;
- files are written as a fresh temporary file (``O_CREAT | O_EXCL | O_NOFOLLOW``), then renamed
  over the name: a symlink planted at the name is replaced, never followed;
- files are read with ``O_NOFOLLOW``;
- modes are set only on what this process just created (``O_EXCL``, ``mkdir``).

Blocking, all of it: call from worker threads (or at start-up).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import stat
from collections.abc import Callable, Collection, Iterable
from typing import Any

from .errors import PathRefused

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_PATH needs no read permission: enough to walk through ancestors and fstat them.
_WALK_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def describe_mode(mode: int) -> str:
    return oct(stat.S_IMODE(mode))[2:].zfill(4)


def owner_name(uid: int) -> str:
    """The account name of ``uid`` ("uid N" for one the account database does not know).
    Blocking (NSS may ask a directory service): a worker thread, or start-up."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def account_uid(name: str) -> int | None:
    """The uid of the account ``name`` (None for no such account). Blocking, as owner_name."""
    import pwd

    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def open_dir(path: str, *, trusted: Iterable[int], what: str) -> int:
    """A descriptor of the absolute directory ``path``, reached without following any symlink.

    Every component, the directory itself included, must be owned by root or one of ``trusted``
    (uids), and writable by nobody else unless it is sticky (as /tmp is): otherwise whoever may
    write it could replace what lies below. Raises PathRefused with a sentence naming the
    component and what is wrong with it."""
    if not os.path.isabs(path) or "\0" in path or os.path.normpath(path) != path:
        raise PathRefused(f"The {what} {path!r} must be a normalised absolute path.")
    owners = {0, *trusted}
    fd = os.open("/", _WALK_FLAGS)
    parts = [p for p in path.split("/") if p]
    try:
        _check_dir(fd, "/", owners, what)
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            here = "/" + "/".join(parts[: i + 1])
            try:
                child = os.open(name, _DIR_FLAGS if last else _WALK_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                raise  # the caller may create it
            except OSError as e:
                if os.path.islink(here):
                    raise PathRefused(
                        f"The {what} {path} cannot be used: {here} is a symbolic link."
                    ) from None
                raise PathRefused(f"The {what} {path} cannot be opened: {e.strerror}.") from None
            os.close(fd)
            fd = child
            _check_dir(fd, here, owners, what)
        if not parts:  # "/" itself, opened for reading
            child = os.open("/", _DIR_FLAGS)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _check_dir(fd: int, here: str, owners: set[int], what: str) -> None:
    info = os.fstat(fd)
    if not stat.S_ISDIR(info.st_mode):
        raise PathRefused(f"The {what} cannot be used: {here} is not a directory.")
    if info.st_uid not in owners:
        raise PathRefused(
            f"The {what} cannot be used: {here} belongs to {owner_name(info.st_uid)}, who could "
            "replace what lies below it."
        )
    sticky = bool(info.st_mode & stat.S_ISVTX)
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not sticky:
        raise PathRefused(
            f"The {what} cannot be used: {here} (mode {describe_mode(info.st_mode)}) is writable "
            "by other users, who could replace what lies below it."
        )


def private_dir(path: str, *, what: str, traversable: bool = False) -> str:
    """Make sure ``path`` is a directory of this user's alone (owner us, mode 0700, not a
    symlink), creating it (and missing parents) if needed; ``path`` on success, else
    PathRefused. A directory that already exists is never chmod-ed: one another user created
    first is refused, with a sentence, not adopted.

    ``traversable``: mode 0711 instead, for a root whose entries others must reach by a name
    they know but may not list (each entry unguessable, and guarded by its own owner and
    mode); a directory of ours made 0700 before is opened up to 0711, one of ours more open than
    0711 refused as any other."""
    parent = os.path.dirname(path)
    if parent and parent != path:
        os.makedirs(parent, mode=0o700, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    try:
        info = os.lstat(path)
    except OSError as e:
        raise PathRefused(f"The {what} {path} cannot be used: {e.strerror}.") from None
    problem = ""
    wanted = 0o711 if traversable else 0o700
    if not stat.S_ISDIR(info.st_mode):
        problem = "it is not a directory (a symbolic link, say)"
    elif info.st_uid != os.geteuid():
        problem = f"it belongs to {owner_name(info.st_uid)}, not to this server's user"
    elif info.st_mode & 0o777 & ~wanted:
        problem = f"its mode is {describe_mode(info.st_mode)}, not {wanted:04o}"
    if problem:
        raise PathRefused(
            f"The {what} {path} cannot be used: {problem}. Another user may have created it "
            "first. Remove it, or configure another directory."
        )
    if traversable and stat.S_IMODE(info.st_mode) != wanted:
        fd = os.open(path, _DIR_FLAGS)
        try:
            if os.fstat(fd).st_ino != info.st_ino:  # replaced since it was checked
                raise PathRefused(f"The {what} {path} changed while it was being checked.")
            os.fchmod(fd, wanted)
        finally:
            os.close(fd)
    return path


def write_atomic(
    dir_fd: int,
    name: str,
    data: bytes,
    mode: int = 0o600,
    owner: tuple[int, int] | None = None,
) -> None:
    """Replace the file ``name`` in the directory ``dir_fd`` by ``data``: written to a fresh
    temporary file, then renamed over ``name``. Readers never see half a file, and whatever was
    at ``name`` (a symlink to another file, say) is replaced, never written through. ``owner``:
    uid:gid given to the new file (root only)."""
    tmp = f".{name}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, mode, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # just created: the umask must not narrow or widen it
            if owner is not None and os.geteuid() == 0:
                os.fchown(f.fileno(), *owner)
            f.write(data)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def write_json_atomic(directory: str, name: str, value: Any, mode: int = 0o600) -> None:
    """write_atomic of ``value`` as JSON into ``directory`` (opened without following a symlink
    at its last component)."""
    dir_fd = os.open(directory, _DIR_FLAGS)
    try:
        write_atomic(dir_fd, name, json.dumps(value, indent=1).encode(), mode)
    finally:
        os.close(dir_fd)


def read_nofollow(path: str, *, dir_fd: int | None = None, limit: int = 1 << 20) -> bytes:
    """The content of a regular file, opened without following a symlink at its name (OSError
    when it is one, or is not a regular file). At most ``limit`` bytes are read."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError(path)  # a FIFO or device would block or never end
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit)
    finally:
        os.close(fd)


def read_json_nofollow(path: str, *, dir_fd: int | None = None) -> Any:
    """read_nofollow, parsed as JSON (ValueError when it is not JSON)."""
    return json.loads(read_nofollow(path, dir_fd=dir_fd).decode("utf-8"))


def read_trusted(
    dir_fd: int, name: str, owners: Collection[int], limit: int, offset: int = 0
) -> tuple[bytes, os.stat_result]:
    """The first ``limit`` bytes of the file ``name`` in the directory ``dir_fd`` (those after
    the first ``offset``: what was appended since an earlier read), and its ``fstat``, when it
    is a regular file with one link, owned by one of ``owners``. OSError otherwise (missing, a
    symlink, a FIFO, a hard link to someone else's file, another owner).

    For small records in a shared directory (the host state directory) that anyone there may
    have planted: the checks are made on the file opened, so a name swapped between a check and
    the open cannot pass. Opened with O_NONBLOCK: a FIFO planted at the name cannot hang the
    reader."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_uid not in owners:
            raise OSError(errno.EPERM, "not a trusted file", name)
        with os.fdopen(fd, "rb", closefd=False) as f:
            f.seek(offset)
            return f.read(max(0, limit - offset)), info
    finally:
        os.close(fd)


def remove_own_files(
    dir_fd: int, pattern: re.Pattern[str], stale: Callable[[re.Match[str], os.stat_result], bool]
) -> int:
    """Remove this process's own regular files in the directory ``dir_fd`` whose names
    ``pattern`` matches in full and which ``stale(match, lstat)`` judges old; how many were
    removed. Others' files are never touched (in a sticky directory they could not be removed
    anyway). Errors skip the file."""
    me = os.geteuid()
    try:
        names = os.listdir(dir_fd)
    except OSError:
        return 0
    removed = 0
    for name in names:
        m = pattern.fullmatch(name)
        if m is None:
            continue
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISREG(info.st_mode) and info.st_uid == me and stale(m, info):
                os.unlink(name, dir_fd=dir_fd)
                removed += 1
        except OSError:
            continue
    return removed
