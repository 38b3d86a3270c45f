"""A user's own packages, per image: where they live in the workspace, and, on the host, their
sizes and their reset.

A kernel runs as its user with HOME on a tmpfs, and a framework image's site-packages belong to
root, so a ``%pip install`` lands in HOME and is gone at the next start. Instead each kernel gets
``PYTHONUSERBASE`` set to a folder of its user's workspace named after its image
(``<workspace>/.jupyter-gpu-containers/packages/<image-key>``, ContainerPolicy.user_packages_dir);
the kernel's start (policy/command.py's KERNEL_BOOT) puts that folder's site-packages on the
kernel's path, ahead of the image's, and has pip install there (``PIP_USER``). Python's own layout
below it (``lib/pythonX.Y/site-packages``) keeps two Python versions apart; a folder per image
keeps packages built against one image's libraries (CUDA, a framework) from another image's
kernels. The key is derived from the image reference as the kernel spec writes it: a name to read
and a hash of the whole reference, so two references never share a folder.

On the host, the folders lie in the user's workspace, which the user, and code in their kernels,
write: a kernel service that measures or removes them runs as root among names its user chose.
So the workspace is opened as base/safefiles.open_dir opens a directory (no symlink followed,
every component the user's or root's and writable by no one else), each part of the packages path
below it with ``O_NOFOLLOW`` and checked to be the user's, and everything after that is relative
to descriptors: the size by ``os.fwalk`` (symlinks not followed), the reset by ``shutil.rmtree``
with ``dir_fd`` (which never follows a symlink, even one swapped in meanwhile). The folder to
reset is named by its key (KEY_PATTERN), never by a path. A listing reads at most
``MAX_ENTRIES`` entries, whatever the number of folders and files: a student's millions of files,
or thousands of folders, cost the service no more than that.

The host functions block: worker threads.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import re
import shutil
import stat
from dataclasses import dataclass

from ..base.errors import PathRefused
from ..base.safefiles import describe_mode, open_dir, owner_name

# A key as packages_key() makes them: what the reset route accepts (never a path).
KEY_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,39}-[0-9a-f]{12}")


def packages_key(image_ref: str) -> str:
    """The folder name of ``image_ref``'s packages: its last path part, made safe, and 12 hex
    digits of the whole reference's SHA-256 ("pytorch-24.05-py3-1a2b3c4d5e6f")."""
    last = image_ref.rsplit("/", 1)[-1].split("@", 1)[0]
    slug = re.sub(r"[^a-z0-9._-]+", "-", last.lower()).strip("-._")[:40].rstrip("-._")
    digest = hashlib.sha256(image_ref.encode("utf-8")).hexdigest()[:12]
    return f"{slug or 'image'}-{digest}"


def check_packages_dir(value: str) -> str:
    """``value`` (ContainerPolicy.user_packages_dir) as a normalised relative path inside the
    workspace, or ValueError with a sentence."""
    value = value.strip()
    normal = posixpath.normpath(value) if value else ""
    if not value or value.startswith("/") or normal != value.rstrip("/") or normal == ".":
        raise ValueError(
            f"{value!r} must be a normalised path relative to the workspace, such as "
            '".jupyter-gpu-containers/packages".'
        )
    if normal.split("/")[0] == ".." or "\0" in normal:
        raise ValueError(f"{value!r} must lie inside the workspace.")
    return normal


def user_base(workspace_mount_path: str, packages_dir: str, image_ref: str) -> str:
    """PYTHONUSERBASE of ``image_ref``'s kernels, as the container sees it."""
    return posixpath.join(workspace_mount_path, packages_dir, packages_key(image_ref))


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# What one listing reads at most: entries in all folders together, names in the packages
# directory, folders listed.
MAX_ENTRIES = 200_000
MAX_NAMES = 10_000
MAX_FOLDERS = 200


@dataclass(frozen=True)
class PackagesFolder:
    """One image's packages folder: its key, bytes on disk, entries, the packages installed in
    it (their ``.dist-info`` and ``.egg-info`` folders), whether the walk saw them all (False:
    it stopped at MAX_ENTRIES, and the size is a lower bound), when it last changed."""

    key: str
    bytes: int
    entries: int
    packages: int
    complete: bool
    modified: float


def open_packages(workspace: str, uid: int, packages_dir: str) -> int | None:
    """A descriptor of ``<workspace>/<packages_dir>`` (no symlink followed, each part below the
    workspace ``uid``'s and writable by no one else); None when it does not exist yet. Raises
    PathRefused with a sentence for anything else."""
    return open_below(
        workspace,
        uid,
        packages_dir.split("/"),
        f"The packages folder {packages_dir} of your workspace",
        fix=" Remove it (or rename it) to have your packages kept again.",
        missing_ok=True,
    )


