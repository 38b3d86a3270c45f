"""What an image a user names is: one resolver for every name that comes from a user.

The engine answers an inspect of any string, and Docker reads one that names no tag as an image
id, or as the prefix of one: ``2c4e`` was another student's untagged build step (issue 61). So a
user's name never reaches the engine to be resolved. It is read here, against the engine's
listing of tagged images (``ContainerBackend.list_images``) as this service took it:

- it must be a reference (``repository[:tag][@digest]``, base/references.py), never an id or a
  prefix of one (a bare hex string is read as a repository, ``library/2c4e:latest``, which no
  listed image is tagged as);
- it names an image by one of its tags, or by a repository digest of a repository the image
  is tagged in; or by a whole registry digest of a repository some listed image is tagged in
  (content of that repository whose tag moved on: a notebook's pin), inspected by that exact
  reference: an untagged image without a registry digest (a build's step, a save) is never
  reached, nor any image by its id;
- the image must be one this user may see (privateimages.py: another user's private pull stays
  invisible, by the same sentence as an image that is not here).

The image, its id included, is the listing's record: what the caller runs or builds on is the
image the service listed, never one the engine chose for the text. Every refusal is one 404
sentence (NOT_HERE), whether the image is not here, is another user's, or the name is an id:
the answer tells nothing about what else the engine holds.

Who calls it: the content route (routes/images.py), every admission of an image a user names
(kernel/admission.py's admit_image: a build's bases, a notebook's pinned digest). Names the
service wrote itself (kernel specs made from the listing's tags) and the administrator's
configuration (kernel specs on disk, pre-pulls, the allow-list: the administrator is trusted,
and may name an image by its id there) are not users' names. On a cluster
(``tags_resolve_per_node``) no local store of images exists to reach by id: the node resolves
a reference itself.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterable, Sequence

from ..backends.backend import ContainerBackend
from ..base.errors import ImageMissing
from ..base.records import ImageRecord
from ..base.references import BadReference, ImageReference, parse_reference
from ..host.hoststate import StateDir
from . import privateimages

ID = re.compile(r"sha256:[0-9a-f]{64}")  # a whole image id, or a whole sha256 digest


def not_here(name: str) -> ImageMissing:
    """The one refusal of a user's name: not here, not theirs, or not a reference."""
    shown = " ".join(str(name).split())[:200]
    return ImageMissing(
        f"There is no image {shown} here that you may use. Name an image by its repository "
        "and tag (or a digest of it), as the GPU Containers panel lists it."
    )


def _canonical(text: str) -> str:
    try:
        return parse_reference(text).qualified
    except BadReference:
        return ""


def _repository(parsed: ImageReference) -> str:
    return f"{parsed.registry}/{parsed.repository}"


def find(images: Iterable[ImageRecord], name: str) -> ImageRecord | None:
    """The listed image ``name`` names by a tag, or by a digest of a repository it is tagged
    in; None for anything else (an id, a prefix, an untagged image's digest). Pure."""
    if len(name) > 512:
        return None
    try:
        parsed = parse_reference(name)
    except BadReference:
        return None
    repository = _repository(parsed)
    if parsed.digest:
        wanted = f"{repository}@{parsed.digest}"
        for image in images:
            tagged_in = {_repository(parse_reference(t)) for t in image.tags if _canonical(t)}
            if repository not in tagged_in:
                continue
            if wanted in {_canonical(d) for d in image.repo_digests}:
                return image
        return None
    spellings = [parsed.qualified]
    if parsed.registry == "localhost":
        # A backend that lists its local images without "localhost/" (ContainerBackend
        # .list_images): the name as the engine's own store spells it names the same tag.
        spellings.append(_canonical(parsed.written.removeprefix("localhost/")))
    listed = list(images)
    for wanted in spellings:  # the name as written first
        for image in listed:
            if wanted in {_canonical(t) for t in image.tags}:
                return image
    return None


def visible_find(
    images: Iterable[ImageRecord], name: str, hidden: privateimages.Hidden, listed: Sequence[str]
) -> ImageRecord | None:
    """:func:`find`, among what ``hidden``'s user may see (None too for another user's private
    pull). Pure."""
    image = find(images, name)
    if image is None or not hidden.may_use(image, name, listed):
        return None
    return image


def is_listed_id(
    images: Iterable[ImageRecord], text: str, hidden: privateimages.Hidden, listed: Sequence[str]
) -> bool:
    """Whether ``text`` is the whole id (``sha256:`` and 64 hex digits, never a prefix) of a
    listed image this user may see: a locally built image's stamp records its content so, and
    the answer tells nothing the catalog does not show them. Pure."""
    if not ID.fullmatch(text):
        return False
    return any(image.id == text and hidden.view(image, listed) is not None for image in images)


def digest_of_listed_repository(
    images: Iterable[ImageRecord], name: str, hidden: privateimages.Hidden, listed: Sequence[str]
) -> str:
    """The engine's name of ``name`` when it is a whole sha256 digest of a repository that a
    listed image this user may see is tagged in ("" otherwise): content pulled from that
    repository whose tag has moved on since (a notebook's pin, a stamp's recorded content,
    issue 31). A registry digest names content by its whole hash, never by a prefix, and only
    what a pull of that repository brought has one (a build's steps have none). Pure."""
    try:
        parsed = parse_reference(name)
    except BadReference:
        return ""
    if not ID.fullmatch(parsed.digest):
        return ""
    repository = _repository(parsed)
    for image in images:
        seen = hidden.view(image, listed)
        tags = seen.tags if seen is not None else ()
        if repository in {_repository(parse_reference(t)) for t in tags if _canonical(t)}:
            return f"{parsed.name}@{parsed.digest}"
    return ""


async def lookup(
    backend: ContainerBackend, state: StateDir, listed: Sequence[str], uid: int | None, name: str
) -> ImageRecord | None:
    """The image ``name`` names for user ``uid`` (None: this server's user): a tag or digest of
    the engine's listing of tagged images now (:func:`find`), else a whole digest of a
    repository listed there (:func:`digest_of_listed_repository`), inspected by that exact
    reference and checked to carry it; None for anything else, or another user's private
    image. The engine's unavailability comes through as its own error."""
    images = await backend.list_images()
    who = os.geteuid() if uid is None else uid
    hidden = await asyncio.to_thread(privateimages.hidden_from, state, who)
    found = find(images, name)
    if found is None:
        exact = digest_of_listed_repository(images, name, hidden, listed)
        if not exact:
            return None
        try:
            found = await backend.inspect_image(exact)
        except ImageMissing:
            return None
        if _canonical(exact) not in {_canonical(d) for d in found.repo_digests}:
            return None
    return found if hidden.may_use(found, name, listed) else None


async def resolve_for(
    backend: ContainerBackend, state: StateDir, listed: Sequence[str], uid: int | None, name: str
) -> ImageRecord:
    """:func:`lookup`, or :func:`not_here`'s ImageMissing (404)."""
    found = await lookup(backend, state, listed, uid, name)
    if found is None:
        raise not_here(name)
    return found
