"""What the Kubernetes backend reads of a pod, pure: its record, state and details as the backend
interface gives them, how far its start got, why it cannot be scheduled or started, the GPUs it
holds, and the nodes' GPUs as the GPU panel shows them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...base import labels as L
from ...base.errors import (
    ContainerKernelError,
    EngineRefused,
    ImageMissing,
)
from ...base.records import (
    ContainerRecord,
    ContainerState,
)
from ..backend import ContainerDetails, MountInfo
from .objects import CONTAINER_NAME, DATASET_VOLUME_PREFIX, dataset_source

# In a pod's record (never on the pod): the node the scheduler bound it to.
NODE_KEY = L.PREFIX + "node"


class SchedulingRefused(ContainerKernelError):
    """No node can take the kernel's pod now, and the administrator's policy is to refuse."""

    status = 409
    reason_phrase = "No node can take the kernel"


@dataclass(frozen=True)
class NodeGPUs:
    """One node as the GPU panel shows it: its GPUs, its pool and driver labels."""

    name: str
    resource: str
    allocatable: int
    labels: dict[str, str]
    ready: bool
    # (key, value, effect) of each taint that keeps pods off unless they tolerate it
    taints: tuple[tuple[str, str, str], ...] = ()


def pod_record(pod: Any) -> ContainerRecord:
    """The pod as a ContainerRecord: its labels, with our annotations over them (exact values),
    and GPUS as the pod's node and count ("node:resource:n") since the scheduler chose them."""
    meta = pod.metadata
    labels = dict(meta.labels or {})
    labels.update({k: v for k, v in (meta.annotations or {}).items() if k.startswith(L.PREFIX)})
    labels.pop(NODE_KEY, None)
    if pod.spec is not None and pod.spec.node_name:
        labels[NODE_KEY] = pod.spec.node_name
    state = pod_state(pod)
    created = meta.creation_timestamp.timestamp() if meta.creation_timestamp else 0.0
    return ContainerRecord(
        id=meta.name,
        name=meta.name,
        image=pod.spec.containers[0].image if pod.spec and pod.spec.containers else "",
        labels=labels,
        status=state.status if state else "removing",
        created=created,
    )


def pod_state(pod: Any) -> ContainerState | None:
    """The kernel container's state in Docker's words: created, running, exited."""
    if pod is None:
        return None
    status = pod.status
    container = kernel_status(pod)
    terminated = container.state.terminated if container and container.state else None
    if terminated is not None:
        return ContainerState(
            status="exited",
            running=False,
            exit_code=int(terminated.exit_code or 0),
            oom_killed=terminated.reason == "OOMKilled",
            error=terminated.message or "",
        )
    phase = status.phase if status else ""
    if phase in ("Succeeded", "Failed"):
        return ContainerState(
            status="exited",
            running=False,
            exit_code=0 if phase == "Succeeded" else 1,
            oom_killed=False,
            error=(status.message or status.reason or "") if status else "",
        )
    if container and container.state and container.state.running is not None:
        return ContainerState(
            status="running", running=True, exit_code=0, oom_killed=False, error=""
        )
    return ContainerState(status="created", running=False, exit_code=0, oom_killed=False, error="")


def pod_details(pod: Any) -> ContainerDetails:
    meta = pod.metadata
    container = kernel_status(pod)
    state = pod_state(pod)
    running = container.state.running if container and container.state else None
    terminated = container.state.terminated if container and container.state else None
    record = pod_record(pod)
    spec_container = pod.spec.containers[0] if pod.spec and pod.spec.containers else None
    volumes = {v.name: v for v in (pod.spec.volumes or [])} if pod.spec else {}
    mounts = []
    tmpfs = []
    for m in (spec_container.volume_mounts or []) if spec_container else []:
        volume = volumes.get(m.name)
        if (
            volume is not None
            and volume.empty_dir is not None
            and volume.empty_dir.medium == "Memory"
        ):
            tmpfs.append(m.mount_path)
            continue
        kind, source = "volume", m.name
        if volume is not None and volume.secret is not None:
            kind = "secret"
        elif volume is not None and m.name.startswith(DATASET_VOLUME_PREFIX):
            # The administrator's dataset (KubernetesBackend.datasets), named with where its
            # data is: "imagenet (claim imagenet)", "imagenet (nfs.example:/export/imagenet)".
            kind, name = "dataset", m.name.removeprefix(DATASET_VOLUME_PREFIX)
            claim, nfs = volume.persistent_volume_claim, volume.nfs
            if claim is not None:
                where = dataset_source({"persistentVolumeClaim": {"claimName": claim.claim_name}})
            elif nfs is not None:
                where = dataset_source({"nfs": {"server": nfs.server, "path": nfs.path}})
            else:
                where = ""
            source = f"{name} ({where})" if where else name
        mounts.append(MountInfo(kind, source, m.mount_path, bool(m.read_only)))
    return ContainerDetails(
        id=meta.name,
        name=meta.name,
        image_id=(container.image_id if container else "") or "",
        image_ref=record.image,
        labels=record.labels,
        status=record.status,
        created=meta.creation_timestamp.isoformat() if meta.creation_timestamp else "",
        started_at=(running.started_at.isoformat() if running and running.started_at else "")
        or (terminated.started_at.isoformat() if terminated and terminated.started_at else ""),
        finished_at=terminated.finished_at.isoformat()
        if terminated and terminated.finished_at
        else "",
        exit_code=state.exit_code if state else 0,
        oom_killed=bool(state and state.oom_killed),
        error=state.error if state else "",
        mounts=tuple(mounts),
        tmpfs=tuple(tmpfs),
    )


