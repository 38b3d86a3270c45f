"""The labels that make a container our record, and which server owns it.

Design decision 1 (DESIGN.md): the Docker engine is the source of truth. Every kernel container
carries these labels; reattach, orphan sweeps and the GPU ledger are rebuilt from them, so several
Jupyter servers on one host share one truth. The connection key is never a label (labels are
world-readable through ``docker inspect``).

Whether a container's server is alive is asked of the server *id* (hoststate.py: a lock only that
server's user can hold), and of the process that created the container: a restarted server that
reattached a kernel is its owner now, although the container's (immutable) labels still name the
process that died; and a server that uses another state directory is still alive while its
process runs. A container is garbage only when both say so.

Labels are evidence, not authority: anyone in the docker group can create a container with any
labels. No label is ever taken as a path to read or delete (privatedirs.py), and none is trusted
to hold the connection key.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass

PREFIX = "org.jupyter.gpu-containers."
MANAGED = PREFIX + "managed"
KERNEL_ID = PREFIX + "kernel-id"
KERNEL_NAME = PREFIX + "kernel-name"
SERVER_ID = PREFIX + "server-id"
# Which host state directory the server that made it registers in (StateDir.identity): its
# servers' liveness is recorded there, and nowhere else.
STATE_DIR = PREFIX + "state-dir"
OWNER_PROCESS = PREFIX + "owner-process"
USER = PREFIX + "user"
UID = PREFIX + "uid"
NOTEBOOK = PREFIX + "notebook"
CWD = PREFIX + "cwd"
IMAGE = PREFIX + "image"
# The digest of IMAGE's repository the kernel runs instead (its notebook's pin); absent: none.
IMAGE_PIN = PREFIX + "image-pin"
CONNECTION_DIR = PREFIX + "connection-dir"
TRANSPORT = PREFIX + "transport"
GPUS = PREFIX + "gpus"  # comma-separated UUIDs the kernel holds ("" for none)
# On a backend whose scheduler places GPUs (Kubernetes): how many the kernel asked for, and as
# which resource; the node the scheduler chose is in its record (k8s.py), never a label.
GPU_COUNT = PREFIX + "gpu-count"
GPU_RESOURCE = PREFIX + "gpu-resource"
PROBE = PREFIX + "probe"  # "true" on readiness-probe containers, which never carry MANAGED
# On warm-pool containers (warmpool.py): the id of the pool that started them. Their KERNEL_ID is
# the pool's own; once handed over, the kernel they serve is named by the claim record in their
# private directory (labels cannot change after creation).
POOL = PREFIX + "pool"

# On an image a user saved (images/saves.py): its lineage, for the catalog to show. Evidence,
# not authority, as every label: whose it is is the private record's (privateimages.py).
SAVED_FROM = PREFIX + "saved-from"  # the reference the kernel ran
SAVED_FROM_ID = PREFIX + "saved-from-id"  # that image's id
SAVED_FROM_DIGEST = PREFIX + "saved-from-digest"  # its registry digest, "" when none
SAVED_AT = PREFIX + "saved-at"  # RFC 3339
BUILT_FROM_RECIPE = PREFIX + "built-from-recipe"  # a build's recipe, its path in the workspace
# The build (its id) whose step containers carry it (images/builder.py); its image carries it
# too (the engine's commit merges a container's labels into the image's): an image key, the
# service's own, never read as a record.
BUILD = PREFIX + "build"


# The keys an image may carry because this project wrote them there (a save's or build's
# lineage): shown in the catalog, never read from a container.
IMAGE_KEYS = frozenset(
    {SAVED_FROM, SAVED_FROM_ID, SAVED_FROM_DIGEST, SAVED_AT, BUILT_FROM_RECIPE, BUILD}
)
# The keys read from a container as this project's record of it (the ledger, reattach, sweeps,
# the kernel's view). An image that carries one was made to pass for a record: refused at every
# admission (image_record_labels), and never in force on a container (container_labels).
RECORD_KEYS = frozenset(
    {
        MANAGED,
        KERNEL_ID,
        KERNEL_NAME,
        SERVER_ID,
        STATE_DIR,
        OWNER_PROCESS,
        USER,
        UID,
        NOTEBOOK,
        CWD,
        IMAGE,
        IMAGE_PIN,
        CONNECTION_DIR,
        TRANSPORT,
        GPUS,
        GPU_COUNT,
        GPU_RESOURCE,
        PROBE,
        POOL,
    }
)


def container_labels(own: dict[str, str], image_labels: dict[str, str] | None) -> dict[str, str]:
    """The labels to create a container with: ``own`` (what this service decided), and every
    key of this project's namespace that the container's image carries and ``own`` does not
    set, set to "". The engines (Docker, Podman) merge an image's labels into its containers'
    and a container's own win: without this, a student's ``LABEL org.jupyter.gpu-containers.
    gpus=…`` would be a probe's or a kernel's record (issue 61). Every backend's one place that
    creates containers calls it with the labels its inspect of the image gave."""
    labels = dict(own)
    for key in image_labels or {}:
        if key.startswith(PREFIX) and key not in labels:
            labels[key] = ""
    return labels


def image_record_labels(image_labels: dict[str, str] | None) -> list[str]:
    """The keys of ``image_labels`` that only a container record of this project may carry
    (RECORD_KEYS), sorted: an image with any is refused (kernel/admission.py, the readiness
    probe, pulls)."""
    return sorted(key for key in image_labels or {} if key in RECORD_KEYS)


def default_server_id(uid: int, root_dir: str) -> str:
    """A stable id for "this user's server on this workspace", the same after a restart.

    A server restarted after a crash reattaches to containers carrying its id. Two servers that
    share an id are told apart by OWNER_PROCESS: a live owner's kernels are never adopted.
    """
    digest = hashlib.sha256(f"{uid}\0{os.path.realpath(root_dir)}".encode()).hexdigest()[:12]
    return f"{uid}-{digest}"


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "unknown-boot"


def _process_start_time(pid: int) -> str | None:
    """Clock ticks since boot at which ``pid`` started; tells a live owner from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22, counted after the parenthesised command name, which may itself contain spaces.
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass(frozen=True)
class OwnerProcess:
    """Host, boot, pid and start time of the Jupyter server process that owns a container."""

    host: str
    boot: str
    pid: int
    start: str

    @classmethod
    def current(cls) -> OwnerProcess:
        pid = os.getpid()
        return cls(socket.gethostname(), _boot_id(), pid, _process_start_time(pid) or "0")

    def token(self) -> str:
        return f"{self.host}/{self.boot}/{self.pid}/{self.start}"

    def is_alive(self) -> bool:
        """Whether this process still runs (on this host, since this boot, the same process and
        not a later one that reuses its pid). Another host's processes cannot be judged: True."""
        me = OwnerProcess.current()
        if self.host != me.host:
            return True
        if self.boot != me.boot:
            return False
        return _process_start_time(self.pid) == self.start

    @classmethod
    def parse(cls, token: str) -> OwnerProcess | None:
        parts = token.split("/")
        if len(parts) != 4 or not parts[2].isdigit():
            return None
        return cls(parts[0], parts[1], int(parts[2]), parts[3])
