"""``GET /gpu-containers/images``, ``/images/content`` and ``/prepull``: the catalog (local and
listed images, readiness, verdicts, disk use), what a reference names now (a notebook's stamp is
checked with it), and the administrator's pre-pull schedule and pruning.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..base.errors import ContainerKernelError, EngineUnavailable
from ..base.records import ImageRecord, ImagesDiskUse
from ..images import named, privateimages
from ..images.catalog import CatalogInputs, catalog_rows
from ..images.environment import image_digest, names_an_image
from ..images.prepull import disk_totals
from ..images.pulls import ACTIVE
from ..services import Services
from .base import GPUContainersHandler
from .cluster_view import catalog_verdicts


class ImagesHandler(GPUContainersHandler):
    """The catalog. ``?wait=1`` waits for the readiness probes of images not probed yet (else
    they run in the background and the rows say so). Without an engine: the listed images only,
    and ``engine_error`` says why."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        services = self.services
        engine = services.backend
        engine_error = ""
        policy = services.policy
        listed = services.catalog.listed()
        try:
            images = await engine.list_images()
        except EngineUnavailable as e:  # the listed images and the host can still be shown
            images, engine_error = [], e.sentence
        # Another user's private pulls are not this user's to see (privateimages.py).
        images = await asyncio.to_thread(
            lambda: privateimages.visible(
                images,
                services.state,
                [entry["image"] for entry in listed],
                int(self.uid),
            )
        )
        pulls = services.pulls
        pulling = {p["image"]: p["id"] for p in pulls.listing(self.whose) if p["state"] in ACTIVE}
        offers = getattr(self.kernel_spec_manager, "offers", None)
        if self.kernel_user is not None and offers is not None and not await self.is_admin():
            # A kernel service's user is shown what they may start or ask for: the images it
            # offers as kernels, the administrator's list, and their own pulls under way; not
            # every image on the host (its administrators see those, with the reason for each),
            # and nothing else is probed for them.
            listed_refs = {entry["image"] for entry in listed}
            images = _narrowed(
                images, lambda ref: ref in listed_refs or ref in pulling or offers(ref)
            )
        inventory = await services.inventory.read()
        probe = services.probe
        # cached() may read the probe's disk cache: off the event loop.
        results = await asyncio.to_thread(lambda: {i.id: probe.cached(i.id) for i in images})
        unprobed = [image for image in images if results[image.id] is None]
        if unprobed and self.get_query_argument("wait", "0") in ("1", "true"):
            found = await asyncio.gather(*(probe.probe(image) for image in unprobed))
            # Under the listed ids (on Kubernetes an answer's id is the digest the node ran).
            results.update({image.id: r for image, r in zip(unprobed, found)})
        else:
            for image in unprobed:
                probe.in_background(image)  # the probe's own threads; its answer is cached
        image_entries = getattr(self.kernel_spec_manager, "image_entries", None)
        entries = await asyncio.to_thread(image_entries) if image_entries else {}
        try:  # sizes shared between images, and containers using each: the engine's df
            disk: ImagesDiskUse | None = await asyncio.to_thread(engine.image_disk_use_sync)
        except ContainerKernelError:  # the engine's first error is engine_error already
            disk = None
        rows = catalog_rows(
            CatalogInputs(
                images=images,
                listed=listed,
                inventory=inventory,
                probes=results,
                policy=policy,
                kernel_names={ref: name for name, (ref, _image) in entries.items()},
                pulling=pulling,
                disk={use.id: use for use in disk.images} if disk is not None else {},
                retired=self.services.catalog.retired(),
                # On a cluster, against its GPU node pools: the cluster view's verdicts.
                verdict_of=await catalog_verdicts(engine),
            )
        )
        host = {
            "gpus": len(inventory.allocatable()),
            "driver_version": inventory.driver_version,
            "cuda_driver_version": inventory.cuda_driver_version,
            "reason": inventory.reason,
            "source": inventory.source,
        }
        reply = {
            "images": rows,
            "host": host,
            "disk": disk_totals(disk) if disk is not None else None,
            "engine_error": engine_error,
        }
        self.finish(json.dumps(reply))


