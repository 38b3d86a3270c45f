"""The base of every /gpu-containers handler: authentication and authorization on the extension's
resources, the Services, the caller's kernel user, errors answered as JSON sentences (with the
option that decided one for an administrator only, and in the log always: errors.py), JSON
bodies read with a sentence for a bad one; the JSON 404 for any other path.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import ensure_async
from tornado import web

from ..base.errors import ContainerKernelError, EngineUnavailable, Refusal
from ..gpus.allocator import GPURequest, Ledger, current_ledger
from ..gpus.gpu_report import preflight
from ..gpus.inventory import Inventory
from ..host.identity import KernelUser
from ..server.event_streams import EventStreams
from ..server.kernelmanager import finish_with_sentence
from ..services import SETTINGS_KEY, Services
from .admin_desk_view import desk_for as admin_desk_for
from .admin_view import refusal as admin_refusal

# Resource name for jupyter_server's authorizer: one namespace for all of this extension's routes.
AUTH_RESOURCE = "gpu_containers"
# The admin view's routes (admin_view.py): an authorizer may keep them from anyone, admins included.
ADMIN_AUTH_RESOURCE = "gpu_containers_admin"


class GPUContainersHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def services(self) -> Services:
        """The server's shared objects (services.py), which the app put in the settings."""
        found: Services = self.settings[SETTINGS_KEY]
        return found

    # Whether this request's user reads the option that decided a refusal (an administrator):
    # asked before the request runs, since write_error cannot wait for the answer.
    reads_settings = False

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        if self.current_user:
            try:
                self.reads_settings = await self.is_admin()
            except Exception as e:
                # Only an error's "setting" field depends on it: never worth failing the request.
                self.log.debug("Cannot tell whether this request's user is an admin: %s", e)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Every error under /gpu-containers/ is JSON (APIHandler's), and a 405 says which
        # methods the route has (RFC 9110: a 405 carries Allow). The core's errors are plain
        # exceptions (errors.py): here, once, they become their status and their sentence.
        error = (kwargs.get("exc_info") or (None, None, None))[1]
        if isinstance(error, ContainerKernelError):
            finish_with_sentence(self, error, admin=self.reads_settings)
            return
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        super().write_error(status_code, **kwargs)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # A refusal in a sentence is not a server fault: one warning line, no traceback; it
        # names the option that decided it, for the administrator who reads the log.
        if isinstance(value, ContainerKernelError):
            self.log.warning(
                "%d %s %s: %s", value.status, self.request.method, self.request.path, value.log_text
            )
            return
        super().log_exception(typ, value, tb)

    def refusal_fields(self, name: str, refusal: Refusal) -> dict[str, str]:
        """A refusal answered as a field: ``name``, its sentence ("" when nothing is refused),
        and for an administrator ``<name>_setting``, the option that decided it."""
        fields = {name: refusal.sentence}
        if self.reads_settings and refusal.setting:
            fields[f"{name}_setting"] = refusal.setting
        return fields

    @classmethod
    def allowed_methods(cls) -> list[str]:
        return [
            method
            for method in ("GET", "POST", "PUT", "DELETE")
            if getattr(cls, method.lower()) is not getattr(web.RequestHandler, method.lower())
        ]

    async def require_permission(self, action: str, *resources: str) -> None:
        """403 unless the server's authorizer lets this user ``action`` each of ``resources``
        (jupyter_server's: "kernels", "sessions", …), as its own handlers would ask."""
        for resource in resources:
            allowed = await ensure_async(
                self.authorizer.is_authorized(self, self.current_user, action, resource)
            )
            if not allowed:
                raise web.HTTPError(
                    403,
                    f"This server's authorizer does not let you {action} {resource}, which this "
                    "request needs.",
                )

    @property
    def kernel_user(self) -> KernelUser | None:
        """The account a kernel service runs this request's kernels as (identity.py); None on a
        user's own server, whose kernels are the server user's."""
        found = getattr(self.current_user, "kernel_user", None)
        return found if isinstance(found, KernelUser) else None

    @contextlib.contextmanager
    def event_stream(self) -> Iterator[None]:
        """One of this request's user's event streams (a kernel's log, a pull's progress) while
        the stream is open: on a shared server, within their bound (server/event_streams.py),
        else 429 with a sentence."""
        manager = self.kernel_manager
        streams = getattr(manager, "event_streams", None)
        user = self.kernel_user
        if not isinstance(streams, EventStreams) or user is None:
            yield
            return
        with streams.held(user.uid, int(getattr(manager, "max_event_streams_per_user", 0))):
            yield

    async def is_admin(self) -> bool:
        """Whether this request's user is one of this server's administrators (admin_view.py)."""
        desk = admin_desk_for(self.settings, self.services, self.serverapp)
        why = admin_refusal(
            desk.config,
            self.kernel_user,
            self.current_user,
            self.serverapp,
            await desk.server_account(),
        )
        return not why

    @property
    def uid(self) -> str:
        """Whose GPUs and kernels "mine" means in this request."""
        user = self.kernel_user
        return str(user.uid if user is not None else os.getuid())

    @property
    def whose(self) -> str:
        """Whose pulls and registry logins this request's are: a kernel service's user name,
        "" on a user's own server (there is one user)."""
        user = self.kernel_user
        return user.username if user is not None else ""

    @property
    def private_owner(self) -> tuple[int, int] | None:
        """Who owns the record of a private pull this request makes (None: this server's
        user, who writes it)."""
        user = self.kernel_user
        return (user.uid, user.gid) if user is not None else None

    async def refuse_unless_free(self, request: GPURequest, kernel_id: str) -> None:
        """409 with the sentence when ``request`` cannot be had now; the GPUs ``kernel_id``
        holds count as free (a restart keeps them, a switch frees them first). Nothing is
        checked where the engine's scheduler places GPUs (Kubernetes, Slurm): it queues what it
        cannot give now, and this host's GPUs are not the ones it gives."""
        if not self.services.placement.books_host_gpus:
            return
        inventory, ledger = await self.gpu_state()
        preflight(
            self.services.allocator,
            inventory,
            ledger,
            request,
            kernel_id,
            uid=self.uid,  # the caller's: a kernel service runs as root, its users do not
            show_others=self.services.visibility.show_other_users,
        )

    async def gpu_state(self) -> tuple[Inventory, Ledger]:
        """The GPUs now, and who holds them (read off the event loop)."""
        services = self.services
        inventory = await services.inventory.read()
        return inventory, await current_ledger(services.backend, services.state)

    async def gpu_state_or_reason(self) -> tuple[Inventory, Ledger, str]:
        """gpu_state, for reads that must answer without an engine too: then the ledger is
        empty (who holds what is unknown) and the third item is the engine's sentence."""
        try:
            inventory, ledger = await self.gpu_state()
        except EngineUnavailable as e:
            return await self.services.inventory.read(), Ledger(), e.sentence
        return inventory, ledger, ""


def json_body(handler: APIHandler) -> Any:
    """The request body as JSON, None when empty. Not jupyter_server's get_json_body: that one
    answers 500 for a body that is not UTF-8, and logs a body that is not JSON at DEBUG, where a
    malformed credentials body would put its password in the server log."""
    raw = handler.request.body
    if not raw:
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        # ValueError: not UTF-8, or not JSON; RecursionError: nested too deeply ("[" * 100000).
        # from None: a JSONDecodeError carries the whole body (its .doc), which must not travel
        # on as this error's cause into a log formatter or an error reporter.
        raise web.HTTPError(400, "The request body must be JSON (UTF-8).") from None


def json_object(handler: APIHandler) -> dict[str, Any]:
    """The request body, which must be a JSON object (a fuzzer's list or number gets a 400)."""
    body = json_body(handler)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise web.HTTPError(400, "The request body must be a JSON object.")
    return body


class NotFoundHandler(GPUContainersHandler):
    """Any other path under /gpu-containers/: a JSON 404 for every method, as the OpenAPI
    description says of every error there (not the server's HTML page)."""

    @classmethod
    def allowed_methods(cls) -> list[str]:
        return []

    @web.authenticated
    @authorized
    async def get(self, *_args: str) -> None:
        raise web.HTTPError(404, "There is no such GPU Containers endpoint.")

    post = put = delete = patch = head = get
