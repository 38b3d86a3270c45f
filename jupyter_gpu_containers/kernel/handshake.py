"""One request to a kernel in a container, and its reply: the readiness handshake of a launch
(``kernel_info_request``), the warm pool's handover (a silent ``execute_request``), and an
interrupt by message (``interrupt_request``) where signals do not reach the kernel.

A launch returns only with a kernel that answers, so a broken image fails in seconds with its
reason instead of sitting in "starting" while jupyter_client's restarter retries it. While it
waits, the container is watched: one that ended, or a deadline that passed, ends the wait through
the caller's own sentence.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import zmq
import zmq.asyncio
from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.session import Session

from ..backends.backend import ContainerBackend
from ..base.errors import ContainerExited, LaunchTimeout
from ..base.records import ContainerState

# Seconds between looks at the container's state while waiting for its reply: the first,
# and the most the interval grows to.
STATE_CHECK_FIRST = 0.1
STATE_CHECK_MAX = 1.0


def shell_url(info: KernelConnectionInfo, channel: str = "shell") -> str:
    """The address of one of the kernel's request channels ("shell" or "control")."""
    port = info["control_port"] if channel == "control" else info["shell_port"]
    if info["transport"] == "ipc":
        return f"ipc://{info['ip']}-{port}"
    return f"tcp://{info['ip']}:{port}"


async def ask_kernel(
    backend: ContainerBackend,
    info: KernelConnectionInfo,
    container_id: str,
    msg_type: str,
    content: dict[str, Any],
    deadline: float,
    on_end: Callable[[ContainerState | None], Awaitable[None]],
    on_timeout: Callable[[], Awaitable[None]],
    channel: str = "shell",
) -> dict[str, Any]:
    """One request on the kernel's shell (or control) channel, and its reply's content. While it
    waits, a
    container that ended (or was removed) calls ``on_end`` with its state, and a passed
    ``deadline`` (time.monotonic()) calls ``on_timeout``: both raise."""
    session = Session(key=info["key"], signature_scheme=info["signature_scheme"])
    socket = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    socket.linger = 0
    public, secret = info.get("curve_publickey"), info.get("curve_secretkey")
    if public and secret:
        # A relayed kernel's channels (relay_files.py): a CurveZMQ server with the kernel's
        # keypair, which admits this keypair alone as a client (as jupyter_client connects).
        public_key = public.encode() if isinstance(public, str) else public
        socket.curve_secretkey = secret.encode() if isinstance(secret, str) else secret
        socket.curve_publickey = public_key
        socket.curve_serverkey = public_key
    # A kernel binds its sockets a few hundred ms after its container starts, and ZMQ retries a
    # connection to a socket not bound yet every reconnect_ivl: 100 ms by default, ~50 ms lost
    # per launch on average (benchmarks/). Retry every 5 ms instead.
    socket.reconnect_ivl = 5
    # The container is asked after its state (an engine request) at growing intervals: a
    # kernel that dies at import is seen within a few hundred ms, and twenty kernels that take
    # seconds to come up on a busy host do not add hundreds of inspections to its load.
    check_every = STATE_CHECK_FIRST
    next_check = time.monotonic() + check_every
    try:
        socket.connect(shell_url(info, channel))
        request = session.msg(msg_type, content)
        await socket.send_multipart(session.serialize(request))
        while True:
            if await socket.poll(100):
                _, parts = session.feed_identities(await socket.recv_multipart())
                reply = session.deserialize(parts)
                if reply["parent_header"].get("msg_id") == request["header"]["msg_id"]:
                    return dict(reply["content"])
                continue
            now = time.monotonic()
            if now >= next_check:
                state = await backend.state(container_id)
                if state is None or state.ended:
                    await on_end(state)
                check_every = min(check_every * 1.5, STATE_CHECK_MAX)
                next_check = time.monotonic() + check_every
            if now > deadline:
                await on_timeout()
    finally:
        socket.close(linger=0)


async def interrupt_kernel(
    backend: ContainerBackend, info: KernelConnectionInfo, container_id: str
) -> None:
    """Interrupt the kernel by message, on its control channel, as jupyter_client does for
    interrupt_mode "message": for a backend whose signals do not reach kernels."""

    async def ended(state: Any) -> None:
        raise ContainerExited("The kernel ended before it was interrupted.")

    async def late() -> None:
        raise LaunchTimeout("The kernel did not answer the interrupt within 10 s.")

    await ask_kernel(
        backend,
        info,
        container_id,
        "interrupt_request",
        {},
        time.monotonic() + 10.0,
        ended,
        late,
        channel="control",
    )
