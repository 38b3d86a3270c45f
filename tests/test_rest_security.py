"""The REST API's security controls, each tested so that the test fails when the control goes.

1. Every route of this extension, as the running server registered it, refuses a request without
   a login (403) and does nothing; every handler method carries ``@web.authenticated`` and
   ``@authorized`` on the ``gpu_containers`` resource; an Authorizer that denies that resource
   closes every route, and one that allows only "read" leaves only the GETs open.
2. Browser logins (the login cookie) need the XSRF token for anything but a GET, and requests
   from another origin are refused.
3. Registry passwords go nowhere: not in the server's DEBUG log, responses, event streams, files,
   container metadata or the process list, after failed and successful private pulls.
4. Users on one host see only that another user's GPU is taken; they cannot read, restart or
   switch another user's kernels, nor see their pulls or logins.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import docker
import pytest
from conftest import DEBIAN_IMAGE, TEST_LABEL, TEST_RUN, kernel_name
from jupyter_server.auth import Authorizer
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from registry import PrivateRegistry
from servers import Server, write_server_config
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse
from tornado.routing import PathMatches

from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.routes.base import AUTH_RESOURCE, NotFoundHandler
from jupyter_gpu_containers.routes.handlers import default_handlers
from jupyter_gpu_containers.services import services_for

pytestmark = [
    pytest.mark.usefixtures("docker_client"),
    # GPUs of this module's own (tests running beside it on the engine book GPU-test-*), and
    # jupyter_server's server-wide login check off, as it is by default: with it on, the server
    # itself would close a handler that lost its decorators, and these tests could not see it.
    pytest.mark.server_config(
        lambda _: {
            "ServerApp": {"allow_unauthenticated_access": True},
            # This server's account is an administrator: the admin routes then answer what a
            # read-only authorizer lets through, like every other route.
            "GPUAdmin": {"admin_users": [pwd.getpwuid(os.getuid()).pw_name]},
            "GPUInventory": {
                "static_gpus": [
                    {"index": i, "uuid": f"GPU-rest-{i}", "name": "Tesla T4", "brand": "tesla"}
                    for i in range(2)
                ]
            },
        }
    ),
]

HANDLER_METHODS = ("get", "post", "put", "delete", "patch")
# The resource every route must be authorised on: this extension's own namespace.
RESOURCE = "gpu_containers"
REGISTRY = "127.0.0.1:5000"
# A kernel id no kernel has (none runs in these tests): the kernel view's routes need one.
NO_KERNEL = "00000000-0000-0000-0000-000000000000"
NOTEBOOK = "sec/nb.ipynb"
# A pull that fails at once without leaving the host: nothing listens on port 1.
UNREACHABLE = f"127.0.0.1:1/jgc-rest/absent:{TEST_RUN}"
EVIL_ORIGIN = "http://evil.example"


# --------------------------------------------------------------------------- the routes


@dataclass
class Route:
    pattern: str  # as registered, with the server's base_url
    handler: type[web.RequestHandler]
    url: str  # a concrete path that the pattern matches
    methods: list[str]  # the HTTP methods the handler implements, upper case

    def __str__(self) -> str:
        return f"{self.handler.__name__} {self.url}"


def handler_methods(handler: type[web.RequestHandler]) -> list[str]:
    """The HTTP methods a handler implements itself (on it or its bases below APIHandler), so
    APIHandler's own OPTIONS (open by design, for CORS preflight) is not one of them."""
    own = [
        klass
        for klass in handler.__mro__
        if not (
            klass is object
            or issubclass(APIHandler, klass)
            or issubclass(web.RequestHandler, klass)
        )
    ]
    return sorted(
        {name.upper() for klass in own for name in HANDLER_METHODS if name in vars(klass)}
    )


def registered_routes(
    web_app: web.Application, base_url: str, values: dict[str, str]
) -> list[Route]:
    """Every route under ``<base_url>gpu-containers`` that the running server's tornado app
    dispatches to, found by walking its routers (not this package's own list: a route added
    another way is found too), each with a concrete URL whose path parameters are ``values``."""
    prefix = url_path_join(base_url, "gpu-containers")
    found: dict[str, Route] = {}

    def walk(router: Any) -> None:
        for rule in getattr(router, "rules", []):
            target = rule.target
            if hasattr(target, "rules"):  # a router of its own (the app's per-host routers)
                walk(target)
            elif (
                isinstance(rule.matcher, PathMatches)
                and isinstance(target, type)
                and issubclass(target, web.RequestHandler)
                and target is not NotFoundHandler  # any other path's 404 (test_shared_host)
                and rule.matcher.regex.pattern.startswith(prefix)
            ):
                pattern = rule.matcher.regex.pattern

                def fill(match: re.Match[str], pattern: str = pattern) -> str:
                    name = match.group(1)
                    if name not in values:
                        pytest.fail(f"{pattern}: give a value for the path parameter {name!r}")
                    return values[name]

                url = re.sub(r"\(\?P<(\w+)>[^)]*\)", fill, pattern).removesuffix("$")
                assert "(" not in url and "\\" not in url, f"{pattern}: not a plain path"
                assert rule.matcher.regex.match(url), (pattern, url)  # the pattern ends in $
                found.setdefault(pattern, Route(pattern, target, url, handler_methods(target)))

    walk(web_app.default_router)
    return sorted(found.values(), key=lambda route: route.url)


