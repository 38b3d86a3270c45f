"""The objects the Kubernetes backend writes, and what it reads of pods and nodes, as tables: each
case is an input (the traits' PodSettings, a ContainerSpec, a pod) and the fragments of the
manifest or the answer it must give. Pure functions: no cluster, no API client, no traits."""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import datetime, timezone
from typing import Any

import pytest
from kubernetes import client
from traitlets import TraitError

from jupyter_gpu_containers.backends.kubernetes.k8s import KubernetesBackend
from jupyter_gpu_containers.backends.kubernetes.nodes import (
    capacity_sentence,
    gpu_holders,
    may_run_on,
    node_gpus,
)
from jupyter_gpu_containers.backends.kubernetes.objects import (
    PodSettings,
    SecretFile,
    check_datasets,
    docker_config_json,
    kernel_pod,
    kernel_secrets,
    label_selector,
    owned_by,
    probe_pod,
    with_pull_secret,
    workspace_source,
)
from jupyter_gpu_containers.backends.kubernetes.pods import (
    NODE_KEY,
    NodeGPUs,
    SchedulingRefused,
    start_progress,
)
from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.base.errors import (
    ContainerKernelError,
    EngineRefused,
    ImageMissing,
    MountRefused,
)
from jupyter_gpu_containers.base.records import ContainerRecord, ContainerSpec, Mount

# KubernetesBackend's trait defaults (k8s.py), as the backend hands them over.
SETTINGS = PodSettings(
    namespace="jupyter-kernels",
    gpu_resource="nvidia.com/gpu",
    allowed_gpu_resources=(),
    node_selector={},
    tolerations=(),
    priority_class_name="",
    cpu_request="",
    cpu_limit="",
    memory_request="",
    memory_limit="",
    workspace_volume={},
    workspace_sub_path="",
    termination_grace_period=5,
    probe_memory="512Mi",
)
PRIVATE = "/var/lib/jgc/private/k1"
MIG = "nvidia.com/mig-1g.10gb"
TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
COPY = (
    "umask 077 && cat /run/jupyter-kernel-secret/kernel.json > /run/jupyter-kernel/kernel.json"
    ' && exec "$@"'
)


def spec(**changes: Any) -> ContainerSpec:
    """A kernel's spec as the launch plan makes one: its private directory (the connection
    file), its workspace, the labels."""
    base = ContainerSpec(
        image="jgc/debian-ipykernel:bookworm",
        command=["python3", "-m", "ipykernel_launcher", "-f", "/run/jupyter-kernel/kernel.json"],
        name="jgc-k1",
        labels={
            L.MANAGED: "true",
            L.KERNEL_ID: "0b7e",
            L.USER: "alice",
            L.NOTEBOOK: "projects/a b/x.ipynb",
        },
        environment={"USER": "alice", "HOME": "/home/jovyan"},
        user="1000:100",
        mounts=[
            Mount(PRIVATE, "/run/jupyter-kernel", read_only=False),
            Mount("/home/alice", "/home/jovyan/work", read_only=False),
        ],
    )
    return dataclasses.replace(base, **changes)


def at(obj: Any, path: str) -> Any:
    """``obj``'s value at a dotted path ("spec.containers.0.image"); a key may hold dots (the
    longest key that matches is taken), and a name=... step picks a list's element by its
    name."""
    steps = path.split(".")
    i = 0
    while i < len(steps):
        if isinstance(obj, list):
            step = steps[i]
            if step.startswith("name="):
                obj = next(item for item in obj if item.get("name") == step[5:])
            else:
                obj = obj[int(step)]
            i += 1
            continue
        for j in range(len(steps), i, -1):
            key = ".".join(steps[i:j])
            if key in obj:
                obj, i = obj[key], j
                break
        else:
            raise KeyError(steps[i])
    return obj


MISSING = object()


def at_or_missing(obj: Any, path: str) -> Any:
    try:
        return at(obj, path)
    except (KeyError, IndexError, StopIteration):
        return MISSING


KERNEL = "spec.containers.0"

