"""The kernel websocket: Nagle's algorithm off, the kernel's state told to every page that
connects, and a way to have pages reconnect after a restart the server makes on its own
(``close_kernel_websockets``).

jupyter_server's kernel websocket leaves TCP_NODELAY unset. A kernel answers a request with a
burst of small frames (status busy, the reply, status idle); with Nagle on, the server holds every
frame after the first until the client acknowledges it, and the client's TCP delays that
acknowledgement by up to 40 ms on Linux. benchmarks/ measured it: 45 ms of a kernel's ~50 ms first
reply on its websocket, and the same stall on every message burst after it. With the option
below the first reply takes ~5 ms.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection

from ._private import open_kernel_websockets, send_kernel_status


class NoDelayWebsocketConnection(ZMQChannelsWebsocketConnection):
    """jupyter_server's own ZMQ websocket connection, which sets TCP_NODELAY when it opens, and
    tells the page the kernel's state once it is connected.

    The state: a page that reconnects learns it from no one else. JupyterLab sends a
    kernel_info request on every (re)connection and ignores the status messages that answer it
    (they are "untracked"), so after a restart the server made (new GPUs, in place) its status
    stayed "Unknown" until the next cell ran. The state jupyter_server tracks from the kernel's
    own status messages is the truth, and saying it again to a page that knew it is harmless.
    """

    def connect(self) -> Any:
        handler = self.websocket_handler
        if getattr(handler, "ws_connection", None) is not None:
            handler.set_nodelay(True)
        connected = super().connect()
        if isinstance(connected, asyncio.Future):
            connected.add_done_callback(self._tell_state)
        return connected

    def _tell_state(self, connected: asyncio.Future[Any]) -> None:
        if connected.cancelled() or connected.exception() is not None:
            return
        state = getattr(self.kernel_manager, "execution_state", None)
        handler = self.websocket_handler
        if state in ("idle", "busy") and getattr(handler, "ws_connection", None) is not None:
            send_kernel_status(self, state)


# RFC 6455 "Service Restart": the client should reconnect (JupyterLab does so at once for any code
# but 1000 and 1001).
SERVICE_RESTART = 1012


def close_kernel_websockets(kernel_id: str, reason: str) -> int:
    """Close every open websocket of kernel ``kernel_id`` with code 1012 (Service Restart), so that
    each page reconnects; returns how many were closed.

    A restart that the server makes on its own (a notebook's GPUs changed in place) keeps the
    kernel's ports, so the pages' websockets stay attached through it and receive the new kernel's
    first ``status: starting``. JupyterLab ignores the status messages of the kernel_info requests
    that follow, so a page that saw it shows "Starting" until the next cell runs. A page restarts
    its connection itself only around the restarts it asks for. Once reconnected, the page is
    told the kernel's state (NoDelayWebsocketConnection), which it would not learn otherwise.
    """
    # jupyter_server keeps no public registry of open kernel websockets (_private.py). Without
    # one nothing is closed: pages then show a stale status, and nothing else is at stake.
    closed = 0
    for connection in open_kernel_websockets():
        if getattr(connection, "kernel_id", None) != kernel_id:
            continue
        handler = getattr(connection, "websocket_handler", None)
        if handler is None or getattr(handler, "ws_connection", None) is None:
            continue  # already closing
        handler.close(SERVICE_RESTART, reason[:120])
        closed += 1
    return closed
