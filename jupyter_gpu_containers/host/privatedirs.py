"""Kernels' private directories: where each kernel's connection file and ipc sockets live.

Each kernel gets a directory of its own (mode 0700) under one root directory of the server's
user. The container mounts it writable (ipykernel creates its ipc sockets there, and older
ipykernels rewrite the connection file), so code in the kernel can put anything in it: a symlink
to ``~/.profile`` in place of ``kernel.json``, say. Hence:

- the root is this user's own directory, mode 0700, verified, preferably under the Jupyter
  runtime directory or ``$XDG_RUNTIME_DIR``; the fallback in the world-writable temporary
  directory has an unpredictable name (mkdtemp), so no other account can create it first and
  deny this user every kernel; one that is not this user's alone is passed over, never used;
- a server that runs as root (the kernel service) mounts a size-limited tmpfs
  (ContainerPolicy.private_dir_size) on each private directory: code in the kernel can fill that
  and nothing else, never the host's ``/run`` the directory lies under;
- the server writes into a private directory only by temporary file and rename, relative to the
  directory's descriptor, and reads with ``O_NOFOLLOW``: a planted symlink is replaced, never
  followed;
- it deletes (or reads at recovery) only what it can prove is a private directory of its own
  root. A container label is never taken as a path: anyone in the docker group can write labels.

Blocking, all of it: worker threads (or start-up) only.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from typing import Any

from jupyter_core.paths import jupyter_runtime_dir

from ..base.errors import ContainerKernelError, PathRefused
from ..base.records import CONNECTION_FILE_NAME
from ..base.safefiles import private_dir, read_json_nofollow, write_atomic
from .accounts import GROUP_FILE, PASSWD_FILE

# Unix socket paths are limited to 108 bytes including the NUL; ipykernel appends "-<port>" to
# "<root>/<8 chars>-<8 random>/kernel-ipc".
MAX_IPC_PATH = 100
_ROOM_FOR_KERNEL = 40
# What make_private_dir names directories: the kernel id's first 8 characters, mkdtemp's 8.
_PRIVATE_NAME = re.compile(r"[A-Za-z0-9_-]{1,8}-[A-Za-z0-9_]{8}")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
WHAT = "kernel connection directory"
# The fallback root in the temporary directory: this prefix, then mkdtemp's 8 random characters.
_TEMP_ROOT_PREFIX = "jupyter-gpu-containers-{uid}-"
_MKDTEMP_SUFFIX = re.compile(r"[a-z0-9_]{8}")
# mount(2) flags, and umount2(2)'s: nothing in a private directory is run or is a device.
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MNT_DETACH, _UMOUNT_NOFOLLOW = 2, 8
# The mount namespace the Docker engine runs in: the host's, PID 1's.
HOST_MOUNT_NAMESPACE = "/proc/1/ns/mnt"
# A connection file, five sockets and write_atomic's temporary files: a few inodes are plenty.
_PRIVATE_INODES = 256


def connection_root(configured: str, traversable: bool = False) -> str:
    """The verified root of this server's private directories (created if missing).
    ``traversable``: a configured root made 0711, for kernels that reach their directory as
    their own user (a job's rootless Podman on a node), not through a root engine; the
    directories' names are unguessable, and each is its user's alone. (The placement that
    needs it requires a configured root: the defaults lie in this user's own directories.)

    ``configured``: ContainerPolicy.connection_dir_root. Else the first of these short enough
    for ipc socket paths: <jupyter runtime dir>/gpu-containers, $XDG_RUNTIME_DIR/
    jupyter-gpu-containers, <tmp>/jupyter-gpu-containers-<uid>-<random> (temp_root)."""
    if configured:
        try:
            return private_dir(os.path.normpath(configured), what=WHAT, traversable=traversable)
        except PathRefused as e:
            raise PathRefused(e.sentence, setting="ContainerPolicy.connection_dir_root") from None
    candidates = [os.path.join(jupyter_runtime_dir(), "gpu-containers")]
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(xdg):
        candidates.append(os.path.join(xdg, "jupyter-gpu-containers"))
    for candidate in candidates:
        if len(candidate) + _ROOM_FOR_KERNEL <= MAX_IPC_PATH:
            return private_dir(candidate, what=WHAT)
    return temp_root()


def temp_root() -> str:
    """This user's root in the temporary directory: one made before (by mkdtemp: an unpredictable
    name, so no other account can have created it first) that is still this user's alone, else a
    new one. A directory another account made under the same prefix is passed over, never used
    and never a reason to refuse: the temporary directory is everyone's to write in."""
    tmp = tempfile.gettempdir()
    prefix = _TEMP_ROOT_PREFIX.format(uid=os.geteuid())
    try:
        names = sorted(os.listdir(tmp))
    except OSError:
        names = []
    for name in names:
        path = os.path.join(tmp, name)
        if (
            name.startswith(prefix)
            and _MKDTEMP_SUFFIX.fullmatch(name[len(prefix) :])
            and _is_own_private(path)
        ):
            break
    else:
        path = tempfile.mkdtemp(prefix=prefix, dir=tmp)  # mode 0700
    return path


def _is_own_private(path: str) -> bool:
    """Whether ``path`` is a real directory (not a symlink) of this user's alone (mode 0700)."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o077


def make_private_dir(
    root: str, kernel_id: str, owner: tuple[int, int] | None, size: str | None = None
) -> str:
    """A new private directory under ``root`` (mode 0700). ``owner``: the uid:gid to give it
    (a root server whose kernels run as an explicit uid); it was just created, so nobody else
    can have put anything in it. ``size`` (ContainerPolicy.private_dir_size; None or "": none):
    a server running as root mounts a tmpfs of that size on it, so that what the kernel writes
    there is bounded by it, not by the file system ``root`` is on (the host's /run, say).
    Without root there is no mount: the directory is in this user's own runtime directory."""
    path = tempfile.mkdtemp(prefix=f"{kernel_id[:8]}-", dir=root)
    if os.geteuid() != 0:
        return path
    if size:
        uid, gid = owner if owner is not None else (0, 0)
        options = f"size={size},nr_inodes={_PRIVATE_INODES},mode=0700,uid={uid},gid={gid}"
        try:
            _mount_tmpfs(path, options)
        except OSError as e:
            os.rmdir(path)
            raise ContainerKernelError(
                f"The kernel's private directory could not get a file system of its own (a "
                f"tmpfs of {size}): {e.strerror}. Run the server as root with the right to mount "
                "file systems, or ask an administrator to have private directories made as "
                "plain directories, whose size only their file system bounds.",
                setting="ContainerPolicy.private_dir_size",
            ) from None
    elif owner is not None:
        os.chown(path, *owner)
    return path


# mount(2) or umount2(2), by a process of its own: setns(2) into another mount namespace needs a
# single-threaded process, and the server has threads. argv: the operation ("mount" or
# "umount"), the path, the options, the flags, and the mount namespace to enter first ("" for
# none); it exits with the error number. -I -S: nothing of the server's environment is imported.
_MOUNT = r"""
import ctypes, os, sys
op, path, options, flags, namespace = sys.argv[1:]
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
if namespace and libc.setns(os.open(namespace, os.O_RDONLY), 0x00020000) != 0:  # CLONE_NEWNS
    sys.exit(ctypes.get_errno())
if op == "mount":
    done = libc.mount(b"jgc-kernel", os.fsencode(path), b"tmpfs", int(flags), options.encode())
else:
    done = libc.umount2(os.fsencode(path), int(flags))
sys.exit(ctypes.get_errno() if done != 0 else 0)
"""


def _in_engines_namespace(op: str, path: str, options: str, flags: int) -> None:
    """mount(2) or umount2(2) where the Docker engine sees it: the host's mount namespace. A
    service under systemd with ProtectSystem= or PrivateTmp= has a namespace of its own, whose
    mounts never reach the host (nor the engine, which bind-mounts the directory into the
    kernel's container), though the host's reach it: there the mount is made in the host's."""
    namespace = HOST_MOUNT_NAMESPACE
    try:
        if os.readlink("/proc/self/ns/mnt") == os.readlink(namespace):
            namespace = ""
    except OSError:
        namespace = ""
    if not namespace:
        # Already where the engine is: the call itself, with no process to start (starting
        # one is most of a launch's "prepare" phase).
        _here(op, path, options, flags)
        return
    code = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _MOUNT, op, path, options, str(flags), namespace],
        capture_output=True,
        timeout=60,
    ).returncode
    if code < 0 or code > 255:  # killed, say
        code = errno.EIO
    if code:
        raise OSError(code, os.strerror(code), path)


