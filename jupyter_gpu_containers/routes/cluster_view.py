"""The GPU panel on a cluster: node pools, which node and pod holds what, and whether each listed
image runs on each pool's driver (``GET /gpu-containers/cluster``).

On Kubernetes the service has no NVML and no local GPUs: the scheduler places kernels on GPU
nodes, and what those nodes are is in their labels. NVIDIA's GPU feature discovery publishes the
product, the driver, the CUDA version the driver supports, the compute capability and the memory
of a node's GPUs as node labels; nodes with the same values form a pool, and one compatibility
verdict (compat.py) holds for every node of a pool. The holders are the kernel pods the backend
lists by their labels (k8s.py); another user's are shown as taken, without their name, notebook
or kernel id, unless GPUVisibility.show_other_users says otherwise (as gpu_report.py does on
Docker).

Only what the service's account may read counts: its own namespace's pods (RBAC grants nothing
else), so ``held`` is what this service's kernels hold, and other workloads on the same nodes are
not subtracted from ``free``.

On Docker the answer is ``{"backend": "docker", "pools": [], "engine_error": ""}``: the host's
GPUs are ``/gpu-containers/gpus``'s.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..backends.backend import ContainerBackend
from ..base.errors import ContainerKernelError
from ..gpus.inventory import GPU, Inventory
from ..images import compat
from ..images.catalog import ImageDescription, describe_image

# GPU feature discovery's node labels (github.com/NVIDIA/gpu-feature-discovery). The
# ``*-version.full`` forms are newer releases'; the major/minor/rev ones are older releases' and
# still published by current ones.
PRODUCT = "nvidia.com/gpu.product"
MEMORY = "nvidia.com/gpu.memory"  # MiB
COMPUTE_MAJOR = "nvidia.com/gpu.compute.major"
COMPUTE_MINOR = "nvidia.com/gpu.compute.minor"
DRIVER_FULL = "nvidia.com/cuda.driver-version.full"
DRIVER_PARTS = ("nvidia.com/cuda.driver.major", "nvidia.com/cuda.driver.minor")
DRIVER_REV = "nvidia.com/cuda.driver.rev"
RUNTIME_FULL = "nvidia.com/cuda.runtime-version.full"
RUNTIME_PARTS = ("nvidia.com/cuda.runtime.major", "nvidia.com/cuda.runtime.minor")

# Node label values are anyone's text to this service (a node's kubelet may set its own labels):
# only versions of a bounded length are believed.
# How many answers of the cluster view are kept (ClusterViews): one per user with a panel open,
# at one version of the cluster; each is the size of the view (250 KB at 1,000 kernel pods).
VIEWS_KEPT = 64
_VERSION = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9}){0,3}")
_NUMBER = re.compile(r"[0-9]{1,9}")

# GPU feature discovery publishes no NVML brand, which decides whether CUDA forward compatibility
# can work (data-center GPUs only). The product name says it for the boards a cluster has.
_CONSUMER_BRANDS = (("geforce", "geforce"), ("titan", "titan"), ("quadro", "quadro"))
_DATA_CENTER = re.compile(r"(?:^|-)(?:tesla|g?[abhl][0-9]{1,3}|[tvpk][0-9]{1,3})(?:-|$)")


def _version(text: str) -> str:
    value = text.strip()
    return value if _VERSION.fullmatch(value) else ""


def _joined(labels: Mapping[str, str], full: str, parts: Iterable[str]) -> str:
    """A version from its ``full`` label, else from its parts' labels ("550", "54", "15")."""
    found = _version(labels.get(full, ""))
    if found:
        return found
    numbers = []
    for key in parts:
        value = labels.get(key, "").strip()
        if not _NUMBER.fullmatch(value):
            break
        numbers.append(value)
    return ".".join(numbers)


def driver_of(labels: Mapping[str, str]) -> str:
    """The node's NVIDIA driver version ("550.54.15"; "550" when only the major is published)."""
    return _joined(labels, DRIVER_FULL, (*DRIVER_PARTS, DRIVER_REV))


def cuda_of(labels: Mapping[str, str]) -> str:
    """The CUDA version the node's driver supports ("12.4"), or "" when not published."""
    return _joined(labels, RUNTIME_FULL, RUNTIME_PARTS)


