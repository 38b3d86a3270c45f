"""A build from a user's workspace: the recipe they named (a Dockerfile, or a requirements.txt)
read as its user's, and its folder written as the build's context.

The workspace is the user's, and a kernel service reads it as root, so the recipe's folder is
reached as the packages folder is (user_packages.open_packages' rules): from the workspace, one
part at a time, no symbolic link followed, each part the user's and writable by no one else. The
recipe is read through a descriptor opened without following a link, and must be the user's
regular file. The folder is then written as packages_archive.walk_folder writes one (each file
the user's, links kept as links, bounded, cancellable): the spool the service's own builder
(images/builder.py) copies from. No engine reads it as a build's context any more; a
``dockerfile`` given is written at its root in place of any file of that name there.

Blocking: the build's own thread (and a worker thread for the route's first read).
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable
from typing import BinaryIO

from ..base.errors import PathRefused
from ..base.safefiles import owner_name
from .packages_archive import ArchiveCount, WalkLimits, tar_entry, walk_folder
from .user_packages import open_below

_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def split_path(path: str) -> tuple[list[str], str]:
    """A workspace-relative path (as JupyterLab's file browser gives it) as its folders and its
    file name; PathRefused for one that climbs out, or is absolute."""
    parts = [p for p in path.strip().strip("/").split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts) or path.strip().startswith("/"):
        raise PathRefused(f"{path[:200]!r} is not a file of your workspace.")
    return parts[:-1], parts[-1]


def open_folder(workspace: str, uid: int, folders: list[str], shown: str) -> int:
    """A descriptor of the folder ``folders`` below ``workspace``, each part ``uid``'s and
    writable by no one else, no link followed (user_packages.open_below); PathRefused with a
    sentence otherwise."""
    fd = open_below(workspace, uid, folders, f"The folder {shown} of your workspace")
    assert fd is not None  # not missing_ok: a missing part is refused
    return fd


def read_recipe(folder_fd: int, name: str, uid: int, shown: str, max_bytes: int) -> str:
    """The text of the recipe ``name`` in the folder: ``uid``'s regular file, at most
    ``max_bytes``, UTF-8; PathRefused with a sentence otherwise."""
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=folder_fd)
    except FileNotFoundError:
        raise PathRefused(f"There is no {shown} in your workspace.") from None
    except OSError as e:
        raise PathRefused(
            f"{shown} cannot be read ({e.strerror}; a symbolic link is not followed)."
        ) from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise PathRefused(f"{shown} is not a file.")
        if info.st_uid != uid:
            raise PathRefused(f"{shown} is not yours: it belongs to {owner_name(info.st_uid)}.")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PathRefused(f"{shown} is larger than {max_bytes // 1024} KiB.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PathRefused(f"{shown} is not UTF-8 text.") from None


def write_context(
    out: BinaryIO,
    *,
    workspace: str,
    uid: int,
    folders: list[str],
    dockerfile: str,
    max_entries: int,
    max_bytes: int,
    count: ArchiveCount,
    cancelled: Callable[[], bool],
) -> None:
    """Write the build's context (a tar stream) to ``out``: the folder's files and folders,
    read as ``uid``'s (and ``dockerfile``, when not "", as the root's Dockerfile in place of the
    folder's)."""
    shown = "/".join(folders) or "the top of your workspace"
    fd = open_folder(workspace, uid, folders, shown)
    try:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            if dockerfile:
                text = dockerfile.encode("utf-8")
                tar.addfile(
                    tar_entry("Dockerfile", tarfile.REGTYPE, 0o644, len(text)), io.BytesIO(text)
                )
            walk_folder(
                tar,
                fd,
                ".",
                prefix="",
                uid=uid,
                limits=WalkLimits(
                    shown=shown,
                    what="The folder",
                    what_kept="a build",
                    trait="ImageSaves",
                    fix="Build from a folder that holds only what the image needs.",
                    max_entries=max_entries,
                    max_bytes=max_bytes,
                    # A Dockerfile given replaces the folder's.
                    skip_top=frozenset({"Dockerfile"}) if dockerfile else frozenset(),
                ),
                count=count,
                cancelled=cancelled,
            )
    finally:
        os.close(fd)