def decorator_code(decorator: Any) -> Any:
    """The code object of the wrapper a decorator puts around any method (the same for all)."""

    async def method(self: Any) -> None:
        pass

    return decorator(method).__code__


def test_every_handler_method_is_authenticated_then_authorized(world: World) -> None:
    """Each method of each registered handler is wrapped by tornado's @web.authenticated, then
    by jupyter_server's @authorized, on this extension's resource. (A missing
    @web.authenticated alone would not change an answer: @authorized also refuses anonymous
    requests; this is where its loss shows.)"""
    authenticated, authorized_ = decorator_code(web.authenticated), decorator_code(authorized)
    checked = []
    for handler in {route.handler for route in world.routes}:
        assert getattr(handler, "auth_resource", None) == RESOURCE == AUTH_RESOURCE, handler
        for method in handler_methods(handler):
            chain, fn = [], getattr(handler, method.lower())
            while fn is not None:
                chain.append(fn.__code__)
                fn = getattr(fn, "__wrapped__", None)
            where = f"{handler.__name__}.{method.lower()}"
            assert authenticated in chain, f"{where} lacks @web.authenticated"
            assert authorized_ in chain, f"{where} lacks @authorized"
            assert chain.index(authenticated) < chain.index(authorized_), (
                f"{where}: @web.authenticated must come first (outermost)"
            )
            checked.append(where)
    assert len(checked) == sum(len(route.methods) for route in world.routes) >= 14, checked


# --------------------------------------------------------------------------- the server's state


