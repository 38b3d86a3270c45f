"""Whether a kernel may start on an image, and on this host's GPUs, before any container exists;
and whether it may reach its server over the transport it asks for.

A launch asks once: the image must be on the host (launches never pull, so pull time never counts
against a launch), allowed by the administrator (allow-list, pinned digests), not another user's
private pull, and not already found unable to run a kernel by the readiness probe. A kernel that
asks for GPUs on a host also needs an image whose CUDA stack this driver can run: its placement
checks that (placement/host.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from ..base import labels as L
from ..base.errors import (
    ContainerKernelError,
    ImageMissing,
    ImageNotAllowed,
    ImageNotKernelReady,
    KernelOptionRefused,
)
from ..base.records import ImageRecord
from ..base.references import BadReference, parse_reference
from ..images import named, privateimages
from ..images.probe import ProbeResult
from ..policy.admin_policy import check_image_allowed, pinned_for
from ..services import Services


async def admit_image(
    services: Services,
    ref: str,
    *,
    own_command: bool,
    uid: int | None = None,
    run: str = "",
    named_by_user: bool = True,
) -> ImageRecord:
    """The image ``ref`` names, if a kernel may start on it; else the refusal's sentence.
    ``own_command``: the administrator's kernel command, which may not need ipykernel.
    ``uid``: whose kernel (a kernel service's user; None: this server's user). ``run``: the
    digest of ``ref``'s repository the kernel runs instead (its notebook's pin, checked by
    environment.check_pin): the image inspected and run is that one, judged by the allow-list
    and visibility as ``ref`` and by the administrator's pinned digests as itself.

    ``named_by_user``: ``ref`` is a user's word (a build's base, the default), resolved by
    images/named.py against the engine's listing of tagged images, never by the engine (an id,
    an id's prefix or an untagged image is refused by the same sentence as an image that is
    not here or not theirs). False for a kernel spec's image, which the service made from the
    listing's tags or the administrator wrote (who may name an image by its id). ``run`` (a
    notebook's words) is always resolved so. On a cluster a node resolves each reference by
    itself, and no store of images is reachable by id.

    An image that carries a key only this project's container records carry
    (labels.RECORD_KEYS: ``managed``, ``gpus``…) is refused: it was made to pass for one."""
    if services.backend.tags_resolve_per_node or not (named_by_user or run):
        image = await services.backend.inspect_image(run or ref)
    else:
        names = services.listed_images()
        if named_by_user:
            image = await named.resolve_for(services.backend, services.state, names, uid, ref)
        if run:
            image = await _pinned_content(services, names, uid, ref, run)
    forged = L.image_record_labels(image.labels)
    if forged:
        raise ImageNotAllowed(
            f"The image {run or ref} carries labels that only this service's own containers "
            f"may carry ({', '.join(forged)[:300]}), so it cannot be used here. Build it "
            "without labels named org.jupyter.gpu-containers.*."
        )
    if services.backend.tags_resolve_per_node:
        # A cluster: what one node last ran says nothing about what the next will run. Only a
        # digest in the reference itself, which the node then enforces, can meet a pin.
        given = run or ref
        check_image_allowed(services.policy, ref, (given,) if "@" in given else None)
        pins = pinned_for(services.policy, ref)
        if pins is not None and "@" not in given:
            try:
                repository = parse_reference(ref).name
            except BadReference:
                repository = ref
            raise ImageNotAllowed(
                f"The image {ref} is pinned to {', '.join(pins)}, and on a cluster each node "
                "resolves a tag by itself, so it runs only by its digest: ask an administrator "
                f"to list it as {repository}@{pins[0]}, so that every node runs exactly the "
                "pinned image.",
                setting="ContainerPolicy.pinned_digests, ImageCatalog.listed_images",
            )
    else:
        check_image_allowed(services.policy, ref, (*image.repo_digests, image.id))
    listed = services.listed_images()

    def blocking_checks() -> tuple[bool, ProbeResult | None]:
        # The host state directory and the probe's disk cache are files: off the event loop.
        # By the reference this kernel names: the same image reached through a reference
        # the user may see is theirs to run, whoever pulled it privately under another name.
        # A pinned digest by its own name: content another user pulled privately stays theirs
        # whatever tag of the same repository names it now.
        visible = privateimages.may_use(image, run or ref, services.state, listed, uid)
        if visible:
            # The engine keeps no "last used": pruning (pruning.py) reads this record; and
            # what the tag named (not a pin's content) is what a notebook may pin to later,
            # once the tag moves (_pinned_content).
            services.prepull.record_use(ref, image.id, tagged=not run)
        return visible, services.probe.cached(image.id)

    visible, known = await asyncio.to_thread(blocking_checks)
    if not visible:
        # The sentence of an image that is not here: whose it is is not told (named.py).
        raise named.not_here(run or ref)
    if not own_command and known is not None and known.definitive and not known.ready:
        raise ImageNotKernelReady(f"The image {ref} cannot run a kernel: {known.reason}")
    return image


async def _pinned_content(
    services: Services, names: Sequence[str], uid: int | None, ref: str, run: str
) -> ImageRecord:
    """The image a notebook's pin ``run`` (environment.check_pin: a digest of ``ref``'s
    repository) names here: a registry digest of the engine's listing (images/named.py), else
    content a tag of this host named before it moved (a course image built or tagged on the
    host has no registry digest: the pin carries its image id), which this server's own record
    says ``ref`` named when one of its kernels started on it. Never an id the record does not
    hold for ``ref``: a pin is a notebook's words, and an image id of the host is not a
    content this tag ever admitted (another user's private image, a refused one)."""
    found = await named.lookup(services.backend, services.state, names, uid, run)
    if found is not None:
        return found
    content = run.rsplit("@", 1)[-1]
    # (Only for a reference the user may run now: another user's private tag's earlier content
    # stays theirs.)
    if await asyncio.to_thread(services.prepull.named_before, ref, content) and await named.lookup(
        services.backend, services.state, names, uid, ref
    ):
        try:
            image = await services.backend.inspect_image(content)
        except ImageMissing:
            image = None
        if image is not None and image.id == content:
            return image
    raise named.not_here(run)


def admit_transport(
    log: logging.Logger | logging.LoggerAdapter[Any],
    kernel_id: str,
    transport: str,
    network_mode: str,
    *,
    service_user: bool,
    on_loopback: bool,
) -> None:
    """Whether a kernel may reach its server over ``transport``; else the refusal's sentence.
    ``service_user``: a kernel service's kernel. ``on_loopback``: whether its tcp ports would be
    on this host's loopback (its placement decides). A server's own tcp kernel there starts,
    with a warning in the log."""
    if transport == "tcp" and network_mode == "none":
        raise ContainerKernelError(
            "The tcp transport needs a network, but network_mode is 'none'. Use the ipc "
            "transport (the default) for kernels without a network."
        )
    if transport == "tcp" and service_user and on_loopback:
        # Published ports are on the host's loopback, where any local account connects, and
        # IOPub is a PUB socket: subscribing needs no key. A container's bridge address is
        # no better (every local account reaches it too). A pod's tcp is not this: its
        # address is the pod network's, which the NetworkPolicy closes (docs/kubernetes.md).
        raise KernelOptionRefused(
            "The kernel service does not start kernels with the tcp transport: their ports "
            "would be open to every account on the host, and anyone could read the kernel's "
            "output (the key signs messages, it does not hide them). Use the ipc transport, "
            "the default: choose a kernel that does not ask for tcp.",
            setting="ContainerProvisioner.transport",
        )
    if transport == "tcp" and on_loopback:
        log.warning(
            "Kernel %s uses the tcp transport: its ports on 127.0.0.1 are open to every "
            "account on this host, and anyone can read its output there. Use ipc on a "
            "shared host.",
            kernel_id,
        )
