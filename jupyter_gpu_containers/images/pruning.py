"""Pruning of images left unused (``PrePuller.prune_after_days``; prepull.py's docstring gives
the five conditions an image must meet): one pass over the engine's disk report, each managed image
removed or kept with its reason, the pass's report recorded in the host state directory; the
report as the API shows it, and the host's disk-use totals. Blocking (the engine, files): worker
threads."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable
from typing import Any

from ..backends.backend import ContainerBackend
from ..base.errors import ContainerKernelError, ImageMissing
from ..base.records import ImageDiskUse, ImagesDiskUse, iso_time
from ..base.references import BadReference, normalize_reference, parse_reference
from ..base.words import counted
from ..host.hoststate import StateDir
from ..policy.admin_policy import ContainerPolicy, image_allowed
from .prepull_records import HostRecords


class Pruner:
    """Pruning passes: which images are the extension's to manage (the catalog's listed images,
    the patterns, the allow-list), and removing those that may go."""

    def __init__(
        self,
        *,
        backend: ContainerBackend,
        policy: ContainerPolicy,
        listed: Callable[[], list[str]],
        records: HostRecords,
        log: logging.Logger,
    ) -> None:
        self.backend = backend
        self.policy = policy
        self._listed = listed
        self._records = records
        self.log = log

    def prune_sync(
        self,
        *,
        now: float,
        state: StateDir,
        after_days: float,
        patterns: list[str],
        scheduled: set[str],
    ) -> dict[str, Any]:
        """One pass at ``now``: images unused for ``after_days`` days go, unless ``scheduled``
        (the pre-pull schedule's references) names them; ``patterns``: PrePuller.prune_images.
        Its report, also recorded."""
        report: dict[str, Any] = {"ran": now, "removed": [], "kept": [], "freed_bytes": 0}
        try:
            disk = self.backend.image_disk_use_sync()
        except ContainerKernelError as e:
            report["error"] = e.sentence
            self._records.save_prune(state, report, None)
            return report
        seen = self._records.first_seen(state)
        first_seen = {
            i.id: float(seen[i.id]) if isinstance(seen.get(i.id), (int, float)) else now
            for i in disk.images
        }
        by_ref, by_id = self._records.host_uses()
        listed = {normalize_reference(r) for r in self._listed()}
        horizon = now - after_days * 86400.0
        for image in disk.images:
            tags = [_normalized(t) for t in image.tags]
            if not tags or not all(self._managed(t, listed, patterns) for t in tags):
                continue  # not the extension's to manage: never looked at again
            last_used = max(
                [
                    first_seen[image.id],
                    by_id.get(image.id, 0.0),
                    *(by_ref.get(t, 0.0) for t in tags),
                ]
            )
            reason = _keep_reason(image, tags, scheduled, last_used, horizon)
            row = {
                "image": tags,
                "id": image.id,
                "size": image.size,
                "last_used": iso_time(last_used),
            }
            if reason:
                report["kept"].append({**row, "reason": reason})
                continue
            removed = self._remove(image)
            if removed:
                report["removed"].append(row)
                report["freed_bytes"] += image.unique_size
                self.log.info(
                    "Pruned %s (%s), unused since %s",
                    ", ".join(tags),
                    image.id,
                    iso_time(last_used),
                )
            else:
                reason = "The engine kept it: a container started on it meanwhile."
                report["kept"].append({**row, "reason": reason})
        self._records.save_prune(state, report, first_seen)
        return report

    def _managed(self, ref: str, listed: set[str], patterns: list[str]) -> bool:
        if image_allowed(self.policy, ref):
            return False  # refused by the allow-list: not an image this extension runs
        if ref in listed:
            return True
        forms = {ref, _fully_qualified(ref)}
        return any(fnmatch.fnmatchcase(f, p) for f in forms for p in patterns)

    def _remove(self, image: ImageDiskUse) -> bool:
        """Untag each tag (never forced: the engine refuses while a container uses the image);
        whether the image is gone."""
        try:
            for tag in image.tags:
                self.backend.untag_sync(tag)
            self.backend.inspect_image_sync(image.id)
        except ImageMissing:
            return True
        except ContainerKernelError as e:
            self.log.warning("Pruning %s failed: %s", image.id, e.sentence)
        return False


def _normalized(tag: str) -> str:
    try:
        return normalize_reference(tag)
    except BadReference:
        return tag


def _fully_qualified(ref: str) -> str:
    try:
        parsed = parse_reference(ref)
    except (BadReference, ValueError):
        return ref
    return f"{parsed.registry}/{parsed.repository}:{parsed.pull_tag}"


def _keep_reason(
    image: ImageDiskUse, tags: list[str], scheduled: set[str], last_used: float, horizon: float
) -> str:
    """Why a managed image stays ("" when it may go)."""
    if set(tags) & scheduled:
        return "It is in the pre-pull schedule (PrePuller.schedule)."
    if not image.repo_digests:
        return "It was built on this host: it could not be pulled again."
    if image.containers != 0:
        if image.containers < 0:
            return "The engine did not say whether a container uses it."
        verb = "uses" if image.containers == 1 else "use"
        return f"{counted(image.containers, 'container')} {verb} it."
    if last_used > horizon:
        return "It was used (or arrived) too recently."
    return ""


def prune_json(prune: dict[str, Any], details: bool) -> dict[str, Any]:
    removed, kept = list(prune.get("removed") or []), list(prune.get("kept") or [])
    return {
        "ran": iso_time(float(prune["ran"])),
        "removed_count": len(removed),
        "kept_count": len(kept),
        "removed": removed if details else None,
        "kept": kept if details else None,
        "freed_bytes": int(prune.get("freed_bytes") or 0),
        "error": str(prune.get("error") or ""),
    }


def disk_totals(disk: ImagesDiskUse) -> dict[str, Any]:
    """Host-wide totals of images' disk use: the bytes all layers take (each shared layer
    once), the sum of images' sizes, and what removing every image no container uses would
    free at least (their layers no other image shares; ``docker system df`` counts it so)."""
    unused = [i for i in disk.images if i.containers == 0]
    return {
        "images": len(disk.images),
        "layers_bytes": disk.layers_size,
        "images_bytes": sum(i.size for i in disk.images),
        "unused_images": len(unused),
        "reclaimable_bytes": sum(i.unique_size for i in unused),
    }
