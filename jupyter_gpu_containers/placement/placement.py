"""What a placement is (:class:`Placement`), what it is given (:class:`PlacementStart`, and the
launch's :class:`LaunchSteps`), and what it answers (:class:`Placed`).

A placement reserves what a start needs (GPUs, a slot), has the launch plan the container with
what it decided (:class:`~..gpus.allocator.Attachment`: the GPUs and how they reach the
container), creates and starts it. The plan is made once, from the decision: nothing patches it
afterwards. The launch then waits for the kernel's answer, the same way on every engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from traitlets.config import Config

from ..base import labels as L
from ..base.records import ContainerRecord, ContainerSpec, ImageRecord, iso_time
from ..gpus.allocator import Attachment, GPURequest
from ..gpus.gpuqueue import WhileWaiting
from ..gpus.tickets import shown_to
from ..host.hoststate import StateDir

if TYPE_CHECKING:
    from ..backends.backend import ContainerBackend


@dataclass(frozen=True)
class PlacementStart:
    """One start, as its placement needs to know it."""

    kernel_id: str
    image_ref: str
    image: ImageRecord
    request: GPURequest
    # Only the kernel spec's default (nobody asked): fitted to a host without GPUs, not refused.
    request_is_default: bool
    # A restart keeps exactly the GPUs the kernel held: no queue, no quota.
    keeps_gpus: bool
    # Whether this start may wait in the GPU queue when its GPUs are taken.
    wait: bool
    uid: int
    user: str
    notebook: str
    server_id: str
    # The kernel's GPU resource on a cluster (ContainerProvisioner.gpu_resource; "": the
    # backend's default). Nothing on a host.
    gpu_resource: str
    # When the launch began (time.monotonic()): its timeout counts from here, less any wait.
    began: float
    # Seconds the kernel has to answer once its container runs (ContainerProvisioner's
    # launch_timeout): a placement that waits for the kernel's own ports waits this long.
    launch_timeout: float = 60.0
    # What the start gives back while it waits in the GPU queue (the kernel service's start
    # slot), if anything.
    while_waiting: WhileWaiting | None = None
    # The container a restart stopped (it may still hold the engine's allocation:
    # ContainerBackend.kept_allocations); "" for a kernel's first start.
    previous_container: str = ""


class LaunchSteps(Protocol):
    """What the launch under way does for its placement, at the moments the placement chooses."""

    def plan(self, attached: Attachment, gpus: tuple[str, ...]) -> ContainerSpec:
        """The container's plan (pure), with the GPUs decided and how they attach."""
        ...

    def stamp(self, phase: str) -> None:
        """A phase of the launch ended (its timings)."""
        ...

    def created(self, container_id: str) -> None:
        """A container exists: whatever happens next, the launch's clean-up removes it."""
        ...

    async def before_waiting(self) -> None:
        """The start may now wait for GPUs: a restart's stopped container goes first (it would
        keep its GPUs booked all the while)."""
        ...

    async def from_warm_pool(self, spec: ContainerSpec) -> bool:
        """Whether a warm container made as ``spec`` took the launch (then the kernel already
        answers, and the launch is done)."""
        ...


@dataclass(frozen=True)
class SchedulerWait:
    """A start that waits in the engine's own scheduler (a Slurm job pending), as the queue
    route shows it: Slurm's reason, and when Slurm expects it to start (unix time, 0: no
    estimate)."""

    kernel_id: str
    uid: int
    user: str
    notebook: str
    request: GPURequest
    arrived: float  # unix time
    scheduler: str  # "Slurm"
    reason: str = ""
    estimate: float = 0.0

    def to_json(self, viewer_uid: int, show_others: bool, now: float) -> dict[str, object]:
        """As a queue ticket (tickets.Ticket.to_json: another user's kernel id never, their
        name and notebook only with GPUVisibility.show_other_users), with the scheduler's word:
        its position is the scheduler's, not this server's (0)."""
        return {
            **shown_to(viewer_uid, show_others, self.uid, self.kernel_id, self.user, self.notebook),
            "gpus": self.request.to_json(),
            "position": 0,
            "waited": round(max(0.0, now - self.arrived), 1),
            "deadline": None,
            "scheduler": self.scheduler,
            "reason": self.reason,
            "estimate": iso_time(self.estimate) if self.estimate else None,
        }