# (case, PodSettings changes, ContainerSpec changes, {path: expected}); MISSING: no such key.
KERNEL_POD_CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    (
        "defaults",
        {},
        {},
        {
            "metadata.name": "pod-1",
            "metadata.labels": {L.MANAGED: "true", L.KERNEL_ID: "0b7e", L.USER: "alice"},
            "metadata.annotations": {
                L.MANAGED: "true",
                L.KERNEL_ID: "0b7e",
                L.USER: "alice",
                L.NOTEBOOK: "projects/a b/x.ipynb",
                L.GPU_COUNT: "0",
                L.GPU_RESOURCE: "",
            },
            "spec.restartPolicy": "Never",
            "spec.automountServiceAccountToken": False,
            "spec.enableServiceLinks": False,
            "spec.shareProcessNamespace": True,
            "spec.terminationGracePeriodSeconds": 5,
            "spec.securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "runAsGroup": 100,
                "fsGroup": 100,
                "fsGroupChangePolicy": "OnRootMismatch",
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "spec.nodeSelector": MISSING,
            "spec.tolerations": MISSING,
            "spec.priorityClassName": MISSING,
            "spec.imagePullSecrets": MISSING,
            f"{KERNEL}.name": "kernel",
            f"{KERNEL}.image": "jgc/debian-ipykernel:bookworm",
            f"{KERNEL}.imagePullPolicy": "IfNotPresent",
            f"{KERNEL}.env": [
                {"name": "HOME", "value": "/home/jovyan"},
                {"name": "USER", "value": "alice"},
            ],
            f"{KERNEL}.resources": {"limits": {}, "requests": {}},
            f"{KERNEL}.securityContext.runAsUser": 1000,
            f"{KERNEL}.securityContext.capabilities": {"drop": ["ALL"]},
            f"{KERNEL}.securityContext.allowPrivilegeEscalation": False,
            f"{KERNEL}.securityContext.readOnlyRootFilesystem": False,
            f"{KERNEL}.workingDir": MISSING,
        },
    ),
    (
        "the connection file comes from the Secret, copied at start",
        {},
        {},
        {
            "spec.volumes.name=connection.secret": {
                "secretName": "pod-1-connection",
                "defaultMode": 0o440,
            },
            "spec.volumes.name=kernel-dir.emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"},
            f"{KERNEL}.volumeMounts.name=connection": {
                "name": "connection",
                "mountPath": "/run/jupyter-kernel-secret",
                "readOnly": True,
            },
            f"{KERNEL}.volumeMounts.name=kernel-dir.mountPath": "/run/jupyter-kernel",
            f"{KERNEL}.args": [
                "sh",
                "-c",
                COPY,
                "jupyter-kernel",
                "python3",
                "-m",
                "ipykernel_launcher",
                "-f",
                "/run/jupyter-kernel/kernel.json",
            ],
            f"{KERNEL}.command": MISSING,
        },
    ),
    (
        "an entrypoint cleared is the command",
        {},
        {"entrypoint": [], "mounts": []},
        {
            f"{KERNEL}.command": [
                "python3",
                "-m",
                "ipykernel_launcher",
                "-f",
                "/run/jupyter-kernel/kernel.json",
            ],
            f"{KERNEL}.args": MISSING,
        },
    ),
    (
        "without the private directory the command is the spec's",
        {},
        {"mounts": [], "working_dir": "/w", "read_only": True},
        {
            f"{KERNEL}.args.0": "python3",
            f"{KERNEL}.workingDir": "/w",
            f"{KERNEL}.securityContext.readOnlyRootFilesystem": True,
            "spec.volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
        },
    ),
    (
        "GPUs as the default resource",
        {},
        {"gpu_count": 2},
        {
            f"{KERNEL}.resources.limits": {"nvidia.com/gpu": "2"},
            f"metadata.annotations.{L.GPU_COUNT}": "2",
            f"metadata.annotations.{L.GPU_RESOURCE}": "nvidia.com/gpu",
        },
    ),
    (
        "GPUs booked by UUID count as many",
        {},
        {"gpus": ("GPU-a", "GPU-b", "GPU-c")},
        {f"{KERNEL}.resources.limits": {"nvidia.com/gpu": "3"}},
    ),
    (
        "an allowed MIG profile",
        {"allowed_gpu_resources": (MIG,)},
        {"gpu_count": 1, "gpu_resource": MIG},
        {
            f"{KERNEL}.resources.limits": {MIG: "1"},
            f"metadata.annotations.{L.GPU_RESOURCE}": MIG,
        },
    ),
    (
        "a resource asked for without GPUs is no limit",
        {},
        {"gpu_resource": MIG},
        {f"{KERNEL}.resources.limits": {}, f"metadata.annotations.{L.GPU_RESOURCE}": ""},
    ),
    (
        "CPU and memory from the traits",
        {"cpu_limit": "4", "cpu_request": "500m", "memory_request": "2Gi", "memory_limit": "16Gi"},
        {"mem_limit": "2g"},
        {
            f"{KERNEL}.resources": {
                "limits": {"cpu": "4", "memory": "16Gi"},
                "requests": {"cpu": "500m", "memory": "2Gi"},
            }
        },
    ),
    (
        "memory from the spec when the trait is empty",
        {},
        {"mem_limit": "2g"},
        {f"{KERNEL}.resources.limits": {"memory": "2Gi"}},
    ),
    (
        "the workspace is an emptyDir by default",
        {},
        {},
        {
            "spec.volumes.name=workspace": {"name": "workspace", "emptyDir": {}},
            f"{KERNEL}.volumeMounts.name=workspace": {
                "name": "workspace",
                "mountPath": "/home/jovyan/work",
            },
        },
    ),
    (
        "the workspace volume and sub-path with the user's name and uid",
        {
            "workspace_volume": {
                "persistentVolumeClaim": {"claimName": "home-{username}"},
                "list": ["{uid}", 7],
            },
            "workspace_sub_path": "users/{username}-{uid}",
        },
        {},
        {
            "spec.volumes.name=workspace": {
                "name": "workspace",
                "persistentVolumeClaim": {"claimName": "home-alice"},
                "list": ["1000", 7],
            },
            f"{KERNEL}.volumeMounts.name=workspace.subPath": "users/alice-1000",
        },
    ),
    (
        "tmpfs and /dev/shm in memory, with their sizes",
        {},
        {"tmpfs": {"/tmp": "rw", "/home/jovyan": "rw,mode=1777,size=256m"}, "shm_size": "1g"},
        {
            "spec.volumes.name=scratch-0.emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"},
            "spec.volumes.name=scratch-1.emptyDir": {"medium": "Memory"},
            f"{KERNEL}.volumeMounts.name=scratch-0.mountPath": "/home/jovyan",
            f"{KERNEL}.volumeMounts.name=scratch-1.mountPath": "/tmp",
            "spec.volumes.name=dshm.emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"},
            f"{KERNEL}.volumeMounts.name=dshm.mountPath": "/dev/shm",
        },
    ),
    (
        "the account files come from the Secret, one file each",
        {},
        {
            "mounts": [
                Mount(PRIVATE, "/run/jupyter-kernel", read_only=False),
                Mount(f"{PRIVATE}/passwd", "/etc/passwd"),
                Mount(f"{PRIVATE}/group", "/etc/group"),
            ]
        },
        {
            "spec.volumes.name=accounts.secret": {
                "secretName": "pod-1-connection",
                "items": [
                    {"key": "passwd", "path": "passwd", "mode": 0o444},
                    {"key": "group", "path": "group", "mode": 0o444},
                ],
            },
            f"{KERNEL}.volumeMounts.2": {
                "name": "accounts",
                "mountPath": "/etc/passwd",
                "subPath": "passwd",
                "readOnly": True,
            },
            "spec.volumes.name=workspace": MISSING,
        },
    ),
    (
        "placement from the traits",
        {
            "node_selector": {"nvidia.com/gpu.present": "true"},
            "tolerations": (TOLERATION,),
            "priority_class_name": "kernels",
            "termination_grace_period": 30,
        },
        {},
        {
            "spec.nodeSelector": {"nvidia.com/gpu.present": "true"},
            "spec.tolerations": [TOLERATION],
            "spec.priorityClassName": "kernels",
            "spec.terminationGracePeriodSeconds": 30,
        },
    ),
    (
        "ports, sorted",
        {},
        {"port_bindings": {50002: ("127.0.0.1", 1), 50001: ("127.0.0.1", 2)}},
        {
            f"{KERNEL}.ports": [
                {"containerPort": 50001, "protocol": "TCP"},
                {"containerPort": 50002, "protocol": "TCP"},
            ]
        },
    ),
    (
        "a uid alone is its gid too",
        {},
        {"user": "1234"},
        {"spec.securityContext.runAsGroup": 1234, f"{KERNEL}.securityContext.runAsGroup": 1234},
    ),
]


