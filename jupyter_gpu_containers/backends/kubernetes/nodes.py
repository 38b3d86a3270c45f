"""The cluster's nodes as the GPU panel and a refused start see them: each node's GPU resources,
the kernel pods holding GPUs on them, whether a kernel pod may be placed on a node at all, and
the sentence saying how many GPUs the nodes have free. Only nodes_sync reads the API.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes.client.rest import ApiException

from ...base import labels as L
from ...base.records import ContainerRecord
from ..backend import GPUHolder
from .client import KubernetesClient, refused
from .objects import GPU_COUNT_ANNOTATION, GPU_RESOURCE_ANNOTATION
from .pods import NODE_KEY, NodeGPUs, annotation, gpu_limit, int_quantity, tolerated


def nodes_sync(
    client: KubernetesClient, resources: list[str], api_timeout: float
) -> list[NodeGPUs]:
    """Every node with each of ``resources`` (the default GPU resource and the allowed
    others)."""

    def listing(core: Any) -> list[Any]:
        try:
            return list(core.list_node(_request_timeout=api_timeout).items)
        except ApiException as e:
            raise refused("list the nodes", e) from e

    return [gpus for node in client.call(listing) for gpus in node_gpus(node, resources)]


def node_gpus(node: Any, resources: list[str]) -> list[NodeGPUs]:
    """A node (as the API gives it) once per GPU resource: its allocatable count of it, its
    labels, readiness, and the taints that keep pods off."""
    allocatable = (node.status.allocatable if node.status else None) or {}
    ready = any(
        c.type == "Ready" and c.status == "True"
        for c in ((node.status.conditions if node.status else None) or [])
    )
    taints = tuple(
        (t.key or "", t.value or "", t.effect or "")
        for t in ((node.spec.taints if node.spec else None) or [])
        if t.effect in ("NoSchedule", "NoExecute")
    )
    return [
        NodeGPUs(
            name=node.metadata.name,
            resource=resource,
            allocatable=int_quantity(allocatable.get(resource, "0")),
            labels=dict(node.metadata.labels or {}),
            ready=ready,
            taints=taints,
        )
        for resource in resources
    ]


def gpu_holders(records: Iterable[ContainerRecord], default_resource: str) -> list[GPUHolder]:
    """The kernel pods (records of managed pods) bound to a node with GPUs, by node."""
    holders = []
    for record in records:
        count = int_quantity(record.labels.get(GPU_COUNT_ANNOTATION, "0"))
        node = record.labels.get(NODE_KEY, "")
        if count and node and record.status != "exited":
            holders.append(
                GPUHolder(
                    node=node,
                    pod=record.id,
                    count=count,
                    resource=record.labels.get(GPU_RESOURCE_ANNOTATION, default_resource),
                    user=record.labels.get(L.USER, ""),
                    uid=record.labels.get(L.UID, ""),
                    kernel_id=record.labels.get(L.KERNEL_ID, ""),
                    notebook=record.labels.get(L.NOTEBOOK, ""),
                )
            )
    return sorted(holders, key=lambda h: (h.node, h.pod))


def may_run_on(
    node: NodeGPUs, node_selector: Mapping[str, str], tolerations: list[dict[str, Any]]
) -> bool:
    """Whether a kernel pod could be placed on ``node`` at all: its labels match
    ``node_selector``, and every NoSchedule/NoExecute taint is tolerated."""
    if any(node.labels.get(k) != v for k, v in node_selector.items()):
        return False
    return all(tolerated(t, tolerations) for t in node.taints)


def capacity_sentence(
    nodes: list[NodeGPUs],
    pods: Mapping[str, Any],
    pod: str,
    *,
    default_resource: str,
    node_selector: Mapping[str, str],
    tolerations: list[dict[str, Any]],
) -> str:
    """ " (n nodes have k free ...)" for the kernel pod ``pod``, from the nodes' allocatable
    GPUs and the namespace's pods (by name) bound to them; "" when it asks for no GPU."""
    target = pods.get(pod)
    resource = (
        annotation(target, GPU_RESOURCE_ANNOTATION) if target is not None else ""
    ) or default_resource
    wanted = int(annotation(target, GPU_COUNT_ANNOTATION) or 0) if target is not None else 0
    if not wanted:
        return ""
    used: dict[str, int] = {}
    for other in pods.values():
        node = other.spec.node_name if other.spec else None
        if node and (other.status is None or other.status.phase not in ("Succeeded", "Failed")):
            used[node] = used.get(node, 0) + gpu_limit(other, resource)
    free = {
        n.name: n.allocatable - used.get(n.name, 0)
        for n in nodes
        if n.resource == resource and n.allocatable and may_run_on(n, node_selector, tolerations)
    }
    if not free:
        return f" No node offers {resource}."
    counts: dict[int, int] = {}
    for left in free.values():
        counts[max(left, 0)] = counts.get(max(left, 0), 0) + 1
    parts = [
        f"{k} node{'s' if k != 1 else ''} {'have' if k != 1 else 'has'} {n}"
        for n, k in sorted(counts.items(), reverse=True)
    ]
    return f" No node has {wanted} free {resource}; " + ", ".join(parts) + "."
