"""Host-wide GPU allocation that never double-books.

The ledger is the engine's container labels (``org.jupyter.gpu-containers.gpus``), not memory in
one process: every Jupyter server on the host (one per student under JupyterHub) reads the same
ledger, and the host-wide allocation lock (an flock on the host state directory, hoststate.py)
makes "read the ledger, choose GPUs, create the container" atomic across all of them. The lock
is released as soon as the container exists (its labels are then the booking), before the slow
container start.

A booking is released when its container is removed (shutdown, cull, a dead kernel, ``docker rm``)
or when its server is dead: no live process holds its server id, and the process that created
the container is gone too. Such containers are garbage, and are removed when their GPUs are
chosen again. A restart keeps the kernel's GPUs: the old container keeps booking them until the
new one exists.

**Labels are not a booking by themselves** (issue 61). Anyone in the docker group can create a
container with any labels, and an image's labels reach its containers. So a container books
GPUs only where the service that created it wrote so: ``book()`` writes, under the allocation
lock and as soon as the container exists, a holder record in the host state directory

    gpu-holder-<container id>    {"container", "gpus", "uid", "kernel_id"}

(O_EXCL then renamed, never through a link), and the ledger counts a container's GPUs only
where such a record of that very container id names them too, in a regular file owned by root,
the directory's owner (a kernel service) or the uid the container claims (a user's own server:
a file of theirs vouches for their own kernels only). A container id is the engine's, chosen
when the container is made: no forged container can have a recorded one, and a record written
by a user for a container claiming another uid is not believed. The state directory's group
alone may create files there; its owner removes a record when the engine removes the container
(``forget_holding``, told by ``Engine.on_removed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from traitlets import Bool, Enum, Float, Int
from traitlets.config import LoggingConfigurable

from ..backends.backend import ContainerBackend
from ..base import labels as L
from ..base.errors import ContainerKernelError
from ..base.records import ContainerRecord
from ..base.safefiles import read_trusted, write_atomic
from ..base.words import counted
from ..host.hoststate import StateDir, StateDirUnusable, flocked_files
from .inventory import GPU, Inventory

# More GPUs than any host has: a bound on what a request may say (and on what its sentence
# repeats), not a policy (GPUAllocator.max_gpus_per_user is).
MAX_GPU_COUNT = 1024
_COUNT = re.compile(r"-?[0-9]+")
# A GPU index, UUID or MIG id as NVML and the device plugins write them (MIG-GPU-…/1/0 too).
_GPU_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_/-]{0,127}")


def _shown(value: Any) -> str:
    """A client's value, short, for a sentence (an int too long to print is not printed)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**12:
        return "a number that large"
    if isinstance(value, (str, int, float)):
        text = repr(value)
        return text if len(text) <= 42 else text[:40] + "…"
    return f"a {type(value).__name__}"


class InvalidGPURequest(ContainerKernelError):
    status = 400
    reason_phrase = "Invalid GPU request"


class UnknownGPU(ContainerKernelError):
    status = 400
    reason_phrase = "Unknown GPU"


class NoFreeGPU(ContainerKernelError):
    status = 409
    reason_phrase = "No free GPU"


class GPUsHeld(NoFreeGPU):
    """The GPUs asked for exist here, but other kernels hold them now: a state that passes (the
    GPU queue can wait for it), unlike a request the host can never meet."""


class OverUserCap(ContainerKernelError):
    status = 409
    reason_phrase = "GPU limit per user reached"


MAX_GPUS_PER_USER = "GPUAllocator.max_gpus_per_user"  # the option that sets the limit


def over_user_cap(wanted: int, held: int, cap: int) -> OverUserCap:
    """The refusal of ``wanted`` GPUs for a user whose other kernels hold ``held``, over the
    administrator's ``cap`` per user: a request over the cap by itself says so (no kernel shut
    down would help, and "your other kernels hold 0" told nothing); else it names what the
    user's other kernels hold."""
    limit = counted(cap, "GPU")
    if wanted > cap:
        return OverUserCap(
            f"You asked for {counted(wanted, 'GPU')}, over the limit of {limit} per user. "
            "Ask for fewer GPUs.",
            setting=MAX_GPUS_PER_USER,
        )
    return OverUserCap(
        f"This would give you {counted(held + wanted, 'GPU')}, over the limit of {limit} per "
        f"user ({held} held by your other kernels). Shut one of them down, or ask for fewer "
        "GPUs.",
        setting=MAX_GPUS_PER_USER,
    )


