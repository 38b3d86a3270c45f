"""A user's server whose kernels live behind a kernel service (``--gateway-url``).

jupyter_server's own gateway client (``GatewayClient``) already carries the kernels API there:
kernel specs, starts, the websockets. This module adds what the extension needs on top, without
the docker package, the engine or the host state, none of which a user's server may touch:

- :class:`ServiceForwarder` answers ``/gpu-containers/*`` (all but ``notebooks/kernel``, which
  needs this server's sessions and files) by passing the request on to the service: same method,
  query (less this server's own credentials: token, _xsrf) and body, the service's status, reason
  and content type back, server-sent events as they come (nothing buffered). It sends
  GatewayClient's own credentials (its auth token, headers, TLS settings), after this server
  authenticated and authorized its user as for any of its routes.
  A browser that closes a stream closes the service's stream with it.
- :class:`GatewayGPUKernelManager` is jupyter_server's GatewayMappingKernelManager, whose starts
  carry the notebook's GPU request to the service (``KERNEL_GPU_CONTAINERS_REQUEST``), and whose
  failures keep the service's status and sentence ("No free GPU" is a 409 from the Launcher, as
  in direct mode), or say in a sentence that the service cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import time
import urllib.parse
from collections.abc import Awaitable
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.gateway.connections import GatewayWebSocketConnection
from jupyter_server.gateway.gateway_client import GatewayClient, gateway_request
from jupyter_server.gateway.managers import GatewayMappingKernelManager, GatewaySessionManager
from jupyter_server.utils import url_escape, url_path_join
from tornado import httputil, web
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.httpclient import HTTPClientError
from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpclient import TCPClient

from ..base.errors import ContainerKernelError
from ..gpus.allocator import GPURequest
from ..gpus.notebook_requests import (
    NotebookRequestError,
    api_path_of_session,
    read_notebook_metadata,
    request_in_metadata,
)
from ..images.environment import pin_in_metadata
from ..kernel import launch_request
from ..kernel.launch_request import LAUNCH_ENVS, LaunchRequest
from ..service.service_routes import SESSION_ENV
from .kernelmanager import as_http, finish_with_sentence
from .waiting_sessions import StartsUnderWay, WaitingSessionManager

# handlers.AUTH_RESOURCE: the authorizer's one namespace for every /gpu-containers/ route.
AUTH_RESOURCE = "gpu_containers"
PREFIX = "gpu-containers"
# What of the service's answer reaches the browser (the rest is the service's own business:
# its cookies, its server header, its framing).
PASSED_HEADERS = ("Content-Type", "Cache-Control", "X-Accel-Buffering", "Allow", "Retry-After")
# The request headers the service needs from the browser's request.
FORWARDED_HEADERS = ("Content-Type", "Accept", "Last-Event-ID")


# Query parameters that are this server's own credentials (a page's token, or its XSRF value in an
# event stream's URL): never passed on to the service, which has its own (GatewayClient's).
OWN_CREDENTIAL_PARAMS = frozenset({"token", "_xsrf"})


def forwarded_query(query: str) -> str:
    """``query`` as the service gets it: without this server's credentials."""
    if not query:
        return ""
    kept = [
        (name, value)
        for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True)
        if name not in OWN_CREDENTIAL_PARAMS
    ]
    return urllib.parse.urlencode(kept)


def service_url() -> str:
    """The kernel service's address, as GatewayClient has it."""
    return str(GatewayClient.instance().url or "")


class ServiceUnreachable(ContainerKernelError):
    """No answer from the kernel service: nothing of the user's kernels can be done here."""

    status = 503
    reason_phrase = "Service Unavailable"

    def __init__(self, why: str) -> None:
        super().__init__(
            f"The kernel service at {service_url()} cannot be reached ({why}). Ask your "
            "administrator whether it is running; kernels there keep running, and this page "
            "reconnects to them once it answers."
        )


class ServiceRefused(ContainerKernelError):
    """The service's own answer to a request it refused, passed on as it is (with the option
    that decided it where the service named it: to an administrator)."""

    def __init__(self, status: int, sentence: str, reason: str, setting: str = "") -> None:
        super().__init__(sentence, status=status, setting=setting)
        self.reason_phrase = reason or httputil.responses.get(status, "Error")


