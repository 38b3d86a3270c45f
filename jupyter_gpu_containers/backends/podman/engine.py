"""The Podman backend (backend.py's interface): ``PodmanEngine``, the one class the rest of the
package knows Podman by, holding its configuration and delegating to the modules beside it.

Podman runs as the server's own user: no daemon, no docker group. Each call is a ``podman``
command (cli.py says why) run on a small thread pool, so that the event loop never waits for one.
Rootless, the kernel runs as the user's own uid inside the container (``--userns=keep-id``), so
what it writes in the workspace belongs to the user. As root (a kernel service's engine), there is
one store and one set of containers for the host, as Docker's, and each kernel runs as the uid it
is given. What Podman cannot do here (a network of the container's own without /dev/net/tun,
limits under cgroups v1, ulimits above the account's own) is said once in the server's log, and
by ``jupyter gpu-containers doctor``.
"""

from __future__ import annotations

import functools
import getpass
import os
import resource
import threading
import time
from collections.abc import Callable
from typing import Any

from traitlets import Float, Int, List, Unicode, default
from traitlets.config import LoggingConfigurable

from ...base import labels as L
from ...base.errors import EngineRefused, EngineUnavailable, ImageMissing
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
from .build_steps import PodmanBuildSteps
from .cli import PodmanCLI
from .doctor import diagnose
from .images import Images
from .logs import FollowedLog
from .networks import KernelNetworks
from .oneshot import run_oneshot
from .pulls import PullStream, open_pull

# How long Podman's OCI runtime is taken as known (every GPU start asks: allocator.py).
RUNTIMES_KNOWN_FOR = 30.0

_RLIMITS = {
    "core": resource.RLIMIT_CORE,
    "cpu": resource.RLIMIT_CPU,
    "data": resource.RLIMIT_DATA,
    "fsize": resource.RLIMIT_FSIZE,
    "memlock": resource.RLIMIT_MEMLOCK,
    "nofile": resource.RLIMIT_NOFILE,
    "nproc": resource.RLIMIT_NPROC,
    "stack": resource.RLIMIT_STACK,
}