class GPUGone(ContainerKernelError):
    status = 409
    reason_phrase = "GPU no longer present"


class GPUVisibility(LoggingConfigurable):
    show_other_users = Bool(
        False,
        config=True,
        help="""Show other users' names, notebook paths and images on the GPUs they hold, in the
        panel and in refusals ("GPU 0 is held by a kernel of alice"). By default users see only
        that such a GPU is taken by another user (their own kernels in full).""",
    )


@dataclass(frozen=True)
class GPURequest:
    """What a kernel asks for: a number of GPUs, or specific GPUs by index or UUID."""

    count: int = 0
    ids: tuple[str, ...] = ()

    @property
    def wants_gpus(self) -> bool:
        return self.count > 0 or bool(self.ids)

    @classmethod
    def parse(cls, value: Any) -> GPURequest:
        """Accepts 2, "2", "none", "0,1", "GPU-…", ["0", "GPU-…"]. Anything else is refused with
        InvalidGPURequest, whatever it is: the value comes from a client (a notebook's metadata,
        a start's env, a request's body), and any other error would be the server's 500."""
        if value is None:
            return cls()
        if isinstance(value, (bool, float)):
            raise InvalidGPURequest(
                "A GPU request must be a whole number of GPUs or a list of GPU ids, not "
                f"{_shown(value)}."
            )
        if isinstance(value, int):
            if not 0 <= value <= MAX_GPU_COUNT:
                raise InvalidGPURequest(
                    f"A GPU count is a whole number from 0 to {MAX_GPU_COUNT}, not {_shown(value)}."
                )
            return cls(count=value)
        if isinstance(value, str):
            text = value.strip()
            if text.lower() in ("", "none"):
                return cls()
            if _COUNT.fullmatch(text):  # (ASCII digits only: str.isdigit takes "²" too)
                return cls.parse(int(text) if len(text) <= 12 else 10**12)
            return cls.parse([part.strip() for part in text.split(",")])
        if isinstance(value, (list, tuple)):
            if len(value) > MAX_GPU_COUNT:
                raise InvalidGPURequest(
                    f"A GPU request names at most {MAX_GPU_COUNT} GPUs, not {len(value)}."
                )
            ids = []
            for item in value:
                if isinstance(item, int) and not isinstance(item, bool):
                    if not 0 <= item < MAX_GPU_COUNT:
                        raise InvalidGPURequest(
                            f"A GPU index is from 0 to {MAX_GPU_COUNT - 1}, not {_shown(item)}."
                        )
                    item = str(item)
                if not isinstance(item, str) or not _GPU_ID.fullmatch(item):
                    raise InvalidGPURequest(
                        "A GPU is named by its index or UUID (such as 0 or GPU-…), not "
                        f"{_shown(item)}."
                    )
                ids.append(item)
            if len(set(ids)) != len(ids):
                raise InvalidGPURequest(
                    "The same GPU is named twice in the request: name each GPU once."
                )
            return cls(ids=tuple(ids))
        raise InvalidGPURequest(
            f"A GPU request cannot be a {type(value).__name__}: give a number of GPUs or a list "
            "of GPU ids."
        )

    def to_json(self) -> int | list[str]:
        """The request as stored and reported: a count, or the GPU ids."""
        return list(self.ids) if self.ids else self.count

    def describe(self) -> str:
        if self.ids:
            return "GPU " + ", ".join(self.ids)
        return f"{self.count} GPU" + ("s" if self.count != 1 else "")


@dataclass(frozen=True)
class Holding:
    """One kernel's hold on one GPU, read from its container's labels."""

    kernel_id: str
    container_id: str
    user: str
    uid: str
    notebook: str
    image: str
    server_id: str
    created: float

    def since(self) -> str:
        return datetime.fromtimestamp(self.created).strftime("%H:%M") if self.created else "?"


@dataclass
class Ledger:
    holdings: dict[str, list[Holding]] = field(default_factory=dict)  # GPU UUID -> holders
    garbage: dict[str, list[str]] = field(default_factory=dict)  # GPU UUID -> dead containers

    def held_by_others(self, uuid: str, kernel_id: str) -> list[Holding]:
        return [h for h in self.holdings.get(uuid, []) if h.kernel_id != kernel_id]


# A container id as the engines write it (Docker's and Podman's: 64 hex digits).
_CONTAINER_ID = re.compile(r"[0-9a-f]{12,128}")
_HOLDER_BYTES = 16 * 1024