@pytest.mark.parametrize(
    ("changes", "spec_changes", "expected"),
    [case[1:] for case in KERNEL_POD_CASES],
    ids=[case[0] for case in KERNEL_POD_CASES],
)
def test_a_kernel_pod(
    changes: dict[str, Any], spec_changes: dict[str, Any], expected: dict[str, Any]
) -> None:
    built = kernel_pod(dataclasses.replace(SETTINGS, **changes), spec(**spec_changes), "pod-1")
    for path, value in expected.items():
        assert at_or_missing(built.pod, path) == value, path


@pytest.mark.parametrize(
    ("mounts", "expected"),
    [
        ([], ()),
        (
            [Mount(PRIVATE, "/run/jupyter-kernel", read_only=False)],
            (SecretFile("kernel.json", f"{PRIVATE}/kernel.json", follow_links=True),),
        ),
        (
            [
                Mount(f"{PRIVATE}/passwd", "/etc/passwd"),
                Mount(PRIVATE, "/run/jupyter-kernel", read_only=False),
            ],
            (
                SecretFile("passwd", f"{PRIVATE}/passwd", follow_links=False),
                SecretFile("kernel.json", f"{PRIVATE}/kernel.json", follow_links=True),
            ),
        ),
    ],
    ids=["none", "the connection file", "an account file, never through a link"],
)
def test_the_files_a_kernel_secret_holds(mounts: list[Mount], expected: tuple[SecretFile]) -> None:
    assert kernel_pod(SETTINGS, spec(mounts=mounts), "pod-1").secret_files == expected


