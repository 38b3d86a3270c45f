"""The kernel websocket sends without Nagle's delay (jupyter_gpu_containers.websocket)."""

from __future__ import annotations

import gc
import json
import socket
from typing import Any

import pytest
from conftest import DEBIAN_IMAGE, kernel_name
from jupyter_server.serverapp import ServerApp
from kernel_io import execute
from traitlets.config import Config
from traitlets.utils.importstring import import_item

from jupyter_gpu_containers.app import install_websocket_connection
from jupyter_gpu_containers.gateway_user import NoDelayGatewayConnection
from jupyter_gpu_containers.websocket import NoDelayWebsocketConnection


async def test_kernel_websocket_sets_tcp_nodelay(
    jp_serverapp: Any, jp_fetch: Any, jp_ws_fetch: Any
) -> None:
    assert jp_serverapp.kernel_websocket_connection_class is NoDelayWebsocketConnection
    response = await jp_fetch(
        "api", "kernels", method="POST", body=json.dumps({"name": kernel_name(DEBIAN_IMAGE)})
    )
    kernel_id = json.loads(response.body)["id"]
    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
    try:
        result = await execute(ws, "print(6 * 7)")
        assert result.status == "ok" and result.stdout.strip() == "42"
        # The server's end of this very websocket has Nagle off.
        (connection,) = [
            c
            for c in gc.get_objects()
            if isinstance(c, NoDelayWebsocketConnection) and c.kernel_id == kernel_id
        ]
        stream = connection.websocket_handler.ws_connection.stream
        assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        ws.close()
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")


DEFAULT = "jupyter_server.services.kernels.connection.channels.ZMQChannelsWebsocketConnection"


@pytest.mark.parametrize(
    ("config", "enabled", "expected"),
    [
        ({}, True, NoDelayWebsocketConnection),
        ({}, False, None),  # the admin turned it off: jupyter_server's choice stands
        # The admin's own class is kept, even when it is jupyter_server's default.
        ({"ServerApp": {"kernel_websocket_connection_class": DEFAULT}}, True, DEFAULT),
        # Behind a kernel service: jupyter_server's gateway connection, without Nagle's delay.
        ({"GatewayClient": {"url": "http://127.0.0.1:1"}}, True, NoDelayGatewayConnection),
    ],
)
def test_install_respects_the_admin(config: dict[str, Any], enabled: bool, expected: Any) -> None:
    app = ServerApp(config=Config(config))
    install_websocket_connection(app, enabled)
    if expected is None:  # left to jupyter_server's default
        assert not app.trait_has_value("kernel_websocket_connection_class")
    elif isinstance(expected, str):
        assert app.kernel_websocket_connection_class is import_item(expected)
    else:
        assert app.kernel_websocket_connection_class is expected
