"""Kernels' private directories: where each kernel's connection file and ipc sockets live.

Each kernel gets a directory of its own (mode 0700) under one root directory of the server's
user. The container mounts it writable (ipykernel creates its ipc sockets there, and older
ipykernels rewrite the connection file), so code in the kernel can put anything in it: a symlink
to ``~/.profile`` in place of ``kernel.json``, say. Hence:

- the root is this user's own directory, mode 0700, verified (one another user created first
  under /tmp is refused, never used), preferably under ``$XDG_RUNTIME_DIR``;
- the server writes into a private directory only by temporary file and rename, relative to the
  directory's descriptor, and reads with ``O_NOFOLLOW``: a planted symlink is replaced, never
  followed;
- it deletes (or reads at recovery) only what it can prove is a private directory of its own
  root. A container label is never taken as a path: anyone in the docker group can write labels.

Blocking, all of it: worker threads (or start-up) only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
from typing import Any

from jupyter_core.paths import jupyter_runtime_dir

from .safefiles import private_dir, read_json_nofollow, write_atomic

CONNECTION_FILE_NAME = "kernel.json"
# Unix socket paths are limited to 108 bytes including the NUL; ipykernel appends "-<port>" to
# "<root>/<8 chars>-<8 random>/kernel-ipc".
MAX_IPC_PATH = 100
_ROOM_FOR_KERNEL = 40
# What make_private_dir names directories: the kernel id's first 8 characters, mkdtemp's 8.
_PRIVATE_NAME = re.compile(r"[A-Za-z0-9_-]{1,8}-[A-Za-z0-9_]{8}")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
WHAT = "kernel connection directory (ContainerPolicy.connection_dir_root)"


def connection_root(configured: str) -> str:
    """The verified root of this server's private directories (created if missing).

    ``configured``: ContainerPolicy.connection_dir_root. Else the first of these short enough
    for ipc socket paths: <jupyter runtime dir>/gpu-containers, $XDG_RUNTIME_DIR/
    jupyter-gpu-containers, <tmp>/jupyter-gpu-containers-<uid>."""
    if configured:
        return private_dir(os.path.normpath(configured), what=WHAT)
    candidates = [os.path.join(jupyter_runtime_dir(), "gpu-containers")]
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(xdg):
        candidates.append(os.path.join(xdg, "jupyter-gpu-containers"))
    candidates.append(os.path.join(tempfile.gettempdir(), f"jupyter-gpu-containers-{os.geteuid()}"))
    for candidate in candidates:
        if len(candidate) + _ROOM_FOR_KERNEL <= MAX_IPC_PATH:
            return private_dir(candidate, what=WHAT)
    return private_dir(candidates[-1], what=WHAT)


def make_private_dir(root: str, kernel_id: str, owner: tuple[int, int] | None) -> str:
    """A new private directory under ``root`` (mode 0700). ``owner``: the uid:gid to give it
    (a root server whose kernels run as an explicit uid); it was just created, so nobody else
    can have put anything in it."""
    path = tempfile.mkdtemp(prefix=f"{kernel_id[:8]}-", dir=root)
    if owner is not None and os.geteuid() == 0:
        os.chown(path, *owner)
    return path


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
    shutil.rmtree(path, ignore_errors=True)
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
