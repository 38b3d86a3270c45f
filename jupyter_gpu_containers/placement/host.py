"""The host placement: kernels' containers on this host's engine, their GPUs booked in the
host-wide ledger.

A start without GPUs takes a warm container whose plan matches (the warm pool), else creates its
own. A start with GPUs has its request fitted to the host (a default request on a host without
GPUs starts without them), its image checked against this driver and these GPUs, its quota
checked; then it books under the host-wide lock (allocator.py), in its turn of the fair queue
(gpuqueue.py), and its container is created under that lock, the plan made from the GPUs chosen.
A restart keeps its GPUs and skips the queue and the quota. The lock goes before the container
starts.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from traitlets.config import Config, LoggingConfigurable

from ..backends.backend import ContainerBackend
from ..base import labels as L
from ..base.errors import ImageIncompatible
from ..base.records import CONNECTION_FILE_NAME, ContainerRecord, ImageRecord
from ..gpus.allocator import (
    GPUAllocator,
    GPURequest,
    GPUVisibility,
    Ledger,
    attachment,
    resolve_attach_mode,
)
from ..gpus.gpuqueue import GPUQueue, Start
from ..gpus.inventory import GPU, GPUInventory, Inventory
from ..gpus.notebook_requests import fitted_to_host
from ..gpus.quota import GPUQuota
from ..gpus.tickets import Ticket
from ..host.hoststate import StateDir
from ..host.privatedirs import own_private_dir
from ..images import compat
from ..policy.admin_policy import ContainerPolicy
from .placement import LaunchSteps, Placed, PlacementStart, SchedulerWait, create_container

# Where NVIDIA's CDI specs live when CDI is set up (nvidia-ctk cdi generate).
CDI_SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")


class HostPlacement(LoggingConfigurable):
    """Containers on this host's engine; GPUs from the host-wide ledger."""

    shares_directory = True
    reaches_kernels_on_loopback = True
    kernel_chooses_ports = False
    books_host_gpus = True

    @staticmethod
    def prepare_service_config(config: Config) -> None:
        """Nothing to change: every setting of a kernel service applies on a host."""

    def __init__(
        self,
        *,
        backend: ContainerBackend,
        inventory: GPUInventory,
        allocator: GPUAllocator,
        visibility: GPUVisibility,
        queue: GPUQueue,
        quota: GPUQuota,
        policy: ContainerPolicy,
        state: Callable[[], StateDir],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.backend = backend
        self.inventory = inventory
        self.allocator = allocator
        self.visibility = visibility
        self.queue = queue
        self.quota = quota
        self.policy = policy
        self.state = state

    async def place(self, start: PlacementStart, steps: LaunchSteps) -> Placed:
        request, inventory = start.request, None
        if request.wants_gpus:
            inventory = await self.inventory.read()
            request = self._fitted(start, inventory)
        if inventory is None or not request.wants_gpus:
            spec = steps.plan(attachment("runtime", []), ())
            if await steps.from_warm_pool(spec):
                return Placed(container_id="", from_warm_pool=True)
            steps.stamp("gpus")
            container_id = await create_container(self.backend, spec, steps)
            return await self._started(start, steps, container_id, (), start.began, 0.0)
        chosen, container_id, waited = await self._book(start, steps, request, inventory)
        gpus = tuple(g.uuid for g in chosen)
        return await self._started(start, steps, container_id, gpus, start.began + waited, waited)

    def _fitted(self, start: PlacementStart, inventory: Inventory) -> GPURequest:
        fitted = fitted_to_host(start.request, start.request_is_default, inventory)
        if not fitted.wants_gpus:
            self.log.warning(
                "Kernel %s (%s) starts without GPUs: %s",
                start.kernel_id,
                start.image_ref,
                inventory.reason or "this host has none.",
            )
        return fitted

    async def _book(
        self, start: PlacementStart, steps: LaunchSteps, request: GPURequest, inventory: Inventory
    ) -> tuple[list[GPU], str, float]:
        """The GPUs booked and the container created under the host-wide lock, in the start's
        turn of the queue; and how long it waited there."""
        check_gpu_compatibility(
            start.image_ref, start.image, inventory, self.policy, self.log, start.kernel_id
        )
        mode = resolve_attach_mode(
            self.allocator.attach_mode, await self.backend.runtimes(), CDI_SPEC_DIRS
        )

        async def create(chosen: list[GPU]) -> str:
            # Under the host-wide lock: the plan is pure, the create one engine call.
            spec = steps.plan(attachment(mode, chosen), tuple(g.uuid for g in chosen))
            steps.stamp("gpus")
            # Known at once: whatever happens after the booking (a cancelled start, a
            # failure), the failed launch's clean-up removes this container.
            return await create_container(self.backend, spec, steps)

        def book(turn: Callable[[Ledger], Any] | None) -> Any:
            return self.allocator.book(
                state=self.state(),
                backend=self.backend,
                inventory=inventory,
                request=request,
                kernel_id=start.kernel_id,
                uid=str(start.uid),
                show_others=self.visibility.show_other_users,
                create=create,
                on_wait=lambda: self._say_waiting(start.kernel_id),
                turn=turn,
            )

        if start.keeps_gpus:  # a restart keeps its GPUs: the queue has no say in it
            chosen, container_id = await book(None)
            return chosen, container_id, 0.0
        # Before it queues or books: a start over its GPU-hour quota is refused.
        await self.quota.check(start.uid, start.user)
        if start.wait:
            await steps.before_waiting()
        queued: list[Ticket] = []
        began = time.monotonic()
        chosen, container_id = await self.queue.book(
            Start(
                kernel_id=start.kernel_id,
                uid=start.uid,
                user=start.user,
                request=request,
                notebook=start.notebook,
                server_id=start.server_id,
            ),
            wait=start.wait,
            allocator=self.allocator,
            state=self.state(),
            inventory=inventory,
            book=book,
            on_queued=queued.append,
            while_waiting=start.while_waiting,
        )
        # The wait is not part of the launch (launch_timeout).
        return chosen, container_id, (time.monotonic() - began) if queued else 0.0

    async def _started(
        self,
        start: PlacementStart,
        steps: LaunchSteps,
        container_id: str,
        gpus: tuple[str, ...],
        counts_from: float,
        waited: float,
    ) -> Placed:
        steps.stamp("create")
        await self.backend.start(container_id, start.image_ref)
        steps.stamp("start")
        return Placed(container_id, gpus=gpus, counts_from=counts_from, waited=waited)

    async def address(self, container_id: str) -> str:
        return ""  # its ports are this host's (published, or ipc in its private directory)

    async def scheduler_waits(self) -> list[SchedulerWait]:
        """None: a start waits in this server's GPU queue, if anywhere."""
        return []

    def scheduler_waiting_ids(self) -> set[str]:
        return set()

    async def cancel_scheduler_wait(self, kernel_id: str, uid: int) -> bool:
        return False

    def left_behind(
        self,
        record: ContainerRecord,
        server_id: str,
        state: StateDir,
        me: L.OwnerProcess,
        root: str,
    ) -> str:
        return left_behind_on_host(record, server_id, state, me, root)

    def _say_waiting(self, kernel_id: str) -> None:
        self.log.info(
            "Kernel %s waits for the host-wide GPU allocation lock: another launch holds it.",
            kernel_id,
        )


def left_behind_on_host(
    record: ContainerRecord, server_id: str, state: StateDir, me: L.OwnerProcess, root: str
) -> str:
    """What a server starting now does with a kernel container a host's server left
    (Placement.left_behind): reattached by the server it belongs to (its connection file still
    in this server's private directory), removed once its server is dead, left alone while
    that server (or the process that made it) lives, and left alone when another host made it
    (an engine shared between hosts) or a server of another host state directory: whether its
    server lives is recorded there (a server that reattached it after its creator died is
    alive only there)."""
    owner = L.OwnerProcess.parse(record.labels.get(L.OWNER_PROCESS, ""))
    if owner is None or owner.host != me.host:
        return "leave"  # an engine shared with another host: not ours to judge
    if owner == me:
        return "leave"  # started by this very process (a kernel launched while we recover)
    owner_id = record.labels.get(L.SERVER_ID, "")
    uid = record.labels.get(L.UID, "")
    running = record.status == "running"
    if owner_id == server_id:
        private = own_private_dir(root, record.labels.get(L.CONNECTION_DIR, ""))
        if running and private and os.path.isfile(os.path.join(private, CONNECTION_FILE_NAME)):
            return "reattach"
        return "remove"
    if not state.shared and uid != str(os.geteuid()):
        return "leave"  # its server may be alive in the host state directory we cannot use
    made_in = record.labels.get(L.STATE_DIR, "")
    if made_in and made_in != state.identity and (owner.boot == me.boot or running):
        # A server of another ContainerPolicy.state_dir: not ours to judge. (A directory in
        # /run is made anew at each boot, with another identity: a stopped container of an
        # earlier boot was reattached by nobody, and its servers died with that boot.)
        return "leave"
    if state.is_alive(owner_id, uid):
        return "leave"
    if owner.is_alive():
        # Its creator still runs, though not registered in our state dir (a server
        # configured with another ContainerPolicy.state_dir): never remove a live server's
        # kernel.
        return "leave"
    return "remove"


def check_gpu_compatibility(
    ref: str,
    image: ImageRecord,
    inventory: Inventory,
    policy: ContainerPolicy,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    kernel_id: str,
) -> None:
    """A kernel that asks for GPUs gets none of use from an image whose CUDA stack this driver
    cannot run, or that has no code for these GPUs' architecture: refused with the verdict's
    sentence (CPU kernels of GPU images still run)."""
    verdict = compat.verdict(image.env, inventory)
    if verdict.outcome != compat.CANNOT_RUN:
        if verdict.outcome == compat.COMPAT:
            log.warning("Kernel %s, image %s: %s", kernel_id, ref, verdict.reason)
        return
    if policy.allow_incompatible_images:
        log.warning(
            "Kernel %s starts %s although %s (ContainerPolicy.allow_incompatible_images)",
            kernel_id,
            ref,
            verdict.reason,
        )
        return
    raise ImageIncompatible(
        f"The image {ref} cannot use this host's GPUs: {verdict.reason}. Choose an image built "
        "for an older CUDA, start the kernel without GPUs, or ask an administrator to let "
        "kernels start on images this check refuses.",
        setting="ContainerPolicy.allow_incompatible_images",
    )
