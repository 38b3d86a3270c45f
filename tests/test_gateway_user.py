"""A user's server in gateway mode (``--gateway-url``): /gpu-containers/ forwarded to the kernel
service, starts carrying the notebook's GPU request, a service that cannot be reached said in a
sentence, and no docker anywhere in the user's server process.

The kernel service here is a direct-mode server with the extension (root, the engine, four
static GPUs); the user's server runs as an account outside the docker group.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    DEBIAN_IMAGE,
    NGC_IMAGE,
    assert_no_test_containers,
    kernel_name,
    write_notebook,
    write_notebook_on,
)
from hostusers import BOB, MALLORY, UserHome
from moved_tags import marker_of
from servers import Server, write_server_config
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from jupyter_gpu_containers.kernel.launch_request import KERNEL_ID_ENV, WAIT_ENV
from jupyter_gpu_containers.server.gateway_user import forwarded_query, gateway_env

pytestmark = [
    pytest.mark.usefixtures("docker_client"),
    pytest.mark.skipif(not MALLORY, reason="needs JGC_TEST_OUTSIDER, an account outside docker"),
]

# -X importtime's report of the module docker itself (not docker_something).
DOCKER_IMPORTED = re.compile(r"^import time:.*\|\s*docker$", re.MULTILINE)


class Pair:
    """The kernel service (a direct-mode server as root) and a user's server in front of it."""

    def __init__(self, home: Path, user_home: UserHome) -> None:
        self.home = home
        self.user_home = user_home
        # Both report their imports (-X importtime), the service as a control for the check.
        self.service = Server(home, home / "ws", [], env={"PYTHONPROFILEIMPORTTIME": "1"})
        try:
            self.user = self.start_user()
        except BaseException:
            # The fixture never gets a Pair to stop: the service would outlive the test.
            self.service.stop()
            raise

    def start_user(self) -> Server:
        return self.user_home.start(
            f"--gateway-url={self.service.url}",
            f"--GatewayClient.auth_token={self.service.token}",
            "--GatewayClient.request_timeout=60",
            env={"PYTHONPROFILEIMPORTTIME": "1"},
        )

    @property
    def workspace(self) -> Path:
        return self.user_home.workspace

    async def delete_all_kernels(self) -> None:
        for kernel in await self.service.call("GET", "api", "kernels"):
            await self.service.call("DELETE", "api", "kernels", kernel["id"])


@pytest.fixture
def pair(tmp_path: Path, docker_client: Any) -> Iterator[Pair]:
    (tmp_path / "ws").mkdir()
    write_server_config(tmp_path)
    # The user's server reads no extension config of ours: it has no engine, no state.
    user_home = UserHome(MALLORY, {})
    made = None
    try:
        made = Pair(tmp_path, user_home)
        yield made
    finally:
        user_home.close()
        if made is not None:
            made.service.stop()
        assert_no_test_containers(docker_client)


async def _open_stream(server: Server, path: str) -> tuple[asyncio.StreamReader, Any, bytes]:
    """A raw GET of an event stream (a browser's EventSource): reader, writer, response head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        f"GET /{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: token {server.token}\r\n\r\n".encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    return reader, writer, head


def _connections_to(port: int) -> int:
    """Established TCP connections whose far end is ``port`` on this host (ss, as root)."""
    import subprocess

    out = subprocess.run(
        ["ss", "-Htn", "state", "established", f"dport = :{port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return len([line for line in out.splitlines() if line.strip()])


async def _until(check: Any, timeout: float) -> bool:
    """Whether the coroutine function ``check`` answers True before ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.2)
    return bool(await check())


