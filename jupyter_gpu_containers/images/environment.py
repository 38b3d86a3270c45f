"""What a notebook ran on, kept in the notebook: the environment stamp, and the digest a notebook
may pin its image to.

A notebook's kernel spec names an image by its tag, and tags move: a registry's ``:latest``, a
course's ``pytorch:24.05-py3`` pushed again. At each kernel start the panel writes the kernel's
**environment stamp** into the notebook's metadata, next to its GPU request
(``metadata.gpu_containers.environment``): the image reference, the content digest it ran, the
framework and CUDA versions, and the compatibility verdict on the GPUs it got. No paths, no user
names, no GPU UUIDs, nothing secret: a notebook is shared. No time either, so a start on the same
environment leaves the notebook unchanged.

When the tag now names other content than the stamp's, the notebook's reader chooses: the tag's
new content, or the recorded one. The recorded one is a **pin**
(``metadata.gpu_containers.image_digest``: ``repository@sha256:…``), which the kernel's start
reads as it reads the GPU request, and runs that digest of the kernel spec's own repository: the
administrator's allow-list still judges the kernel spec's reference, the pinned digests policy
the content actually run. A pin of another repository (the notebook switched to another image
since) is not this kernel's: its start runs the kernel spec's tag.

Pure (none of it reads the engine): the routes give it what the engine said. Every text of an
image's own metadata, and of a notebook's stamp, is bounded (both are others' words).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..base.errors import ValueRefused
from ..base.records import ImageRecord
from ..base.references import BadReference, ImageReference, parse_reference
from ..gpus.inventory import GPU, Inventory
from ..gpus.notebook_requests import METADATA_KEY
from .catalog import describe_image, framework_with_probe
from .probe import ProbeResult

# The keys under the notebook's section (notebook_requests.METADATA_KEY).
STAMP_KEY = "environment"
PIN_KEY = "image_digest"
# The longest text of an image's own metadata a stamp keeps.
MAX_TEXT = 200
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class BadPin(ValueRefused):
    """A notebook's pin that is no image digest reference at all."""


def image_digest(reference: str, image_id: str, repo_digests: Sequence[str]) -> str:
    """The digest that names an image: its registry digest for the repository it was started
    from (else its first one), else its content id (a locally built image)."""
    try:
        wanted = parse_reference(reference)
    except BadReference:
        wanted = None
    for candidate in repo_digests:
        try:
            found = parse_reference(candidate)
        except BadReference:
            continue
        if wanted and (found.registry, found.repository) == (wanted.registry, wanted.repository):
            return candidate
    return repo_digests[0] if repo_digests else image_id


def _bounded(value: Any) -> str:
    return str(value or "")[:MAX_TEXT]


def environment_stamp(
    reference: str,
    image: ImageRecord,
    probe: ProbeResult | None,
    listed: Mapping[str, Any] | None,
    inventory: Inventory,
    gpu_ids: Sequence[str],
) -> dict[str, Any]:
    """The stamp of a kernel that runs ``image`` for the kernel spec's ``reference`` on the GPUs
    ``gpu_ids`` (UUIDs or indices of ``inventory``): what the notebook's metadata records.
    ``listed``: the administrator's catalog entry for the reference (None: not listed)."""
    framework = framework_with_probe(reference, image.env, image.labels, probe)
    described = describe_image(reference, image.env, listed)
    found: list[GPU] = [g for g in (inventory.find(i) for i in gpu_ids) if g is not None]
    own = Inventory(
        inventory.source,
        tuple(found),
        inventory.driver_version,
        inventory.cuda_driver_version,
        inventory.reason,
    )
    verdict = described.verdict(own) if found else None
    return {
        "image": reference,
        "digest": image_digest(reference, image.id, image.repo_digests),
        "framework": _bounded(framework.name if framework else ""),
        "framework_version": _bounded(
            (framework.release or framework.version) if framework else ""
        ),
        "cuda_version": _bounded(described.cuda),
        "python_version": _bounded(probe.python_version if probe else ""),
        "gpus": [_bounded(g.name) for g in found],
        "driver_version": inventory.driver_version if found else "",
        "verdict": ({"outcome": verdict.outcome, "reason": verdict.reason} if verdict else None),
    }