@pytest.mark.parametrize(
    ("changes", "spec_changes", "error", "sentence"),
    [
        (
            {},
            {"gpu_count": 1, "gpu_resource": MIG},
            EngineRefused,
            f"This kernel asks for its GPUs as {MIG}, which the administrator does not allow "
            "here (the cluster's GPUs are nvidia.com/gpu, and those the administrator allows "
            "besides). Choose another kernel, or ask an administrator to allow it.",
        ),
        (
            {},
            {"mounts": [Mount("/home/alice", "/w"), Mount("/data", "/data")]},
            MountRefused,
            "Kernel pods mount only their workspace volume, not host paths such as /data: "
            "choose a kernel without host mounts.",
        ),
        (
            {},
            {"user": "0:0"},
            EngineRefused,
            "A kernel pod never runs as root (runAsNonRoot); this one would.",
        ),
        (
            {},
            {"user": "alice"},
            EngineRefused,
            "Kernels on Kubernetes run as numeric ids, and 'alice' is not one.",
        ),
        ({}, {"user": None}, EngineRefused, "Kernels on Kubernetes run as the authenticated"),
    ],
    ids=["a resource not allowed", "a second host path", "root", "a name", "no user"],
)
def test_a_kernel_pod_refused(
    changes: dict[str, Any],
    spec_changes: dict[str, Any],
    error: type[ContainerKernelError],
    sentence: str,
) -> None:
    with pytest.raises(error) as caught:
        kernel_pod(dataclasses.replace(SETTINGS, **changes), spec(**spec_changes), "pod-1")
    assert caught.value.sentence.startswith(sentence)


def test_a_kernel_pod_with_its_pull_secret_is_otherwise_the_same() -> None:
    pod = kernel_pod(SETTINGS, spec(), "pod-1").pod
    pulled = with_pull_secret(pod)
    assert pulled["spec"]["imagePullSecrets"] == [{"name": "pod-1-pull"}]
    assert list(pulled["spec"])[-1] == "imagePullSecrets"
    assert {**pulled["spec"], "imagePullSecrets": None} == {**pod["spec"], "imagePullSecrets": None}
    assert "imagePullSecrets" not in pod["spec"]


@pytest.mark.parametrize(
    ("labels", "pull", "expected"),
    [
        (
            {L.KERNEL_ID: "0b7e", L.USER: "alice"},
            None,
            [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {
                        "name": "pod-1-connection",
                        "labels": {L.MANAGED: "true", L.KERNEL_ID: "0b7e"},
                    },
                    "type": "Opaque",
                    "data": {"kernel.json": "e30="},
                }
            ],
        ),
        (
            {L.KERNEL_ID: "not label safe!"},
            "CONFIG",
            [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "pod-1-connection", "labels": {L.MANAGED: "true"}},
                    "type": "Opaque",
                    "data": {"kernel.json": "e30="},
                },
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "pod-1-pull", "labels": {L.MANAGED: "true"}},
                    "type": "kubernetes.io/dockerconfigjson",
                    "data": {".dockerconfigjson": "CONFIG"},
                },
            ],
        ),
    ],
    ids=["the connection Secret", "and the pull Secret"],
)
def test_a_kernel_pods_secrets(
    labels: dict[str, str], pull: str | None, expected: list[dict[str, Any]]
) -> None:
    assert kernel_secrets("pod-1", labels, {"kernel.json": "e30="}, pull) == expected


def test_a_secret_is_owned_by_its_pod() -> None:
    secret = kernel_secrets("pod-1", {}, {}, None)[0]
    owned = owned_by(secret, "pod-1", "uid-1")
    assert owned["metadata"] == {
        **secret["metadata"],
        "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "pod-1", "uid": "uid-1"}],
    }
    assert "ownerReferences" not in secret["metadata"]


