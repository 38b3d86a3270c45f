"""REST handlers: thin, authenticated, and answering in sentences.

- ``GET  /gpu-containers/status``: is the Docker engine usable, how many container kernel specs.
- ``GET  /gpu-containers/gpus``: the host's GPUs, each with its holders.
- ``GET  /gpu-containers/allocations``: this user's kernels that hold GPUs.
- ``GET  /gpu-containers/cluster``: on Kubernetes, the GPU node pools (nodes grouped by GPU
  feature discovery's labels), which node and pod holds what, and each listed image's verdict
  per pool (cluster_view.py); on Docker, backend "docker" and no pools.
- ``GET  /gpu-containers/notebooks/kernel?path=dir/nb.ipynb``: what a notebook's toolbar shows:
  its stored GPU request, and its running kernel (spec, image, the GPUs it holds, its state).
- ``POST /gpu-containers/notebooks/kernel``: remember a notebook's GPU request, then start its
  kernel (or restart it, or switch it to another kernel spec) under that request.
- ``GET  /gpu-containers/images``: the catalog (local and listed images, readiness, verdicts,
  disk use per image and in total).
- ``GET  /gpu-containers/prepull``: the administrator's pre-pull schedule and pruning
  (prepull.py): last and next runs, pulls under way, what pruning removed.
- ``POST /gpu-containers/pulls``: start (or join) a pull; ``GET /gpu-containers/pulls[/<id>]``
  reads them, ``DELETE /gpu-containers/pulls/<id>`` cancels, and
  ``GET /gpu-containers/pulls/<id>/events`` streams progress as server-sent events.
- ``GET /gpu-containers/registries``; ``PUT``/``DELETE
  /gpu-containers/registries/<registry>/credentials``: a user's own registry login, kept in this
  server's memory only and never returned.
- ``GET /gpu-containers/kernels``: this server's container kernels with their GPU use over the
  last minutes; ``GET /gpu-containers/kernels/<id>``: one kernel's own view (container, image
  digest, mounts, GPUs, start phases, last end); ``GET /gpu-containers/kernels/<id>/log``: its
  container's log as server-sent events (kernel_view.py). Only the kernel's owner is answered.

- ``GET /gpu-containers/admin``: every GPU holder on the host, the queue, reclaim states and
  GPU-hour use; ``POST /gpu-containers/admin/kernels/<id>`` releases or shuts down any user's
  kernel with a reason; administrators only (admin.py). ``GET /gpu-containers/admin/notices``:
  why an administrator released or shut down the caller's kernels.
- ``GET /gpu-containers/metrics``: Prometheus metrics of GPU sharing (no user names); on a
  kernel service, its administrators only.
- ``GET /gpu-containers/quota``: the caller's GPU-hours this day or week: used, the limit, what
  is left, when it resets, and the group's (quota.py).

Without a Docker engine (a Binder-style host) every GET still answers: ``/status`` says why in
``engine.message``; ``/gpus``, ``/allocations`` and ``/images`` answer 200 with what is known
without the engine (the GPUs, the listed images) and the engine's sentence in ``engine_error``.

The whole API is described in ``openapi.yaml`` next to this module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.services.sessions.sessionmanager import KernelName, ModelName
from jupyter_server.utils import ensure_async
from prometheus_client import CONTENT_TYPE_LATEST as PROMETHEUS_CONTENT_TYPE
from tornado import web
from tornado.iostream import StreamClosedError

from ..base.errors import ContainerKernelError, EngineUnavailable
from ..base.records import ImageRecord, ImagesDiskUse
from ..base.references import BadReference, parse_reference
from ..base.safefiles import owner_name
from ..gpus.allocator import GPURequest, Ledger, current_ledger
from ..gpus.gpu_report import gpu_report, kernel_gpus, my_allocations, preflight
from ..gpus.inventory import Inventory
from ..gpus.notebook_requests import NotebookRequestError, launching_with, read_notebook_request
from ..host.identity import KernelUser
from ..images import privateimages
from ..images.catalog import CatalogInputs, catalog_rows
from ..images.credentials import Credential
from ..images.prepull import disk_totals
from ..images.pulls import ACTIVE, PULLS_TURNED_OFF
from ..kernel.provisioner import ContainerProvisioner
from ..policy.launchplan import inside
from ..server.gateway_user import (
    ServiceRefused,
    ServiceUnreachable,
    from_gateway_error,
    is_gateway_kernel_manager,
    service_json,
)
from ..server.kernelmanager import finish_with_sentence
from ..server.waiting_sessions import WAITING_STATE
from ..server.websocket import close_kernel_websockets
from ..services import SETTINGS_KEY, Services
from .admin import AdminDesk, NotAdmin, admin_view
from .admin import act as admin_act
from .admin import desk_for as admin_desk_for
from .admin import notices_for as admin_notices
from .admin import parse_action as parse_admin_action
from .admin import refusal as admin_refusal
from .cluster_view import catalog_verdicts, cluster_view
from .kernel_view import (
    KERNEL_ID,
    LogFeed,
    current_container,
    find_kernel,
    kernel_details,
    kernels_listing,
    look_at_usage,
    notebook_of,
    parse_tail,
)

# Resource name for jupyter_server's authorizer: one namespace for all of this extension's routes.
AUTH_RESOURCE = "gpu_containers"
# The admin view's routes (admin.py): an authorizer may keep them from anyone, admins included.
ADMIN_AUTH_RESOURCE = "gpu_containers_admin"


class GPUContainersHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def services(self) -> Services:
        """The server's shared objects (services.py), which the app put in the settings."""
        found: Services = self.settings[SETTINGS_KEY]
        return found

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Every error under /gpu-containers/ is JSON (APIHandler's), and a 405 says which
        # methods the route has (RFC 9110: a 405 carries Allow). The core's errors are plain
        # exceptions (errors.py): here, once, they become their status and their sentence.
        error = (kwargs.get("exc_info") or (None, None, None))[1]
        if isinstance(error, ContainerKernelError):
            finish_with_sentence(self, error)
            return
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        super().write_error(status_code, **kwargs)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # A refusal in a sentence is not a server fault: one warning line, no traceback.
        if isinstance(value, ContainerKernelError):
            self.log.warning(
                "%d %s %s: %s", value.status, self.request.method, self.request.path, value
            )
            return
        super().log_exception(typ, value, tb)

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

    async def is_admin(self) -> bool:
        """Whether this request's user is one of this server's administrators (admin.py)."""
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
        holds count as free (a restart keeps them, a switch frees them first)."""
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


class StatusHandler(GPUContainersHandler):
    """Whether the Docker engine answers, and how many container kernel specs it yields."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        engine = self.services.backend
        ksm = self.kernel_spec_manager
        image_entries = getattr(ksm, "image_entries", None)
        count = await asyncio.to_thread(self._offered_count, image_entries) if image_entries else 0
        try:
            version = await engine.version()
            status = {"ok": True, "message": "", "version": version}
        except ContainerKernelError as e:
            status = {"ok": False, "message": e.sentence}
        status["endpoint"] = engine.resolved_url
        if image_entries is None:
            status["message"] = (
                status["message"]
                or "Container kernel specs are off: another kernel spec manager is configured."
            )
        # What the panel offers this user: no admin section to poll (403 each time) and no Pull
        # button that can only fail, where these are the administrator's.
        reply = {
            "engine": status,
            "kernelspecs": count,
            "admin": await self.is_admin(),
            "pull_refusal": pull_refusal(self),
        }
        self.finish(json.dumps(reply))

    def _offered_count(self, image_entries: Any) -> int:
        """The container kernel specs offered to the caller (``image_entries``: the kernel spec
        manager's): a kernel service's user is not told of other users' private pulls, not even
        by their number. Blocking."""
        services = self.services
        entries: dict[str, tuple[str, Any]] = image_entries()
        user = self.kernel_user
        if user is None:
            return len(entries)
        hidden = privateimages.hidden_from(services.state, user.uid)
        listed = services.listed_images()
        return sum(1 for ref, image in entries.values() if hidden.may_use(image, ref, listed))


class GPUsHandler(GPUContainersHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        inventory, ledger, engine_error = await self.gpu_state_or_reason()
        report = await gpu_report(
            inventory,
            ledger,
            uid=self.uid,
            show_others=self.services.visibility.show_other_users,
            allocator=self.services.allocator,
            engine_error=engine_error,
        )
        self.finish(json.dumps(report))


class ClusterHandler(GPUContainersHandler):
    """On Kubernetes: the GPU node pools, which node and pod holds what, and each listed
    image's verdict per pool (cluster_view.py). On Docker: backend "docker", no pools."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        services = self.services
        view = await cluster_view(
            services.backend,
            services.catalog.listed(),
            uid=self.uid,
            show_others=services.visibility.show_other_users,
        )
        self.finish(json.dumps(view))


class AllocationsHandler(GPUContainersHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        inventory, ledger, engine_error = await self.gpu_state_or_reason()
        allocations = my_allocations(inventory, ledger, self.uid)
        self.finish(json.dumps({"allocations": allocations, "engine_error": engine_error}))


class NotebookKernelHandler(GPUContainersHandler):
    """A notebook's kernel and GPU request: read them (GET), or start, restart or switch the
    kernel under a request (POST).

    The request itself lives in the notebook's metadata (notebook_requests.py): JupyterLab's
    panel writes it into the notebook and saves it, as it saves the kernel spec. This endpoint
    applies a request to the notebook's kernel now; it writes no file, and keeps nothing.

    POST body: {"path": "dir/nb.ipynb", "gpus": 2 | ["0", "GPU-…"] | null, "kernel_name": "…"?,
    "start": true?, "wait": true?}. ``gpus`` null: the kernel spec's default. ``start: false``
    only checks that the request can be met now (the caller saves it in the notebook, and the
    kernel's next start reads it there). ``wait``: a start whose GPUs are taken waits for them
    in the host-wide queue (gpuqueue.py) instead of being refused; absent, GPUQueue's default.

    Behind a kernel service (gateway_user.py) the sessions and the notebook are still this
    server's; the kernel, its spec and its GPUs are the service's: a restart under new GPUs is
    the service's ``POST /gpu-containers/kernels/{id}/restart``, the GPUs a kernel holds come from
    its view there, and the service alone decides whether a request can be met (it answers the
    start with its 409).
    """

    @property
    def behind_service(self) -> bool:
        """Whether the kernels live behind a kernel service (no engine, no Services here)."""
        return is_gateway_kernel_manager(self.kernel_manager)

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """?path=dir/nb.ipynb: the request in the saved notebook (null: it says nothing), the
        default of its kernel's spec, and the notebook's kernel (null without one)."""
        path, _ = self._notebook(self.get_query_argument("path", ""))
        problem = ""
        try:
            saved = await read_notebook_request(self.contents_manager, path)
        except NotebookRequestError as e:
            saved, problem = None, e.sentence
        session = await self._session_of(path)
        kernel, default = await self._kernel_view(session) if session else (None, None)
        reply = {
            "path": path,
            "request": saved.to_json() if saved is not None else None,
            "request_problem": problem,
            "default": default,
            "kernel": kernel,
        }
        self.finish(json.dumps(reply))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = json_object(self)
        path, _ = self._notebook(body.get("path"))
        kernel_name = body.get("kernel_name")
        if kernel_name is not None and not isinstance(kernel_name, str):
            raise web.HTTPError(400, "kernel_name must be a kernel spec name.")
        gpus = body.get("gpus")
        request = GPURequest.parse(gpus) if gpus is not None else None
        start = body.get("start", True)
        if not isinstance(start, bool):
            raise web.HTTPError(400, "start must be true or false.")
        wait = body.get("wait")
        if wait is not None and not isinstance(wait, bool):
            raise web.HTTPError(400, "wait must be true or false.")
        if start:
            # It starts, restarts or switches a kernel, and makes a session: what the stock
            # kernels and sessions APIs would need the authorizer's leave for.
            await self.require_permission("write", "kernels", "sessions")

        sm, km = self.session_manager, self.kernel_manager
        session = await self._session_of(path)
        if session is not None and session["kernel"].get("execution_state") == WAITING_STATE:
            raise web.HTTPError(
                409,
                "This notebook's kernel is already waiting for a GPU. Cancel that start in the "
                "GPU Containers panel (its queue) first, or wait for it.",
                reason="GPU wait under way",
            )
        running_id = str(session["kernel"]["id"]) if session else ""
        running_name = str(session["kernel"].get("name") or "") if session else ""
        running = km.get_kernel(running_id) if running_id else None
        if running is None:
            running_name = ""
        target = kernel_name or running_name or None
        if not target:
            raise web.HTTPError(400, "This notebook has no kernel yet: give kernel_name.")

        # Refuse before touching a running kernel when the GPUs cannot be had now. The running
        # kernel's own GPUs count as free: a restart keeps them, and a switch frees them first.
        spec_default = await self._spec_default(target)  # also: 404 for an unknown kernel spec
        effective = request if request is not None else spec_default
        # A start that may wait for its GPUs is not refused here: it joins the queue.
        if effective.wants_gpus and not self.behind_service:
            may_wait = wait if wait is not None else self.services.queue.wait_by_default
            if not may_wait:
                await self.refuse_unless_free(effective, running_id)

        if not start:
            self.finish(json.dumps({"session": session, "gpus": gpus}, default=str))
            return
        # The launches below ask for this request, whatever the saved notebook says: the
        # caller saves it there (the panel does, once the kernel runs).
        with launching_with(effective, wait):
            if session is None:
                model = await sm.create_session(
                    path=path,
                    name=ModelName(os.path.basename(path)),
                    type="notebook",
                    kernel_name=KernelName(target),
                )
            elif running is not None and running_name == target and self.behind_service:
                # The service restarts its kernel under the new request (409 if it cannot).
                await service_json(
                    "POST", f"kernels/{running_id}/restart", {"gpus": effective.to_json()}
                )
                model = await sm.get_session(session_id=session["id"])
            elif running is not None and running_name == target:
                provisioner = getattr(running, "provisioner", None)
                if isinstance(provisioner, ContainerProvisioner):
                    provisioner.change_request(effective)
                await ensure_async(km.restart_kernel(running_id))
                closed = close_kernel_websockets(running_id, "kernel restarted with other GPUs")
                self.log.debug("Closed %d websocket(s) of restarted kernel %s", closed, running_id)
                model = await sm.get_session(session_id=session["id"])
            elif self.behind_service:  # another image, the new kernel first (see below)
                model = await switch_behind_service(sm, km, session, KernelName(target))
            else:  # switch this notebook to another kernel spec (another image)
                model = await switch_kernel(sm, km, session, KernelName(target))
        self.finish(json.dumps({"session": model, "gpus": gpus}, default=str))

    def _notebook(self, path: Any) -> tuple[str, str]:
        """The notebook's path, and its path on disk; 400 for anything but a .ipynb inside the
        workspace."""
        if not isinstance(path, str) or not path.endswith(".ipynb"):
            raise web.HTTPError(400, 'Give the notebook\'s path, e.g. {"path": "dir/nb.ipynb"}.')
        root = self.kernel_manager.root_dir
        os_path = os.path.join(root, *path.strip("/").split("/"))
        if "\0" in path or not inside(os_path, root):
            raise web.HTTPError(400, f"The notebook path {path!r} is outside the workspace.")
        return path, os_path

    async def _session_of(self, path: str) -> dict[str, Any] | None:
        sessions = [s for s in await self.session_manager.list_sessions() if s.get("path") == path]
        return sessions[0] if sessions else None

    async def _kernel_view(self, session: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """The session's kernel as the toolbar shows it, and its spec's default request."""
        model = session["kernel"]
        kernel_id, name = str(model["id"]), str(model["name"])
        spec = await self._spec_or_none(name)
        metadata = spec_metadata(spec)
        image = metadata.get("gpu_containers", {}).get("image", "")
        gpus: list[Any] = []
        if model.get("execution_state") == WAITING_STATE:
            pass  # its start waits in the GPU queue: no kernel, no GPUs yet
        elif self.behind_service:  # the kernel's own view on the service: the GPUs it holds
            if metadata.get("kernel_provisioner"):  # a native kernel holds none
                try:
                    view = await service_json("GET", f"kernels/{kernel_id}")
                except ServiceRefused:  # gone there since (the session is polled, not told)
                    view = {"gpus": []}
                gpus = [{"uuid": g.get("uuid"), "index": g.get("index")} for g in view["gpus"]]
                image = image or str((view.get("image") or {}).get("reference", ""))
        else:
            provisioner = getattr(self.kernel_manager.get_kernel(kernel_id), "provisioner", None)
            container = provisioner if isinstance(provisioner, ContainerProvisioner) else None
            if not image and container:
                image = container.image  # a hand-written spec, or one whose image is gone since
            if container:  # only container kernels hold GPUs: a native one needs no engine here
                inventory, ledger = await self.gpu_state()
                gpus = kernel_gpus(inventory, ledger, self.uid, kernel_id)
        kernel = {
            "id": kernel_id,
            "name": name,
            "image": image,
            "display_name": spec_display_name(spec) or name,
            "gpus": gpus,
            "execution_state": model.get("execution_state", "unknown"),
        }
        return kernel, (spec_request(spec).to_json() if spec else None)

    async def _spec_or_none(self, kernel_name: str) -> Any:
        try:  # (a gateway's kernel spec manager answers a coroutine, and its spec as a dict)
            return await ensure_async(self.kernel_spec_manager.get_kernel_spec(kernel_name))
        except Exception as e:
            found = from_gateway_error(e) if self.behind_service else None
            if isinstance(found, ServiceUnreachable):
                raise found from None  # say so, not "there is no such kernel spec"
            return None  # removed since the kernel started (its image was deleted, say)

    async def _spec_default(self, kernel_name: str) -> GPURequest:
        spec = await self._spec_or_none(kernel_name)
        if spec is None:
            raise web.HTTPError(404, f"There is no kernel spec {kernel_name!r}.")
        return spec_request(spec)


def spec_metadata(spec: Any) -> dict[str, Any]:
    """A kernel spec's metadata: a KernelSpec's, or a gateway's spec model's (a dict)."""
    if isinstance(spec, dict):
        metadata = (spec.get("spec") or {}).get("metadata")
    else:
        metadata = getattr(spec, "metadata", None)
    return metadata if isinstance(metadata, dict) else {}


def spec_display_name(spec: Any) -> str:
    if isinstance(spec, dict):
        return str((spec.get("spec") or {}).get("display_name") or "")
    return str(getattr(spec, "display_name", "") or "")


def spec_request(spec: Any) -> GPURequest:
    """A kernel spec's default GPU request (its provisioner config's ``gpus``)."""
    config = spec_metadata(spec).get("kernel_provisioner", {}).get("config", {})
    return GPURequest.parse(config.get("gpus"))


async def start_in_session(sm: Any, session: dict[str, Any], kernel_name: KernelName) -> None:
    """Start a kernel of ``kernel_name`` for ``session`` and make it the session's kernel."""
    new_id = await sm.start_kernel_for_session(
        session["id"],
        path=session["path"],
        name=session["name"],
        type=session["type"],
        kernel_name=kernel_name,
    )
    await sm.update_session(session["id"], kernel_id=new_id)


async def switch_kernel(
    sm: Any, km: Any, session: dict[str, Any], kernel_name: KernelName
) -> dict[str, Any]:
    """Replace a session's kernel by one of another kernel spec, under the same session id.

    The old kernel's container stops first: the GPUs it holds may be the only free ones, and its
    state is being discarded anyway. It stays registered until the new kernel runs, because
    jupyter_server drops a session row whose kernel it does not know, and a browser polling the
    sessions meanwhile would lose the notebook's session. If the new kernel does not start, the
    old one is shut down for good (the notebook is left without a session, not with one naming
    a dead kernel) and the launch's error goes to the caller as it is.
    """
    old_id = str(session["kernel"]["id"])
    old = km.get_kernel(old_id)
    # restart=True: stop the kernel and its container, but keep its entry (and the session row).
    await ensure_async(old.shutdown_kernel(now=False, restart=True))
    provisioner = getattr(old, "provisioner", None)
    if isinstance(provisioner, ContainerProvisioner):
        # A restart keeps the stopped container to book its GPUs for the next one: not here.
        await provisioner.cleanup(restart=False)
    try:
        await start_in_session(sm, session, kernel_name)
    finally:
        await ensure_async(km.shutdown_kernel(old_id, now=True))
    model: dict[str, Any] = await sm.get_session(session_id=session["id"])
    return model


async def switch_behind_service(
    sm: Any, km: Any, session: dict[str, Any], kernel_name: KernelName
) -> dict[str, Any]:
    """switch_kernel for a user's server behind a kernel service: the new kernel starts first,
    then the old one is shut down. A gateway kernel cannot be stopped and kept registered (its
    shutdown deletes it on the service), and the user's server forgets a kernel the service no
    longer lists, then drops the session row that names it: stopping the old kernel first lost
    the notebook's session to any page polling meanwhile. So a switch that needs the very GPUs
    the old kernel holds is refused (409), and the old kernel keeps running."""
    old_id = str(session["kernel"]["id"])
    await start_in_session(sm, session, kernel_name)
    if old_id in km:
        await ensure_async(km.shutdown_kernel(old_id, now=True))
    model: dict[str, Any] = await sm.get_session(session_id=session["id"])
    return model


class QueueHandler(GPUContainersHandler):
    """The host-wide GPU wait queue (gpuqueue.py) in fair order: the caller's waiting starts in
    full, others' as GPUVisibility allows (never their kernel ids)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        services = self.services
        state = await asyncio.to_thread(lambda: services.state)
        tickets = await services.queue.snapshot(state)
        viewer, show = int(self.uid), services.visibility.show_other_users
        self.finish(
            json.dumps(
                {
                    "queue": [t.to_json(viewer, show) for t in tickets],
                    "length": len(tickets),
                    "wait_by_default": services.queue.wait_by_default,
                    "max_wait": services.queue.max_wait,
                }
            )
        )


class QuotaHandler(GPUContainersHandler):
    """The caller's GPU-hours this period (quota.py): used, the limit, what is left, when it
    resets, and the group's."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        user = self.kernel_user
        if user is not None:
            uid, name = user.uid, user.username
        else:
            uid = os.getuid()
            name = await asyncio.to_thread(owner_name, uid)
        usage = await self.services.quota.usage(uid, name)
        self.finish(json.dumps(usage.to_json()))


class QueuedStartHandler(GPUContainersHandler):
    """``DELETE``: cancel one of the caller's starts waiting for a GPU (its launch fails with 409
    "GPU wait cancelled"). 404 for anyone else's, and for a start that no longer waits."""

    @web.authenticated
    @authorized
    async def delete(self, kernel_id: str) -> None:
        await self.require_permission("write", "kernels")
        queue = self.services.queue
        ticket = queue.waiting_ticket(kernel_id)
        if ticket is None or str(ticket.uid) != self.uid:
            raise web.HTTPError(404, f"No start of yours waits for a GPU as kernel {kernel_id}.")
        queue.cancel(kernel_id, "cancelled by its user")
        self.set_status(204)
        self.finish()


class ImagesHandler(GPUContainersHandler):
    """The catalog. ``?wait=1`` waits for the readiness probes of images not probed yet (else
    they run in the background and the rows say so). Without an engine: the listed images only,
    and ``engine_error`` says why."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        services = self.services
        engine = services.backend
        engine_error = ""
        policy = services.policy
        listed = services.catalog.listed()
        try:
            images = await engine.list_images()
        except EngineUnavailable as e:  # the listed images and the host can still be shown
            images, engine_error = [], e.sentence
        # Another user's private pulls are not this user's to see (privateimages.py).
        images = await asyncio.to_thread(
            lambda: privateimages.visible(
                images,
                services.state,
                [entry["image"] for entry in listed],
                int(self.uid),
            )
        )
        pulls = services.pulls
        pulling = {p["image"]: p["id"] for p in pulls.listing(self.whose) if p["state"] in ACTIVE}
        offers = getattr(self.kernel_spec_manager, "offers", None)
        if self.kernel_user is not None and offers is not None and not await self.is_admin():
            # A kernel service's user is shown what they may start or ask for: the images it
            # offers as kernels, the administrator's list, and their own pulls under way; not
            # every image on the host (its administrators see those, with the reason for each),
            # and nothing else is probed for them.
            listed_refs = {entry["image"] for entry in listed}
            images = _narrowed(
                images, lambda ref: ref in listed_refs or ref in pulling or offers(ref)
            )
        inventory = await services.inventory.read()
        probe = services.probe
        # cached() may read the probe's disk cache: off the event loop.
        results = await asyncio.to_thread(lambda: {i.id: probe.cached(i.id) for i in images})
        unprobed = [image for image in images if results[image.id] is None]
        if unprobed and self.get_query_argument("wait", "0") in ("1", "true"):
            found = await asyncio.gather(*(probe.probe(image) for image in unprobed))
            # Under the listed ids (on Kubernetes an answer's id is the digest the node ran).
            results.update({image.id: r for image, r in zip(unprobed, found)})
        else:
            for image in unprobed:
                probe.in_background(image)  # the probe's own threads; its answer is cached
        image_entries = getattr(self.kernel_spec_manager, "image_entries", None)
        entries = await asyncio.to_thread(image_entries) if image_entries else {}
        try:  # sizes shared between images, and containers using each: the engine's df
            disk: ImagesDiskUse | None = await asyncio.to_thread(engine.image_disk_use_sync)
        except ContainerKernelError:  # the engine's first error is engine_error already
            disk = None
        rows = catalog_rows(
            CatalogInputs(
                images=images,
                listed=listed,
                inventory=inventory,
                probes=results,
                policy=policy,
                kernel_names={ref: name for name, (ref, _image) in entries.items()},
                pulling=pulling,
                disk={use.id: use for use in disk.images} if disk is not None else {},
                # On a cluster, against its GPU node pools: the cluster view's verdicts.
                verdict_of=await catalog_verdicts(engine),
            )
        )
        host = {
            "gpus": len(inventory.allocatable()),
            "driver_version": inventory.driver_version,
            "cuda_driver_version": inventory.cuda_driver_version,
            "reason": inventory.reason,
            "source": inventory.source,
        }
        reply = {
            "images": rows,
            "host": host,
            "disk": disk_totals(disk) if disk is not None else None,
            "engine_error": engine_error,
        }
        self.finish(json.dumps(reply))


def _narrowed(images: list[ImageRecord], shown: Callable[[str], bool]) -> list[ImageRecord]:
    """``images`` with only the tags ``shown`` accepts; those left with none are left out."""
    narrowed = []
    for image in images:
        tags = tuple(tag for tag in image.tags if shown(tag))
        if tags:
            narrowed.append(image if tags == image.tags else dataclasses.replace(image, tags=tags))
    return narrowed


class PrePullHandler(GPUContainersHandler):
    """The administrator's pre-pull schedule: each image's last and next run and its pull under
    way, and pruning's settings and last pass (prepull.py). Readable by every user (the panel
    shows when the course image is pulled): it names the images the administrator
    pre-pulls, and no one's kernels. Which images pruning removed and kept (names a pattern of
    PrePuller.prune_images may match, a user's private pull's among them) only administrators
    see (admin.py); others get the counts."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.finish(json.dumps(await self.services.prepull.report(await self.is_admin())))