def stamp_in_metadata(metadata: Any) -> dict[str, Any] | None:
    """The stamp a notebook's metadata holds, in the stamp's own shape (what else a hand edit
    put there left out, texts bounded), or None: absent, or no image and digest to read."""
    section = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
    stamp = section.get(STAMP_KEY) if isinstance(section, dict) else None
    if not isinstance(stamp, dict):
        return None
    if not isinstance(stamp.get("image"), str) or not isinstance(stamp.get("digest"), str):
        return None
    texts = ("framework", "framework_version", "cuda_version", "python_version")
    gpus = stamp.get("gpus")
    verdict = stamp.get("verdict")
    return {
        "image": stamp["image"][:512],  # (as long as a reference may be)
        "digest": stamp["digest"][:512],
        **{
            key: _bounded(stamp.get(key)) if isinstance(stamp.get(key), str) else ""
            for key in texts
        },
        "gpus": [_bounded(g) for g in gpus if isinstance(g, str)][:64]
        if isinstance(gpus, list)
        else [],
        "driver_version": _bounded(stamp.get("driver_version"))
        if isinstance(stamp.get("driver_version"), str)
        else "",
        "verdict": {
            "outcome": _bounded(verdict.get("outcome")),
            "reason": str(verdict.get("reason") or "")[:1000],
        }
        if isinstance(verdict, dict)
        else None,
    }


def pin_in_metadata(metadata: Any) -> str:
    """The digest reference a notebook pins its image to, "" when it pins none (not checked:
    see check_pin)."""
    section = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
    pin = section.get(PIN_KEY) if isinstance(section, dict) else None
    return pin if isinstance(pin, str) else ""


def check_pin(pin: str, reference: str) -> str:
    """``pin`` as the reference a kernel of ``reference`` runs instead, or "": no pin, or one
    of another repository (the notebook moved to another image since it was pinned: the pin is
    not this image's, and never reaches an image the kernel spec's reference would not). BadPin
    with a sentence for a pin that is no digest reference at all."""
    if not pin:
        return ""
    pinned: ImageReference | None = None
    own: ImageReference | None = None
    with contextlib.suppress(BadReference):
        pinned, own = parse_reference(pin), parse_reference(reference)
    if pinned is None or not _DIGEST.fullmatch(pinned.digest or ""):
        raise BadPin(
            f"The notebook pins its image to {pin[:MAX_TEXT]!r}, which is not an image digest "
            "(repository@sha256:…). Choose the image's content again in the notebook's "
            "toolbar."
        )
    if own is None or (pinned.registry, pinned.repository) != (own.registry, own.repository):
        return ""
    return f"{own.name}@{pinned.digest}"


def pinnable(stamp: Mapping[str, Any]) -> bool:
    """Whether a notebook can be pinned to the stamp's content by its registry digest (of the
    stamp's image's repository). A locally built image has only its id, which names no
    repository: its pin is :func:`kept_pin`, run only where the server recorded it."""
    try:
        return bool(check_pin(str(stamp.get("digest", "")), str(stamp.get("image", ""))))
    except BadPin:
        return False


def kept_pin(stamp: Mapping[str, Any]) -> str:
    """The pin of a stamp's locally built content (its image id, under its image's
    repository: ``course@sha256:<id>``), "" when the stamp records no image id. A kernel runs it
    only where the server's own record says the tag named that content before it moved
    (admission.py); written by the server, never typed."""
    image, digest = str(stamp.get("image", "")), str(stamp.get("digest", ""))
    if not _DIGEST.fullmatch(digest):
        return ""
    try:
        pin = f"{parse_reference(image).name}@{digest}"
        return pin if check_pin(pin, image) else ""
    except (BadReference, BadPin):
        return ""


def names_an_image(text: str) -> bool:
    """Whether a stamp's text is an image reference or an image id (a stamp is a file's words:
    anything else is not asked of the engine)."""
    if _DIGEST.fullmatch(text):
        return True
    try:
        parse_reference(text)
    except BadReference:
        return False
    return True


def moved_tag(stamp: Mapping[str, Any], current_digest: str) -> bool:
    """Whether the stamp's tag names other content on this host now (``current_digest``, as
    image_digest gives it; "" when the tag is not on this host)."""
    recorded = str(stamp.get("digest", ""))
    return bool(current_digest) and _digest_part(current_digest) != _digest_part(recorded)


def _digest_part(text: str) -> str:
    return text.rsplit("@", 1)[-1]