def compute_capability_of(labels: Mapping[str, str]) -> str:
    major = labels.get(COMPUTE_MAJOR, "").strip()
    minor = labels.get(COMPUTE_MINOR, "0").strip() or "0"
    if _NUMBER.fullmatch(major) and _NUMBER.fullmatch(minor):
        return f"{int(major)}.{int(minor)}"
    return ""


def memory_of(labels: Mapping[str, str]) -> int | None:
    """Bytes of one GPU's memory (the label is in MiB), None when not published."""
    value = labels.get(MEMORY, "").strip()
    return int(value) * 1024 * 1024 if _NUMBER.fullmatch(value) else None


def brand_of(product: str) -> str:
    """NVML's brand for a GPU feature discovery product name ("NVIDIA-A100-SXM4-80GB" ->
    "nvidia"), "" when the name does not tell."""
    text = product.lower()
    if "rtx" in text and ("quadro" in text or text.startswith("nvidia-rtx")):
        return "quadrortx" if "quadro" in text else "nvidiartx"
    for word, brand in _CONSUMER_BRANDS:
        if word in text:
            return brand
    if _DATA_CENTER.search(text.replace("_", "-")):
        return "nvidia"
    return ""


def _short_label(value: str, limit: int = 100) -> str:
    # A label value is at most 63 characters in Kubernetes; anything longer is not one.
    return value.strip()[:limit]


@dataclass
class _Node:
    name: str
    ready: bool
    labels: dict[str, str]
    allocatable: dict[str, int] = field(default_factory=dict)


@dataclass
class _Pool:
    product: str
    driver: str
    cuda: str
    compute_capability: str
    memory: int | None
    nodes: list[_Node] = field(default_factory=list)

    @property
    def key(self) -> str:
        parts = [
            self.product or "unknown GPU",
            f"driver {self.driver}" if self.driver else "driver unknown",
        ]
        if self.compute_capability:
            parts.append(f"compute {self.compute_capability}")
        if self.memory:
            parts.append(f"{self.memory // (1024 * 1024)} MiB")
        return ", ".join(parts)

    def inventory(self) -> Inventory:
        """The pool as compat.verdict sees a host: one GPU stands for all (they are alike)."""
        if not any(count > 0 for node in self.nodes for count in node.allocatable.values()):
            resources = sorted({r for node in self.nodes for r in node.allocatable})
            offered = " or ".join(resources) or "a GPU resource"
            return Inventory(
                "node-labels",
                (),
                self.driver,
                self.cuda,
                f"no node of the pool offers {offered}: is NVIDIA's device plugin running there?",
            )
        gpu = GPU(
            index="0",
            uuid=f"pool:{self.key}",
            name=self.product,
            brand=brand_of(self.product),
            compute_capability=self.compute_capability,
            memory_total=self.memory or 0,
        )
        return Inventory("node-labels", (gpu,), self.driver, self.cuda)


def pool_verdict(pool: _Pool, entry: Mapping[str, Any]) -> compat.Verdict:
    """Whether a listed image runs on the pool's driver and GPUs, from what its list entry and
    its reference say (no engine here to read the image's own environment): the description the
    images list and the image's kernel spec take too (catalog.describe_image)."""
    return _verdict_on(pool, describe_image(str(entry["image"]), None, entry))


# Best first, as compat.verdict ranks a host's GPUs: the scheduler may put a kernel on any pool.
_BEST_FIRST = (compat.NATIVE, compat.COMPAT, compat.UNKNOWN, compat.NO_GPUS, compat.CANNOT_RUN)


def _rank(verdict: compat.Verdict) -> int:
    outcome = verdict.outcome
    return _BEST_FIRST.index(outcome) if outcome in _BEST_FIRST else len(_BEST_FIRST)


