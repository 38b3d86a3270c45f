"""What a container backend deals in: the description of a kernel's container, and the records of
containers and images as a backend reports them.

Backend-neutral: the launch plan builds a :class:`ContainerSpec`, a backend (backends/docker/,
the Docker one) runs it, and the allocator, recovery, catalog and probe read
:class:`ContainerRecord` and :class:`ImageRecord`. No module here imports a backend's client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, overload


@overload
def iso_time(unix: float) -> str: ...
@overload
def iso_time(unix: None) -> None: ...
@overload
def iso_time(unix: float | None) -> str | None: ...
def iso_time(unix: float | None) -> str | None:
    """A unix time as ISO 8601 in UTC, to the second: how the REST API gives times (None stays
    None)."""
    if unix is None:
        return None
    return datetime.fromtimestamp(unix, timezone.utc).isoformat(timespec="seconds")


# Where a kernel's private directory (its connection file, its /etc/passwd and /etc/group) is
# mounted in its container, and its connection file's name there: the launch plan writes them,
# and a backend that delivers the connection another way (a Secret, a job's node) finds them.
KERNEL_DIR_IN_CONTAINER = "/run/jupyter-kernel"
CONNECTION_FILE_NAME = "kernel.json"
# A kernel's ports, by their names in its connection file.
PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
# A kernel on a node other accounts reach (a Slurm job's) binds ipc in its private directory, and
# the channel relay beside it (kernel/channel_relay.py, copied there as RELAY_SCRIPT_NAME, its
# keys and the kernel's endpoints in RELAY_CONFIG_NAME) binds the node's tcp ports as a CurveZMQ
# server, and writes them into RELAY_PORTS_NAME: the one file the backend reads them from.
RELAY_SCRIPT_NAME = "channel-relay.py"
RELAY_CONFIG_NAME = "channel-relay.json"
RELAY_PORTS_NAME = "channel-relay-ports.json"


@dataclass(frozen=True)
class ImageRecord:
    """What the engine knows about one local image (from ``docker image inspect``)."""

    id: str
    tags: tuple[str, ...]
    labels: dict[str, str]
    env: dict[str, str]
    entrypoint: tuple[str, ...]
    user: str
    created: str
    size: int
    # "repo@sha256:…" as the registries it came from name it; empty for locally built images.
    repo_digests: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageDiskUse:
    """One local image's disk use, as the engine's ``system df`` reports it. ``shared_size``:
    bytes of layers other local images use too; ``containers``: how many containers (any state)
    use it. Either is -1 where the engine did not compute it."""

    id: str
    tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    size: int
    shared_size: int
    containers: int

    @property
    def unique_size(self) -> int:
        """Bytes removing this image alone would free (its size when sharing is unknown)."""
        return self.size - max(self.shared_size, 0)


@dataclass(frozen=True)
class ImagesDiskUse:
    """Every local image's disk use, and the bytes all image layers take (shared ones once)."""

    images: tuple[ImageDiskUse, ...]
    layers_size: int


@dataclass(frozen=True)
class ContainerRecord:
    """A container as listed by the engine, with the labels that make it our record."""

    id: str
    name: str
    image: str
    labels: dict[str, str]
    status: str  # created, running, exited, dead, ...
    created: float = 0.0  # unix time


@dataclass(frozen=True)
class ContainerState:
    """The parts of ``State`` from ``docker inspect`` that the provisioner acts on."""

    status: str
    running: bool
    exit_code: int
    oom_killed: bool
    error: str

    @property
    def ended(self) -> bool:
        return self.status in ("exited", "dead")


@dataclass(frozen=True)
class OneshotResult:
    """What a one-shot container printed, and how it ended (see Engine.run_oneshot_sync)."""

    exit_code: int  # -1 when it never ended by itself (timed out)
    stdout: str
    stderr: str
    timed_out: bool
    # The content id ("sha256:…") of the image the container actually ran, where the backend
    # knows it ("" otherwise): on Kubernetes a reference is resolved by the node, and what it
    # ran is known only once the pod's container exists.
    image_id: str = ""


@dataclass
class Mount:
    source: str
    target: str
    read_only: bool = True


@dataclass
class ContainerSpec:
    """Everything one container-create call needs; built by the launch plan, never by a user."""

    image: str
    command: list[str]
    name: str
    labels: dict[str, str]
    environment: dict[str, str]
    user: str | None = None
    working_dir: str | None = None
    mounts: list[Mount] = field(default_factory=list)
    tmpfs: dict[str, str] = field(default_factory=dict)
    shm_size: str | None = None
    ulimits: dict[str, tuple[int, int]] = field(default_factory=dict)
    runtime: str | None = None
    network_mode: str = "bridge"
    mem_limit: str | None = None
    pids_limit: int | None = None
    init: bool = True
    # None keeps the image's ENTRYPOINT; [] clears it.
    entrypoint: list[str] | None = None
    # docker.types.DeviceRequest keyword arguments (GPUs through --gpus or CDI).
    device_requests: list[dict[str, Any]] = field(default_factory=list)
    # container port -> (host address, host port); addresses are always loopback.
    port_bindings: dict[int, tuple[str, int]] = field(default_factory=dict)
    # Hardened unless the launch plan says otherwise: no capabilities but those given back, and
    # no privileges gained through setuid binaries.
    cap_add: list[str] = field(default_factory=list)
    no_new_privileges: bool = True
    read_only: bool = False
    # Log rotation: a notebook printing in a loop cannot fill the disk.
    log_max_size: str = "10m"
    log_max_files: int = 3
    # The GPUs (UUIDs) booked for the container: how they reach it is runtime/environment/
    # device_requests above (Docker).
    gpus: tuple[str, ...] = ()
    # How many GPUs a backend that schedules GPUs itself (Kubernetes) must find for it, and as
    # which resource ("": the backend's default).
    gpu_count: int = 0
    gpu_resource: str = ""