_libc: ctypes.CDLL | None = None


def _here(op: str, path: str, options: str, flags: int) -> None:
    """mount(2) or umount2(2) in this process's own mount namespace (any thread may call them:
    only setns(2) wants a single-threaded process)."""
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
        libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        _libc = libc
    if op == "mount":
        done = _libc.mount(b"jgc-kernel", os.fsencode(path), b"tmpfs", flags, options.encode())
    else:
        done = _libc.umount2(os.fsencode(path), flags)
    if done != 0:
        code = ctypes.get_errno() or errno.EIO
        raise OSError(code, os.strerror(code), path)


def _mount_tmpfs(path: str, options: str) -> None:
    _in_engines_namespace("mount", path, options, _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    if not os.path.ismount(path):
        # Mounted where the engine sees it, but not here: this process's namespace does not
        # receive the host's mounts, and it would write the connection file beside the tmpfs.
        _unmount(path)
        raise OSError(errno.EXDEV, "the host's mounts do not reach this process", path)


def _unmount(path: str) -> None:
    """Detach a private directory's tmpfs (its memory is freed once no container holds it);
    never follows a symlink at ``path``."""
    try:
        _in_engines_namespace("umount", path, "", _MNT_DETACH | _UMOUNT_NOFOLLOW)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOENT):  # not a mount point (any more)
            raise