def cluster_verdict(pools: Sequence[_Pool], described: ImageDescription) -> compat.Verdict:
    """The images list's verdict on a cluster, where the service's own host has no GPUs that
    matter: the best the image gets on any GPU node pool, with the pools that fare worse named,
    as compat.verdict names a host's GPUs that fare worse. Each pool's verdict is the cluster
    view's, so the two never disagree."""
    if not described.gpu:
        return described.verdict(Inventory("node-labels"))
    if not pools:
        return compat.Verdict(
            compat.NO_GPUS,
            "GPU build, but no node of the cluster offers GPUs (or carries GPU feature "
            "discovery's labels); CPU code in the image still runs",
        )
    verdicts = [(pool, _verdict_on(pool, described)) for pool in pools]
    best_pool, best = min(verdicts, key=lambda pair: _rank(pair[1]))
    reason = best.reason if len(pools) == 1 else f"{best.reason} (node pool {best_pool.key})"
    for pool, verdict in verdicts:
        if _rank(verdict) > _rank(best):
            reason += f"; {verdict.outcome} on node pool {pool.key}: {verdict.reason}"
    return compat.Verdict(best.outcome, reason, best.needed_driver)


async def catalog_verdicts(
    backend: ContainerBackend,
) -> Callable[[ImageDescription], compat.Verdict] | None:
    """How the images list judges an image on this backend: on a cluster against its GPU node
    pools (cluster_verdict, the nodes read on a worker thread), None on Docker (the host's own
    GPUs, GPUInventory)."""
    cluster = backend.cluster
    if cluster is None:
        return None
    try:
        nodes = await asyncio.to_thread(cluster.nodes_sync)
    except ContainerKernelError as e:
        failed = compat.Verdict(
            compat.UNKNOWN, f"the cluster's GPU nodes could not be read: {e.sentence}"
        )
        return lambda described: (
            failed if described.gpu else described.verdict(Inventory("node-labels"))
        )
    grouped = _group(nodes)
    pools = [grouped[key] for key in sorted(grouped)]
    return lambda described: cluster_verdict(pools, described)


def _verdict_on(pool: _Pool, described: ImageDescription) -> compat.Verdict:
    inventory = pool.inventory()
    if described.gpu and inventory.gpus and not inventory.driver_version:
        # compat.verdict would point at GPUInventory's static settings: on a cluster the
        # driver comes from the nodes' labels.
        return compat.Verdict(
            compat.UNKNOWN,
            "the nodes of this pool publish no NVIDIA driver version (on Kubernetes GPU feature "
            "discovery's nvidia.com/cuda.driver.* labels, on Slurm the node labels an "
            "administrator names), so this image's CUDA cannot be checked against it",
        )
    return described.verdict(inventory)


def _holder(holder: Any, uid: str, show_others: bool) -> dict[str, Any]:
    mine = str(holder.uid) == uid
    visible = mine or show_others
    return {
        "node": holder.node,
        "pod": holder.pod,
        "count": holder.count,
        "resource": holder.resource,
        "mine": mine,
        # Another user's kernel id is never shown: it would let them be reached through the API.
        "kernel_id": holder.kernel_id if mine else "",
        "user": holder.user if visible else "",
        "notebook": holder.notebook if visible else "",
        # Which of the node's GPUs, where the scheduler says (Slurm); [] where it does not.
        "gpus": [str(i) for i in getattr(holder, "indices", ())],
    }


def _group(nodes: Iterable[Any]) -> dict[str, _Pool]:
    """Nodes (backend rows: one per node and GPU resource) grouped into pools, by key. Nodes
    without GPUs and without a GPU product label (the cluster's CPU nodes) are left out."""
    by_name: dict[str, _Node] = {}
    for row in nodes:
        node = by_name.setdefault(row.name, _Node(row.name, bool(row.ready), dict(row.labels)))
        node.allocatable[row.resource] = node.allocatable.get(row.resource, 0) + max(
            int(row.allocatable), 0
        )
    pools: dict[str, _Pool] = {}
    for node in sorted(by_name.values(), key=lambda n: n.name):
        if not node.labels.get(PRODUCT) and not any(node.allocatable.values()):
            continue
        pool = _Pool(
            product=_short_label(node.labels.get(PRODUCT, "")),
            driver=driver_of(node.labels),
            cuda=cuda_of(node.labels),
            compute_capability=compute_capability_of(node.labels),
            memory=memory_of(node.labels),
        )
        pools.setdefault(pool.key, pool).nodes.append(node)
    return pools