def _why(error: BaseException) -> str:
    """A few words on a connection failure, for ServiceUnreachable's sentence."""
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return "it did not answer in time"
    if isinstance(error, socket.gaierror):
        return "its host name is unknown"
    if isinstance(error, ssl.SSLError):
        return f"TLS failed: {error.reason or error}"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, StreamClosedError):
        if error.real_error is not None:  # tornado's wrapper of a failed connect
            return _why(error.real_error)
        return "it closed the connection"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__


def _answer_of(body: bytes, status: int) -> ServiceRefused:
    """The service's error body ({"message", "reason"}, "setting" for an administrator) as an
    error to pass on."""
    try:
        data = json.loads(body.decode("utf-8")) if body else {}
    except (ValueError, UnicodeDecodeError):
        data = {}
    data = data if isinstance(data, dict) else {}
    message = data.get("message")
    reason = data.get("reason")
    setting = data.get("setting")
    sentence = (
        message
        if isinstance(message, str) and message
        else f"The kernel service answered {status}."
    )
    return ServiceRefused(
        status,
        sentence,
        reason if isinstance(reason, str) else "",
        setting if isinstance(setting, str) else "",
    )


def from_gateway_error(error: BaseException) -> ContainerKernelError | None:
    """What an error of jupyter_server's gateway client means, in this project's terms: the
    service's own refusal (its status and sentence), or a service that cannot be reached. None
    for anything else (left as it is)."""
    if isinstance(error, ContainerKernelError):
        return error
    cause = error.__cause__ if isinstance(error, web.HTTPError) else error
    if isinstance(cause, HTTPClientError):
        response = cause.response
        if cause.code == 599 or response is None:  # tornado's code for "no HTTP answer"
            inner = getattr(response, "error", None) or cause
            return ServiceUnreachable(
                "it did not answer in time" if "Timeout" in str(inner) else _why(inner)
            )
        return _answer_of(response.body, cause.code)
    if isinstance(cause, (OSError, asyncio.TimeoutError, StreamClosedError)):
        return ServiceUnreachable(_why(cause))
    return None


def _translated(error: BaseException) -> BaseException:
    found = from_gateway_error(error)
    return as_http(found) if found is not None else error


# ------------------------------------------------------------------------------ the forwarder


class _Exchange:
    """One request to the service over a connection of its own (closed at the end, or at once
    when the browser goes away), and its answer relayed to ``handler`` as it comes."""

    def __init__(self, handler: ServiceForwarder) -> None:
        self.handler = handler
        self.stream: IOStream | None = None
        self.headers_in = asyncio.Event()
        self.streaming = False
        self.status = 0
        self.content_type = ""

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()

    async def run(self, url: str, method: str, headers: dict[str, str], body: bytes) -> None:
        args = GatewayClient.instance().load_connection_args(headers=dict(headers))
        parts = urllib.parse.urlsplit(url)
        https = parts.scheme == "https"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if https else 80)
        ssl_context = _ssl_context(args) if https else None
        connect = TCPClient().connect(host, port, ssl_options=ssl_context)
        self.stream = await asyncio.wait_for(connect, float(args.get("connect_timeout") or 20))
        if self.handler.gone:  # the browser left while we connected
            self.close()
            return
        sent = httputil.HTTPHeaders(args.get("headers") or {})
        sent["Host"] = parts.netloc
        sent["Connection"] = "close"
        if args.get("auth_username"):
            sent["Authorization"] = httputil.encode_username_password(
                args["auth_username"], args.get("auth_password") or ""
            ).decode()
        if body or method in ("POST", "PUT", "PATCH"):
            sent["Content-Length"] = str(len(body))
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection = HTTP1Connection(
            self.stream, True, HTTP1ConnectionParameters(no_keep_alive=True)
        )
        await connection.write_headers(httputil.RequestStartLine(method, target, "HTTP/1.1"), sent)
        if body:
            await connection.write(body)
        connection.finish()
        await connection.read_response(_Relay(self))


