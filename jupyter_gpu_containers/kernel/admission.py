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
from typing import Any

from ..base.errors import (
    ContainerKernelError,
    ImageNotAllowed,
    ImageNotKernelReady,
    KernelOptionRefused,
)
from ..base.records import ImageRecord
from ..base.references import BadReference, parse_reference
from ..images import privateimages
from ..images.probe import ProbeResult
from ..policy.admin_policy import check_image_allowed, pinned_for
from ..services import Services


async def admit_image(
    services: Services, ref: str, *, own_command: bool, uid: int | None = None, run: str = ""
) -> ImageRecord:
    """The image ``ref`` names, if a kernel may start on it; else the refusal's sentence.
    ``own_command``: the administrator's kernel command, which may not need ipykernel.
    ``uid``: whose kernel (a kernel service's user; None: this server's user). ``run``: the
    digest of ``ref``'s repository the kernel runs instead (its notebook's pin, checked by
    environment.check_pin): the image inspected and run is that one, judged by the allow-list
    and visibility as ``ref`` and by the administrator's pinned digests as itself."""
    image = await services.backend.inspect_image(run or ref)
    if services.backend.tags_resolve_per_node:
        # A cluster: what one node last ran says nothing about what the next will run. Only a
        # digest in the reference itself, which the node then enforces, can meet a pin.
        named = run or ref
        check_image_allowed(services.policy, ref, (named,) if "@" in named else None)
        pins = pinned_for(services.policy, ref)
        if pins is not None and "@" not in named:
            try:
                repository = parse_reference(ref).name
            except BadReference:
                repository = ref
            raise ImageNotAllowed(
                f"The image {ref} is pinned to {', '.join(pins)} "
                "(ContainerPolicy.pinned_digests), and on a cluster each node resolves a tag "
                f"by itself: list it as {repository}@{pins[0]}, so that every "
                "node runs exactly the pinned image."
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
            # The engine keeps no "last used": pruning (pruning.py) reads this record.
            services.prepull.record_use(ref, image.id)
        return visible, services.probe.cached(image.id)

    visible, known = await asyncio.to_thread(blocking_checks)
    if not visible:
        raise ImageNotAllowed(
            f"The image {run or ref} was pulled by another user with their own registry login, "
            "so it is theirs. Pull it with yours (the GPU Containers panel asks for it), or ask an "
            "administrator to list it for everyone."
        )
    if not own_command and known is not None and known.definitive and not known.ready:
        raise ImageNotKernelReady(f"The image {ref} cannot run a kernel: {known.reason}")
    return image


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
            "output (the key signs messages, it does not hide them). Use the ipc transport "
            '(ContainerProvisioner.transport = "ipc", the default).'
        )
    if transport == "tcp" and on_loopback:
        log.warning(
            "Kernel %s uses the tcp transport: its ports on 127.0.0.1 are open to every "
            "account on this host, and anyone can read its output there. Use ipc on a "
            "shared host.",
            kernel_id,
        )