def _narrowed(images: list[ImageRecord], shown: Callable[[str], bool]) -> list[ImageRecord]:
    """``images`` with only the tags ``shown`` accepts; those left with none are left out."""
    narrowed = []
    for image in images:
        tags = tuple(tag for tag in image.tags if shown(tag))
        if tags:
            narrowed.append(image if tags == image.tags else dataclasses.replace(image, tags=tags))
    return narrowed


class PrePullHandler(GPUContainersHandler):
    """The administrator's pre-pull schedule: each image's last and next run and its pull under
    way, and pruning's settings and last pass (prepull.py). Readable by every user (the panel
    shows when the course image is pulled): it names the images the administrator
    pre-pulls, and no one's kernels. Which images pruning removed and kept (names a pattern of
    PrePuller.prune_images may match, a user's private pull's among them) only administrators
    see (admin_view.py); others get the counts."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.finish(json.dumps(await self.services.prepull.report(await self.is_admin())))


async def image_content(services: Services, ref: str, recorded: str, uid: int) -> dict[str, Any]:
    """What ``ref`` names on this host now (its digest, as a stamp writes one; "" when it is not
    here, or is another user's private pull), and whether the content ``recorded`` (a stamp's
    digest) is here and ``uid``'s to run: what a notebook's saved stamp is compared with
    (images/environment.py); and whether the administrator retired ``ref`` (ImageCatalog
    .deprecated_images: a notebook whose image is gone is offered its move).

    Both are a user's words: read against the engine's listing of tagged images by
    images/named.py, never handed to the engine to resolve (which takes an id's prefix for an
    image: issue 61). ``recorded`` may also be a whole image id (a locally built image's stamp),
    present only when it is a listed image's this user sees; an id never answers for ``ref``."""
    listed = services.listed_images()
    backend, state = services.backend, services.state

    async def here(name: str) -> ImageRecord | None:
        try:
            return await named.lookup(backend, state, listed, uid, name)
        except ContainerKernelError:  # the engine away: nothing is known to be here
            return None

    current = await here(ref)
    present = False
    if recorded:
        present = await here(recorded) is not None
        if not present and named.ID.fullmatch(recorded):
            try:
                images = await backend.list_images()
            except ContainerKernelError:
                images = []
            hidden = await asyncio.to_thread(privateimages.hidden_from, state, uid)
            present = named.is_listed_id(images, recorded, hidden, listed)
    kept = await _kept_content(services, ref, recorded, uid)
    retired = services.catalog.retirement(ref) if names_an_image(ref) else None
    return {
        "ref": ref,
        "digest": image_digest(ref, current.id, current.repo_digests) if current else "",
        "recorded_present": present or kept,
        "recorded_kept": kept,
        "retired": retired.to_json() if retired is not None else None,
    }


async def _kept_content(services: Services, ref: str, recorded: str, uid: int) -> bool:
    """Whether ``recorded`` is content built on this host that ``ref`` named before its tag
    moved (this server's own record says so: admission.py), still in the engine (untagged,
    as a moved tag leaves it) and ``uid``'s to run as ``ref``: a notebook may pin to it."""
    backend = services.backend
    if backend.tags_resolve_per_node or not named.ID.fullmatch(recorded):
        return False
    if not await asyncio.to_thread(services.prepull.named_before, ref, recorded):
        return False
    try:
        image = await backend.inspect_image(recorded)
    except ContainerKernelError:  # gone (pruned), or the engine away
        return False
    if image.id != recorded:
        return False
    # Only for a reference the user may run now: another user's private tag's earlier content
    # stays theirs.
    listed = services.listed_images()
    try:
        if await named.lookup(backend, services.state, listed, uid, ref) is None:
            return False
    except ContainerKernelError:
        return False
    hidden = await asyncio.to_thread(privateimages.hidden_from, services.state, uid)
    return hidden.may_use(image, ref, listed)


class ImageContentHandler(GPUContainersHandler):
    """``GET /gpu-containers/images/content?ref=…&recorded=…``: what a reference names here now,
    and whether a recorded content is here (image_content). A notebook's saved stamp is checked
    with it by the user's own server, which behind a kernel service asks the service."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        ref = self.get_query_argument("ref", "")
        recorded = self.get_query_argument("recorded", "")
        if not ref or len(ref) > 512 or len(recorded) > 512:
            raise web.HTTPError(400, "Give the image reference as ref (and recorded, a digest).")
        self.finish(json.dumps(await image_content(self.services, ref, recorded, int(self.uid))))