class _Relay(httputil.HTTPMessageDelegate):
    """The service's answer, written to the browser as it comes: a flush per chunk, which the
    connection awaits before it reads more (a slow browser slows the service's stream, nothing
    piles up here)."""

    def __init__(self, exchange: _Exchange) -> None:
        self.exchange = exchange

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> None:
        assert isinstance(start_line, httputil.ResponseStartLine)
        handler, exchange = self.exchange.handler, self.exchange
        exchange.status = start_line.code
        handler.set_status(start_line.code, start_line.reason or None)
        handler.clear_header("Content-Type")
        for name in PASSED_HEADERS:
            if name in headers:
                handler.set_header(name, headers[name])
        location = headers.get("Location")
        if location:
            handler.set_header("Location", handler.local_location(location))
        exchange.content_type = headers.get("Content-Type", "")
        exchange.streaming = exchange.content_type.startswith("text/event-stream")
        exchange.headers_in.set()

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        handler = self.exchange.handler
        if handler.gone:
            raise StreamClosedError()  # ends the read: the service's stream is closed below
        handler.write(chunk)
        return handler.flush()

    def finish(self) -> None:
        pass

    def on_connection_close(self) -> None:
        pass


def _ssl_context(args: dict[str, Any]) -> ssl.SSLContext:
    """GatewayClient's TLS settings (validate_cert, ca_certs, client_cert and key)."""
    context = ssl.create_default_context(cafile=args.get("ca_certs") or None)
    if not args.get("validate_cert", True):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if args.get("client_cert"):
        context.load_cert_chain(args["client_cert"], args.get("client_key") or None)
    return context