def open_below(
    workspace: str,
    uid: int,
    parts: list[str],
    what: str,
    *,
    fix: str = "",
    missing_ok: bool = False,
) -> int | None:
    """A descriptor of the folder ``parts`` below ``workspace``, reached one part at a time (no
    symlink followed, each part ``uid``'s and writable by no one else). ``what`` names it in the
    refusals' sentences (PathRefused), ``fix`` ends the one for a part that cannot be opened.
    A part that does not exist: None when ``missing_ok``, else a refusal."""
    # Resolved here, on the worker thread: a server's root_dir may name it through a link.
    fd = open_dir(os.path.realpath(workspace), trusted=[uid], what="workspace")
    try:
        for part in parts:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not missing_ok:
                    raise PathRefused(
                        f"{what} cannot be opened: there is no {part}.{fix}"
                    ) from None
                os.close(fd)
                return None
            except OSError as e:
                if _is_link(fd, part):
                    why = f"{part} is a symbolic link"
                elif e.errno == errno.ENOTDIR:
                    why = f"{part} is not a folder"
                else:
                    why = f"{part}: {e.strerror}"
                raise PathRefused(f"{what} cannot be opened: {why}.{fix}") from None
            os.close(fd)
            fd = child
            info = os.fstat(fd)
            if info.st_uid != uid:
                raise PathRefused(
                    f"{what} cannot be used: {part} belongs to {owner_name(info.st_uid)}, not "
                    "to you."
                )
            if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise PathRefused(
                    f"{what} cannot be used: {part} (mode {describe_mode(info.st_mode)}) is "
                    "writable by other users."
                )
        return fd
    except BaseException:
        os.close(fd)
        raise


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def list_folders(workspace: str, uid: int, packages_dir: str) -> list[PackagesFolder]:
    """The packages folders (directories whose names are keys; other names are skipped), at
    most MAX_FOLDERS of them, measured within one budget of MAX_ENTRIES entries for them all:
    those the budget did not reach are listed unmeasured (``complete`` False)."""
    fd = open_packages(workspace, uid, packages_dir)
    if fd is None:
        return []
    try:
        names: list[str] = []
        with os.scandir(fd) as entries:
            for read, entry in enumerate(entries):
                if read >= MAX_NAMES or len(names) >= MAX_FOLDERS:
                    break
                if KEY_PATTERN.fullmatch(entry.name):
                    names.append(entry.name)
        folders = []
        budget = MAX_ENTRIES
        for name in sorted(names):
            try:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode) and info.st_uid == uid:
                folder = _measure(fd, name, info.st_mtime, budget)
                budget -= folder.entries
                folders.append(folder)
        return folders
    finally:
        os.close(fd)


def folder_bytes(workspace: str, uid: int, packages_dir: str, key: str) -> int | None:
    """The size of one folder (a lower bound past MAX_ENTRIES); None when there is none."""
    fd = open_packages(workspace, uid, packages_dir)
    if fd is None:
        return None
    try:
        info = os.stat(key, dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISDIR(info.st_mode):
            return None
        return _measure(fd, key, info.st_mtime, MAX_ENTRIES).bytes
    except OSError:
        return None
    finally:
        os.close(fd)


def _measure(parent_fd: int, name: str, mtime: float, budget: int) -> PackagesFolder:
    """One folder's size, reading at most ``budget`` entries."""
    total = entries = packages = 0
    latest = mtime
    complete = budget > 0
    if not complete:
        return PackagesFolder(name, 0, 0, 0, False, latest)
    walk = os.fwalk(name, dir_fd=parent_fd, follow_symlinks=False)
    for _root, dirs, files, root_fd in walk:
        packages += sum(1 for d in dirs if d.endswith((".dist-info", ".egg-info")))
        for entry in (*dirs, *files):
            if entries >= budget:
                complete = False
                break
            entries += 1
            try:
                info = os.stat(entry, dir_fd=root_fd, follow_symlinks=False)
            except OSError:
                continue
            total += info.st_blocks * 512
            latest = max(latest, info.st_mtime)
        if not complete:
            walk.close()  # type: ignore[attr-defined]  # a generator: its directories closed now
            break
    return PackagesFolder(name, total, entries, packages, complete, latest)


def reset_folder(workspace: str, uid: int, packages_dir: str, key: str) -> bool:
    """Remove one packages folder, named by its key; whether there was one."""
    if not KEY_PATTERN.fullmatch(key):
        raise PathRefused(f"{key[:80]!r} does not name a packages folder.")
    fd = open_packages(workspace, uid, packages_dir)
    if fd is None:
        return False
    try:
        try:
            info = os.stat(key, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if not stat.S_ISDIR(info.st_mode):
            # A link or a file the user put at the name: the name goes, nothing it points to.
            os.unlink(key, dir_fd=fd)
            return True
        shutil.rmtree(key, dir_fd=fd)
        return True
    finally:
        os.close(fd)
