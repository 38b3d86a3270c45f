"""REST handlers: thin, authenticated, and answering in sentences."""

from __future__ import annotations

import json

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from .engine import engine_for
from .errors import ContainerKernelError

# Resource name for jupyter_server's authorizer: one namespace for all of this extension's routes.
AUTH_RESOURCE = "gpu_containers"


class GPUContainersHandler(APIHandler):
    auth_resource = AUTH_RESOURCE


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


def default_handlers(base: str) -> list[tuple[str, type[web.RequestHandler]]]:
    return [(f"{base}/status", StatusHandler)]
