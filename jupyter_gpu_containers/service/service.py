"""``jupyter gpu-containers serve``: the kernel service of a shared GPU host.

On a host with many users, the one process that reaches the Docker engine and the GPU ledger.
Users' own Jupyter servers are started with ``--gateway-url`` pointing here (Jupyter Server's
stock gateway client) and need neither Docker access nor the docker package.

It is Jupyter Server itself (as Kernel Gateway and Enterprise Gateway are), cut down to what a
gateway serves: the kernel specs, the kernels API and its websockets, and this project's
``/gpu-containers`` API, with the same provisioner, kernel specs, allocator and catalog as direct
mode. No contents, no sessions, no terminals, no front end, no other server extension.

- **Identity** (:class:`ServiceIdentityProvider`): every request, REST and websocket, carries a
  token; with JupyterHub it is the user's server's own API token, checked by the Hub
  (hubauth.py); without, a per-user token from an administrator's file (tokens.py). The name it
  maps to becomes a :class:`~.identity.KernelUser` (uid, gid, workspace) through
  :class:`~.identity.UserDirectory`. Nothing the client says (``KERNEL_USERNAME``) counts.
- **Per-user kernels** (service_routes.py): a kernel runs as its user, mounts their workspace,
  and only they can see or touch it.
- Kernels a user's server left behind are culled when idle (MappingKernelManager's culler, on by
  default here).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from jupyter_server.auth.identity import IdentityProvider, User
from jupyter_server.serverapp import ServerApp
from tornado import web
from tornado.platform.asyncio import BaseAsyncIOLoop
from traitlets import Bool, Enum, Instance, Integer, List, TraitError, Unicode, default, validate

from .. import __version__
from ..backends.backend import ActiveReplica
from ..base.errors import ContainerKernelError, ValueRefused
from ..host.identity import KernelUser, UnknownUser, UserDirectory
from ..policy.checks import parse_size
from ..server.kernelmanager import GPUContainersKernelManager
from ..server.recovery_progress import RecoveryProgress
from ..services import backend_class, placement_class
from .standby import StandbyAnswers
from .start_bounds import StartQueue, UserKernels

EXTENSION = "jupyter_gpu_containers"
DEFAULT_PORT = 8890
# How long a name's resolution (account database, workspace) is reused.
USER_CACHE_SECONDS = 30.0


class TokenRefused(ContainerKernelError):
    """A request whose token the service does not accept."""

    status = 403
    reason_phrase = "Token refused"


@dataclass
class ServiceUser(User):
    """jupyter_server's user, with the account the service runs its kernels as."""

    kernel_user: KernelUser | None = None
    # JupyterHub says this user is one of its admins (the admin view, admin_view.py).
    hub_admin: bool = False


