"""The Jupyter Server extension: live kernel specs, recovery on start, the warm pool, and REST
handlers."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Enum

from ..base import labels as L
from ..base.errors import ContainerKernelError
from ..host.identity import UserDirectory
from ..kernel.kernelspecs import ContainerKernelSpecManager
from ..kernel.warm_starter import warm_container_starter
from ..kernel.warmpool import WarmPool
from ..routes.admin_desk_view import desk_for as admin_desk_for
from ..routes.handlers import default_handlers
from ..routes.kernel_view import watched_kernels
from ..routes.notebooks import NotebookKernelHandler
from ..routes.status import StatusHandler
from ..service.service_routes import service_kernel_handlers
from ..services import SETTINGS_KEY, Services
from .gateway_user import (
    GatewayGPUKernelManager,
    GatewayWaitingSessionManager,
    NoDelayGatewayConnection,
    ServiceForwarder,
    ServiceStatusForwarder,
    allow_session_name,
    service_url,
)
from .kernelmanager import GPUContainersKernelManager
from .reclaimer import Reclaimer
from .recovery import full_passes_deferred, recover, restore_sessions
from .recovery_progress import recovery_progress
from .start_failure import stopping_on_failure
from .stock_routes import stock_handlers
from .waiting_sessions import WaitingSessionManager
from .websocket import NoDelayWebsocketConnection


def uses_gateway(serverapp: Any) -> bool:
    """Whether the server's kernels live behind a kernel gateway (jupyter_server then picks its
    own kernel spec manager and websocket connection classes). Known at link time already."""
    return bool(
        serverapp.config.get("GatewayClient", {}).get("url")
        or os.environ.get("JUPYTER_GATEWAY_URL")
    )


def install_websocket_connection(serverapp: Any, enabled: bool) -> None:
    """Use NoDelayWebsocketConnection (websocket.py), or behind a kernel service its gateway
    counterpart (gateway_user.py), unless an administrator chose another connection class. At
    link time: the web application reads the class when it is created, after linking."""
    configured = serverapp.config.get("ServerApp", {}).get("kernel_websocket_connection_class")
    if enabled and configured is None:
        serverapp.kernel_websocket_connection_class = (
            NoDelayGatewayConnection if uses_gateway(serverapp) else NoDelayWebsocketConnection
        )


class _SentenceOnly(logging.Filter):
    """Our errors already say what happened and what to do: log the sentence, not a traceback.

    jupyter_client and jupyter_server log failed kernel starts with ``log.exception``; for our
    errors the stack says nothing the sentence does not, and buries it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], ContainerKernelError):
            error = record.exc_info[1]
            if not isinstance(record.msg, str) or record.msg.strip() in ("", "%s"):
                record.msg, record.args = "%s", (str(error),)
            record.exc_info = None
            record.exc_text = None
            if error.routine and record.levelno > logging.INFO:
                # A wait its user cancelled is no error of the server's.
                record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return True