def _holder_name(container_id: str) -> str | None:
    return f"gpu-holder-{container_id}" if _CONTAINER_ID.fullmatch(container_id) else None


def record_holding(
    state: StateDir, container_id: str, gpus: Iterable[str], uid: str, kernel_id: str
) -> None:
    """Write that the container ``container_id``, which this service just created, holds
    ``gpus`` (the ledger believes no container's labels without it). Under the allocation lock:
    a small file in the state directory (in memory, /run), written on the caller's thread as the
    ledger is read (current_ledger)."""
    name = _holder_name(container_id)
    data = {"container": container_id, "gpus": list(gpus), "uid": uid, "kernel_id": kernel_id}
    try:
        if name is None:
            raise OSError(f"the engine named the container {container_id[:80]!r}")
        write_atomic(state.fd, name, json.dumps(data).encode(), 0o644)
    except OSError as e:
        raise StateDirUnusable(
            f"The GPUs given to this kernel could not be recorded in {state.path} "
            f"({getattr(e, 'strerror', None) or e}), so no GPU is given. Ask an administrator "
            "to check that directory (jupyter gpu-containers setup-host)."
        ) from None


def forget_holding(state: StateDir, container_id: str) -> None:
    """The engine removed ``container_id``: its holder record goes (only its writer may remove
    it: the directory is sticky). Blocking, small: Engine.on_removed's thread."""
    name = _holder_name(container_id)
    if name is None or not state.shared:
        return
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=state.fd)


def _recorded_gpus(state: StateDir, c: ContainerRecord, trusted: frozenset[int]) -> set[str]:
    """The GPUs the service's holder record of ``c`` names ({} when there is none, or none a
    trusted owner wrote for this container)."""
    name = _holder_name(c.id)
    if name is None:
        return set()
    claimed = c.labels.get(L.UID, "")
    owners = trusted | ({int(claimed)} if claimed.isdigit() and len(claimed) <= 10 else set())
    try:
        data, _info = read_trusted(state.fd, name, owners, _HOLDER_BYTES)
        record = json.loads(data.decode("utf-8"))
    except (OSError, ValueError):
        return set()
    if not isinstance(record, dict) or record.get("container") != c.id:
        return set()
    if str(record.get("uid", "")) != claimed:
        return set()
    gpus = record.get("gpus")
    return {g for g in gpus if isinstance(g, str)} if isinstance(gpus, list) else set()


def read_ledger(
    containers: Iterable[ContainerRecord], state: StateDir, host: str, *, vouched: bool = True
) -> Ledger:
    """Bookings from container labels, each vouched for by the service's own holder record of
    that container id (only the GPUs both name count: neither a forged container nor an image's
    labels book anything). ``vouched`` False: where the engine's scheduler books GPUs
    (``ContainerBackend.schedules_gpus``: pods of the service's namespace, Slurm jobs of its own
    records), whose records are not labels anyone else writes. A container books nothing once
    its server is dead: no live process holds its server id here, and the process that created
    it is gone too (a server of another state directory, or of another host, keeps its bookings
    while it runs)."""
    ledger = Ledger()
    trusted = state.service_uids()
    alive: dict[tuple[str, str], bool] = {}
    # Per creating process, read once: a server's kernels share it, and each look reads /proc.
    owners_alive: dict[L.OwnerProcess, bool] = {}
    locks: frozenset[str] | None = None
    locks_read = False
    for c in containers:
        uuids = [u for u in c.labels.get(L.GPUS, "").split(",") if u]
        if not uuids:
            continue
        if vouched:
            recorded = _recorded_gpus(state, c, trusted)
            uuids = [u for u in uuids if u in recorded]
            if not uuids:
                continue  # not a booking this service made: neither held nor garbage to remove
        owner = L.OwnerProcess.parse(c.labels.get(L.OWNER_PROCESS, ""))
        server_id, uid = c.labels.get(L.SERVER_ID, ""), c.labels.get(L.UID, "")
        if owner is not None and owner.host == host:
            if (server_id, uid) not in alive:
                if not locks_read:  # one read of /proc/locks for the whole ledger
                    locks, locks_read = flocked_files(), True
                alive[(server_id, uid)] = state.is_alive(server_id, uid, locks)
            live = alive[(server_id, uid)]
            if not live:
                if owner not in owners_alive:
                    owners_alive[owner] = owner.is_alive()
                live = owners_alive[owner]
        else:
            live = True  # another host's server: cannot be judged, so it keeps its booking
        for uuid in uuids:
            if live:
                ledger.holdings.setdefault(uuid, []).append(
                    Holding(
                        kernel_id=c.labels.get(L.KERNEL_ID, ""),
                        container_id=c.id,
                        user=c.labels.get(L.USER, ""),
                        uid=uid,
                        notebook=c.labels.get(L.NOTEBOOK, ""),
                        image=c.labels.get(L.IMAGE, ""),
                        server_id=server_id,
                        created=c.created,
                    )
                )
            else:
                ledger.garbage.setdefault(uuid, []).append(c.id)
    return ledger


