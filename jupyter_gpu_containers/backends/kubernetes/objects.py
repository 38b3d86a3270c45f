"""What the Kubernetes backend writes, pure: the names, labels and security contexts of a kernel's
pod, Docker-style sizes as quantities, the pod's uid and gid, where its Secret's files go, and the
objects themselves (a kernel's pod and Secrets, a readiness probe's pod) as the API takes them,
from what the traits say (PodSettings), the ContainerSpec and what the backend decided: no API
client, no trait and no file is read here.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...base import labels as L
from ...base.errors import EngineRefused, MountRefused
from ...base.records import CONNECTION_FILE_NAME, KERNEL_DIR_IN_CONTAINER, ContainerSpec

# Where a kernel pod's Secret (its connection file) is mounted, read-only.
SECRET_DIR_IN_CONTAINER = "/run/jupyter-kernel-secret"
# The kernel's own account files (accounts.py), which the provisioner writes beside its
# connection file: in a pod they come from its Secret too, each file mounted on its own.
ACCOUNT_FILES_IN_CONTAINER = {"/etc/passwd": "passwd", "/etc/group": "group"}
CONTAINER_NAME = "kernel"
# Labels (selectable) carry what is label-safe; annotations carry every value exactly.
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_DNS_LABEL = re.compile(r"[^a-z0-9-]+")
GPU_COUNT_ANNOTATION = L.GPU_COUNT
GPU_RESOURCE_ANNOTATION = L.GPU_RESOURCE


def hardened(uid: int, gid: int, read_only: bool = False) -> dict[str, Any]:
    """A container's security context: ``uid``:``gid``, never root, no capability, no privilege
    gained, the runtime's default seccomp profile (what PodSecurity "restricted" asks)."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "readOnlyRootFilesystem": read_only,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def label_safe(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL_VALUE.match(value))


def pod_name(name: str) -> str:
    """A DNS-1123 label from a container name (lower case, digits, dashes; 63 at most)."""
    text = _DNS_LABEL.sub("-", name.lower()).strip("-")[:63].strip("-")
    return text or "kernel"


def parse_user(user: str | None) -> tuple[int, int]:
    """The numeric uid and gid a pod runs as. Kubernetes needs numbers for runAsNonRoot."""
    if not user:
        raise EngineRefused(
            "Kernels on Kubernetes run as the authenticated user's numeric uid and gid, and this "
            "kernel has none: it is set to run as its image's user. Set it to run as "
            '"server" or as an unprivileged "uid:gid".',
            setting="ContainerProvisioner.run_as",
        )
    uid_text, _, gid_text = user.partition(":")
    try:
        uid = int(uid_text)
        gid = int(gid_text or uid_text)
    except ValueError:
        raise EngineRefused(
            f"Kernels on Kubernetes run as numeric ids, and {user!r} is not one."
        ) from None
    if uid == 0 or gid == 0:
        raise EngineRefused("A kernel pod never runs as root (runAsNonRoot); this one would.")
    return uid, gid


def quantity(size: str) -> str:
    """A Docker-style size ("1g", "512m", "64k") as a Kubernetes quantity ("1Gi", ...)."""
    text = size.strip()
    match = re.fullmatch(r"(\d+)([bkmgt]?)b?", text.lower())
    if not match:
        return text  # already a Kubernetes quantity ("1Gi"), or the API says why not
    number, unit = match.groups()
    return number + {"": "", "b": "", "k": "Ki", "m": "Mi", "g": "Gi", "t": "Ti"}[unit]


