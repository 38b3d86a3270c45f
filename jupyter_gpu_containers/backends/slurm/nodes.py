"""The cluster's GPU nodes as Slurm sees them, for the GPU panel (routes/cluster_view.py): each
node's GPUs by GRES type, the kernels' jobs holding GPUs on them, and what other jobs hold.

Slurm is the ledger: a node's GPUs and how many are in use are ``sinfo --json``'s (``gres``,
``gres_used``), a kernel's GPUs its job's ``gres_detail``. Slurm publishes nothing of a node's
GPU product beyond the GRES type an administrator gives it ("gpu:a100:4"), and nothing of its
driver: SlurmBackend.node_gpu_labels says them for the whole cluster, in GPU feature discovery's
label names, so that the images' verdicts work as on Kubernetes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...base import labels as L
from ...base.errors import EngineRefused
from ...base.records import ContainerRecord
from ..backend import GPUHolder
from .jobs import Job
from .records import job_of

# GPU feature discovery's product label: the pool's heading (cluster_view.py reads it).
PRODUCT_LABEL = "nvidia.com/gpu.product"

# One GRES of a node or a job: "gpu:4", "gpu:a100:4(S:0-1)", "gpu:a100:2(IDX:0-1)".
_GRES = re.compile(r"^(?P<name>[^:()]+)(?::(?P<type>[^:()]+))?:(?P<count>[0-9]+)(?:\(.*\))?$")
# Node states in which Slurm starts jobs on a node ("idle", "mixed", "allocated", …); flags such
# as DRAIN or a state such as down/invalid keep jobs off.
_READY_STATES = frozenset({"idle", "mixed", "allocated", "completing"})
_NOT_READY_FLAGS = frozenset({"drain", "draining", "drained", "down", "fail", "not_responding"})


@dataclass(frozen=True)
class NodeGPUs:
    """A node's GPUs of one GRES type, as the panel groups them into pools."""

    name: str
    resource: str  # "gpu", or "gpu:a100" where the administrator typed them
    allocatable: int
    in_use: int  # by any job, as Slurm counts them
    labels: dict[str, str] = field(default_factory=dict)
    ready: bool = True


def split_gres(text: str, gres_name: str) -> list[tuple[str, int]]:
    """``(resource, count)`` for each GRES named ``gres_name`` in Slurm's text ("gpu:a100:2(S:0),
    gpu:t4:1" -> [("gpu:a100", 2), ("gpu:t4", 1)]); other GRES (mps, shard) are left out."""
    found: list[tuple[str, int]] = []
    for part in _top_level(text):
        match = _GRES.match(part.strip())
        if match is None or match.group("name") != gres_name:
            continue
        kind = match.group("type")
        found.append((f"{gres_name}:{kind}" if kind else gres_name, int(match.group("count"))))
    return found


def _top_level(text: str) -> list[str]:
    """Comma-separated parts, outside parentheses ("gpu:2(IDX:0,3),mps:10" has two)."""
    parts, depth, current = [], 0, ""
    for char in text or "":
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current:
        parts.append(current)
    return [p for p in parts if p and p != "(null)"]


def _ready(raw: Mapping[str, Any]) -> bool:
    state = raw.get("state")
    words = [str(s).lower() for s in (state if isinstance(state, list) else [state])]
    flags = [str(f).lower() for f in raw.get("state_flags") or ()]
    if any(w in _NOT_READY_FLAGS for w in words + flags):
        return False
    return any(w in _READY_STATES for w in words)


def nodes_from(sinfo_json: str, gres_name: str, labels: Mapping[str, str]) -> list[NodeGPUs]:
    """Each node of ``sinfo --json`` once per GPU type it has, with ``labels`` (the
    administrator's, for every GPU node) and its GRES type as its product where they name
    none."""
    try:
        nodes = json.loads(sinfo_json).get("nodes") or []
    except (ValueError, AttributeError) as e:
        raise EngineRefused(f"sinfo --json answered no JSON: {sinfo_json[:200]!r}.") from e
    rows: dict[tuple[str, str], NodeGPUs] = {}
    for raw in nodes:
        if not isinstance(raw, dict) or not raw.get("name"):
            continue
        name = str(raw["name"])
        used = dict(split_gres(str(raw.get("gres_used") or ""), gres_name))
        for resource, count in split_gres(str(raw.get("gres") or ""), gres_name):
            kind = resource.partition(":")[2]
            node_labels = dict(labels)
            if kind and not node_labels.get(PRODUCT_LABEL):
                node_labels[PRODUCT_LABEL] = kind
            # sinfo may list a node once per partition: one row each.
            rows[(name, resource)] = NodeGPUs(
                name=name,
                resource=resource,
                allocatable=count,
                in_use=used.get(resource, 0),
                labels=node_labels,
                ready=_ready(raw),
            )
    return sorted(rows.values(), key=lambda n: (n.name, n.resource))


def job_gres(job: Job, gres_name: str) -> tuple[str, int]:
    """The GPU resource and count a running job holds, from its ``gres_detail``."""
    held = split_gres(",".join(str(d) for d in job.raw.get("gres_detail") or ()), gres_name)
    if not held:
        return gres_name, len(job.gpus)
    return held[0][0], sum(count for _, count in held)


def gpu_holders(
    records: Iterable[ContainerRecord],
    jobs: Mapping[str, Job],
    nodes: Iterable[NodeGPUs],
    gres_name: str,
) -> list[GPUHolder]:
    """The kernels' running jobs that hold GPUs, by node, and on each node what Slurm counts in
    use beyond them (other jobs: anyone's batch work, or kernels of another service)."""
    holders: list[GPUHolder] = []
    ours: dict[tuple[str, str], int] = {}
    for record in records:
        job = jobs.get(job_of(record.id)[0])  # the job's, whichever container runs now
        if job is None or not job.running or not job.node:
            continue
        resource, count = job_gres(job, gres_name)
        if count <= 0:
            continue
        ours[(job.node, resource)] = ours.get((job.node, resource), 0) + count
        holders.append(
            GPUHolder(
                node=job.node,
                pod=job.id,
                count=count,
                resource=resource,
                user=record.labels.get(L.USER, ""),
                uid=record.labels.get(L.UID, ""),
                kernel_id=record.labels.get(L.KERNEL_ID, ""),
                notebook=record.labels.get(L.NOTEBOOK, ""),
                indices=job.gpus,
            )
        )
    for node in nodes:
        others = node.in_use - ours.get((node.name, node.resource), 0)
        if others > 0:
            holders.append(
                GPUHolder(
                    node=node.name,
                    pod="",
                    count=others,
                    resource=node.resource,
                    user="",
                    uid="",
                    kernel_id="",
                    notebook="",
                )
            )
    return sorted(holders, key=lambda h: (h.node, h.pod == "", h.pod))
