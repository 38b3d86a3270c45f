"""A kernel's life around its pages, real: output while no page is connected (bounded, the page
told what was dropped), a restart its launch cannot take (the kernel keeps running, or ends
visibly), and what a page sends right after a restart (its output delivered). Through the kernel
service as a real student account, and in direct mode."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import DEBIAN_IMAGE, TEST_RUN, kernel_container, kernel_name
from hostusers import MALLORY, UserHome, needs_accounts
from jupyter_client.session import Session
from kernel_io import collect, execute, send_execute
from servers import Server, wait_until
from service_process import KernelService, ServiceUser
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from jupyter_gpu_containers.server.kernelmanager import BufferLedger, OfflineBuffer
from jupyter_gpu_containers.server.websocket import PROBE_PREFIX

pytestmark = pytest.mark.usefixtures("docker_client")

CPU_SPEC = kernel_name(DEBIAN_IMAGE)
MiB = 2**20
KERNEL_BOUND = 2 * MiB
PRINTED = 64 * MiB
# A student outside the docker group (see test_service.py).
USER_A = os.environ.get("JGC_TEST_STUDENT_A") or MALLORY


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[KernelService, ServiceUser]]:
    """One kernel service for the module, its offline buffers bounded at 2 MiB per kernel; a
    student outside the docker group as its user. Each test shuts its own kernels down."""
    if not USER_A:
        pytest.skip("needs the test accounts")
    made = KernelService(
        {
            "GPUContainersKernelManager": {
                "offline_buffer_limit": KERNEL_BOUND,
                "offline_buffer_limit_per_user": 2 * KERNEL_BOUND,
            }
        }
    )
    try:
        user = made.add_user(USER_A)
        made.start()
        yield made, user
    finally:
        made.close()


async def service_websocket(
    service: KernelService, user: ServiceUser, kernel_id: str, session: str = ""
) -> WebSocketClientConnection:
    query = f"?session_id={session}" if session else ""
    return await websocket_connect(
        HTTPRequest(
            f"ws://127.0.0.1:{service.port}/api/kernels/{kernel_id}/channels{query}",
            headers={"Authorization": f"token {user.token}"},
        )
    )


# ---------------------------------------------------------------- finding 17: after a restart


async def send_right_after_each_restart(
    restart: Callable[[], Awaitable[None]], ws: WebSocketClientConnection, times: int = 10
) -> None:
    """Restart, and at once (on the same websocket) run code: its reply, output and idle status
    must all come, every time. Nothing of the restart's own checks reaches the page."""
    for i in range(times):
        await restart()
        msg_id = await send_execute(ws, f"print({i})")
        try:
            result = await collect(ws, msg_id, timeout=20)
        except TimeoutError:
            raise AssertionError(f"restart {i}: no reply, output or idle status") from None
        assert result.status == "ok" and result.stdout.strip() == str(i), (i, result)
    # What came after the last reply: nothing that answers the restart's probes.
    msg_id = await send_execute(ws, "print('last')")
    while True:
        msg = json.loads(await asyncio.wait_for(ws.read_message(), 20))
        assert not msg["parent_header"].get("msg_id", "").startswith(PROBE_PREFIX), msg
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_reply":
            break


async def test_a_message_sent_right_after_a_restart_gets_its_output_in_direct_mode(
    jp_fetch: Any, jp_ws_fetch: Any
) -> None:
    response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": CPU_SPEC}))
    kernel_id = json.loads(response.body)["id"]
    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
    try:

        async def restart() -> None:
            await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="")

        await send_right_after_each_restart(restart, ws)
    finally:
        ws.close()
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")


