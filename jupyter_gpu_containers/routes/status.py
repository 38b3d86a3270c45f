"""``GET /gpu-containers/status``: is the engine usable, how many container kernel specs, whether
the caller administers GPU sharing and why their pulls cannot succeed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..base.errors import ContainerKernelError
from ..images import privateimages
from .base import GPUContainersHandler
from .pulls import pull_refusal


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
            if e.setting and self.reads_settings:
                status["setting"] = e.setting
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
            **self.refusal_fields("pull_refusal", pull_refusal(self)),
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
