"""Images pulled with a user's own registry login belong to that user: the references pulled.

The engine's images are one pool for the whole host: an image that alice pulled from her
group's private registry with her own login would otherwise be offered to bob at once, as a
kernel spec, in the catalog, and at launch. So each pull made with a user's own credentials is
recorded in the host state directory (hoststate.py), in a file of that user's:

    private-images-<uid>.json    owner <uid>, mode 0644:
                                 {"images": [{"ref", "image_id", "before"}]}

What is private is the reference pulled, on the image it brought, and nothing else. A record
hides, from every other user, the reference ``ref`` (and the repository digests the pull wrote
in its repository) while ``ref`` still names the image ``image_id``; while the pull runs
(``image_id`` still ""), while ``ref`` names another image than ``before``, the one it named
before the pull. An image is never hidden by its id: the same image reached through another
reference (a course image that alice's private registry happens to hold too, a tag that was on
the host before the pull, one pulled without a user's login) stays everyone's, kernel specs,
catalog rows and launches alike. Nor is a reference hidden when an administrator lists it
(ImageCatalog.listed_images: then it is meant for everyone), or from a user who pulled it with
a login of their own too.

A record ends when it is no longer true: when its reference is removed, or comes to name
another image (prune, on each re-listing of the images), when the same reference is pulled
without a user's login (made_public), and when a pull fails or changes nothing (forget). So
it survives a restart of the server only as far as it still holds. A record is written before
the pull starts (so the image is never visible to others, not even between the pull's end and
its record).

A record file is believed only when its owner is the uid its name gives: nobody can make an
image private to someone else. Someone in the docker group can always run any image with
`docker run`: this keeps the extension from offering it, it is not a wall (README, Security).

Blocking, all of it: worker threads only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..base.errors import ContainerKernelError
from ..base.records import ImageRecord
from ..base.references import BadReference, normalize_reference, parse_reference
from ..base.safefiles import read_nofollow, write_atomic
from ..host.hoststate import StateDir

_FILE = re.compile(r"private-images-([0-9]{1,10})\.json")


class PrivateRecordFailed(ContainerKernelError):
    status = 409
    reason_phrase = "Private pull refused"


def _file_name(uid: int) -> str:
    return f"private-images-{uid}.json"


def _canonical(ref: str) -> str:
    """One spelling per reference (``ubuntu``, ``ubuntu:latest`` and
    ``docker.io/library/ubuntu:latest`` are one), for comparisons only."""
    try:
        return parse_reference(ref).qualified
    except BadReference:
        return normalize_reference(ref)


def _repository(ref: str) -> str:
    try:
        parsed = parse_reference(ref)
    except BadReference:
        return ""
    return f"{parsed.registry}/{parsed.repository}"


def references(image: ImageRecord) -> set[str]:
    """Every reference that names ``image`` on this host (its tags and repository digests),
    canonical."""
    return {_canonical(r) for r in (*image.tags, *image.repo_digests)}


@dataclass(frozen=True)
class Record:
    """One private pull: the reference pulled, the image it brought ("" while the pull runs),
    and the image the reference named before ("" when none)."""

    ref: str
    image_id: str = ""
    before: str = ""

    def holds(self, image: ImageRecord) -> bool:
        """Whether this pull's reference names ``image`` now, as the pull left it."""
        if _canonical(self.ref) not in references(image):
            return False
        if self.image_id:
            return image.id == self.image_id
        return image.id != self.before  # under way: whatever it brings is private

    def to_json(self) -> dict[str, str]:
        return {"ref": self.ref, "image_id": self.image_id, "before": self.before}


