"""``GET``/``POST /gpu-containers/notebooks/kernel``: what a notebook's toolbar shows, and a
notebook's GPU request remembered and its kernel started, restarted or switched under it
(also behind a kernel service).
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.parse
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.services.sessions.sessionmanager import KernelName, ModelName
from jupyter_server.utils import ensure_async
from tornado import web

from ..gpus.allocator import GPURequest
from ..gpus.gpu_report import kernel_gpus
from ..gpus.notebook_requests import (
    NotebookRequestError,
    read_notebook_metadata,
    request_in_metadata,
)
from ..images.environment import (
    kept_pin,
    moved_tag,
    pin_in_metadata,
    pinnable,
    stamp_in_metadata,
)
from ..kernel.kernelspecs import kernel_name_for
from ..kernel.launch_request import launching
from ..kernel.provisioner import ContainerProvisioner
from ..policy.checks import inside
from ..server.gateway_user import (
    ServiceRefused,
    ServiceUnreachable,
    from_gateway_error,
    is_gateway_kernel_manager,
    service_json,
)
from ..server.waiting_sessions import WAITING_STATE
from ..server.websocket import close_kernel_websockets
from .base import GPUContainersHandler, json_object
from .images import image_content
from .kernel_view import current_environment

# Longer than any kernel spec's name (an image's: kernelspecs.kernel_name_for).
KERNEL_NAME_MAX = 255


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
        metadata = await read_notebook_metadata(self.contents_manager, path)
        try:
            saved = request_in_metadata(metadata, path)
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
            "stamp": await self._stamp_check(metadata),
            "retired": await self._retired_check(metadata),
        }
        self.finish(json.dumps(reply))

    async def _retired_check(self, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
        """Whether the image the saved notebook asks for was retired by the administrator
        (ImageCatalog.deprecated_images) or is no longer here, with the move its notebooks
        are offered: None when neither. The image is its kernel spec's; for a spec that is gone,
        the one its environment stamp recorded. Behind a kernel service both come from the
        service: its kernel specs, and what its images say (image_content)."""
        kernelspec = (metadata or {}).get("kernelspec")
        name = kernelspec.get("name") if isinstance(kernelspec, dict) else None
        if not isinstance(name, str) or not name or len(name) > KERNEL_NAME_MAX:
            return None  # (the notebook's file says it: a name no spec could have is none)
        try:  # (a gateway's kernel spec manager answers a coroutine, and its spec as a dict)
            spec = await ensure_async(self.kernel_spec_manager.get_kernel_spec(name))
        except KeyError:  # no such spec: jupyter_client's NoSuchKernel, a gateway's 404
            spec = None
        except Exception:
            # The engine or the kernel service away (or a spec that cannot be read): whether
            # the image is gone is not known, and the rest of the answer stands.
            return None
        if spec is not None:
            own = spec_metadata(spec).get("gpu_containers") or {}
            retired = own.get("retired")
            if not isinstance(retired, dict):
                return None
            state, image = "retired", str(own.get("image") or "")
        else:
            stamp = stamp_in_metadata(metadata)
            if stamp is None or kernel_name_for(str(stamp["image"])) != name:
                # Not an image's kernel, or one whose image nobody recorded (the stamp is of
                # another image's kernel: the notebook was switched since).
                return None
            state, image = "removed", str(stamp["image"])
            retired = await self._image_retirement(image)
        redirect = str(retired.get("redirect") or "") if retired else ""
        return {
            "state": state,
            "image": image,
            "message": str(retired.get("message") or "") if retired else "",
            "redirect": redirect,
            "redirect_kernel_name": await self._kernel_name_of(redirect) if redirect else "",
        }

    async def _image_retirement(self, image: str) -> dict[str, Any] | None:
        """What the administrator said of the retired ``image`` (None: nothing)."""
        if self.behind_service:
            query = urllib.parse.urlencode({"ref": image})
            try:
                content = await service_json("GET", f"images/content?{query}")
            except (ServiceRefused, ServiceUnreachable):
                return None
        else:
            found = self.services.catalog.retirement(image)
            content = {"retired": found.to_json() if found is not None else None}
        retired = content.get("retired")
        return retired if isinstance(retired, dict) else None

    async def _kernel_name_of(self, image: str) -> str:
        """The kernel spec offered for ``image`` here ("" when none is: not here yet)."""
        manager = self.kernel_spec_manager
        try:  # a gateway's manager answers a coroutine; a local one reads images: off the loop
            if self.behind_service:
                specs = await ensure_async(manager.get_all_specs())
            else:
                specs = await asyncio.to_thread(manager.get_all_specs)
        except Exception:
            return ""
        for name, model in specs.items():
            own = (spec_metadata(model).get("gpu_containers") or {}) if model else {}
            if own.get("image") == image:
                return str(name)
        return ""

    async def _stamp_check(self, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
        """What the saved notebook's environment stamp says against this host now (None
        without a stamp): whether its tag names other content now, and whether the content it
        recorded is here (behind a kernel service, the service's images, as it answers)."""
        stamp = stamp_in_metadata(metadata)
        if stamp is None:
            return None
        found = {
            "recorded": stamp,
            "pin": pin_in_metadata(metadata),
            "tag_digest": "",
            "moved": False,
            "recorded_present": False,
            "pinnable": pinnable(stamp),
            # What a pin to the recorded content writes (a registry digest, or a local
            # content's kept pin once the server says it keeps it): never composed by the page.
            "pin_reference": str(stamp["digest"]) if pinnable(stamp) else "",
            "compared": False,
        }
        tag, recorded = str(stamp["image"]), str(stamp["digest"])
        query = urllib.parse.urlencode({"ref": tag, "recorded": recorded})
        if self.behind_service:  # the images are the service's: it says what they are
            try:
                content = await service_json("GET", f"images/content?{query}")
            except (ServiceRefused, ServiceUnreachable):  # an older service, or none now:
                return found  # nothing to compare, and the rest of the answer stands
        else:
            content = await image_content(self.services, tag, recorded, int(self.uid))
        found["tag_digest"] = str(content.get("digest") or "")
        found["moved"] = moved_tag(stamp, str(found["tag_digest"]))
        found["recorded_present"] = content.get("recorded_present") is True
        if not found["pinnable"] and content.get("recorded_kept") is True:
            found["pin_reference"] = kept_pin(stamp)
            found["pinnable"] = bool(found["pin_reference"])
        found["compared"] = True
        return found

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
        if running_id and running_id not in km:
            # A start that waited, whose kernel launches now (waiting_sessions.py).
            raise web.HTTPError(
                409,
                "This notebook's kernel is starting: ask again once it runs.",
                reason="Kernel start under way",
            )
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
        with launching(gpus=effective, wait=wait):
            if session is None:
                model = await sm.create_session(
                    path=path,
                    name=ModelName(os.path.basename(path)),
                    type="notebook",
                    kernel_name=KernelName(target),
                )
            elif running is not None and running_name == target and self.behind_service:
                # The service restarts its kernel under the new request (409 if it cannot).
                restart: dict[str, Any] = {"gpus": effective.to_json()}
                if wait is not None:
                    restart["wait"] = wait  # (absent: the service's default)
                await service_json("POST", f"kernels/{running_id}/restart", restart)
                model = await sm.get_session(session_id=session["id"])
            elif running is not None and running_name == target:
                with launching(restart_of=running_id):  # under the new request
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
        environment: dict[str, Any] | None = None  # (images/environment.py)
        pinned = ""
        if model.get("execution_state") == WAITING_STATE or (
            not self.behind_service and kernel_id not in self.kernel_manager
        ):
            pass  # its start waits in the GPU queue, or launches since: no kernel, no GPUs yet
        elif self.behind_service:  # the kernel's own view on the service: the GPUs it holds
            if metadata.get("kernel_provisioner"):  # a native kernel holds none
                try:
                    view = await service_json("GET", f"kernels/{kernel_id}")
                except ServiceRefused:  # gone there since (the session is polled, not told)
                    view = {"gpus": []}
                gpus = [{"uuid": g.get("uuid"), "index": g.get("index")} for g in view["gpus"]]
                image = image or str((view.get("image") or {}).get("reference", ""))
                environment = view.get("environment")
                pinned = str((view.get("image") or {}).get("pinned") or "")
        else:
            provisioner = getattr(self.kernel_manager.get_kernel(kernel_id), "provisioner", None)
            container = provisioner if isinstance(provisioner, ContainerProvisioner) else None
            if not image and container:
                image = container.image  # a hand-written spec, or one whose image is gone since
            if container:  # only container kernels hold GPUs: a native one needs no engine here
                inventory, ledger = await self.gpu_state()
                gpus = kernel_gpus(inventory, ledger, self.uid, kernel_id)
                environment = await current_environment(self.services, container)
                pinned = container.pinned_image
        kernel = {
            "id": kernel_id,
            "name": name,
            "image": image,
            "display_name": spec_display_name(spec) or name,
            "gpus": gpus,
            "execution_state": model.get("execution_state", "unknown"),
            "environment": environment,
            "pinned": pinned,
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
