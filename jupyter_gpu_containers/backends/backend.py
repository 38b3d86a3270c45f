"""What the kernel lifecycle, the GPU ledger, recovery, the readiness probe, pulls and the warm pool
need from a container engine: the backend interface.

The Docker engine (backends/docker/) is its first implementation and the only package that
imports docker. A second backend (Kubernetes: a kernel is a pod) implements the same methods;
nothing above this interface changes (docs/architecture.md says how it plugs in).

Coroutines run on the event loop and must never block it (the Docker backend runs every call on
a thread pool); the ``*_sync`` methods are for worker threads (probes, pulls, the image
watcher), which may block.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from ..base.records import (
    ContainerRecord,
    ContainerSpec,
    ContainerState,
    ImageRecord,
    ImagesDiskUse,
    OneshotResult,
)


class PullProgress(Protocol):
    """A pull under way: the engine's progress messages; ``close`` (any thread) cancels."""

    closed: bool

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class StepLimits:
    """How a build's step containers are confined beside what every one gets (no capabilities,
    no-new-privileges): ``memory``, the most bytes of memory (0: the engine's default);
    ``cpus``, the most CPUs (0: unlimited); ``pids``, the most processes; ``network``, False for
    none, True for the backend's own network made for builds only (never the host's, never the
    kernels')."""

    memory: int = 0
    cpus: float = 0.0
    pids: int = 1024
    network: bool = False


@dataclass(frozen=True)
class ImageConfig:
    """What a build's commit writes as the image's config (Docker's image config fields), as the
    service computed it from its own parse: never text an engine parses again."""

    env: tuple[str, ...] = ()
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    workdir: str = ""
    user: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    stop_signal: str = ""
    shell: tuple[str, ...] | None = None


class BuildSteps(Protocol):
    """The container primitives the service's own builder (images/builder.py) executes a
    Dockerfile it parsed with: a confined container per stage, each RUN an exec in it, each COPY
    a tar the service wrote, and one commit with the config the service computed. The engine
    never sees a Dockerfile. Blocking: the build's own thread; every refusal a
    ContainerKernelError sentence."""

    # A started container of ``image_id`` (an id the service resolved), its PID 1 idle,
    # confined as ``limits`` say and as a kernel is (no capabilities, no-new-privileges).
    def create_stage(self, image_id: str, *, labels: dict[str, str], limits: StepLimits) -> str: ...

    # The config ``image_id`` carries (its env, cmd, entrypoint, workdir, user, labels, …): a
    # stage starts from its base's, and the commit writes the whole of what the service made of
    # it (an engine that merges a committed container's config into the one given must still
    # end with exactly this config, the builder's labels of the stage container left out).
    def image_config(self, image_id: str) -> ImageConfig: ...

    # A created, never started container of ``image_id``: a COPY --from's source.
    def create_source(self, image_id: str, *, labels: dict[str, str]) -> str: ...

    # ``argv`` run in ``container`` as ``user`` in ``workdir`` with ``env``; each output line
    # told to ``on_line``; its exit status (the exec is ended once ``cancelled`` is set).
    def exec_step(
        self,
        container: str,
        argv: list[str],
        *,
        user: str,
        workdir: str,
        env: list[str],
        on_line: Callable[[str], None],
        cancelled: threading.Event,
    ) -> int: ...

    def put_archive(self, container: str, path: str, data: bytes | BinaryIO) -> None: ...

    # A tar stream of ``path`` in ``container``.
    def get_archive(self, container: str, path: str) -> BinaryIO: ...

    # The bytes ``container``'s writable layer holds.
    def layer_size(self, container: str) -> int: ...

    # ``container`` committed as an untagged image with ``config`` and ``labels``: its id.
    def commit(self, container: str, config: ImageConfig, labels: dict[str, str]) -> str: ...

    def remove_container(self, container: str) -> None: ...  # force, idempotent

    def remove_image(self, image_id: str) -> None: ...  # idempotent


@dataclass(frozen=True)
class LogLine:
    """One line of a container's log: when the engine received it (RFC 3339, "" when it did not
    say) and its text, without the line break."""

    time: str
    text: str


class LogStream(Protocol):
    """A container's log, read (and, when followed, waited on) line by line; ``close`` (any
    thread) ends the iteration at once. Iteration blocks: a worker thread of its own."""

    def __iter__(self) -> Iterator[LogLine]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class MountInfo:
    """A mount of a running container, as the engine reports it."""

    type: str  # "bind", "volume", "tmpfs", …
    source: str  # on the host ("" for a tmpfs)
    target: str  # in the container
    read_only: bool


