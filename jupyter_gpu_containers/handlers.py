"""REST handlers: thin, authenticated, and answering in sentences.

- ``GET  /gpu-containers/status``: is the Docker engine usable, how many container kernel specs.
- ``GET  /gpu-containers/gpus``: the host's GPUs, each with its holders.
- ``GET  /gpu-containers/allocations``: this user's kernels that hold GPUs.
- ``POST /gpu-containers/notebooks/kernel``: remember a notebook's GPU request, then start its
  kernel (or restart it, or switch it to another kernel spec) under that request.
"""

from __future__ import annotations

import asyncio
import json
import os

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.services.sessions.sessionmanager import KernelName, ModelName
from jupyter_server.utils import ensure_async
from tornado import web
from traitlets import Bool
from traitlets.config import LoggingConfigurable

from .allocator import GPUAllocator, GPURequest, Ledger, current_ledger
from .engine import engine_for
from .errors import ContainerKernelError
from .gpu_report import gpu_report, my_allocations, preflight
from .gpus import Inventory, shared_inventory
from .launchplan import ContainerPolicy, effective_state_dir, inside
from .notebook_requests import NotebookRequests
from .provisioner import ContainerProvisioner

# Resource name for jupyter_server's authorizer: one namespace for all of this extension's routes.
AUTH_RESOURCE = "gpu_containers"


class GPUVisibility(LoggingConfigurable):
    show_other_users = Bool(
        False,
        config=True,
        help="""Show other users' names, notebook paths and images on the GPUs they hold. By
        default users see only that such a GPU is taken (their own kernels in full).""",
    )


class GPUContainersHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def uid(self) -> str:
        return str(os.getuid())

    async def gpu_state(self) -> tuple[Inventory, Ledger]:
        """The GPUs now, and who holds them (read off the event loop)."""
        mkm = self.kernel_manager
        inventory = await shared_inventory(mkm).read()
        state_dir = effective_state_dir(ContainerPolicy(parent=mkm))
        return inventory, await current_ledger(engine_for(mkm), state_dir)


class StatusHandler(GPUContainersHandler):
    """Whether the Docker engine answers, and how many container kernel specs it yields."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        engine = engine_for(self.serverapp)
        ksm = self.kernel_spec_manager
        image_entries = getattr(ksm, "image_entries", None)
        count = len(image_entries()) if image_entries else 0
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
        self.finish(json.dumps({"engine": status, "kernelspecs": count}))


class GPUsHandler(GPUContainersHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        mkm = self.kernel_manager
        inventory, ledger = await self.gpu_state()
        report = await gpu_report(
            inventory,
            ledger,
            uid=self.uid,
            show_others=GPUVisibility(parent=self.serverapp).show_other_users,
            allocator=GPUAllocator(parent=mkm),
        )
        self.finish(json.dumps(report))


class AllocationsHandler(GPUContainersHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        inventory, ledger = await self.gpu_state()
        self.finish(json.dumps({"allocations": my_allocations(inventory, ledger, self.uid)}))


class NotebookKernelHandler(GPUContainersHandler):
    """Start, restart or switch a notebook's kernel with a GPU request that the notebook keeps.

    Body: {"path": "dir/nb.ipynb", "gpus": 2 | ["0", "GPU-…"] | null, "kernel_name": "…"?}.
    The request is stored for the notebook (null: back to the kernel spec's default), so any later
    start of a kernel for it (a restart, reopening it next week) gets the same GPUs request.
    """

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.get_json_body() or {}
        path = body.get("path")
        if not isinstance(path, str) or not path.endswith(".ipynb"):
            raise web.HTTPError(400, 'Give the notebook\'s path, e.g. {"path": "dir/nb.ipynb"}.')
        root = self.kernel_manager.root_dir
        os_path = os.path.join(root, *path.strip("/").split("/"))
        if "\0" in path or not inside(os_path, root):
            raise web.HTTPError(400, f"The notebook path {path!r} is outside the workspace.")
        kernel_name = body.get("kernel_name")
        if kernel_name is not None and not isinstance(kernel_name, str):
            raise web.HTTPError(400, "kernel_name must be a kernel spec name.")
        gpus = body.get("gpus")
        request = GPURequest.parse(gpus) if gpus is not None else None

        sm, km = self.session_manager, self.kernel_manager
        sessions = [s for s in await sm.list_sessions() if s.get("path") == path]
        session = sessions[0] if sessions else None
        running_id = session["kernel"]["id"] if session else None
        running = km.get_kernel(running_id) if running_id else None
        target = kernel_name or (running.kernel_name if running else None)
        if not target:
            raise web.HTTPError(400, "This notebook has no kernel yet: give kernel_name.")

        # Refuse before touching a running kernel when the GPUs cannot be had now.
        spec_default = self._spec_default(target)  # also: 404 for an unknown kernel spec
        effective = request if request is not None else spec_default
        keep_id = str(running_id) if (running and running.kernel_name == target) else ""
        if effective.wants_gpus:
            inventory, ledger = await self.gpu_state()
            preflight(
                GPUAllocator(parent=self.kernel_manager), inventory, ledger, effective, keep_id
            )
        await asyncio.to_thread(NotebookRequests(parent=self.serverapp).set, os_path, gpus)

        if session is None:
            model = await sm.create_session(
                path=path,
                name=ModelName(os.path.basename(path)),
                type="notebook",
                kernel_name=KernelName(target),
            )
        elif keep_id:
            provisioner = getattr(running, "provisioner", None)
            if isinstance(provisioner, ContainerProvisioner):
                provisioner.change_request(effective)
            await ensure_async(km.restart_kernel(keep_id))
            model = await sm.get_session(session_id=session["id"])
        else:  # switch this notebook to another kernel spec (another image)
            new_id = await sm.start_kernel_for_session(
                session["id"],
                path=path,
                name=session["name"],
                type="notebook",
                kernel_name=KernelName(target),
            )
            await sm.update_session(session["id"], kernel_id=new_id)
            await ensure_async(km.shutdown_kernel(running_id))
            model = await sm.get_session(session_id=session["id"])
        self.finish(json.dumps({"session": model, "gpus": gpus}, default=str))

    def _spec_default(self, kernel_name: str) -> GPURequest:
        try:
            spec = self.kernel_spec_manager.get_kernel_spec(kernel_name)
        except Exception as e:
            raise web.HTTPError(404, f"There is no kernel spec {kernel_name!r}.") from e
        config = spec.metadata.get("kernel_provisioner", {}).get("config", {})
        return GPURequest.parse(config.get("gpus"))


def default_handlers(base: str) -> list[tuple[str, type[web.RequestHandler]]]:
    return [
        (f"{base}/status", StatusHandler),
        (f"{base}/gpus", GPUsHandler),
        (f"{base}/allocations", AllocationsHandler),
        (f"{base}/notebooks/kernel", NotebookKernelHandler),
    ]
