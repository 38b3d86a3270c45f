"""A kernel service's kernels API: the stock routes, each user's kernels (and images) only.

``jupyter gpu-containers serve`` (service.py) answers Jupyter Server's own kernels API, which
users' servers reach through the stock gateway client. These subclasses of jupyter_server's
handlers, registered on the same patterns (an extension's routes come first), add what one
server for many users needs:

- **Whose kernel**: a kernel belongs to the user whose request started it (the provisioner keeps
  that :class:`~.identity.KernelUser`). Any other user gets exactly the 404 an unknown kernel id
  gets, over REST and before a websocket is accepted: no way to tell "not yours" from "none".
- **What a start may say**: the body's ``env`` is a client's word. Only the notebook's directory
  and session name (resolved, and inside the user's workspace) and the notebook's GPU request
  are read from it; ``KERNEL_USERNAME`` and everything else are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import prometheus_client
from jupyter_client.kernelspec import NoSuchKernel
from jupyter_core.utils import ensure_async
from jupyter_server.base.handlers import APIHandler
from jupyter_server.kernelspecs.handlers import KernelSpecResourceHandler
from jupyter_server.services.api.handlers import APIStatusHandler
from jupyter_server.services.kernels.handlers import KernelHandler, MainKernelHandler
from jupyter_server.services.kernels.websocket import KernelWebsocketHandler
from jupyter_server.services.kernelspecs.handlers import KernelSpecHandler, MainKernelSpecHandler
from jupyter_server.utils import url_escape, url_path_join
from tornado import web

from ..base.errors import ContainerKernelError
from ..gpus.gpuqueue import WhileWaiting
from ..host.identity import KernelUser
from ..images import privateimages
from ..kernel.kernelspecs import ContainerKernelSpecManager
from ..kernel.launch_request import LaunchRequest, launching
from ..policy.checks import inside
from ..routes.admin_view import service_admin_refusal
from ..server.kernelmanager import as_http
from ..server.recovery_progress import recovery_progress
from ..server.stock_routes import KernelActionsHandler, SettingInLog
from ..services import SETTINGS_KEY
from .start_bounds import StartQueue, UserKernels, owned_by

# What a start's env may carry that the service reads (contract with users' servers), beside
# the launch request's own (launch_request.py: REQUEST_ENV, WAIT_ENV).
WORKING_DIR_ENV = "KERNEL_WORKING_DIR"
SESSION_ENV = "JPY_SESSION_NAME"


# How long a request waits for the service's start-up recovery before it is answered anyway.
RECOVERY_WAIT = 120.0


async def kernel_recovered(handler: Any, kernel_id: str) -> None:
    """Wait until the service's start-up recovery is done with ``kernel_id`` (hurried to the
    front of its queue), if a previous process left such a kernel. A user's server asking about
    its kernel in that moment would be told it is gone (404), and would restart it, losing its
    state, just before it came back."""
    progress = recovery_progress(handler.serverapp)
    if progress is not None and not progress.done:
        await progress.wait_kernels((kernel_id,), RECOVERY_WAIT)


async def users_kernels_recovered(handler: Any, user: KernelUser) -> None:
    """:func:`kernel_recovered` for every kernel a previous process left for ``user``: before
    their list (none missing) and their start (counted against their caps)."""
    progress = recovery_progress(handler.serverapp)
    if progress is not None and not progress.done:
        await progress.wait_user(user.username, RECOVERY_WAIT)


def kernel_user_of(handler: web.RequestHandler) -> KernelUser:
    """The kernel user the service's identity provider found for this request."""
    user = getattr(handler.current_user, "kernel_user", None)
    if not isinstance(user, KernelUser):
        raise web.HTTPError(403, "This request carries no kernel user of this service.")
    return user


