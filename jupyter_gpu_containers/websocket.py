"""The kernel websocket, with Nagle's algorithm off.

jupyter_server's kernel websocket leaves TCP_NODELAY unset. A kernel answers a request with a
burst of small frames (status busy, the reply, status idle); with Nagle on, the server holds every
frame after the first until the client acknowledges it, and the client's TCP delays that
acknowledgement by up to 40 ms on Linux. benchmarks/ measured it: 45 ms of a kernel's ~50 ms first
reply on its websocket, and the same stall on every message burst after it. With the option
below the first reply takes ~5 ms.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection


class NoDelayWebsocketConnection(ZMQChannelsWebsocketConnection):
    """jupyter_server's own ZMQ websocket connection, which sets TCP_NODELAY when it opens."""

    def connect(self) -> Any:
        handler = self.websocket_handler
        if getattr(handler, "ws_connection", None) is not None:
            handler.set_nodelay(True)
        return super().connect()