def test_a_pull_secret_holds_the_registry_login() -> None:
    config = json.loads(
        base64.b64decode(docker_config_json("reg.example", {"username": "u", "password": "p"}))
    )
    assert config == {"auths": {"reg.example": {"auth": base64.b64encode(b"u:p").decode()}}}


@pytest.mark.parametrize(
    ("volume", "expected"),
    [
        ({}, {"emptyDir": {}}),
        (
            {"nfs": {"server": "nfs.example", "path": "/export/home/{username}/{uid}"}},
            {"nfs": {"server": "nfs.example", "path": "/export/home/alice/1000"}},
        ),
    ],
    ids=["none", "nfs"],
)
def test_the_workspace_source(volume: dict[str, Any], expected: dict[str, Any]) -> None:
    assert workspace_source(volume, 1000, "alice") == expected


PROBE = "spec.containers.0"
PROBE_CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    (
        "the image's user, root or unset, is nobody",
        {},
        {"user": None},
        {
            "metadata.name": "probe-1",
            "metadata.labels": {L.PROBE: "true"},
            "metadata.annotations": {L.PROBE: "true", L.IMAGE: "jgc/x:1"},
            "spec.restartPolicy": "Never",
            "spec.automountServiceAccountToken": False,
            "spec.enableServiceLinks": False,
            "spec.terminationGracePeriodSeconds": 0,
            "spec.securityContext": {
                "runAsNonRoot": True,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "spec.nodeSelector": MISSING,
            "spec.tolerations": MISSING,
            f"{PROBE}.securityContext.runAsUser": 65534,
            f"{PROBE}.securityContext.runAsGroup": 65534,
            f"{PROBE}.resources": {"limits": {"memory": "512Mi"}},
            f"{PROBE}.args": ["python3", "-c", "pass"],
            f"{PROBE}.command": MISSING,
            f"{PROBE}.env": [],
        },
    ),
    ("root", {}, {"user": "0:0"}, {f"{PROBE}.securityContext.runAsUser": 65534}),
    ("a user", {}, {"user": "1000:100"}, {f"{PROBE}.securityContext.runAsGroup": 100}),
    (
        "an entrypoint cleared",
        {},
        {"entrypoint": []},
        {f"{PROBE}.command": ["python3", "-c", "pass"], f"{PROBE}.args": MISSING},
    ),
    (
        "an entrypoint",
        {},
        {"entrypoint": ["/init"]},
        {f"{PROBE}.command": ["/init"], f"{PROBE}.args": ["python3", "-c", "pass"]},
    ),
    (
        "its environment, sorted",
        {},
        {"environment": {"B": "2", "A": "1"}},
        {f"{PROBE}.env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
    ),
    (
        "placement and memory from the traits",
        {"node_selector": {"pool": "a"}, "tolerations": (TOLERATION,), "probe_memory": "1Gi"},
        {},
        {
            "spec.nodeSelector": {"pool": "a"},
            "spec.tolerations": [TOLERATION],
            f"{PROBE}.resources.limits.memory": "1Gi",
        },
    ),
]


@pytest.mark.parametrize(
    ("changes", "arguments", "expected"),
    [case[1:] for case in PROBE_CASES],
    ids=[case[0] for case in PROBE_CASES],
)
def test_a_probe_pod(
    changes: dict[str, Any], arguments: dict[str, Any], expected: dict[str, Any]
) -> None:
    pod = probe_pod(
        dataclasses.replace(SETTINGS, **changes),
        "probe-1",
        "jgc/x:1",
        ["python3", "-c", "pass"],
        labels={L.PROBE: "true", L.IMAGE: "jgc/x:1"},
        **arguments,
    )
    for path, value in expected.items():
        assert at_or_missing(pod, path) == value, path


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({L.MANAGED: "true"}, f"{L.MANAGED}=true"),
        ({L.UID: "1000", L.MANAGED: "true"}, f"{L.MANAGED}=true,{L.UID}=1000"),
        ({L.KERNEL_ID: None}, L.KERNEL_ID),
        ({L.NOTEBOOK: "a b/c.ipynb", L.MANAGED: "true"}, f"{L.MANAGED}=true"),
    ],
    ids=["one", "sorted", "a key only", "a value no label can hold"],
)
def test_the_label_selector(labels: dict[str, str | None], expected: str) -> None:
    assert label_selector(labels) == expected


# ---------------------------------------------------------------------- pods and nodes read