def check_owner(handler: Any, kernel_id: str) -> KernelUser:
    """The caller, when ``kernel_id`` is one of their kernels; else the stock 404."""
    user = kernel_user_of(handler)
    owner = handler.kernel_manager.owner_of(kernel_id)
    if owner is None or owner.username != user.username or owner.uid != user.uid:
        raise web.HTTPError(404, f"Kernel does not exist: {kernel_id}")
    return user


def _inside_workspace(path: Any, workspace: str) -> str:
    """``path`` when it is an absolute path that resolves inside ``workspace``; else ""."""
    if not isinstance(path, str) or not os.path.isabs(path) or "\0" in path:
        return ""
    return path if inside(path, workspace) else ""


def start_arguments(user: KernelUser, env: Any) -> tuple[dict[str, Any], LaunchRequest]:
    """What a start's ``env`` may decide: the kernel's directory and session name (dropped
    unless inside the user's workspace), and the launch request's GPUs, wait and pinned digest
    (LaunchRequest.from_environment: ValueRefused when malformed). Blocking (realpath): a worker
    thread."""
    env = env if isinstance(env, dict) else {}
    cwd = _inside_workspace(env.get(WORKING_DIR_ENV), user.workspace) or user.workspace
    session = _inside_workspace(env.get(SESSION_ENV), user.workspace)
    given = LaunchRequest.from_environment(env)
    launch_env = {SESSION_ENV: session} if session else {}
    return {"cwd": cwd, "env": launch_env}, given


class ServiceKernelsHandler(SettingInLog, MainKernelHandler):
    """``GET /api/kernels``: the caller's kernels. ``POST``: start one for the caller."""

    @web.authenticated
    async def get(self) -> None:
        user = kernel_user_of(self)
        await users_kernels_recovered(self, user)
        km = self.kernel_manager
        # The caller's kernels' models only: a model of each of a thousand kernels (the stock
        # list) costs a request 10 ms, of which it would keep a handful.
        own = []
        for kernel_id in km.list_kernel_ids():
            if owned_by(km, kernel_id, user):
                with contextlib.suppress(web.HTTPError, KeyError):  # ended meanwhile
                    own.append(await ensure_async(km.kernel_model(kernel_id)))
        self.finish(json.dumps(own, default=str))

    @web.authenticated
    async def post(self) -> None:
        user = kernel_user_of(self)
        km: Any = self.kernel_manager  # GPUContainersKernelManager (the service's)
        model = self.get_json_body() or {}
        if not isinstance(model, dict):
            raise web.HTTPError(400, "The body must be a JSON object.")
        # The user's kernels a previous process left count against the user's caps below.
        await users_kernels_recovered(self, user)
        name = await name_to_start(self, user, model.get("name"))  # the caller's default
        if not isinstance(name, str):
            raise web.HTTPError(400, "name must be a kernel spec name.")
        try:  # (a stock start of an unknown spec is a 500 with a traceback)
            if name in await hidden_specs(self, user):  # another user's private image
                raise NoSuchKernel(name)
            spec = await asyncio.to_thread(self.kernel_spec_manager.get_kernel_spec, name)
        except NoSuchKernel:
            raise web.HTTPError(404, f"There is no kernel spec {name!r} here.") from None
        try:
            kwargs, given = await asyncio.to_thread(start_arguments, user, model.get("env"))
        except ContainerKernelError as e:  # a malformed GPU request too (InvalidGPURequest)
            raise as_http(e) from None
        queue = getattr(self.serverapp, "start_queue", None)
        bounds = getattr(self.serverapp, "user_kernels", None)
        services = self.settings.get(SETTINGS_KEY)
        # Chosen before the start (by the user's server, which lists the start under it while
        # it waits, or here), so that a client that goes away while the start waits for a GPU
        # cancels that wait (on_connection_close) instead of leaving a kernel nobody asked for
        # any more.
        kernel_id = given.kernel_id
        if kernel_id:
            await kernel_recovered(self, kernel_id)  # one a previous process left is taken
        else:
            kernel_id = str(uuid.uuid4())
        if not km.reserve_kernel_id(kernel_id):
            # One answer whoever's kernel it is: an id says nothing of its owner here.
            raise web.HTTPError(
                409,
                f"The kernel id {kernel_id} is taken: a new kernel needs an id of its own.",
                reason="Kernel id taken",
            )
        self._starting = kernel_id
        try:
            # Counted among the user's kernels from now until it runs or fails (UserKernels),
            # then in a start slot of the user's share (StartQueue).
            with (
                bounds.starting(km, user, self._starting, spec, self.config, services.policy)
                if isinstance(bounds, UserKernels) and services is not None
                else contextlib.nullcontext()
            ):
                async with (
                    queue.slot(user.username) if isinstance(queue, StartQueue) else _no_queue()
                ) as given_back:
                    with launching(
                        user=user,
                        gpus=given.gpus,
                        gpus_saved=given.gpus_saved,
                        wait=given.wait,
                        while_waiting=given_back,
                        image_digest=given.image_digest,
                    ):
                        started: str = await km.start_kernel(
                            kernel_name=name, kernel_id=kernel_id, **kwargs
                        )
        except ContainerKernelError as e:  # refused before it began (StartRefused), say
            raise as_http(e) from None
        finally:
            km.release_kernel_id(kernel_id)
        reply = await ensure_async(km.kernel_model(started))
        location = url_path_join(self.base_url, "api", "kernels", url_escape(started))
        self.set_header("Location", location)
        self.set_status(201)
        self.finish(json.dumps(reply, default=str))

    _starting = ""

    def on_connection_close(self) -> None:
        super().on_connection_close()
        services = self.settings.get(SETTINGS_KEY)
        if self._starting and services is not None:
            services.queue.cancel(self._starting, "the client went away")


