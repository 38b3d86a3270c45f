"""The kernel websocket, with Nagle's algorithm off.

jupyter_server's kernel websocket leaves TCP_NODELAY unset. A kernel answers a request with a
burst of small frames (status busy, the reply, status idle); with Nagle on, the server holds every
frame after the first until the client acknowledges it, and the client's TCP delays that
acknowledgement by up to 40 ms on Linux. benchmarks/ measured it: 45 ms of a kernel's ~50 ms first
reply on its websocket, and the same stall on every message burst after it. With the option
below the first reply takes ~5 ms.
"""

from __future__ import annotations

import os
from typing import Any

from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection


class NoDelayWebsocketConnection(ZMQChannelsWebsocketConnection):
    """jupyter_server's own ZMQ websocket connection, which sets TCP_NODELAY when it opens."""

    def connect(self) -> Any:
        handler = self.websocket_handler
        if getattr(handler, "ws_connection", None) is not None:
            handler.set_nodelay(True)
        return super().connect()


def install(serverapp: Any, enabled: bool) -> None:
    """Use NoDelayWebsocketConnection unless an administrator chose another connection class or
    the server talks to a kernel gateway (whose connection class jupyter_server picks itself).
    At link time: the web application reads the class when it is created, after linking."""
    if not enabled:
        return
    configured = serverapp.config.get("ServerApp", {}).get("kernel_websocket_connection_class")
    gateway = serverapp.config.get("GatewayClient", {}).get("url") or os.environ.get(
        "JUPYTER_GATEWAY_URL"
    )
    if configured is None and not gateway:
        serverapp.kernel_websocket_connection_class = NoDelayWebsocketConnection