def pod(
    name: str = "pod-1",
    *,
    node: str | None = None,
    gpus: int = 0,
    resource: str = "nvidia.com/gpu",
    phase: str = "Pending",
    conditions: list[client.V1PodCondition] | None = None,
    statuses: list[client.V1ContainerStatus] | None = None,
    nominated: str | None = None,
    reason: str | None = None,
) -> client.V1Pod:
    """A pod as the watch brings it."""
    limits = {resource: str(gpus)} if gpus else {}
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name=name,
            annotations={L.GPU_COUNT: str(gpus), L.GPU_RESOURCE: resource if gpus else ""},
            creation_timestamp=datetime(2025, 1, 1, tzinfo=timezone.utc),
        ),
        spec=client.V1PodSpec(
            node_name=node,
            containers=[
                client.V1Container(
                    name="kernel",
                    image="jgc/x:1",
                    resources=client.V1ResourceRequirements(limits=limits),
                )
            ],
        ),
        status=client.V1PodStatus(
            phase=phase,
            conditions=conditions,
            container_statuses=statuses,
            nominated_node_name=nominated,
            reason=reason,
            message="the node said no" if reason else None,
        ),
    )


def unschedulable(message: str) -> list[client.V1PodCondition]:
    return [
        client.V1PodCondition(
            type="PodScheduled", status="False", reason="Unschedulable", message=message
        )
    ]


def waiting(reason: str) -> list[client.V1ContainerStatus]:
    return [
        client.V1ContainerStatus(
            name="kernel",
            image="jgc/x:1",
            image_id="",
            ready=False,
            restart_count=0,
            state=client.V1ContainerState(
                waiting=client.V1ContainerStateWaiting(reason=reason, message="no such image")
            ),
        )
    ]


RUNNING = [
    client.V1ContainerStatus(
        name="kernel",
        image="jgc/x:1",
        image_id="",
        ready=True,
        restart_count=0,
        state=client.V1ContainerState(running=client.V1ContainerStateRunning()),
    )
]
SHORT = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."

# (case, pod, waited, refuse a shortage, expected: True/False, or (error, start of its sentence)),
# with schedule_timeout 300 s.
START_CASES: list[tuple[str, Any, float, bool, Any]] = [
    ("running", pod(statuses=RUNNING), 0, True, True),
    ("ended already", pod(phase="Succeeded"), 0, True, True),
    ("pending", pod(), 0, True, False),
    (
        "deleted",
        None,
        0,
        True,
        (EngineRefused, "The kernel's pod pod-1 was deleted as it started."),
    ),
    (
        "refused by its node",
        pod(node="n1", phase="Failed", reason="OutOfnvidia.com/gpu"),
        0,
        True,
        (EngineRefused, "The node n1 refused the kernel's pod (OutOfnvidia.com/gpu): the node"),
    ),
    (
        "a shortage, refused",
        pod(conditions=unschedulable(SHORT)),
        0,
        True,
        (SchedulingRefused, f"No node can take this kernel now (the scheduler says: {SHORT})."),
    ),
    ("a shortage, waited on", pod(conditions=unschedulable(SHORT)), 0, False, False),
    (
        "a shortage, waited on too long",
        pod(conditions=unschedulable(SHORT)),
        300,
        False,
        (SchedulingRefused, "No node can take this kernel now"),
    ),
    (
        "a shortage while it preempts",
        pod(conditions=unschedulable(SHORT), nominated="n1"),
        0,
        True,
        False,
    ),
    ("a volume binding", pod(conditions=unschedulable("binding volumes")), 0, True, False),
    (
        "a claim not found",
        pod(conditions=unschedulable('persistentvolumeclaim "home" not found')),
        0,
        False,
        (SchedulingRefused, "No node can take this kernel now"),
    ),
    (
        "an image that cannot be pulled",
        pod(node="n1", statuses=waiting("ErrImagePull")),
        0,
        True,
        (ImageMissing, "The node n1 could not pull the image jgc/x:1 (ErrImagePull)"),
    ),
    (
        "an image being pulled",
        pod(node="n1", statuses=waiting("ContainerCreating")),
        0,
        True,
        False,
    ),
]


@pytest.mark.parametrize(
    ("the_pod", "waited", "refuse_shortage", "expected"),
    [case[1:] for case in START_CASES],
    ids=[case[0] for case in START_CASES],
)
def test_how_far_a_start_got(
    the_pod: Any, waited: float, refuse_shortage: bool, expected: Any
) -> None:
    told: list[str] = []

    def progress() -> bool:
        return start_progress(
            the_pod,
            "pod-1",
            "jgc/x:1",
            waited=waited,
            refuse_shortage=refuse_shortage,
            schedule_timeout=300,
            unscheduled=told.append,
        )

    if isinstance(expected, tuple):
        error, sentence = expected
        with pytest.raises(error) as caught:
            progress()
        assert caught.value.sentence.startswith(sentence)
    else:
        assert progress() is expected
        unscheduled = (
            the_pod is not None
            and the_pod.status.conditions
            and not (the_pod.status.nominated_node_name)
        )
        assert bool(told) == bool(unscheduled)