def split_labels(labels: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(pod labels, pod annotations): every value exactly in the annotations; the label-safe
    ones also as labels, which label selectors can find."""
    safe = {k: v for k, v in labels.items() if LABEL_KEY.match(k) and label_safe(v)}
    return safe, {k: v for k, v in labels.items() if k.startswith(L.PREFIX)}


def safe_labels(labels: dict[str, str], keys: tuple[str, ...]) -> dict[str, str]:
    return {k: labels[k] for k in keys if k in labels and label_safe(labels[k])}


def label_selector(labels: Mapping[str, str | None]) -> str:
    """The label selector for ``labels`` (None: the key only), of the pairs a label can hold;
    the others are checked on the records (the annotations carry them)."""
    return ",".join(
        k if v is None else f"{k}={v}"
        for k, v in sorted(labels.items())
        if LABEL_KEY.match(k) and (v is None or label_safe(v))
    )


# ---------------------------------------------------------------------- the objects themselves


@dataclass(frozen=True)
class PodSettings:
    """What KubernetesBackend's traits say about the pods it makes (its help says each)."""

    namespace: str
    gpu_resource: str
    allowed_gpu_resources: tuple[str, ...]
    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, Any], ...]
    priority_class_name: str
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    workspace_volume: Mapping[str, Any]
    workspace_sub_path: str
    termination_grace_period: int
    probe_memory: str
    # The administrator's datasets (KubernetesBackend.datasets), checked (check_datasets).
    datasets: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class SecretFile:
    """A host file the provisioner wrote whose content goes into the kernel's Secret under
    ``key``: the connection file (in the kernel's private directory), or an account file, which
    is never read through a link (``follow_links`` False)."""

    key: str
    path: str
    follow_links: bool


@dataclass(frozen=True)
class KernelPod:
    """A kernel's pod as the API takes it, and the files its connection Secret holds (read by
    the backend, in this order)."""

    pod: dict[str, Any]
    secret_files: tuple[SecretFile, ...]


def connection_secret_name(pod: str) -> str:
    return f"{pod}-connection"


def pull_secret_name(pod: str) -> str:
    return f"{pod}-pull"


# A dataset's volume source: a claim, or an NFS export (what the administrator names).
DATASET_SOURCES = ("persistentVolumeClaim", "nfs")
DATASET_VOLUME_PREFIX = "dataset-"
_DATASET_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?")
# Where a dataset may not be mounted: over what the system and the kernel's pod need (its
# connection, its account files, its HOME, /dev/shm). The workspace's place is checked per pod.
_RESERVED_TARGETS = ("/dev", "/proc", "/sys", "/etc", "/run", "/tmp", "/home", "/usr", "/bin")


