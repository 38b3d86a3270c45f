"""One owner for the objects a server shares: the backend and the placement of kernels on it, the
GPU inventory and the sampler of its use per kernel, the readiness probe, pulls and scheduled
pre-pulls, registry credentials, the image catalog, the admin's policy, the host state directory
and the warm pool.

The extension app (app.py) builds one :class:`Services` when the server starts, and closes it
when the server stops: every thread pool shut down, the host-state locks released. It reaches

- handlers through the web application's settings (``self.settings["gpu_containers"]``);
- everything else (provisioners, the kernel spec manager, recovery) through :func:`services_for`,
  the one lookup: the server's web application settings, found from the object's ``parent``
  chain (a provisioner's parents are its kernel manager, the multi-kernel manager, the server).

Outside a server (nbclient, VS Code through ``install-kernelspec``, the command line) there is no
server to own them: :func:`services_for` then answers None, and the caller builds a Services of its
own and closes it when done.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Protocol, TypeVar

from traitlets import Enum
from traitlets.config import Configurable

from .backends.backend import ContainerBackend
from .base import labels as L
from .base.records import ContainerRecord
from .base.references import normalize_reference
from .gpus.allocator import GPUAllocator, GPUVisibility, forget_holding
from .gpus.gpu_usage import GPUUsage
from .gpus.gpuqueue import GPUQueue
from .gpus.inventory import GPUInventory
from .gpus.quota import GPUQuota
from .gpus.reclaim import GPUReclaim
from .host.hoststate import StateDir, open_state_dir
from .images.catalog import ImageCatalog
from .images.credentials import RegistryCredentials
from .images.prepull import PrePuller
from .images.probe import KernelReadinessProbe
from .images.pulls import PullManager
from .images.saves import ImageSaves
from .placement.batch import BatchPlacement
from .placement.cluster import ClusterPlacement
from .placement.host import HostPlacement
from .placement.placement import Placement
from .policy.admin_policy import ContainerPolicy

SETTINGS_KEY = "gpu_containers"


class Worker(Protocol):
    """Something that works on these services in the background until stopped (the reclaimer,
    the admin desk's watch, the warm pool: built above this layer, by the app)."""

    async def stop(self) -> None: ...


W = TypeVar("W", bound=Worker)


class ContainerEngine(Configurable):
    """Which engine a user's own Jupyter server runs kernels on (the kernel service names its
    own with ServiceApp.backend)."""

    backend = Enum(
        ["docker", "podman", "slurm"],
        "docker",
        config=True,
        help="""Where this server's kernels run: "docker", containers on the host's Docker
        engine (its user in the docker group, which is root on the host); "podman", the
        user's own rootless Podman: no docker group, no daemon (PodmanEngine configures it;
        `jupyter gpu-containers doctor` says what it needs); or "slurm", each kernel a Slurm
        job of the user, its container run by their rootless Podman on the node Slurm chose
        (SlurmBackend configures it; ContainerPolicy.connection_dir_root must then lie on the
        file system the nodes share; docs/slurm.md).""",
    )


class Services:
    """The shared objects of one server (or of one kernel, outside a server), configured from
    ``parent``'s configuration."""

    def __init__(self, parent: Configurable | None) -> None:
        self.parent = parent
        self.policy = ContainerPolicy(parent=parent)
        name = getattr(parent, "backend", None) or ContainerEngine(parent=parent).backend
        # A replica of the kernel service (its parent holds the right to act) uses the backend
        # it stood by with: what that followed and read while it waited is warm for its recovery.
        kept = getattr(getattr(parent, "active_replica", None), "backend", None)
        self.backend: ContainerBackend = (
            kept if isinstance(kept, backend_class(name)) else backend_class(name)(parent=parent)
        )
        # An engine with no local image store of its own (a cluster's nodes pull) offers the
        # administrator's listed images, pulled with the administrator's registry logins.
        self.backend.use_images(self.listed_images, self._admin_auth)
        self.inventory = GPUInventory(parent=parent)
        # GPU use per kernel over the last minutes (started by the app with the server's kernels).
        self.usage = GPUUsage(self.inventory, parent=parent)
        # Idle GPUs given back: the policy and each kernel's state (driven by reclaimer.py).
        self.reclaim = GPUReclaim(parent=parent)
        self.allocator = GPUAllocator(parent=parent)
        # The host-wide GPU wait queue; this process's waiting starts.
        self.queue = GPUQueue(parent=parent, backend=self.backend)
        self.visibility = GPUVisibility(parent=parent)
        self.catalog = ImageCatalog(parent=parent)
        self.probe = KernelReadinessProbe(parent=parent, backend=self.backend, policy=self.policy)
        self.credentials = RegistryCredentials(parent=parent)
        self.pulls = PullManager(
            parent=parent,
            backend=self.backend,
            credentials=self.credentials,
            policy=self.policy,
            state=lambda: self.state,
        )
        # Kernels' environments saved as their users' own images.
        self.saves = ImageSaves(
            parent=parent, backend=self.backend, policy=self.policy, state=lambda: self.state
        )
        self.saves.probe = self.probe
        # The administrator's scheduled pulls and pruning (started and stopped by the app), and
        # the record of each image's last launch.
        self.prepull = PrePuller(
            parent=parent,
            backend=self.backend,
            pulls=self.pulls,
            policy=self.policy,
            listed=self.listed_images,
            state=lambda: self.state,
        )
        # GPU-hours per user and group: the engine tells it of every container it removes.
        self.quota = GPUQuota(parent=parent, backend=self.backend, state=lambda: self.state)
        self.backend.on_removed = self._removed
        # Where kernels go and which GPUs they get, chosen here once for the engine (as
        # placement_class says).
        self.placement: Placement
        chosen = placement_class(self.backend)
        if chosen is BatchPlacement:
            self.placement = BatchPlacement(
                parent=parent, backend=self.backend, allocator=self.allocator
            )
        elif chosen is ClusterPlacement:
            self.placement = ClusterPlacement(
                parent=parent, backend=self.backend, allocator=self.allocator
            )
        else:
            self.placement = HostPlacement(
                parent=parent,
                backend=self.backend,
                inventory=self.inventory,
                allocator=self.allocator,
                visibility=self.visibility,
                queue=self.queue,
                quota=self.quota,
                policy=self.policy,
                state=lambda: self.state,
            )
        # Set by the app once recovery is done (None: no warm pool).
        self.warm_pool: Any = None
        # What the app started on these services, in the order it did (keep): stopped in that
        # order by stop, before close.
        self._workers: list[Worker] = []
        self._state: StateDir | None = None
        self._state_lock = threading.Lock()
        self._server_ids: dict[str, str] = {}

    def _removed(self, record: ContainerRecord, at: float) -> None:
        """The engine removed ``record``'s container (Engine.on_removed, its removing thread):
        its GPU-hours end (quota.py) and its holder record goes (allocator.forget_holding)."""
        self.quota.record_removal(record, at)
        if record.labels.get(L.GPUS):
            forget_holding(self.state, record.id)

    @property
    def state(self) -> StateDir:
        """The host state directory, opened and verified on first use (a few system calls:
        start-up, or a worker thread)."""
        with self._state_lock:
            if self._state is None:
                self._state = open_state_dir(
                    self.policy.state_dir,
                    self.policy.state_dir_owner,
                    per_user=not self.backend.containers_shared,
                )
            return self._state

    def server_id(self, root_dir: str) -> str:
        """This process's server id for a workspace, claimed in the host state directory (the
        configured ContainerPolicy.server_id, else the user's uid and the workspace). Blocking the
        first time: start-up or a worker thread."""
        wanted = self.policy.server_id or L.default_server_id(os.getuid(), root_dir)
        with self._state_lock:
            found = self._server_ids.get(wanted)
        if found is None:
            found = self.state.claim_or_fallback(wanted)
            with self._state_lock:
                self._server_ids[wanted] = found
        return found

    def _admin_auth(self, registry: str) -> dict[str, str] | None:
        credential = self.credentials.admin_credential(registry)
        return credential.auth_config() if credential is not None else None

    def listed_images(self) -> list[str]:
        """The references the administrator lists for everyone (ImageCatalog)."""
        return [entry["image"] for entry in self.catalog.listed()]

    def listed_entry(self, ref: str) -> dict[str, Any] | None:
        """The administrator's list entry for ``ref`` (ImageCatalog), None if it is not listed."""
        wanted = normalize_reference(ref)
        for listed in self.catalog.listed():
            if listed["image"] == wanted:
                return listed
        return None

    def keep(self, worker: W) -> W:
        """Own ``worker`` from now on: :meth:`stop` stops it."""
        self._workers.append(worker)
        return worker

    async def stop(self) -> None:
        """Stop every worker kept, in the order kept (the reclaimer first: no kernel is restarted
        for it from now on), the warm pool no longer offered to launches, then the scheduled
        pre-pulls (pulls under way end in the pull manager). The server then shuts its kernels
        down through these services, and :meth:`close` ends the rest."""
        self.warm_pool = None
        workers, self._workers = self._workers, []
        for worker in workers:
            await worker.stop()
        await self.prepull.stop()

    def close(self) -> None:
        """Shut every thread pool down and release the host-state locks. Containers are the
        kernels' own: they are not touched here."""
        self.usage.close()
        self.probe.close()
        self.pulls.close()  # before the backend: a pull's thread ends on its closed stream
        self.saves.close()
        self.backend.close()
        with self._state_lock:
            if self._state is not None:
                self._state.close()
                self._state = None


def backend_class(name: str) -> type[ContainerBackend]:
    """The backend a configuration names (``backend``: "docker", "podman", "kubernetes" or
    "slurm"),
    imported only when named (a Docker host needs no Kubernetes client; a user's server whose
    kernels live behind a kernel service builds no Services, and must not need the docker
    package)."""
    if name == "kubernetes":
        from .backends.kubernetes.k8s import KubernetesBackend

        return KubernetesBackend
    if name == "podman":
        from .backends.podman.engine import PodmanEngine

        return PodmanEngine
    if name == "slurm":
        from .backends.slurm.backend import SlurmBackend

        return SlurmBackend
    from .backends.docker.engine import Engine

    return Engine


def placement_class(
    backend: ContainerBackend | type[ContainerBackend],
) -> type[HostPlacement] | type[ClusterPlacement]:
    """How kernels are placed on ``backend`` (a backend, or its class): the one place that asks
    whether the engine's scheduler places GPUs, and whether it runs kernels as jobs on nodes
    that share this host's files (BatchPlacement is a ClusterPlacement)."""
    if not backend.schedules_gpus:
        return HostPlacement
    return BatchPlacement if backend.kernels_on_shared_nodes else ClusterPlacement


def services_for(owner: Any) -> Services | None:
    """The server's Services, found from ``owner`` (a provisioner, a kernel manager, a kernel spec
    manager, the server app) and its parents; None outside a server."""
    seen = 0
    while owner is not None and seen < 8:
        web_app = getattr(owner, "web_app", None)
        settings = getattr(web_app, "settings", None)
        if isinstance(settings, dict):
            found = settings.get(SETTINGS_KEY)
            if isinstance(found, Services):
                return found
        owner = getattr(owner, "parent", None)
        seen += 1
    return None