def node(
    name: str, gpus: dict[str, str], *, labels: dict[str, str] | None = None, taints: Any = None
) -> client.V1Node:
    return client.V1Node(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1NodeSpec(taints=taints),
        status=client.V1NodeStatus(
            allocatable=gpus,
            conditions=[client.V1NodeCondition(type="Ready", status="True")],
        ),
    )


def test_a_node_once_per_gpu_resource() -> None:
    taints = [
        client.V1Taint(key="nvidia.com/gpu", value="", effect="NoSchedule"),
        client.V1Taint(key="soft", value="x", effect="PreferNoSchedule"),
    ]
    found = node_gpus(
        node("n1", {"nvidia.com/gpu": "4", MIG: "x"}, labels={"pool": "a"}, taints=taints),
        ["nvidia.com/gpu", MIG, "amd.com/gpu"],
    )
    assert found == [
        NodeGPUs(
            "n1", "nvidia.com/gpu", 4, {"pool": "a"}, True, (("nvidia.com/gpu", "", "NoSchedule"),)
        ),
        NodeGPUs("n1", MIG, 0, {"pool": "a"}, True, (("nvidia.com/gpu", "", "NoSchedule"),)),
        NodeGPUs(
            "n1", "amd.com/gpu", 0, {"pool": "a"}, True, (("nvidia.com/gpu", "", "NoSchedule"),)
        ),
    ]


TAINTED = NodeGPUs("n1", "nvidia.com/gpu", 4, {"pool": "a"}, True, (("gpu", "", "NoSchedule"),))


@pytest.mark.parametrize(
    ("node_selector", "tolerations", "expected"),
    [
        ({}, [], False),
        ({}, [{"key": "gpu", "operator": "Exists"}], True),
        ({}, [{"operator": "Exists"}], True),
        ({}, [{"key": "gpu", "operator": "Exists", "effect": "NoExecute"}], False),
        ({"pool": "b"}, [{"operator": "Exists"}], False),
        ({"pool": "a"}, [{"key": "gpu", "value": ""}], True),
    ],
    ids=[
        "untolerated",
        "tolerated",
        "everything tolerated",
        "another effect",
        "another pool",
        "by value",
    ],
)
def test_whether_a_pod_may_run_on_a_node(
    node_selector: dict[str, str], tolerations: list[dict[str, Any]], expected: bool
) -> None:
    assert may_run_on(TAINTED, node_selector, tolerations) is expected


NODES = [
    NodeGPUs("n1", "nvidia.com/gpu", 4, {}, True),
    NodeGPUs("n2", "nvidia.com/gpu", 4, {}, True),
    NodeGPUs("n3", "nvidia.com/gpu", 2, {"pool": "b"}, True),
    NodeGPUs("n4", "nvidia.com/gpu", 0, {}, True),
    NodeGPUs("n1", MIG, 7, {}, True),
]


@pytest.mark.parametrize(
    ("pods", "node_selector", "expected"),
    [
        ({"pod-1": pod()}, {}, ""),
        ({}, {}, ""),
        (
            {
                "pod-1": pod(gpus=4),
                "a": pod("a", node="n1", gpus=3),
                "b": pod("b", node="n2", gpus=1),
                "c": pod("c", node="n2", gpus=2, phase="Succeeded"),
            },
            {},
            " No node has 4 free nvidia.com/gpu; 1 node has 3, 1 node has 2, 1 node has 1.",
        ),
        (
            {"pod-1": pod(gpus=5), "a": pod("a", node="n1", gpus=6)},
            {},
            " No node has 5 free nvidia.com/gpu; 1 node has 4, 1 node has 2, 1 node has 0.",
        ),
        ({"pod-1": pod(gpus=1)}, {"pool": "c"}, " No node offers nvidia.com/gpu."),
        ({"pod-1": pod(gpus=8, resource=MIG)}, {}, f" No node has 8 free {MIG}; 1 node has 7."),
    ],
    ids=["no GPUs asked", "the pod gone", "used and ended", "overbooked", "no node", "MIG"],
)
def test_the_capacity_sentence(
    pods: dict[str, Any], node_selector: dict[str, str], expected: str
) -> None:
    sentence = capacity_sentence(
        NODES,
        pods,
        "pod-1",
        default_resource="nvidia.com/gpu",
        node_selector=node_selector,
        tolerations=[],
    )
    assert sentence == expected