@contextlib.asynccontextmanager
async def _no_queue() -> AsyncIterator[WhileWaiting | None]:
    yield None


class ServiceKernelHandler(KernelHandler):
    """``GET`` and ``DELETE /api/kernels/{id}``: the caller's own kernel only."""

    @web.authenticated
    async def get(self, kernel_id: str) -> None:
        await kernel_recovered(self, kernel_id)
        check_owner(self, kernel_id)
        await ensure_async(super().get(kernel_id))

    @web.authenticated
    async def delete(self, kernel_id: str) -> None:
        await kernel_recovered(self, kernel_id)
        check_owner(self, kernel_id)
        await ensure_async(super().delete(kernel_id))


class ServiceKernelActionsHandler(KernelActionsHandler):
    """``POST /api/kernels/{id}/interrupt|restart``: the caller's own kernel only."""

    @web.authenticated
    async def post(self, kernel_id: str, action: str) -> None:  # type: ignore[override]
        await kernel_recovered(self, kernel_id)
        check_owner(self, kernel_id)
        await super().post(kernel_id, action)


class ServiceKernelWebsocketHandler(KernelWebsocketHandler):
    """``/api/kernels/{id}/channels``: refused with the stock 404, before the upgrade, unless the
    kernel is the caller's."""

    async def pre_get(self) -> None:
        if self.current_user is None:
            raise web.HTTPError(403)
        await kernel_recovered(self, self.kernel_id)
        check_owner(self, self.kernel_id)
        await super().pre_get()


async def hidden_specs(handler: Any, user: KernelUser) -> frozenset[str]:
    """The kernel specs of references other users pulled with their own logins, which ``user``
    may neither see nor start (privateimages.py). By reference: the same image under a
    reference the user may see (the course image) stays theirs."""
    ksm = handler.settings.get("kernel_spec_manager")  # the server's own, not the view
    services = handler.settings.get(SETTINGS_KEY)
    if not isinstance(ksm, ContainerKernelSpecManager) or services is None:
        return frozenset()

    def blocking() -> frozenset[str]:
        entries = ksm.image_entries()
        hidden = privateimages.hidden_from(services.state, user.uid)
        if not hidden.others:
            return frozenset()
        listed = services.listed_images()
        return frozenset(
            name for name, (ref, image) in entries.items() if not hidden.may_use(image, ref, listed)
        )

    return await asyncio.to_thread(blocking)