@functools.cache
def _can_raise_limits() -> bool:
    """Whether this process may raise a hard resource limit (CAP_SYS_RESOURCE, bit 24 of its
    effective capabilities): root on a host, usually; not a rootless user, nor root in a
    container that dropped it. Read once: a process's capabilities do not grow."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> 24 & 1)
    except (OSError, ValueError):
        pass
    return False


def _own_hard_limit(name: str) -> int:
    """This process's hard limit ``name`` as a container it starts can have it. The process
    limit is also bounded by the host's pid_max: Podman 4.3 as root starts conmon, whose
    children runc and the container inherit its limits, with pid_max as that limit (measured:
    32768 with the user's own at 96365)."""
    hard = resource.getrlimit(_RLIMITS[name])[1]
    if name == "nproc":
        pid_max = _pid_max()
        if pid_max and (hard == resource.RLIM_INFINITY or hard > pid_max):
            return pid_max
    return hard


@functools.cache
def _pid_max() -> int:
    try:
        with open("/proc/sys/kernel/pid_max", encoding="ascii") as found:
            return int(found.read().strip())
    except (OSError, ValueError):
        return 0


def tun_usable() -> bool:
    """Whether this user may open /dev/net/tun, which slirp4netns needs to give a rootless
    container a network of its own."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return True


class PodmanEngine(LoggingConfigurable):
    """Handle on the server user's own rootless Podman: the server's (services.py), shared by its
    provisioners, kernel specs, probe, pulls and handlers."""

    podman_command = List(
        Unicode(),
        ["podman"],
        config=True,
        help="""The command that runs Podman, as a list (["podman"], or a full path). It runs as
        the Jupyter server's user, with the server's environment (XDG_RUNTIME_DIR says where the
        user's Podman keeps its runtime state).""",
    )

    api_timeout = Float(
        60.0,
        config=True,
        help="""Seconds one podman command may take before it is given up (pulls and followed
        logs are not bound by this).""",
    )

    max_workers = Int(
        8,
        config=True,
        help="""Threads that run podman commands off the event loop: how many this server has
        running at once.""",
    )

    network = Unicode(
        "auto",
        config=True,
        help="""The network a kernel that asks for the default one ("bridge") gets; as root (a
        kernel service) one that keeps users' kernels from reaching each other. "auto":
        slirp4netns (a network of the container's own, which nothing else on the host reaches,
        and which needs neither root nor the host's firewall tools) where /dev/net/tun can be
        opened; else, rootless, "host" (the container shares the host's network, as a kernel
        run without a container would; the server's log says so once), and as root the start
        is refused. "bridge" (or "podman"): Podman's default network rootless; as root, a
        network per user (jupyter-gpu-containers-kernels-<uid>, made with isolate=true, so a
        user's kernels reach each other and no one else's; it needs iptables). Or a Podman
        network mode: "slirp4netns", "none", "host" (every kernel on the host's network: any
        account on the host reaches what a kernel serves), or, rootless only, a named network
        (as root it is refused: Podman keeps no containers of one network apart).""",
    )

    userns = Unicode(
        help="""The user namespace of kernel containers. Default: "keep-id" when Podman runs
        rootless (the user's own uid inside, so files in the workspace are the user's), ""
        (Podman's default) when it runs as root.""",
    ).tag(config=True)

    @default("userns")
    def _default_userns(self) -> str:
        return "keep-id" if os.geteuid() != 0 else ""

    insecure_registries = List(
        Unicode(),
        config=True,
        help="""Registries (host[:port]) that Podman pulls from without TLS verification (plain
        HTTP, or a certificate it cannot check), e.g. a lab's own registry on 127.0.0.1:5000.
        Docker trusts 127.0.0.0/8 so by default; Podman trusts none.""",
    )

    resolved_url = Unicode(help="Which Podman this is, for sentences.")

    @default("resolved_url")
    def _default_resolved_url(self) -> str:
        command = " ".join(self.podman_command)
        return f"{command} (rootless, as {getpass.getuser()})" if os.geteuid() else command

    # Kernels are reached through their private directory (ipc) or this host's loopback; the
    # host ledger books GPUs (over the containers this user's Podman shows: its own).
    schedules_gpus = False
    kernels_on_shared_nodes = False
    signals_reach_kernels = True
    tags_resolve_per_node = False
    pulls_report_bytes = False  # one line per layer (pulls.py)
    cluster = None
    kept_allocations = None
    gpu_accounting = None
    kernel_datasets: tuple[Dataset, ...] = ()  # a kernel's data is its spec's extra mounts

    @property
    def rootless(self) -> bool:
        return os.geteuid() != 0

    # Rootless: the user's own storage and containers. What a pull with their own login brings
    # is theirs alone already, and the ledger its containers' labels make covers their kernels
    # only. As root (a kernel service), one store and one set of containers for the host, as
    # Docker's: its labels make the host-wide ledger, and a user's private pull is recorded.
    @property
    def containers_shared(self) -> bool:
        return not self.rootless

    @property
    def images_shared(self) -> bool:
        return not self.rootless

    @classmethod
    def kernel_service_problem(cls) -> str:
        if os.geteuid() == 0:
            return ""
        return (
            f"A kernel service runs each user's kernels as that user, which rootless Podman "
            f"(as {getpass.getuser()}) cannot: its containers' other uids are subordinate ids "
            "of its own, so the users' files would belong to neither them nor you. Run the "
            "service as root (Podman as root), or let each user run kernels on their own "
            "rootless Podman from their own Jupyter server (ContainerEngine.backend)."
        )

    @classmethod
    def active_replica(cls, parent: Any) -> None:
        return None  # one service per host: its unit restarts it, and it reattaches

    on_removed: Callable[[ContainerRecord, float], None] | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cli = PodmanCLI(self)
        self._networks = KernelNetworks(self._cli)
        self._images = Images(self._cli)
        self._runtimes: tuple[float, list[str]] | None = None
        self._lock = threading.Lock()
        # Containers create() started (start() has nothing to do for them), and running
        # containers' conmon pids (state()): both forgotten when the container goes.
        self._started_on_create: set[str] = set()
        self._conmons: dict[str, int] = {}
        self._said: set[str] = set()  # what the log was told once
        self._said_lock = threading.Lock()
        self._build_steps: PodmanBuildSteps | None = None

    def _say_once(self, key: str, sentence: str) -> None:
        with self._said_lock:
            if key in self._said:
                return
            self._said.add(key)
        self.log.warning("%s", sentence)

    def use_images(
        self,
        listed: Callable[[], list[str]],
        pull_auth: Callable[[str], dict[str, str] | None],
    ) -> None:
        """Podman lists its own images, and pulls with the logins each pull is given."""

    def close(self) -> None:
        self.wake_watchers()
        self._cli.close()

    # ------------------------------------------------------------------ engine

    async def version(self) -> str:
        found = await self._cli.json_async(["version", "--format", "json"], what="say its version")
        client = (found or {}).get("Client") or {}
        return str(client.get("Version") or "unknown")

    def diagnose_sync(self) -> list[Finding]:
        """What rootless Podman needs that this host or user lacks (doctor.py)."""
        return diagnose(self._cli, network=self.network, tun_usable=tun_usable())

    async def runtimes(self) -> list[str]:
        """The OCI runtime Podman runs containers with (runc, crun; "nvidia" where configured)."""
        known = self._runtimes
        if known is not None and time.monotonic() - known[0] < RUNTIMES_KNOWN_FOR:
            return list(known[1])
        asked = time.monotonic()
        info = await self._cli.json_async(["info", "--format", "json"], what="describe itself")
        runtime = (((info or {}).get("host") or {}).get("ociRuntime") or {}).get("name") or ""
        names = [str(runtime)] if runtime else []
        self._runtimes = (asked, names)
        return list(names)

    # ------------------------------------------------------------------ images

    def list_images_sync(self) -> list[ImageRecord]:
        return self._images.list_sync()

    async def list_images(self) -> list[ImageRecord]:
        return await self._cli.in_pool(self.list_images_sync)

    def inspect_image_sync(self, ref: str) -> ImageRecord:
        return self._images.inspect_sync(ref)

    async def inspect_image(self, ref: str) -> ImageRecord:
        return await self._cli.in_pool(functools.partial(self.inspect_image_sync, ref))

    def watch_images(self, on_change: Callable[[], None], stop: threading.Event) -> None:
        """Call ``on_change`` whenever an image is pulled, loaded, tagged or removed (``podman
        events``), until ``stop`` is set and :meth:`wake_watchers` called; a thread's own."""
        self._images.watch(on_change, stop)

    def wake_watchers(self) -> None:
        self._images.wake_watchers()

    def build_refusal(self) -> str:
        return ""

    def build_steps(self) -> PodmanBuildSteps:
        """The container primitives the service's own builder runs a build with, on this
        Podman (build_steps.py): stage containers confined as kernels are, no ``podman
        build``."""
        with self._lock:
            if self._build_steps is None:
                self._build_steps = PodmanBuildSteps(
                    self._cli,
                    rootless=self.rootless,
                    ulimits=self.allowed_ulimits,
                    tun_usable=tun_usable,
                    log=self.log,
                )
            return self._build_steps

    def tag_sync(self, image_id: str, ref: str) -> None:
        self._images.tag_sync(image_id, ref)

    def open_pull(
        self, ref: str, tag: str, auth_config: dict[str, str] | None, *, registry: str, who: str
    ) -> PullStream:
        """Start pulling ``ref`` at ``tag`` into the user's storage, with ``auth_config``'s
        login and no other (not the user's own podman login); the progress stream. Blocking."""
        return open_pull(
            self._cli,
            ref,
            tag,
            auth_config,
            registry=registry,
            who=who,
            tls_verify=registry not in self.insecure_registries,
        )

    def untag_sync(self, ref: str) -> None:
        self._images.untag_sync(ref)

    def image_disk_use_sync(self) -> ImagesDiskUse:
        return self._images.disk_use_sync()

    # ------------------------------------------------------------------ containers

    def resolved_network(self, asked: str, labels: dict[str, str] | None = None) -> str:
        """The Podman network for a spec's network mode ("bridge" is PodmanEngine.network),
        kept apart from other users' kernels as root (networks.py). Blocking: the check of
        /dev/net/tun, and a user's network looked up or made."""
        tun = tun_usable() if asked == "bridge" and self.network == "auto" else True
        mode = self._networks.resolve(
            asked,
            configured=self.network,
            shared=self.containers_shared,
            tun=tun,
            labels=labels or {},
        )
        if mode == "host" and asked == "bridge":
            self._say_once(
                "network",
                "Rootless Podman cannot give kernel containers a network of their own here: "
                "this user may not open /dev/net/tun (slirp4netns needs it). Kernels share the "
                "host's network, as a kernel run without a container would. Ask an "
                "administrator to make /dev/net/tun usable (mode 0666 is the usual), or set "
                "PodmanEngine.network.",
            )
        return mode

    def allowed_ulimits(self, asked: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        """``asked`` within this process's own hard limits where it cannot raise one (rootless,
        or root without CAP_SYS_RESOURCE, as in some containers and sandboxes): the container
        would not start. What is lowered is said once in the log. Root without that capability
        also names its own open-file and process limits: Podman as root asks for far higher
        ones by default (1048576 open files), and runc then cannot start the container."""
        if not self.rootless and _can_raise_limits():
            return dict(asked)
        allowed = {}
        if not self.rootless:
            for name in ("nofile", "nproc"):
                hard = _own_hard_limit(name)
                if hard != resource.RLIM_INFINITY:
                    allowed[name] = (hard, hard)
        for name, (soft, hard) in asked.items():
            if name not in _RLIMITS:
                allowed[name] = (soft, hard)
                continue
            own = _own_hard_limit(name)
            if own == resource.RLIM_INFINITY:
                allowed[name] = (soft, hard)
                continue
            new_hard = own if hard < 0 or hard > own else hard
            new_soft = new_hard if soft < 0 or soft > new_hard else soft
            if (new_soft, new_hard) != (soft, hard):
                self._say_once(
                    f"ulimit-{name}",
                    f"The kernel containers' {name} limit is lowered to {new_soft}:{new_hard}, "
                    f"this user's own hard limit (asked: {soft}:{hard}): Podman cannot raise it "
                    "for this user. An administrator raises users' limits in "
                    "/etc/security/limits.conf.",
                )
            allowed[name] = (new_soft, new_hard)
        return allowed

    async def create(self, spec: ContainerSpec) -> str:
        """The container created and started (containers.run_detached: one podman command
        where create and start would be two); :meth:`start` then has nothing left to do."""
        container_id = await self._cli.in_pool(functools.partial(self._create_sync, spec))
        with self._lock:
            self._started_on_create.add(container_id)
        return container_id

    def _create_sync(self, spec: ContainerSpec) -> str:
        # On the pool, arguments and all: the network's check opens /dev/net/tun, and the
        # limits read /proc, which the event loop should not wait for.
        return containers.run_detached(
            self._cli,
            spec,
            network=self.resolved_network(spec.network_mode, spec.labels),
            userns=self.userns,
            ulimits=self.allowed_ulimits(spec.ulimits),
            labels_of_image=self._labels_of_image(spec.image),
        )

    def _labels_of_image(self, ref: str) -> dict[str, str]:
        """The labels of ``ref``'s image, from the kept inspection (images.py: no command while
        the image watcher vouches for it): what Podman merges into its containers' labels."""
        try:
            return dict(self.inspect_image_sync(ref).labels)
        except ImageMissing:
            return {}  # the create says so in its own sentence

    async def start(self, container_id: str, image: str) -> None:
        with self._lock:
            if container_id in self._started_on_create:
                self._started_on_create.discard(container_id)
                return
        await self._cli.in_pool(
            functools.partial(containers.start, self._cli, container_id=container_id, image=image)
        )

    async def state(self, container_id: str) -> ContainerState | None:
        return await self._cli.in_pool(functools.partial(self._state_sync, container_id))

    def _state_sync(self, container_id: str) -> ContainerState | None:
        # A running container's conmon lives as long as it does: while that process is there,
        # the container runs, and no podman command (tens of ms of CPU, which a kernel booting
        # beside it would feel; jupyter_server asks at every websocket connection) is needed.
        with self._lock:
            conmon = self._conmons.get(container_id)
        if conmon is not None and containers.conmon_alive(conmon, container_id):
            return containers.RUNNING
        found, conmon = containers.state_and_conmon(self._cli, container_id=container_id)
        with self._lock:
            if found is not None and found.running and conmon:
                self._conmons[container_id] = conmon
            else:
                self._conmons.pop(container_id, None)
        return found

    async def kill(self, container_id: str, signum: int) -> None:
        await self._cli.in_pool(
            functools.partial(containers.kill, self._cli, container_id=container_id, signum=signum)
        )

    async def address(self, container_id: str) -> str:
        return "127.0.0.1"

    async def connection_info(self, container_id: str) -> dict[str, Any]:
        raise EngineRefused(
            "A Podman kernel's connection file is in its private directory, not Podman's."
        )

    def _remove_and_tell(self, container_id: str) -> None:
        with self._lock:
            self._started_on_create.discard(container_id)
            self._conmons.pop(container_id, None)
        listener = self.on_removed
        listed = containers.by_id(self._cli, container_id) if listener is not None else []
        if containers.remove(self._cli, container_id=container_id) and listed and listener:
            try:
                listener(listed[0], time.time())
            except Exception as e:  # the removal stands whatever its bookkeeping does
                self.log.warning("After removing container %s: %s", container_id[:12], e)

    async def remove(self, container_id: str) -> None:
        await self._cli.in_pool(functools.partial(self._remove_and_tell, container_id))

    async def remove_or_defer(self, container_id: str) -> bool:
        """Remove now. Podman is a command, not a daemon that may be away: when it cannot be
        run at all, the removal fails here, and the next server's recovery removes what is
        left (its labels name no live owner)."""
        try:
            await self.remove(container_id)
        except EngineUnavailable as e:
            self.log.warning("Container %s could not be removed: %s", container_id[:12], e)
            return False
        return True

    async def remove_deferred(self) -> None:
        """Nothing is deferred on Podman (remove_or_defer)."""

    def pending_reason_sync(self, container_id: str) -> tuple[str, float | None] | None:
        """Podman has no scheduler: a created container waits for nobody."""
        return None

    async def logs_tail(self, container_id: str, lines: int = 20) -> str:
        return await self._cli.in_pool(
            functools.partial(logs.tail, self._cli, container_id=container_id, lines=lines)
        )

    async def details(self, container_id: str) -> ContainerDetails | None:
        return await self._cli.in_pool(
            functools.partial(containers.details, self._cli, container_id=container_id)
        )

    def open_logs_sync(self, container_id: str, tail: int, follow: bool) -> FollowedLog | None:
        """The container's last ``tail`` lines, then (``follow``) each new line until the
        container stops or the stream is closed; None when Podman does not know it. Blocking:
        a thread of the caller's own."""
        return logs.open_stream(self._cli, container_id=container_id, tail=tail, follow=follow)

    def list_containers_sync(self, labels: dict[str, str | None]) -> list[ContainerRecord]:
        return containers.listed(self._cli, labels=labels)

    async def list_containers(self, labels: dict[str, str | None]) -> list[ContainerRecord]:
        return await self._cli.in_pool(functools.partial(self.list_containers_sync, labels))

    async def ledger_containers(self) -> list[ContainerRecord]:
        """The managed containers, for the GPU ledger: a list each time (a user's own engine
        holds that user's kernels only)."""
        return await self.list_containers({L.MANAGED: "true"})

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
        """Run ``command`` in a throw-away container of ``image`` and return what it printed
        (the Docker engine's run_oneshot_sync says what each argument does). Blocking, for up
        to ``timeout`` seconds: a worker thread of the caller's own."""
        return run_oneshot(
            self._cli,
            log=self.log,
            userns=self.userns,
            ulimits=self.allowed_ulimits({}),
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