class ServiceIdentityProvider(IdentityProvider):
    """Who a request comes from: a token, checked by JupyterHub or in the service's token file,
    and the kernel user that name is here. No cookies, no login page, no shared token."""

    auth = Enum(
        ["auto", "tokens", "jupyterhub"],
        "auto",
        config=True,
        help="""How requests are authenticated. "jupyterhub": each user's server sends its own
        JupyterHub API token, checked with the Hub (the service runs as a JupyterHub service;
        see HubIdentity). "tokens": per-user tokens from ServiceTokens.tokens_file
        (`jupyter gpu-containers token add USER`). "auto" (default): "jupyterhub" when the Hub's
        environment for a service (JUPYTERHUB_API_TOKEN) is set, else "tokens".""",
    )

    directory = Instance(UserDirectory)
    _checker: Any = None
    _users: dict[str, tuple[float, KernelUser]]

    @default("token")
    def _default_token(self) -> str:
        return ""  # no shared token: each user has their own (and the log prints none)

    @default("directory")
    def _default_directory(self) -> UserDirectory:
        return UserDirectory(parent=self.parent or self)

    @property
    def mode(self) -> str:
        if self.auth != "auto":
            return self.auth
        return "jupyterhub" if os.environ.get("JUPYTERHUB_API_TOKEN") else "tokens"

    def prepare(self) -> None:
        """Build and check the token checker (at start: a bad token file stops the service with
        its sentence)."""
        self._users = {}
        if self.mode == "jupyterhub":
            from .hubauth import HubIdentity

            hub = HubIdentity(parent=self.parent or self)
            hub.check()  # the jupyterhub package and the Hub's address: at start, in a sentence
            self._checker = hub
        else:
            from ..host.tokens import ServiceTokens

            tokens = ServiceTokens(parent=self.parent or self)
            tokens.check()
            self._checker = tokens

    async def close(self) -> None:
        close = getattr(self._checker, "close", None)
        if close is not None and self.mode == "jupyterhub":
            await close()

    async def username_for(self, token: str) -> str | None:
        checker = self._checker
        if checker is None:
            raise ContainerKernelError("The kernel service's authentication is not set up.")
        if self.mode == "jupyterhub":
            name = await checker.username_for(token)
        else:
            name = await asyncio.to_thread(checker.user_for, token)
        return name if isinstance(name, str) else None

    async def kernel_user(self, username: str) -> KernelUser:
        cached = self._users.get(username)
        now = time.monotonic()
        if cached is not None and now - cached[0] < USER_CACHE_SECONDS:
            return cached[1]
        user = await asyncio.to_thread(self.directory.resolve, username)
        self._users[username] = (now, user)
        return user

    def token_refusal(self, token: str) -> str:
        """What a request is told whose ``token`` ("" for none) is not accepted."""
        if not token:
            return (
                "This request carries no token, and the kernel service answers only requests "
                "that carry their user's token (an Authorization header: token <TOKEN>). A "
                "Jupyter server sends it when started with --GatewayClient.auth_token (or "
                "JUPYTER_GATEWAY_AUTH_TOKEN)."
            )
        if self.mode == "jupyterhub":
            scope = "access:services!service=" + str(
                getattr(self._checker, "service_name", "") or "<the service's name>"
            )
            return (
                "JupyterHub does not accept the token this request carries for the kernel "
                f"service: it is wrong, revoked or expired, or lacks the scope {scope}. Restart "
                "your server from the Hub's home page (File > Hub Control Panel), which gives it "
                "a new token; if that does not help, ask the Hub's administrator."
            )
        return (
            "The kernel service does not know the token this request carries: it is wrong, or "
            "its administrator revoked it. Check the token your Jupyter server sends "
            "(--GatewayClient.auth_token, or JUPYTER_GATEWAY_AUTH_TOKEN), or ask the "
            "administrator for a new one (jupyter gpu-containers token add <your user name>)."
        )

    async def get_user(self, handler: web.RequestHandler) -> User | None:
        token = self.get_token(handler)
        if not token:
            if handler.request.method in ("GET", "HEAD", "OPTIONS"):
                return None  # a route that needs no user may answer (the stock 403 else)
            # A change without a token would meet the stock XSRF check, whose "'_xsrf'
            # argument missing" says nothing of what is wrong.
            raise web.HTTPError(403, self.token_refusal(""), reason=TokenRefused.reason_phrase)
        username = None
        try:
            username = await self.username_for(token)
            if username is None:
                # Any request, GET included: the stock server would take it for one without a
                # token (a 403 "Forbidden", or "'_xsrf' argument missing" for a POST).
                raise TokenRefused(self.token_refusal(token))
            kernel_user = await self.kernel_user(username)
        except UnknownUser as e:
            self.log.warning("Refused a request for %r: %s", username, e.log_text)
            raise web.HTTPError(403, e.sentence, reason=e.reason_phrase) from None
        except ContainerKernelError as e:  # the Hub away, say: a sentence, not a 500
            raise web.HTTPError(e.status, e.sentence, reason=e.reason_phrase) from None
        is_admin = getattr(self._checker, "is_admin", None) if self.mode == "jupyterhub" else None
        hub_admin = bool(is_admin(username)) if is_admin is not None else False
        return ServiceUser(
            username=username, name=username, kernel_user=kernel_user, hub_admin=hub_admin
        )

    def is_token_authenticated(self, handler: web.RequestHandler) -> bool:
        # Every authenticated request here is, and nothing else is ever accepted: no cookies,
        # so no cross-site request can carry a user's credentials (no XSRF check is needed).
        return handler.current_user is not None

    def get_handlers(self) -> list[tuple[str, object]]:
        return []  # no login or logout pages

    @property
    def login_available(self) -> bool:
        return False

    @property
    def logout_available(self) -> bool:
        return False

    def validate_security(self, app: Any, ssl_options: dict[str, Any] | None = None) -> None:
        if ssl_options is None and app.ip not in ("127.0.0.1", "localhost", "::1"):
            app.log.warning(
                "The kernel service listens on %s without TLS: tokens and kernel traffic cross "
                "the network in clear. Set ServerApp.certfile and ServerApp.keyfile, or listen "
                "on 127.0.0.1 only.",
                app.ip or "all addresses",
            )