async def default_kernel_name(
    handler: Any, user: KernelUser, hidden: frozenset[str] | None = None
) -> str:
    """The kernel ``user`` gets when a start names none, and the listing's ``default``: the
    administrator's MappingKernelManager.default_kernel_name when it is offered to them, else
    the first they are offered (in name order); "" when they are offered none. Never another
    user's private image, never a host kernel the service does not run."""
    if hidden is None:
        hidden = await hidden_specs(handler, user)
    ksm = _VisibleSpecs(handler.settings["kernel_spec_manager"], hidden)
    # (disk reads, and the image listing when it is stale)
    offered = sorted(await asyncio.to_thread(ksm.find_kernel_specs))
    chosen = getattr(handler.settings["kernel_manager"], "default_kernel_name", "")
    if chosen in offered:
        return str(chosen)
    return offered[0] if offered else ""


async def name_to_start(handler: Any, user: KernelUser, requested: Any) -> Any:
    """The kernel spec a start asks for: ``requested``, else the caller's default kernel
    (default_kernel_name); 404 with a sentence when they are offered none."""
    if requested:
        return requested
    name = await default_kernel_name(handler, user)
    if not name:
        raise web.HTTPError(
            404,
            "This kernel service offers you no kernel spec, so there is no default kernel to "
            "start. Ask its administrator which images it offers.",
        )
    return name


class _VisibleSpecs:
    """The server's kernel spec manager, without the specs one user may not see."""

    def __init__(self, ksm: Any, hidden: frozenset[str]) -> None:
        self._ksm, self._hidden = ksm, hidden

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ksm, name)

    def find_kernel_specs(self) -> dict[str, str]:
        specs: dict[str, str] = self._ksm.find_kernel_specs()
        return {name: path for name, path in specs.items() if name not in self._hidden}

    def get_all_specs(self) -> dict[str, Any]:
        specs: dict[str, Any] = self._ksm.get_all_specs()
        return {name: spec for name, spec in specs.items() if name not in self._hidden}

    def get_kernel_spec(self, kernel_name: str) -> Any:
        if kernel_name in self._hidden:
            raise NoSuchKernel(kernel_name)
        return self._ksm.get_kernel_spec(kernel_name)


class _CallersDefault:
    """The server's kernel manager, whose default kernel is the caller's (default_kernel_name)."""

    def __init__(self, km: Any, default: str) -> None:
        self._km, self.default_kernel_name = km, default

    def __getattr__(self, name: str) -> Any:
        return getattr(self._km, name)


class ServiceKernelSpecsHandler(MainKernelSpecHandler):
    """``GET /api/kernelspecs``: the images this user may start kernels on, and the default
    kernel a start without a name gets."""

    _hidden: frozenset[str] = frozenset()
    _default = ""

    @property
    def kernel_spec_manager(self) -> Any:
        return _VisibleSpecs(super().kernel_spec_manager, self._hidden)

    @property
    def kernel_manager(self) -> Any:
        return _CallersDefault(super().kernel_manager, self._default)

    @web.authenticated
    async def get(self) -> None:
        user = kernel_user_of(self)
        self._hidden = await hidden_specs(self, user)
        self._default = await default_kernel_name(self, user, self._hidden)
        await ensure_async(super().get())


class ServiceKernelSpecHandler(KernelSpecHandler):
    """``GET /api/kernelspecs/{name}``: 404 for another user's private image."""

    _hidden: frozenset[str] = frozenset()

    @property
    def kernel_spec_manager(self) -> Any:
        return _VisibleSpecs(super().kernel_spec_manager, self._hidden)

    @web.authenticated
    async def get(self, kernel_name: str) -> None:
        self._hidden = await hidden_specs(self, kernel_user_of(self))
        await ensure_async(super().get(kernel_name))


