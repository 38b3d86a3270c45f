"""The kernel websocket sends without Nagle's delay (jupyter_gpu_containers.websocket)."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
from typing import Any

import pytest
from conftest import DEBIAN_IMAGE, kernel_name
from jupyter_server.serverapp import ServerApp
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from kernel_io import execute
from traitlets.config import Config, Configurable
from traitlets.utils.importstring import import_item

from jupyter_gpu_containers.app import install_websocket_connection
from jupyter_gpu_containers.gateway_user import NoDelayGatewayConnection
from jupyter_gpu_containers.websocket import HeldMessages, NoDelayWebsocketConnection


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


class _Kernel(Configurable):
    """What a connection asks of its kernel manager: whether the kernel is ready, and its id."""

    def __init__(self, parent: Configurable) -> None:
        super().__init__(parent=parent)
        self.kernel_id = "k-1"
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class _Kernels(Configurable):
    def __init__(self) -> None:
        super().__init__()
        self.held_messages = HeldMessages()


async def test_a_cell_sent_before_the_servers_restart_is_over_is_held_until_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The restarted kernel is ready before the server's restart checked the page's IOPub and
    closed its connection: a cell sent then must be held like one sent while the kernel
    started, else it runs before the page hears the new kernel and its printout is lost."""
    forwarded: list[Any] = []
    monkeypatch.setattr(
        ZMQChannelsWebsocketConnection,
        "handle_incoming_message",
        lambda self, message: forwarded.append(message),
    )
    kernels = _Kernels()
    kernel = _Kernel(kernels)
    connection = NoDelayWebsocketConnection(parent=kernel)
    connection.channels = {"shell": object()}  # open, as far as holding goes

    with kernels.held_messages.server_restart(kernel.kernel_id):
        kernel.ready.set_result(None)  # the new kernel answers; the restart goes on
        connection.handle_incoming_message("once it answers")
        connection.handle_incoming_message("and then")
        await asyncio.sleep(0.3)
        assert forwarded == []
    # The restart is over (with no close, as a restart jupyter_client's restarter made): what
    # was held goes on, in order, and what comes next is not held.
    for _ in range(300):  # it is sent within a few tenths of a second
        if forwarded:
            break
        await asyncio.sleep(0.1)
    assert forwarded == ["once it answers", "and then"]
    connection.handle_incoming_message("after")
    assert forwarded[-1] == "after"
