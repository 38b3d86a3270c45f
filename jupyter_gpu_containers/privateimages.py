"""Images pulled with a user's own registry login belong to that user.

The engine's images are one pool for the whole host: an image that alice pulled from her
group's private registry with her own login would otherwise be offered to bob at once, as a
kernel spec, in the catalog, and at launch. So each pull made with a user's own credentials is
recorded in the host state directory (hoststate.py), in a file of that user's:

    private-images-<uid>.json    owner <uid>, mode 0644: {"images": [{"ref", "image_id"}]}

and every other user's server hides those images, unless an administrator lists the image
(ImageCatalog.listed_images: then it is meant for everyone), or that user pulled it with a login
of their own too. A record is written before the pull starts (so the image is never visible to
others, not even between the pull's end and its record), and dropped when the pull fails or
turns out to have changed nothing (the image was on the host already).

A record file is believed only when its owner is the uid its name gives: nobody can make an
image private to someone else. Someone in the docker group can always run any image with
`docker run`: this keeps the extension from offering it, it is not a wall (README, Security).

Blocking, all of it: worker threads only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import ContainerKernelError
from .hoststate import StateDir
from .records import ImageRecord
from .references import normalize_reference
from .safefiles import read_nofollow, write_atomic

_FILE = re.compile(r"private-images-([0-9]{1,10})\.json")


class PrivateRecordFailed(ContainerKernelError):
    status = 409
    reason_phrase = "Private pull refused"


def _file_name(uid: int) -> str:
    return f"private-images-{uid}.json"


@dataclass
class Hidden:
    """What another user pulled with their own login: image ids and references."""

    ids: set[str] = field(default_factory=set)
    refs: set[str] = field(default_factory=set)

    def hides(self, image: ImageRecord, listed: Iterable[str] = ()) -> bool:
        tags = {normalize_reference(t) for t in image.tags}
        if tags & {normalize_reference(r) for r in listed}:
            return False
        return image.id in self.ids or bool(tags & self.refs)


def _read(state: StateDir, name: str, uid: int) -> list[dict[str, str]]:
    """One user's records: [] for a file that is missing, malformed or not that user's."""
    try:
        info = os.stat(name, dir_fd=state.fd, follow_symlinks=False)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != uid:
            return []
        data = json.loads(read_nofollow(name, dir_fd=state.fd).decode("utf-8"))
    except (OSError, ValueError):
        return []
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        return []
    return [
        {"ref": str(i.get("ref", "")), "image_id": str(i.get("image_id", ""))}
        for i in images
        if isinstance(i, dict)
    ]


def hidden_from(state: StateDir, uid: int) -> Hidden:
    """The images other users' private pulls hide from ``uid`` (nothing without the host-wide
    state directory: then nobody can have made a private pull)."""
    hidden, mine = Hidden(), Hidden()
    if not state.shared:
        return hidden
    try:
        names = os.listdir(state.fd)
    except OSError:
        return hidden
    for name in names:
        m = _FILE.fullmatch(name)
        if not m:
            continue
        owner = int(m[1])
        into = mine if owner == uid else hidden
        for record in _read(state, name, owner):
            if record["image_id"]:
                into.ids.add(record["image_id"])
            if record["ref"]:
                into.refs.add(normalize_reference(record["ref"]))
    hidden.ids -= mine.ids
    hidden.refs -= mine.refs
    return hidden


def visible(
    images: Iterable[ImageRecord],
    state: StateDir,
    listed: Iterable[str],
    uid: int | None = None,
) -> list[ImageRecord]:
    """``images`` without those other users' private pulls hide from ``uid`` (a kernel
    service's user; None: this server's user)."""
    hidden = hidden_from(state, os.geteuid() if uid is None else uid)
    listed = list(listed)
    return [image for image in images if not hidden.hides(image, listed)]


def _update(
    state: StateDir, change: dict[str, str], remove: bool, owner: tuple[int, int] | None
) -> None:
    uid = os.geteuid() if owner is None else owner[0]
    name = _file_name(uid)
    with state.write_lock:
        records = [r for r in _read(state, name, uid) if r["ref"] != change["ref"]]
        if not remove:
            records.append(change)
        try:
            # Renamed over the old file: allowed in the sticky directory only when the old file
            # is ours (or absent). One another user planted there first refuses the write.
            # A kernel service writes its users' files, owned by them (as the reader requires):
            # its state directory is its own, so they cannot reach them.
            data = json.dumps({"images": records}, indent=1).encode()
            write_atomic(state.fd, name, data, 0o644, owner)
        except OSError as e:
            raise PrivateRecordFailed(
                f"Your private pulls cannot be recorded in {state.path} ({e.strerror}): the "
                f"file {name} there belongs to someone else. Ask an administrator to remove it; "
                "until then pulls with your own registry login are refused."
            ) from None


def record(
    state: StateDir, ref: str, image_id: str = "", owner: tuple[int, int] | None = None
) -> None:
    """Record ``ref`` (and, once pulled, its image id) as pulled with a user's own login:
    ``owner``'s (uid, gid), a kernel service's user; None: this server's user."""
    state.require_shared()
    _update(state, {"ref": normalize_reference(ref), "image_id": image_id}, False, owner)


def forget(state: StateDir, ref: str, owner: tuple[int, int] | None = None) -> None:
    """Drop the record of ``ref`` (a pull that failed, or changed nothing)."""
    with contextlib.suppress(ContainerKernelError):
        _update(state, {"ref": normalize_reference(ref), "image_id": ""}, True, owner)
