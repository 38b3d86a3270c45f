"""``GET /gpu-containers/gpus``, ``/allocations`` and ``/cluster``: the host's GPUs with their
holders, the caller's kernels that hold GPUs, and on Kubernetes the GPU node pools
(cluster_view.py).
"""

from __future__ import annotations

import json

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..gpus.gpu_report import gpu_report, my_allocations
from .base import GPUContainersHandler
from .cluster_view import ClusterViews


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
            own_kernels_only=self.services.state.per_user,
        )
        self.finish(json.dumps(report))


# The server's ClusterViews, in the web application's settings: its answers kept between looks.
CLUSTER_VIEWS_KEY = "gpu_containers_cluster_views"


class ClusterHandler(GPUContainersHandler):
    """On Kubernetes: the GPU node pools, which node and pod holds what, and each listed
    image's verdict per pool (cluster_view.py). On Docker: backend "docker", no pools."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        services = self.services
        views = self.settings.setdefault(CLUSTER_VIEWS_KEY, ClusterViews())
        self.finish(
            await views.answer(
                services.backend,
                services.catalog.listed(),
                uid=self.uid,
                show_others=services.visibility.show_other_users,
            )
        )


class AllocationsHandler(GPUContainersHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        inventory, ledger, engine_error = await self.gpu_state_or_reason()
        allocations = my_allocations(inventory, ledger, self.uid)
        self.finish(json.dumps({"allocations": allocations, "engine_error": engine_error}))