def record(name: str, labels: dict[str, str], status: str = "running") -> ContainerRecord:
    return ContainerRecord(
        id=name, name=name, image="jgc/x:1", labels=labels, status=status, created=0.0
    )


def test_the_gpu_holders_by_node() -> None:
    holder = {L.GPU_COUNT: "2", NODE_KEY: "n2", L.USER: "alice", L.UID: "1000"}
    holders = gpu_holders(
        [
            record("b", holder),
            record("a", {**holder, NODE_KEY: "n1", L.GPU_RESOURCE: MIG, L.KERNEL_ID: "k"}),
            record("ended", holder, status="exited"),
            record("unbound", {L.GPU_COUNT: "1"}),
            record("no-gpus", {L.GPU_COUNT: "0", NODE_KEY: "n1"}),
        ],
        "nvidia.com/gpu",
    )
    assert [(h.node, h.pod, h.count, h.resource, h.user, h.kernel_id) for h in holders] == [
        ("n1", "a", 2, MIG, "alice", "k"),
        ("n2", "b", 2, "nvidia.com/gpu", "alice", ""),
    ]


IMAGENET = {
    "name": "imagenet",
    "mount_path": "/datasets/imagenet",
    "volume": {"persistentVolumeClaim": {"claimName": "imagenet"}},
}


def test_datasets_reach_a_kernel_pod_read_only_unless_writes_are_allowed() -> None:
    datasets = check_datasets(
        [
            IMAGENET,
            {
                "name": "scratch",
                "mount_path": "/data/scratch",
                "volume": {"nfs": {"server": "nfs.example", "path": "/export/scratch"}},
                "read_only": False,
                "sub_path": "lab",
            },
        ]
    )
    pod = kernel_pod(dataclasses.replace(SETTINGS, datasets=datasets), spec(), "pod-1").pod
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["dataset-imagenet"] == {
        "name": "dataset-imagenet",
        "persistentVolumeClaim": {"claimName": "imagenet", "readOnly": True},
    }
    assert volumes["dataset-scratch"] == {
        "name": "dataset-scratch",
        "nfs": {"server": "nfs.example", "path": "/export/scratch"},
    }
    mounts = {m["name"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["dataset-imagenet"] == {
        "name": "dataset-imagenet",
        "mountPath": "/datasets/imagenet",
        "readOnly": True,
    }
    assert mounts["dataset-scratch"] == {
        "name": "dataset-scratch",
        "mountPath": "/data/scratch",
        "readOnly": False,
        "subPath": "lab",
    }
    # None configured: none in the pod.
    assert not any(
        v["name"].startswith("dataset-")
        for v in kernel_pod(SETTINGS, spec(), "pod-1").pod["spec"]["volumes"]
    )


@pytest.mark.parametrize(
    ("dataset", "says"),
    [
        ({**IMAGENET, "name": "ImageNet"}, "lower-case letters"),
        ({**IMAGENET, "mount_path": "datasets"}, "normalised absolute path"),
        ({**IMAGENET, "mount_path": "/datasets/../etc"}, "normalised absolute path"),
        ({**IMAGENET, "mount_path": "/"}, "normalised absolute path"),
        ({**IMAGENET, "mount_path": "/etc/ssl"}, "system's directories"),
        ({**IMAGENET, "mount_path": "/run/jupyter-kernel"}, "system's directories"),
        ({**IMAGENET, "mount_path": "/dev/shm"}, "system's directories"),
        ({**IMAGENET, "volume": {"hostPath": {"path": "/"}}}, "persistentVolumeClaim"),
        ({**IMAGENET, "volume": {}}, "persistentVolumeClaim"),
        ({**IMAGENET, "read_only": "no"}, "true or false"),
        ({**IMAGENET, "readonly": True}, "keys no dataset has: readonly"),
    ],
)
def test_a_dataset_that_is_not_one_is_refused(dataset: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        check_datasets([dataset])
    with pytest.raises(TraitError, match=r"KubernetesBackend\.datasets"):
        KubernetesBackend(datasets=[dataset])


def test_two_datasets_at_one_place_or_over_the_workspace_are_refused() -> None:
    with pytest.raises(ValueError, match="two datasets"):
        check_datasets([IMAGENET, {**IMAGENET, "name": "other"}])
    # Over the workspace (or under it), whose place the kernel's spec says.
    for target in ("/home/jovyan/work", "/home/jovyan/work/data", "/home/jovyan"):
        settings = dataclasses.replace(
            SETTINGS, datasets=({**check_datasets([IMAGENET])[0], "mount_path": target},)
        )
        with pytest.raises(MountRefused, match="where this kernel has its workspace"):
            kernel_pod(settings, spec(), "pod-1")