@needs_accounts
async def test_a_message_sent_right_after_a_restart_gets_its_output_through_the_service(
    service: tuple[KernelService, ServiceUser],
) -> None:
    svc, user = service
    kernel_id = await svc.start_kernel(user, CPU_SPEC)
    ws = await svc.websocket(user, kernel_id)
    try:

        async def restart() -> None:
            code, body = await svc.answer(user, "POST", f"api/kernels/{kernel_id}/restart")
            assert code == 200, (code, body)

        await send_right_after_each_restart(restart, ws)
    finally:
        ws.close()
        await svc.answer(user, "DELETE", f"api/kernels/{kernel_id}")


@needs_accounts
async def test_a_message_sent_right_after_a_restart_gets_its_output_through_a_users_server(
    service: tuple[KernelService, ServiceUser],
) -> None:
    """The student's own stock server in front of the service (--gateway-url), as under
    JupyterHub: its restart is the service's, and its websocket relays the service's."""
    svc, user = service
    home = UserHome(user.name, {})
    try:
        server = Server(
            home.path,
            user.workspace,
            [
                f"--gateway-url={svc.url}",
                f"--GatewayClient.auth_token={user.token}",
                "--GatewayClient.request_timeout=60",
            ],
            user=user.name,
        )
        home.servers.append(server)
        model = await server.call("POST", "api", "kernels", body={"name": CPU_SPEC})
        kernel_id = model["id"]
        ws = await websocket_connect(
            HTTPRequest(
                f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels",
                headers={"Authorization": f"token {server.token}"},
            )
        )
        try:

            async def restart() -> None:
                await server.call("POST", "api", "kernels", kernel_id, "restart", body={})

            await send_right_after_each_restart(restart, ws)
        finally:
            ws.close()
            await server.call("DELETE", "api", "kernels", kernel_id)
    finally:
        home.close()


# ---------------------------------------------------------------- finding 5: nobody connected

# In lines of 4 KiB, each its own message: what waits in ZMQ's queue on its way to the
# service (up to its high-water mark, 1000 messages) stays small beside the flood. Paced (at most
# about 1,600 lines a second), then a second's pause: IOPub is a PUB socket, which drops what
# does not fit in that queue, so a service slowed by a loaded machine would lose the flood's last
# line or the cell's final "idle" (seen in CI runs); and with the service caught up when the page
# comes back, nothing but the kept 2 MiB reaches it at once (jupyter_server's IOPub rate limit
# would drop live output arriving on top of the replay).
LINE = 4096
FLOOD = f"""
import os, sys, time
while not os.path.exists('go'):
    time.sleep(0.05)
line = 'x' * {LINE - 1} + '\\n'
for i in range({PRINTED // LINE}):
    sys.stdout.write(line)
    sys.stdout.flush()
    if i % 32 == 31:
        time.sleep(0.02)
time.sleep(1)
print('END-OF-FLOOD', flush=True)
open('done', 'w').close()
"""