@dataclass(frozen=True)
class Dataset:
    """Data the engine itself gives every kernel, beside its spec's mounts (a cluster's
    volumes: KubernetesBackend.datasets): its name, where the kernel sees it, whether read-only,
    and where the data is, in words ("claim imagenet")."""

    name: str
    target: str
    read_only: bool
    source: str


@dataclass(frozen=True)
class ContainerDetails:
    """What a kernel's own view shows of its container (``docker inspect``)."""

    id: str
    name: str
    image_id: str  # the image's content id (sha256:…)
    image_ref: str  # the reference it was created from
    labels: dict[str, str]
    status: str
    created: str  # RFC 3339
    started_at: str  # RFC 3339, "" before it started
    finished_at: str  # RFC 3339, "" while it never ended
    exit_code: int
    oom_killed: bool
    error: str
    mounts: tuple[MountInfo, ...]
    tmpfs: tuple[str, ...]  # targets of its tmpfs mounts


@dataclass(frozen=True)
class Finding:
    """One thing ``jupyter gpu-containers doctor`` says of the engine: a sentence, whether it
    is a problem, and whether kernels cannot start until it is fixed (``blocking``)."""

    sentence: str
    problem: bool = False
    blocking: bool = False


@dataclass(frozen=True)
class GPUHolder:
    """A kernel the cluster's scheduler placed with GPUs (a pod, a job): on which node, how many
    of which resource, and whose; on Slurm also what a node's other jobs hold together (``pod``
    "", no user)."""

    node: str
    pod: str  # the pod's name (Kubernetes), the job's id (Slurm)
    count: int
    resource: str
    user: str
    uid: str
    kernel_id: str
    notebook: str
    indices: tuple[int, ...] = ()  # which of the node's GPUs, where the scheduler says (Slurm)


class ClusterNodes(Protocol):
    """A cluster's GPU nodes, as the GPU panel shows them (routes/cluster_view.py). Blocking
    (API calls): worker threads."""

    cluster_name: str  # the engine, as GET /gpu-containers/cluster names it ("kubernetes")

    def nodes_sync(self) -> list[Any]: ...

    def gpu_holders_sync(self) -> list[GPUHolder]: ...

    # What the two above answer stays the same while this does (a watch's count of changes):
    # the panel's answer made from them may be kept until it changes. None: never assume so.
    def cluster_version(self) -> Hashable | None: ...


class KeptAllocations(Protocol):
    """What an engine whose kernels hold an allocation beyond their container (a Slurm job's
    node and GPUs) offers a restart: the container stopped, the allocation kept, and the
    restart's container run in it when it would be the same job. Each call is one engine step
    or two, off the event loop."""

    async def stop_for_restart(self, container_id: str) -> None:
        """Stop the kernel's container for a restart (jupyter_client's terminate or kill with
        ``restart``), keeping its allocation a while for the restart's container."""
        ...

    async def continue_in(self, container_id: str, spec: ContainerSpec) -> str | None:
        """Run ``spec`` in the allocation of the stopped container ``container_id``: the new
        container's id, or None when it cannot (the allocation is gone, or ``spec`` would ask
        the engine for something else: other GPUs, another image); the restart then starts
        anew, after removing the stopped one."""
        ...


class GPUAccounting(Protocol):
    """The engine's own record of the GPUs each user's work held (Slurm's accounting), for
    the quota line where this project keeps no quota of its own. Blocking: worker threads."""

    accounted_by: str  # the engine, for sentences ("Slurm")

    def gpu_hours_sync(self, user: str, since: float, until: float) -> float | None:
        """GPU-hours ``user``'s work held between ``since`` and ``until`` (unix times); None
        when the engine keeps no such record (Slurm without its accounting database)."""
        ...


class ActiveReplica(Protocol):
    """One of several replicas of the kernel service, acting only while it holds the right to
    (kubernetes/lease.py). ``acquire`` blocks until it does (the process is a standby until
    then; ``waiting(holder)`` is told once who acts meanwhile), then keeps it and shuts the
    process's fence (base/fence.py) the moment it is lost; ``release`` gives it up at a clean
    stop. ``backend``: the backend it watched the engine with while it stood by (services.py
    makes it the server's, its caches warm)."""

    backend: Any

    def acquire(self, waiting: Callable[[str], None] | None = None) -> None: ...

    # The service answers now, its kernels reattached: route users to it (blocking).
    def serving(self) -> None: ...

    def release(self) -> None: ...


