"""The Docker backend (backend.py's interface): ``Engine``, the one class the rest of the package
knows the Docker engine by, holding its configuration and delegating to the modules beside it.

Everything in this folder is a thin, typed wrapper around docker-py's low-level ``APIClient``
(client.py). Every public coroutine runs its docker-py call on a small thread pool, so a slow or
wedged daemon never blocks the Jupyter server's event loop (the kernel restarter polls every few
seconds, and the REST API must keep answering). docker-py errors are translated in this folder,
once, into the sentences of :mod:`jupyter_gpu_containers.base.errors`; no other folder imports
docker.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import docker
from traitlets import Float, Int, Unicode, default
from traitlets.config import LoggingConfigurable

from ...base.errors import ContainerKernelError, EngineRefused
from ...base.records import (
    ContainerRecord,
    ContainerSpec,
    ContainerState,
    ImageRecord,
    ImagesDiskUse,
    OneshotResult,
)
from ..backend import ContainerDetails, Dataset, Finding
from . import containers, logs
from .build_steps import DockerBuildSteps
from .client import DEFAULT_SOCKET, EngineClient
from .container_index import ContainerIndex
from .event_window import EngineEvents
from .images import Images
from .logs import FollowedLog
from .networks import KernelNetworks
from .oneshot import run_oneshot
from .pulls import PullStream, open_pull
from .removals import Removals

T = TypeVar("T")

# How long the engine's runtimes are taken as known. Every GPU start asks for them (to choose how
# GPUs reach its container, allocator.resolve_attach_mode), and the call that answers, `docker
# info`, is one of the engine's slowest: a runtime an administrator adds (daemon.json, then a
# reload of the engine) is seen by the starts after this many seconds.
RUNTIMES_KNOWN_FOR = 30.0


class Engine(LoggingConfigurable):
    """Handle on one Docker engine: the server's (services.py), shared by its provisioners,
    kernel specs, probe, pulls and handlers; one connection pool and one thread pool."""

    docker_url = Unicode(
        "",
        config=True,
        help="""Where the Docker engine listens, e.g. unix:///var/run/docker.sock or
        tcp://127.0.0.1:2375 (plain: pulls speak to no TLS or ssh:// address, and say so).
        Empty means what the docker CLI would use: DOCKER_HOST when set, else the default local
        socket.""",
    )

    api_timeout = Float(
        60.0,
        config=True,
        help="""Seconds to wait for one Docker API call before giving up. Container creation and
        removal on a loaded host can take several seconds; image pulls are not bound by this.""",
    )

    max_workers = Int(
        8,
        config=True,
        help="""Threads that run Docker API calls off the event loop. Bounds how many engine
        calls this server has in flight at once.""",
    )

    removal_retry_interval = Float(
        2.0,
        config=True,
        help="""Seconds between attempts to remove kernel containers whose removal failed
        because the engine could not be reached (see Engine.remove_or_defer).""",
    )

    resolved_url = Unicode(help="The engine address actually used (for error sentences).")

    @default("resolved_url")
    def _default_resolved_url(self) -> str:
        return self.docker_url or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._client = EngineClient(self)
        self._events = EngineEvents(
            self._client, local=self.resolved_url.startswith(("unix://", "http+unix://"))
        )
        self._images = Images(self._client, self._events)
        self._removals = Removals(self._client, self)
        self._index = ContainerIndex(self._client, self._events)
        self._runtimes: tuple[float, list[str]] | None = None  # (when asked, the names)
        self._build_steps = DockerBuildSteps(self._client)
        self._networks = KernelNetworks()

    # ------------------------------------------------------------------ plumbing

    def call(self, fn: Callable[[docker.APIClient], T]) -> T:
        """Run ``fn(client)`` here, in the calling thread, translating transport failures."""
        return self._client.call(fn)

    async def run(self, fn: Callable[[docker.APIClient], T]) -> T:
        """Run ``fn(client)`` on the engine thread pool: the only way async code reaches Docker."""
        return await self._client.run(fn)

    def use_images(
        self,
        listed: Callable[[], list[str]],
        pull_auth: Callable[[str], dict[str, str] | None],
    ) -> None:
        """The engine lists its own images, and pulls with the logins each pull is given."""

    def close(self) -> None:
        self.wake_watchers()
        self._events.close()
        self._removals.close()  # the removal retrier stops (what it had left stays labelled)
        self._build_steps.close()
        self._client.close()

    # ------------------------------------------------------------------ engine

    async def version(self) -> str:
        info = await self.run(lambda c: c.version())
        return str(info.get("Version", "unknown"))

    @classmethod
    def kernel_service_problem(cls) -> str:
        return ""  # the engine runs a container's processes as any uid it is given

    @classmethod
    def active_replica(cls, parent: Any) -> None:
        return None  # one service per host: its unit restarts it, and it reattaches

    def diagnose_sync(self) -> list[Finding]:
        """Whether the engine answers, and how GPUs would reach its containers."""
        try:
            info = self.call(lambda c: c.info())
        except ContainerKernelError as e:
            return [
                Finding(e.sentence, problem=True, blocking=True),
                Finding(
                    "Without the docker group, your own rootless Podman can run your kernels: "
                    "set ContainerEngine.backend = 'podman' (`jupyter gpu-containers doctor "
                    "--ContainerEngine.backend=podman` says what it needs here)."
                ),
            ]
        findings = [
            Finding(
                f"The Docker engine answers at {self.resolved_url} (Docker "
                f"{info.get('ServerVersion', 'unknown')}). Its users are root on this host by "
                "another road: ContainerEngine.backend = 'podman' needs no docker group."
            )
        ]
        runtimes = sorted((info.get("Runtimes") or {}).keys())
        if "nvidia" in runtimes:
            findings.append(Finding("GPUs reach containers through the nvidia runtime."))
        else:
            findings.append(
                Finding(
                    f"The engine has no runtime named nvidia (it has {', '.join(runtimes)}): "
                    "GPUs reach containers through device requests, which need NVIDIA's "
                    "Container Toolkit (`sudo nvidia-ctk runtime configure --runtime=docker`).",
                    problem=True,
                )
            )
        return findings

    async def runtimes(self) -> list[str]:
        """Names of the container runtimes the engine offers (e.g. runc, nvidia), as the engine
        said them at most RUNTIMES_KNOWN_FOR seconds ago."""
        known = self._runtimes
        if known is not None and time.monotonic() - known[0] < RUNTIMES_KNOWN_FOR:
            return list(known[1])
        asked = time.monotonic()
        info = await self.run(lambda c: c.info())
        names = sorted((info.get("Runtimes") or {}).keys())
        self._runtimes = (asked, names)
        return list(names)

    # ------------------------------------------------------------------ images

    def list_images_sync(self) -> list[ImageRecord]:
        """Every tagged local image, inspected. Blocking: call from a worker thread only."""
        return self._images.list_sync()

    async def list_images(self) -> list[ImageRecord]:
        return await self._client.in_pool(self.list_images_sync)

    def inspect_image_sync(self, ref: str) -> ImageRecord:
        return self._images.inspect_sync(ref)

    async def inspect_image(self, ref: str) -> ImageRecord:
        return await self._client.in_pool(functools.partial(self.inspect_image_sync, ref))

    def watch_images(self, on_change: Callable[[], None], stop: threading.Event) -> None:
        """Call ``on_change`` whenever an image is pulled, built, tagged or removed.

        Blocks on the engine's event stream until ``stop`` is set and :meth:`wake_watchers` is
        called (which closes the stream the thread waits on); meant for a thread of its own.
        Reconnects after engine restarts, with a short back-off.
        """
        self._images.watch(on_change, stop)

    def wake_watchers(self) -> None:
        """Close the event streams watch_images threads wait on (from any thread): those whose
        ``stop`` is set end at once; the others reconnect."""
        self._images.wake_watchers()

    # ------------------------------------------------------------------ pulls

    def open_pull(
        self, ref: str, tag: str, auth_config: dict[str, str] | None, *, registry: str, who: str
    ) -> PullStream:
        """Ask the engine to pull ``ref`` (repository) at ``tag`` (a tag or a digest); returns
        the progress stream. Blocking: a pull's own thread calls this.

        ``registry`` and ``who`` (the username, or "") only shape error sentences. Without
        ``auth_config`` no credentials are sent, not even the server user's docker CLI login:
        which credentials a pull uses is this server's configuration, nothing else.
        """
        return open_pull(self._client, ref, tag, auth_config, registry=registry, who=who)

    def build_refusal(self) -> str:
        return ""

    def build_steps(self) -> DockerBuildSteps:
        """The container primitives the service's own builder runs a build with
        (build_steps.py): the engine itself never builds."""
        return self._build_steps

    def tag_sync(self, image_id: str, ref: str) -> None:
        """Name the image ``image_id`` ``ref`` (a repository and a tag)."""
        self._images.tag_sync(image_id, ref)

    def untag_sync(self, ref: str) -> None:
        """Remove one tag (and the image, when it was its last tag and nothing uses it)."""
        self._images.untag_sync(ref)

    def image_disk_use_sync(self) -> ImagesDiskUse:
        """Every local image's size, shared size and container count (``docker system df``),
        the images only where the engine can leave the rest out (API 1.42). Blocking: a worker
        thread. docker-py's df() has no such parameter; its client is a requests session, so
        the same request is made through its public ``get``."""
        return self._images.disk_use_sync()

    # ------------------------------------------------------------------ containers

    async def create(self, spec: ContainerSpec) -> str:
        """Create one container (not started); returns its id."""
        return await self.run(
            functools.partial(containers.create, spec=spec, networks=self._networks)
        )

    async def start(self, container_id: str, image: str) -> None:
        """Start a created container. On a refused start, removes it and says why."""
        await self.run(functools.partial(containers.start, container_id=container_id, image=image))

    async def state(self, container_id: str) -> ContainerState | None:
        """The container's state, or None when the engine no longer knows it."""
        return await self.run(functools.partial(containers.state, container_id=container_id))

    async def kill(self, container_id: str, signum: int) -> None:
        await self.run(functools.partial(containers.kill, container_id=container_id, signum=signum))

    # Kernels' ports are published on the host's loopback; the host ledger books GPUs.
    schedules_gpus = False
    kernels_on_shared_nodes = False
    signals_reach_kernels = True
    tags_resolve_per_node = False
    pulls_report_bytes = True
    containers_shared = True
    images_shared = True
    cluster = None
    kept_allocations = None
    gpu_accounting = None
    kernel_datasets: tuple[Dataset, ...] = ()  # a kernel's data is its spec's extra mounts

    async def address(self, container_id: str) -> str:
        """Where a kernel's published ports are: this host's loopback."""
        return "127.0.0.1"

    async def connection_info(self, container_id: str) -> dict[str, Any]:
        raise EngineRefused(
            "A Docker kernel's connection file is in its private directory, not the engine's."
        )

    # Told of each container this engine removes (its record as listed just before, and when),
    # on the removing thread: quota.py remembers a GPU container's end from it, whichever path
    # removed it. None: nobody is told.
    on_removed: Callable[[ContainerRecord, float], None] | None = None

    async def remove(self, container_id: str) -> None:
        """Force-remove; tolerant of a container that is gone or already being removed."""
        await self._removals.remove(container_id)

    async def remove_or_defer(self, container_id: str) -> bool:
        """Remove now; or, when the engine cannot be reached, as soon as it can (a thread retries
        every ``removal_retry_interval`` seconds). False when deferred.

        A kernel container's labels are its GPU booking: one that outlives its kernel because
        the engine was away at that moment (a launch whose start was cut off, a shutdown during
        an outage) must go once the engine is back, not when this server exits.
        """
        return await self._removals.remove_or_defer(container_id)

    async def remove_deferred(self) -> None:
        """Remove at once what remove_or_defer left for later. The GPU launch path calls this
        before it reads the ledger, so that a booking left by an outage that just ended never
        refuses a launch. Raises EngineUnavailable while the engine is still away."""
        await self._removals.remove_deferred()

    def pending_reason_sync(self, container_id: str) -> tuple[str, float | None] | None:
        """Docker has no scheduler: a created container waits for nobody."""
        return None

    async def logs_tail(self, container_id: str, lines: int = 20) -> str:
        return await self.run(functools.partial(logs.tail, container_id=container_id, lines=lines))

    async def details(self, container_id: str) -> ContainerDetails | None:
        """What ``docker inspect`` says of a container, or None when the engine no longer knows
        it."""
        return await self.run(functools.partial(containers.details, container_id=container_id))

    def open_logs_sync(self, container_id: str, tail: int, follow: bool) -> FollowedLog | None:
        """The container's last ``tail`` lines, then (``follow``) each new line until the
        container stops or the stream is closed; None when the engine does not know the
        container. Blocking, and for as long as the container runs when following: a thread of
        the caller's own, not the engine's pool (a few open views would fill it)."""
        stream = self.call(
            functools.partial(logs.open_stream, container_id=container_id, tail=tail, follow=follow)
        )
        return None if stream is None else FollowedLog(stream)

    def list_containers_sync(self, labels: dict[str, str | None]) -> list[ContainerRecord]:
        """Containers (running or not) carrying all of ``labels`` (value None: any value)."""
        return self.call(functools.partial(containers.listed, labels=labels))

    async def list_containers(self, labels: dict[str, str | None]) -> list[ContainerRecord]:
        return await self._client.in_pool(functools.partial(self.list_containers_sync, labels))

    async def ledger_containers(self) -> list[ContainerRecord]:
        """The managed containers, for the GPU ledger: kept up to date from the engine's events
        (container_index.py), so a booking does not list every kernel on the host."""
        return await self._client.in_pool(self._index.read)

    @property
    def ledger_lists(self) -> int:
        """Full lists the ledger's index has taken (the first, and each it could not vouch for)."""
        return self._index.lists

    @property
    def ledger_watching(self) -> bool:
        """Whether the ledger's index watches the engine (and keeps its records between reads)."""
        return self._index.watching

    @property
    def disk_reports(self) -> int:
        """Disk reports taken from the engine (the first, and each its events could not spare)."""
        return self._images.disk_reports

    # ------------------------------------------------------------------ one-shot containers

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
    ) -> OneshotResult:
        """Run ``command`` in a throw-away container of ``image`` and return what it printed.

        Blocking, and for as long as ``timeout`` seconds: call from a worker thread only (not the
        engine's pool, which a few slow images would otherwise fill). The container only looks
        at its image: no network, no mounts, small memory and process limits. It is removed
        whatever happens; one still running after ``timeout`` is killed first, and the result
        says ``timed_out``. ``entrypoint``: None keeps the image's ENTRYPOINT, [] clears it;
        ``user``: None runs as the image's USER. Hardened like kernels: no capabilities but
        ``cap_add``, and no-new-privileges unless ``no_new_privileges`` is False.
        ``environment``: added to the image's.
        """
        return self.call(
            functools.partial(
                run_oneshot,
                log=self.log,
                image=image,
                command=command,
                labels=labels,
                timeout=timeout,
                entrypoint=entrypoint,
                user=user,
                cap_add=cap_add,
                no_new_privileges=no_new_privileges,
                environment=environment,
            )
        )