@dataclass
class Hidden:
    """The private pulls that concern one user: other users' (``others``), their own
    (``mine``)."""

    others: list[Record] = field(default_factory=list)
    mine: list[Record] = field(default_factory=list)

    def hidden_references(self, image: ImageRecord, listed: Iterable[str] = ()) -> set[str]:
        """The references of ``image`` (canonical) this user may not see."""
        found: set[str] = set()
        if not self.others:
            return found
        public = {_canonical(r) for r in listed}
        own = {_canonical(r.ref) for r in self.mine if r.holds(image)}
        for record in self.others:
            ref = _canonical(record.ref)
            if ref in public or ref in own or not record.holds(image):
                continue
            found.add(ref)
            # The repository digest the pull wrote names the same private repository.
            repository = _repository(ref)
            for digest in image.repo_digests:
                if _repository(digest) == repository and _canonical(digest) not in public:
                    found.add(_canonical(digest))
        return found

    def view(self, image: ImageRecord, listed: Iterable[str] = ()) -> ImageRecord | None:
        """``image`` as this user may see it: without the references hidden from them; None
        when every reference it had is (it came only through another user's private pull)."""
        hidden = self.hidden_references(image, listed)
        if not hidden:
            return image
        tags = tuple(t for t in image.tags if _canonical(t) not in hidden)
        digests = tuple(d for d in image.repo_digests if _canonical(d) not in hidden)
        if not tags and not digests:
            return None
        return dataclasses.replace(image, tags=tags, repo_digests=digests)

    def may_use(self, image: ImageRecord, ref: str, listed: Iterable[str] = ()) -> bool:
        """Whether this user may start a kernel on ``image`` named ``ref``: a reference of it
        that is not hidden from them; any other name (an id, another spelling) only while the
        image has some reference they may see."""
        listed = list(listed)
        hidden = self.hidden_references(image, listed)
        if not hidden:
            return True
        canonical = _canonical(ref)
        if canonical in references(image):
            return canonical not in hidden
        return self.view(image, listed) is not None


def _read(state: StateDir, name: str, uid: int) -> list[Record]:
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
        Record(str(i.get("ref", "")), str(i.get("image_id", "")), str(i.get("before", "")))
        for i in images
        if isinstance(i, dict) and i.get("ref")
    ]


def _owners(state: StateDir) -> list[tuple[str, int]]:
    """(file name, uid) of every record file in the state directory."""
    try:
        names = os.listdir(state.fd)
    except OSError:
        return []
    found = []
    for name in names:
        m = _FILE.fullmatch(name)
        if m:
            found.append((name, int(m[1])))
    return found


def hidden_from(state: StateDir, uid: int) -> Hidden:
    """The private pulls that concern ``uid`` (nothing without the host-wide state directory:
    then nobody can have made a private pull)."""
    hidden = Hidden()
    if not state.shared:
        return hidden
    for name, owner in _owners(state):
        into = hidden.mine if owner == uid else hidden.others
        into.extend(_read(state, name, owner))
    return hidden


def visible(
    images: Iterable[ImageRecord],
    state: StateDir,
    listed: Iterable[str],
    uid: int | None = None,
) -> list[ImageRecord]:
    """``images`` as ``uid`` may see them (a kernel service's user; None: this server's user):
    without the references other users' private pulls hide from them, and without the images
    those were the only references of."""
    hidden = hidden_from(state, os.geteuid() if uid is None else uid)
    listed = list(listed)
    seen = (hidden.view(image, listed) for image in images)
    return [image for image in seen if image is not None]


def may_use(
    image: ImageRecord, ref: str, state: StateDir, listed: Iterable[str], uid: int | None = None
) -> bool:
    """Whether ``uid`` (None: this server's user) may start a kernel on ``image`` named
    ``ref`` (Hidden.may_use)."""
    return hidden_from(state, os.geteuid() if uid is None else uid).may_use(image, ref, listed)


def _write(
    state: StateDir, name: str, records: list[Record], owner: tuple[int, int] | None
) -> None:
    # Renamed over the old file: allowed in the sticky directory only when the old file is
    # ours (or absent). One another user planted there first refuses the write. A kernel
    # service writes its users' files, owned by them (as the reader requires): its state
    # directory is its own, so they cannot reach them.
    data = json.dumps({"images": [r.to_json() for r in records]}, indent=1).encode()
    write_atomic(state.fd, name, data, 0o644, owner)


