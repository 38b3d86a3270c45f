"""The Kubernetes backend: a kernel is one pod in a namespace the administrator sets.

It implements backend.ContainerBackend, as docker/engine.py does for Docker; this folder is the
only one that imports the Kubernetes client. Kubernetes decides placement: GPUs are
``nvidia.com/gpu`` limits (or a MIG resource name), and the scheduler picks the node; no GPU
ledger of ours books them. A pod's labels and annotations are the ledger and the recovery record,
as container labels are on Docker.

Why the official synchronous client (``kubernetes``) and not ``kubernetes_asyncio``: the backend
interface has both coroutines (the kernel lifecycle, on the event loop) and ``*_sync`` methods
(probes, pulls, the image watcher, on worker threads). One synchronous client on a thread pool
of its own serves both with one connection pool, exactly as the Docker backend does; an asyncio
client would need a second event loop for the worker threads. Nothing here blocks the event
loop: every API call runs on the pool, and pod state comes from one watch (watch.py: a list,
then a watch from its resourceVersion, resumed from the last version seen, and listed again when
the API answers 410 Gone), never from polling the API per kernel; the readiness probes' pods are
waited on through a watch of their own the same way.

The class holds the traits (configured as ``KubernetesBackend.<trait>``) and the kernel pods'
lifecycle; the rest is in modules of its own: client.py (the API client and its pool), watch.py
(the pod watch), objects.py (the objects written, pure), pods.py (pods read, pure), kernels.py
(the API calls on a kernel's pod), nodes.py (nodes and GPU holders), learned.py (images as the
nodes ran them), oneshot.py (the probes' pods).

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
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes.client.rest import ApiException
from traitlets import Dict, Enum, Float, Int, List, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from ...base import labels as L
from ...base.errors import (
    BuildsNotSupported,
    ContainerKernelError,
    EngineRefused,
    EngineUnavailable,
    ImageMissing,
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
from ..backend import ContainerDetails, Dataset, Finding, GPUHolder, PullProgress
from . import nodes
from .client import KubernetesClient, refused
from .images import ImageDigest
from .kernels import KernelPodCalls, connection_of, owns
from .learned import LearnedImages
from .lease import ActiveLease
from .logs import PodLog
from .objects import (
    PodSettings,
    SecretFile,
    check_datasets,
    dataset_source,
    docker_config_json,
    kernel_pod,
    kernel_secrets,
    label_selector,
    pod_name,
    probe_pod,
    with_pull_secret,
)
from .oneshot import read_probe_pod, run_oneshot
from .pods import (
    NodeGPUs,
    SchedulingRefused,
    pod_details,
    pod_record,
    pod_state,
    start_progress,
)
from .standby import SecretsReadAhead
from .watch import Reflector, cluster_nodes

T = TypeVar("T")

# How long a look at the nodes waits for the node watch's first list (seconds) before it lists
# them from the API itself.
FIRST_LIST_WAIT = 5.0

# The label selector of the kernel pods (every pod a kernel runs in, whoever started it).
KERNEL_PODS = f"{L.MANAGED}=true"


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
    datasets = List(
        Dict(),
        config=True,
        help="""Data every kernel pod sees, each a volume the cluster has: {"name": "imagenet",
        "mount_path": "/datasets/imagenet", "volume": {"persistentVolumeClaim": {"claimName":
        "imagenet"}}} or {..., "volume": {"nfs": {"server": "nfs.example", "path":
        "/export/imagenet"}}}, with an optional "sub_path". Read-only (the volume and its
        mount) unless it says "read_only": false. The cluster's counterpart of
        ContainerProvisioner.extra_mounts, which are host paths; listed in each kernel's view
        (GET /gpu-containers/kernels/<id>) and the panel, as extra mounts are on Docker and
        Podman.""",
    )

    @validate("datasets")
    def _validate_datasets(self, proposal: Any) -> list[dict[str, Any]]:
        try:
            return list(check_datasets(proposal["value"]))
        except ValueError as e:
            raise TraitError(f"KubernetesBackend.datasets: {e}") from None

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
    # The images the administrator lists (use_images): the kernel specs' images, since there
    # is no local engine to list.
    listed: Callable[[], list[str]] | None = None
    # Registry logins (use_images): image pull secrets.
    pull_auth: Callable[[str], dict[str, str] | None] | None = None
    # What the provisioner reads: pods have their own address; signals are not delivered.
    schedules_gpus = True
    kernels_on_shared_nodes = False
    # A pod gets no signals from here: that would take pods/exec, which the service's account
    # is not granted.
    signals_reach_kernels = False
    tags_resolve_per_node = True
    pulls_report_bytes = False  # no pulls: each node's runtime pulls for its pods
    containers_shared = True
    images_shared = True

    cluster_name = "kubernetes"

    # A restart's pod is its allocation: nothing outlives a kernel's pod for the next.
    kept_allocations = None
    gpu_accounting = None  # the cluster's own metering is not this project's to read

    @property
    def kernel_datasets(self) -> tuple[Dataset, ...]:
        """The administrator's datasets (the datasets trait), in every kernel pod."""
        return tuple(
            Dataset(d["name"], d["mount_path"], d["read_only"], dataset_source(d["volume"]))
            for d in self.datasets
        )

    @property
    def cluster(self) -> KubernetesBackend:
        """The GPU panel reads the nodes through this backend (nodes_sync, gpu_holders_sync)."""
        return self

    @default("resolved_url")
    def _default_resolved_url(self) -> str:
        return self.kubeconfig or "the in-cluster API server"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._closed = False
        self._api = KubernetesClient(self)
        self._learned = LearnedImages(self.log)
        # A standby's reads of the kernel pods' connection Secrets, ahead of a takeover.
        self._read_ahead = SecretsReadAhead(self._read_connection_secret, self.log)
        # The kernel pods (labelled managed): their state, the images their nodes ran, and (a
        # standby's) their Secrets to read ahead.
        self._kernel_pods = Reflector(
            self._api,
            self,
            selector=KERNEL_PODS,
            read=self._read_pod,
            log=self.log,
            what="kernel pods",
            thread_name="gpu-containers-k8s-watch",
            check_open=self._check_open,
            on_pod=self._kernel_pod_seen,
            on_gone=self._read_ahead.pod_gone,
        )
        # The readiness probes' pods (labelled probe, never managed), which their probes wait
        # on. Only the probe learns from its pod: the image watchers are not told (oneshot.py).
        self._probe_pods = Reflector(
            self._api,
            self,
            selector=f"{L.PROBE}=true",
            read=lambda core, name: read_probe_pod(
                core, name, namespace=self.namespace, api_timeout=self.api_timeout
            ),
            log=self.log,
            what="readiness-probe pods",
            thread_name="gpu-containers-k8s-probe-watch",
        )
        # The cluster's nodes, for the GPU panel and a refused start's sentence: a look at the
        # panel need not list and decode every node again (125 nodes: most of its time).
        self._nodes = Reflector(
            self._api,
            self,
            selector="",
            read=self._read_node,
            log=self.log,
            what="nodes",
            thread_name="gpu-containers-k8s-node-watch",
            check_open=self._check_open,
            list_call=cluster_nodes,
        )
        # The kernel pods' records for the panel's holders, by pod name: (its resourceVersion,
        # its record), made again only when the watch brings a new version of the pod.
        self._holder_records: dict[str, tuple[str, ContainerRecord]] = {}
        # The holders made from them, and the pod watch's generation they were made at.
        self._holders: tuple[int, list[GPUHolder]] = (-1, [])

    # ------------------------------------------------------------------ plumbing

    def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(core_v1_api)`` here (a worker thread), translating transport failures."""
        return self._api.call(fn)

    async def run(self, fn: Callable[[Any], T]) -> T:
        return await self._api.run(fn)

    def use_images(
        self,
        listed: Callable[[], list[str]],
        pull_auth: Callable[[str], dict[str, str] | None],
    ) -> None:
        """No local engine lists images here: the listed ones are the images, and the nodes
        pull them with the administrator's logins (image pull secrets)."""
        self.listed, self.pull_auth = listed, pull_auth

    def close(self) -> None:
        self._closed = True
        self._read_ahead.clear()
        self._kernel_pods.stop()
        self._probe_pods.stop()
        self._nodes.stop()
        self.wake_watchers()
        self._api.close()

    def _check_open(self) -> None:
        if self._closed:
            raise EngineUnavailable("The Kubernetes backend was closed: the service is stopping.")

    def _calls(self) -> KernelPodCalls:
        return KernelPodCalls(self.namespace, self.api_timeout)

    def _pod_settings(self) -> PodSettings:
        return PodSettings(
            namespace=self.namespace,
            gpu_resource=self.gpu_resource,
            allowed_gpu_resources=tuple(self.allowed_gpu_resources),
            node_selector=dict(self.node_selector),
            tolerations=tuple(self.tolerations),
            priority_class_name=self.priority_class_name,
            cpu_request=self.cpu_request,
            cpu_limit=self.cpu_limit,
            memory_request=self.memory_request,
            memory_limit=self.memory_limit,
            workspace_volume=dict(self.workspace_volume),
            workspace_sub_path=self.workspace_sub_path,
            termination_grace_period=self.termination_grace_period,
            probe_memory=self.probe_memory,
            datasets=tuple(self.datasets),
        )

    # ------------------------------------------------------------------ the pod watch

    def _read_pod(self, core: Any, name: str) -> Any:
        try:
            return core.read_namespaced_pod(name, self.namespace, _request_timeout=self.api_timeout)
        except ApiException as e:
            if e.status == 404:
                return None
            raise refused(f"read pod {name}", e) from e

    def _read_node(self, core: Any, name: str) -> Any:
        try:
            return core.read_node(name, _request_timeout=self.api_timeout)
        except ApiException as e:
            if e.status == 404:
                return None
            raise refused(f"read node {name}", e) from e

    async def _pod(self, name: str, fresh: bool = False) -> Any:
        """The kernel pod as the watch last saw it (None: gone); see Reflector.pod."""
        return await self._kernel_pods.pod(name, fresh)

    # ------------------------------------------------------------------ a standby replica

    def stand_by(self) -> None:
        """This process is a standby replica (lease.py): follow the kernel pods from now on, and
        read each one's connection Secret ahead, so that a takeover finds them in memory (its
        recovery's list and reads: Reflector.listed_since, connection_info)."""
        # Reading before the watch starts: its first list tells of every pod, and a pod told of
        # before the reads began would wait for its next change (maybe none) to be read.
        self._read_ahead.start()
        self._kernel_pods.ensure_running()

    def act(self) -> None:
        """This replica acts now: no more reads ahead (it makes the Secrets of the pods it
        starts); what was read waits for the recovery's reattach of each pod."""
        self._read_ahead.stop()
        if self.secrets_read_ahead():
            self.log.info(
                "The connection Secrets of %d kernel pods were read while standing by: their "
                "kernels are reattached without reading them again.",
                self.secrets_read_ahead(),
            )

    def secrets_read_ahead(self) -> int:
        """How many kernel pods' connection Secrets wait in memory for their reattach."""
        return len(self._read_ahead)

    def _kernel_pod_seen(self, pod: Any) -> None:
        self._learned.learn_from_pod(pod)
        self._read_ahead.pod_seen(pod)

    def _read_connection_secret(self, name: str) -> Any:
        return self._api.call(lambda core: self._calls().read_connection_secret(core, name))

    # ------------------------------------------------------------------ the engine

    async def version(self) -> str:
        return await self.run(lambda core: self._api.git_version())

    async def runtimes(self) -> list[str]:
        return []

    @classmethod
    def kernel_service_problem(cls) -> str:
        return ""  # the engine runs a container's processes as any uid it is given

    @classmethod
    def active_replica(cls, parent: Any) -> ActiveLease | None:
        """The Lease that makes one replica of the service the one that acts (lease.py)."""
        lease = ActiveLease(cls(parent=parent), parent=parent)
        return lease if lease.enabled else None

    def diagnose_sync(self) -> list[Finding]:
        """Whether the cluster's API answers (the rest is the cluster's: docs/kubernetes.md)."""
        try:
            version = self._api.call(lambda core: self._api.git_version())
        except ContainerKernelError as e:
            return [Finding(e.sentence, problem=True, blocking=True)]
        return [Finding(f"The Kubernetes API answers (Kubernetes {version}).")]

    # ------------------------------------------------------------------ a kernel's pod

    async def create(self, spec: ContainerSpec) -> str:
        """The kernel's Secret (its connection file) and pod; returns the pod's name."""
        return await self.run(functools.partial(self._create, spec=spec))

    def _create(self, core: Any, *, spec: ContainerSpec) -> str:
        name = pod_name(spec.name)
        pod, secret_data, pull = self.pod_manifest(spec, name)
        return self._calls().create(core, pod, kernel_secrets(name, spec.labels, secret_data, pull))

    def pod_manifest(
        self, spec: ContainerSpec, name: str
    ) -> tuple[dict[str, Any], dict[str, str], str | None]:
        """The pod for ``spec`` (a dict as the API takes it), the data of its connection Secret,
        and its image pull secret's .dockerconfigjson (None: no login for that registry)."""
        built = kernel_pod(self._pod_settings(), spec, name)
        secret_data = {
            f.key: base64.b64encode(_read_secret_file(f)).decode() for f in built.secret_files
        }
        pull = self._pull_secret(spec.image)
        return (built.pod if pull is None else with_pull_secret(built.pod)), secret_data, pull

    def _pull_secret(self, image: str) -> str | None:
        if self.pull_auth is None:
            return None
        registry = registry_of(image)
        auth = self.pull_auth(registry)
        if not auth:
            return None
        return docker_config_json(registry, auth)

    async def start(self, container_id: str, image: str) -> None:
        """Wait until the pod's container runs (or ended): scheduled, image pulled, started.
        A pod no node can take is refused (or waited on) with the reason in a sentence."""
        began = asyncio.get_running_loop().time()
        waiting_said = False

        def unscheduled(reason: str) -> None:
            nonlocal waiting_said
            if not waiting_said:
                waiting_said = True
                self.log.info("Kernel pod %s waits to be scheduled: %s", container_id, reason)

        def check(pod: Any) -> bool | None:
            started = start_progress(
                pod,
                container_id,
                image,
                waited=asyncio.get_running_loop().time() - began,
                refuse_shortage=self.unschedulable == "refuse",
                schedule_timeout=self.schedule_timeout,
                unscheduled=unscheduled,
            )
            return True if started else None

        try:
            await self._kernel_pods.wait_for(
                container_id, check, self.startup_timeout + self.schedule_timeout, fresh=True
            )
        except SchedulingRefused as e:
            detail = await self._api.in_pool(lambda: self._capacity_sentence(container_id))
            await self.remove_or_defer(container_id)
            raise SchedulingRefused(f"{e.sentence}{detail}") from None
        except ContainerKernelError:
            await self.remove_or_defer(container_id)
            raise
        except TimeoutError:
            await self.remove_or_defer(container_id)
            raise EngineRefused(
                f"The kernel's pod {container_id} did not start within "
                f"{self.startup_timeout:.0f} s, the longest a pod may take here. Try again "
                "later; if pods are often this slow, ask an administrator to let them take "
                "longer.",
                setting="KubernetesBackend.startup_timeout",
            ) from None

    def _capacity_sentence(self, pod: str) -> str:
        """ " (n nodes have k free ...)" from the nodes' allocatable GPUs and the pods of this
        namespace bound to them; "" when the nodes or the pods cannot be read. Blocking."""
        try:
            found_nodes = self.nodes_sync()
            found = self.call(lambda core: self._kernel_pods.pods_sync(core, pod))
        except (ContainerKernelError, ApiException):
            return ""
        return nodes.capacity_sentence(
            found_nodes,
            found,
            pod,
            default_resource=self.gpu_resource,
            node_selector=self.node_selector,
            tolerations=self.tolerations,
        )

    def may_run_on(self, node: NodeGPUs) -> bool:
        """Whether a kernel pod could be placed on ``node`` at all: its labels match
        node_selector, and every NoSchedule/NoExecute taint is tolerated."""
        return nodes.may_run_on(node, self.node_selector, self.tolerations)

    async def address(self, container_id: str) -> str:
        """The pod's IP: where its kernel's ports are."""
        pod = await self._pod(container_id)
        ip = pod.status.pod_ip if pod is not None and pod.status else None
        if not ip:
            raise EngineRefused(f"The kernel's pod {container_id} has no IP address.")
        return str(ip)

    async def connection_info(self, container_id: str) -> dict[str, Any]:
        """The kernel's connection file from its Secret, trusted only when the pod owns it (an
        owner reference with the pod's uid, written by this service when it made both): the
        Secret as this replica read it ahead while it stood by, else as read now."""
        pod = await self._pod(container_id)
        uid = str(pod.metadata.uid or "") if pod is not None else ""
        secret = self._read_ahead.take(container_id, uid) if uid else None
        if secret is not None and owns(secret, uid):
            with contextlib.suppress(EngineRefused):  # (not a connection after all: read again)
                return connection_of(secret)
        return await self.run(lambda core: self._calls().connection(core, container_id, uid))

    async def state(self, container_id: str) -> ContainerState | None:
        return pod_state(await self._pod(container_id))

    async def kill(self, container_id: str, signum: int) -> None:
        if signum in (signal.SIGKILL, signal.SIGTERM):
            grace = (
                self.removal_grace_period
                if signum == signal.SIGKILL
                else self.termination_grace_period
            )
            await self.run(lambda core: self._calls().delete(core, container_id, grace=grace))
            return
        raise EngineRefused(
            f"A kernel pod is not sent signal {signum}: kernels on Kubernetes are interrupted "
            'by message (interrupt_mode "message").'
        )

    async def remove(self, container_id: str) -> None:
        await self.run(functools.partial(self._remove_and_tell, name=container_id))

    def _remove_and_tell(self, core: Any, *, name: str) -> None:
        removed, pod = self._calls().remove(core, name, grace=self.removal_grace_period)
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

    def pending_reason_sync(self, container_id: str) -> tuple[str, float | None] | None:
        """A pending pod's reason is start's to say (it waits on its watch, and refuses with it)."""
        return None

    async def logs_tail(self, container_id: str, lines: int = 20) -> str:
        return await self.run(lambda core: self._calls().log_tail(core, container_id, lines))

    async def details(self, container_id: str) -> ContainerDetails | None:
        pod = await self._pod(container_id)
        return None if pod is None else pod_details(pod)

    def open_logs_sync(self, container_id: str, tail: int, follow: bool) -> PodLog | None:
        response = self.call(lambda core: self._calls().open_log(core, container_id, tail, follow))
        return None if response is None else PodLog(response)

    # ------------------------------------------------------------------ the ledger: pods by label

    def list_containers_sync(self, labels: dict[str, str | None]) -> list[ContainerRecord]:
        selector = label_selector(labels)
        pods = None
        if selector == KERNEL_PODS:
            # The kernel pods, wanted while their watch starts (recovery, at a replica's
            # takeover): the watch's own first list, if it asks for it from now on.
            pods = self._kernel_pods.listed_since(time.monotonic(), self.api_timeout)
        if pods is None:
            pods = self.call(lambda core: self._calls().listing(core, selector))
        records = [pod_record(p) for p in pods]
        return [
            r
            for r in records
            if all(k in r.labels and (v is None or r.labels[k] == v) for k, v in labels.items())
        ]

    async def list_containers(self, labels: dict[str, str | None]) -> list[ContainerRecord]:
        return await self._api.in_pool(functools.partial(self.list_containers_sync, labels))

    async def ledger_containers(self) -> list[ContainerRecord]:
        """The managed kernel pods, for the GPU ledger (the cluster's scheduler books GPUs)."""
        return await self.list_containers({L.MANAGED: "true"})

    # ------------------------------------------------------------------ nodes

    def nodes_sync(self) -> list[NodeGPUs]:
        """Every node with its GPU resources (the default and the allowed others)."""
        resources = [self.gpu_resource, *self.allowed_gpu_resources]
        # The node watch's list, waited for while it starts (the panel's first look): a list of
        # its own beside it would decode every node twice, and slow both.
        cached = self._nodes.listed_since(0.0, FIRST_LIST_WAIT)
        if cached is None:  # the node watch has not listed: once from the API
            return nodes.nodes_sync(self._api, resources, self.api_timeout)
        return [gpus for node in cached for gpus in nodes.node_gpus(node, resources)]

    def cluster_version(self) -> tuple[int, int] | None:
        """The pod watch's and the node watch's counts of changes, once both have listed (None
        before: the panel's answer is then made from lists of the API's, each time)."""
        if not (self._kernel_pods.synced and self._nodes.synced):
            return None
        return self._kernel_pods.generation, self._nodes.generation

    def gpu_holders_sync(self) -> list[GPUHolder]:
        """The kernel pods bound to a node with GPUs: the GPU panel's holders, by node. From the
        pod watch's cache once it has listed: a look at the panel need not list and decode every
        kernel pod of the namespace again (2 s at 1,000 pods); before, one list from the API.
        The holders made are kept until the watch shows a change (at 1,000 pods, making them
        again was most of a look's time)."""
        generation = self._kernel_pods.generation  # (before the cache is read)
        made_at, holders = self._holders
        if made_at == generation and self._kernel_pods.synced:
            return list(holders)
        cached = self._kernel_pods.listed()
        if cached is None:
            return nodes.gpu_holders(
                self.list_containers_sync({L.MANAGED: "true"}), self.gpu_resource
            )
        known, made = self._holder_records, {}
        for pod in cached:
            version = pod.metadata.resource_version or ""
            kept = known.get(pod.metadata.name)
            made[pod.metadata.name] = (
                kept
                if kept is not None and version and kept[0] == version
                else (version, pod_record(pod))
            )
        # Replaced whole (requests may run on two threads): pods gone are forgotten.
        self._holder_records = made
        records = [r for _, r in made.values() if r.labels.get(L.MANAGED) == "true"]
        holders = nodes.gpu_holders(records, self.gpu_resource)
        self._holders = (generation, holders)
        return list(holders)

    # ------------------------------------------------------------------ images

    def image_digest(self, ref: str) -> ImageDigest | None:
        """What a node last ran for ``ref`` (None: no pod of it has run since this backend
        started)."""
        return self._learned.digest(ref)

    def learn_image(
        self, ref: str, image_id: str, created: float, *, tell_watchers: bool = True
    ) -> None:
        """A pod of ``ref`` created at ``created`` ran ``image_id``: LearnedImages.learn."""
        self._learned.learn(ref, image_id, created, tell_watchers=tell_watchers)

    def list_images_sync(self) -> list[ImageRecord]:
        return [self._learned.listed_record(ref) for ref in (self.listed() if self.listed else [])]

    async def list_images(self) -> list[ImageRecord]:
        return self.list_images_sync()

    def inspect_image_sync(self, ref: str) -> ImageRecord:
        if self.listed is not None and ref in self.listed():
            return self._learned.listed_record(ref)
        raise ImageMissing(
            f"The image {ref} is not one the administrator lists for the cluster: nodes pull "
            "only listed images. Ask an administrator to list it, or choose a listed image.",
            setting="ImageCatalog.listed_images",
        )

    async def inspect_image(self, ref: str) -> ImageRecord:
        return self.inspect_image_sync(ref)

    def watch_images(self, on_change: Callable[[], None], stop: threading.Event) -> None:
        """Call ``on_change`` (on this thread) whenever a listed reference's content id is
        learned from a kernel pod (the pod watch, which the kernels start) or changes: a kernel
        pod ran a newer image of the same tag. The listed references themselves change only
        with the configuration. Returns once ``stop`` is set (and wake_watchers called) or the
        backend closes."""
        self._learned.watch(on_change, stop, lambda: self._closed)

    def wake_watchers(self) -> None:
        self._kernel_pods.poke()
        self._learned.wake()

    def open_pull(
        self, ref: str, tag: str, auth_config: dict[str, str] | None, *, registry: str, who: str
    ) -> PullProgress:
        raise EngineRefused(
            "On Kubernetes each node pulls an image when a kernel first needs it there; "
            "this service does not pull."
        )

    def build_refusal(self) -> str:
        return (
            "On Kubernetes an image is pulled by the node that runs the kernel, from a registry: "
            "saving an environment as an image needs a registry this service can push to and an "
            "in-cluster builder, which this service does not have. Your packages stay in your "
            "workspace, on every kernel of this image."
        )

    def build_steps(self) -> None:
        """No builds here (build_refusal says why)."""
        return None

    def tag_sync(self, image_id: str, ref: str) -> None:
        raise BuildsNotSupported("On Kubernetes images live on the nodes; this service names none.")

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
        ref, image = self._learned.oneshot_target(image)
        name = pod_name(f"jgc-probe-{os.getpid()}-{secrets.token_hex(5)}")
        pod = probe_pod(
            self._pod_settings(),
            name,
            image,
            command,
            labels=labels,
            entrypoint=entrypoint,
            user=user,
            environment=environment,
        )
        return run_oneshot(
            self._api,
            self._probe_pods,
            self._learned,
            pod,
            ref=ref,
            namespace=self.namespace,
            api_timeout=self.api_timeout,
            timeout=timeout,
        )


def _read_secret_file(file: SecretFile) -> bytes:
    """A file for the kernel's Secret (objects.SecretFile says which may be read through a link)."""
    if not file.follow_links:
        return read_nofollow(file.path)
    with open(file.path, "rb") as f:
        return f.read()