@dataclass
class World:
    """What a request that got through could have changed, and a client that sends exactly
    the headers it is given (pytest-jupyter's jp_fetch always adds the token)."""

    app: Any
    client: Any  # pytest-jupyter's http_server_client
    base_url: str
    token: str
    docker_client: docker.DockerClient
    pull_id: str = ""
    routes: list[Route] = field(default_factory=list)

    async def fetch(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> HTTPResponse:
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b"{}"
        response: HTTPResponse = await self.client.fetch(
            url,
            method=method,
            headers=headers or {},
            body=body,
            raise_error=False,
            follow_redirects=False,
            allow_nonstandard_methods=True,
            request_timeout=60,
        )
        return response

    def with_token(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def kernel_containers(self) -> list[Any]:
        return list(
            self.docker_client.containers.list(
                all=True, filters={"label": [f"{TEST_LABEL}={TEST_RUN}", L.KERNEL_ID]}
            )
        )

    async def assert_nothing_happened(self) -> None:
        """No kernel, session, container, new pull or changed login, and the notebook (which
        keeps its GPU request) not written."""
        app = self.app
        assert [p["id"] for p in services_for(app).pulls.listing()] == [self.pull_id]
        assert services_for(app).credentials.listing() == [
            {"registry": REGISTRY, "username": "alice", "source": "user"}
        ]
        assert services_for(app).credentials.for_registry(REGISTRY).password == "pw-alice"
        assert await app.session_manager.list_sessions() == []
        assert app.kernel_manager.list_kernel_ids() == []
        os_path = os.path.join(app.kernel_manager.root_dir, *NOTEBOOK.split("/"))
        assert not os.path.exists(os_path)
        assert self.kernel_containers() == []


# Bodies that would act if they got through: start a kernel on a GPU, start a pull, replace the
# stored login. Any other route gets "{}".
def acting_body(route: Route, method: str) -> bytes | None:
    if method not in ("POST", "PUT", "PATCH"):
        return None
    if route.url.endswith("/notebooks/kernel"):
        body: Any = {"path": NOTEBOOK, "kernel_name": kernel_name(DEBIAN_IMAGE), "gpus": 1}
    elif route.url.endswith("/pulls"):
        body = {"image": UNREACHABLE}
    elif route.url.endswith("/credentials"):
        body = {"username": "mallory", "password": "pw-mallory"}
    else:
        body = {}
    return json.dumps(body).encode()


def with_query(route: Route, method: str) -> str:
    """GET /notebooks/kernel needs its ?path=, GET /images/content its ?ref= (without them a
    400 would hide a 200)."""
    if method == "GET" and route.url.endswith("/notebooks/kernel"):
        return f"{route.url}?path={NOTEBOOK}"
    if method == "GET" and route.url.endswith("/images/content"):
        return f"{route.url}?ref={DEBIAN_IMAGE}"
    return route.url


@pytest.fixture
def world(
    jp_serverapp: Any,
    jp_asyncio_loop: asyncio.AbstractEventLoop,
    http_server_client: Any,
    jp_base_url: str,
    jp_root_dir: Path,
    docker_client: docker.DockerClient,
) -> World:
    """The server with one ended pull and one stored login, so that a request that got through
    would have something to read, cancel or forget; and every route of the extension."""
    (jp_root_dir / "sec").mkdir()
    app = jp_serverapp

    async def ended_pull() -> str:
        pulls = services_for(app).pulls
        pull = await pulls.start(UNREACHABLE)
        await asyncio.wait_for(pulls.wait(pull), 60)
        return pull.id

    pull_id = jp_asyncio_loop.run_until_complete(ended_pull())
    services_for(app).credentials.set_user(REGISTRY, "alice", "pw-alice")
    w = World(
        app=app,
        client=http_server_client,
        base_url=jp_base_url,
        token=app.identity_provider.token,
        docker_client=docker_client,
        pull_id=pull_id,
    )
    w.routes = registered_routes(
        app.web_app,
        jp_base_url,
        # No kernel runs here: a kernel's view answers its 404 once a request gets through.
        {
            "pull_id": pull_id,
            "registry": REGISTRY,
            "kernel_id": NO_KERNEL,
            # A packages folder's key this user has no folder of: its reset answers 404.
            "key": "pytorch-24.05-py3-000000000000",
            # A save there is none of: its read and cancel answer 404.
            "save_id": "0" * 32,
        },
    )
    return w


async def xsrf_cookie(w: World) -> str:
    """A real _xsrf token: the login page sets the cookie (the same value goes in the header)."""
    response = await w.fetch("GET", url_path_join(w.base_url, "login"))
    for header in response.headers.get_list("Set-Cookie"):
        name, _, rest = header.partition("=")
        if name == "_xsrf":
            return rest.split(";", 1)[0]
    raise AssertionError(f"no _xsrf cookie from the login page: {response.headers}")


# --------------------------------------------------------------------------- 1. no login


async def test_every_route_refuses_requests_without_a_login(world: World) -> None:
    w = world
    documented = [h for _, h in default_handlers("/gpu-containers") if h is not NotFoundHandler]
    assert len(w.routes) == len(documented) >= 10, w.routes
    xsrf = await xsrf_cookie(w)
    anonymous_variants = {
        "no credentials": {},
        "a wrong token": {"Authorization": "token not-the-token"},
        "a wrong token in the query": None,  # ?token=… below
        # A valid XSRF pair and no login: the XSRF check passes, so only the handler's own
        # authentication can refuse a POST, PUT or DELETE.
        "XSRF but no login": {"Cookie": f"_xsrf={xsrf}", "X-XSRFToken": xsrf},
    }
    tried = 0
    for route in w.routes:
        assert route.methods, f"{route} implements no method"
        for method in route.methods:
            for what, headers in anonymous_variants.items():
                url = with_query(route, method)
                if headers is None:
                    url += ("&" if "?" in url else "?") + "token=not-the-token"
                response = await w.fetch(method, url, headers or {}, acting_body(route, method))
                assert response.code == 403, (str(route), method, what, response.body[:300])
                body = json.loads(response.body)
                assert set(body) <= {"message", "reason"}, body  # a JSON error, nothing else
                tried += 1
    await w.assert_nothing_happened()
    assert tried == 4 * sum(len(r.methods) for r in w.routes) >= 56


async def test_bodies_that_are_not_json_are_refused_with_a_400(world: World) -> None:
    """Not UTF-8, not JSON, nested too deeply: a sentence and a 400, never a 500 (jupyter_server's
    own body reader fails on the first with an unhandled error)."""
    w = world
    bodies = [b"\xff\xfe{}", b'{"username": "u", "password": "pw-', b"[" * 100_000]
    tried = 0
    for route in w.routes:
        for method in route.methods:
            if method not in ("POST", "PUT", "PATCH"):
                continue
            for body in bodies:
                response = await w.fetch(method, route.url, w.with_token(), body)
                assert response.code == 400, (str(route), body[:20], response.body[:300])
                assert (
                    json.loads(response.body)["message"] == "The request body must be JSON (UTF-8)."
                )
                tried += 1
    # notebooks/kernel, pulls, credentials, restart, keep, save, builds, admin action
    assert tried == 8 * len(bodies), tried
    await w.assert_nothing_happened()


# --------------------------------------------------------------------------- 1. authorizers

ASKED: list[tuple[str, str, str]] = []  # (action, resource, path) as the authorizer saw them


class _RecordingAuthorizer(Authorizer):
    """Allows everything outside this extension's resource (the login, the kernels API)."""

    allowed_actions: ClassVar[frozenset[str]] = frozenset()

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        if resource != RESOURCE:
            return True
        ASKED.append((action, resource, handler.request.path))
        return action in self.allowed_actions


class DenyGPUContainers(_RecordingAuthorizer):
    allowed_actions = frozenset()


class ReadOnlyGPUContainers(_RecordingAuthorizer):
    allowed_actions = frozenset({"read"})


@pytest.fixture
def asked() -> Iterator[list[tuple[str, str, str]]]:
    ASKED.clear()
    yield ASKED
    ASKED.clear()


EXPECTED_ACTION = {
    "GET": "read",
    "POST": "write",
    "PUT": "write",
    "DELETE": "write",
    "PATCH": "write",
}


@pytest.mark.server_config(lambda _: {"ServerApp": {"authorizer_class": DenyGPUContainers}})
async def test_an_authorizer_denying_the_resource_closes_every_route(
    world: World, asked: list[tuple[str, str, str]]
) -> None:
    w = world
    # The token works for the server's own API: only this extension's resource is denied.
    assert (
        await w.fetch("GET", url_path_join(w.base_url, "api/kernels"), w.with_token())
    ).code == 200
    for route in w.routes:
        for method in route.methods:
            asked.clear()
            response = await w.fetch(
                method, with_query(route, method), w.with_token(), acting_body(route, method)
            )
            assert response.code == 403, (str(route), method, response.body[:300])
            assert f"resource: {RESOURCE}" in json.loads(response.body)["message"]
            # Asked once, on this extension's resource, for the method's action.
            assert [(a, r) for a, r, _ in asked] == [(EXPECTED_ACTION[method], RESOURCE)], asked
    await w.assert_nothing_happened()


@pytest.mark.server_config(lambda _: {"ServerApp": {"authorizer_class": ReadOnlyGPUContainers}})
async def test_a_read_only_authorizer_leaves_only_the_gets_open(
    world: World, asked: list[tuple[str, str, str]]
) -> None:
    w = world
    codes: dict[str, int] = {}
    for route in w.routes:
        for method in route.methods:
            response = await w.fetch(
                method, with_query(route, method), w.with_token(), acting_body(route, method)
            )
            codes[f"{method} {route.url}"] = response.code
            expected = 200 if method == "GET" else 403
            if method == "GET" and f"/kernels/{NO_KERNEL}" in route.url:
                expected = 404  # through: no kernel runs here, so none of yours
            if method == "GET" and "/saves/" in route.url:
                expected = 404  # through: no save of yours is kept here
            assert response.code == expected, (str(route), method, response.body[:300])
    assert sorted(set(codes.values())) == [200, 403, 404], codes
    assert {a for a, _, _ in asked} == {"read", "write"}
    await w.assert_nothing_happened()


# --------------------------------------------------------------------------- 2. cookies


async def test_cookie_logins_need_the_xsrf_token_and_the_same_origin(world: World) -> None:
    w = world
    # Log in as a browser does: a request with the token sets the login cookie.
    response = await w.fetch("GET", f"{w.base_url}?token={w.token}")
    login = next(
        (
            c.split(";", 1)[0]
            for c in response.headers.get_list("Set-Cookie")
            if c.startswith("username-")
        ),
        None,
    )
    assert login, f"no login cookie: {response.headers}"
    xsrf = await xsrf_cookie(w)
    cookie = {"Cookie": f"{login}; _xsrf={xsrf}"}
    same_origin = {"Origin": f"http://{response.request.url.split('/')[2]}"}

    # The cookie is a login: a GET with it alone works.
    status = url_path_join(w.base_url, "gpu-containers/status")
    assert (await w.fetch("GET", status, cookie)).code == 200

    changing = [(r, m) for r in w.routes for m in r.methods if m != "GET"]
    assert len(changing) >= 5, changing
    for route, method in changing:
        body = acting_body(route, method)
        # Without the X-XSRFToken header (what a cross-site form or fetch can send): refused.
        response = await w.fetch(method, route.url, cookie, body)
        assert response.code == 403, (str(route), method, response.body[:300])
        # A header that does not match the cookie: refused.
        forged = {**cookie, "X-XSRFToken": "2|00000000|" + "0" * 32 + "|1"}
        assert (await w.fetch(method, route.url, forged, body)).code == 403, (str(route), method)
    # Another origin, even with the XSRF token: refused (404, as jupyter_server answers
    # cross-origin API requests), GETs included, so a page elsewhere cannot read the GPUs.
    for route in w.routes:
        for method in route.methods:
            evil = {**cookie, "X-XSRFToken": xsrf, "Origin": EVIL_ORIGIN}
            response = await w.fetch(
                method, with_query(route, method), evil, acting_body(route, method)
            )
            assert response.code == 404, (str(route), method, response.code)
            assert "Access-Control-Allow-Origin" not in response.headers
    await w.assert_nothing_happened()

    # With the header (and from the server's own origin): accepted.
    ok = {**cookie, "X-XSRFToken": xsrf, **same_origin}
    credentials = url_path_join(w.base_url, f"gpu-containers/registries/{REGISTRY}/credentials")
    put = await w.fetch(
        "PUT", credentials, ok, json.dumps({"username": "bob", "password": "x"}).encode()
    )
    assert put.code == 204, put.body
    assert services_for(w.app).credentials.listing()[0]["username"] == "bob"
    assert (await w.fetch("DELETE", credentials, ok)).code == 204
    stored = await w.fetch(
        "POST",
        url_path_join(w.base_url, "gpu-containers/notebooks/kernel"),
        ok,
        json.dumps(
            {"path": NOTEBOOK, "kernel_name": kernel_name(DEBIAN_IMAGE), "gpus": 1, "start": False}
        ).encode(),
    )
    assert stored.code == 200, stored.body
    pull = await w.fetch(
        "POST",
        url_path_join(w.base_url, "gpu-containers/pulls"),
        ok,
        json.dumps({"image": UNREACHABLE}).encode(),
    )
    assert pull.code == 202, pull.body
    pull_id = json.loads(pull.body)["id"]
    assert (
        await w.fetch("DELETE", url_path_join(w.base_url, f"gpu-containers/pulls/{pull_id}"), ok)
    ).code == 200


# --------------------------------------------------------------------------- 3. credentials


class Client:
    """Requests to a server process; every response (status line, headers, body, event-stream
    bytes) is kept, to be searched afterwards."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.seen: list[bytes] = []

    async def fetch(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> HTTPResponse:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = HTTPRequest(
            f"{self.server.url}/{path}",
            method=method,
            headers={"Authorization": f"token {self.server.token}"},
            body=data,
            allow_nonstandard_methods=True,
            request_timeout=180,
        )
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
        self.seen.append(
            f"{response.code} {response.reason}\n{response.headers}\n".encode()
            + (response.body or b"")
        )
        return response

    async def json(self, method: str, path: str, body: Any = None, code: int = 200) -> Any:
        response = await self.fetch(method, path, body)
        assert response.code == code, (method, path, response.code, response.body[:500])
        return json.loads(response.body) if response.body else None

    async def stop_kernels(self) -> None:
        """Shut the server's kernels down (a stopped server leaves its containers running)."""
        with contextlib.suppress(Exception):
            for kernel in await self.json("GET", "api/kernels"):
                await self.fetch("DELETE", f"api/kernels/{kernel['id']}")

    async def pull(self, body: dict[str, Any]) -> dict[str, Any]:
        """Start a pull and follow its event stream to the end; the final snapshot."""
        pull = await self.json("POST", "gpu-containers/pulls", body, code=202)
        stream = await self.fetch("GET", f"gpu-containers/pulls/{pull['id']}/events")
        assert stream.code == 200, stream.body[:300]
        last = [b for b in stream.body.split(b"\n\n") if b.startswith(b"event:")][-1]
        event, data = last.decode().split("\n", 1)
        final: dict[str, Any] = json.loads(data.removeprefix("data: "))
        assert event.removeprefix("event: ") == final["state"], last
        await self.json("GET", f"gpu-containers/pulls/{pull['id']}")
        return final


class ProcessWatch:
    """Reads every process's command line and environment (as ps does, from /proc) every
    0.1 s while running, and keeps where any needle was seen."""

    def __init__(self, needles: list[bytes], control: bytes) -> None:
        self.needles, self.control = needles, control
        self.hits: list[str] = []
        self.control_seen = False
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in (p for p in os.listdir("/proc") if p.isdigit()):
                for part in ("cmdline", "environ"):
                    with contextlib.suppress(OSError):
                        data = Path(f"/proc/{pid}/{part}").read_bytes()
                        self.control_seen |= self.control in data
                        self.hits += [f"/proc/{pid}/{part}" for n in self.needles if n in data]
            self.rounds += 1
            self._stop.wait(0.1)

    def __enter__(self) -> ProcessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def needles_for(username: str, secrets: list[str]) -> list[bytes]:
    """Each secret as itself and as the encodings that could carry it: base64 of it, and the
    X-Registry-Auth header docker-py builds from a login."""
    found = []
    for secret in secrets:
        raw = secret.encode()
        found += [raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw)]
        found.append(docker.auth.encode_header({"username": username, "password": secret}))
    return found


def files_to_search(roots: list[Path], since: float, limit: int = 64 * 2**20) -> Iterator[Path]:
    for root in roots:
        for directory, dirs, files in os.walk(root, onerror=lambda _: None):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(directory, d))]
            for name in files:
                path = Path(directory, name)
                with contextlib.suppress(OSError):
                    st = path.lstat()
                    recent = st.st_mtime >= since and st.st_size <= limit
                    if recent and path.is_file() and not path.is_symlink():
                        yield path