def _update(state: StateDir, change: Record, remove: bool, owner: tuple[int, int] | None) -> None:
    uid = os.geteuid() if owner is None else owner[0]
    name = _file_name(uid)
    with state.write_lock:
        records = [r for r in _read(state, name, uid) if r.ref != change.ref]
        if not remove:
            records.append(change)
        try:
            _write(state, name, records, owner)
        except OSError as e:
            raise PrivateRecordFailed(
                f"Your private pulls cannot be recorded in {state.path} ({e.strerror}): the "
                f"file {name} there belongs to someone else. Ask an administrator to remove it; "
                "until then pulls with your own registry login are refused."
            ) from None


def record(
    state: StateDir,
    ref: str,
    image_id: str = "",
    owner: tuple[int, int] | None = None,
    before: str = "",
) -> None:
    """Record ``ref`` (and, once pulled, its image id) as pulled with a user's own login:
    ``owner``'s (uid, gid), a kernel service's user; None: this server's user. ``before``: the
    image ``ref`` named before the pull ("" when none), which stays everyone's meanwhile."""
    state.require_shared()
    _update(state, Record(normalize_reference(ref), image_id, before), False, owner)


def forget(state: StateDir, ref: str, owner: tuple[int, int] | None = None) -> None:
    """Drop the record of ``ref`` (a pull that failed, or changed nothing)."""
    with contextlib.suppress(ContainerKernelError):
        _update(state, Record(normalize_reference(ref)), True, owner)


# What names ``ref`` now: its image id, "" when nothing does, None when it cannot be known
# (the engine is away): then no record is dropped.
CurrentId = Callable[[str], "str | None"]


def _rewrite(
    state: StateDir,
    keep: Callable[[Record], Record | None],
    owners: Iterable[int] | None,
) -> int:
    """Apply ``keep`` to the records of ``owners`` (None: everyone's, which only the owner of
    the state directory's files, a kernel service as root, can write); how many records went.
    Files this process may not write are left as they are."""
    if not state.shared:
        return 0
    wanted = None if owners is None else set(owners)
    dropped = 0
    with state.write_lock:
        for name, uid in _owners(state):
            if wanted is not None and uid not in wanted:
                continue
            records = _read(state, name, uid)
            kept = [k for k in map(keep, records) if k is not None]
            if kept == records:
                continue
            try:
                gid = os.stat(name, dir_fd=state.fd, follow_symlinks=False).st_gid
                _write(state, name, kept, (uid, gid) if uid != os.geteuid() else None)
            except OSError:
                continue  # another user's file in a shared directory: theirs to settle
            dropped += len(records) - len(kept)
    return dropped


def prune(
    state: StateDir,
    current_id: CurrentId,
    owners: Iterable[int] | None = None,
    settle: bool = False,
) -> int:
    """Drop the records that are no longer true: a finished pull whose reference is gone or
    names another image now. ``settle``: pulls under way are none (a kernel service starting):
    one whose reference names a new image becomes that image's record, the others go.
    ``owners``: whose records (None: everyone's). How many records went."""

    def keep(r: Record) -> Record | None:
        if not r.image_id and not settle:
            return r  # a pull under way: its own end settles it
        now = current_id(r.ref)
        if now is None:
            return r
        if r.image_id:
            return r if now == r.image_id else None
        return Record(r.ref, now, r.before) if now and now != r.before else None

    return _rewrite(state, keep, owners)


def made_public(state: StateDir, ref: str, image_id: str) -> int:
    """``ref`` was pulled without a user's login and names ``image_id``: it is nobody's private
    pull any more (every owner's record of it that this process may write goes)."""
    canonical = _canonical(ref)

    def keep(r: Record) -> Record | None:
        if _canonical(r.ref) == canonical and r.image_id in ("", image_id):
            return None
        return r

    return _rewrite(state, keep, None)
