"""The Kubernetes backend: a kernel is one pod in a namespace the administrator sets.

It implements backend.ContainerBackend, as engine.py does for Docker, and is the only module
that imports the Kubernetes client. Kubernetes decides placement: GPUs are ``nvidia.com/gpu``
limits (or a MIG resource name), and the scheduler picks the node; no GPU ledger of ours books
them. A pod's labels and annotations are the ledger and the recovery record, as container labels
are on Docker.

Why the official synchronous client (``kubernetes``) and not ``kubernetes_asyncio``: the backend
interface has both coroutines (the kernel lifecycle, on the event loop) and ``*_sync`` methods
(probes, pulls, the image watcher, on worker threads). One synchronous client on a thread pool
of its own serves both with one connection pool, exactly as the Docker backend does; an asyncio
client would need a second event loop for the worker threads. Nothing here blocks the event
loop: every API call runs on the pool, and pod state comes from one watch (a list, then a watch
from its resourceVersion, resumed from the last version seen, and listed again when the API
answers 410 Gone), never from polling the API per kernel.

The connection key never appears in a pod's spec, environment, labels or annotations: the
kernel's connection file goes into a Secret of its own, mounted read-only where the kernel reads
it, and owned by the pod, so that it is deleted with it.

Kernels are interrupted by message (the kernel specs say ``interrupt_mode: "message"``): a signal
would need ``pods/exec``, which the service's account is not granted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import urllib3
from kubernetes import client as kclient
from kubernetes import config as kconfig
from kubernetes import watch as kwatch
from kubernetes.client.rest import ApiException
from traitlets import Dict, Enum, Float, Int, List, Unicode, default
from traitlets.config import LoggingConfigurable

from ...base import labels as L
from ...base.errors import (
    ContainerKernelError,
    EngineRefused,
    EngineUnavailable,
    ImageMissing,
    MountRefused,
)
from ...base.records import (
    ContainerRecord,
    ContainerSpec,
    ContainerState,
    ImageRecord,
    ImagesDiskUse,
    OneshotResult,
)
from ...base.references import registry_of
from ...base.safefiles import read_nofollow
from ..backend import ContainerDetails, PullProgress
from .images import CONTENT_ID, ImageDigest, canonical_reference, content_digest, repository_of
from .logs import PodLog
from .objects import (
    ACCOUNT_FILES_IN_CONTAINER,
    CONNECTION_FILE_NAME,
    CONTAINER_NAME,
    GPU_COUNT_ANNOTATION,
    GPU_RESOURCE_ANNOTATION,
    KERNEL_DIR_IN_CONTAINER,
    LABEL_KEY,
    SECRET_DIR_IN_CONTAINER,
    hardened,
    label_safe,
    parse_user,
    pod_name,
    quantity,
    safe_labels,
    split_labels,
)
from .pods import (
    NODE_KEY,
    GPUHolder,
    NodeGPUs,
    SchedulingRefused,
    annotation,
    container_started,
    created_at,
    gpu_limit,
    int_quantity,
    kernel_status,
    pod_details,
    pod_record,
    pod_state,
    shortened,
    tolerated,
    unschedulable_reason,
    waiting_failure,
)

T = TypeVar("T")


class KubernetesBackend(LoggingConfigurable):
    """Kernels as pods; the kernel service's backend with ``ServiceApp.backend = "kubernetes"``."""

    namespace = Unicode(
        "jupyter-kernels",
        config=True,
        help="""The namespace the kernel pods, their Secrets and the readiness probes' pods
        live in. The service's account needs the rights deploy/kubernetes/rbac.yaml grants in
        it, and no others.""",
    )
    kubeconfig = Unicode(
        "",
        config=True,
        help="""A kubeconfig file to reach the cluster with. Empty: the pod's own service
        account (the service running in the cluster).""",
    )
    context = Unicode("", config=True, help="The kubeconfig context to use (empty: its current).")
    gpu_resource = Unicode(
        "nvidia.com/gpu",
        config=True,
        help="""The extended resource a kernel's GPUs are requested as: "nvidia.com/gpu" (the
        NVIDIA device plugin), or a MIG profile's resource such as "nvidia.com/mig-1g.10gb".""",
    )
    allowed_gpu_resources = List(
        Unicode(),
        config=True,
        help="""Other GPU resources a kernel spec may ask for (its provisioner config's
        gpu_resource, ContainerProvisioner.gpu_resource), such as MIG profiles. The default
        resource is always allowed.""",
    )
    node_selector = Dict(
        config=True,
        help="""Node labels every kernel pod requires (nodeSelector), e.g.
        {"nvidia.com/gpu.present": "true"}.""",
    )
    tolerations = List(
        Dict(),
        config=True,
        help="""Tolerations every kernel pod carries, as in a pod spec, e.g. [{"key":
        "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}].""",
    )
    priority_class_name = Unicode(
        "", config=True, help="The PriorityClass of kernel pods (empty: the cluster's default)."
    )
    cpu_request = Unicode("", config=True, help='CPU a kernel pod requests ("500m"; empty: none).')
    cpu_limit = Unicode("", config=True, help='CPU a kernel pod may use ("4"; empty: no limit).')
    memory_request = Unicode(
        "", config=True, help='Memory a kernel pod requests ("2Gi"; empty: none).'
    )
    memory_limit = Unicode(
        "",
        config=True,
        help="""Memory a kernel pod may use ("16Gi"; empty: ContainerProvisioner.mem_limit's
        value, else none). A kernel killed for memory is told so, as on Docker.""",
    )
    workspace_volume = Dict(
        config=True,
        help="""The volume mounted as the user's workspace, as a pod volume source with
        {username} and {uid} replaced, e.g. {"persistentVolumeClaim": {"claimName":
        "home-{username}"}} or {"nfs": {"server": "nfs.example", "path":
        "/export/home/{username}"}}. Empty: an emptyDir (nothing the kernel writes outlives
        it).""",
    )
    workspace_sub_path = Unicode(
        "",
        config=True,
        help="""A sub-path of the workspace volume to mount (with {username} and {uid}
        replaced), for one volume shared by every user.""",
    )
    unschedulable = Enum(
        ["refuse", "wait"],
        "refuse",
        config=True,
        help="""What a start does when no node has room for its pod now (not enough free
        GPUs, say): "refuse" at once with the scheduler's reason, or "wait" up to
        schedule_timeout for the cluster to free room. Other reasons a pod is not scheduled yet
        (a volume still binding) are always waited on, up to schedule_timeout.""",
    )
    schedule_timeout = Float(
        300.0,
        config=True,
        help="""Seconds a start waits for its pod to be scheduled (for room, when
        unschedulable is "wait"; for anything else that keeps it from a node, always).""",
    )
    startup_timeout = Float(
        600.0,
        config=True,
        help="""Seconds a scheduled pod may take to start its container (the node pulls the
        image first; framework images are large).""",
    )
    termination_grace_period = Int(
        5, config=True, help="Seconds a kernel pod has to exit after a polite shutdown."
    )
    removal_grace_period = Int(
        1,
        config=True,
        help="""Seconds a removed kernel pod's container has to end (its kernel was shut down
        already). 0 deletes the pod's API object at once, while its container may still run on
        the node and hold its GPUs: only for nodes without a kubelet (tests).""",
    )
    api_timeout = Float(30.0, config=True, help="Seconds to wait for one API call.")
    max_workers = Int(
        8, config=True, help="Threads that run Kubernetes API calls off the event loop."
    )
    probe_memory = Unicode("512Mi", config=True, help="Memory limit of readiness-probe pods.")

    resolved_url = Unicode(help="The API server actually used (for error sentences).")

    # Told of each pod this backend removed (quota.py's GPU-hours).
    on_removed: Callable[[ContainerRecord, float], None] | None = None
    # The images the administrator lists (set by services.py): the kernel specs' images, since
    # there is no local engine to list.
    listed: Callable[[], list[str]] | None = None
    # Registry logins (set by services.py): image pull secrets.
    pull_auth: Callable[[str], dict[str, str] | None] | None = None
    # What the provisioner reads: pods have their own address; signals are not delivered.
    connection_on_pod_ip = True
    schedules_gpus = True
    # A pod gets no signals from here: that would take pods/exec, which the service's account
    # is not granted.
    signals_reach_kernels = False
    tags_resolve_per_node = True

    @property
    def cluster(self) -> KubernetesBackend:
        """The GPU panel reads the nodes through this backend (nodes_sync, gpu_holders_sync)."""
        return self

    @default("resolved_url")
    def _default_resolved_url(self) -> str:
        return self.kubeconfig or "the in-cluster API server"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.Lock()
        # Making the client reads the kubeconfig (and may run its credential plugin): under a
        # lock of its own, never the one the event loop takes (the watch's cache, the waiters).
        self._client_lock = threading.Lock()
        self._api_client: Any = None
        self._executor_instance: ThreadPoolExecutor | None = None
        # The pod watch: pods by name, the resourceVersion it resumes from, and who waits.
        self._pods: dict[str, Any] = {}
        self._synced = threading.Event()
        self._watch_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._current_watch: Any = None
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._closed = False
        # Image reference (canonical) -> what the nodes last ran for it, learned from the pods
        # (the readiness probe's, the kernels' on the watch): under _lock. Each change bumps the
        # generation, which wakes the image watchers (watch_images) on their own threads.
        self._digests: dict[str, ImageDigest] = {}
        self._images_changed = threading.Condition()
        self._images_generation = 0

    # ------------------------------------------------------------------ plumbing

    @property
    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor_instance is None:
                self._executor_instance = ThreadPoolExecutor(
                    max_workers=self.max_workers, thread_name_prefix="gpu-containers-k8s"
                )
            return self._executor_instance

    def _client(self) -> Any:
        with self._client_lock:
            if self._api_client is None:
                configuration = kclient.Configuration()
                try:
                    if self.kubeconfig:
                        kconfig.load_kube_config(
                            config_file=self.kubeconfig,
                            context=self.context or None,
                            client_configuration=configuration,
                        )
                    else:
                        kconfig.load_incluster_config(client_configuration=configuration)
                except (kconfig.ConfigException, OSError) as e:
                    raise EngineUnavailable(
                        "The Kubernetes API cannot be reached: "
                        + (
                            f"the kubeconfig {self.kubeconfig} cannot be used ({e})."
                            if self.kubeconfig
                            else "this process runs outside a cluster and "
                            "KubernetesBackend.kubeconfig is not set."
                        )
                    ) from e
                self.resolved_url = configuration.host
                self._api_client = kclient.ApiClient(configuration)
            return self._api_client

    def _core(self) -> Any:
        return kclient.CoreV1Api(self._client())

    def _unavailable(self, e: BaseException) -> EngineUnavailable:
        return EngineUnavailable(
            f"The Kubernetes API at {self.resolved_url} did not answer: {shortened(str(e))}"
        )

    def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(core_v1_api)`` here (a worker thread), translating transport failures."""
        core = self._core()
        try:
            return fn(core)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise self._unavailable(e) from e

    async def run(self, fn: Callable[[Any], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self.call, fn))

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        self._synced.clear()
        self.wake_watchers()
        with self._lock:
            if self._executor_instance is not None:
                self._executor_instance.shutdown(wait=False, cancel_futures=True)
                self._executor_instance = None
        with self._client_lock:
            if self._api_client is not None:
                self._api_client.close()
                self._api_client = None

    def _refused(self, what: str, e: ApiException) -> EngineRefused:
        return EngineRefused(f"The Kubernetes API refused to {what}: {_api_reason(e)}")

    # ------------------------------------------------------------------ the pod watch

    def _ensure_watch(self) -> None:
        if self._closed:
            raise EngineUnavailable("The Kubernetes backend was closed: the service is stopping.")
        with self._lock:
            if self._watch_thread is None or not self._watch_thread.is_alive():
                self._stop.clear()
                self._watch_thread = threading.Thread(
                    target=self._watch_pods, name="gpu-containers-k8s-watch", daemon=True
                )
                self._watch_thread.start()

    def _watch_pods(self) -> None:
        """List the managed pods, then watch from the list's resourceVersion; resume from the
        last version seen when a watch ends; list again when that version is too old (410)."""
        selector = f"{L.MANAGED}=true"
        version = ""
        while not self._stop.is_set():
            try:
                core = self._core()
                if not version:
                    listed = core.list_namespaced_pod(
                        self.namespace, label_selector=selector, _request_timeout=self.api_timeout
                    )
                    with self._lock:
                        self._pods = {p.metadata.name: p for p in listed.items}
                    version = listed.metadata.resource_version
                    self._synced.set()
                    self._notify()
                    for p in listed.items:
                        self._learn_from_pod(p)
                w = kwatch.Watch()
                self._current_watch = w
                for event in w.stream(
                    core.list_namespaced_pod,
                    self.namespace,
                    label_selector=selector,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=240,
                    _request_timeout=300,
                ):
                    if self._stop.is_set():
                        break
                    kind, pod = event["type"], event["object"]
                    raw = event.get("raw_object") or {}
                    if kind == "BOOKMARK":
                        # A bookmark's object is left a dict: only its version counts.
                        version = raw.get("metadata", {}).get("resourceVersion") or version
                        continue
                    if kind == "ERROR":
                        if raw.get("code") == 410:
                            version = ""  # too old: list again
                            break
                        continue
                    version = pod.metadata.resource_version or version
                    with self._lock:
                        if kind == "DELETED":
                            self._pods.pop(pod.metadata.name, None)
                        else:
                            self._pods[pod.metadata.name] = pod
                    self._notify()
                    if kind != "DELETED":
                        self._learn_from_pod(pod)
            except ApiException as e:
                if e.status == 410:
                    version = ""
                    continue
                self.log.warning("The kernel pods' watch failed, retrying: %s", _api_reason(e))
                self._stop.wait(1.0)
            except Exception as e:  # the API went away: try again, from the same version
                if self._stop.is_set():
                    break
                self.log.warning("The kernel pods' watch failed, retrying: %s", shortened(str(e)))
                self._stop.wait(1.0)

    def _notify(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(event.set)

    async def _pod(self, name: str, fresh: bool = False) -> Any:
        """The pod as the watch last saw it (None: gone); straight from the API until the watch
        has listed, and, with ``fresh``, when the watch has not shown it yet (a pod just created
        may reach the API before the watch brings it)."""
        self._ensure_watch()
        if self._synced.is_set():
            with self._lock:
                found = self._pods.get(name)
            if found is not None or not fresh:
                return found

        def read(core: Any) -> Any:
            try:
                return core.read_namespaced_pod(
                    name, self.namespace, _request_timeout=self.api_timeout
                )
            except ApiException as e:
                if e.status == 404:
                    return None
                raise self._refused(f"read pod {name}", e) from e

        return await self.run(read)

    async def _wait_for(
        self, name: str, check: Callable[[Any], T | None], timeout: float, fresh: bool = False
    ) -> T:
        """Wait, on the watch's news, until ``check(pod)`` answers something other than None."""
        self._ensure_watch()
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        entry = (loop, event)
        with self._lock:
            self._waiters.add(entry)
        deadline = loop.time() + timeout
        try:
            while True:
                event.clear()
                answer = check(await self._pod(name, fresh))
                if answer is not None:
                    return answer
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(event.wait(), min(left, 5.0))
        finally:
            with self._lock:
                self._waiters.discard(entry)

    # ------------------------------------------------------------------ the engine

    async def version(self) -> str:
        def ask(core: Any) -> str:
            info = kclient.VersionApi(self._client()).get_code()
            return str(info.git_version)

        return await self.run(ask)

    async def runtimes(self) -> list[str]:
        return []

    # ------------------------------------------------------------------ a kernel's pod

    async def create(self, spec: ContainerSpec) -> str:
        """The kernel's Secret (its connection file) and pod; returns the pod's name."""
        return await self.run(functools.partial(self._create, spec=spec))

    def _create(self, core: Any, *, spec: ContainerSpec) -> str:
        name = pod_name(spec.name)
        pod, secret_data, pull = self.pod_manifest(spec, name)
        secret_name = f"{name}-connection"
        owned_labels = {L.MANAGED: "true", **safe_labels(spec.labels, (L.KERNEL_ID,))}
        owned: list[dict[str, Any]] = [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": secret_name, "labels": owned_labels},
                "type": "Opaque",
                "data": secret_data,
            }
        ]
        if pull is not None:
            owned.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": f"{name}-pull", "labels": owned_labels},
                    "type": "kubernetes.io/dockerconfigjson",
                    "data": {".dockerconfigjson": pull},
                }
            )
        # The pod first, then its Secrets, created owned by it: they go with it whoever deletes
        # it (and however), and no Secret ever exists without its owner. The kubelet retries the
        # Secret volume's mount until the Secret is there: the container waits for it.
        try:
            created = core.create_namespaced_pod(
                self.namespace, pod, _request_timeout=self.api_timeout
            )
        except ApiException as e:
            if e.status == 409:
                raise EngineRefused(
                    f"A pod named {name} already exists in namespace {self.namespace}."
                ) from e
            raise self._refused(f"create the kernel's pod {name}", e) from e
        except BaseException:
            # No answer (a timeout, a dropped connection): the API may have made the pod all
            # the same, and without its Secret it would wait forever, holding its GPU request
            # and counting against its user's cap. Its name is ours alone: delete it, if there.
            with contextlib.suppress(Exception):
                self._delete_pod(core, name=name, grace=0)
            raise
        owner = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": name,
            "uid": created.metadata.uid,
        }
        try:
            for secret in owned:
                secret["metadata"]["ownerReferences"] = [owner]
                core.create_namespaced_secret(
                    self.namespace, secret, _request_timeout=self.api_timeout
                )
        except BaseException as e:
            # Without its Secret the pod would wait forever: it goes (and its Secrets with it).
            with contextlib.suppress(Exception):
                self._delete_pod(core, name=name, grace=0)
            if isinstance(e, ApiException):
                raise self._refused(f"create the kernel's Secret for pod {name}", e) from e
            raise
        return name

    def pod_manifest(
        self, spec: ContainerSpec, name: str
    ) -> tuple[dict[str, Any], dict[str, str], str | None]:
        """The pod for ``spec`` (a dict as the API takes it), the data of its connection Secret,
        and its image pull secret's .dockerconfigjson (None: no login for that registry)."""
        uid, gid = parse_user(spec.user)
        labels, annotations = split_labels(spec.labels)
        resource = spec.gpu_resource or self.gpu_resource
        count = spec.gpu_count or len(spec.gpus)
        if count and resource not in (self.gpu_resource, *self.allowed_gpu_resources):
            raise EngineRefused(
                f"This kernel asks for its GPUs as {resource}, which the administrator does not "
                f"allow here (KubernetesBackend.gpu_resource is {self.gpu_resource}; "
                "allowed_gpu_resources lists the others)."
            )
        annotations[GPU_COUNT_ANNOTATION] = str(count)
        annotations[GPU_RESOURCE_ANNOTATION] = resource if count else ""
        limits: dict[str, str] = {}
        requests: dict[str, str] = {}
        if count:
            limits[resource] = str(count)
        memory = self.memory_limit or (quantity(spec.mem_limit) if spec.mem_limit else "")
        for key, value, where in (
            ("cpu", self.cpu_limit, limits),
            ("memory", memory, limits),
            ("cpu", self.cpu_request, requests),
            ("memory", self.memory_request, requests),
        ):
            if value:
                where[key] = value
        secret_data: dict[str, str] = {}
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
                secret_data[account] = base64.b64encode(read_nofollow(mount.source)).decode()
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
                with open(os.path.join(mount.source, CONNECTION_FILE_NAME), "rb") as f:
                    secret_data[CONNECTION_FILE_NAME] = base64.b64encode(f.read()).decode()
                volumes.append(
                    {
                        "name": "connection",
                        "secret": {"secretName": f"{name}-connection", "defaultMode": 0o440},
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
                source = self.workspace_source(uid, spec.labels.get(L.USER, ""))
                volumes.append({"name": "workspace", **source})
                entry: dict[str, Any] = {"name": "workspace", "mountPath": mount.target}
                sub = self.workspace_sub_path.format(username=spec.labels.get(L.USER, ""), uid=uid)
                if sub:
                    entry["subPath"] = sub
                mounts.append(entry)
            else:
                raise MountRefused(
                    f"Kernel pods mount only their workspace ({self.namespace}'s "
                    f"KubernetesBackend.workspace_volume), not host paths such as {mount.source}."
                )
        if account_items:
            volumes.append(
                {
                    "name": "accounts",
                    "secret": {"secretName": f"{name}-connection", "items": account_items},
                }
            )
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
            "terminationGracePeriodSeconds": self.termination_grace_period,
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
        if self.node_selector:
            pod_spec["nodeSelector"] = dict(self.node_selector)
        if self.tolerations:
            pod_spec["tolerations"] = [dict(t) for t in self.tolerations]
        if self.priority_class_name:
            pod_spec["priorityClassName"] = self.priority_class_name
        pull = self._pull_secret(spec.image)
        if pull is not None:
            pod_spec["imagePullSecrets"] = [{"name": f"{name}-pull"}]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
            "spec": pod_spec,
        }
        return pod, secret_data, pull

    def workspace_source(self, uid: int, username: str) -> dict[str, Any]:
        """The workspace's volume source, with {username} and {uid} replaced."""
        if not self.workspace_volume:
            return {"emptyDir": {}}

        def expand(value: Any) -> Any:
            if isinstance(value, str):
                return value.replace("{username}", username).replace("{uid}", str(uid))
            if isinstance(value, dict):
                return {k: expand(v) for k, v in value.items()}
            if isinstance(value, list):
                return [expand(v) for v in value]
            return value

        return dict(expand(dict(self.workspace_volume)))

    def _pull_secret(self, image: str) -> str | None:
        if self.pull_auth is None:
            return None
        registry = registry_of(image)
        auth = self.pull_auth(registry)
        if not auth:
            return None
        token = base64.b64encode(f"{auth['username']}:{auth['password']}".encode()).decode()
        config = {"auths": {registry: {"auth": token}}}
        return base64.b64encode(json.dumps(config).encode()).decode()

    async def start(self, container_id: str, image: str) -> None:
        """Wait until the pod's container runs (or ended): scheduled, image pulled, started.
        A pod no node can take is refused (or waited on) with the reason in a sentence."""
        began = asyncio.get_running_loop().time()
        waiting_said = False

        def check(pod: Any) -> str | None:
            nonlocal waiting_said
            if pod is None:
                raise EngineRefused(f"The kernel's pod {container_id} was deleted as it started.")
            status = pod.status
            if container_started(pod) or (status and status.phase == "Succeeded"):
                return "started"
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
                # A shortage (not enough free GPUs, memory) is refused at once unless the
                # policy is to wait; anything else (a volume still binding, say) usually passes,
                # and is given schedule_timeout either way.
                shortage = "Insufficient" in reason
                waited = asyncio.get_running_loop().time() - began
                if (shortage and self.unschedulable == "refuse") or waited >= self.schedule_timeout:
                    raise SchedulingRefused(reason)
                if not waiting_said:
                    waiting_said = True
                    self.log.info("Kernel pod %s waits to be scheduled: %s", container_id, reason)
            failed = waiting_failure(pod, image)
            if failed is not None:
                raise failed
            return None

        try:
            await self._wait_for(
                container_id, check, self.startup_timeout + self.schedule_timeout, fresh=True
            )
        except SchedulingRefused as e:
            detail = await self.run(functools.partial(self._capacity_sentence, pod=container_id))
            await self.remove_or_defer(container_id)
            raise SchedulingRefused(f"{e.sentence}{detail}") from None
        except ContainerKernelError:
            await self.remove_or_defer(container_id)
            raise
        except TimeoutError:
            await self.remove_or_defer(container_id)
            raise EngineRefused(
                f"The kernel's pod {container_id} did not start within "
                f"{self.startup_timeout:.0f} s (KubernetesBackend.startup_timeout)."
            ) from None

    def _capacity_sentence(self, core: Any, *, pod: str) -> str:
        """ " (n nodes have k free ...)" from the nodes' allocatable GPUs and the pods of this
        namespace bound to them; "" when the nodes cannot be read."""
        try:
            nodes = self.nodes_sync()
            found = self._pods_snapshot()
        except ContainerKernelError:
            return ""
        target = found.get(pod)
        resource = (
            annotation(target, GPU_RESOURCE_ANNOTATION) if target is not None else ""
        ) or self.gpu_resource
        wanted = int(annotation(target, GPU_COUNT_ANNOTATION) or 0) if target is not None else 0
        if not wanted:
            return ""
        used: dict[str, int] = {}
        for other in found.values():
            node = other.spec.node_name if other.spec else None
            if node and (other.status is None or other.status.phase not in ("Succeeded", "Failed")):
                used[node] = used.get(node, 0) + gpu_limit(other, resource)
        free = {
            n.name: n.allocatable - used.get(n.name, 0)
            for n in nodes
            if n.resource == resource and n.allocatable and self.may_run_on(n)
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

    def may_run_on(self, node: NodeGPUs) -> bool:
        """Whether a kernel pod could be placed on ``node`` at all: its labels match
        node_selector, and every NoSchedule/NoExecute taint is tolerated."""
        if any(node.labels.get(k) != v for k, v in self.node_selector.items()):
            return False
        return all(tolerated(t, self.tolerations) for t in node.taints)

    def _pods_snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._pods)

    async def address(self, container_id: str) -> str:
        """The pod's IP: where its kernel's ports are."""
        pod = await self._pod(container_id)
        ip = pod.status.pod_ip if pod is not None and pod.status else None
        if not ip:
            raise EngineRefused(f"The kernel's pod {container_id} has no IP address.")
        return str(ip)

    async def connection_info(self, container_id: str) -> dict[str, Any]:
        """The kernel's connection file from its Secret, trusted only when the pod owns it (an
        owner reference with the pod's uid, written by this service when it made both)."""

        def read(core: Any) -> dict[str, Any]:
            try:
                pod = core.read_namespaced_pod(
                    container_id, self.namespace, _request_timeout=self.api_timeout
                )
                secret = core.read_namespaced_secret(
                    f"{container_id}-connection", self.namespace, _request_timeout=self.api_timeout
                )
            except ApiException as e:
                raise EngineRefused(
                    f"The kernel pod {container_id}'s connection Secret cannot be read: "
                    f"{_api_reason(e)}"
                ) from e
            owners = secret.metadata.owner_references or []
            if not any(o.kind == "Pod" and o.uid == pod.metadata.uid for o in owners):
                raise EngineRefused(
                    f"The Secret {container_id}-connection is not the kernel pod's own."
                )
            try:
                content = json.loads(base64.b64decode((secret.data or {})[CONNECTION_FILE_NAME]))
            except (KeyError, ValueError) as e:
                raise EngineRefused(
                    f"The Secret {container_id}-connection holds no connection file."
                ) from e
            if not isinstance(content, dict):
                raise EngineRefused(f"The Secret {container_id}-connection is not a connection.")
            return content

        return await self.run(read)

    async def state(self, container_id: str) -> ContainerState | None:
        return pod_state(await self._pod(container_id))

    async def kill(self, container_id: str, signum: int) -> None:
        if signum in (signal.SIGKILL, signal.SIGTERM):
            grace = (
                self.removal_grace_period
                if signum == signal.SIGKILL
                else self.termination_grace_period
            )
            await self.run(functools.partial(self._delete_pod, name=container_id, grace=grace))
            return
        raise EngineRefused(
            f"A kernel pod is not sent signal {signum}: kernels on Kubernetes are interrupted "
            'by message (interrupt_mode "message").'
        )

    def _delete_pod(self, core: Any, *, name: str, grace: int) -> bool:
        try:
            core.delete_namespaced_pod(
                name,
                self.namespace,
                grace_period_seconds=grace,
                propagation_policy="Background",
                _request_timeout=self.api_timeout,
            )
        except ApiException as e:
            if e.status == 404:
                return False
            raise self._refused(f"delete pod {name}", e) from e
        return True

    async def remove(self, container_id: str) -> None:
        await self.run(functools.partial(self._remove_and_tell, name=container_id))

    def _remove_and_tell(self, core: Any, *, name: str) -> None:
        try:
            pod = core.read_namespaced_pod(name, self.namespace, _request_timeout=self.api_timeout)
        except ApiException as e:
            if e.status != 404:
                raise self._refused(f"read pod {name}", e) from e
            pod = None
        removed = self._delete_pod(core, name=name, grace=self.removal_grace_period)
        # Owned by the pod, the Secrets go with it; deleted here too, so that nothing waits on
        # the garbage collector.
        for suffix in ("connection", "pull"):
            with contextlib.suppress(ApiException):
                core.delete_namespaced_secret(
                    f"{name}-{suffix}", self.namespace, _request_timeout=self.api_timeout
                )
        listener = self.on_removed
        if removed and pod is not None and listener is not None:
            try:
                listener(pod_record(pod), time.time())
            except Exception as e:
                self.log.warning("After removing pod %s: %s", name, e)

    async def remove_or_defer(self, container_id: str) -> bool:
        try:
            await self.remove(container_id)
            return True
        except EngineUnavailable as e:
            # Owned Secrets and the pod stay until someone deletes the pod; recovery sweeps
            # managed pods whose server is gone, as it does containers.
            self.log.warning("Pod %s could not be deleted now: %s", container_id, e)
            return False

    async def remove_deferred(self) -> None:
        return None

    async def logs_tail(self, container_id: str, lines: int = 20) -> str:
        def read(core: Any) -> str:
            try:
                return str(
                    core.read_namespaced_pod_log(
                        container_id,
                        self.namespace,
                        container=CONTAINER_NAME,
                        tail_lines=lines,
                        _request_timeout=self.api_timeout,
                    )
                )
            except ApiException:
                return ""  # not started, or gone: no log to show

        return await self.run(read)

    async def details(self, container_id: str) -> ContainerDetails | None:
        pod = await self._pod(container_id)
        return None if pod is None else pod_details(pod)

    def open_logs_sync(self, container_id: str, tail: int, follow: bool) -> PodLog | None:
        def open_stream(core: Any) -> Any:
            try:
                return core.read_namespaced_pod_log(
                    container_id,
                    self.namespace,
                    container=CONTAINER_NAME,
                    tail_lines=tail,
                    follow=follow,
                    timestamps=True,
                    _preload_content=False,
                    _request_timeout=(self.api_timeout, None),
                )
            except ApiException as e:
                if e.status in (400, 404):
                    return None
                raise self._refused(f"read the log of pod {container_id}", e) from e

        response = self.call(open_stream)
        return None if response is None else PodLog(response)

    # ------------------------------------------------------------------ the ledger: pods by label

    def list_containers_sync(self, labels: dict[str, str | None]) -> list[ContainerRecord]:
        selector = ",".join(
            k if v is None else f"{k}={v}"
            for k, v in sorted(labels.items())
            if LABEL_KEY.match(k) and (v is None or label_safe(v))
        )

        def listing(core: Any) -> list[Any]:
            try:
                found = core.list_namespaced_pod(
                    self.namespace, label_selector=selector, _request_timeout=self.api_timeout
                )
            except ApiException as e:
                raise self._refused("list the kernel pods", e) from e
            return list(found.items)

        records = [pod_record(p) for p in self.call(listing)]
        return [
            r
            for r in records
            if all(k in r.labels and (v is None or r.labels[k] == v) for k, v in labels.items())
        ]

    async def list_containers(self, labels: dict[str, str | None]) -> list[ContainerRecord]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(self.list_containers_sync, labels)
        )

    # ------------------------------------------------------------------ nodes

    def nodes_sync(self) -> list[NodeGPUs]:
        """Every node with its GPU resources (the default and the allowed others)."""
        resources = [self.gpu_resource, *self.allowed_gpu_resources]

        def listing(core: Any) -> list[Any]:
            try:
                return list(core.list_node(_request_timeout=self.api_timeout).items)
            except ApiException as e:
                raise self._refused("list the nodes", e) from e

        answer = []
        for node in self.call(listing):
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
            for resource in resources:
                answer.append(
                    NodeGPUs(
                        name=node.metadata.name,
                        resource=resource,
                        allocatable=int_quantity(allocatable.get(resource, "0")),
                        labels=dict(node.metadata.labels or {}),
                        ready=ready,
                        taints=taints,
                    )
                )
        return answer

    def gpu_holders_sync(self) -> list[GPUHolder]:
        """The kernel pods bound to a node with GPUs: the GPU panel's holders, by node."""
        holders = []
        for record in self.list_containers_sync({L.MANAGED: "true"}):
            count = int_quantity(record.labels.get(GPU_COUNT_ANNOTATION, "0"))
            node = record.labels.get(NODE_KEY, "")
            if count and node and record.status != "exited":
                holders.append(
                    GPUHolder(
                        node=node,
                        pod=record.id,
                        count=count,
                        resource=record.labels.get(GPU_RESOURCE_ANNOTATION, self.gpu_resource),
                        user=record.labels.get(L.USER, ""),
                        uid=record.labels.get(L.UID, ""),
                        kernel_id=record.labels.get(L.KERNEL_ID, ""),
                        notebook=record.labels.get(L.NOTEBOOK, ""),
                    )
                )
        return sorted(holders, key=lambda h: (h.node, h.pod))

    # ------------------------------------------------------------------ images

    def _listed_record(self, ref: str) -> ImageRecord:
        """A listed image as the nodes last ran it: its id is the content id a node reported
        for the reference (so the readiness probe's answer is per digest, and a tag that moved
        is a new image), else, before any pod of it ran, the reference itself."""
        known = self.image_digest(ref)
        return ImageRecord(
            id=known.id if known else ref,
            tags=(ref,),
            labels={},
            env={},
            entrypoint=(),
            user="",
            created="",
            size=0,
            repo_digests=(known.pinned,) if known and known.pinned else (),
        )

    def image_digest(self, ref: str) -> ImageDigest | None:
        """What a node last ran for ``ref`` (None: no pod of it has run since this backend
        started)."""
        with self._lock:
            return self._digests.get(canonical_reference(ref))

    def learn_image(
        self, ref: str, image_id: str, created: float, *, tell_watchers: bool = True
    ) -> None:
        """A pod of ``ref`` that the API server created at ``created`` ran ``image_id`` (its
        container status's imageID). Ignored when a pod created later said otherwise (a kernel
        pod still running the tag's previous image says nothing new); the API server's clock
        orders them, not the nodes'. When the reference's content id is new or changed, the image
        watchers hear of it (``tell_watchers``)."""
        digest, pinned = content_digest(image_id)
        if not digest or not ref:
            return
        key = canonical_reference(ref)
        if pinned and repository_of(pinned) != repository_of(ref):
            # A node's word only: a pinned form from another repository would send the next
            # probe to a registry nobody listed.
            pinned = ""
        with self._lock:
            known = self._digests.get(key)
            if known is not None and created < known.created:
                return
            if known is not None and known.id == digest:
                pinned = pinned or known.pinned
            self._digests[key] = ImageDigest(digest, pinned, max(created, 0.0))
        if known is not None and known.id == digest:
            return
        if known is not None:
            self.log.info(
                "The image %s is now %s on the nodes (it was %s): its kernel specs and readiness "
                "are looked at anew.",
                ref,
                digest,
                known.id,
            )
        if not tell_watchers:
            return
        with self._images_changed:
            self._images_generation += 1
            self._images_changed.notify_all()

    def _learn_from_pod(self, pod: Any) -> None:
        """The kernel container's image and the content id its node resolved it to."""
        container = kernel_status(pod)
        spec = next(
            (
                c
                for c in (pod.spec.containers if pod.spec else None) or []
                if c.name == CONTAINER_NAME
            ),
            None,
        )
        if container is None or spec is None or not container.image_id:
            return
        self.learn_image(str(spec.image or ""), str(container.image_id), created_at(pod))

    def _oneshot_target(self, image: str) -> tuple[str, str]:
        """(the reference a one-shot run of ``image`` tells about, what its pod runs): a content
        id learned for a listed reference runs as its pinned "repo@sha256:…" (exactly that
        content) when the node gave one, else as the reference, whose content the pod's status
        then tells (it may have moved on meanwhile)."""
        if CONTENT_ID.fullmatch(image):
            with self._lock:
                for ref, known in self._digests.items():
                    if known.id == image:
                        return ref, known.pinned or ref
        return image, image

    def list_images_sync(self) -> list[ImageRecord]:
        return [self._listed_record(ref) for ref in (self.listed() if self.listed else [])]

    async def list_images(self) -> list[ImageRecord]:
        return self.list_images_sync()

    def inspect_image_sync(self, ref: str) -> ImageRecord:
        if self.listed is not None and ref in self.listed():
            return self._listed_record(ref)
        raise ImageMissing(
            f"The image {ref} is not one the administrator lists for the cluster "
            "(ImageCatalog.listed_images): nodes pull only listed images."
        )

    async def inspect_image(self, ref: str) -> ImageRecord:
        return self.inspect_image_sync(ref)

    def watch_images(self, on_change: Callable[[], None], stop: threading.Event) -> None:
        """Call ``on_change`` (on this thread) whenever a listed reference's content id is
        learned from a kernel pod (the pod watch, which the kernels start) or changes: a kernel
        pod ran a newer image of the same tag. The listed references themselves change only
        with the configuration. Returns once ``stop`` is set (and wake_watchers called) or the
        backend closes."""
        with self._images_changed:
            seen = self._images_generation
        while not stop.is_set() and not self._closed:
            with self._images_changed:
                if self._images_generation == seen:
                    # Woken by a change or wake_watchers; the timeout only bounds a missed stop.
                    self._images_changed.wait(timeout=5.0)
                current = self._images_generation
            if stop.is_set() or self._closed or current == seen:
                continue
            seen = current
            try:
                on_change()
            except Exception as e:  # the next change calls again: the watcher stays
                self.log.warning("After a listed image's digest changed: %s", e)

    def wake_watchers(self) -> None:
        watch = self._current_watch
        if watch is not None:
            watch.stop()
        with self._images_changed:
            self._images_changed.notify_all()

    def open_pull(
        self, ref: str, tag: str, auth_config: dict[str, str] | None, *, registry: str, who: str
    ) -> PullProgress:
        raise EngineRefused(
            "On Kubernetes each node pulls an image when a kernel first needs it there; "
            "this service does not pull."
        )

    def untag_sync(self, ref: str) -> None:
        raise EngineRefused("On Kubernetes images live on the nodes; this service removes none.")

    def image_disk_use_sync(self) -> ImagesDiskUse:
        return ImagesDiskUse(images=(), layers_size=0)

    def run_oneshot_sync(
        self,
        image: str,
        command: list[str],
        *,
        labels: dict[str, str],
        timeout: float,
        entrypoint: list[str] | None = None,
        user: str | None = None,
        cap_add: list[str] | None = None,
        no_new_privileges: bool = True,
        environment: dict[str, str] | None = None,
    ) -> OneshotResult:
        """Run ``command`` in a short-lived pod of ``image`` (the readiness probe), as an
        unprivileged user, and return its log and the content id its node ran (what the
        reference resolved to, learned for it too). ``image`` may be a content id this backend
        learned (a listed image's ImageRecord.id). The pod is deleted whatever happens."""
        ref, image = self._oneshot_target(image)
        safe, notes = split_labels(labels)
        name = pod_name(f"jgc-probe-{os.getpid()}-{secrets.token_hex(5)}")
        uid, gid = parse_user(user) if user and user.split(":")[0] != "0" else (65534, 65534)
        container: dict[str, Any] = {
            "name": CONTAINER_NAME,
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "env": [{"name": k, "value": v} for k, v in sorted((environment or {}).items())],
            "resources": {"limits": {"memory": self.probe_memory}},
            "securityContext": hardened(uid, gid),
        }
        if entrypoint == []:
            container["command"] = list(command)
        elif entrypoint:
            container["command"] = list(entrypoint)
            container["args"] = list(command)
        else:
            container["args"] = list(command)
        pod = {
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
                **({"nodeSelector": dict(self.node_selector)} if self.node_selector else {}),
                **(
                    {"tolerations": [dict(t) for t in self.tolerations]} if self.tolerations else {}
                ),
            },
        }

        def run(core: Any) -> OneshotResult:
            # The create inside the try whose finally deletes: a create that timed out may have
            # made the pod all the same.
            try:
                try:
                    core.create_namespaced_pod(
                        self.namespace, pod, _request_timeout=self.api_timeout
                    )
                except ApiException as e:
                    raise self._refused(f"create a readiness-probe pod for {image}", e) from e
                deadline = time.monotonic() + timeout
                timed_out, exit_code = True, -1
                found = None
                while time.monotonic() < deadline:
                    found = core.read_namespaced_pod(
                        name, self.namespace, _request_timeout=self.api_timeout
                    )
                    failure = waiting_failure(found, image)
                    if failure is not None:
                        raise failure
                    state = pod_state(found)
                    if state is not None and state.ended:
                        timed_out, exit_code = False, state.exit_code
                        break
                    time.sleep(0.25)
                ran = kernel_status(found) if found is not None else None
                ran_id = str(ran.image_id or "") if ran is not None else ""
                if ran_id:
                    # The watchers are not told: they would list the new id before the probe
                    # has kept its answer under it, and probe it a second time. The probe's
                    # caller has the answer (and the kernel specs list again when it comes).
                    self.learn_image(ref, ran_id, created_at(found), tell_watchers=False)
                try:
                    log = str(
                        core.read_namespaced_pod_log(
                            name,
                            self.namespace,
                            container=CONTAINER_NAME,
                            tail_lines=500,
                            _request_timeout=self.api_timeout,
                        )
                    )
                except ApiException:
                    log = ""
                return OneshotResult(
                    exit_code=exit_code,
                    stdout=log,
                    stderr="",
                    timed_out=timed_out,
                    image_id=content_digest(ran_id)[0],
                )
            finally:
                # Whatever went wrong: gone already (404), or a deletion that did not answer,
                # must not hide why the probe ended.
                with contextlib.suppress(Exception):
                    core.delete_namespaced_pod(
                        name,
                        self.namespace,
                        grace_period_seconds=0,
                        _request_timeout=self.api_timeout,
                    )

        return self.call(run)


def _api_reason(e: ApiException) -> str:
    try:
        body = json.loads(e.body or "{}")
        message = body.get("message") or e.reason
    except (ValueError, TypeError):
        message = e.reason
    return shortened(f"{message} (HTTP {e.status})")