class ServiceKernelSpecResourceHandler(KernelSpecResourceHandler):
    """``GET /kernelspecs/{name}/{file}`` (a spec's logo): for another user's private image,
    the 404 of a kernel spec that does not exist."""

    _hidden: frozenset[str] = frozenset()

    @property
    def kernel_spec_manager(self) -> Any:
        return _VisibleSpecs(super().kernel_spec_manager, self._hidden)

    @web.authenticated
    async def get(  # type: ignore[override]
        self, kernel_name: str, path: str, include_body: bool = True
    ) -> None:
        self._hidden = await hidden_specs(self, kernel_user_of(self))
        await ensure_async(super().get(kernel_name, path, include_body=include_body))


def _iso(when: datetime) -> str:
    """As jupyter_server writes its times (ISO 8601, UTC as "Z")."""
    return when.isoformat().replace("+00:00", "Z")


class ServiceAPIStatusHandler(APIStatusHandler):
    """``GET /api/status``: the caller's kernels and their connections, not everyone's."""

    @web.authenticated
    async def get(self) -> None:
        user = kernel_user_of(self)
        km = self.kernel_manager
        models = await ensure_async(km.list_kernels())
        own = [m for m in models if owned_by(km, m["id"], user)]
        started = self.settings.get("started") or datetime.fromtimestamp(0, timezone.utc)
        activity = [
            datetime.fromisoformat(m["last_activity"])
            for m in own
            if isinstance(m.get("last_activity"), str)
        ]
        model = {
            "started": _iso(started),
            "last_activity": _iso(max(activity, default=started)),
            "kernels": len(own),
            "connections": sum(int(m.get("connections") or 0) for m in own),
        }
        self.finish(json.dumps(model, sort_keys=True))


class ServiceMetricsHandler(APIHandler):
    """``GET /metrics``: jupyter_server's metrics (every user's kernels by spec, requests), for
    the service's administrators only, whatever ServerApp.authenticate_prometheus says: they
    name other users' kernel specs, private images included."""

    _track_activity = False

    @web.authenticated
    async def get(self) -> None:
        why = service_admin_refusal(kernel_user_of(self), self.current_user, self.serverapp)
        if why:
            raise web.HTTPError(403, why, reason="Administrators only")
        body = prometheus_client.generate_latest(prometheus_client.REGISTRY)
        self.finish(body, set_content_type=prometheus_client.CONTENT_TYPE_LATEST)


_UUID = r"(?P<kernel_id>\w+-\w+-\w+-\w+-\w+)"
_SPEC_NAME = r"(?P<kernel_name>[\w\.\-%]+)"


def service_kernel_handlers() -> list[tuple[str, type[web.RequestHandler]]]:
    """The stock kernels patterns (jupyter_server's services/kernels/handlers.py), taken over,
    and the stock routes that would tell one user of another's kernels (status, metrics, a
    spec's files)."""
    return [
        (r"/api/kernelspecs", ServiceKernelSpecsHandler),
        (rf"/api/kernelspecs/{_SPEC_NAME}", ServiceKernelSpecHandler),
        (rf"/kernelspecs/{_SPEC_NAME}/(?P<path>.*)", ServiceKernelSpecResourceHandler),
        (r"/api/kernels", ServiceKernelsHandler),
        (rf"/api/kernels/{_UUID}", ServiceKernelHandler),
        (rf"/api/kernels/{_UUID}/(?P<action>restart|interrupt)", ServiceKernelActionsHandler),
        (rf"/api/kernels/{_UUID}/channels", ServiceKernelWebsocketHandler),
        (r"/api/status", ServiceAPIStatusHandler),
        (r"/metrics", ServiceMetricsHandler),
    ]
