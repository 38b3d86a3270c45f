"""The batch placement: a batch scheduler (Slurm) places each kernel and its GPUs as a job on a
node that shares this host's file system, and other users' jobs.

As on any cluster (cluster.py), the scheduler decides where and on which GPUs, and the per-user
cap is counted here. What differs is how the kernel is reached: its private directory lies on
the shared file system and is mounted into its container on the node (owned by its user, never a
tmpfs of this host), and the kernel runs on the node's own network, where no port can be chosen
free in advance: its connection file names port 0, ipykernel binds ports it finds free and
writes them back into the file, and the placement waits for them (within the launch timeout,
which counts from the job's start) before the launch asks the kernel for its info.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from traitlets.config import Config

from ..base.errors import (
    ContainerExited,
    ContainerKernelError,
    ImageNotKernelReady,
    LaunchTimeout,
)
from ..gpus.gpuqueue import GPUWaitCancelled
from ..policy.command import NO_CURVE_MARKER, diagnose_exit
from .cluster import ClusterPlacement, refuse_host_sharing
from .placement import LaunchSteps, Placed, PlacementStart, SchedulerWait

# Seconds between looks at the connection file while the kernel binds its ports, and between
# asks whether its job still runs (a Slurm command: the controller is every user's).
PORTS_POLL = 0.1
STATE_POLL = 1.0


class BatchPlacement(ClusterPlacement):
    """Jobs, placed with their GPUs by a batch scheduler, on nodes sharing this host's files."""

    shares_directory = True
    reaches_kernels_on_loopback = False
    kernel_chooses_ports = True
    scheduler = "Slurm"

    @staticmethod
    def prepare_service_config(config: Config) -> None:
        """The host's queue, quotas and reclaim refused in a sentence (the scheduler's queue,
        accounting and QOS do that); workspaces stay paths of the shared file system, and the
        kernels' private directories must lie on it too: their root is required."""
        refuse_host_sharing(config, "Slurm")
        policy = config.ContainerPolicy if "ContainerPolicy" in config else {}
        if not policy.get("connection_dir_root"):
            raise ContainerKernelError(
                "On Slurm each kernel reads its connection file on its job's node: set the "
                "root of the kernels' connection directories to a directory of the file system "
                "the nodes share with this host (the kernels' private directories are made "
                "there, each its user's alone).",
                setting="ContainerPolicy.connection_dir_root",
            )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # The starts whose jobs Slurm keeps pending now, by kernel id: (the wait, its job).
        self._waiting: dict[str, tuple[SchedulerWait, str]] = {}
        self._cancelled: set[str] = set()

    async def _until_running(self, container_id: str, start: PlacementStart) -> None:
        """While Slurm keeps the job pending, the start is listed (the queue route shows it with
        Slurm's reason, and its user may cancel it), and gives back what it holds (the kernel
        service's start slot, ServiceApp.max_concurrent_starts): a wait in Slurm's queue may
        be long, and must not keep other users' starts waiting behind it."""
        state = await self.backend.state(container_id)
        if state is None or state.status != "created":
            await self.backend.start(container_id, start.image_ref)
            return
        wait = SchedulerWait(
            kernel_id=start.kernel_id,
            uid=start.uid,
            user=start.user,
            notebook=start.notebook,
            request=start.request,
            arrived=time.time(),
            scheduler=self.scheduler,
        )
        self._waiting[start.kernel_id] = (wait, container_id)
        try:
            if start.while_waiting is None:
                await self.backend.start(container_id, start.image_ref)
            else:
                async with start.while_waiting():
                    await self.backend.start(container_id, start.image_ref)
        except ContainerKernelError as e:
            if start.kernel_id in self._cancelled:
                raise GPUWaitCancelled(
                    f"The start was cancelled while its job waited in {self.scheduler}'s "
                    "queue (cancelled by its user)."
                ) from e
            raise
        finally:
            self._waiting.pop(start.kernel_id, None)
            self._cancelled.discard(start.kernel_id)

    async def scheduler_waits(self) -> list[SchedulerWait]:
        """The starts whose jobs Slurm keeps pending, each with Slurm's reason and estimate
        (read now: one squeue per wait, off the event loop)."""
        found = []
        for wait, container_id in list(self._waiting.values()):
            said = await asyncio.to_thread(self._why_waiting, container_id)
            if said is not None:
                reason, estimate = said
                found.append(dataclasses.replace(wait, reason=reason, estimate=estimate or 0.0))
        return found

    def scheduler_waiting_ids(self) -> set[str]:
        return set(self._waiting)

    def _why_waiting(self, container_id: str) -> tuple[str, float | None] | None:
        try:
            return self.backend.pending_reason_sync(container_id)
        except ContainerKernelError:
            return None

    async def cancel_scheduler_wait(self, kernel_id: str, uid: int) -> bool:
        """Cancel the start's job (its user's own only): the wait then ends, and the start
        with it (GPUWaitCancelled)."""
        waiting = self._waiting.get(kernel_id)
        if waiting is None or waiting[0].uid != uid:
            return False
        self._cancelled.add(kernel_id)
        await self.backend.remove(waiting[1])
        return True

    async def place(self, start: PlacementStart, steps: LaunchSteps) -> Placed:
        placed = await super().place(start, steps)
        ports = await self._written_ports(
            placed.container_id, start.launch_timeout, start.image_ref
        )
        return dataclasses.replace(placed, ports=ports)

    async def _written_ports(
        self, container_id: str, timeout: float, image: str = ""
    ) -> dict[str, int]:
        """The ports the kernel wrote back; LaunchTimeout when it wrote none within
        ``timeout`` s, ContainerExited when its job ended first."""
        deadline = time.monotonic() + timeout
        backend = self.backend
        next_state = time.monotonic() + STATE_POLL
        while True:
            try:
                info = await backend.connection_info(container_id)
            except ContainerKernelError:
                info = None
            if info is not None:
                return {name: int(info[name]) for name in info if name.endswith("_port")}
            if time.monotonic() < next_state:
                await asyncio.sleep(PORTS_POLL)
                continue
            next_state = time.monotonic() + STATE_POLL
            state = await backend.state(container_id)
            if state is None or state.ended:
                tail = await backend.logs_tail(container_id, 10)
                if NO_CURVE_MARKER in tail:  # the channel relay refused to start the kernel
                    raise ImageNotKernelReady(
                        diagnose_exit(image, state.exit_code if state else -1, False, tail)[0]
                    )
                raise ContainerExited(
                    "The kernel's job ended before its kernel said which ports it listens on"
                    + (f" ({state.error})" if state is not None and state.error else "")
                    + (f". Its output: {tail}" if tail else ".")
                )
            if time.monotonic() > deadline:
                raise LaunchTimeout(
                    f"The kernel's job runs, but its kernel did not say which ports it listens "
                    f"on within {timeout:.0f} s. If its image is slow to start, ask an "
                    "administrator to let kernels take longer to start.",
                    setting="ContainerProvisioner.launch_timeout",
                )
            await asyncio.sleep(PORTS_POLL)