def memory(pid: int, field: str) -> int:
    """A field of /proc/PID/status in bytes (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@needs_accounts
async def test_output_with_no_page_connected_is_bounded_and_the_page_told(
    service: tuple[KernelService, ServiceUser],
) -> None:
    svc, user = service
    assert svc.process is not None
    for name in ("go", "done"):
        (user.workspace / name).unlink(missing_ok=True)
    kernel_id = await svc.start_kernel(user, CPU_SPEC)
    session = uuid.uuid4().hex
    try:
        ws = await service_websocket(svc, user, kernel_id, session)
        assert (await execute(ws, "print('before')")).stdout.strip() == "before"
        msg_id = await send_execute(ws, FLOOD)
        ws.close()  # the page is closed; the kernel prints once told to (the file "go")
        buffering = f"Starting buffering for {kernel_id}:{session}"
        await wait_until(
            lambda: asyncio.sleep(0, buffering in svc.output()),
            60,
            "the service to buffer the kernel's output",
        )
        before = memory(svc.process.pid, "VmRSS")
        Path(f"/proc/{svc.process.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        (user.workspace / "go").touch()
        await wait_until(
            lambda: asyncio.sleep(0, (user.workspace / "done").exists()),
            180,
            "the kernel to print its output",
        )

        async def idle() -> bool:
            code, model = await svc.answer(user, "GET", f"api/kernels/{kernel_id}")
            return code == 200 and model.get("execution_state") == "idle"

        # The cell has ended as the service saw it: its final "idle" is in the buffer too.
        await wait_until(idle, 60, "the service to see the kernel idle")
        # The page comes back (the same session): the newest output, and a word on the rest.
        ws = await service_websocket(svc, user, kernel_id, session)
        try:
            result = await collect(ws, msg_id, timeout=60)
        finally:
            ws.close()
        peak = memory(svc.process.pid, "VmHWM")
        assert result.status == "ok", result.status
        assert "END-OF-FLOOD" in result.stdout
        assert 0 < len(result.stdout) <= KERNEL_BOUND, len(result.stdout)
        assert "dropped while no page was connected" in result.stderr, result.stderr[:500]
        # Unbounded, the service held all 64 MiB at once; bounded, 2 MiB and what passes by
        # (ZMQ's queue, the replay, the service's own work meanwhile: under 17 MiB, measured).
        assert peak - before < 28 * MiB, (before, peak)
    finally:
        await svc.answer(user, "DELETE", f"api/kernels/{kernel_id}")
        for name in ("go", "done"):
            (user.workspace / name).unlink(missing_ok=True)


class _Kernel:
    session = Session(key=b"a key")


def _message(size: int) -> list[bytes]:
    session = _Kernel.session
    msg = session.msg("stream", {"name": "stdout", "text": "x" * size})
    return [b"kernel.iopub.stream", *session.serialize(msg)]


def test_a_users_kernels_share_one_bound_and_the_fullest_gives_way() -> None:
    ledger = BufferLedger(10_000)
    chatty = OfflineBuffer(ledger, _Kernel(), 8_000)
    quiet = OfflineBuffer(ledger, _Kernel(), 8_000)
    for _ in range(40):
        chatty.add("iopub", _message(1_000))
    assert chatty.bytes <= 8_000 and chatty.dropped > 0
    assert ledger.total == chatty.bytes
    for _ in range(3):
        quiet.add("iopub", _message(1_000))
    # The user's bound holds; room was made in the chatty kernel's buffer, not the quiet one's.
    assert ledger.total == chatty.bytes + quiet.bytes <= 10_000
    assert len(quiet) == 3 and quiet.dropped == 0
    # Replayed: the notice first, as stderr, then what was kept, the newest last.
    replayed = list(chatty)
    notice = _Kernel.session.deserialize(_Kernel.session.feed_identities(replayed[0][1])[1])
    assert notice["content"]["name"] == "stderr"
    assert f"{chatty.dropped} message" in notice["content"]["text"]
    assert len(replayed) == len(chatty) + 1
    chatty.detach()
    assert ledger.total == quiet.bytes


# ---------------------------------------------------------------- finding 9: a refused restart


async def test_a_restart_its_image_cannot_take_leaves_the_kernel_running(
    jp_fetch: Any, jp_ws_fetch: Any, docker_client: docker.DockerClient
) -> None:
    """The image's tag is removed while its kernel runs: the restart is refused (404, the
    sentence), and the kernel keeps its container and its state."""
    ref = f"jgc-test/restart-refused:{TEST_RUN}"
    docker_client.images.get(DEBIAN_IMAGE).tag(ref)
    kernel_id = ""
    try:

        async def offered() -> bool:
            response = await jp_fetch("api", "kernelspecs")
            return kernel_name(ref) in json.loads(response.body)["kernelspecs"]

        await wait_until(offered, 60, "the tag's kernel spec")
        response = await jp_fetch(
            "api", "kernels", method="POST", body=json.dumps({"name": kernel_name(ref)})
        )
        kernel_id = json.loads(response.body)["id"]
        container = kernel_container(docker_client, kernel_id)
        ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
        assert (await execute(ws, "x = 41")).status == "ok"
        docker_client.images.remove(ref)  # the tag only: the image stays under its own

        with pytest.raises(HTTPClientError) as refused:
            await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="")
        assert refused.value.code == 404
        assert ref in json.loads(refused.value.response.body)["message"]
        # Still listed, still in the same container, still with its state, same websocket.
        model = json.loads((await jp_fetch("api", "kernels", kernel_id)).body)
        assert model["execution_state"] in ("idle", "busy")
        assert kernel_container(docker_client, kernel_id).id == container.id
        assert (await execute(ws, "print(x + 1)")).stdout.strip() == "42"
        ws.close()
    finally:
        if kernel_id:
            await jp_fetch("api", "kernels", kernel_id, method="DELETE")
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(ref)


# The kernel holds its own exit until told to: the restart's admission check has passed (the
# kernel is being stopped), and the image's tag goes before the new launch looks for it.
HOLD_EXIT = """
import atexit, os, time
def hold():
    open('stopping', 'w').close()
    for _ in range(600):
        if os.path.exists('untagged'):
            break
        time.sleep(0.1)