def service_pull_refusal(handler: GPUContainersHandler) -> str:
    """Why a kernel service's user may not pull images (ServiceApp.pull_policy), "" when they
    may, or on a user's own server (where ContainerPolicy alone decides)."""
    user = handler.kernel_user
    if user is None:
        return ""
    serverapp = handler.serverapp
    policy = getattr(serverapp, "pull_policy", "nobody")
    admins = set(getattr(serverapp, "admin_users", ()))
    if user.username in admins:
        return ""
    if policy == "nobody":
        return (
            "Images are pulled by the administrator on this host (ServiceApp.pull_policy "
            "is 'nobody'). Ask them for the image."
        )
    if policy == "admins":
        return (
            "Only the administrators of this kernel service may pull images "
            "(ServiceApp.pull_policy is 'admins'). Ask one of them for the image."
        )
    # The default allow-list, "*", admits any image: on a shared host users may pull only
    # what the administrator named.
    if not [p for p in handler.services.policy.allowed_images if p != "*"]:
        return (
            "This kernel service lets users pull only the images its administrator named "
            "in ContainerPolicy.allowed_images, and it allows none yet. Ask the "
            "administrator for the image."
        )
    return ""


def pull_refusal(handler: GPUContainersHandler) -> str:
    """Why no pull this user asks for can succeed here, "" when some may (each image is still
    checked against ContainerPolicy's allow-list when pulled)."""
    if not handler.services.policy.allow_user_pulls:
        return PULLS_TURNED_OFF
    return service_pull_refusal(handler)


