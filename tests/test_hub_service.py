"""The kernel service under a real JupyterHub, end to end (issue #16, "Tests, with the real parts").

A real JupyterHub with its real proxy (tests/hub.py) spawns the two students' servers as their
own accounts, outside the docker group, with the kernel service as their gateway
(JUPYTER_GATEWAY_URL) and their own Hub API token as the gateway token. The kernel service
(`jupyter gpu-containers serve` as root, tests/service_process.py) is the Hub's service
``gpu-containers`` and checks those tokens with the Hub (ServiceIdentityProvider.auth =
"jupyterhub"). Each student's workspace is a directory they own, which is both the service's
UserDirectory.workspace_template and their server's root directory (c.Spawner.notebook_dir).

Everything a student does here goes through their OWN server, at its proxied URL, with a token
the Hub's API gives for them: notebook sessions, the kernel websocket. What the tests check on
the service itself, they check with the token the student's server sends it.
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import re
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from conftest import (
    DEBIAN_IMAGE,
    TEST_LABEL,
    TEST_RUN,
    kernel_container,
    kernel_name,
    write_notebook,
)
from hostusers import ids_of
from hub import (
    SERVICE_NAME,
    STUDENT_A,
    STUDENT_B,
    Hub,
    alive,
    connect_to_docker_socket,
    needs_students,
    process_credentials,
    process_environment,
    running_hub,
    server_api_token,
)
from kernel_io import execute
from servers import wait_until
from service_process import KernelService, ServiceUser
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.websocket import WebSocketClientConnection, websocket_connect

from jupyter_gpu_containers.base import labels as L

pytestmark = [needs_students, pytest.mark.usefixtures("docker_client")]

CPU_SPEC = kernel_name(DEBIAN_IMAGE)
ACCESS_SCOPE = f"access:services!service={SERVICE_NAME}"
# Seconds a kernel nobody is connected to may stay idle on the service, in the culling test:
# long enough that the check right after a server's kill -9 never races the culler.
CULL_IDLE_TIMEOUT = 20
# Generous: a 2-core machine runs the Hub, its proxy, two servers, the service and containers.
REQUEST_TIMEOUT = 180.0
EXECUTE_TIMEOUT = 120.0


@dataclass
class Deployment:
    hub: Hub
    service: KernelService


@dataclass
class Student:
    """A student's own server, as the Hub runs it (``pid``), reached through the Hub's proxy with
    ``api_token`` (a token of theirs the Hub's API made); ``server_token`` is what the server
    itself sends the kernel service."""

    name: str
    pid: int
    hub: Hub
    api_token: str
    server_token: str
    workspace: Path

    @property
    def as_service_user(self) -> ServiceUser:
        """The student as the kernel service sees them: their server's own token."""
        return ServiceUser(self.name, self.server_token, self.workspace)

    async def fetch(self, method: str, path: str, body: Any = None) -> HTTPResponse:
        request = HTTPRequest(
            f"{self.hub.url}/user/{self.name}/{path.lstrip('/')}",
            method=method,
            headers={"Authorization": f"token {self.api_token}"},
            body=None if body is None else json.dumps(body),
            allow_nonstandard_methods=True,
            request_timeout=REQUEST_TIMEOUT,
        )
        return await AsyncHTTPClient().fetch(request, raise_error=False)

    async def answer(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        response = await self.fetch(method, path, body)
        try:
            data = json.loads(response.body) if response.body else None
        except ValueError:
            data = response.body.decode("utf-8", "replace")
        return response.code, data

    async def open_notebook(self, path: str, spec: str = CPU_SPEC) -> dict[str, Any]:
        """A notebook session on the student's server (what JupyterLab does when it opens
        ``path``): its model."""
        code, session = await self.answer(
            "POST",
            "api/sessions",
            {"path": path, "type": "notebook", "name": Path(path).name, "kernel": {"name": spec}},
        )
        assert code == 201, (self.name, code, session)
        return dict(session)

    async def websocket(self, kernel_id: str) -> WebSocketClientConnection:
        """The kernel's websocket on the student's server (which relays it to the service)."""
        return await websocket_connect(
            HTTPRequest(
                f"ws://127.0.0.1:{self.hub.port}/user/{self.name}/api/kernels/{kernel_id}/channels",
                headers={"Authorization": f"token {self.api_token}"},
                request_timeout=REQUEST_TIMEOUT,
            )
        )

    async def run(self, kernel_id: str, code: str) -> Any:
        ws = await self.websocket(kernel_id)
        try:
            return await execute(ws, code, EXECUTE_TIMEOUT)
        finally:
            ws.close()


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    """The kernel service, authenticating with the Hub, and the Hub whose users' servers use it
    as their gateway. Stopped and removed at the end (the service's kernels with it)."""
    service = KernelService({"ServiceIdentityProvider": {"auth": "jupyterhub"}})
    try:
        for user in (STUDENT_A, STUDENT_B):
            service.add_workspace(user)
        # The service's workspace template is the users' servers' root directory too, so the
        # notebook directory a server sends (KERNEL_WORKING_DIR) lies in the kernel's workspace.
        workspace_template = str(service.home / "ws" / "{username}")
        with running_hub(
            [STUDENT_A, STUDENT_B],
            gateway_url=service.url,
            # Container starts on a busy 2-core machine can outlast the gateway client's
            # defaults (42 s).
            spawner_env={
                "JUPYTER_GATEWAY_REQUEST_TIMEOUT": str(int(REQUEST_TIMEOUT)),
                "JUPYTER_GATEWAY_CONNECT_TIMEOUT": "60",
            },
            extra_config=f"c.Spawner.notebook_dir = {workspace_template!r}",
        ) as hub:
            service.extra_env.update(hub.service_environment())
            service.start()
            yield Deployment(hub, service)
    finally:
        service.close()


def running_server(hub: Hub, user: str) -> int:
    """``user``'s server running, started (again) through the Hub if it is not: its pid."""
    server = hub.server_model(user)
    if server is not None:
        pid = server.get("state", {}).get("pid")
        if server.get("ready") and pid and alive(int(pid)):
            return int(pid)
        hub.stop_server(user)  # it died (a test killed it): the Hub cleans up, then a new one
    return hub.start_server(user)


@pytest.fixture
def students(
    deployment: Deployment, docker_client: docker.DockerClient, jp_asyncio_loop: Any
) -> Iterator[dict[str, Student]]:
    """Both students' servers, running. Afterwards, the kernels each student has on the service
    are shut down, and their containers are gone, before the suite's leak check."""
    hub, service = deployment.hub, deployment.service
    made: dict[str, Student] = {}
    for user in (STUDENT_A, STUDENT_B):
        pid = running_server(hub, user)
        made[user] = Student(
            name=user,
            pid=pid,
            hub=hub,
            api_token=hub.new_token(user),
            server_token=server_api_token(pid),
            workspace=service.home / "ws" / user,
        )
    yield made
    jp_asyncio_loop.run_until_complete(_shut_down_kernels(service, made, hub))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        # This run's kernel containers (others may run tests as the same students meanwhile).
        left = docker_client.containers.list(
            all=True, filters={"label": [f"{TEST_LABEL}={TEST_RUN}", L.KERNEL_ID]}
        )
        if not [c for c in left if c.labels.get(L.USER) in made]:
            break
        time.sleep(0.2)


async def _shut_down_kernels(service: KernelService, made: dict[str, Student], hub: Hub) -> None:
    for student in made.values():
        if alive(student.pid):
            # Sessions first, through the student's server, so it forgets them too.
            code, sessions = await student.answer("GET", "api/sessions")
            for session in sessions if code == 200 else []:
                await student.answer("DELETE", f"api/sessions/{session['id']}")
        # Then whatever the service still runs for them (a killed server's kernel, say), with
        # a fresh token: a killed server's own token may be gone with it.
        user = ServiceUser(student.name, hub.new_token(student.name, [ACCESS_SCOPE]), Path())
        code, kernels = await service.answer(user, "GET", "api/kernels")
        for kernel in kernels if code == 200 else []:
            await service.answer(user, "DELETE", f"api/kernels/{kernel['id']}")


def notebook_in_course(student: Student, name: str) -> str:
    """A notebook ``course/<name>`` in the student's workspace, owned by them: its path."""
    uid, gid = ids_of(student.name)
    course = student.workspace / "course"
    course.mkdir(exist_ok=True)
    os.chown(course, uid, gid)
    os.chown(write_notebook(student.workspace, f"course/{name}"), uid, gid)
    return f"course/{name}"


# ------------------------------------------------------------------------------------ tests


async def test_each_students_kernel_runs_as_them_in_their_workspace(
    deployment: Deployment, students: dict[str, Student], docker_client: docker.DockerClient
) -> None:
    service = deployment.service
    assert "users authenticate with their JupyterHub API tokens" in service.output()
    for student in students.values():
        # The server the Hub spawned is the student's, and uses the service as its gateway with
        # its own Hub token.
        environment = process_environment(student.pid)
        assert environment["JUPYTER_GATEWAY_URL"] == service.url
        assert environment["JUPYTER_GATEWAY_AUTH_TOKEN"] == student.server_token
        uid, gid = ids_of(student.name)
        assert process_credentials(student.pid)[:2] == (uid, gid)

        # The service's kernel specs, as the student's Launcher lists them.
        code, specs = await student.answer("GET", "api/kernelspecs")
        assert code == 200 and CPU_SPEC in specs["kernelspecs"], (code, specs)

        session = await student.open_notebook(notebook_in_course(student, "week1.ipynb"))
        kernel_id = session["kernel"]["id"]
        out = f"out-{student.name}.txt"
        result = await student.run(
            kernel_id,
            f"import os; open({out!r}, 'w').write('hi'); "
            "print(os.getuid(), os.getgid(), os.getcwd())",
        )
        assert result.status == "ok", result
        # Their uid, in the notebook's directory of their workspace.
        assert result.stdout.split() == [str(uid), str(gid), "/workspace/course"], result
        written = (student.workspace / "course" / out).stat()
        assert (written.st_uid, written.st_gid) == (uid, gid)
        assert (student.workspace / "course" / out).read_text() == "hi"

        # The kernel is the service's, booked to the student, whoever the server said it was.
        code, model = await service.answer(
            student.as_service_user, "GET", f"api/kernels/{kernel_id}"
        )
        assert code == 200, (code, model)
        labels = kernel_container(docker_client, kernel_id).labels
        assert (labels[L.USER], labels[L.UID]) == (student.name, str(uid))
        assert labels[L.NOTEBOOK] == "course/week1.ipynb"

    # The servers logged their starts (the Hub's log is theirs too), and no token with them.
    hub_log = deployment.hub.output()
    assert "GatewayKernelManager started kernel" in hub_log
    for student in students.values():
        assert student.server_token not in hub_log


async def test_one_students_token_cannot_reach_the_others_kernels(
    deployment: Deployment, students: dict[str, Student]
) -> None:
    service = deployment.service
    a, b = students[STUDENT_A], students[STUDENT_B]
    a_kernel = (await a.open_notebook(notebook_in_course(a, "mine.ipynb")))["kernel"]["id"]
    b_kernel = (await b.open_notebook(notebook_in_course(b, "theirs.ipynb")))["kernel"]["id"]
    # A's server's own token, as A's server sends it to the service.
    a_on_service = a.as_service_user
    nobody = str(uuid.uuid4())
    for method, path in [
        ("GET", "api/kernels/{}"),
        ("POST", "api/kernels/{}/interrupt"),
        ("POST", "api/kernels/{}/restart"),
        ("DELETE", "api/kernels/{}"),
    ]:
        theirs = await service.answer(a_on_service, method, path.format(b_kernel))
        none = await service.answer(a_on_service, method, path.format(nobody))
        assert theirs[0] == 404, (method, path, theirs)
        # Word for word the answer about a kernel that exists nowhere, but the id.
        assert json.dumps(theirs[1]).replace(b_kernel, "ID") == json.dumps(none[1]).replace(
            nobody, "ID"
        ), (method, path, theirs, none)
    with pytest.raises(HTTPClientError) as refused:
        await service.websocket(a_on_service, b_kernel)
    assert refused.value.code == 404

    # A's list, on the service and through A's server, is A's kernel alone.
    code, listing = await service.answer(a_on_service, "GET", "api/kernels")
    assert code == 200 and [k["id"] for k in listing] == [a_kernel], listing
    code, listing = await a.answer("GET", "api/kernels")
    assert code == 200 and [k["id"] for k in listing] == [a_kernel], listing
    # Nor does A's own server give A B's kernel, over REST or the websocket.
    assert (await a.answer("GET", f"api/kernels/{b_kernel}"))[0] == 404
    with pytest.raises(HTTPClientError) as refused:
        await a.websocket(b_kernel)
    assert refused.value.code == 404

    # B's kernel is untouched by all that: it runs B's code, and its list is B's alone.
    assert (await b.run(b_kernel, "print(6 * 7)")).stdout.strip() == "42"
    code, listing = await service.answer(b.as_service_user, "GET", "api/kernels")
    assert code == 200 and [k["id"] for k in listing] == [b_kernel], listing


def test_neither_students_server_can_open_the_docker_socket(students: dict[str, Student]) -> None:
    # The control: the socket is there, and root's process can connect to it.
    assert connect_to_docker_socket() == "connected"
    docker_gid = grp.getgrnam("docker").gr_gid
    for student in students.values():
        uid, gid, groups = process_credentials(student.pid)
        assert uid == ids_of(student.name)[0]
        assert docker_gid not in groups and gid != docker_gid, (student.name, groups)
        assert connect_to_docker_socket(student.pid) == "denied 13", student.name


async def test_a_killed_servers_kernel_stays_until_the_idle_culler_ends_it(
    deployment: Deployment, students: dict[str, Student], docker_client: docker.DockerClient
) -> None:
    hub, service = deployment.hub, deployment.service
    a = students[STUDENT_A]
    # The same service (port, state, workspaces) with a short idle policy, for this test only.
    service.stop()
    service.start(
        f"--MappingKernelManager.cull_idle_timeout={CULL_IDLE_TIMEOUT}",
        "--MappingKernelManager.cull_interval=1",
    )
    try:
        kernel_id = (await a.open_notebook(notebook_in_course(a, "left.ipynb")))["kernel"]["id"]
        container = kernel_container(docker_client, kernel_id)
        # A's page is connected to the kernel (through A's server, to the service): not idle.
        ws = await a.websocket(kernel_id)
        try:
            assert (await execute(ws, "x = 1", EXECUTE_TIMEOUT)).status == "ok"
            # A token of A's that outlives A's server (the server's own goes with it).
            a_on_service = ServiceUser(a.name, hub.new_token(a.name, [ACCESS_SCOPE]), a.workspace)
            code, model = await service.answer(a_on_service, "GET", f"api/kernels/{kernel_id}")
            assert code == 200 and model["connections"] >= 1, (code, model)

            os.kill(a.pid, signal.SIGKILL)

            async def ended() -> bool:
                return not alive(a.pid)

            await wait_until(ended, 30, f"{a.name}'s server to end")
        finally:
            ws.close()

        # The kernel outlives the server, on the service: running, with nobody connected.
        code, model = await service.answer(a_on_service, "GET", f"api/kernels/{kernel_id}")
        assert code == 200, (code, model)
        container.reload()
        assert container.status == "running"

        async def culled() -> bool:
            return (await service.answer(a_on_service, "GET", f"api/kernels/{kernel_id}"))[0] == 404

        await wait_until(culled, CULL_IDLE_TIMEOUT + 120, "the idle kernel to be culled")
        assert f"kernel '{CPU_SPEC}' ({kernel_id}) with 0 connections due to" in service.output()

        async def removed() -> bool:
            label = f"{L.KERNEL_ID}={kernel_id}"
            return not docker_client.containers.list(
                ignore_removed=True, all=True, filters={"label": label}
            )

        await wait_until(removed, 120, "the culled kernel's container to be removed")
    finally:
        hub.stop_server(a.name)  # the Hub forgets the killed server (the next test starts one)
        service.stop()
        service.start()


async def test_a_wrong_or_revoked_hub_token_is_told_so(deployment: Deployment) -> None:
    """Issue 26, finding 16: a token JupyterHub does not accept for the service (a wrong one, a
    revoked one, one without the service's scope) is refused 403 with a sentence about the
    token, a POST too (not the stock "'_xsrf' argument missing")."""
    hub, service = deployment.hub, deployment.service
    made = hub.api(
        "POST",
        f"users/{STUDENT_A}/tokens",
        {"note": "revoked before use", "expires_in": 3600, "scopes": [ACCESS_SCOPE]},
    )
    hub.api("DELETE", f"users/{STUDENT_A}/tokens/{made['id']}")
    tokens = {
        "wrong": "0" * 32,
        "revoked": made["token"],
        "narrow": hub.new_token(STUDENT_A, [f"read:users:name!user={STUDENT_A}"]),
    }
    for what, token in tokens.items():
        user = ServiceUser(STUDENT_A, token, Path())
        for method, path, body in (
            ("POST", "api/kernels", {"name": CPU_SPEC}),
            ("GET", "api/kernels", None),
        ):
            code, answer = await service.answer(user, method, path, body)
            assert code == 403, (what, method, code, answer)
            message = answer["message"]
            assert "JupyterHub does not accept the token" in message, (what, answer)
            assert ACCESS_SCOPE in message and "_xsrf" not in message, (what, answer)


def _browser_login(hub: Hub, user: str) -> requests.Session:
    """A browser's cookies for ``user``'s JupyterLab: logged in at the Hub's form (the test Hub's
    dummy authenticator takes any password), through the Hub's OAuth to the user's server, and
    the page loaded (where the server sets its ``_xsrf`` cookie, as for any JupyterLab page)."""
    browser = requests.Session()
    form = browser.get(f"{hub.url}/hub/login", timeout=REQUEST_TIMEOUT)
    xsrf = re.search(r'name="_xsrf"\s+value="([^"]+)"', form.text)
    assert form.status_code == 200 and xsrf, (form.status_code, form.text[:500])
    landed = browser.post(
        f"{hub.url}/hub/login",
        data={"username": user, "password": "any", "_xsrf": xsrf.group(1)},
        timeout=REQUEST_TIMEOUT,
    )
    assert landed.status_code == 200 and landed.url.startswith(f"{hub.url}/user/{user}/"), (
        landed.status_code,
        landed.url,
    )
    page = browser.get(f"{hub.url}/user/{user}/lab", timeout=REQUEST_TIMEOUT)
    assert page.status_code == 200, page.status_code
    return browser


def _page_xsrf_cookie(browser: requests.Session, user: str) -> str:
    """The ``_xsrf`` cookie the user's JupyterLab page reads (``document.cookie`` there holds
    the cookies of the server's path, not the Hub's own)."""
    for cookie in browser.cookies:
        if cookie.name == "_xsrf" and (cookie.path or "").startswith(f"/user/{user}"):
            return str(cookie.value)
    raise AssertionError(f"no _xsrf cookie for /user/{user}/: {list(browser.cookies)}")


async def test_the_kernel_log_streams_to_a_browser_logged_in_at_the_hub(
    deployment: Deployment, students: dict[str, Student]
) -> None:
    """Issue 27, item 3: behind JupyterHub the kernel view's log stream (an EventSource: a GET
    that cookies authenticate, with no header of the page's) is refused without the page's XSRF
    value (JupyterHub 4.1 and later), and streams with it in the query, as the panel sends it
    (api.ts streamCredentials)."""
    student = students[STUDENT_A]
    kernel_id = (await student.open_notebook(notebook_in_course(student, "log.ipynb")))["kernel"][
        "id"
    ]
    browser = await asyncio.to_thread(_browser_login, deployment.hub, student.name)
    xsrf = _page_xsrf_cookie(browser, student.name)
    log_url = f"{deployment.hub.url}/user/{student.name}/gpu-containers/kernels/{kernel_id}/log"
    # What Chromium sends with a same-origin EventSource.
    headers = {
        "Accept": "text/event-stream",
        "Sec-Fetch-Mode": "cors",
        "Sec-Fetch-Site": "same-origin",
        "Sec-Fetch-Dest": "empty",
    }

    def first_event(query: dict[str, str]) -> tuple[int, str]:
        with browser.get(
            log_url, params=query, headers=headers, stream=True, timeout=REQUEST_TIMEOUT
        ) as response:
            if response.status_code != 200:
                return response.status_code, response.text
            for line in response.iter_lines(decode_unicode=True):
                if line.startswith("event:"):
                    return 200, line.split(":", 1)[1].strip()
            return 200, ""

    code, body = await asyncio.to_thread(first_event, {"tail": "5"})
    assert code == 403, (code, body)
    code, event = await asyncio.to_thread(first_event, {"tail": "5", "_xsrf": xsrf})
    assert (code, event) == (200, "container"), (code, event)
