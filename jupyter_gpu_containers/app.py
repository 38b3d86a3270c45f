"""The Jupyter Server extension: live kernel specs, recovery on start, the warm pool, and REST
handlers."""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Enum

from . import labels as L
from .errors import ContainerKernelError
from .handlers import default_handlers
from .kernelspecs import ContainerKernelSpecManager
from .launchplan import ContainerPolicy, effective_server_id, state_dir_for
from .recovery import recover
from .warmpool import WarmPool
from .websocket import NoDelayWebsocketConnection


def uses_gateway(serverapp: Any) -> bool:
    """Whether the server's kernels live behind a kernel gateway (jupyter_server then picks its
    own kernel spec manager and websocket connection classes). Known at link time already."""
    return bool(
        serverapp.config.get("GatewayClient", {}).get("url")
        or os.environ.get("JUPYTER_GATEWAY_URL")
    )


def install_websocket_connection(serverapp: Any, enabled: bool) -> None:
    """Use NoDelayWebsocketConnection (websocket.py) unless an administrator chose another
    connection class or a kernel gateway is used. At link time: the web application reads the
    class when it is created, after linking."""
    configured = serverapp.config.get("ServerApp", {}).get("kernel_websocket_connection_class")
    if enabled and configured is None and not uses_gateway(serverapp):
        serverapp.kernel_websocket_connection_class = NoDelayWebsocketConnection


class _SentenceOnly(logging.Filter):
    """Our errors already say what happened and what to do: log the sentence, not a traceback.

    jupyter_client and jupyter_server log failed kernel starts with ``log.exception``; for our
    errors the stack says nothing the sentence does not, and buries it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], ContainerKernelError):
            if not isinstance(record.msg, str) or record.msg.strip() in ("", "%s"):
                record.msg, record.args = "%s", (str(record.exc_info[1]),)
            record.exc_info = None
            record.exc_text = None
        return True


class GPUContainersApp(ExtensionApp):
    name = "jupyter_gpu_containers"
    # Not a standalone app: it rides on whatever server (jupyter lab, jupyter server) loads it.
    load_other_extensions = True
    warm_pool: WarmPool | None = None

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
        and after it. Applies to every kernel of the server, containers or not; ignored when
        ServerApp.kernel_websocket_connection_class is configured or a kernel gateway is used.""",
    )

    def _link_jupyter_server_extension(self, serverapp: Any) -> None:
        super()._link_jupyter_server_extension(serverapp)
        # Linking happens before the server creates its kernel spec manager and its web
        # application, so this is the one moment their classes can still be chosen.
        install_websocket_connection(serverapp, self.kernel_websocket_nodelay)
        if not self.install_kernelspec_manager:
            return
        configured = serverapp.config.get("ServerApp", {}).get("kernel_spec_manager_class")
        if serverapp.trait_has_value("kernel_spec_manager_class") and configured is None:
            configured = serverapp.kernel_spec_manager_class
        gateway = uses_gateway(serverapp)
        if configured is None and not gateway:
            serverapp.kernel_spec_manager_class = ContainerKernelSpecManager
            return
        name = configured if isinstance(configured, str) else getattr(configured, "__name__", "?")
        if isinstance(configured, type) and issubclass(configured, ContainerKernelSpecManager):
            return
        serverapp.log.warning(
            "jupyter_gpu_containers: the server uses %s, so local images will not appear as "
            "kernels. Configure ServerApp.kernel_spec_manager_class = "
            "'jupyter_gpu_containers.kernelspecs.ContainerKernelSpecManager' (or a subclass).",
            name if configured else "a kernel gateway",
        )

    def initialize_settings(self) -> None:
        assert self.serverapp is not None
        # Claim this server's id on the host at once, so that other servers starting now see
        # that its kernels have a live owner.
        policy = ContainerPolicy(parent=self.serverapp.kernel_manager)
        state = state_dir_for(policy)
        if not state.shared:
            self.log.warning("jupyter_gpu_containers: %s", state.problem)
        wanted = policy.server_id or L.default_server_id(
            os.getuid(), self.serverapp.kernel_manager.root_dir
        )
        self.server_id = effective_server_id(policy, self.serverapp.kernel_manager.root_dir)
        if self.server_id != wanted:
            self.log.warning(
                "jupyter_gpu_containers: this server serves under the id %s: %s is held by "
                "another live server of this user, or its name in %s was taken by someone else.",
                self.server_id,
                wanted,
                state.path,
            )
        log_filter = _SentenceOnly()
        for logger in {self.serverapp.log, logging.getLogger("tornado.application")}:
            logger.addFilter(log_filter)
        ksm = self.serverapp.kernel_spec_manager
        if isinstance(ksm, ContainerKernelSpecManager):
            # At start-up, before the loop serves requests: list images, but do not wait on probe
            # containers (the image watcher's first refresh, moments later, probes).
            ksm.refresh(wait_for_probes=False)

    def initialize_handlers(self) -> None:
        # ExtensionApp prefixes every pattern with the server's base_url itself.
        self.handlers.extend(default_handlers("/gpu-containers"))

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        # What exists once the server has started (modules, classes, configuration: most of its
        # heap) lives as long as the server. Out of the collector's full passes with it: each
        # walked all of it, stalling the event loop (and every kernel's traffic) for 60-140 ms
        # on a loaded two-core host (tests/test_faults.py measures the loop). Undone at stop.
        gc.freeze()
        ksm = serverapp.kernel_spec_manager
        if isinstance(ksm, ContainerKernelSpecManager):
            ksm.start_watching()
        try:
            report = await recover(serverapp, self.on_start)
        except ContainerKernelError as e:
            self.log.warning("Kernel containers were not checked at start: %s", e)
        else:
            self.log.info(
                "Kernel containers at start: reattached %d, removed %d left by stopped servers.",
                len(report.reattached),
                len(report.removed),
            )
        # After recovery, which removes the warm containers a previous process left: the pool
        # fills in the background (and keeps trying while the engine is away).
        self.warm_pool = WarmPool(
            parent=serverapp,
            kernel_manager=serverapp.kernel_manager,
            kernel_spec_manager=ksm,
        )
        self.warm_pool.start()

    async def stop_extension(self) -> None:
        gc.unfreeze()  # a server started again in this process (tests) freezes afresh
        # The engine stays open: the server shuts its kernels down (removing their containers)
        # after extensions stop.
        ksm = self.serverapp.kernel_spec_manager if self.serverapp else None
        if isinstance(ksm, ContainerKernelSpecManager):
            ksm.stop_watching()
        # Before the kernels shut down: their handed-over containers are theirs to remove.
        if self.warm_pool is not None:
            await self.warm_pool.stop()
            self.warm_pool = None
        # The kernels are shut down after extensions stop, and while they are, this server's id
        # must still look alive: its liveness file goes when the process does (the OS drops the
        # lock), and stays behind as a name this user reuses at the next start.
