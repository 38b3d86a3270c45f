"""Images on a cluster, pure: the content id a node reports for an image, and references as a
node's runtime names them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...base.references import BadReference, parse_reference

# An image's content id as the node reports it (containerStatus.imageID's digest).
CONTENT_ID = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class ImageDigest:
    """What a node ran for an image reference: its content id ("sha256:<hex>"), the pinned
    "repo@sha256:<hex>" when the node gave that form (a pulled image; "" for one imported
    into the node's runtime), and when the API server created the pod that ran it (unix time)."""

    id: str
    pinned: str
    created: float


def content_digest(image_id: str) -> tuple[str, str]:
    """("sha256:<hex>", "repo@sha256:<hex>" or "") from a container status's imageID: a pulled
    image's "docker.io/library/x@sha256:…" (its manifest digest, pinned), an imported image's
    "sha256:…" (its config digest); a runtime's "docker-pullable://" prefix dropped. ("", "")
    when it names no digest."""
    text = image_id.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    repo, at, digest = text.rpartition("@")
    if not at:
        repo, digest = "", text
    if not CONTENT_ID.fullmatch(digest):
        return "", ""
    return digest, f"{repo}@{digest}" if repo else ""


def canonical_reference(ref: str) -> str:
    """The name a node gives an image reference: "jgc/x:1" is "docker.io/jgc/x:1" (so that a
    kernel spec's and a listing's spellings of one image meet); ``ref`` itself when it is no
    reference."""
    try:
        return parse_reference(ref).qualified
    except BadReference:
        return ref


def repository_of(ref: str) -> str:
    """ "registry/repository" of ``ref`` ("" when it is no reference)."""
    try:
        parsed = parse_reference(ref)
    except BadReference:
        return ""
    return f"{parsed.registry}/{parsed.repository}"
