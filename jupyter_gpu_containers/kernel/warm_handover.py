"""How a kernel's launch takes a warm container of the server's pool (warmpool.py) instead of
starting its own, for its provisioner (provisioner.py): whether this launch may (a kernel's
first, of the server's own user, on an unencrypted connection), the handover, and the kernel then
running in that container, on the pool's private directory and connection.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from jupyter_client.connect import KernelConnectionInfo

from ..base.records import ContainerSpec, ImageRecord
from ..host.identity import KernelUser
from ..host.privatedirs import discard_private_dir
from ..services import Services
from .gpu_request import KernelGPURequest
from .launch_phases import LaunchPhases
from .warmpool import spec_fingerprint


class HandedOverKernel(Protocol):
    """What the handover reads of its provisioner; what the kernel is once it took a warm
    container (its connection, its container, its GPUs: none) it sets there."""

    kernel_id: str
    image: str
    transport: str
    log: Any
    pool_id: str | None
    owner: KernelUser | None
    launched: bool
    previous_container_id: str | None
    connection_dir: str | None
    connection_info: KernelConnectionInfo
    container_id: str | None
    container_spec: ContainerSpec | None
    container_image_id: str
    gpu_uuids: tuple[str, ...]
    gpu_request: KernelGPURequest
    phases: LaunchPhases

    @property
    def services(self) -> Services: ...


async def start_from_pool(
    kernel: HandedOverKernel, image: ImageRecord, spec: ContainerSpec
) -> bool:
    """Give this launch a warm container of the server's pool, if one was made exactly as
    this launch would make its own (same image id, same plan but for what names the kernel).
    False when the launch must start its own container: no such container, or the one taken
    failed the handover (the pool discards it; a launch never fails because of the pool)."""
    if kernel.pool_id is not None or kernel.launched or kernel.previous_container_id:
        return False
    if kernel.owner is not None:
        return False  # warm containers run as the server's user, not a service's users
    if kernel.connection_info.get("curve_publickey"):
        return False  # an encrypted connection (CurveZMQ): warm kernels have none
    pool = kernel.services.warm_pool
    if pool is None or not pool.has_ready(kernel.image):
        return False
    entry = pool.take(kernel.image, image.id, spec_fingerprint(spec))
    if entry is None:
        return False
    kernel.phases.stamp("handover")
    if not await pool.hand_over(entry, spec, kernel.kernel_id):
        # The failed attempt is a phase of its own; the cold path's phases follow it.
        kernel.phases.drop("handover")
        kernel.phases.stamp("pool")
        return False
    own = kernel.connection_dir
    if own and own != entry.connection_dir:
        # What pre_launch prepared for a container of this kernel's own is not needed now.
        await asyncio.to_thread(discard_private_dir, own)
    kernel.connection_dir = entry.connection_dir
    kernel.connection_info = entry.connection_info.copy()
    kernel.container_id = entry.container_id
    kernel.container_spec, kernel.container_image_id = None, entry.image_id
    kernel.gpu_uuids = ()
    kernel.launched = True
    kernel.gpu_request.settle()
    kernel.phases.stamp("ready")
    kernel.log.info(
        "Kernel %s answers from container %s (image %s, %s, GPUs: none, from the warm pool) "
        "after %.3f s (%s)",
        kernel.kernel_id,
        entry.container_id[:12],
        kernel.image,
        kernel.transport,
        kernel.phases.elapsed(),
        kernel.phases.text(),
    )
    return True