def _covers(directory: str, path: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def check_datasets(datasets: Any) -> tuple[dict[str, Any], ...]:
    """KubernetesBackend.datasets, each as {"name", "mount_path", "volume", "read_only",
    "sub_path"}; ValueError with a sentence for one that is not so."""
    out: list[dict[str, Any]] = []
    names: set[str] = set()
    targets: set[str] = set()
    for raw in datasets:
        if not isinstance(raw, Mapping):
            raise ValueError(f"each dataset must be an object, not {raw!r}.")
        name = raw.get("name")
        if not isinstance(name, str) or not _DATASET_NAME.fullmatch(name):
            raise ValueError(
                f"a dataset's name ({name!r}) must be lower-case letters, digits and dashes "
                "(up to 42), as a volume's name is."
            )
        target = raw.get("mount_path")
        if (
            not isinstance(target, str)
            or not target.startswith("/")
            or os.path.normpath(target) != target
            or target == "/"
            or any(_covers(reserved, target) for reserved in _RESERVED_TARGETS)
        ):
            raise ValueError(
                f"the dataset {name}'s mount_path ({target!r}) must be a normalised absolute "
                "path outside the workspace and the system's directories, such as "
                "/datasets/imagenet."
            )
        volume = raw.get("volume")
        if (
            not isinstance(volume, Mapping)
            or len(volume) != 1
            or next(iter(volume)) not in DATASET_SOURCES
        ):
            raise ValueError(
                f"the dataset {name}'s volume must be one volume source, a persistentVolumeClaim "
                'or an nfs export: {"persistentVolumeClaim": {"claimName": "imagenet"}}.'
            )
        read_only = raw.get("read_only", True)
        sub_path = raw.get("sub_path", "")
        if not isinstance(read_only, bool) or not isinstance(sub_path, str):
            raise ValueError(
                f"the dataset {name}'s read_only must be true or false, sub_path a string."
            )
        unknown = set(raw) - {"name", "mount_path", "volume", "read_only", "sub_path"}
        if unknown:
            raise ValueError(
                f"the dataset {name} has keys no dataset has: {', '.join(sorted(unknown))}."
            )
        if name in names or target in targets:
            raise ValueError(f"two datasets have the name {name} or the mount_path {target}.")
        names.add(name)
        targets.add(target)
        out.append(
            {
                "name": name,
                "mount_path": target,
                "volume": json.loads(json.dumps(dict(volume))),
                "read_only": read_only,
                "sub_path": sub_path,
            }
        )
    return tuple(out)


def dataset_source(volume: Mapping[str, Any]) -> str:
    """Where a dataset's data is, in words: "claim imagenet", "nfs.example:/export/imagenet"."""
    claim = volume.get("persistentVolumeClaim")
    if isinstance(claim, Mapping):
        return f"claim {claim.get('claimName', '')}"
    nfs = volume.get("nfs")
    if isinstance(nfs, Mapping):
        return f"{nfs.get('server', '')}:{nfs.get('path', '')}"
    return ""


def dataset_volumes(
    datasets: tuple[Mapping[str, Any], ...],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pod's volumes and the kernel container's mounts of the administrator's datasets,
    read-only (the volume and the mount) unless the administrator allows writes."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for dataset in datasets:
        volume_name = DATASET_VOLUME_PREFIX + dataset["name"]
        kind, source = next(iter(dataset["volume"].items()))
        source = dict(source)
        if dataset["read_only"]:
            source["readOnly"] = True
        volumes.append({"name": volume_name, kind: source})
        mount: dict[str, Any] = {
            "name": volume_name,
            "mountPath": dataset["mount_path"],
            "readOnly": bool(dataset["read_only"]),
        }
        if dataset["sub_path"]:
            mount["subPath"] = dataset["sub_path"]
        mounts.append(mount)
    return volumes, mounts


def workspace_source(volume: Mapping[str, Any], uid: int, username: str) -> dict[str, Any]:
    """The workspace's volume source (KubernetesBackend.workspace_volume), with {username} and
    {uid} replaced; an emptyDir when none is set."""
    if not volume:
        return {"emptyDir": {}}

    def expand(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("{username}", username).replace("{uid}", str(uid))
        if isinstance(value, dict):
            return {k: expand(v) for k, v in value.items()}
        if isinstance(value, list):
            return [expand(v) for v in value]
        return value

    return dict(expand(dict(volume)))


def kernel_pod(settings: PodSettings, spec: ContainerSpec, name: str) -> KernelPod:
    """The pod named ``name`` for ``spec``, without its image pull secret (with_pull_secret)."""
    uid, gid = parse_user(spec.user)
    labels, annotations = split_labels(spec.labels)
    resource = spec.gpu_resource or settings.gpu_resource
    count = spec.gpu_count or len(spec.gpus)
    if count and resource not in (settings.gpu_resource, *settings.allowed_gpu_resources):
        raise EngineRefused(
            f"This kernel asks for its GPUs as {resource}, which the administrator does not "
            f"allow here (the cluster's GPUs are {settings.gpu_resource}, and those the "
            "administrator allows besides). Choose another kernel, or ask an administrator to "
            "allow it.",
            setting="KubernetesBackend.gpu_resource, KubernetesBackend.allowed_gpu_resources",
        )
    annotations[GPU_COUNT_ANNOTATION] = str(count)
    annotations[GPU_RESOURCE_ANNOTATION] = resource if count else ""
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    if count:
        limits[resource] = str(count)
    memory = settings.memory_limit or (quantity(spec.mem_limit) if spec.mem_limit else "")
    for key, value, where in (
        ("cpu", settings.cpu_limit, limits),
        ("memory", memory, limits),
        ("cpu", settings.cpu_request, requests),
        ("memory", settings.memory_request, requests),
    ):
        if value:
            where[key] = value
    secret_files: list[SecretFile] = []
    copy_connection = False
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    workspace_done = False
    private = next((m.source for m in spec.mounts if m.target == KERNEL_DIR_IN_CONTAINER), None)
    account_items: list[dict[str, Any]] = []
    for mount in spec.mounts:
        account = ACCOUNT_FILES_IN_CONTAINER.get(mount.target)
        if (
            account is not None
            and mount.read_only
            and private is not None
            and mount.source == os.path.join(private, account)
        ):
            # The kernel's name inside the container, the image untouched: the file the
            # provisioner wrote (its own directory; never a link) goes into the Secret.
            secret_files.append(SecretFile(account, mount.source, follow_links=False))
            account_items.append({"key": account, "path": account, "mode": 0o444})
            mounts.append(
                {
                    "name": "accounts",
                    "mountPath": mount.target,
                    "subPath": account,
                    "readOnly": True,
                }
            )
        elif mount.target == KERNEL_DIR_IN_CONTAINER:
            # The host's private directory holds the kernel's connection file, written by
            # the provisioner: its content (the key) goes into the Secret, never the spec.
            secret_files.append(
                SecretFile(
                    CONNECTION_FILE_NAME,
                    os.path.join(mount.source, CONNECTION_FILE_NAME),
                    follow_links=True,
                )
            )
            volumes.append(
                {
                    "name": "connection",
                    "secret": {"secretName": connection_secret_name(name), "defaultMode": 0o440},
                }
            )
            mounts.append(
                {"name": "connection", "mountPath": SECRET_DIR_IN_CONTAINER, "readOnly": True}
            )
            # ipykernel (before 6.29) writes its connection file back at start: the kernel
            # reads a copy in a directory of the pod's memory, which the command makes.
            volumes.append(
                {"name": "kernel-dir", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}
            )
            mounts.append({"name": "kernel-dir", "mountPath": mount.target})
            copy_connection = True
        elif not workspace_done:
            workspace_done = True
            username = spec.labels.get(L.USER, "")
            source = workspace_source(settings.workspace_volume, uid, username)
            volumes.append({"name": "workspace", **source})
            entry: dict[str, Any] = {"name": "workspace", "mountPath": mount.target}
            sub = settings.workspace_sub_path.format(username=username, uid=uid)
            if sub:
                entry["subPath"] = sub
            mounts.append(entry)
        else:
            raise MountRefused(
                "Kernel pods mount only their workspace volume, not host paths such as "
                f"{mount.source}: choose a kernel without host mounts.",
                setting="KubernetesBackend.workspace_volume",
            )
    if account_items:
        volumes.append(
            {
                "name": "accounts",
                "secret": {"secretName": connection_secret_name(name), "items": account_items},
            }
        )
    dataset_vols, dataset_mounts = dataset_volumes(settings.datasets)
    for dataset in dataset_mounts:
        taken = next((m for m in mounts if _covers(m["mountPath"], dataset["mountPath"])), None)
        if taken is None:
            taken = next((m for m in mounts if _covers(dataset["mountPath"], m["mountPath"])), None)
        if taken is not None:
            raise MountRefused(
                f"The dataset {dataset['name'].removeprefix(DATASET_VOLUME_PREFIX)} is to be "
                f"mounted at {dataset['mountPath']}, where this kernel has its "
                f"{taken['name']} ({taken['mountPath']}): ask an administrator to mount the "
                "dataset at another path.",
                setting="KubernetesBackend.datasets",
            )
    volumes += dataset_vols
    mounts += dataset_mounts
    for i, (target, options) in enumerate(sorted(spec.tmpfs.items())):
        size = re.search(r"size=([^,]+)", options)
        empty: dict[str, Any] = {"medium": "Memory"}
        if size:
            empty["sizeLimit"] = quantity(size.group(1))
        volumes.append({"name": f"scratch-{i}", "emptyDir": empty})
        mounts.append({"name": f"scratch-{i}", "mountPath": target})
    shm: dict[str, Any] = {"medium": "Memory"}
    if spec.shm_size:
        shm["sizeLimit"] = quantity(spec.shm_size)
    volumes.append({"name": "dshm", "emptyDir": shm})
    mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "env": [{"name": k, "value": v} for k, v in sorted(spec.environment.items())],
        "ports": [{"containerPort": p, "protocol": "TCP"} for p in sorted(spec.port_bindings)],
        "resources": {"limits": limits, "requests": requests},
        "volumeMounts": mounts,
        "securityContext": hardened(uid, gid, read_only=bool(spec.read_only)),
    }
    command = list(spec.command)
    if copy_connection:
        command = [
            "sh",
            "-c",
            f"umask 077 && cat {SECRET_DIR_IN_CONTAINER}/{CONNECTION_FILE_NAME} > "
            f'{KERNEL_DIR_IN_CONTAINER}/{CONNECTION_FILE_NAME} && exec "$@"',
            "jupyter-kernel",
            *command,
        ]
    if spec.entrypoint == []:
        container["command"] = command
    else:
        container["args"] = command
    if spec.working_dir:
        container["workingDir"] = spec.working_dir
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # Notebook code gets no credentials to the cluster, and no list of its services.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": settings.termination_grace_period,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": gid,
            "fsGroup": gid,
            # The group is set on a volume's files only when its root differs: not a walk
            # through (and a change of) a user's whole workspace at every start.
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # The pod's pause process is PID 1 and reaps what the kernel's children leave; the
        # kernel gets the kubelet's SIGTERM like any process (Docker's --init).
        "shareProcessNamespace": True,
        "containers": [container],
        "volumes": volumes,
    }
    pod_spec.update(_placement(settings))
    if settings.priority_class_name:
        pod_spec["priorityClassName"] = settings.priority_class_name
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": pod_spec,
    }
    return KernelPod(pod, tuple(secret_files))