class ContainerBackend(Protocol):
    """A container engine, as this project uses one. Errors are errors.py's sentences."""

    # Built by services.py from the configuration it is a part of (a LoggingConfigurable's).
    def __init__(self, *, parent: Any = None, **kwargs: Any) -> None: ...

    resolved_url: str  # where the engine is, for sentences ("not reachable at …")
    # Told of each container the backend removed (its record, and when), on the removing thread
    # (blocking allowed): quota.py's accounting of GPU-hours. None: nobody is told.
    on_removed: Callable[[ContainerRecord, float], None] | None

    # What differs between engines, declared (Docker / Kubernetes):
    # - schedules_gpus: the engine's scheduler places kernels and their GPUs, not the host's
    #   ledger; services.py chooses the placement by it, and nothing else reads it (False /
    #   True). The placement then says how a kernel is reached (Placement.shares_directory:
    #   its private directory and this host's loopback, or an address of its own);
    # - signals_reach_kernels: ``kill`` can signal a kernel (an interrupt is SIGINT); else an
    #   interrupt is a message on the kernel's control channel (True / False);
    # - pulls_report_bytes: a pull's progress stream speaks at least every few seconds while
    #   bytes arrive (Docker's per-layer byte counts), so that a pull silent for
    #   PullManager.stall_timeout is stalled (True); podman without a terminal says one line
    #   per layer, and a large layer is minutes of silence (False: no stall bound);
    # - tags_resolve_per_node: each node resolves a tag by itself (and keeps what it pulled
    #   before), so only a digest in the reference itself can meet a pinned digest (False /
    #   True);
    # - containers_shared: every user's containers are listed by the engine, so that their
    #   labels make a host-wide GPU ledger (Docker, Kubernetes: True); rootless Podman lists a
    #   user's own only, and its GPUs are booked among that user's kernels (False; Podman as root,
    #   a kernel service's: True);
    # - images_shared: the images the engine keeps are seen by every user of the host (or
    #   cluster), so that a pull made with one user's own registry login must be kept private
    #   to them by this project (privateimages.py); rootless Podman's storage is its user's own
    #   (Docker, Kubernetes, Podman as root: True; rootless Podman: False);
    # - kernels_on_shared_nodes: its scheduler runs each kernel as a job on a node that shares
    #   this host's file system, and its network with other users' jobs (Slurm: True; Docker,
    #   Podman, Kubernetes: False); services.py then places kernels as batch jobs
    #   (placement/batch.py);
    # - cluster: the cluster's GPU nodes and their holders, for the GPU panel (None / itself);
    # - kept_allocations: a restart may run in the allocation of the kernel's stopped container
    #   (KeptAllocations: Slurm's jobs), where the engine allocates beyond the container (None
    #   on Docker, Podman and Kubernetes, where a restart's container is the allocation);
    # - gpu_accounting: the engine accounts each user's GPU-hours itself (GPUAccounting:
    #   Slurm's sacct), shown where this project keeps no quota (None elsewhere);
    # - kernel_datasets: data the engine gives every kernel beside its spec's mounts
    #   (Kubernetes: its datasets, the cluster's volumes; () where a kernel's data is its
    #   spec's extra mounts).
    schedules_gpus: bool
    kernels_on_shared_nodes: bool
    signals_reach_kernels: bool
    tags_resolve_per_node: bool
    pulls_report_bytes: bool

    @property
    def containers_shared(self) -> bool: ...

    @property
    def images_shared(self) -> bool: ...

    @property
    def cluster(self) -> ClusterNodes | None: ...

    @property
    def kept_allocations(self) -> KeptAllocations | None: ...

    @property
    def gpu_accounting(self) -> GPUAccounting | None: ...

    @property
    def kernel_datasets(self) -> tuple[Dataset, ...]: ...

    async def address(self, container_id: str) -> str: ...

    # A kernel's connection as the backend delivered it (Kubernetes: its Secret), for recovery
    # where the private directory is gone. Docker refuses: its kernels' is the directory's.
    async def connection_info(self, container_id: str) -> dict[str, Any]: ...

    # Where kernels' images come from when the engine keeps no local store to list (a
    # cluster's nodes pull): ``listed`` answers the administrator's listed references (they
    # are then the images there are), ``pull_auth`` a registry's login, for pulls the engine
    # makes (None: none). An engine with a local store of its own ignores both.
    def use_images(
        self,
        listed: Callable[[], list[str]],
        pull_auth: Callable[[str], dict[str, str] | None],
    ) -> None: ...

    # -- the engine
    async def version(self) -> str: ...

    # What the engine needs that this host or user lacks, each with what to do (blocking: worker
    # threads and the command line).
    def diagnose_sync(self) -> list[Finding]: ...

    # Why a kernel service, which runs each user's kernels as that user, cannot run on this
    # engine as this process's account; "" when it can. Asked of the class, before the service
    # starts anything (rootless Podman: its other uids are subordinate ids, not the users').
    @classmethod
    def kernel_service_problem(cls) -> str: ...

    # Where replicas of the kernel service can share the engine (Kubernetes), what makes one of
    # them the only one that acts (a lease: ActiveReplica); None where one service per host is
    # the rule (Docker, Podman, Slurm: the service's unit restarts it). Asked once the service's
    # configuration is loaded, before it starts anything.
    @classmethod
    def active_replica(cls, parent: Any) -> ActiveReplica | None: ...

    async def runtimes(self) -> list[str]: ...

    def close(self) -> None: ...

    # -- a kernel's container: create, start, inspect, signal, wait (poll), remove, logs
    # create may start the container as well, where the engine does both in one step for less
    # (Podman: one command); start then only makes sure it runs.
    async def create(self, spec: ContainerSpec) -> str: ...

    async def start(self, container_id: str, image: str) -> None: ...

    async def state(self, container_id: str) -> ContainerState | None: ...

    async def kill(self, container_id: str, signum: int) -> None: ...

    async def remove(self, container_id: str) -> None: ...

    async def remove_or_defer(self, container_id: str) -> bool: ...

    async def remove_deferred(self) -> None: ...

    async def logs_tail(self, container_id: str, lines: int = 20) -> str: ...

    # Why the engine's own scheduler keeps a created container from starting (its reason, and
    # when it expects the start: unix time or None), or None when it does not (blocking).
    def pending_reason_sync(self, container_id: str) -> tuple[str, float | None] | None: ...

    async def details(self, container_id: str) -> ContainerDetails | None: ...

    def open_logs_sync(self, container_id: str, tail: int, follow: bool) -> LogStream | None: ...

    # -- the ledger and recovery: containers by label
    async def list_containers(self, labels: dict[str, str | None]) -> list[ContainerRecord]: ...

    def list_containers_sync(self, labels: dict[str, str | None]) -> list[ContainerRecord]: ...

    async def ledger_containers(self) -> list[ContainerRecord]:
        """The containers carrying the managed label, as the GPU ledger reads them: their ids,
        labels and creation times as the engine has them now (an engine may keep them up to date
        from its events rather than list them all; other fields may be older)."""
        ...

    # -- images: list, inspect, events, pulls, one-shot containers (the readiness probe)
    async def list_images(self) -> list[ImageRecord]: ...

    def list_images_sync(self) -> list[ImageRecord]: ...

    async def inspect_image(self, ref: str) -> ImageRecord: ...

    def inspect_image_sync(self, ref: str) -> ImageRecord: ...

    def watch_images(self, on_change: Callable[[], None], stop: threading.Event) -> None: ...

    def wake_watchers(self) -> None: ...

    def open_pull(
        self, ref: str, tag: str, auth_config: dict[str, str] | None, *, registry: str, who: str
    ) -> PullProgress: ...

    # The container primitives the service's own builder runs a build with (BuildSteps), or
    # None where this engine builds no images (build_refusal says why).
    def build_steps(self) -> BuildSteps | None: ...

    # Why this engine builds no images for its kernels, in a sentence ("" where it does; None
    # from build_steps there), said before anything is asked of it (the kernel's view says it
    # instead of offering a save).
    def build_refusal(self) -> str: ...

    def tag_sync(self, image_id: str, ref: str) -> None: ...

    def untag_sync(self, ref: str) -> None: ...

    def image_disk_use_sync(self) -> ImagesDiskUse: ...

    def run_oneshot_sync(
        self,
        image: str,
        command: list[str],
        *,
        labels: dict[str, str],
        timeout: float,
        entrypoint: list[str] | None = None,
        user: str | None = None,
        cap_add: list[str] | None = None,
        no_new_privileges: bool = True,
        environment: dict[str, str] | None = None,
    ) -> OneshotResult: ...