class ServiceForwarder(APIHandler):
    """``/gpu-containers/*`` answered by the kernel service, for this server's user."""

    auth_resource = AUTH_RESOURCE
    _exchange: _Exchange | None = None
    gone = False

    def on_connection_close(self) -> None:
        # The browser went away: so does the service's stream (its pull watcher, its log
        # reader), now, not at the stream's next event.
        self.gone = True
        if self._exchange is not None:
            self._exchange.close()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = (kwargs.get("exc_info") or (None, None, None))[1]
        if isinstance(error, ContainerKernelError):
            # Its own errors only (the service cannot be reached), which no option decided:
            # the service's refusals pass through as the service wrote them.
            finish_with_sentence(self, error)
            return
        super().write_error(status_code, **kwargs)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ContainerKernelError):  # a sentence, not a server fault
            self.log.warning(
                "%d %s %s: %s", value.status, self.request.method, self.request.path, value.log_text
            )
            return
        super().log_exception(typ, value, tb)

    def local_location(self, location: str) -> str:
        """The service's Location for one of its /gpu-containers/ resources, as this server's."""
        service_path = urllib.parse.urlsplit(service_url()).path or "/"
        path = urllib.parse.urlsplit(location).path
        prefix = url_path_join(service_path, PREFIX) + "/"
        if path.startswith(prefix):
            return url_path_join(self.base_url, PREFIX, path[len(prefix) :])
        return location

    def upstream_url(self) -> str:
        base = self.base_url.rstrip("/") + "/" + PREFIX
        rest = self.request.path[len(base) :]
        url = url_path_join(service_url(), PREFIX) + rest
        query = forwarded_query(self.request.query)
        return url + (f"?{query}" if query else "")

    async def forward(self) -> None:
        headers = {
            name: self.request.headers[name]
            for name in FORWARDED_HEADERS
            if name in self.request.headers
        }
        exchange = self._exchange = _Exchange(self)
        request_timeout = float(GatewayClient.instance().request_timeout or 60)
        body = self.request.body or b""
        task = asyncio.ensure_future(
            exchange.run(self.upstream_url(), self.request.method or "GET", headers, body)
        )
        started = time.monotonic()
        try:
            # The service's headers within the request timeout; then a plain answer's body
            # within what is left of it, and an event stream for as long as both ends stay.
            waiting = asyncio.ensure_future(exchange.headers_in.wait())
            done, _ = await asyncio.wait(
                {task, waiting}, timeout=request_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            waiting.cancel()
            if not done:
                raise asyncio.TimeoutError()
            if exchange.streaming:
                await task
            else:
                left = max(0.1, request_timeout - (time.monotonic() - started))
                await asyncio.wait_for(asyncio.shield(task), left)
        except (OSError, asyncio.TimeoutError, StreamClosedError, httputil.HTTPInputError) as e:
            exchange.close()
            task.cancel()
            if self.gone:
                return
            if not exchange.headers_in.is_set():
                raise ServiceUnreachable(_why(e)) from None
            # Cut off mid-answer (the service stopped): end what the browser has.
            self.log.warning(
                "The kernel service's answer to %s ended early: %s", self.request.path, _why(e)
            )
        finally:
            exchange.close()
        if not self.gone:
            # APIHandler.finish would call every answer JSON: keep the service's type.
            self.finish(set_content_type=exchange.content_type or "application/json")

    @web.authenticated
    @authorized
    async def get(self, *_args: Any, **_kwargs: Any) -> None:
        await self.forward()

    @web.authenticated
    @authorized
    async def post(self, *_args: Any, **_kwargs: Any) -> None:
        await self.forward()

    @web.authenticated
    @authorized
    async def put(self, *_args: Any, **_kwargs: Any) -> None:
        await self.forward()

    @web.authenticated
    @authorized
    async def delete(self, *_args: Any, **_kwargs: Any) -> None:
        await self.forward()


class NoDelayGatewayConnection(GatewayWebSocketConnection):
    """jupyter_server's gateway websocket connection, sending to the browser without Nagle's
    delay (TCP_NODELAY), as NoDelayWebsocketConnection does in direct mode: with Nagle, each
    burst of a kernel's replies waited for the browser's delayed acknowledgement, about 40 ms
    added to every execute round trip through the service (benchmarks/, section 7)."""

    async def connect(self) -> None:
        handler = self.websocket_handler
        if getattr(handler, "ws_connection", None) is not None:
            handler.set_nodelay(True)
        await super().connect()


class ServiceStatusForwarder(ServiceForwarder):
    """``GET /gpu-containers/status``, forwarded; when the service cannot be reached, the
    status of an engine that cannot be reached, with the sentence: the page then says it where
    it says an engine is down (the Launcher card's label, the panel), not only in an error."""

    @web.authenticated
    @authorized
    async def get(self, *_args: Any, **_kwargs: Any) -> None:
        try:
            await self.forward()
        except ServiceUnreachable as e:
            engine = {"ok": False, "message": e.sentence, "endpoint": service_url()}
            self.finish(json.dumps({"engine": engine, "kernelspecs": 0}))


async def service_json(method: str, path: str, body: Any = None) -> Any:
    """One JSON request to the service's ``/gpu-containers/<path>`` with GatewayClient's
    credentials, from a handler of this server; its JSON answer. Raises ServiceUnreachable, or
    ServiceRefused with the service's status and sentence."""
    url = url_path_join(service_url(), PREFIX, path)
    kwargs: dict[str, Any] = {"method": method}
    if body is not None or method in ("POST", "PUT"):
        kwargs["body"] = json.dumps(body)
        kwargs["headers"] = {"Content-Type": "application/json"}
    try:
        response = await gateway_request(url, **kwargs)
    except Exception as e:
        found = from_gateway_error(e)
        if found is None:
            raise
        raise found from None
    return json.loads(response.body) if response.body else None


# ------------------------------------------------------------------------- the kernel manager


class GatewayGPUKernelManager(GatewayMappingKernelManager):
    """jupyter_server's kernel manager for a gateway, whose starts carry the notebook's GPU
    request, and whose failures answer the service's status and sentence (or say that the service
    cannot be reached) instead of "Error from Gateway: […]"."""

    # The starts under way (sessions list a start that waits under the id chosen for it), and
    # the service's answer on which of them wait, with when it was had (monotonic seconds).
    _under_way: StartsUnderWay | None = None
    _waiting: tuple[float, set[str]] = (0.0, set())

    async def start_kernel(  # type: ignore[override]
        self, *, kernel_id: str | None = None, path: str | None = None, **kwargs: Any
    ) -> str:
        given = launch_request.given()
        chosen = given.kernel_id if kernel_id is None else ""
        if self._under_way is None:
            self._under_way = StartsUnderWay()
        if chosen:
            self._under_way.begin(chosen, str(kwargs.get("kernel_name") or ""))
        try:
            return await self._start_kernel(given, kernel_id=kernel_id, path=path, **kwargs)
        finally:
            if chosen:
                self._under_way.end(chosen)

    async def _start_kernel(
        self,
        given: LaunchRequest,
        *,
        kernel_id: str | None = None,
        path: str | None = None,
        **kwargs: Any,
    ) -> str:
        if kernel_id is None:  # a new kernel (else: connecting to one the service runs)
            env = dict(kwargs.get("env") or {})
            notebook = api_path_of_session(str(env.get(SESSION_ENV) or ""), str(self.root_dir))
            metadata = await read_notebook_metadata(
                getattr(self.parent, "contents_manager", None), notebook
            )
            gpus = self.gpu_request(given, metadata, notebook)
            sent = LaunchRequest(
                gpus=gpus,
                # The notebook's saved request, not a choice made for this start.
                gpus_saved=given.gpus is None and gpus is not None,
                wait=given.wait,  # the panel's word; None: the service's default applies
                image_digest=pin_in_metadata(metadata),  # the service checks it
                kernel_id=given.kernel_id,  # the service checks it is free
            )
            # Only this server's word on them reaches the service.
            env = {k: v for k, v in env.items() if k not in LAUNCH_ENVS}
            env.update(sent.environment())
            kwargs["env"] = gateway_env(env, GatewayClient.instance().allowed_envs)
        try:
            return str(await super().start_kernel(kernel_id=kernel_id, path=path, **kwargs))
        except Exception as e:
            raise _translated(e) from e

    @staticmethod
    def gpu_request(
        given: LaunchRequest, metadata: dict[str, Any] | None, notebook: str
    ) -> GPURequest | None:
        """What the start asks for: the request the extension's endpoint gave the launch, else
        the notebook's own (``metadata``, read through this server's contents manager), else
        None (the kernel spec's default, the service's to apply)."""
        if given.gpus is not None:
            return given.gpus
        try:
            return request_in_metadata(metadata, notebook)
        except NotebookRequestError as e:
            raise as_http(e) from e

    async def restart_kernel(self, kernel_id: str, now: bool = False, **kwargs: Any) -> Any:  # type: ignore[override]
        try:
            return await super().restart_kernel(kernel_id, now=now, **kwargs)
        except Exception as e:
            raise _translated(e) from e

    async def interrupt_kernel(self, kernel_id: str, **kwargs: Any) -> Any:  # type: ignore[override]
        try:
            return await ensure_async(super().interrupt_kernel(kernel_id, **kwargs))
        except Exception as e:
            raise _translated(e) from e

    async def shutdown_kernel(  # type: ignore[override]
        self, kernel_id: str, now: bool = False, restart: bool = False
    ) -> None:
        if self._under_way and kernel_id in self._under_way and kernel_id not in self._kernels:
            # JupyterLab's Shut Down of a kernel whose start waits: the wait ends.
            await self.cancel_wait(kernel_id, "it was shut down")
            return
        try:
            await super().shutdown_kernel(kernel_id, now=now, restart=restart)
        except Exception as e:
            raise _translated(e) from e

    async def list_kernels(self, **kwargs: Any) -> Any:
        """The service's kernels of this server, and its starts that wait for a GPU (or
        waited, and launch now), as the sessions list their sessions: JupyterLab takes a kernel
        missing from this list for ended, and drops a page's connection to it with the cells it
        holds."""
        try:
            kernels: list[dict[str, Any]] = await super().list_kernels(**kwargs)
        except Exception as e:
            raise _translated(e) from e
        if self._under_way:
            listed = {k.get("id") for k in kernels}
            for kernel_id, state in (await self.starts_under_way()).items():
                if kernel_id not in listed:
                    kernels.append(self._under_way.model(kernel_id, state))
        return kernels

    async def kernel_model(self, kernel_id: str) -> Any:
        if self._under_way and kernel_id in self._under_way and kernel_id not in self._kernels:
            state = (await self.starts_under_way()).get(kernel_id)
            if state is not None:
                return self._under_way.model(kernel_id, state)
        return await super().kernel_model(kernel_id)

    # How long the service's word on which starts wait is used before it is asked again.
    WAITING_FRESH_SECONDS = 1.0

    async def starts_under_way(self) -> dict[str, str]:
        """The starts under way to list (waiting_sessions.py), by kernel id, with their state:
        waiting while the service's queue has them, starting once they waited."""
        if not self._under_way:
            return {}
        return self._under_way.states(await self._waiting_ids(), self._kernels)

    async def _waiting_ids(self) -> set[str]:
        """The kernel ids of this user's starts that wait for a GPU on the service (its queue's
        tickets of theirs), asked at most once a second, and only while starts are under way.
        The service unreachable or refusing: none wait (the start's own answer will say why)."""
        since, ids = self._waiting
        if time.monotonic() - since < self.WAITING_FRESH_SECONDS:
            return ids
        try:
            answer = await service_json("GET", "queue")
        except (ServiceRefused, ServiceUnreachable):
            answer = {}
        queue = answer.get("queue") if isinstance(answer, dict) else None
        ids = {
            str(ticket["kernel_id"])
            for ticket in (queue if isinstance(queue, list) else [])
            if isinstance(ticket, dict) and ticket.get("yours") and ticket.get("kernel_id")
        }
        self._waiting = (time.monotonic(), ids)
        return ids

    async def cancel_wait(self, kernel_id: str, why: str) -> None:
        """End this user's start of ``kernel_id`` that waits for a GPU on the service (its
        launch then fails with 409 "GPU wait cancelled"); nothing if it waits no more."""
        del why  # the service says "cancelled by its user"
        with contextlib.suppress(ServiceRefused):
            await service_json("DELETE", f"queue/{url_escape(kernel_id)}")
        self._waiting = (0.0, set())


class GatewayWaitingSessionManager(WaitingSessionManager, GatewaySessionManager):
    """jupyter_server's session manager for a gateway, whose list includes the sessions whose
    kernel start waits for a GPU on the kernel service (waiting_sessions.py): the start's kernel
    id is chosen here and sent with it (``KERNEL_GPU_CONTAINERS_KERNEL_ID``), so the sessions
    listed while it waits and the kernel the service starts have the same."""

    async def _start_kernel(self, existing: str | None, new_id: str, **kwargs: Any) -> str:
        if existing:  # a kernel the service runs: the gateway connects to it
            return await super()._start_kernel(existing, new_id, **kwargs)
        # GatewayMappingKernelManager takes a kernel_id for one to connect to: a new kernel's
        # id travels in the launch record.
        with launch_request.launching(kernel_id=new_id):
            started: str = await self.kernel_manager.start_kernel(**kwargs)
        return started


def gateway_env(env: dict[str, Any], allowed_envs: str) -> dict[str, Any]:
    """Of a start's environment, what the gateway sends anyway (GatewayKernelManager: names
    starting with ``KERNEL_``, and ``GatewayClient.allowed_envs``). The rest is this server's own
    environment, its Hub token and the gateway's among it, which jupyter_server writes whole into
    its log line "GatewayKernelManager started kernel: …, args: …" (behind JupyterHub, the Hub's
    log)."""
    allowed = {name.strip() for name in str(allowed_envs or "").split(",") if name.strip()}
    return {k: v for k, v in env.items() if k.startswith("KERNEL_") or k in allowed}


def allow_session_name(client: Any) -> None:
    """Let GatewayClient send ``JPY_SESSION_NAME`` (the notebook's path) with a start, which the
    service reads to start the kernel in the notebook's directory (service_routes.py)."""
    allowed = [name.strip() for name in str(client.allowed_envs or "").split(",") if name.strip()]
    if SESSION_ENV not in allowed:
        client.allowed_envs = ",".join([*allowed, SESSION_ENV])


def is_gateway_kernel_manager(km: Any) -> bool:
    return isinstance(km, GatewayMappingKernelManager)
