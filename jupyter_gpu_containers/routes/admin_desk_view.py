"""What one server keeps for administration (:class:`AdminDesk`): the configuration, the sharing
metrics and, in direct mode, the watcher that carries out admin actions on its kernels; kept in
the web application's settings beside the ``Services``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from ..base.safefiles import owner_name
from ..services import Services
from .admin_actions_view import ActionWatcher
from .admin_view import GPUAdmin
from .metrics_view import SharingMetrics

# The key of the server's AdminDesk in the web application's settings (next to Services').
SETTINGS_KEY = "gpu_containers_admin"


class AdminDesk:
    """What one server keeps for administration: the configuration, the metrics, and (direct
    mode) the watcher that carries out admin actions on its kernels. Made by the app with the
    Services; a handler of a server that never ran the app's start makes one at first use."""

    def __init__(self, services: Services, parent: Any) -> None:
        self.config = GPUAdmin(parent=parent)
        self.metrics = SharingMetrics(services)
        self.watcher: ActionWatcher | None = None
        self._account: str | None = None

    async def server_account(self) -> str:
        """This server's account name (who administers in direct mode, and owns its kernels
        there): looked up once, on a worker thread (NSS may ask a directory service)."""
        if self._account is None:
            self._account = await asyncio.to_thread(owner_name, os.getuid())
        return self._account

    def start_watching(self, services: Services, mkm: Any, log: Any) -> None:
        if self.watcher is None:
            self.watcher = ActionWatcher(services, self.config, mkm, log)
            self.watcher.start()

    async def stop(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()
            self.watcher = None


def desk_for(settings: dict[str, Any], services: Services, parent: Any) -> AdminDesk:
    found = settings.get(SETTINGS_KEY)
    if not isinstance(found, AdminDesk):
        found = settings[SETTINGS_KEY] = AdminDesk(services, parent)
    return found