@dataclass(frozen=True)
class Placed:
    """Where the start went."""

    container_id: str
    # The GPUs (UUIDs) the kernel holds in the host's ledger; () on a cluster (the scheduler's).
    gpus: tuple[str, ...] = ()
    # On a cluster: how many GPUs the scheduler gave the kernel (its pod's or job's), and whose
    # they are ("Slurm"), for the log; 0 and "" on a host (``gpus`` says them).
    scheduled_gpus: int = 0
    scheduler: str = ""
    # When the launch timeout starts counting (time.monotonic()): after a wait in the queue,
    # or once a pod runs.
    counts_from: float = 0.0
    # Seconds the start waited in the GPU queue.
    waited: float = 0.0
    # Where the kernel's ports are, when it has an address of its own (a pod, a job's node);
    # "" else.
    address: str = ""
    # The ports the kernel chose itself and wrote back (Placement.kernel_chooses_ports), by
    # their connection-file names; None where the connection file's own ports are the kernel's.
    ports: dict[str, int] | None = None
    # A warm container took the launch: its kernel answers already.
    from_warm_pool: bool = False


def private_root_traversable(placement: Placement) -> bool:
    """Whether the private directories' root must let kernels' own users through (0711): their
    directory mounted into a container their own engine runs (a job's rootless Podman on a
    node), not one a root engine runs on this host."""
    return placement.shares_directory and not placement.reaches_kernels_on_loopback


class Placement(Protocol):
    """One per server, chosen by its engine (services.py)."""

    # Whether a kernel's private directory reaches its container (mounted there: its connection
    # file and account files, owned by the kernel's user). False: its connection file comes
    # from a Secret (a pod's), and the directory stays this server's alone.
    shares_directory: bool
    # Whether the kernel is reached through this host: its private directory's ipc sockets, or
    # its tcp ports published on this host's loopback (where every local account reaches them);
    # the directory may then be a tmpfs of this host. False: the kernel has an address of its
    # own (a pod's, a job's node's): tcp there.
    reaches_kernels_on_loopback: bool
    # Whether the kernel chooses its own ports where it runs (its connection file names port 0,
    # and ipykernel writes back the ports it bound; Placed.ports): a node other users' jobs
    # share has no port this server could pick as free.
    kernel_chooses_ports: bool
    # Whether this server books the host's GPUs for its kernels (its ledger, its GPU queue), so
    # that a request can be checked against them before a start. False where the engine's
    # scheduler places kernels and their GPUs: it queues a start it cannot meet now, and this
    # host's GPUs (a login node's: often none) say nothing of the cluster's.
    books_host_gpus: bool

    @staticmethod
    def prepare_service_config(config: Config) -> None:
        """Adjust or refuse a kernel service's configuration, before anything starts, for
        kernels placed this way (ContainerKernelError with a sentence)."""
        ...

    async def place(self, start: PlacementStart, steps: LaunchSteps) -> Placed:
        """Reserve, plan, create and start the kernel's container, or refuse in a sentence
        (a ContainerKernelError)."""
        ...

    async def address(self, container_id: str) -> str:
        """Where a running kernel's ports are when it has an address of its own; "" when they
        are this host's (a server that adopts the kernel after a restart asks)."""
        ...

    async def scheduler_waits(self) -> list[SchedulerWait]:
        """The starts of this server that wait in the engine's own scheduler now, each with the
        scheduler's reason ([] where this server's GPU queue is the only wait)."""
        ...

    def scheduler_waiting_ids(self) -> set[str]:
        """The kernel ids of the starts that wait in the engine's scheduler now (the session
        manager lists their notebooks' sessions as waiting, as it does the GPU queue's)."""
        ...

    async def cancel_scheduler_wait(self, kernel_id: str, uid: int) -> bool:
        """Cancel ``uid``'s start of ``kernel_id`` that waits in the engine's scheduler (its
        launch then fails with 409 "GPU wait cancelled"); False when no such start waits."""
        ...

    def left_behind(
        self,
        record: ContainerRecord,
        server_id: str,
        state: StateDir,
        me: L.OwnerProcess,
        root: str,
    ) -> str:
        """What a server starting now does with a kernel container a server of this placement
        left: "reattach", "remove" or "leave" (another live server's, or not this one's to
        judge). ``root``: this server's private-directory root. Blocking (it may stat files): a
        worker thread."""
        ...


async def create_container(
    backend: ContainerBackend, spec: ContainerSpec, steps: LaunchSteps
) -> str:
    """Create the start's container and tell the launch its id (its clean-up removes it from
    then on). A start cancelled while the engine creates it (a server stopping, a wait given up)
    waits for the engine's answer all the same, so that the container made is known and removed:
    the engine's call runs on a thread that a cancellation does not stop, and a container it made
    after its start was cancelled outlived the server (a warm pool's, in fresh run 22)."""
    creating = asyncio.ensure_future(backend.create(spec))
    try:
        container_id = await asyncio.shield(creating)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            steps.created(await creating)
        raise
    steps.created(container_id)
    return container_id
