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
from typing import Any

from jupyter_client.kernelspec import NoSuchKernel
from jupyter_core.utils import ensure_async
from jupyter_server.services.kernels.handlers import KernelHandler, MainKernelHandler
from jupyter_server.services.kernels.websocket import KernelWebsocketHandler
from jupyter_server.services.kernelspecs.handlers import KernelSpecHandler, MainKernelSpecHandler
from jupyter_server.utils import url_escape, url_path_join
from tornado import web

from .allocator import GPURequest
from .errors import ValueRefused
from .gpuqueue import WHILE_WAITING
from .identity import KernelUser, launching_for
from .kernelspecs import ContainerKernelSpecManager
from .launchplan import inside
from .notebook_requests import launching_with
from .privateimages import visible
from .services import SETTINGS_KEY
from .stock_routes import KernelActionsHandler

# What a start's env may carry that the service reads (contract with users' servers).
REQUEST_ENV = "KERNEL_GPU_CONTAINERS_REQUEST"
WAIT_ENV = "KERNEL_GPU_CONTAINERS_WAIT"
WORKING_DIR_ENV = "KERNEL_WORKING_DIR"
SESSION_ENV = "JPY_SESSION_NAME"


# How long a request waits for the service's start-up recovery before it is answered anyway.
RECOVERY_WAIT = 120.0


async def after_recovery(handler: Any) -> None:
    """Wait until the service has reattached the kernels a previous process left. A user's
    server asking about its kernel in that moment would be told it is gone (404), and would
    restart it, losing its state, just before it came back."""
    recovered = getattr(handler.serverapp, "kernels_recovered", None)
    if recovered is not None and not recovered.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(recovered.wait(), RECOVERY_WAIT)


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


def wait_argument(env: Any) -> bool | None:
    """Whether a start's ``env`` asks to wait for its GPUs in the queue ("true"/"false"); None
    when it does not say (GPUQueue.wait_by_default). ValueRefused for anything else."""
    raw = env.get(WAIT_ENV) if isinstance(env, dict) else None
    if raw is None or raw == "":
        return None
    if raw in ("true", "false"):
        return raw == "true"
    raise ValueRefused(f'{WAIT_ENV} must be "true" or "false".')


def start_arguments(user: KernelUser, env: Any) -> tuple[dict[str, Any], GPURequest | None]:
    """What a start's ``env`` may decide: the kernel's directory and session name (dropped
    unless inside the user's workspace), and the notebook's GPU request (ValueRefused when
    malformed). Blocking (realpath): a worker thread."""
    env = env if isinstance(env, dict) else {}
    cwd = _inside_workspace(env.get(WORKING_DIR_ENV), user.workspace) or user.workspace
    session = _inside_workspace(env.get(SESSION_ENV), user.workspace)
    raw = env.get(REQUEST_ENV)
    request = None
    if isinstance(raw, str) and raw.strip() not in ("", "null"):
        try:
            value = json.loads(raw)
        except ValueError:
            raise ValueRefused(
                f"{REQUEST_ENV} must be the notebook's GPU request as JSON (a count, a list "
                "of GPU ids, or null)."
            ) from None
        request = GPURequest.parse(value) if value is not None else None
    launch_env = {SESSION_ENV: session} if session else {}
    return {"cwd": cwd, "env": launch_env}, request


class ServiceKernelsHandler(MainKernelHandler):
    """``GET /api/kernels``: the caller's kernels. ``POST``: start one for the caller."""

    @web.authenticated
    async def get(self) -> None:
        user = kernel_user_of(self)
        await after_recovery(self)
        km = self.kernel_manager
        models = await ensure_async(km.list_kernels())
        own = [m for m in models if _owned_by(km, m["id"], user)]
        self.finish(json.dumps(own, default=str))

    @web.authenticated
    async def post(self) -> None:
        user = kernel_user_of(self)
        km = self.kernel_manager
        model = self.get_json_body() or {}
        if not isinstance(model, dict):
            raise web.HTTPError(400, "The body must be a JSON object.")
        name = model.get("name") or km.default_kernel_name
        if not isinstance(name, str):
            raise web.HTTPError(400, "name must be a kernel spec name.")
        try:  # (a stock start of an unknown spec is a 500 with a traceback)
            if name in await hidden_specs(self, user):  # another user's private image
                raise NoSuchKernel(name)
            await asyncio.to_thread(self.kernel_spec_manager.get_kernel_spec, name)
        except NoSuchKernel:
            raise web.HTTPError(404, f"There is no kernel spec {name!r} here.") from None
        try:
            kwargs, request = await asyncio.to_thread(start_arguments, user, model.get("env"))
            wait = wait_argument(model.get("env"))
        except ValueRefused as e:
            raise web.HTTPError(400, e.sentence) from None
        given = (
            launching_with(request, wait)
            if request is not None or wait is not None
            else contextlib.nullcontext()
        )
        queue = getattr(self.serverapp, "start_queue", None)
        # Chosen here, so that a client that goes away while the start waits for a GPU cancels
        # that wait (on_connection_close) instead of leaving a kernel nobody asked for any more.
        self._starting = str(uuid.uuid4())
        async with queue.slot() if isinstance(queue, StartQueue) else _no_queue():
            with launching_for(user), given:
                kernel_id: str = await km.start_kernel(
                    kernel_name=name, kernel_id=self._starting, **kwargs
                )
        reply = await ensure_async(km.kernel_model(kernel_id))
        location = url_path_join(self.base_url, "api", "kernels", url_escape(kernel_id))
        self.set_header("Location", location)
        self.set_status(201)
        self.finish(json.dumps(reply, default=str))

    _starting = ""

    def on_connection_close(self) -> None:
        super().on_connection_close()
        services = self.settings.get(SETTINGS_KEY)
        if self._starting and services is not None:
            services.queue.cancel(self._starting, "the client went away")


