"""Whether a kernel may start on an image, and on this host's GPUs, before any container exists.

A launch asks once: the image must be on the host (launches never pull, so pull time never counts
against a launch), allowed by the administrator (allow-list, pinned digests), not another user's
private pull, and not already found unable to run a kernel by the readiness probe. A kernel that
asks for GPUs on a host also needs an image whose CUDA stack this driver can run: its placement
checks that (placement/host.py).
"""

from __future__ import annotations

import asyncio

from ..base.errors import ImageNotAllowed, ImageNotKernelReady
from ..base.records import ImageRecord
from ..base.references import BadReference, parse_reference
from ..images import privateimages
from ..images.probe import ProbeResult
from ..policy.admin_policy import check_image_allowed, pinned_for
from ..services import Services


async def admit_image(
    services: Services, ref: str, *, own_command: bool, uid: int | None = None
) -> ImageRecord:
    """The image ``ref`` names, if a kernel may start on it; else the refusal's sentence.
    ``own_command``: the administrator's kernel command, which may not need ipykernel.
    ``uid``: whose kernel (a kernel service's user; None: this server's user)."""
    image = await services.backend.inspect_image(ref)
    if services.backend.tags_resolve_per_node:
        # A cluster: what one node last ran says nothing about what the next will run. Only a
        # digest in the reference itself, which the node then enforces, can meet a pin.
        check_image_allowed(services.policy, ref, (ref,) if "@" in ref else None)
        pins = pinned_for(services.policy, ref)
        if pins is not None and "@" not in ref:
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
        visible = privateimages.may_use(image, ref, services.state, listed, uid)
        if visible:
            # The engine keeps no "last used": pruning (pruning.py) reads this record.
            services.prepull.record_use(ref, image.id)
        return visible, services.probe.cached(image.id)

    visible, known = await asyncio.to_thread(blocking_checks)
    if not visible:
        raise ImageNotAllowed(
            f"The image {ref} was pulled by another user with their own registry login, so it "
            "is theirs. Pull it with yours (the GPU Containers panel asks for it), or ask an "
            "administrator to list it for everyone."
        )
    if not own_command and known is not None and known.definitive and not known.ready:
        raise ImageNotKernelReady(f"The image {ref} cannot run a kernel: {known.reason}")
    return image