atexit.register(hold)
"""


@pytest.mark.server_config(
    # Long enough for the hold above: the kernel is not killed before the tag is gone.
    lambda _: {"KernelManager": {"shutdown_wait_time": 60.0}}
)
async def test_a_restart_refused_after_the_stop_ends_the_kernel_visibly(
    jp_fetch: Any, jp_ws_fetch: Any, jp_root_dir: Path, docker_client: docker.DockerClient
) -> None:
    """The tag goes while the kernel stops for its restart: the new launch is refused, and the
    kernel, which has no container left, is gone from the list (not "idle" with a websocket that
    answers 500); its page is told it is dead, and why."""
    ref = f"jgc-test/restart-ended:{TEST_RUN}"
    docker_client.images.get(DEBIAN_IMAGE).tag(ref)
    kernel_id = ""
    try:

        async def offered() -> bool:
            response = await jp_fetch("api", "kernelspecs")
            return kernel_name(ref) in json.loads(response.body)["kernelspecs"]

        await wait_until(offered, 60, "the tag's kernel spec")
        response = await jp_fetch(
            "api", "kernels", method="POST", body=json.dumps({"name": kernel_name(ref)})
        )
        kernel_id = json.loads(response.body)["id"]
        ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
        assert (await execute(ws, HOLD_EXIT)).status == "ok"

        restart = asyncio.ensure_future(
            jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="")
        )
        await wait_until(
            lambda: asyncio.sleep(0, (jp_root_dir / "stopping").exists()),
            60,
            "the kernel to stop for its restart",
        )
        docker_client.images.remove(ref)
        (jp_root_dir / "untagged").touch()
        with pytest.raises(HTTPClientError) as refused:
            await restart
        assert refused.value.code == 404
        sentence = json.loads(refused.value.response.body)["message"]
        assert ref in sentence and "it was shut down" in sentence, sentence

        # Gone from the list; its page told that it is dead, and why, then closed.
        listed = json.loads((await jp_fetch("api", "kernels")).body)
        assert kernel_id not in [k["id"] for k in listed]
        told, dead = "", False
        while (raw := await asyncio.wait_for(ws.read_message(), 30)) is not None:
            msg = json.loads(raw)
            if msg["msg_type"] == "stream" and msg["content"]["name"] == "stderr":
                told += msg["content"]["text"]
            dead = dead or msg["content"].get("execution_state") == "dead"
        assert dead and "it was shut down" in told, told
        assert ws.close_code == 1011
        ws.close()
        kernel_id = ""  # nothing left to shut down (the leak check counts its containers)
    finally:
        if kernel_id:
            await jp_fetch("api", "kernels", kernel_id, method="DELETE")
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(ref)