@pytest.fixture
def cred_home() -> Iterator[Path]:
    """The credentials test server's home, under /tmp like any user's tmp files."""
    home = Path(tempfile.mkdtemp(prefix="jgc-cred-"))
    for sub in ("config", "data", "runtime", "workspace"):
        (home / sub).mkdir()
    write_server_config(
        home,
        {
            "ServerApp": {
                "log_level": "DEBUG",
                # Every library's logger too (docker-py, urllib3, jupyter_client), at DEBUG.
                "logging_config": {"root": {"level": "DEBUG", "handlers": ["console"]}},
            },
            "KernelReadinessProbe": {"extra_labels": {TEST_LABEL: TEST_RUN}},
            "PullManager": {"progress_interval": 0.0},
            "GPUInventory": {"static_gpus": []},
        },
    )
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def private_image(private_registry: PrivateRegistry) -> Iterator[str]:
    """The small test image in the registry, and not on this host."""
    ref = private_registry.push_test_image(f"jgc/secret-pull:{TEST_RUN}")
    private_registry.remove_local(ref)
    yield ref
    private_registry.remove_local(ref)


DOCKERD_LOG = Path(os.environ.get("JGC_DOCKERD_STATE", "/var/run/jgc-dockerd")) / "dockerd.log"


async def test_registry_passwords_go_nowhere(
    private_registry: PrivateRegistry,
    private_image: str,
    cred_home: Path,
    docker_client: docker.DockerClient,
) -> None:
    reg = private_registry
    wrong_stored, wrong_given = f"pw-stored-{reg.password[::-1]}", f"pw-given-{reg.password[3:]}"
    malformed = f"pw-malformed-{os.urandom(8).hex()}"
    needles = needles_for(reg.username, [reg.password, wrong_stored, wrong_given, malformed])
    since = time.time() - 1
    dockerd_offset = DOCKERD_LOG.stat().st_size if DOCKERD_LOG.exists() else 0
    server = Server(cred_home, cred_home / "workspace", [])
    client = Client(server)
    credentials = f"gpu-containers/registries/{reg.host}/credentials"
    inspected: list[bytes] = []
    try:
        with ProcessWatch(needles, control=server.token.encode()) as ps:
            # 1. A stored login with a wrong password, then a per-pull one: both refused.
            login = {"username": reg.username, "password": wrong_stored}
            await client.json("PUT", credentials, login, code=204)
            refused = await client.pull({"image": private_image})
            assert (refused["state"], refused["error_status"]) == ("error", 403), refused
            given = {"username": reg.username, "password": wrong_given}
            refused = await client.pull({"image": private_image, "auth": given})
            assert (refused["state"], refused["error_status"]) == ("error", 403), refused
            assert "Authorization failed" in refused["message"]
            # 2. Bodies that are not JSON, with a password in them: refused, and not logged
            # (jupyter_server's own body reader logs such a body at DEBUG).
            broken = f'{{"username": "{reg.username}", "password": "{malformed}"'.encode()
            assert (await client.fetch("PUT", credentials, raw=broken)).code == 400
            broken_pull = f'{{"image": "{private_image}", "auth": {{"password": "{malformed}"}}'
            response = await client.fetch("POST", "gpu-containers/pulls", raw=broken_pull.encode())
            assert response.code == 400
            # 3. The right stored login: pulled. Then the right per-pull login, from scratch.
            await client.json("PUT", credentials, {**login, "password": reg.password}, code=204)
            done = await client.pull({"image": private_image})
            assert done["state"] == "done", done
            reg.remove_local(private_image)
            await client.json("DELETE", credentials, code=204)
            auth = {"username": reg.username, "password": reg.password}
            done = await client.pull({"image": private_image, "auth": auth})
            assert done["state"] == "done", done
            # 4. Everything that reads state: listings, the catalog, a kernel of the image.
            for path in ("registries", "pulls", "status", "gpus", "allocations", "images?wait=1"):
                await client.json("GET", f"gpu-containers/{path}")
            name = kernel_name(private_image)
            for _ in range(120):
                specs = await client.json("GET", "api/kernelspecs")
                if name in specs["kernelspecs"]:
                    break
                await asyncio.sleep(0.5)
            (cred_home / "workspace" / "nb.ipynb").write_text("{}")
            started = await client.json(
                "POST",
                "gpu-containers/notebooks/kernel",
                {"path": "nb.ipynb", "kernel_name": name, "gpus": 0},
            )
            assert started["session"]["kernel"]["name"] == name
            # Every container on the engine, as `docker inspect` shows it, and the image.
            for c in docker_client.api.containers(all=True):
                with contextlib.suppress(docker.errors.NotFound):
                    inspected.append(
                        json.dumps(docker_client.api.inspect_container(c["Id"])).encode()
                    )
            inspected.append(json.dumps(docker_client.api.inspect_image(private_image)).encode())
            ps_listing = subprocess.run(
                ["ps", "-e", "-ww", "-o", "pid=,args="], capture_output=True, check=True
            ).stdout
        assert ps.rounds > 10 and ps.control_seen, "the process watch saw nothing"
    finally:
        await client.stop_kernels()
        server.stop()
    log = Path(server.log.name).read_bytes()

    # The capture is real: the log is at DEBUG, from the libraries too, and names the refusal.
    assert b"[D " in log and b"urllib3" in log, log[-2000:]
    assert b"Authorization failed" in log and reg.username.encode() in log
    searched: dict[str, bytes] = {
        "server log": log,
        "responses": b"\n".join(client.seen),
        "docker inspect": b"\n".join(inspected),
        "ps": ps_listing,
    }
    if DOCKERD_LOG.exists():
        with DOCKERD_LOG.open("rb") as f:
            f.seek(dockerd_offset)
            searched["dockerd log"] = f.read()
    roots = [cred_home, Path(tempfile.gettempdir()), Path.home() / ".docker"]
    files = list(files_to_search(roots, since))
    assert any(path == Path(server.log.name) for path in files)
    for path in files:
        with contextlib.suppress(OSError):
            searched[str(path)] = path.read_bytes()
    hits = sorted({where for where, data in searched.items() for n in needles if n in data})
    assert not hits, f"a registry password was found in: {hits}"
    assert not ps.hits, (
        f"a registry password was in a process's command line or environment: {ps.hits}"
    )
    assert len(files) > 5 and b"Pulled" in searched["server log"]
    assert not (cred_home / ".docker").exists()  # no `docker login` file, ever


