"""The kernel websocket sends without Nagle's delay (jupyter_gpu_containers.server.websocket)."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import socket
import time
import uuid
from types import SimpleNamespace
from typing import Any

import docker
import pytest
from conftest import DEBIAN_IMAGE, kernel_container, kernel_name
from jupyter_server.serverapp import ServerApp
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from kernel_io import execute
from traitlets.config import Config, Configurable
from traitlets.utils.importstring import import_item

from jupyter_gpu_containers._private import offline_buffer
from jupyter_gpu_containers.server import websocket
from jupyter_gpu_containers.server.app import install_websocket_connection
from jupyter_gpu_containers.server.gateway_user import NoDelayGatewayConnection
from jupyter_gpu_containers.server.websocket import HeldMessages, NoDelayWebsocketConnection


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
    """What a connection asks of the server's kernel manager; ``owner_uid``: the user each
    kernel belongs to, as on the kernel service (None: a user's own server)."""

    def __init__(self, owner_uid: int | None = None, held_limit: int = 0) -> None:
        super().__init__()
        self.held_messages = HeldMessages()
        self.held_messages_limit_per_user = held_limit
        self.owner_uid = owner_uid

    def owner_of(self, kernel_id: str) -> Any:
        return None if self.owner_uid is None else SimpleNamespace(uid=self.owner_uid)


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


async def test_a_cell_held_while_a_long_server_restart_goes_on_is_not_sent_before_it_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The new kernel is ready, and the server's restart goes on (its check of the pages' IOPub
    can take up to REATTACH_TIMEOUT on a loaded machine): a held cell waits for the restart's
    end however long it takes. Sent before, its reply came and its output was lost (seen in a
    fresh run: a deadline here let it go while the restart still checked the page's IOPub)."""
    forwarded: list[Any] = []
    monkeypatch.setattr(
        ZMQChannelsWebsocketConnection,
        "handle_incoming_message",
        lambda self, message: forwarded.append(message),
    )
    # A restart whose IOPub check takes longer than what a connection waited for it before.
    monkeypatch.setattr(websocket, "REATTACH_TIMEOUT", 0.1)
    kernels = _Kernels()
    kernel = _Kernel(kernels)
    connection = NoDelayWebsocketConnection(parent=kernel)
    connection.channels = {"shell": object()}

    with kernels.held_messages.server_restart(kernel.kernel_id):
        connection.handle_incoming_message("held")
        kernel.ready.set_result(None)
        await asyncio.sleep(2.5)  # past the 2.1 s a held message once waited at most
        assert forwarded == []
    for _ in range(300):  # sent within a few tenths of a second of the restart's end
        if forwarded:
            break
        await asyncio.sleep(0.1)
    assert forwarded == ["held"]


async def test_what_one_users_pages_hold_while_kernels_start_is_bounded_per_user(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """On the kernel service each page holds what it sends while its kernel starts, and one
    user's pages together hold at most held_messages_limit_per_user bytes: past it a message
    is refused with a sentence on the page; what was held counts until it is sent on."""
    forwarded: list[Any] = []
    told: list[str] = []
    monkeypatch.setattr(
        ZMQChannelsWebsocketConnection,
        "handle_incoming_message",
        lambda self, message: forwarded.append(message),
    )
    monkeypatch.setattr(
        NoDelayWebsocketConnection,
        "write_stderr",
        lambda self, text, parent: told.append(text),
    )
    kernels = _Kernels(owner_uid=4242, held_limit=10)
    pages = []
    for _ in range(2):
        kernel = _Kernel(kernels)
        page = NoDelayWebsocketConnection(parent=kernel)
        page.channels = {"shell": object()}
        page._admit()  # as prepare() does
        pages.append(page)
    first, second = pages

    first.handle_incoming_message("aaaaaa")  # 6 bytes, held: the kernel starts
    second.handle_incoming_message("bbbbbb")  # 12 in all: past the user's 10
    # The page reads plain words; the server's log names the option, for the administrator.
    assert told and "more than one user may while they wait" in told[0]
    assert "GPUContainersKernelManager." not in told[0]
    assert "(setting: GPUContainersKernelManager.held_messages_limit_per_user)" in caplog.text
    assert kernels.held_messages.held_bytes(4242) == 6
    # The first kernel is ready: what its page held goes on, and no longer counts.
    first.kernel_manager.ready.set_result(None)
    for _ in range(300):  # sent within a few tenths of a second
        if forwarded:
            break
        await asyncio.sleep(0.1)
    assert forwarded == ["aaaaaa"]
    assert kernels.held_messages.held_bytes(4242) == 0
    second.handle_incoming_message("bbbbbb")
    assert kernels.held_messages.held_bytes(4242) == 6
    # A closed page's held messages go with it, and so do their count and the page.
    monkeypatch.setattr(ZMQChannelsWebsocketConnection, "disconnect", lambda self: None)
    second.disconnect()
    assert kernels.held_messages.held_bytes(4242) == 0
    assert kernels.held_messages.connections(4242) == 1
    assert second._releaser is not None
    await second._releaser  # it ends, having nothing to send
    assert forwarded == ["aaaaaa"]


async def test_a_cell_sent_as_the_server_closes_the_page_goes_to_its_reconnection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A restart the server made (a cancelled wait's, back as it was) closes the page's
    connection. A cell the page sent before it heard the close went on that connection, whose
    reply then reached no page, and the cell ran for ever (seen in a UI run). Kept, it goes with
    the page's reconnection under the same session, after what was held before the close, and
    counts toward the user's bound until then."""
    forwarded: list[tuple[Any, Any]] = []
    monkeypatch.setattr(
        ZMQChannelsWebsocketConnection,
        "handle_incoming_message",
        lambda self, message: forwarded.append((self, message)),
    )
    kernels = _Kernels(owner_uid=4242, held_limit=1000)
    kernel = _Kernel(kernels)
    old = NoDelayWebsocketConnection(parent=kernel, session_key="k-1:page")
    old.channels = {"shell": object()}
    old._admit()
    with kernels.held_messages.server_restart(kernel.kernel_id):
        old.handle_incoming_message("while it restarted")  # held
        kernel.ready.set_result(None)
        old.keep_held_for_reconnection()  # close_kernel_websockets
        old.handle_incoming_message("before the page heard the close")
    old.handle_incoming_message("after the restart's end, the close not heard yet")
    assert forwarded == []
    assert kernels.held_messages.held_bytes(4242) > 0
    monkeypatch.setattr(ZMQChannelsWebsocketConnection, "disconnect", lambda self: None)
    old.disconnect()  # the close is done; the page reconnects
    await asyncio.sleep(0.3)  # the held message's releaser finds nothing to send
    assert forwarded == []

    new = NoDelayWebsocketConnection(parent=kernel, session_key="k-1:page")
    new.channels = {"shell": object()}
    new._send_kept()  # once connected (_tell_state)
    assert forwarded == [
        (new, "while it restarted"),
        (new, "before the page heard the close"),
        (new, "after the restart's end, the close not heard yet"),
    ]
    assert kernels.held_messages.held_bytes(4242) == 0
    new.handle_incoming_message("next")
    assert forwarded[-1] == (new, "next")


def test_what_is_kept_for_a_page_goes_to_that_kernels_page_only_and_not_for_ever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page's held messages, kept across the close the server made, go to the page that
    reconnects with the same session key to the same kernel: a session key is the page's to
    choose, and a page of another kernel (another user's) naming it gets nothing. What no page
    came back for within KEPT_SECONDS goes, and stops counting toward its user's bound."""
    store = HeldMessages()
    assert store.charge(1001, 6, 10)
    store.keep("alices-kernel", "page-1", ["print(1)"], 1001, 6)
    assert store.take("bobs-kernel", "page-1") == []
    assert store.take("alices-kernel", "page-1") == ["print(1)"]
    assert store.held_bytes(1001) == 0

    assert store.charge(1001, 6, 10)
    store.keep("alices-kernel", "page-1", ["print(2)"], 1001, 6)
    assert not store.charge(1001, 6, 10)  # 12 bytes: past her 10
    later = time.monotonic() + HeldMessages.KEPT_SECONDS + 1
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert store.charge(1001, 6, 10)  # the kept 6 expired
    assert store.take("alices-kernel", "page-1") == []


# Once told to (a file the test makes in the container), a thread of the kernel prints numbered
# lines for about two seconds: the page that closed, and comes back meanwhile, must get each one
# (replayed, then live).
TICKS = """
import os, threading, time
def _ticks():
    while not os.path.exists("/tmp/jgc-ticks-go"):
        time.sleep(0.02)
    for i in range(900):  # fewer than ZMQ's high-water mark: none is dropped on the way
        print(f"tick {i}", flush=True)
        time.sleep(0.002)
    print("ticks done", flush=True)
threading.Thread(target=_ticks, daemon=True).start()
"""


async def test_a_page_that_reconnects_gets_every_message_sent_while_it_was_away(
    jp_serverapp: Any, jp_fetch: Any, jp_ws_fetch: Any, docker_client: docker.DockerClient
) -> None:
    """A page's reconnection takes over the streams its messages were buffered on; the nudge
    jupyter_server makes on a connection must not take one of them (it took the first message
    to arrive: a line of output, or the "idle" that ends a cell)."""
    response = await jp_fetch(
        "api", "kernels", method="POST", body=json.dumps({"name": kernel_name(DEBIAN_IMAGE)})
    )
    kernel_id = json.loads(response.body)["id"]
    page = uuid.uuid4().hex
    manager = jp_serverapp.kernel_manager
    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels", params={"session_id": page})
    try:
        assert (await execute(ws, TICKS)).status == "ok"
        ws.close()
        for _ in range(600):  # the server buffers for the page once it saw the close
            buffered = offline_buffer(manager, kernel_id)
            if buffered is not None and buffered.get("session_key") == f"{kernel_id}:{page}":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the server never buffered the closed page's messages")
        # The lines flow only once the server buffers them (a line sent to the closing
        # websocket would be lost by the test's own close), and the page comes back while they
        # do (sooner or later only makes the check weaker).
        container = kernel_container(docker_client, kernel_id)
        made = await asyncio.to_thread(container.exec_run, ["touch", "/tmp/jgc-ticks-go"])
        assert made.exit_code == 0, made.output
        await asyncio.sleep(0.3)
        ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels", params={"session_id": page})
        text = ""
        deadline = time.monotonic() + 60
        while "ticks done" not in text and time.monotonic() < deadline:
            try:
                raw = await asyncio.wait_for(ws.read_message(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                break
            assert raw is not None, "the page's websocket closed"
            msg = json.loads(raw)
            if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
                text += msg["content"]["text"]
        assert "ticks done" in text, text[-500:]
        ticks = [int(n) for n in re.findall(r"^tick (\d+)$", text, re.MULTILINE)]
        assert ticks == list(range(900)), [n for n in range(900) if n not in ticks]
    finally:
        ws.close()
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")


async def _buffered_for(manager: Any, kernel_id: str, page: str) -> dict[str, Any]:
    for _ in range(600):  # the server buffers for the page once it saw the close
        buffered = offline_buffer(manager, kernel_id)
        if buffered is not None and buffered.get("session_key") == f"{kernel_id}:{page}":
            return dict(buffered["channels"])
        await asyncio.sleep(0.05)
    raise AssertionError("the server never buffered the closed page's messages")


def _connection_of(kernel_id: str, page: str) -> NoDelayWebsocketConnection:
    (connection,) = [
        c
        for c in gc.get_objects()
        if isinstance(c, NoDelayWebsocketConnection)
        and c.session_key == f"{kernel_id}:{page}"
        and getattr(c.websocket_handler, "ws_connection", None) is not None  # open
    ]
    return connection


async def test_a_page_back_after_a_restart_gets_channels_made_for_the_new_container(
    jp_serverapp: Any, jp_fetch: Any, jp_ws_fetch: Any
) -> None:
    """The streams kept for a page while it was away reach a restarted kernel (another container
    behind the same ports) only through ZMQ's reconnection, which jupyter_server's nudge checks
    for IOPub alone; a UI run lost a cell after such a restart. A page back after a launch gets
    new streams; one back without a restart between keeps its own (and what they carry)."""
    response = await jp_fetch(
        "api", "kernels", method="POST", body=json.dumps({"name": kernel_name(DEBIAN_IMAGE)})
    )
    kernel_id = json.loads(response.body)["id"]
    page = uuid.uuid4().hex
    manager = jp_serverapp.kernel_manager
    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels", params={"session_id": page})
    try:
        assert (await execute(ws, "print(1)")).stdout.strip() == "1"
        # Away and back, no restart between: the kept streams.
        ws.close()
        kept = await _buffered_for(manager, kernel_id, page)
        ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels", params={"session_id": page})
        assert (await execute(ws, "print(2)")).stdout.strip() == "2"
        assert _connection_of(kernel_id, page).channels["shell"] is kept["shell"]
        # Restarted (another container), away and back: new streams, and the cell runs.
        before = manager.get_kernel(kernel_id).provisioner.container_id
        await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="{}")
        assert manager.get_kernel(kernel_id).provisioner.container_id != before
        ws.close()
        kept = await _buffered_for(manager, kernel_id, page)
        ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels", params={"session_id": page})
        result = await execute(ws, "print(6 * 7)")
        assert result.status == "ok" and result.stdout.strip() == "42"
        fresh = _connection_of(kernel_id, page).channels
        assert fresh["shell"] is not kept["shell"] and fresh["iopub"] is not kept["iopub"]
        assert kept["shell"].closed() and kept["iopub"].closed()
    finally:
        ws.close()
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