async def _eventually(check: Any, timeout: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if check():
            return True
        await asyncio.sleep(0.1)
    return bool(check())


# ------------------------------------------------------------------------------ forwarding


async def test_routes_are_answered_by_the_service(pair: Pair) -> None:
    user, service = pair.user, pair.service
    # Reads: the service's own answers, through the user's server.
    code, gpus = await user.answer("GET", "gpu-containers", "gpus")
    assert code == 200
    assert [g["uuid"] for g in gpus["gpus"]] == [f"GPU-test-{i}" for i in range(4)]
    code, status = await user.answer("GET", "gpu-containers", "status")
    assert (code, status["engine"]["ok"]) == (200, True)
    response = await user.fetch("GET", "gpu-containers", "images")
    assert response.headers["Content-Type"].startswith("application/json")
    refs = {row["reference"] for row in json.loads(response.body)["images"]}
    assert DEBIAN_IMAGE in refs

    # Refusals keep the service's status and sentence.
    code, body = await user.answer("POST", "gpu-containers", "pulls", body={"image": ""})
    assert code == 400
    assert (
        body["message"]
        == (await service.answer("POST", "gpu-containers", "pulls", body={"image": ""}))[1][
            "message"
        ]
    )
    missing = "0" * 32
    code, body = await user.answer("GET", "gpu-containers", "pulls", missing)
    assert code == 404 and body["message"].startswith(f"There is no pull '{missing}'")
    code, body = await user.answer("GET", "gpu-containers", "no-such-route")
    assert (code, body["message"]) == (404, "There is no such GPU Containers endpoint.")

    # A body and methods other than GET: a registry login is kept by the service.
    login = {"username": "alice", "password": "s3cret"}
    response = await user.fetch(
        "PUT", "gpu-containers", "registries", "registry.example", "credentials", body=login
    )
    assert response.code == 204
    registries = (await service.call("GET", "gpu-containers", "registries"))["registries"]
    assert any(r.get("registry") == "registry.example" for r in registries), registries
    code, _ = await user.answer(
        "DELETE", "gpu-containers", "registries", "registry.example", "credentials"
    )
    assert code == 204
    code, body = await user.answer(
        "DELETE", "gpu-containers", "registries", "registry.example", "credentials"
    )
    assert code == 404 and "no credentials for registry.example" in body["message"]

    # The user's server authenticates its user first: no token, no forwarding.
    anonymous = await AsyncHTTPClient().fetch(
        HTTPRequest(f"{user.url}/gpu-containers/gpus"), raise_error=False
    )
    assert anonymous.code == 403


async def test_event_streams_pass_through_and_close_with_the_browser(pair: Pair) -> None:
    user, service = pair.user, pair.service
    model = await user.call("POST", "api", "kernels", body={"name": kernel_name(DEBIAN_IMAGE)})
    kernel_id = model["id"]
    try:
        assert [k["id"] for k in await service.call("GET", "api", "kernels")] == [kernel_id]
        before = _connections_to(service.port)
        reader, writer, head = await _open_stream(
            user, f"gpu-containers/kernels/{kernel_id}/log?tail=50"
        )
        assert b" 200 " in head.split(b"\r\n")[0]
        assert b"content-type: text/event-stream" in head.lower()
        # Events as they come: the kernel's start is in its log already.
        first = await asyncio.wait_for(reader.readuntil(b"\n\n"), 30)
        assert first.startswith((b"event:", b"data:", b":")) or b"data:" in first, first
        assert _connections_to(service.port) == before + 1
        # The browser leaves: the service's stream ends now, not at its next keepalive.
        writer.close()
        assert await _eventually(lambda: _connections_to(service.port) == before, 5)
    finally:
        await pair.delete_all_kernels()


def test_the_services_query_carries_none_of_this_servers_credentials() -> None:
    """A page's token or XSRF value (an event stream's URL carries one) is the user's server's
    credential: the service gets the rest of the query, with its own credentials elsewhere."""
    assert forwarded_query("tail=50&_xsrf=2%7Cab%7Ccd&token=secret") == "tail=50"
    assert forwarded_query("image=a%2Fb%3A1&empty=") == "image=a%2Fb%3A1&empty="
    assert forwarded_query("token=only") == ""
    assert forwarded_query("") == ""


# ---------------------------------------------------------------------------- kernel starts


def test_a_start_passes_on_only_what_the_gateway_sends() -> None:
    """The server's own environment (its Hub token, the gateway's) stays out of the start's
    arguments, which jupyter_server logs whole; what the gateway sends is unchanged."""
    env = {
        "JUPYTERHUB_API_TOKEN": "hub-secret",
        "JUPYTER_GATEWAY_AUTH_TOKEN": "gateway-secret",
        "PATH": "/usr/bin",
        "KERNEL_GPU_CONTAINERS_REQUEST": '{"count": 1}',
        "KERNEL_USERNAME": "mallory",
        "JPY_SESSION_NAME": "course/week1.ipynb",
        "LANG": "C.UTF-8",
    }
    assert gateway_env(env, " JPY_SESSION_NAME, LANG") == {
        "KERNEL_GPU_CONTAINERS_REQUEST": '{"count": 1}',
        "KERNEL_USERNAME": "mallory",
        "JPY_SESSION_NAME": "course/week1.ipynb",
        "LANG": "C.UTF-8",
    }
    assert gateway_env(env, "") == {
        "KERNEL_GPU_CONTAINERS_REQUEST": '{"count": 1}',
        "KERNEL_USERNAME": "mallory",
    }


async def test_refused_start_keeps_the_services_status_and_sentence(pair: Pair) -> None:
    user, service = pair.user, pair.service
    name = kernel_name(NGC_IMAGE)  # asks for one GPU; four static ones here
    try:
        for _ in range(4):
            await service.call("POST", "api", "kernels", body={"name": name})
        write_notebook(pair.workspace, "nb.ipynb")
        code, body = await user.answer("POST", "api", "kernels", body={"name": name})
        assert code == 409, body
        assert body["message"].startswith("No free GPU: 1 requested, 0 free"), body
        code, body = await user.answer(
            "POST",
            "api",
            "sessions",
            body={
                "path": "nb.ipynb",
                "type": "notebook",
                "name": "nb.ipynb",
                "kernel": {"name": name},
            },
        )
        assert code == 409, body
        assert body["message"].startswith("No free GPU: 1 requested, 0 free"), body
    finally:
        await pair.delete_all_kernels()


# ------------------------------------------------------------------------ service unreachable


async def test_a_service_that_cannot_be_reached_is_a_sentence(pair: Pair) -> None:
    user, service = pair.user, pair.service
    service.stop()
    sentence = f"The kernel service at {service.url} cannot be reached (connection refused)."
    for method, path, body in (
        ("GET", "gpu-containers/gpus", None),
        ("GET", "gpu-containers/images", None),
        ("POST", "gpu-containers/pulls", {"image": "ubuntu:24.04"}),
        ("POST", "api/kernels", {"name": kernel_name(DEBIAN_IMAGE)}),
        (
            "POST",
            "api/sessions",
            {"path": "a.ipynb", "type": "notebook", "name": "a.ipynb", "kernel": {"name": "x"}},
        ),
    ):
        code, answer = await user.answer(method, *path.split("/"), body=body)
        assert code == 503, (path, answer)
        assert answer["message"].startswith(sentence), (path, answer)
        assert "Ask your administrator" in answer["message"]
        assert "Traceback" not in json.dumps(answer)
    code, answer = await user.answer("GET", "gpu-containers", "notebooks", "kernel?path=a.ipynb")
    assert code == 200  # the notebook's own facts need no service: it has no kernel now
    # A notebook whose image's kernel spec cannot be read now: its image is not said to be gone
    # (the service is away, not the image).
    write_notebook_on(pair.workspace, "b.ipynb", DEBIAN_IMAGE, "sha256:" + "ab" * 32)
    code, answer = await user.answer("GET", "gpu-containers", "notebooks", "kernel?path=b.ipynb")
    assert (code, answer["retired"], answer["stamp"]["compared"]) == (200, None, False), answer
    # The status says it as the page shows an engine that is down (the Launcher card, the panel).
    code, status = await user.answer("GET", "gpu-containers", "status")
    assert code == 200 and status["engine"]["ok"] is False, status
    assert status["engine"]["message"].startswith(sentence), status
    assert "Traceback" not in user.output()


# --------------------------------------------------------------------------- no docker here


async def test_the_users_server_never_imports_docker(pair: Pair) -> None:
    user = pair.user
    await user.call("GET", "gpu-containers", "gpus")
    await user.call("GET", "api", "kernelspecs")
    kernel = await user.call("POST", "api", "kernels", body={"name": kernel_name(DEBIAN_IMAGE)})
    await user.call("DELETE", "api", "kernels", kernel["id"])
    output = user.output()
    reported = re.search(r"\|\s+jupyter_gpu_containers\.server\.gateway_user$", output, re.M)
    assert reported
    assert not DOCKER_IMPORTED.search(output)
    # The same report of the direct-mode server (the service) names docker: the check sees it.
    assert DOCKER_IMPORTED.search(pair.service.output())


# ------------------------------------------------------------------ a notebook's kernel


async def test_notebook_kernel_start_view_and_switch(pair: Pair) -> None:
    user, service = pair.user, pair.service
    write_notebook(pair.workspace, "nb.ipynb")
    debian, ngc = kernel_name(DEBIAN_IMAGE), kernel_name(NGC_IMAGE)
    try:
        started = await user.call(
            "POST",
            "gpu-containers",
            "notebooks",
            "kernel",
            body={"path": "nb.ipynb", "kernel_name": debian},
        )
        session = started["session"]
        first_id = session["kernel"]["id"]
        assert [k["id"] for k in await service.call("GET", "api", "kernels")] == [first_id]
        view = await user.call("GET", "gpu-containers", "notebooks", "kernel?path=nb.ipynb")
        assert view["kernel"]["id"] == first_id
        assert (view["kernel"]["image"], view["kernel"]["gpus"]) == (DEBIAN_IMAGE, [])
        assert view["default"] == 0 and view["request"] is None

        # Another kernel spec: the old kernel goes, the session (same id) gets the new one,
        # whose GPU the service's view of it names.
        switched = await user.call(
            "POST",
            "gpu-containers",
            "notebooks",
            "kernel",
            body={"path": "nb.ipynb", "kernel_name": ngc},
        )
        assert switched["session"]["id"] == session["id"]
        second_id = switched["session"]["kernel"]["id"]
        assert second_id != first_id
        assert [k["id"] for k in await service.call("GET", "api", "kernels")] == [second_id]
        view = await user.call("GET", "gpu-containers", "notebooks", "kernel?path=nb.ipynb")
        assert view["kernel"]["name"] == ngc and view["default"] == 1
        [gpu] = view["kernel"]["gpus"]
        assert gpu["uuid"] == f"GPU-test-{gpu['index']}"
    finally:
        await pair.delete_all_kernels()


# ------------------------------------------------------- through the kernel service itself


SERVICE_GONE = "jgc-test/retired-gone:2023"  # never on this host
SERVICE_RETIRED = {
    NGC_IMAGE: {"message": "Use Debian.", "redirect": DEBIAN_IMAGE},
    SERVICE_GONE: {"message": "Gone since March.", "redirect": DEBIAN_IMAGE},
}


@contextlib.contextmanager
def user_behind_service(
    docker_client: Any, config: dict[str, Any], request_timeout: int, *peers: str
) -> Iterator[tuple[Any, Any, list[Any], Server]]:
    """`jupyter gpu-containers serve` (service_process.py) with ``config``, and MALLORY's
    server in front of it, whose workspace is the one the service gives MALLORY; ``peers``:
    other accounts of the service (theirs). Everything stopped after, and no test container
    left."""
    from service_process import KernelService

    service = KernelService(config)
    user_home = UserHome(MALLORY, {})
    try:
        account = service.add_user(MALLORY)
        others = [service.add_user(peer) for peer in peers]
        service.start()
        server = Server(
            user_home.path,
            account.workspace,
            [
                f"--gateway-url={service.url}",
                f"--GatewayClient.auth_token={account.token}",
                f"--GatewayClient.request_timeout={request_timeout}",
            ],
            user=MALLORY,
        )
        user_home.servers.append(server)
        yield service, account, others, server
    finally:
        user_home.close()
        service.close()
        assert_no_test_containers(docker_client)


@pytest.fixture
def service_and_user(docker_client: Any) -> Iterator[tuple[Any, Any, Server]]:
    """The kernel service and MALLORY's server in front of it (user_behind_service), with
    images the administrator retired (test_a_retired_image_is_said_behind_the_service)."""
    config = {"ImageCatalog": {"deprecated_images": SERVICE_RETIRED}}
    with user_behind_service(docker_client, config, 60) as (service, account, _, server):
        yield service, account, server


async def test_a_start_carries_the_notebooks_gpu_request(
    service_and_user: tuple[Any, Any, Server],
) -> None:
    service, account, user = service_and_user
    ngc = kernel_name(NGC_IMAGE)  # one GPU by default
    write_notebook(account.workspace, "two.ipynb", gpus=2)
    session = await user.open_notebook("two.ipynb", ngc)
    kernel_id = session["kernel"]["id"]
    code, view = await service.answer(account, "GET", f"gpu-containers/kernels/{kernel_id}")
    assert code == 200, view
    assert len(view["gpus"]) == 2
    # The endpoint's own request wins over the saved one (a notebook that says nothing here).
    write_notebook(account.workspace, "given.ipynb")
    started = await user.call(
        "POST",
        "gpu-containers",
        "notebooks",
        "kernel",
        body={"path": "given.ipynb", "kernel_name": ngc, "gpus": ["GPU-test-3"]},
    )
    given_id = started["session"]["kernel"]["id"]
    code, view = await service.answer(account, "GET", f"gpu-containers/kernels/{given_id}")
    assert [g["uuid"] for g in view["gpus"]] == ["GPU-test-3"]
    # A request that cannot be met: the service's 409 and sentence, through the sessions API.
    write_notebook(account.workspace, "more.ipynb", gpus=2)
    code, body = await user.answer(
        "POST",
        "api",
        "sessions",
        body={
            "path": "more.ipynb",
            "type": "notebook",
            "name": "more.ipynb",
            "kernel": {"name": ngc},
        },
    )
    assert code == 409, body
    assert body["message"].startswith("No free GPU: 2 requested, 1 free"), body
    # The same kernel spec under another request: the service restarts that kernel in place.
    restarted = await user.call(
        "POST",
        "gpu-containers",
        "notebooks",
        "kernel",
        body={"path": "two.ipynb", "kernel_name": ngc, "gpus": 1},
    )
    assert restarted["session"]["kernel"]["id"] == kernel_id
    code, view = await service.answer(account, "GET", f"gpu-containers/kernels/{kernel_id}")
    assert len(view["gpus"]) == 1
    view = await user.call("GET", "gpu-containers", "notebooks", "kernel?path=two.ipynb")
    assert len(view["kernel"]["gpus"]) == 1
    for kernel in await user.call("GET", "api", "kernels"):
        await user.call("DELETE", "api", "kernels", kernel["id"])


async def test_a_start_carries_the_notebooks_pinned_digest(
    service_and_user: tuple[Any, Any, Server],
    docker_client: Any,
    private_registry: Any,
    moving_tag: dict[str, Any],
) -> None:
    """The content a notebook pins its image to (issue 31, item 1) runs behind the service too:
    the user's server reads the pin from the notebook and the service checks and runs it."""
    service, account, user = service_and_user
    ref = moving_tag["ref"]
    private_registry.push(moving_tag["second_local"], moving_tag["name"])
    docker_client.images.pull(ref, auth_config=private_registry.auth_config)  # the tag moved
    pinned = {"image_digest": moving_tag["first_digest"]}
    write_notebook(account.workspace, "pinned.ipynb", gpu_containers=pinned)

    # Until the service's image watcher has made the pulled image's kernel spec.
    async def offered() -> bool:
        specs = await user.call("GET", "api", "kernelspecs")
        return kernel_name(ref) in specs["kernelspecs"]

    assert await _until(offered, 60), "the service never offered the pulled image"
    session = await user.open_notebook("pinned.ipynb", kernel_name(ref))
    kernel_id = session["kernel"]["id"]
    assert marker_of(docker_client, kernel_id) == moving_tag["first"]
    code, view = await service.answer(account, "GET", f"gpu-containers/kernels/{kernel_id}")
    assert code == 200, view
    assert view["image"]["pinned"] == moving_tag["first_digest"]
    assert view["environment"]["digest"] == moving_tag["first_digest"]
    mine = await user.call("GET", "gpu-containers", "notebooks", "kernel?path=pinned.ipynb")
    assert mine["kernel"]["pinned"] == moving_tag["first_digest"]
    assert mine["kernel"]["environment"]["digest"] == moving_tag["first_digest"]
    # A notebook that recorded the first content, reopened: the user's server asks the service
    # what the tag names now, and finds it moved.
    stamp = {"image": ref, "digest": moving_tag["first_digest"]}
    write_notebook(account.workspace, "stamped.ipynb", gpu_containers={"environment": stamp})
    check = (await user.call("GET", "gpu-containers", "notebooks", "kernel?path=stamped.ipynb"))[
        "stamp"
    ]
    assert (check["compared"], check["moved"], check["recorded_present"]) == (True, True, True)
    assert check["tag_digest"] and check["tag_digest"] != moving_tag["first_digest"]
    # Without the pin, the tag's content now.
    write_notebook(account.workspace, "tag.ipynb")
    session = await user.open_notebook("tag.ipynb", kernel_name(ref))
    assert marker_of(docker_client, session["kernel"]["id"]) == moving_tag["second"]
    # A pin that is no digest is the service's 400 and sentence, and starts nothing.
    write_notebook(account.workspace, "other.ipynb", gpu_containers={"image_digest": "x"})
    code, body = await user.answer(
        "POST",
        "api",
        "sessions",
        body={
            "path": "other.ipynb",
            "type": "notebook",
            "name": "other.ipynb",
            "kernel": {"name": kernel_name(ref)},
        },
    )
    assert code == 400 and "which is not an image digest" in body["message"], body
    assert len(await user.call("GET", "api", "kernels")) == 2
    for kernel in await user.call("GET", "api", "kernels"):
        await user.call("DELETE", "api", "kernels", kernel["id"])


async def test_a_tag_moved_on_the_service_host_rolls_back_behind_the_service(
    local_moving_tag: dict[str, Any],
    service_and_user: tuple[Any, Any, Server],
    docker_client: Any,
) -> None:
    """Issue 62, item 11, behind the kernel service: a course image built on the service's
    host again under its tag. The user's server asks the service, which alone keeps the record
    of what the tag named; the pin it offers runs the first content there."""
    service, account, user = service_and_user
    ref, first_id = local_moving_tag["ref"], local_moving_tag["first_id"]

    async def offered() -> bool:
        specs = await user.call("GET", "api", "kernelspecs")
        return kernel_name(ref) in specs["kernelspecs"]

    assert await _until(offered, 60), "the service never offered the built image"
    write_notebook(account.workspace, "built.ipynb")
    session = await user.open_notebook("built.ipynb", kernel_name(ref))
    mine = await user.call("GET", "gpu-containers", "notebooks", "kernel?path=built.ipynb")
    stamp = mine["kernel"]["environment"]
    assert stamp["digest"] == first_id
    await user.call("DELETE", "api", "sessions", session["id"])

    docker_client.images.get(local_moving_tag["second_local"]).tag(*ref.split(":"))
    write_notebook(account.workspace, "built.ipynb", gpu_containers={"environment": stamp})
    check = (await user.call("GET", "gpu-containers", "notebooks", "kernel?path=built.ipynb"))[
        "stamp"
    ]
    assert (check["compared"], check["moved"], check["pinnable"]) == (True, True, True), check
    assert check["pin_reference"] == f"{ref.split(':')[0]}@{first_id}"
    pinned = {"environment": stamp, "image_digest": check["pin_reference"]}
    write_notebook(account.workspace, "built.ipynb", gpu_containers=pinned)
    session = await user.open_notebook("built.ipynb", kernel_name(ref))
    assert marker_of(docker_client, session["kernel"]["id"]) == local_moving_tag["first"]
    code, view = await service.answer(
        account, "GET", f"gpu-containers/kernels/{session['kernel']['id']}"
    )
    assert code == 200 and view["image"]["pinned"] == check["pin_reference"], view
    await user.call("DELETE", "api", "sessions", session["id"])


async def test_a_tag_moved_to_a_cpu_build_keeps_no_gpu_behind_the_service(
    course_tag: str,
    service_and_user: tuple[Any, Any, Server],
    docker_client: Any,
) -> None:
    """Issue 62, item 5, behind the kernel service: the user's server reads the notebook's
    saved request and says so with the start; on a tag moved to a CPU build the service starts
    the kernel without the GPU, while a GPU count chosen for the start stands."""
    service, account, user = service_and_user

    async def offered() -> bool:
        specs = await user.call("GET", "api", "kernelspecs")
        return kernel_name(course_tag) in specs["kernelspecs"]

    assert await _until(offered, 60), "the service never offered the course's tag"
    docker_client.images.get(DEBIAN_IMAGE).tag(*course_tag.split(":"))  # a CPU build now
    write_notebook(account.workspace, "week1.ipynb", gpus=1)
    session = await user.open_notebook("week1.ipynb", kernel_name(course_tag))
    kernel_id = session["kernel"]["id"]
    code, view = await service.answer(account, "GET", f"gpu-containers/kernels/{kernel_id}")
    assert code == 200 and view["gpus"] == [], view
    await user.call("DELETE", "api", "sessions", session["id"])
    started = await user.call(
        "POST",
        "gpu-containers",
        "notebooks",
        "kernel",
        body={"path": "week1.ipynb", "kernel_name": kernel_name(course_tag), "gpus": 1},
    )
    kernel_id = started["session"]["kernel"]["id"]
    code, view = await service.answer(account, "GET", f"gpu-containers/kernels/{kernel_id}")
    assert code == 200 and len(view["gpus"]) == 1, view
    await user.call("DELETE", "api", "kernels", kernel_id)


async def test_a_retired_image_is_said_behind_the_service(
    service_and_user: tuple[Any, Any, Server],
) -> None:
    """The administrator retires images in the service's configuration (issue 31, item 5): the
    user's server, which has none of it, tells a notebook on a retired image, or on one that is
    gone, what the service says, with the redirect's kernel spec as the service offers it."""
    _service, account, user = service_and_user
    ngc, debian = kernel_name(NGC_IMAGE), kernel_name(DEBIAN_IMAGE)

    async def offered() -> bool:
        specs = (await user.call("GET", "api", "kernelspecs"))["kernelspecs"]
        return ngc in specs and debian in specs

    assert await _until(offered, 60), "the service never offered the test images"
    specs = (await user.call("GET", "api", "kernelspecs"))["kernelspecs"]
    assert specs[ngc]["spec"]["metadata"]["gpu_containers"]["retired"]["redirect"] == DEBIAN_IMAGE
    catalog = await user.call("GET", "gpu-containers", "images")
    rows = {row["reference"]: row for row in catalog["images"]}
    assert rows[NGC_IMAGE]["retired"] == {"message": "Use Debian.", "redirect": DEBIAN_IMAGE}

    write_notebook_on(account.workspace, "old.ipynb", NGC_IMAGE)
    view = await user.call("GET", "gpu-containers", "notebooks", "kernel?path=old.ipynb")
    assert view["retired"] == {
        "state": "retired",
        "image": NGC_IMAGE,
        "message": "Use Debian.",
        "redirect": DEBIAN_IMAGE,
        "redirect_kernel_name": debian,
    }
    write_notebook_on(account.workspace, "gone.ipynb", SERVICE_GONE, "sha256:" + "ab" * 32)
    view = await user.call("GET", "gpu-containers", "notebooks", "kernel?path=gone.ipynb")
    assert view["retired"] == {
        "state": "removed",
        "image": SERVICE_GONE,
        "message": "Gone since March.",
        "redirect": DEBIAN_IMAGE,
        "redirect_kernel_name": debian,
    }


@pytest.fixture
def one_gpu_service(docker_client: Any) -> Iterator[tuple[Any, Any, Any, Server]]:
    """The kernel service with one GPU (which BOB's kernel will hold), and MALLORY's server in
    front of it, as the multi-user demo sets them up: waiting is a start's own choice there
    (``GPUQueue.wait_by_default`` is False). Its requests wait long (a start waits for the
    GPU)."""
    from conftest import STATIC_GPUS

    config = {"GPUInventory": {"static_gpus": STATIC_GPUS[:1]}}
    with user_behind_service(docker_client, config, 300, BOB) as (service, account, peers, server):
        yield service, account, peers[0], server


@pytest.mark.skipif(not BOB, reason="needs JGC_TEST_PEER, a second account")
async def test_a_notebook_waiting_behind_the_service_is_one_session_wherever_it_is_opened(
    one_gpu_service: tuple[Any, Any, Any, Server],
) -> None:
    """Behind the kernel service a notebook's start that waits for a GPU is listed by the
    user's server as it is in direct mode (issue 62, items 1 and 2): the panel's "New notebook
    that waits" finds its session at once; the file browser, a reload or a second tab (JupyterLab's
    own session requests, under a path of its own) join that wait instead of being told "No
    free GPU" for the student's own ticket; the kernels API lists it under the id the service's
    kernel will have; Shut Down cancels it there; and the grant gives every request the same
    session and a kernel that runs code."""
    service, account, holder, user = one_gpu_service
    gpu_spec = kernel_name(NGC_IMAGE)  # one GPU by default
    held = await service.start_kernel(holder, gpu_spec)
    write_notebook(account.workspace, "course/w.ipynb", gpus=1)
    panel_body = {"path": "course/w.ipynb", "kernel_name": gpu_spec, "wait": True}

    def as_jupyterlab() -> dict[str, Any]:
        return {
            "path": f"course/{uuid.uuid4()}",
            "name": "w.ipynb",
            "type": "notebook",
            "kernel": {"name": gpu_spec},
        }

    async def waiting_session() -> dict[str, Any] | None:
        code, sessions = await user.answer("GET", "api", "sessions")
        assert code == 200, sessions
        assert len(sessions) <= 1, sessions
        return sessions[0] if sessions else None

    async def yours() -> list[dict[str, Any]]:
        code, body = await user.answer("GET", "gpu-containers", "queue")
        assert code == 200, body
        return [t for t in body["queue"] if t.get("yours")]

    for round_ in ("DELETE /api/sessions", "DELETE /api/kernels", "granted"):
        panel = asyncio.ensure_future(
            user.answer("POST", "gpu-containers", "notebooks", "kernel", body=panel_body)
        )
        assert await _until(lambda: waiting_session(), 60), "the waiting start was not listed"
        listed = await waiting_session()
        assert listed is not None
        assert listed["path"] == "course/w.ipynb", listed
        assert listed["kernel"]["execution_state"] == "waiting for a GPU", listed
        kernel_id = listed["kernel"]["id"]
        (ticket,) = await yours()
        assert ticket["kernel_id"] == kernel_id  # the id the user's server chose, on the service
        code, kernels = await user.answer("GET", "api", "kernels")
        assert code == 200 and [k["id"] for k in kernels] == [kernel_id], kernels
        assert kernels[0]["execution_state"] == "waiting for a GPU"
        code, model = await user.answer("GET", "api", "kernels", kernel_id)
        assert code == 200 and model["execution_state"] == "waiting for a GPU", model
        # The file browser, a reload, a second tab: each joins the wait, under its own path.
        for _ in range(2):
            body = as_jupyterlab()
            code, joined = await user.answer("POST", "api", "sessions", body=body)
            assert code == 201, joined
            assert joined["id"] == listed["id"] and joined["kernel"]["id"] == kernel_id
            assert joined["path"] == body["path"]
            code, moved = await user.answer(
                "PATCH", "api", "sessions", listed["id"], body={"path": "course/w.ipynb"}
            )
            assert code == 200 and moved["path"] == "course/w.ipynb", moved
        # The panel again: told that it waits already, in a sentence.
        code, again = await user.answer(
            "POST", "gpu-containers", "notebooks", "kernel", body=panel_body
        )
        assert code == 409 and "already waiting" in again["message"], again
        assert len(await yours()) == 1
        if round_ != "granted":
            # JupyterLab's Shut Down (either API): the wait ends on the service, and the
            # panel's start with it.
            if round_ == "DELETE /api/sessions":
                code, _ = await user.answer("DELETE", "api", "sessions", listed["id"])
            else:
                code, _ = await user.answer("DELETE", "api", "kernels", kernel_id)
            assert code == 204, round_
            code, ended = await asyncio.wait_for(panel, 60)
            assert code == 409 and "cancelled" in ended["message"], ended
            assert await yours() == []
            assert await waiting_session() is None
            assert (await user.answer("GET", "api", "kernels")) == (200, [])
            continue
        await service.answer(holder, "DELETE", f"api/kernels/{held}")
        code, started = await asyncio.wait_for(panel, 120)
        assert code == 200, started
        assert started["session"]["kernel"]["id"] == kernel_id
        running = await waiting_session()
        assert running is not None and running["id"] == listed["id"]
        assert running["kernel"]["id"] == kernel_id
        assert running["kernel"]["execution_state"] != "waiting for a GPU"
        # A tab that had no session when the wait ended takes the notebook's up by its kernel:
        # that session, under the path it asked for, never a second one.
        body = {**as_jupyterlab(), "kernel": {"id": kernel_id}}
        code, same = await user.answer("POST", "api", "sessions", body=body)
        assert code == 201 and same["id"] == listed["id"] and same["path"] == body["path"]
        assert (await waiting_session()) is not None  # (one session: it asserts so)
        assert (await user.execute(kernel_id, "print(6 * 7)")).stdout.strip() == "42"

    # A restart that waits (the toolbar's GPU choice with "wait"), behind the service too: the
    # notebook's kernel gives its GPU up first, BOB's start waiting ahead of it gets it, and the
    # restart's wait is listed as the kernel's; it runs again once BOB is done.
    bobs = asyncio.ensure_future(
        service.answer(holder, "POST", "api/kernels", {"name": gpu_spec, "env": {WAIT_ENV: "true"}})
    )

    async def bob_waits() -> bool:
        code, body = await service.answer(holder, "GET", "gpu-containers/queue")
        return code == 200 and len(body["queue"]) == 1

    assert await _until(bob_waits, 60), "BOB's start never waited"
    restart = asyncio.ensure_future(
        user.answer("POST", "gpu-containers", "notebooks", "kernel", body={**panel_body, "gpus": 1})
    )
    code, bob_kernel = await asyncio.wait_for(bobs, 120)
    assert code == 201, bob_kernel
    assert await _until(lambda: yours(), 60), "the restart never waited"
    assert [t["kernel_id"] for t in await yours()] == [kernel_id]
    await service.answer(holder, "DELETE", f"api/kernels/{bob_kernel['id']}")
    code, restarted = await asyncio.wait_for(restart, 120)
    assert code == 200 and restarted["session"]["kernel"]["id"] == kernel_id, restarted
    assert (await user.execute(kernel_id, "print(6 * 7)")).stdout.strip() == "42"
    await user.answer("DELETE", "api", "sessions", running["id"])


@pytest.mark.skipif(not BOB, reason="needs JGC_TEST_PEER, a second account")
async def test_the_service_starts_a_kernel_under_a_chosen_id_only_when_it_is_free(
    one_gpu_service: tuple[Any, Any, Any, Server],
) -> None:
    """A user's server chooses a new kernel's id (``KERNEL_GPU_CONTAINERS_KERNEL_ID``): the
    service starts the kernel under it when it is a new id in canonical form, refuses a
    malformed one in a sentence, and refuses one that is taken with one answer, whoever's
    kernel has it (another user's, the caller's own)."""
    service, account, holder, _user = one_gpu_service
    cpu_spec = kernel_name(DEBIAN_IMAGE)
    theirs = await service.start_kernel(holder, cpu_spec)
    chosen = str(uuid.uuid4())
    mine = await service.start_kernel(account, cpu_spec, {KERNEL_ID_ENV: chosen})
    assert mine == chosen
    answers = []
    for taken in (theirs, mine):
        code, body = await service.answer(
            account, "POST", "api/kernels", {"name": cpu_spec, "env": {KERNEL_ID_ENV: taken}}
        )
        answers.append((code, body["message"].replace(taken, "<id>")))
    assert answers[0] == answers[1], answers
    assert answers[0][0] == 409 and "is taken" in answers[0][1], answers
    for malformed in ("nope", chosen.upper(), chosen.replace("-", ""), "../" + chosen[3:]):
        code, body = await service.answer(
            account, "POST", "api/kernels", {"name": cpu_spec, "env": {KERNEL_ID_ENV: malformed}}
        )
        assert code == 400 and KERNEL_ID_ENV in body["message"], (malformed, body)
    code, kernels = await service.answer(account, "GET", "api/kernels")
    assert [k["id"] for k in kernels] == [mine]
    await service.answer(account, "DELETE", f"api/kernels/{mine}")
    await service.answer(holder, "DELETE", f"api/kernels/{theirs}")
