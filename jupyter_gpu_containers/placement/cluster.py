"""The cluster placement: the backend's scheduler places each kernel and its GPUs (Kubernetes).

No host ledger books the GPUs and no host queue orders the starts (the backend's unschedulable
policy does); the administrator's per-user cap is counted from the user's other kernels under a
lock per user, so that two starts at once cannot both count the same GPUs as free. A start asks
for a number of GPUs, never for GPUs by id; the plan carries that number and the resource, and
the pod's address is where the kernel's ports are. The host's queue, quotas and idle-GPU
reclaim do not apply here: the kernel service refuses their settings at its start
(refuse_host_sharing).
"""

from __future__ import annotations

import time
from typing import Any

from traitlets.config import Config, LoggingConfigurable

from ..backends.backend import ContainerBackend
from ..base import labels as L
from ..base.errors import ContainerKernelError, KernelOptionRefused
from ..base.records import ContainerRecord
from ..gpus.allocator import Attachment, GPUAllocator
from ..host.hoststate import StateDir
from .placement import LaunchSteps, Placed, PlacementStart, SchedulerWait, create_container


class ClusterPlacement(LoggingConfigurable):
    """Pods, placed with their GPUs by the backend's scheduler."""

    shares_directory = False
    reaches_kernels_on_loopback = False
    kernel_chooses_ports = False
    books_host_gpus = False
    scheduler = "Kubernetes"  # for sentences

    @staticmethod
    def prepare_service_config(config: Config) -> None:
        """A kernel service's configuration, before anything starts: the host's queue, quotas
        and reclaim refused in a sentence (refuse_host_sharing); workspaces are the cluster's
        volumes (KubernetesBackend.workspace_volume), not directories of this host, unless the
        administrator says otherwise."""
        refuse_host_sharing(config)
        if "workspace_on_host" not in config.UserDirectory:
            config.UserDirectory.workspace_on_host = False

    def __init__(
        self, *, backend: ContainerBackend, allocator: GPUAllocator, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.backend = backend
        self.allocator = allocator

    async def place(self, start: PlacementStart, steps: LaunchSteps) -> Placed:
        request = start.request
        if request.ids:
            raise KernelOptionRefused(
                f"On {self.scheduler} the scheduler chooses a kernel's GPUs: ask for a number "
                f"of GPUs, not for GPUs by id ({', '.join(request.ids)})."
            )
        spec = steps.plan(Attachment.scheduled(request.count, start.gpu_resource), ())
        kept = self.backend.kept_allocations
        if start.previous_container and kept is not None:
            # A restart: in the stopped container's allocation when it would be the same (no
            # new job, no wait in the scheduler's queue, the same GPUs; the cap counted them).
            continued = await kept.continue_in(start.previous_container, spec)
            if continued is not None:
                steps.created(continued)
                steps.stamp("gpus")
                steps.stamp("create")
                address = await self.backend.address(continued)
                steps.stamp("start")
                return Placed(
                    continued,
                    counts_from=time.monotonic(),
                    address=address,
                    scheduled_gpus=request.count,
                    scheduler=self.scheduler,
                )
            # Else the stopped container goes first: its allocation outlives it a while, and
            # the new one would wait for its GPUs.
            await steps.before_waiting()
        # The cap's count and the create as one step per user.
        async with self.allocator.scheduled_start(
            self.backend, request.count, start.kernel_id, str(start.uid)
        ):
            steps.stamp("gpus")
            container_id = await create_container(self.backend, spec, steps)
        steps.stamp("create")
        # The backend waits, on its watch, until the pod runs (or refuses with the scheduler's
        # reason): the launch timeout counts from then, for the kernel's own start only.
        await self._until_running(container_id, start)
        address = await self.backend.address(container_id)
        steps.stamp("start")
        return Placed(
            container_id,
            counts_from=time.monotonic(),
            address=address,
            scheduled_gpus=request.count,
            scheduler=self.scheduler,
        )

    async def _until_running(self, container_id: str, start: PlacementStart) -> None:
        await self.backend.start(container_id, start.image_ref)

    async def address(self, container_id: str) -> str:
        return await self.backend.address(container_id)

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
        """A pod's server is the service of its namespace, whatever pod or host it ran in, and
        its connection is its Secret: a running kernel pod of this service is reattached, one
        that no longer runs removed; another service's share of the namespace is left alone."""
        owner = L.OwnerProcess.parse(record.labels.get(L.OWNER_PROCESS, ""))
        if owner == me:
            return "leave"  # started by this very process (a kernel launched while we recover)
        if record.labels.get(L.SERVER_ID, "") != server_id:
            return "leave"  # another service's namespace share: not ours to judge
        return "reattach" if record.status == "running" else "remove"


# What only a host placement does, by the setting that turns it on: on a cluster it would do
# nothing, silently.
HOST_ONLY = (
    ("GPUQueue", "wait_by_default", "the host-wide GPU queue"),
    ("GPUQuota", "hours_per_user", "GPU-hour quotas"),
    ("GPUQuota", "hours_per_group", "GPU-hour quotas"),
    ("GPUReclaim", "enabled", "reclaiming idle GPUs"),
)


def refuse_host_sharing(config: Config, where: str = "Kubernetes") -> None:
    """Refuse, in a sentence, a configuration that turns on what the host placement does and a
    cluster's scheduler does not: a kernel service on Kubernetes (or ``where``) must not look as
    if it queued, counted or reclaimed GPUs."""
    found = [
        (f"{section}.{name}", what)
        for section, name, what in HOST_ONLY
        if section in config and name in config[section] and _turned_on(config[section][name])
    ]
    if found:
        settings = _listed([setting for setting, _ in found])
        features = _listed(list(dict.fromkeys(what for _, what in found)))
        # The administrator's own configuration, refused at start: the options stay named.
        raise ContainerKernelError(
            f"On {where} the cluster's scheduler places kernels and their GPUs, so {features} "
            f"cannot apply there: remove {settings} from the kernel service's configuration "
            "(per-user GPU caps still apply).",
            setting=", ".join([*(name for name, _ in found), "GPUAllocator.max_gpus_per_user"]),
        )


def _turned_on(value: Any) -> bool:
    # hours_per_group: a group given 0 has no quota (GPUQuota's help), so only a positive value
    # turns one on.
    if isinstance(value, dict):
        return any(value.values())
    return bool(value)


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