def start_progress(
    pod: Any,
    name: str,
    image: str,
    *,
    waited: float,
    refuse_shortage: bool,
    schedule_timeout: float,
    unscheduled: Callable[[str], None],
) -> bool:
    """Whether the kernel pod ``name``'s container started (or ended) after ``waited`` seconds;
    False while it is still on its way, telling ``unscheduled`` why it has no node yet. Raises
    the refusal of a start that will not happen: the pod deleted, refused by its node, no node
    for it (at once for a shortage when ``refuse_shortage``; for anything else after
    ``schedule_timeout``), its image or container failing."""
    if pod is None:
        raise EngineRefused(f"The kernel's pod {name} was deleted as it started.")
    status = pod.status
    if container_started(pod) or (status and status.phase == "Succeeded"):
        return True
    if status and status.phase == "Failed":
        # Refused by its node before its container ran (admission, eviction).
        raise EngineRefused(
            f"The node {pod.spec.node_name or ''} refused the kernel's pod "
            f"({status.reason or 'Failed'}): {shortened(status.message or '')}"
        )
    reason = unschedulable_reason(pod)
    if reason is not None and status and status.nominated_node_name:
        reason = None  # it preempts lower-priority pods: room is being made for it
    if reason is not None and " not found" in reason:
        # A claim or other object that does not exist will not appear by waiting.
        raise SchedulingRefused(reason)
    if reason is not None:
        # A shortage (not enough free GPUs, memory) is refused at once unless the policy is to
        # wait; anything else (a volume still binding, say) usually passes, and is given
        # schedule_timeout either way.
        shortage = "Insufficient" in reason
        if (shortage and refuse_shortage) or waited >= schedule_timeout:
            raise SchedulingRefused(reason)
        unscheduled(reason)
    failed = waiting_failure(pod, image)
    if failed is not None:
        raise failed
    return False


def kernel_status(pod: Any) -> Any:
    statuses = (pod.status.container_statuses if pod.status else None) or []
    for s in statuses:
        if s.name == CONTAINER_NAME:
            return s
    return statuses[0] if statuses else None


def container_started(pod: Any) -> bool:
    container = kernel_status(pod)
    return bool(
        container
        and container.state
        and (container.state.running is not None or container.state.terminated is not None)
    )


def created_at(pod: Any) -> float:
    """When the API server created ``pod`` (unix time; 0 when it does not say): one clock for
    every node's reports, where containers' startedAt would be each node's own."""
    created = pod.metadata.creation_timestamp if pod.metadata else None
    return float(created.timestamp()) if created is not None else 0.0


def unschedulable_reason(pod: Any) -> str | None:
    """The scheduler's reason, in a sentence, for a pod it could not place; None otherwise."""
    for condition in (pod.status.conditions if pod.status else None) or []:
        if (
            condition.type == "PodScheduled"
            and condition.status == "False"
            and condition.reason == "Unschedulable"
        ):
            message = (condition.message or "").strip()
            return f"No node can take this kernel now (the scheduler says: {message})."
    return None


_PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
_CONFIG_FAILURES = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")


def waiting_failure(pod: Any, image: str) -> ContainerKernelError | None:
    """A start that will not happen by itself: the image cannot be pulled, or the container
    cannot be created, with the node's words."""
    container = kernel_status(pod)
    waiting = container.state.waiting if container and container.state else None
    if waiting is None:
        return None
    node = pod.spec.node_name if pod.spec else ""
    message = shortened(waiting.message or "")
    if waiting.reason in _PULL_FAILURES:
        return ImageMissing(
            f"The node {node} could not pull the image {image} ({waiting.reason}): {message} "
            "Check the image's name and that the registry's login is set."
        )
    if waiting.reason in _CONFIG_FAILURES:
        return EngineRefused(
            f"The node {node} could not create the kernel's container ({waiting.reason}): {message}"
        )
    return None


def tolerated(taint: tuple[str, str, str], tolerations: list[dict[str, Any]]) -> bool:
    key, value, effect = taint
    for t in tolerations:
        if t.get("effect") and t.get("effect") != effect:
            continue
        if t.get("operator") == "Exists" and (not t.get("key") or t.get("key") == key):
            return True
        if t.get("key") == key and t.get("value", "") == value:
            return True
    return False


def annotation(pod: Any, key: str) -> str:
    return str(((pod.metadata.annotations if pod.metadata else None) or {}).get(key, ""))


def gpu_limit(pod: Any, resource: str) -> int:
    total = 0
    for c in (pod.spec.containers if pod.spec else None) or []:
        limits = (c.resources.limits if c.resources else None) or {}
        total += int_quantity(limits.get(resource, "0"))
    return total


def int_quantity(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def shortened(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