async def current_ledger(engine: ContainerBackend, state: StateDir) -> Ledger:
    """The ledger as the engine has it now (call under the allocation lock when about to book).

    Liveness is read here, on the loop: one read of /proc/locks and a stat per server in the
    host state directory, none of which waits on a disk (/proc and /run are in memory). Under
    the allocation lock a worker thread would cost more: it would wait behind every other
    launch's file work in the default executor, while all GPU launches wait on the lock."""
    containers = await engine.ledger_containers()
    host = L.OwnerProcess.current().host
    return read_ledger(containers, state, host, vouched=not engine.schedules_gpus)


class GPUAllocator(LoggingConfigurable):
    """Admin policy for handing GPUs to kernels."""

    policy = Enum(
        ["exclusive", "shared"],
        "exclusive",
        config=True,
        help=""""exclusive" (default): a GPU belongs to one kernel at a time. "shared": up to
        max_kernels_per_gpu kernels share a GPU (their memory is not isolated).""",
    )

    max_kernels_per_gpu = Int(2, config=True, help="""Kernels per GPU under the "shared" policy.""")

    max_gpus_per_user = Int(
        0,
        config=True,
        help="""GPUs one user may hold at once, over all their kernels and servers on this host
        (counted by uid, over the GPUs of the inventory). 0: no cap.""",
    )

    attach_mode = Enum(
        ["auto", "runtime", "device-requests", "cdi"],
        "auto",
        config=True,
        help="""How GPUs reach the container. "runtime": the NVIDIA container runtime
        (--runtime=nvidia) with NVIDIA_VISIBLE_DEVICES. "device-requests": Docker's --gpus
        (device requests to the nvidia driver). "cdi": CDI device names (nvidia.com/gpu=UUID),
        for engines with CDI enabled. "auto" (default): "runtime" when the engine has a runtime
        named nvidia, else "cdi" when an NVIDIA CDI spec exists under /etc/cdi or /var/run/cdi,
        else "device-requests".""",
    )

    lock_timeout = Float(
        30.0,
        config=True,
        help="""Seconds to wait for the host-wide allocation lock before failing the launch.""",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._scheduled_locks: dict[str, asyncio.Lock] = {}

    def choose(
        self,
        inventory: Inventory,
        ledger: Ledger,
        request: GPURequest,
        *,
        kernel_id: str,
        uid: str,
        show_others: bool = False,
    ) -> list[GPU]:
        """The GPUs to give, or an error that says exactly why none can be given. ``uid``: whose
        kernel it is; other users' kernels are named in the sentence only with ``show_others``
        (GPUVisibility.show_other_users)."""

        def holders_text(holders: list[Holding]) -> str:
            return self._holders_text(holders, uid, show_others)

        if not request.wants_gpus:
            return []
        devices = inventory.allocatable()
        if not devices:
            raise NoFreeGPU(
                f"No GPU on this host for the {request.describe()} requested: "
                f"{inventory.reason or 'the inventory is empty.'}"
            )
        capacity = 1 if self.policy == "exclusive" else max(1, self.max_kernels_per_gpu)
        wanted = len(request.ids) or request.count
        mine = {gpu.uuid for gpu in inventory.gpus} | {gpu.uuid for gpu in devices}
        self._check_user_cap(ledger, wanted, kernel_id, uid, mine)

        def free(gpu: GPU) -> bool:
            return len(ledger.held_by_others(gpu.uuid, kernel_id)) < capacity

        if request.ids:
            chosen = []
            for ident in request.ids:
                gpu = inventory.find(ident)
                if gpu is None:
                    known = ", ".join(f"{g.index} ({g.uuid})" for g in devices)
                    if ident.startswith(("GPU-", "MIG-")) and ident in ledger.holdings:
                        raise GPUGone(
                            f"{ident} is booked but no longer on this host (it disappeared "
                            "since boot, or the driver was reset). Ask for another GPU."
                        )
                    raise UnknownGPU(f"There is no GPU {ident!r} on this host. GPUs: {known}.")
                if not free(gpu):
                    raise GPUsHeld(
                        f"GPU {gpu.index} ({gpu.uuid}) is not free: "
                        f"{holders_text(ledger.held_by_others(gpu.uuid, kernel_id))}."
                    )
                chosen.append(gpu)
            return chosen

        if wanted > len(devices):
            raise NoFreeGPU(
                f"No free GPU: {wanted} requested, but this host has only {len(devices)}."
            )
        available = [g for g in devices if free(g)]
        if len(available) < wanted:
            busy = [g for g in devices if not free(g)]
            detail = "; ".join(
                f"GPU {g.index} is held by {holders_text(ledger.held_by_others(g.uuid, kernel_id))}"
                for g in busy[:4]
            )
            raise GPUsHeld(f"No free GPU: {wanted} requested, {len(available)} free ({detail}).")
        # Least loaded first: fewest holders, then least memory used, then least busy.
        available.sort(
            key=lambda g: (
                len(ledger.held_by_others(g.uuid, kernel_id)),
                g.memory_used or 0,
                g.utilization or 0,
                g.index,
            )
        )
        return available[:wanted]

    async def book(
        self,
        *,
        state: StateDir,
        backend: ContainerBackend,
        inventory: Inventory,
        request: GPURequest,
        kernel_id: str,
        uid: str,
        show_others: bool,
        create: Callable[[list[GPU]], Awaitable[str]],
        on_wait: Callable[[], None] | None = None,
        turn: Callable[[Ledger], Awaitable[Ledger]] | None = None,
    ) -> tuple[list[GPU], str]:
        """Book GPUs for a kernel and create its container, atomically across every server on the
        host: under the host-wide lock, read the ledger, choose, and ``create`` the container
        (whose labels are then the booking). Returns the GPUs and the container's id; the lock
        is released before the container starts. ``create`` gets the chosen GPUs and must do no
        blocking work (it runs under the lock). ``turn``: the wait queue's check that no start
        ahead of this one comes first (gpuqueue.py), run on the ledger just read: it answers the
        ledger to choose from (those ahead served first), or raises to give the lock back
        without booking."""
        async with state.allocation_lock(self.lock_timeout, on_wait):
            # Containers an outage kept this server from removing book GPUs: they go first.
            await backend.remove_deferred()
            ledger = await current_ledger(backend, state)
            if turn is not None:
                ledger = await turn(ledger)
            chosen = self.choose(
                inventory,
                ledger,
                request,
                kernel_id=kernel_id,
                uid=uid,
                show_others=show_others,
            )
            for gpu in chosen:  # containers of dead servers still sitting on them
                for garbage in ledger.garbage.get(gpu.uuid, []):
                    await backend.remove(garbage)
            container_id = await create(chosen)
            if chosen:  # the booking the ledger believes (record_holding), still under the lock
                record_holding(state, container_id, [g.uuid for g in chosen], uid, kernel_id)
        return chosen, container_id

    async def adopt_holding(
        self, *, state: StateDir, backend: ContainerBackend, record: ContainerRecord
    ) -> list[str]:
        """The GPUs a kernel this service reattaches holds (recovery.py), written in its holder
        record where it has none: a kernel started by a version of the service that wrote no
        holder records (an upgrade while GPU kernels ran) would otherwise book nothing, and
        its GPUs would be given to another kernel. Only for a container recovery adopted as
        its own kernel (its server id, its private directory, its user), never for one a label
        alone names. Returns the GPUs recorded ([] where a record was there already, or none
        is needed)."""
        gpus = [u for u in record.labels.get(L.GPUS, "").split(",") if u]
        if not gpus or backend.schedules_gpus or not state.shared:
            return []
        async with state.allocation_lock(self.lock_timeout):
            # A small file in /run, read under the lock as book() writes its records.
            if _recorded_gpus(state, record, state.service_uids()):
                return []
            record_holding(
                state,
                record.id,
                gpus,
                record.labels.get(L.UID, ""),
                record.labels.get(L.KERNEL_ID, ""),
            )
        return gpus

    @contextlib.asynccontextmanager
    async def scheduled_start(
        self, backend: ContainerBackend, wanted: int, kernel_id: str, uid: str
    ) -> AsyncIterator[None]:
        """max_gpus_per_user where the backend's scheduler places GPUs (Kubernetes): the GPU
        counts of the user's other live kernels, from their records, plus ``wanted``, or
        OverUserCap. The body (the pod's creation) runs under a lock per user, so that the next
        start of the same user counts this one's pod."""
        if self.max_gpus_per_user <= 0 or wanted <= 0:
            yield
            return
        lock = self._scheduled_locks.setdefault(uid, asyncio.Lock())
        async with lock:
            records = await backend.list_containers({L.MANAGED: "true", L.UID: uid})
            held = sum(
                int(r.labels.get(L.GPU_COUNT, "0"))
                for r in records
                if r.status != "exited"
                and r.labels.get(L.KERNEL_ID) != kernel_id
                and r.labels.get(L.GPU_COUNT, "0").isdigit()
            )
            if held + wanted > self.max_gpus_per_user:
                raise over_user_cap(wanted, held, self.max_gpus_per_user)
            yield

    def _check_user_cap(
        self, ledger: Ledger, wanted: int, kernel_id: str, uid: str, inventory: set[str]
    ) -> None:
        """The cap counts the GPUs of ``inventory`` (UUIDs) the user's other kernels hold: the
        GPUs this allocator gives. Devices the engine's labels name that are not in it (another
        server's declared inventory on the same engine, a GPU taken out of service) are not
        this host's to cap."""
        if self.max_gpus_per_user <= 0:
            return
        held = {
            uuid
            for uuid, holders in ledger.holdings.items()
            if uuid in inventory
            for h in holders
            if h.uid == uid and h.kernel_id != kernel_id
        }
        if len(held) + wanted > self.max_gpus_per_user:
            raise over_user_cap(wanted, len(held), self.max_gpus_per_user)

    @staticmethod
    def _holders_text(holders: list[Holding], viewer_uid: str, show_others: bool) -> str:
        if not holders:
            return "nobody"

        def whose(h: Holding) -> str:
            if h.uid == viewer_uid:
                return "one of your kernels"
            if show_others and h.user:
                return f"a kernel of {h.user}"
            return "a kernel of another user"

        return " and ".join(f"{whose(h)} since {h.since()}" for h in holders)


@dataclass(frozen=True)
class Attachment:
    """How the chosen GPUs reach the container: on a host, a runtime, environment or device
    requests naming them; on a cluster, a number of them of a resource, which the scheduler
    places (``scheduled``)."""

    runtime: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    device_requests: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0
    resource: str = ""

    @classmethod
    def scheduled(cls, count: int, resource: str) -> Attachment:
        """``count`` GPUs of ``resource`` (""): the backend's default) that a scheduler places.
        The device plugin tells the container which GPUs it has; only a kernel without GPUs
        says it has none (NVIDIA_VISIBLE_DEVICES=void: legacy CUDA images default to "all")."""
        environment = {} if count else {"NVIDIA_VISIBLE_DEVICES": "void"}
        return cls(environment=environment, count=count, resource=resource)


def attachment(mode: str, gpus: list[GPU]) -> Attachment:
    """The container settings for ``gpus`` under an attach mode (never "auto": resolve first).

    CPU kernels get NVIDIA_VISIBLE_DEVICES=void: legacy CUDA images default to "all", and under
    the NVIDIA runtime would otherwise see every GPU. CUDA_VISIBLE_DEVICES is never set: inside
    the container the devices are renumbered from 0.
    """
    if not gpus:
        return Attachment(environment={"NVIDIA_VISIBLE_DEVICES": "void"})
    uuids = [g.uuid for g in gpus]
    if mode == "runtime":
        return Attachment(runtime="nvidia", environment={"NVIDIA_VISIBLE_DEVICES": ",".join(uuids)})
    if mode == "cdi":
        return Attachment(
            device_requests=[
                {"driver": "cdi", "device_ids": [f"nvidia.com/gpu={u}" for u in uuids]}
            ]
        )
    return Attachment(
        device_requests=[{"driver": "nvidia", "device_ids": uuids, "capabilities": [["gpu"]]}]
    )


def resolve_attach_mode(mode: str, engine_runtimes: Iterable[str], cdi_dirs: Iterable[str]) -> str:
    if mode != "auto":
        return mode
    if "nvidia" in engine_runtimes:
        return "runtime"
    for directory in cdi_dirs:
        with contextlib.suppress(OSError):
            if any(name.startswith("nvidia") for name in os.listdir(directory)):
                return "cdi"
    return "device-requests"
