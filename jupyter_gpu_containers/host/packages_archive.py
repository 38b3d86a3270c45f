"""A user's packages folder of one image (user_packages.py), written as the build context of an
image that adds them to the image: a tar stream with a Dockerfile at its root and the folder's
contents under ``packages/``.

The folder lies in the user's workspace, which the user and code in their kernels write, and a
kernel service reads it as root. So it is reached as user_packages.open_packages reaches it (no
symlink followed, each part the user's), walked with ``os.fwalk`` without following links, and
each file opened relative to its folder's descriptor with ``O_NOFOLLOW`` and checked with
``fstat`` on the descriptor read from: a file that is not the user's (a hard link to someone
else's file), or that changed into something else meanwhile, refuses the whole save, in a
sentence that names it. A symbolic link is kept as a link: it is resolved inside the image, never
on this host. Devices, sockets and pipes are left out. Every entry is written as root's and
readable by all, never writable by the kernel's user: the saved packages are the image's now.

The walk is bounded: at most ``max_entries`` entries and ``max_bytes`` bytes of files (a
refusal past either, in a sentence), and it stops between two files when ``cancelled`` says so.

Blocking: the save's own thread.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from ..base.errors import PathRefused, SaveRefused
from .user_packages import KEY_PATTERN, open_packages

# Where the image keeps the packages, and the variable the kernel's start reads
# (policy/command.py's KERNEL_BOOT puts them on the kernel's path, after the user's own).
SAVED_PACKAGES_DIR = "/opt/jupyter-gpu-containers/saved-packages"
SAVED_PACKAGES_ENV = "JUPYTER_GPU_CONTAINERS_SAVED_PACKAGES"

# O_NONBLOCK: a file swapped for a pipe after it was looked at opens at once (and is then refused
# as not a file) instead of holding the save's thread until someone writes to it.
# (No O_NOATIME: a server that is not root may not use it on another user's file, and the open's
# EPERM would hide the reason said below, that the file is not the user's.)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class SaveCancelled(Exception):
    """The save was cancelled while its context was written."""


@dataclass
class ArchiveCount:
    """What the walk has written so far (read by the save's progress)."""

    entries: int = 0
    bytes: int = 0


def dockerfile(base: str, labels: dict[str, str]) -> bytes:
    """The Dockerfile of a saved image: ``base`` (an image id), the packages, the variable that
    names them, and ``labels`` (JSON-quoted: a value is never read as an instruction)."""
    lines = [
        f"FROM {base}",
        f"COPY packages {SAVED_PACKAGES_DIR}",
        f"ENV {SAVED_PACKAGES_ENV}={SAVED_PACKAGES_DIR}",
    ]
    if labels:
        lines.append(label_line(labels))
    return ("\n".join(lines) + "\n").encode("utf-8")


def label_line(labels: dict[str, str]) -> str:
    """A LABEL instruction of ``labels``, JSON-quoted: a value is never read as an instruction
    (nor a key: a newline in either is "\\n" there)."""
    pairs = (f"{json.dumps(k)}={json.dumps(v)}" for k, v in sorted(labels.items()))
    return "LABEL " + " ".join(pairs)


def tar_entry(
    name: str, kind: bytes, mode: int, size: int = 0, mtime: float = 0.0
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = int(mtime) if mtime else int(time.time())
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def write_context(
    out: BinaryIO,
    *,
    workspace: str,
    uid: int,
    packages_dir: str,
    key: str,
    base: str,
    labels: dict[str, str],
    max_entries: int,
    max_bytes: int,
    count: ArchiveCount,
    cancelled: Callable[[], bool],
) -> None:
    """Write the build context (a tar stream) of ``key``'s packages folder to ``out``."""
    if not KEY_PATTERN.fullmatch(key):
        raise PathRefused(f"{key[:80]!r} does not name a packages folder.")
    fd = open_packages(workspace, uid, packages_dir)
    if fd is None:
        raise SaveRefused(_nothing_to_save(packages_dir))
    try:
        try:
            info = os.stat(key, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            raise SaveRefused(_nothing_to_save(packages_dir)) from None
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
            raise PathRefused(
                f"The packages folder {packages_dir}/{key} of your workspace is not a folder of "
                "yours: nothing was saved."
            )
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            text = dockerfile(base, labels)
            tar.addfile(
                tar_entry("Dockerfile", tarfile.REGTYPE, 0o644, len(text)), io.BytesIO(text)
            )
            tar.addfile(tar_entry("packages", tarfile.DIRTYPE, 0o755, mtime=info.st_mtime))
            _walk(tar, fd, key, uid, packages_dir, max_entries, max_bytes, count, cancelled)
    finally:
        os.close(fd)


def _nothing_to_save(packages_dir: str) -> str:
    return (
        "There are no packages of yours for this image to save: install some in a kernel of "
        f"it first (%pip install …); they are kept in {packages_dir} of your workspace."
    )


def _walk(
    tar: tarfile.TarFile,
    parent_fd: int,
    key: str,
    uid: int,
    packages_dir: str,
    max_entries: int,
    max_bytes: int,
    count: ArchiveCount,
    cancelled: Callable[[], bool],
) -> None:
    walk_folder(
        tar,
        parent_fd,
        key,
        prefix="packages",
        uid=uid,
        limits=WalkLimits(
            shown=f"{packages_dir}/{key}",
            what="Your packages folder",
            what_kept="a saved image",
            trait="ImageSaves",
            fix="Reset it, or uninstall what you do not need.",
            max_entries=max_entries,
            max_bytes=max_bytes,
        ),
        count=count,
        cancelled=cancelled,
    )


@dataclass(frozen=True)
class WalkLimits:
    """How a walk names its folder in sentences, and its bounds."""

    shown: str  # the folder, as its user knows it
    what: str  # "Your packages folder"
    what_kept: str  # "a saved image"
    trait: str  # whose max_entries and max_bytes
    fix: str  # what to do about a folder too large
    max_entries: int
    max_bytes: int
    skip_top: frozenset[str] = frozenset()  # names left out of the folder's top


def walk_folder(
    tar: tarfile.TarFile,
    parent_fd: int,
    top: str,
    *,
    prefix: str,
    uid: int,
    limits: WalkLimits,
    count: ArchiveCount,
    cancelled: Callable[[], bool],
) -> None:
    """Add the folder ``top`` (relative to ``parent_fd``; "." for that folder itself) to ``tar``
    under ``prefix`` ("" for the archive's root): folders and files as root's, modes 0755 and
    0644 (0755 for a file executable by anyone), links as links, nothing else; every file
    ``uid``'s, read through a descriptor opened without following a link."""
    for root, dirs, files, root_fd in os.fwalk(top, dir_fd=parent_fd, follow_symlinks=False):
        relative = root[len(top) :].lstrip("/")
        here = "/".join(part for part in (prefix, relative) if part)
        dirs.sort()
        if not relative and limits.skip_top:
            dirs[:] = [d for d in dirs if d not in limits.skip_top]
            files = [f for f in files if f not in limits.skip_top]
        for name in (*dirs, *sorted(files)):
            if cancelled():
                raise SaveCancelled()
            count.entries += 1
            if count.entries > limits.max_entries:
                raise SaveRefused(
                    f"{limits.what} {limits.shown} has more than {limits.max_entries} files and "
                    f"folders, more than {limits.what_kept} may hold "
                    f"({limits.trait}.max_entries): nothing was saved. {limits.fix}"
                )
            try:
                st = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed meanwhile (a pip running in a kernel)
            inside = f"{here}/{name}" if here else name
            if stat.S_ISDIR(st.st_mode):
                tar.addfile(tar_entry(inside, tarfile.DIRTYPE, 0o755, mtime=st.st_mtime))
            elif stat.S_ISLNK(st.st_mode):
                link = tar_entry(inside, tarfile.SYMTYPE, 0o777, mtime=st.st_mtime)
                link.linkname = os.readlink(name, dir_fd=root_fd)
                tar.addfile(link)
            elif stat.S_ISREG(st.st_mode):
                where = f"{limits.shown}/{inside.removeprefix(prefix + '/') if prefix else inside}"
                _add_file(tar, root_fd, name, inside, uid, where, limits, count)
            # Devices, sockets and pipes: nothing a package (or a build) is made of.


def _add_file(
    tar: tarfile.TarFile,
    dir_fd: int,
    name: str,
    inside: str,
    uid: int,
    where: str,
    limits: WalkLimits,
    count: ArchiveCount,
) -> None:
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    except OSError as e:
        raise PathRefused(f"{where} cannot be read ({e.strerror}): nothing was saved.") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise PathRefused(f"{where} changed while it was saved: nothing was saved.")
        if st.st_uid != uid:
            raise PathRefused(
                f"{where} is not yours (a link to another user's file?): nothing was saved. "
                f"Remove it from {limits.shown} and try again."
            )
        count.bytes += st.st_size
        if count.bytes > limits.max_bytes:
            raise SaveRefused(
                f"{limits.what} {limits.shown} holds more than {size_text(limits.max_bytes)}, more "
                f"than {limits.what_kept} may add ({limits.trait}.max_bytes): nothing was saved."
            )
        mode = 0o755 if st.st_mode & 0o111 else 0o644
        # The size is the descriptor's now: a file that grows meanwhile is cut there, one that
        # shrinks is refused by tarfile (the archive would be wrong).
        tar.addfile(tar_entry(inside, tarfile.REGTYPE, mode, st.st_size, st.st_mtime), f)


def size_text(n: int) -> str:
    return f"{round(n / 2**30, 2):g} GiB" if n >= 2**30 else f"{round(n / 2**20, 1):g} MiB"