class ServiceApp(ServerApp):
    """The kernel service: Jupyter Server serving container kernels to many users' servers."""

    name = "jupyter-gpu-containers-serve"
    version = __version__
    description = """The kernel service of a shared GPU host: the only process that reaches the
    Docker engine. Users' Jupyter servers connect with --gateway-url (Jupyter Server's gateway
    client) and a token; each gets container kernels that run as their own account, in their
    own workspace. Run it as root or as a dedicated account in the docker group (see the admin
    guide, docs/admin-guide.md)."""

    # What a gateway serves; no contents, sessions, terminals or pages.
    default_services = ("api", "kernels", "kernelspecs")  # type: ignore[assignment]
    # A flag the extension reads (app.py): register the per-user kernels routes, no notebook
    # routes (notebooks are the users' servers' business).
    is_kernel_service = True
    subcommands: dict[str, Any] = {}

    admin_users = List(
        Unicode(),
        config=True,
        help="""Users who may do what the service keeps from others: pull any image when
        ServiceApp.pull_policy is "admins", see the admin view and act on any user's kernel,
        and read the service's metrics (/metrics, /gpu-containers/metrics), which count every
        user's kernels. JupyterHub's admins may too.""",
    )

    backend = Enum(
        ["docker", "podman", "kubernetes", "slurm"],
        "docker",
        config=True,
        help="""Where kernels run: "docker", containers on this host's Docker engine;
        "podman", containers of this host's Podman run as root (the service as root: one store
        and one set of containers for the host, no daemon; PodmanEngine configures it);
        "kubernetes", pods in a cluster (KubernetesBackend configures the namespace, GPU
        resources and volumes; docs/kubernetes.md); or "slurm", each kernel a Slurm job of its
        user, its container run by the user's rootless Podman on the node Slurm chose, with the
        GPUs Slurm gave it (SlurmBackend configures the partition, account, time limit and the
        probe's account; the service runs as root on a host that shares the nodes' file
        system).""",
    )

    pull_policy = Enum(
        ["allowed-images", "admins", "nobody"],
        "allowed-images",
        config=True,
        help="""Who may pull images through the service. "allowed-images" (default): everyone,
        but only images ContainerPolicy.allowed_images names (its default, "*", names none
        here: then nobody but admin_users pulls). "admins": only ServiceApp.admin_users.
        "nobody": pulls are the administrator's, on the command line. Pulls with a user's own
        registry login are private to that user.""",
    )

    build_policy = Enum(
        ["everyone", "admins", "nobody"],
        "nobody",
        config=True,
        help="""Who may build images from their own workspace through the service (a
        Dockerfile or a requirements.txt: ImageSaves.builds). The service runs a build's steps
        itself, as root in containers confined as kernels are (no capabilities), but root on
        your engine all the same, and a build takes disk and a build slot: "nobody" (default)
        keeps them off;
        "admins": only admin_users (and JupyterHub's admins); "everyone": every user, within
        ImageSaves' bounds (bases, size, time, network). Built images are private to their
        user.""",
    )

    max_concurrent_starts = Integer(
        8,
        config=True,
        help="""Kernel starts the service runs at once (each creates a container and waits for
        its kernel); more wait in a queue.""",
    )

    max_queued_starts = Integer(
        64,
        config=True,
        help="""Kernel starts that may wait for a slot. One more is answered at once with 503
        and a sentence ("the kernel service is busy"), which JupyterLab shows, instead of a
        start that times out.""",
    )

    max_concurrent_starts_per_user = Integer(
        2,
        config=True,
        help="""Of the max_concurrent_starts slots, how many one user's starts may hold at once.
        A start holds its slot until its kernel answers or its launch times out, and a user can
        make that long (an image whose kernel never answers): this keeps the other slots for
        other users.""",
    )

    max_queued_starts_per_user = Integer(
        8,
        config=True,
        help="""Of the max_queued_starts places, how many one user's starts may take. One more
        start of theirs is answered at once with 429 and a sentence; other users' starts still
        queue.""",
    )

    max_kernels_per_user = Integer(
        10,
        config=True,
        help="""Kernels one user may have on the service, running or starting (a restart counts
        once). One more start is refused with 409 and a sentence. JupyterHub's spawner limits
        (mem_limit, cpu_limit) bound a user's own server, not the kernels this service starts
        for them: this and max_memory_per_user do.""",
    )

    max_memory_per_user = Unicode(
        None,
        allow_none=True,
        config=True,
        help="""The memory one user's kernels may have on the service, all together ("64g"): the
        sum of their memory limits (ContainerProvisioner.mem_limit under
        ContainerPolicy.max_mem_limit), running or starting. A start that would go beyond it is
        refused with 409 and a sentence, and so is one of a kernel with no memory limit (set
        ContainerPolicy.max_mem_limit so that every kernel has one). None (default): no such
        budget; max_kernels_per_user times the largest limit bounds a user's memory.""",
    )

    @validate(
        "max_concurrent_starts",
        "max_queued_starts",
        "max_concurrent_starts_per_user",
        "max_queued_starts_per_user",
        "max_kernels_per_user",
    )
    def _at_least_one(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if value < 1:
            raise TraitError(f"ServiceApp.{proposal['trait'].name} must be 1 or more, not {value}.")
        return value

    @validate("max_memory_per_user")
    def _a_size(self, proposal: Any) -> str | None:
        value = proposal["value"]
        if value is not None:
            try:
                parse_size(value, "ServiceApp.max_memory_per_user")
            except ValueRefused as e:
                raise TraitError(e.sentence) from None
        return value

    keep_kernels_on_stop = Bool(
        True,
        config=True,
        help="""Leave users' kernels running when the service stops (SIGTERM, `systemctl stop` or
        `restart`): its next start reattaches them, and users' servers reconnect by themselves.
        False: a stop shuts every user's kernel down, as Jupyter Server does. Kernels whose
        service never comes back are not culled meanwhile.""",
    )

    start_queue: StartQueue | None = None
    # The lease this replica holds, where replicas share the engine (ActiveLease): released at
    # a clean stop, so that a standby takes over at once.
    active_replica: ActiveReplica | None = None
    user_kernels: UserKernels | None = None
    # The extension's reattaching of the kernels a previous process left (app.py), kernel by
    # kernel: each kernels route waits for its own kernels (service_routes.py), so that nobody is
    # told a kernel about to come back is gone, and nobody waits for everybody's.
    kernel_recovery: RecoveryProgress

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kernel_recovery = RecoveryProgress()

    @default("ip")
    def _default_ip(self) -> str:
        return "127.0.0.1"

    @default("port")
    def _default_port(self) -> int:
        return DEFAULT_PORT

    @default("port_retries")
    def _default_port_retries(self) -> int:
        # Users' servers are configured with the service's URL: a service that moved to the
        # next free port would leave them talking to whatever holds its own, with their tokens
        # (any local user may listen on a port above 1024). It exits, saying the port is taken.
        return 0

    @default("allow_root")
    def _default_allow_root(self) -> bool:
        # Root is one of the two documented ways to run the service (the other: an account in
        # the docker group, which is root-equivalent anyway); kernels never run as root.
        return True

    @default("open_browser")
    def _default_open_browser(self) -> bool:
        return False

    @default("identity_provider_class")
    def _default_identity_provider_class(self) -> type:
        return ServiceIdentityProvider

    @default("kernel_manager_class")
    def _default_kernel_manager_class(self) -> str:
        return "jupyter_gpu_containers.server.kernelmanager.GPUContainersKernelManager"

    @default("kernel_spec_manager_class")
    def _default_kernel_spec_manager_class(self) -> str:
        return "jupyter_gpu_containers.kernel.kernelspecs.ContainerKernelSpecManager"

    def find_server_extensions(self) -> None:
        # Only this project's extension: others enabled in the environment (JupyterLab's, say)
        # would serve files and pages from a root process.
        self.jpserver_extensions = {EXTENSION: True}

    def initialize(self, argv: list[str] | None = None, **kwargs: Any) -> None:  # type: ignore[override]
        try:
            super().initialize(argv, **kwargs)
        except ContainerKernelError as e:  # a bad token file, say: its sentence, no traceback
            self.log.critical("The kernel service cannot start: %s", e.log_text)
            self.exit(1)

    def init_configurables(self) -> None:
        # Host kernels would run on the host as the service's account: never from here.
        self.config.ContainerKernelSpecManager.show_host_kernels = False
        mkm = self.config.MappingKernelManager
        if "cull_idle_timeout" not in mkm:
            # A user's server that went away leaves its kernels: an idle hour ends them.
            mkm.cull_idle_timeout = 3600
        if "cull_interval" not in mkm:
            mkm.cull_interval = 60
        # Before anything starts: an engine that cannot run kernels as their users, and a
        # setting that would do nothing where kernels go, are sentences.
        problem = backend_class(self.backend).kernel_service_problem()
        if problem:
            raise ContainerKernelError(problem)
        placement_class(backend_class(self.backend)).prepare_service_config(self.config)
        # One of several replicas (Kubernetes): a standby until it holds the lease, starting
        # nothing meanwhile; there is no event loop yet, so waiting here blocks nothing.
        replica = backend_class(self.backend).active_replica(self)
        if replica is not None:
            with StandbyAnswers(self.ip, self.port, self.log):
                replica.acquire()
            self.active_replica = replica
        super().init_configurables()
        provider = self.identity_provider
        if not isinstance(provider, ServiceIdentityProvider):
            raise ContainerKernelError(
                "The kernel service authenticates with its own identity provider "
                "(ServiceIdentityProvider): remove the server's identity provider class from "
                "its configuration.",
                setting="ServerApp.identity_provider_class",
            )
        provider.prepare()
        self.start_queue = StartQueue(
            self.max_concurrent_starts,
            self.max_queued_starts,
            self.max_concurrent_starts_per_user,
            self.max_queued_starts_per_user,
        )
        self.user_kernels = UserKernels(self.max_kernels_per_user, self.max_memory_per_user)
        self.log.info(
            "Kernel service: users authenticate with %s; workspaces are %s.",
            "their JupyterHub API tokens"
            if provider.mode == "jupyterhub"
            else "tokens from the service's token file",
            provider.directory.workspace_template,
        )

    def init_signal(self) -> None:
        super().init_signal()
        # SIGTERM (systemctl stop and restart, a pod's deletion) stops the service from its event
        # loop, which says so there. Jupyter Server's handler runs in the signal's own moment and
        # logs first: a signal that arrives while the service writes to the same stream makes
        # that write raise (a reentrant call) out of the handler, and the stop is lost.
        loop = self.io_loop
        if isinstance(loop, BaseAsyncIOLoop):  # (tornado's every loop since 5.0)
            loop.asyncio_loop.add_signal_handler(signal.SIGTERM, self._stop_on_sigterm)

    def _stop_on_sigterm(self) -> None:
        self.log.critical("Received signal %s, stopping.", int(signal.SIGTERM))
        self.stop()

    def start_app(self) -> None:
        super().start_app()
        if self.active_replica is not None:
            self.io_loop.add_callback(self._announce_serving)

    async def _announce_serving(self) -> None:
        # Users are routed here once recovery knows which kernels it will reattach: from then
        # on, a request about a kernel waits for that one only (its recovery hurried).
        await self.kernel_recovery.wait_listed()
        if self.active_replica is not None:
            await asyncio.to_thread(self.active_replica.serving)

    async def cleanup_kernels(self) -> None:
        # The server's last clean-up step that is ours to take part in (public): the Hub's
        # HTTP connections go here too.
        provider = getattr(self, "identity_provider", None)
        if isinstance(provider, ServiceIdentityProvider):
            await provider.close()
        mkm = getattr(self, "kernel_manager", None)
        if self.keep_kernels_on_stop and isinstance(mkm, GPUContainersKernelManager):
            self.log.info(
                "Leaving %d kernel(s) running: the kernel service's next start reattaches them "
                "(ServiceApp.keep_kernels_on_stop).",
                len(mkm.list_kernel_ids()),
            )
            mkm.leave_all()
        else:
            await super().cleanup_kernels()
        if self.active_replica is not None:
            await asyncio.to_thread(self.active_replica.release)


def main(argv: list[str] | None = None) -> None:
    try:
        ServiceApp.launch_instance(argv=argv)
    except ContainerKernelError as e:
        raise SystemExit(f"jupyter gpu-containers serve: {e.log_text}") from None