def pools_of(
    nodes: Iterable[Any],
    holders: Iterable[Any],
    listed: Iterable[Mapping[str, Any]],
    *,
    uid: str,
    show_others: bool,
) -> list[dict[str, Any]]:
    """Nodes (backend rows: one per node and GPU resource) grouped into pools, with their
    holders and a verdict per listed image. Nodes without GPUs and without a GPU product label
    (the cluster's CPU nodes) are left out."""
    pools = _group(nodes)

    held: dict[tuple[str, str], int] = {}
    holders_by_node: dict[str, list[dict[str, Any]]] = {}
    for h in holders:
        held[(h.node, h.resource)] = held.get((h.node, h.resource), 0) + int(h.count)
        holders_by_node.setdefault(h.node, []).append(_holder(h, uid, show_others))

    images = list(listed)
    answer = []
    for key in sorted(pools):
        pool = pools[key]
        answer.append(
            {
                "id": key,
                "product": pool.product,
                "driver_version": pool.driver,
                "cuda_driver_version": pool.cuda,
                "compute_capability": pool.compute_capability,
                "memory_total": pool.memory,
                "nodes": [
                    {
                        "name": node.name,
                        "ready": node.ready,
                        "resources": [
                            {
                                "resource": resource,
                                "allocatable": count,
                                "held": held.get((node.name, resource), 0),
                                "free": max(count - held.get((node.name, resource), 0), 0),
                            }
                            for resource, count in sorted(node.allocatable.items())
                            if count or held.get((node.name, resource))
                        ],
                    }
                    for node in pool.nodes
                ],
                "holders": [h for node in pool.nodes for h in holders_by_node.get(node.name, [])],
                "verdicts": [
                    {"image": str(entry["image"]), "verdict": pool_verdict(pool, entry).to_dict()}
                    for entry in images
                ],
            }
        )
    return answer


async def cluster_view(
    backend: ContainerBackend, listed: list[dict[str, Any]], *, uid: str, show_others: bool
) -> dict[str, Any]:
    """The answer of ``GET /gpu-containers/cluster`` for the user with ``uid``. ``listed``: the
    administrator's images (ImageCatalog.listed()). The API is read on worker threads."""
    cluster = backend.cluster
    if cluster is None:
        return {"backend": "docker", "pools": [], "engine_error": ""}
    name = cluster.cluster_name
    try:
        nodes, holders = await asyncio.gather(
            asyncio.to_thread(cluster.nodes_sync), asyncio.to_thread(cluster.gpu_holders_sync)
        )
    except ContainerKernelError as e:
        return {"backend": name, "pools": [], "engine_error": e.sentence}
    pools = await asyncio.to_thread(
        pools_of, nodes, holders, listed, uid=uid, show_others=show_others
    )
    return {"backend": name, "pools": pools, "engine_error": ""}


class ClusterViews:
    """The answers of ``GET /gpu-containers/cluster`` as JSON, kept while the cluster's version
    (ClusterNodes.cluster_version) stays the same, by user and what decides their content: every
    open GPU panel asks again and again, and at 1,000 kernel pods making the answer again (a
    holder each, the pools, the verdicts) was most of a look's time, and its garbage set off
    the collector's full passes. Answers of an older version are dropped when a newer comes."""

    def __init__(self, size: int = VIEWS_KEPT) -> None:
        self._size = size
        self._version: Hashable | None = None
        self._kept: OrderedDict[tuple[Any, ...], str] = OrderedDict()

    async def answer(
        self,
        backend: ContainerBackend,
        listed: list[dict[str, Any]],
        *,
        uid: str,
        show_others: bool,
    ) -> str:
        cluster = backend.cluster
        version = cluster.cluster_version() if cluster is not None else None
        key = (uid, show_others, json.dumps(listed, sort_keys=True))
        if version is not None and version == self._version and key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key]
        view = await cluster_view(backend, listed, uid=uid, show_others=show_others)
        body = json.dumps(view)
        if version is None or view["engine_error"]:
            return body
        if version != self._version:
            self._kept.clear()
            self._version = version
        self._kept[key] = body
        while len(self._kept) > self._size:
            self._kept.popitem(last=False)
        return body