# --------------------------------------------------------------------------- 4. several users

OTHER_USER = os.environ.get("JGC_TEST_USER", "")
MU_GPUS = [
    {"index": i, "uuid": f"GPU-users-{i}", "name": "Tesla T4", "brand": "tesla"} for i in range(2)
]


@pytest.fixture
def two_users() -> Iterator[tuple[Path, Path, list[Server]]]:
    """Homes for root's server and OTHER_USER's, under /tmp, with one host state directory
    (the GPU ledger's lock) that both share, as on a JupyterHub host."""
    if not OTHER_USER or os.getuid() != 0:
        pytest.skip("needs root and JGC_TEST_USER (scripts/test.sh sets both up)")
    entry = pwd.getpwnam(OTHER_USER)
    top = Path(tempfile.mkdtemp(prefix="jgc-users-"))
    top.chmod(0o755)
    homes = top / "root", top / "user"
    for home in homes:
        for sub in ("config", "data", "runtime", "workspace"):
            (home / sub).mkdir(parents=True)
        write_server_config(
            home,
            {
                # root's own kernels run as root: allowed here, as servers.py allows them.
                "ContainerPolicy": {"state_dir": str(top / "state"), "allow_root": True},
                "GPUInventory": {"static_gpus": MU_GPUS},
            },
        )
    for path in [homes[1], *homes[1].rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    servers: list[Server] = []
    try:
        yield homes[0], homes[1], servers
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(top, ignore_errors=True)


async def test_users_see_only_that_another_users_gpu_is_taken(
    two_users: tuple[Path, Path, list[Server]], docker_client: docker.DockerClient
) -> None:
    root_home, user_home, servers = two_users
    alice = Server(root_home, root_home / "workspace", [])  # root
    servers.append(alice)
    bob = Server(user_home, user_home / "workspace", [], user=OTHER_USER)
    servers.append(bob)
    a, b = Client(alice), Client(bob)
    spec = kernel_name(DEBIAN_IMAGE)
    try:
        # Alice: a kernel on a GPU for a notebook of hers, a login, a pull.
        (root_home / "workspace" / "secret").mkdir()
        mine = await a.json(
            "POST",
            "gpu-containers/notebooks/kernel",
            {"path": "secret/alice.ipynb", "kernel_name": spec, "gpus": 1},
        )
        alice_kernel = mine["session"]["kernel"]["id"]
        await a.json(
            "PUT",
            "gpu-containers/registries/registry.example/credentials",
            {"username": "alice", "password": "pw-alice"},
            code=204,
        )
        alice_pull = await a.json("POST", "gpu-containers/pulls", {"image": UNREACHABLE}, code=202)
        # Bob: a kernel on the other GPU.
        bobs = await b.json(
            "POST",
            "gpu-containers/notebooks/kernel",
            {"path": "bob.ipynb", "kernel_name": spec, "gpus": 1},
        )
        bob_kernel = bobs["session"]["kernel"]["id"]
        (container,) = docker_client.containers.list(
            filters={"label": f"{L.KERNEL_ID}={alice_kernel}"}
        )
        started_at = container.attrs["State"]["StartedAt"]
        assert container.labels[L.UID] == "0"

        def holders(report: dict[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
            return {
                g["uuid"]: [
                    (h["mine"], h["kernel_id"], h["user"], h["notebook"], h["image"])
                    for h in g["holders"]
                ]
                for g in report["gpus"]
            }

        # Each sees the other's GPU as taken, and nothing else about it.
        seen_by_bob = holders(await b.json("GET", "gpu-containers/gpus"))
        seen_by_alice = holders(await a.json("GET", "gpu-containers/gpus"))
        alice_gpu = next(u for u, hs in seen_by_alice.items() if hs and hs[0][0])
        bob_gpu = next(u for u in seen_by_bob if u != alice_gpu)
        assert seen_by_bob[alice_gpu] == [(False, "", "", "", "")]
        assert seen_by_bob[bob_gpu] == [(True, bob_kernel, OTHER_USER, "bob.ipynb", DEBIAN_IMAGE)]
        assert seen_by_alice[bob_gpu] == [(False, "", "", "", "")]
        assert seen_by_alice[alice_gpu][0][1:4] == (alice_kernel, "root", "secret/alice.ipynb")
        # Allocations: one's own only.
        assert [
            x["kernel_id"]
            for x in (await b.json("GET", "gpu-containers/allocations"))["allocations"]
        ] == [bob_kernel]
        assert [
            x["kernel_id"]
            for x in (await a.json("GET", "gpu-containers/allocations"))["allocations"]
        ] == [alice_kernel]

        # Alice's notebook, asked of Bob's server: nothing of hers.
        state = await b.json("GET", "gpu-containers/notebooks/kernel?path=secret/alice.ipynb")
        assert state == {
            "path": "secret/alice.ipynb",
            "request": None,
            "request_problem": "",
            "default": None,
            "kernel": None,
            "stamp": None,
            "retired": None,
        }
        # Restart it, or switch it: Bob's server has no such kernel (400); with a kernel name, only
        # a kernel of Bob's own could start, and the GPUs are all taken (409).
        refused = await b.fetch(
            "POST", "gpu-containers/notebooks/kernel", {"path": "secret/alice.ipynb", "gpus": 1}
        )
        assert refused.code == 400, refused.body
        refused = await b.fetch(
            "POST",
            "gpu-containers/notebooks/kernel",
            {"path": "secret/alice.ipynb", "gpus": 1, "kernel_name": spec},
        )
        assert refused.code == 409, refused.body
        assert "No free GPU" in json.loads(refused.body)["message"]
        assert "alice" not in json.loads(refused.body)["message"]
        # The stock kernels API: Alice's kernel is not Bob's to stop, restart or list.
        assert (await b.fetch("DELETE", f"api/kernels/{alice_kernel}")).code == 404
        # (jupyter_server answers a restart of a kernel it does not have with a 500.)
        assert (await b.fetch("POST", f"api/kernels/{alice_kernel}/restart", {})).code in (404, 500)
        assert [k["id"] for k in await b.json("GET", "api/kernels")] == [bob_kernel]

        # Pulls and logins are each server's own.
        assert await b.json("GET", "gpu-containers/registries") == {"registries": []}
        assert [p["id"] for p in (await b.json("GET", "gpu-containers/pulls"))["pulls"]] == []
        for method, suffix in [("GET", ""), ("DELETE", ""), ("GET", "/events")]:
            response = await b.fetch(method, f"gpu-containers/pulls/{alice_pull['id']}{suffix}")
            assert response.code == 404, (method, suffix, response.code)
        assert (
            await b.fetch("DELETE", "gpu-containers/registries/registry.example/credentials")
        ).code == 404
        assert [
            r["registry"] for r in (await a.json("GET", "gpu-containers/registries"))["registries"]
        ] == ["registry.example"]

        # Alice's kernel is untouched: the same container, never restarted, still hers.
        container.reload()
        assert container.status == "running" and container.attrs["State"]["StartedAt"] == started_at
        alice_state = await a.json("GET", "gpu-containers/notebooks/kernel?path=secret/alice.ipynb")
        assert alice_state["kernel"]["id"] == alice_kernel
        assert [g["uuid"] for g in alice_state["kernel"]["gpus"]] == [alice_gpu]

        for client, kernel in ((a, alice_kernel), (b, bob_kernel)):
            await client.json("DELETE", f"api/kernels/{kernel}", code=204)
    finally:
        await a.stop_kernels()
        await b.stop_kernels()