def discard_private_dir(path: str) -> None:
    """Remove a private directory of this server's (the caller knows it is one): its tmpfs
    first, when it has one, then the directory."""
    if os.geteuid() == 0 and os.path.ismount(path):
        _unmount(path)
    shutil.rmtree(path, ignore_errors=True)


def write_connection_file(
    private: str, info: dict[str, Any], owner: tuple[int, int] | None = None
) -> None:
    """Write ``kernel.json`` into a private directory, replacing (never following) whatever the
    kernel left at that name."""
    dir_fd = os.open(private, _DIR_FLAGS)
    try:
        write_atomic(dir_fd, CONNECTION_FILE_NAME, json.dumps(info).encode(), 0o600, owner)
    finally:
        os.close(dir_fd)


def write_account_files(private: str, passwd: str, group: str) -> tuple[str, str]:
    """Write the kernel's /etc/passwd and /etc/group (accounts.py) into its private directory,
    readable by all (as those files are), replacing (never following) whatever the kernel left
    at those names; their paths on the host."""
    dir_fd = os.open(private, _DIR_FLAGS)
    try:
        write_atomic(dir_fd, PASSWD_FILE, passwd.encode(), 0o644)
        write_atomic(dir_fd, GROUP_FILE, group.encode(), 0o644)
    finally:
        os.close(dir_fd)
    return os.path.join(private, PASSWD_FILE), os.path.join(private, GROUP_FILE)


def read_connection_file(private: str) -> dict[str, Any]:
    """The connection file a private directory holds (OSError or ValueError when there is no
    plain JSON object there)."""
    found = read_json_nofollow(os.path.join(private, CONNECTION_FILE_NAME))
    if not isinstance(found, dict):
        raise ValueError("the connection file is not a JSON object")
    return found


def own_private_dir(root: str, labelled: str) -> str | None:
    """The private directory a container label names, when it is one of this server's: directly
    under ``root`` (this user's 0700 directory, in which nobody else can create anything), named
    as make_private_dir names them, and a real directory (not a symlink). None otherwise."""
    if not labelled or os.path.dirname(labelled) != os.path.normpath(root):
        return None
    if not _PRIVATE_NAME.fullmatch(os.path.basename(labelled)):
        return None
    try:
        info = os.lstat(labelled)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode):
        return None
    if os.geteuid() != 0 and (info.st_uid != os.geteuid() or info.st_mode & 0o077):
        return None
    return labelled


def remove_private_dir(root: str, labelled: str) -> bool:
    """Remove the private directory a label names, if it is one of this server's (see
    own_private_dir); whether it was."""
    path = own_private_dir(root, labelled)
    if path is None:
        return False
    discard_private_dir(path)
    return True


def remove_stale_sockets(private: str) -> None:
    """Remove a previous container's ipc sockets (a restart binds them anew). unlink never
    follows a symlink."""
    dir_fd = os.open(private, _DIR_FLAGS)
    try:
        for name in os.listdir(dir_fd):
            if name.startswith("kernel-ipc-"):
                os.unlink(name, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