class GPUContainersApp(ExtensionApp):
    name = "jupyter_gpu_containers"
    # Not a standalone app: it rides on whatever server (jupyter lab, jupyter server) loads it.
    load_other_extensions = True
    services: Services
    gateway_mode = False  # set at link time: kernels live behind a kernel service

    on_start = Enum(
        ["reattach", "sweep"],
        "reattach",
        config=True,
        help="""What to do at start with kernel containers left by a server process that is no
        longer alive. "reattach" (default): kernels of this server (same
        ContainerPolicy.server_id) that still run come back as running kernels; everything else
        of dead servers is removed. "sweep": remove them all.""",
    )

    install_kernelspec_manager = Bool(
        True,
        config=True,
        help="""Make ContainerKernelSpecManager the server's kernel spec manager, so every local
        image appears as a kernel. Skipped, with a warning, when another kernel spec manager
        class is configured.""",
    )

    kernel_websocket_nodelay = Bool(
        True,
        config=True,
        help="""Send kernel messages to the browser without Nagle's delay (TCP_NODELAY on the
        kernel websocket). jupyter_server leaves it off, and a kernel's burst of small replies
        then waits up to 40 ms for the browser's delayed acknowledgement: at every kernel start
        and after it. Applies to every kernel of the server, containers or not, and to a server
        whose kernels live behind a kernel service (--gateway-url); ignored when
        ServerApp.kernel_websocket_connection_class is configured.""",
    )

    install_kernel_manager = Bool(
        True,
        config=True,
        help="""Make GPUContainersKernelManager (jupyter_server's kernel manager, able to adopt
        running kernels and answering refusals with their status) the server's kernel manager.
        Skipped, with a warning, when another kernel manager class is configured: then kernels
        are not reattached after a restart (they are removed), and refusals answer 500.""",
    )

    def _link_jupyter_server_extension(self, serverapp: Any) -> None:
        super()._link_jupyter_server_extension(serverapp)
        # Linking happens before the server creates its kernel spec manager, kernel manager and
        # web application, so this is the one moment their classes can still be chosen.
        install_websocket_connection(serverapp, self.kernel_websocket_nodelay)
        if uses_gateway(serverapp):
            # The kernels, their specs and the GPUs are the kernel service's (gateway_user.py):
            # nothing here imports docker, or touches the engine or the host state.
            self.gateway_mode = True
            if self.install_kernel_manager:
                _install_class(
                    serverapp,
                    "kernel_manager_class",
                    GatewayGPUKernelManager,
                    "starts do not carry notebooks' GPU requests, and refusals answer 500",
                )
                _install_class(
                    serverapp,
                    "session_manager_class",
                    GatewayWaitingSessionManager,
                    "a session whose kernel waits for a GPU is not listed until the kernel runs",
                )
            return
        if self.install_kernelspec_manager:
            _install_class(
                serverapp,
                "kernel_spec_manager_class",
                ContainerKernelSpecManager,
                "local images will not appear as kernels",
            )
        if self.install_kernel_manager:
            _install_class(
                serverapp,
                "kernel_manager_class",
                GPUContainersKernelManager,
                "kernels are not reattached after a restart",
            )
            _install_class(
                serverapp,
                "session_manager_class",
                WaitingSessionManager,
                "a session whose kernel waits for a GPU is not listed until the kernel runs",
            )

    def initialize_settings(self) -> None:
        # The managers are ours since link time: a load that fails stops the server
        # (start_failure.py), never leaving it half ours.
        with stopping_on_failure(self.log):
            self._initialize_settings()

    def _initialize_settings(self) -> None:
        assert self.serverapp is not None
        serverapp = self.serverapp
        log_filter = _SentenceOnly()
        for logger in {serverapp.log, logging.getLogger("tornado.application")}:
            logger.addFilter(log_filter)
        if self.gateway_mode:
            # The service starts the kernel in the notebook's directory, which it reads there.
            allow_session_name(serverapp.gateway_config)
            return
        # The one owner of what the server shares: handlers find it in the settings, everything
        # else through services.services_for. Closed once the kernels are down (stop_extension).
        self.services = services = Services(parent=serverapp)
        serverapp.web_app.settings[SETTINGS_KEY] = services
        self.settings[SETTINGS_KEY] = services
        # Claim this server's id on the host at once, so that other servers starting now see
        # that its kernels have a live owner.
        state = services.state
        if not state.shared:
            setting = f" (setting: {state.problem_setting})" if state.problem_setting else ""
            self.log.warning("jupyter_gpu_containers: %s%s", state.problem, setting)
        elif state.per_user:
            self.log.info(
                "jupyter_gpu_containers: GPUs are booked among your own kernels only (%s): "
                "your engine shows you only your own containers, so other users' kernels on "
                "this host are not seen, and may hold the same GPUs.",
                state.path,
            )
        root_dir = serverapp.kernel_manager.root_dir
        wanted = services.policy.server_id or L.default_server_id(os.getuid(), root_dir)
        self.server_id = services.server_id(root_dir)
        if self.server_id != wanted:
            self.log.warning(
                "jupyter_gpu_containers: this server serves under the id %s: %s is held by "
                "another live server of this user, or its name in %s was taken by someone else.",
                self.server_id,
                wanted,
                state.path,
            )
        ksm = serverapp.kernel_spec_manager
        if isinstance(ksm, ContainerKernelSpecManager):
            # At start-up, before the loop serves requests: list images, but do not wait on probe
            # containers (the image watcher's first refresh, moments later, probes).
            ksm.refresh(wait_for_probes=False)

    def initialize_handlers(self) -> None:
        with stopping_on_failure(self.log):
            self._initialize_handlers()

    def _initialize_handlers(self) -> None:
        assert self.serverapp is not None
        # ExtensionApp prefixes every pattern with the server's base_url itself.
        routes = default_handlers("/gpu-containers")
        if self.gateway_mode:
            # The service answers /gpu-containers/ (gateway_user.py); a notebook's kernel is
            # this server's business (its sessions, its files).
            forwarders: dict[type, type] = {
                NotebookKernelHandler: NotebookKernelHandler,
                StatusHandler: ServiceStatusForwarder,
            }
            self.handlers.extend(
                (pattern, forwarders.get(cls, ServiceForwarder)) for pattern, cls in routes
            )
            if isinstance(self.serverapp.kernel_manager, GatewayGPUKernelManager):
                self.handlers.extend(stock_handlers())  # refusals: the service's own status
            return
        if getattr(self.serverapp, "is_kernel_service", False):
            # A kernel service (service.py): each user's kernels only, on the stock kernels
            # routes; notebooks (their sessions, their files) are the users' servers' business.
            routes = [r for r in routes if not r[0].endswith("/notebooks/kernel")]
            self.handlers.extend(routes)
            self.handlers.extend(service_kernel_handlers())
            return
        self.handlers.extend(routes)
        if isinstance(self.serverapp.kernel_manager, GPUContainersKernelManager):
            # Refused launches through the stock sessions and restart routes: their own 4xx.
            self.handlers.extend(stock_handlers())

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        if self.gateway_mode:
            self.log.info(
                "jupyter_gpu_containers: kernels live behind the kernel service at %s; "
                "/gpu-containers/ is answered there.",
                service_url(),
            )
            return
        # What exists once the server has started (modules, classes, configuration: most of its
        # heap) lives as long as the server. Out of the collector's full passes with it: each
        # walked all of it, stalling the event loop (and every kernel's traffic) for 60-140 ms
        # on a loaded two-core host (benchmarks/ measure the loop). Undone at stop.
        gc.freeze()
        services = self.services
        mkm = serverapp.kernel_manager
        ksm = serverapp.kernel_spec_manager
        services.usage.start(lambda: watched_kernels(mkm))  # GPU use per kernel (gpu_usage.py)
        if isinstance(ksm, ContainerKernelSpecManager):
            ksm.start_watching()
            # A saved or built image is a kernel spec by the time its user is told it is done.
            services.saves.on_image = lambda _ref: ksm.refresh()
        # Kernels adopted grow the heap from what the freeze above left to hundreds of thousands
        # of objects (370,000 at 1,000 kernel pods): the collector's full passes are deferred
        # until every kernel is back (recovery.py, full_passes_deferred).
        with full_passes_deferred():
            try:
                # A kernel service's kernels come back as their users' (identity.py).
                directory = getattr(serverapp.identity_provider, "directory", None)
                if not isinstance(directory, UserDirectory):
                    directory = None
                report = await recover(
                    services, mkm, self.on_start, self.log, directory, recovery_progress(serverapp)
                )
            except ContainerKernelError as e:
                self.log.warning("Kernel containers were not checked at start: %s", e)
            else:
                self.log.info(
                    "Kernel containers at start: reattached %d, removed %d left by stopped "
                    "servers.",
                    len(report.reattached),
                    len(report.removed),
                )
                await restore_sessions(serverapp.session_manager, report.notebooks, self.log)
            finally:
                # A kernel service's kernels routes wait on this, each for its own kernels
                # (service_routes.py): nobody waits any longer.
                progress = recovery_progress(serverapp)
                if progress is not None:
                    progress.finish()
        # Idle GPUs given back (GPUReclaim, off by default), the reattached kernels' too.
        services.keep(Reclaimer(services, mkm, self.log)).start()
        # The administrator's scheduled pre-pulls and pruning (PrePuller; none by default).
        if services.prepull.start():
            self.log.info("jupyter_gpu_containers: scheduled pre-pulls and pruning are on.")
        if getattr(serverapp, "is_kernel_service", False):
            return  # warm containers run as the server's account; a service's kernels do not
        # Direct mode: admin actions other servers recorded on this server's kernels
        # (admin_actions_view.py).
        desk = services.keep(admin_desk_for(serverapp.web_app.settings, services, serverapp))
        desk.start_watching(services, mkm, self.log)
        # After recovery, which removes the warm containers a previous process left: the pool
        # fills in the background (and keeps trying while the engine is away).
        pool = WarmPool(
            parent=serverapp,
            backend=services.backend,
            inventory=services.inventory,
            kernel_spec_manager=ksm,
            start_container=warm_container_starter(mkm, ksm),
        )
        if pool.start():
            services.warm_pool = services.keep(pool)

    async def stop_extension(self) -> None:
        gc.unfreeze()  # a server started again in this process (tests) freezes afresh
        services = getattr(self, "services", None)
        if services is None:
            return
        # The reclaimer, the admin desk's watch, the warm pool (before the kernels shut down:
        # its handed-over containers are theirs to remove), the scheduled pre-pulls.
        await services.stop()
        ksm = self.serverapp.kernel_spec_manager if self.serverapp else None
        if isinstance(ksm, ContainerKernelSpecManager):
            await asyncio.to_thread(ksm.stop_watching)  # joins the watcher's thread
        # Readiness probes still running remove their containers when they end: let them.
        await asyncio.to_thread(services.probe.wait_idle, services.probe.timeout)
        # The server shuts its kernels down after extensions stop, through these services:
        # they are closed once it has (kernelmanager.py), or at once if that cannot be known.
        mkm = self.serverapp.kernel_manager if self.serverapp else None
        if isinstance(mkm, GPUContainersKernelManager):
            mkm.after_shutdown_all(services.close)
        else:
            services.close()


def _install_class(serverapp: Any, trait: str, cls: type, without: str) -> None:
    """Make ``cls`` the server's ``trait`` (a class trait of ServerApp) unless the administrator
    configured another class, which is then kept, with a warning saying what is lost."""
    configured = serverapp.config.get("ServerApp", {}).get(trait)
    if serverapp.trait_has_value(trait) and configured is None:
        configured = getattr(serverapp, trait)
    if configured is None:
        setattr(serverapp, trait, cls)
        return
    if isinstance(configured, type) and issubclass(configured, cls):
        return
    name = configured if isinstance(configured, str) else getattr(configured, "__name__", "?")
    if isinstance(name, str) and name.endswith("." + cls.__name__):
        return  # configured by its dotted name
    serverapp.log.warning(
        "jupyter_gpu_containers: the server uses %s, so %s. Configure ServerApp.%s = '%s.%s' "
        "(or a subclass).",
        name,
        without,
        trait,
        cls.__module__,
        cls.__name__,
    )