class StartQueue:
    """Kernel starts in flight on the service, and those waiting for a slot: bounded, so that
    many users starting at once get answers (a start, or a quick "busy"), never timeouts."""

    def __init__(self, running: int, waiting: int) -> None:
        self.running, self.waiting = running, waiting
        self._slots = asyncio.BoundedSemaphore(running)
        self._waiting = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> Any:
        if self._slots.locked() and self._waiting >= self.waiting:
            raise web.HTTPError(
                503,
                f"The kernel service is starting {self.running} kernels and {self._waiting} more "
                "wait, as many as it takes (ServiceApp.max_queued_starts). Try again in a few "
                "seconds.",
                reason="Kernel service busy",
            )
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        # A start that waits for a GPU gives its slot back meanwhile (gpuqueue.WHILE_WAITING):
        # starts that can go ahead are not held up by those that cannot.
        held = True

        @contextlib.asynccontextmanager
        async def given_back() -> AsyncIterator[None]:
            nonlocal held
            self._slots.release()
            held = False
            try:
                yield
            finally:
                await self._slots.acquire()  # (cancelled here: the slot is not held)
                held = True

        token = WHILE_WAITING.set(given_back)
        try:
            yield
        finally:
            WHILE_WAITING.reset(token)
            if held:
                self._slots.release()


def _owned_by(km: Any, kernel_id: str, user: KernelUser) -> bool:
    owner = km.owner_of(kernel_id)
    return owner is not None and owner.username == user.username and owner.uid == user.uid


@contextlib.asynccontextmanager
async def _no_queue() -> Any:
    yield


class ServiceKernelHandler(KernelHandler):
    """``GET`` and ``DELETE /api/kernels/{id}``: the caller's own kernel only."""

    @web.authenticated
    async def get(self, kernel_id: str) -> None:
        await after_recovery(self)
        check_owner(self, kernel_id)
        await ensure_async(super().get(kernel_id))

    @web.authenticated
    async def delete(self, kernel_id: str) -> None:
        await after_recovery(self)
        check_owner(self, kernel_id)
        await ensure_async(super().delete(kernel_id))


class ServiceKernelActionsHandler(KernelActionsHandler):
    """``POST /api/kernels/{id}/interrupt|restart``: the caller's own kernel only."""

    @web.authenticated
    async def post(self, kernel_id: str, action: str) -> None:  # type: ignore[override]
        await after_recovery(self)
        check_owner(self, kernel_id)
        await super().post(kernel_id, action)


class ServiceKernelWebsocketHandler(KernelWebsocketHandler):
    """``/api/kernels/{id}/channels``: refused with the stock 404, before the upgrade, unless the
    kernel is the caller's."""

    async def pre_get(self) -> None:
        if self.current_user is None:
            raise web.HTTPError(403)
        await after_recovery(self)
        check_owner(self, self.kernel_id)
        await super().pre_get()


async def hidden_specs(handler: Any, user: KernelUser) -> frozenset[str]:
    """The kernel specs of images other users pulled with their own logins, which ``user``
    may neither see nor start (privateimages.py)."""
    ksm = handler.settings.get("kernel_spec_manager")  # the server's own, not the view
    services = handler.settings.get(SETTINGS_KEY)
    if not isinstance(ksm, ContainerKernelSpecManager) or services is None:
        return frozenset()

    def blocking() -> frozenset[str]:
        entries = ksm.image_entries()
        images = [image for _ref, image in entries.values()]
        seen = {
            image.id
            for image in visible(images, services.state, services.listed_images(), user.uid)
        }
        return frozenset(name for name, (_ref, image) in entries.items() if image.id not in seen)

    return await asyncio.to_thread(blocking)


class _VisibleSpecs:
    """The server's kernel spec manager, without the specs one user may not see."""

    def __init__(self, ksm: Any, hidden: frozenset[str]) -> None:
        self._ksm, self._hidden = ksm, hidden

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ksm, name)

    def get_all_specs(self) -> dict[str, Any]:
        specs: dict[str, Any] = self._ksm.get_all_specs()
        return {name: spec for name, spec in specs.items() if name not in self._hidden}

    def get_kernel_spec(self, kernel_name: str) -> Any:
        if kernel_name in self._hidden:
            raise NoSuchKernel(kernel_name)
        return self._ksm.get_kernel_spec(kernel_name)


class ServiceKernelSpecsHandler(MainKernelSpecHandler):
    """``GET /api/kernelspecs``: the images this user may start kernels on."""

    _hidden: frozenset[str] = frozenset()

    @property
    def kernel_spec_manager(self) -> Any:
        return _VisibleSpecs(super().kernel_spec_manager, self._hidden)

    @web.authenticated
    async def get(self) -> None:
        self._hidden = await hidden_specs(self, kernel_user_of(self))
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


_UUID = r"(?P<kernel_id>\w+-\w+-\w+-\w+-\w+)"


def service_kernel_handlers() -> list[tuple[str, type[web.RequestHandler]]]:
    """The stock kernels patterns (jupyter_server's services/kernels/handlers.py), taken over."""
    return [
        (r"/api/kernelspecs", ServiceKernelSpecsHandler),
        (r"/api/kernelspecs/(?P<kernel_name>[\w\.\-%]+)", ServiceKernelSpecHandler),
        (r"/api/kernels", ServiceKernelsHandler),
        (rf"/api/kernels/{_UUID}", ServiceKernelHandler),
        (rf"/api/kernels/{_UUID}/(?P<action>restart|interrupt)", ServiceKernelActionsHandler),
        (rf"/api/kernels/{_UUID}/channels", ServiceKernelWebsocketHandler),
    ]