def _placement(settings: PodSettings) -> dict[str, Any]:
    """The nodeSelector and tolerations every pod of the backend carries (when set)."""
    placement: dict[str, Any] = {}
    if settings.node_selector:
        placement["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        placement["tolerations"] = [dict(t) for t in settings.tolerations]
    return placement


def with_pull_secret(pod: dict[str, Any]) -> dict[str, Any]:
    """``pod`` pulling its image with its own pull Secret (kernel_secrets's)."""
    name = pod["metadata"]["name"]
    return {**pod, "spec": {**pod["spec"], "imagePullSecrets": [{"name": pull_secret_name(name)}]}}


def docker_config_json(registry: str, auth: Mapping[str, str]) -> str:
    """An image pull Secret's .dockerconfigjson (base64) for a registry login."""
    token = base64.b64encode(f"{auth['username']}:{auth['password']}".encode()).decode()
    config = {"auths": {registry: {"auth": token}}}
    return base64.b64encode(json.dumps(config).encode()).decode()


def kernel_secrets(
    pod: str, labels: Mapping[str, str], data: Mapping[str, str], pull: str | None
) -> list[dict[str, Any]]:
    """The kernel pod's Secrets, as the API takes them (owned_by sets their owner): its
    connection Secret with ``data`` (base64 by key), and its image pull Secret when ``pull``
    (a .dockerconfigjson) is given. Labelled as managed, with the kernel's id when label-safe."""
    owned_labels = {L.MANAGED: "true", **safe_labels(dict(labels), (L.KERNEL_ID,))}
    secrets: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": connection_secret_name(pod), "labels": owned_labels},
            "type": "Opaque",
            "data": dict(data),
        }
    ]
    if pull is not None:
        secrets.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": pull_secret_name(pod), "labels": owned_labels},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": pull},
            }
        )
    return secrets