class PullsHandler(GPUContainersHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.finish(json.dumps({"pulls": self.services.pulls.listing(self.whose)}))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Body: {"image": "nvcr.io/nvidia/pytorch:24.05-py3", "auth": {"username": …,
        "password": …}?}. ``auth`` is used for this pull only and kept nowhere."""
        body = json_object(self)
        image = body.get("image")
        if not isinstance(image, str) or not image.strip():
            raise web.HTTPError(400, 'Give the image to pull, e.g. {"image": "ubuntu:24.04"}.')
        self._check_pull_policy(image)
        credential = None
        auth = body.get("auth")
        if auth is not None:
            credential = _credential_from(auth, registry=_registry(image))
        pull = await self.services.pulls.start(image, credential, self.whose, self.private_owner)
        self.set_status(202)
        self.set_header("Location", self.base_url.rstrip("/") + f"/gpu-containers/pulls/{pull.id}")
        self.finish(json.dumps(pull.snapshot()))

    def _check_pull_policy(self, image: str) -> None:
        """On a kernel service, who may pull is the administrator's choice
        (ServiceApp.pull_policy); on a user's own server, ContainerPolicy alone decides."""
        why = service_pull_refusal(self)
        if why:
            raise web.HTTPError(403, why)
        # Allowed images only: ContainerPolicy's allow-list, checked by the pull itself.


class _OnePull(GPUContainersHandler):
    def _pull(self, pull_id: str) -> Any:
        pull = self.services.pulls.get(pull_id, self.whose)
        if pull is None:
            raise web.HTTPError(
                404,
                f"There is no pull {pull_id!r} (finished pulls are kept "
                "for a while, then forgotten).",
            )
        return pull


class PullHandler(_OnePull):
    @web.authenticated
    @authorized
    async def get(self, pull_id: str) -> None:
        self.finish(json.dumps(self._pull(pull_id).snapshot()))

    @web.authenticated
    @authorized
    async def delete(self, pull_id: str) -> None:
        pull = self._pull(pull_id)
        manager = self.services.pulls
        manager.cancel(pull)
        await manager.wait(pull)
        self.finish(json.dumps(pull.snapshot()))


class PullEventsHandler(_OnePull):
    """Server-sent events: one ``progress`` event per snapshot, then ``done``, ``error`` or
    ``cancelled`` with the final one. A comment line every ``keepalive`` seconds keeps proxies
    from closing a quiet stream (an extraction can be silent for a minute)."""

    keepalive = 15.0

    @web.authenticated
    @authorized
    async def get(self, pull_id: str) -> None:
        pull = self._pull(pull_id)
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")  # nginx: do not buffer the stream
        manager = self.services.pulls
        queue = manager.subscribe(pull)
        try:
            while True:
                try:
                    snapshot = await asyncio.wait_for(queue.get(), self.keepalive)
                except asyncio.TimeoutError:  # not the builtin one before Python 3.11
                    self.write(": keepalive\n\n")
                    await self.flush()
                    continue
                ended = snapshot["state"] not in ACTIVE
                event = snapshot["state"] if ended else "progress"
                self.write(f"event: {event}\ndata: {json.dumps(snapshot)}\n\n")
                await self.flush()
                if ended:
                    break
        except StreamClosedError:
            return  # the watcher went away; the pull goes on
        finally:
            manager.unsubscribe(pull, queue)
        self.finish()


class RegistriesHandler(GPUContainersHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        store = self.services.credentials
        self.finish(json.dumps({"registries": store.listing(self.whose)}))


class RegistryCredentialsHandler(GPUContainersHandler):
    """A user's own login for one registry, in this server's memory only."""

    @web.authenticated
    @authorized
    async def put(self, registry: str) -> None:
        credential = _credential_from(json_body(self), registry=registry)
        self.services.credentials.set_user(
            credential.registry, credential.username, credential.password, self.whose
        )
        self.set_status(204)
        self.finish()

    @web.authenticated
    @authorized
    async def delete(self, registry: str) -> None:
        if not self.services.credentials.forget_user(registry, self.whose):
            raise web.HTTPError(404, f"You have no credentials for {registry} on this server.")
        self.set_status(204)
        self.finish()


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


def _registry(image: str) -> str:
    try:
        return parse_reference(image).registry
    except BadReference as e:
        raise web.HTTPError(400, str(e)) from e


def _credential_from(body: Any, *, registry: str) -> Credential:
    if not isinstance(body, dict):
        raise web.HTTPError(400, 'Give {"username": "…", "password": "…"}.')
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not username or not isinstance(password, str):
        raise web.HTTPError(400, 'Give {"username": "…", "password": "…"} (both strings).')
    if not registry or "/" in registry or any(ch.isspace() for ch in registry):
        raise web.HTTPError(400, f"{registry!r} is not a registry host (e.g. nvcr.io).")
    return Credential(registry, username, password, "user")


class KernelsHandler(GPUContainersHandler):
    """This server's container kernels, with their GPU use over the last minutes."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        await self.require_permission("read", "kernels")
        look_at_usage(self.services, self.kernel_manager)
        inventory, ledger, engine_error = await self.gpu_state_or_reason()
        kernels = kernels_listing(
            self.services,
            self.kernel_manager,
            inventory,
            ledger,
            await self._notebooks(),
            self.kernel_user,
        )
        # The user's kernels shut down because their GPUs were reclaimed (reclaim.py), and why.
        reclaimed = self.services.reclaim.shut_down_for(self.kernel_user)
        self.finish(
            json.dumps({"kernels": kernels, "reclaimed": reclaimed, "engine_error": engine_error})
        )

    async def _notebooks(self) -> dict[str, str]:
        """kernel id -> its notebook's path, for the kernels that have a session."""
        sessions = await self.session_manager.list_sessions()
        return {
            str(s["kernel"]["id"]): str(s.get("path") or "") for s in sessions if s.get("kernel")
        }


class KernelHandler(KernelsHandler):
    """One of this server's container kernels, as its own view shows it (404 for any other)."""

    @web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        await self.require_permission("read", "kernels")
        km, provisioner = find_kernel(self.kernel_manager, kernel_id, self.kernel_user)
        look_at_usage(self.services, self.kernel_manager)
        notebook = (await self._notebooks()).get(kernel_id, "") or notebook_of(provisioner)
        reply = await kernel_details(self.services, kernel_id, km, provisioner, notebook)
        self.finish(json.dumps(reply))


class KernelRestartHandler(GPUContainersHandler):
    """``POST {"gpus": 2 | ["0", "GPU-…"] | null}``: restart one of the caller's container
    kernels under a new GPU request (null: its kernel spec's default). Refused with 409 and a
    sentence, before the kernel is touched, when the GPUs cannot be had now; the kernel's own
    GPUs count as free. A user's server behind a kernel service changes a notebook's GPUs this
    way (the stock restart keeps them)."""

    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        await self.require_permission("write", "kernels")
        # The body first: a malformed one is a 400 whatever the kernel id (as on every route).
        body = json_object(self)
        gpus = body.get("gpus")
        request = GPURequest.parse(gpus) if gpus is not None else None
        km, provisioner = find_kernel(self.kernel_manager, kernel_id, self.kernel_user)
        spec = km.kernel_spec
        if request is not None:
            effective = request
        else:
            effective = spec_request(spec) if spec is not None else GPURequest()
        if effective.wants_gpus:
            await self.refuse_unless_free(effective, kernel_id)
        provisioner.change_request(effective)
        await ensure_async(self.kernel_manager.restart_kernel(kernel_id))
        close_kernel_websockets(kernel_id, "kernel restarted with other GPUs")
        self.finish(json.dumps({"kernel_id": kernel_id, "gpus": gpus}))


class KernelLogHandler(GPUContainersHandler):
    """A kernel's container log as server-sent events: ``?tail=N`` lines first (200 by
    default), then new ones as they come (``?follow=0``: the tail alone)."""

    _feed: LogFeed | None = None

    def on_connection_close(self) -> None:
        if self._feed is not None:
            self._feed.close()  # ends the log's reading thread at once

    @web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        await self.require_permission("read", "kernels")
        _km, provisioner = find_kernel(self.kernel_manager, kernel_id, self.kernel_user)
        tail = parse_tail(self.get_query_argument("tail", "200"))
        follow = self.get_query_argument("follow", "1") not in ("0", "false")
        backend = self.services.backend
        first = await current_container(backend, provisioner)  # a 404 before any event

        async def send(text: str) -> None:
            self.write(text)
            await self.flush()

        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")  # nginx: do not buffer the stream
        self._feed = LogFeed(backend, self.kernel_manager, kernel_id, provisioner, send)
        try:
            await self._feed.run(first, tail, follow)
        except StreamClosedError:
            return  # the viewer went away
        finally:
            self._feed.close()
        self.finish()


class _AdminHandler(GPUContainersHandler):
    """The admin view's routes: authorized on this extension's resource as every route is, then
    the authorizer is asked about the admin resource too, and only an administrator (admin.py)
    is answered."""

    @property
    def desk(self) -> AdminDesk:
        return admin_desk_for(self.settings, self.services, self.serverapp)

    async def require_admin(self) -> str:
        """The administrator's name, or 403 with the sentence."""
        action = "read" if self.request.method == "GET" else "write"
        await self.require_permission(action, ADMIN_AUTH_RESOURCE)
        account = await self.desk.server_account()
        why = admin_refusal(
            self.desk.config, self.kernel_user, self.current_user, self.serverapp, account
        )
        if why:
            raise NotAdmin(why)
        user = self.kernel_user
        return user.username if user is not None else account


class AdminHandler(_AdminHandler):
    """Every GPU holder on the host, the queue, reclaim states and GPU-hour use (admin.py)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        await self.require_admin()
        inventory, ledger, engine_error = await self.gpu_state_or_reason()
        view = await admin_view(
            self.services, inventory, ledger, engine_error, self.kernel_manager, int(self.uid)
        )
        self.finish(json.dumps(view))


class AdminKernelHandler(_AdminHandler):
    """``POST {"action": "release" | "shutdown", "reason": "…"}`` on any user's kernel."""

    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        # The body first: a malformed one is a 400 for anyone, as on every route.
        action, reason = parse_admin_action(json_object(self))
        name = await self.require_admin()
        _inventory, ledger = await self.gpu_state()
        reply = await admin_act(
            self.services,
            self.desk.config,
            self.kernel_manager,
            ledger,
            kernel_id,
            action,
            reason,
            name,
            await self.desk.server_account(),
        )
        self.desk.metrics.collector.admin_actions[action] += 1
        self.set_status(200 if reply["state"] == "done" else 202)
        self.finish(json.dumps(reply))


class AdminNoticesHandler(_AdminHandler):
    """The caller's own notices: why an administrator released or shut down their kernels.
    Anyone's (their own only): no admin needed."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        notices = await admin_notices(self.services, self.desk.config, self.uid)
        self.finish(json.dumps({"notices": notices}))


class MetricsHandler(_AdminHandler):
    """Prometheus metrics of GPU sharing, for any authenticated, authorized caller of a user's
    own server, and for a kernel service's administrators only (its metrics are every user's
    together). A scrape sends a token: Prometheus' ``authorization`` or ``bearer_token``. Like
    every route here, never anonymous, whatever ServerApp.authenticate_prometheus says of the
    server's own /metrics. They name no user."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        if self.kernel_user is not None:
            await self.require_admin()
        body = await self.desk.metrics.render(self.services)
        self.finish(body, set_content_type=PROMETHEUS_CONTENT_TYPE)


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


def default_handlers(base: str) -> list[tuple[str, type[web.RequestHandler]]]:
    return [
        (f"{base}/status", StatusHandler),
        (f"{base}/gpus", GPUsHandler),
        (f"{base}/allocations", AllocationsHandler),
        (f"{base}/cluster", ClusterHandler),
        (f"{base}/notebooks/kernel", NotebookKernelHandler),
        (f"{base}/images", ImagesHandler),
        (f"{base}/pulls", PullsHandler),
        (f"{base}/prepull", PrePullHandler),
        (f"{base}/pulls/(?P<pull_id>[0-9a-f]{{32}})", PullHandler),
        (f"{base}/pulls/(?P<pull_id>[0-9a-f]{{32}})/events", PullEventsHandler),
        (f"{base}/registries", RegistriesHandler),
        (f"{base}/registries/(?P<registry>[^/]+)/credentials", RegistryCredentialsHandler),
        (f"{base}/kernels", KernelsHandler),
        (f"{base}/kernels/(?P<kernel_id>{KERNEL_ID})", KernelHandler),
        (f"{base}/kernels/(?P<kernel_id>{KERNEL_ID})/log", KernelLogHandler),
        (f"{base}/kernels/(?P<kernel_id>{KERNEL_ID})/restart", KernelRestartHandler),
        (f"{base}/queue", QueueHandler),
        (f"{base}/quota", QuotaHandler),
        (f"{base}/queue/(?P<kernel_id>{KERNEL_ID})", QueuedStartHandler),
        (f"{base}/admin", AdminHandler),
        (f"{base}/admin/kernels/(?P<kernel_id>{KERNEL_ID})", AdminKernelHandler),
        (f"{base}/admin/notices", AdminNoticesHandler),
        (f"{base}/metrics", MetricsHandler),
        (f"{base}(/.*)?", NotFoundHandler),
    ]
