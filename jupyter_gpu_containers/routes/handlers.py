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
  container's log as server-sent events (kernel_view.py); ``POST
  /gpu-containers/kernels/<id>/keep``: keep a warned kernel's idle GPUs a while (GPUReclaim).
  Only the kernel's owner is answered. ``POST /gpu-containers/kernels/<id>/save`` saves its
  environment (its image and the caller's packages for it) as an image of their own; ``GET
  /gpu-containers/saves[/<id>]`` reads the saves, ``DELETE /gpu-containers/saves/<id>`` cancels
  one, ``DELETE /gpu-containers/saved-images?image=<ref>`` removes a saved image of theirs
  (saves.py).

- ``GET /gpu-containers/admin``: every GPU holder on the host, the queue, reclaim states and
  GPU-hour use; ``POST /gpu-containers/admin/kernels/<id>`` releases or shuts down any user's
  kernel with a reason; administrators only (admin_view.py). ``GET /gpu-containers/admin/notices``:
  why an administrator released or shut down the caller's kernels.
- ``GET /gpu-containers/metrics``: Prometheus metrics of GPU sharing (no user names); on a
  kernel service, its administrators only.
- ``GET /gpu-containers/packages``: the caller's own packages kept per image in their workspace
  (ContainerPolicy.user_packages), each folder with its size; ``DELETE
  /gpu-containers/packages/<key>`` resets one (packages.py).
- ``GET /gpu-containers/quota``: the caller's GPU-hours this day or week: used, the limit, what
  is left, when it resets, and the group's (quota.py).

Without a Docker engine (a Binder-style host) every GET still answers: ``/status`` says why in
``engine.message``; ``/gpus``, ``/allocations`` and ``/images`` answer 200 with what is known
without the engine (the GPUs, the listed images) and the engine's sentence in ``engine_error``.

Each resource's handlers are in a module of their own here; this one is the route table. The
whole API is described in ``openapi.yaml`` next to this module.
"""

from __future__ import annotations

from tornado import web

from .admin import AdminHandler, AdminKernelHandler, AdminNoticesHandler, MetricsHandler
from .base import NotFoundHandler
from .builds import BuildsHandler
from .gpus import AllocationsHandler, ClusterHandler, GPUsHandler
from .images import ImageContentHandler, ImagesHandler, PrePullHandler
from .kernel_view import KERNEL_ID
from .kernels import (
    KernelHandler,
    KernelKeepHandler,
    KernelLogHandler,
    KernelRestartHandler,
    KernelsHandler,
)
from .notebooks import NotebookKernelHandler
from .packages import PackagesFolderHandler, PackagesHandler
from .pulls import PullEventsHandler, PullHandler, PullsHandler
from .queue import QueuedStartHandler, QueueHandler, QuotaHandler
from .registries import RegistriesHandler, RegistryCredentialsHandler
from .saves import KernelSaveHandler, SavedImageHandler, SaveHandler, SavesHandler
from .status import StatusHandler


def default_handlers(base: str) -> list[tuple[str, type[web.RequestHandler]]]:
    return [
        (f"{base}/status", StatusHandler),
        (f"{base}/gpus", GPUsHandler),
        (f"{base}/allocations", AllocationsHandler),
        (f"{base}/cluster", ClusterHandler),
        (f"{base}/notebooks/kernel", NotebookKernelHandler),
        (f"{base}/images", ImagesHandler),
        (f"{base}/images/content", ImageContentHandler),
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
        (f"{base}/kernels/(?P<kernel_id>{KERNEL_ID})/keep", KernelKeepHandler),
        (f"{base}/kernels/(?P<kernel_id>{KERNEL_ID})/save", KernelSaveHandler),
        (f"{base}/saves", SavesHandler),
        (f"{base}/builds", BuildsHandler),
        (f"{base}/saves/(?P<save_id>[0-9a-f]{{32}})", SaveHandler),
        (f"{base}/saved-images", SavedImageHandler),
        (f"{base}/packages", PackagesHandler),
        (f"{base}/packages/(?P<key>[^/]+)", PackagesFolderHandler),
        (f"{base}/queue", QueueHandler),
        (f"{base}/quota", QuotaHandler),
        (f"{base}/queue/(?P<kernel_id>{KERNEL_ID})", QueuedStartHandler),
        (f"{base}/admin", AdminHandler),
        (f"{base}/admin/kernels/(?P<kernel_id>{KERNEL_ID})", AdminKernelHandler),
        (f"{base}/admin/notices", AdminNoticesHandler),
        (f"{base}/metrics", MetricsHandler),
        (f"{base}(/.*)?", NotFoundHandler),
    ]