def owned_by(secret: dict[str, Any], pod: str, pod_uid: str) -> dict[str, Any]:
    """``secret`` owned by the pod ``pod`` (its uid as the API gave it): deleted with it."""
    owner = {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": pod_uid}
    return {**secret, "metadata": {**secret["metadata"], "ownerReferences": [owner]}}


def probe_pod(
    settings: PodSettings,
    name: str,
    image: str,
    command: list[str],
    *,
    labels: Mapping[str, str],
    entrypoint: list[str] | None = None,
    user: str | None = None,
    environment: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A readiness probe's one-shot pod: ``command`` in ``image``, as ``user`` unless that is
    root or unset (then nobody, 65534), hardened, with the probe memory limit."""
    safe, notes = split_labels(dict(labels))
    uid, gid = parse_user(user) if user and user.split(":")[0] != "0" else (65534, 65534)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "env": [{"name": k, "value": v} for k, v in sorted((environment or {}).items())],
        "resources": {"limits": {"memory": settings.probe_memory}},
        "securityContext": hardened(uid, gid),
    }
    if entrypoint == []:
        container["command"] = list(command)
    elif entrypoint:
        container["command"] = list(entrypoint)
        container["args"] = list(command)
    else:
        container["args"] = list(command)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": safe, "annotations": notes},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 0,
            "securityContext": {
                "runAsNonRoot": True,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            **_placement(settings),
        },
    }
