"""Section 9: kernels as pods on Kubernetes (issue #18): a kernel started through the kernel
service with ``ServiceApp.backend = "kubernetes"``, against a bare pod of the same image running
ipykernel (the floor on this backend), side by side in one run.

The world is built here, from the test suite's harnesses (they live with the tests, so tests/ is
put on the path, as the REST section does for the NVML double):

- a real control plane (tests/k8s_cluster.py: etcd, kube-apiserver, kube-scheduler and
  kube-controller-manager on 127.0.0.1, TLS, service-account tokens, ``Node,RBAC``, PodSecurity),
  from the binaries scripts/build-kubernetes.sh builds (``JGC_K8S_BIN``, else the script);
- one real node (tests/k8s_node.py: a kubelet with a containerd of its own) advertising four
  ``nvidia.com/gpu`` (no device plugin: the kubelet admits a pod against that capacity, the
  container gets no device), with the benchmark's image imported from the local Docker engine;
- a ``restricted`` namespace, the RBAC of deploy/kubernetes/rbac.yaml, and the kernel service
  (``jupyter gpu-containers serve``) reaching the API as that service account; one user of its
  administrator's map, whose workspace is a persistent volume claim (a hostPath volume of this
  host bound to it, as the real-pod tests do).

Every variant asks for one GPU and runs as the same user with the same ``restricted`` security
context, on the same node, in the same namespace:

- **pod kernel**: ``POST /api/kernels`` with the user's token until it answers 201 (the service
  answers once the kernel answered ``kernel_info`` on the pod's IP), then ``DELETE``. The first
  ``kernel_info`` over the kernel's websocket after that is measured too, apart.
- **floor**: a bare pod whose command writes a connection file (fixed ports, and a key passed in
  the pod spec's args: fine for a floor, never for a kernel) and execs ``python3 -m
  ipykernel_launcher``; timed from the pod's creation, through a watch until its container runs,
  to the first ``kernel_info_reply`` from this host on the pod's IP; then deleted with a grace
  period of 0. No Secret, no service, no workspace.
- **floor with /dev/shm**: the same bare pod with one memory-backed emptyDir (what every kernel
  pod, and most GPU framework pods, mount at /dev/shm). A pod with any volume waits for the
  kubelet to mount it before its sandbox is made; this floor shows that cost apart.

After each start the benchmark waits, untimed, until no container of that pod runs on the node,
so that one start's teardown never overlaps the next start. The service's log gives each
kernel's phases (prepare, image, gpus, create, start, ready), and containerd's own times of each
pod's sandbox and container show where on the node the time goes.

Everything is removed at the end, whatever happened: the service (by its pid), the namespace and
its pods, the node (kubelet and containerd, by their pids; its mounts, cgroups, bridge and
directories), the control plane (by its pids) and the work directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.kernel.kernelspecs import kernel_name_for
from jupyter_gpu_containers.kernel.launch_request import REQUEST_ENV

from . import failover, k8s_scale
from .bench import Bench
from .harness import LABEL, REPO, Stats, kernel_info_zmq, step
from .service import BenchService

POD = "pod kernel: POST /api/kernels through the kernel service"
FLOOR = "floor: a bare pod of the same image running ipykernel"
# The floor with the one volume every kernel pod (and most GPU framework pods) has: a pod with
# any volume waits for the kubelet to mount it before its sandbox is made, which a pod without
# volumes does not.
FLOOR_SHM = "floor with /dev/shm: the bare pod and one memory-backed emptyDir"
VARIANTS = (POD, FLOOR, FLOOR_SHM)
KEYS = {POD: "pod", FLOOR: "floor", FLOOR_SHM: "floor_shm"}

# The goal of issue #18: a kernel pod's start over the floor's, at the median.
GOAL = 1.15
WARMUPS = 2
GPUS_PER_KERNEL = 1
NODE_GPUS = 4
RBAC = REPO / "deploy" / "kubernetes" / "rbac.yaml"
SERVICE_ACCOUNT = "jupyter-gpu-containers"
USER = "bench0"
# A uid of the administrator's map: no system account needed, none of the host's users.
UID = 23301
# The floor's kernel ports: any, the pod has its own network namespace.
FLOOR_PORTS = {"shell": 50001, "iopub": 50002, "stdin": 50003, "control": 50004, "hb": 50005}
# The phases the provisioner logs for each kernel ("… after 1.23 s (prepare 0.001, …)").
PHASES = [
    ("prepare", "prepare: checks, private directory, connection file"),
    ("image", "image: the listed image's record, policy, probe cache"),
    ("gpus", "gpus: the request (the scheduler places GPUs: nothing booked here)"),
    ("create", "create: the connection Secret, the pod, the Secret's owner reference"),
    ("start", "start: scheduled, sandbox and container started (the pod watch), pod IP"),
    ("ready", "ready: ipykernel boots and answers the provisioner's kernel_info"),
]
FLOOR_PHASES = [
    ("create", "create: the pod (one API call)"),
    ("start", "start: scheduled, sandbox and container started (a watch), pod IP"),
    ("ready", "ready: ipykernel boots and answers kernel_info from this host"),
]
# A start seen from the node (containerd's own times): see timeline().
NODE_STEPS = [
    ("to_sandbox", "request to sandbox made: API, scheduler, kubelet admission, volumes"),
    ("sandbox_to_container", "sandbox to container made: pause, CNI network, image, container"),
    ("container_to_answer", "container made to answer: start, ipykernel boot, status, reply"),
]
ANSWERS = re.compile(r"Kernel (\S+) answers from container .* after ([\d.]+) s \((.*)\)\s*$")


def _tests_on_path() -> None:
    """The control plane's and the node's harnesses are the test suite's: one of each, shared."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.append(tests)


def kubernetes_bin() -> Path:
    """The Kubernetes binaries: ``JGC_K8S_BIN``, else built once per machine by the build
    script (many minutes the first time, cached by version outside the clone)."""
    _tests_on_path()
    import pytest
    from k8s_cluster import kubernetes_bin_dir

    try:
        return Path(kubernetes_bin_dir())
    except pytest.fail.Exception as e:  # the harness fails a test; here, the section fails
        raise RuntimeError(str(e)) from None


class Cluster:
    """The control plane, the real node, the namespace, the RBAC, the user's workspace volume
    and the kernel service; ``close`` removes all of it, also after a start that failed half
    way."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.run_id = bench.run_id
        self.home = Path(tempfile.mkdtemp(prefix="jgc-bench-k8s-", dir="/tmp"))
        self.home.chmod(0o755)  # the user's workspace lies below it
        self.namespace = f"jgc-bench-{self.run_id}"
        self.plane: Any = None
        self.node: Any = None
        self.service: BenchService | None = None
        self.image = ""
        self.spec = ""
        self.token = ""
        self.volume = ""  # the workspace's persistent volume, once made
        self.namespace_made = False
        self.config: dict[str, Any] = {}
        # Further replicas of the service (failover.py), stopped with it.
        self.replicas: list[BenchService] = []
        self.first_service: BenchService | None = None

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        _tests_on_path()
        from k8s_cluster import ClusterStartError, ControlPlane
        from k8s_node import RealNode

        bin_dir = kubernetes_bin()
        with step("k8s: control plane"):
            for attempt in (1, 2):
                self.plane = ControlPlane(bin_dir, self.home / f"plane-{attempt}")
                try:
                    self.plane.start()
                    break
                except ClusterStartError as e:
                    self.plane.stop()
                    # A free port taken by another process before a component bound it.
                    if attempt == 2 or "address already in use" not in str(e):
                        raise
        with step("k8s: real node (kubelet, containerd), image import"):
            self.node = RealNode(
                self.plane, bin_dir, self.home / "node", f"bench-{self.run_id}", gpus=NODE_GPUS
            )
            self.node.start()
            self.image = self.node.import_image(self.bench.image)
        self.plane.create_namespace(self.namespace, {LABEL: self.run_id})
        self.namespace_made = True
        self.plane.apply(RBAC, self.namespace)
        self._workspace()
        self._start_service()

    def _workspace(self) -> None:
        """The user's workspace: a directory here they own, as a persistent volume bound to
        their claim ``ws-<user>`` in the namespace (a ``restricted`` pod may mount a claim, not a
        host path)."""

        workspace = self.home / "ws" / USER
        workspace.mkdir(parents=True)
        os.chown(workspace, UID, UID)
        self.volume = self.plane.bind_claim(
            self.namespace, f"ws-{USER}", workspace, labels={LABEL: self.run_id}
        )

    def _start_service(self) -> None:
        token = self.plane.service_account_token(self.namespace, SERVICE_ACCOUNT)
        kubeconfig = self.plane.kubeconfig_for_token(token, self.home / "service.kubeconfig")
        labels = {LABEL: self.run_id}
        tokens_file = self.home / "service" / "etc" / "tokens"
        config = {
            # Kernels outlive a replica (failover.py: the other reattaches them); the namespace
            # goes at the end with whatever runs in it.
            # failover.py runs up to 50 kernels, all of the one user's.
            "ServiceApp": {
                "backend": "kubernetes",
                "keep_kernels_on_stop": True,
                "max_kernels_per_user": 64,
            },
            "KubernetesBackend": {
                "kubeconfig": kubeconfig,
                "namespace": self.namespace,
                "node_selector": self.node.node_selector,
                "tolerations": [self.node.toleration],
                "workspace_volume": {"persistentVolumeClaim": {"claimName": "ws-{username}"}},
                "startup_timeout": 180,
            },
            "ImageCatalog": {"listed_images": [{"image": self.image}]},
            "ContainerProvisioner": {"extra_labels": labels},
            "KernelReadinessProbe": {"extra_labels": labels},
            "ContainerPolicy": {
                "state_dir": str(self.home / "state"),
                "connection_dir_root": str(self.home / "kernels"),
                # One service, whichever replica: the id its kernel pods carry.
                "server_id": f"bench-{self.run_id}",
            },
            "ServiceTokens": {"tokens_file": str(tokens_file)},
            "UserDirectory": {
                "workspace_template": str(self.home / "ws" / "{username}"),
                "accounts": {USER: f"{UID}:{UID}"},
            },
        }
        self.config = config
        self.service = BenchService(self.home / "service", config)
        self.first_service = self.service
        self.token = self.service.add_user(USER, tokens_file)
        with step("k8s: kernel service (backend kubernetes)"):
            self.service.start()
        self.spec = kernel_name_for(self.image)

    # ------------------------------------------------------------------ the end

    def close(self) -> None:
        """Remove everything, each step tried whatever the others did; what failed is said."""
        problems: list[str] = []

        def attempt(what: str, fn: Any) -> None:
            try:
                fn()
            except Exception as e:
                problems.append(f"{what}: {e}")

        if self.service is not None:
            attempt("stopping the kernel service", self.service.stop)
        for replica in self.replicas:
            attempt("stopping a replica of the kernel service", replica.stop)
        if self.plane is not None and self.namespace_made:
            attempt("deleting the namespace", lambda: self.plane.delete_namespace(self.namespace))
        if self.plane is not None and self.plane.admin_client is not None:
            attempt("deleting the workspace's volume", self._delete_volume)
        if self.node is not None:
            attempt("stopping the real node", self.node.stop)
        if self.plane is not None:
            attempt("stopping the control plane", self.plane.stop)
        shutil.rmtree(self.home, ignore_errors=True)
        if problems:
            print("[benchmarks] k8s: " + "; ".join(problems), file=sys.stderr)

    def _delete_volume(self) -> None:
        if self.volume:
            self.plane.delete_volume(self.volume)

    # ------------------------------------------------------------------ replicas (failover.py)

    def replica(self, name: str) -> BenchService:
        """Another replica of the service: its configuration, its users' tokens and
        workspaces, private directories of its own (a pod's emptyDirs). Not started."""
        home = self.home / name
        config = {
            **self.config,
            "ContainerPolicy": {
                **self.config["ContainerPolicy"],
                "state_dir": str(home / "state"),
                "connection_dir_root": str(home / "kernels"),
            },
        }
        replica = BenchService(home, config)
        self.replicas.append(replica)
        return replica

    def all_replicas(self) -> list[BenchService]:
        """The service's first replica and the further ones, started or not."""
        first = [] if self.first_service is None else [self.first_service]
        return first + self.replicas

    def write_replica_config(self, replica: BenchService, extra: dict[str, Any]) -> None:
        """``replica``'s configuration with ``extra``'s classes added (its next start)."""
        config = json.loads(replica.config_file.read_text())
        for name, values in extra.items():
            config[name] = {**config.get(name, {}), **values}
        replica.write_config(config)

    def kernel_pod_uids(self) -> set[str]:
        pods = self.core().list_namespaced_pod(self.namespace, label_selector=f"{L.MANAGED}=true")
        return {str(p.metadata.uid) for p in pods.items if p.metadata.deletion_timestamp is None}

    # ------------------------------------------------------------------ what both variants use

    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.plane.admin_client)

    def pod_uid(self, kernel_id: str) -> str:
        pods = (
            self.core()
            .list_namespaced_pod(self.namespace, label_selector=f"{L.KERNEL_ID}={kernel_id}")
            .items
        )
        return str(pods[0].metadata.uid) if pods else ""

    def wait_node_quiet(self, pod_uid: str, timeout: float = 60) -> None:
        """Until no container of the pod runs on the node (untimed): one start's teardown must
        not overlap the next start. (Stopped containers stay listed until the kubelet's
        container garbage collection, once a minute; they take no CPU.)"""
        deadline = time.monotonic() + timeout
        while set(self.node.pod_containers(pod_uid)) & set(
            self.node.ctr("tasks", "list", "--quiet").split()
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the node still runs containers of pod {pod_uid}")
            time.sleep(0.1)

    def node_times(self, pod_uid: str) -> dict[str, float]:
        """When containerd made the pod's sandbox and its container (wall clock, seconds): the
        API's own times have a resolution of one second."""
        found: dict[str, float] = {}
        for cid in self.node.pod_containers(pod_uid):
            info = json.loads(self.node.ctr("containers", "info", cid))
            kind = (info.get("Labels") or {}).get("io.cri-containerd.kind", "")
            at = _wall_clock(str(info.get("CreatedAt", "")))
            if kind in ("sandbox", "container") and at is not None:
                found[kind] = min(found.get(kind, at), at)
        return found

    def versions(self) -> dict[str, str]:
        containerd = subprocess.run(
            ["containerd", "--version"], capture_output=True, text=True, check=False
        ).stdout.split()
        return {
            "kubernetes": str(self.plane.version()),
            "containerd": containerd[2] if len(containerd) > 2 else "unknown",
        }


def _wall_clock(stamp: str) -> float | None:
    """containerd's RFC 3339 time (nanoseconds) as a Unix time (to the microsecond)."""
    match = re.match(r"^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", stamp)
    if match is None:
        return None
    head, fraction, zone = match.groups()
    text = f"{head}.{(fraction or '0')[:6].ljust(6, '0')}{'+00:00' if zone == 'Z' else zone}"
    return datetime.fromisoformat(text).timestamp()


# ---------------------------------------------------------------------- the variants


async def pod_kernel(cluster: Cluster) -> dict[str, float]:
    """One kernel through the service: POST until 201, then (apart) the first kernel_info over
    its websocket; deleted, and the node clean again."""
    service = cluster.service
    assert service is not None
    wall, started = time.time(), time.monotonic()
    model = await service.call(
        "POST",
        "api/kernels",
        {"name": cluster.spec, "env": {REQUEST_ENV: str(GPUS_PER_KERNEL)}},
        token=cluster.token,
    )
    answered = time.monotonic()
    kernel_id = model["id"]
    try:
        await service.kernel_info(kernel_id, token=cluster.token)
        replied = time.monotonic()
        uid = await asyncio.to_thread(cluster.pod_uid, kernel_id)
        on_node = await asyncio.to_thread(cluster.node_times, uid) if uid else {}
    finally:
        await service.delete_kernel(kernel_id, token=cluster.token)
    if uid:
        await asyncio.to_thread(cluster.wait_node_quiet, uid)
    return {
        "total": answered - started,
        "first_reply": replied - answered,
        "kernel": kernel_id,
        **timeline(wall, on_node, answered - started),
    }


def floor_manifest(cluster: Cluster, name: str, key: str, shm: bool = False) -> dict[str, Any]:
    """The bare pod: the kernel pods' security context and placement, one GPU, no Secret, no
    volume; the connection file (with its key: fine for a floor only) written by the command."""
    info = {
        "transport": "tcp",
        "ip": "0.0.0.0",
        "key": key,
        "signature_scheme": "hmac-sha256",
        **{f"{channel}_port": port for channel, port in FLOOR_PORTS.items()},
    }
    security = {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container: dict[str, Any] = {
        "name": "kernel",
        "image": cluster.image,
        "imagePullPolicy": "IfNotPresent",
        "command": [
            "sh",
            "-c",
            'printf %s "$1" > /tmp/kernel.json && '
            "exec python3 -m ipykernel_launcher -f /tmp/kernel.json",
            "floor",
            json.dumps(info),
        ],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": {"limits": {"nvidia.com/gpu": str(GPUS_PER_KERNEL)}},
        "securityContext": {
            **security,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    volumes: list[dict[str, Any]] = []
    if shm:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        container["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {LABEL: cluster.run_id}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 0,
            "securityContext": security,
            "nodeSelector": cluster.node.node_selector,
            "tolerations": [cluster.node.toleration],
            "containers": [container],
            "volumes": volumes,
        },
    }


def _create_pod(cluster: Cluster, manifest: dict[str, Any]) -> tuple[str, str]:
    created = cluster.core().create_namespaced_pod(cluster.namespace, manifest)
    return str(created.metadata.resource_version), str(created.metadata.uid)


def _until_running(cluster: Cluster, name: str, version: str, timeout: float = 120) -> str:
    """Watch the pod from its creation's resourceVersion until its container runs and it has an
    IP (returned); a container that ended, or no news within ``timeout``, raises."""
    from kubernetes import watch

    w = watch.Watch()
    try:
        for event in w.stream(
            cluster.core().list_namespaced_pod,
            cluster.namespace,
            field_selector=f"metadata.name={name}",
            resource_version=version,
            timeout_seconds=int(timeout),
        ):
            pod = event["object"]
            status = pod.status
            for container in (status.container_statuses or []) if status else []:
                if container.state.terminated is not None:
                    raise RuntimeError(
                        f"the floor's pod {name} ended: {container.state.terminated.reason} "
                        f"({container.state.terminated.message or 'no message'})"
                    )
                if container.state.running is not None and status.pod_ip:
                    return str(status.pod_ip)
    finally:
        w.stop()
    raise TimeoutError(f"the floor's pod {name} was not running within {timeout:.0f} s")


def _delete_pod(cluster: Cluster, name: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        cluster.core().delete_namespaced_pod(name, cluster.namespace, grace_period_seconds=0)
    except ApiException as e:
        if e.status != 404:
            raise


async def floor_with_shm(cluster: Cluster) -> dict[str, float]:
    return await floor(cluster, shm=True)


async def floor(cluster: Cluster, shm: bool = False) -> dict[str, float]:
    """One bare pod, timed from its creation to its kernel's first reply on the pod's IP."""
    name = f"floor-{uuid.uuid4().hex[:10]}"
    key = uuid.uuid4().hex
    manifest = floor_manifest(cluster, name, key, shm)
    wall, started = time.time(), time.monotonic()
    version, uid = await asyncio.to_thread(_create_pod, cluster, manifest)
    try:
        created = time.monotonic()
        ip = await asyncio.to_thread(_until_running, cluster, name, version)
        running = time.monotonic()
        await kernel_info_zmq(f"tcp://{ip}:{FLOOR_PORTS['shell']}", key)
        replied = time.monotonic()
        on_node = await asyncio.to_thread(cluster.node_times, uid)
    finally:
        await asyncio.to_thread(_delete_pod, cluster, name)
    await asyncio.to_thread(cluster.wait_node_quiet, uid)
    return {
        "total": replied - started,
        "create": created - started,
        "start": running - created,
        "ready": replied - running,
        **timeline(wall, on_node, replied - started),
    }


def timeline(wall: float, on_node: dict[str, float], total: float) -> dict[str, float]:
    """A start seen from the node: from the request (wall clock) to the pod's sandbox made in
    containerd (scheduling, the kubelet's admission and volumes), from the sandbox to the
    kernel's container made, and from that container to the answer."""
    if "sandbox" not in on_node or "container" not in on_node:
        return {}
    return {
        "to_sandbox": on_node["sandbox"] - wall,
        "sandbox_to_container": on_node["container"] - on_node["sandbox"],
        "container_to_answer": wall + total - on_node["container"],
    }


# ---------------------------------------------------------------------- the run


async def run(
    bench: Bench,
    runs: int,
    warmups: int = WARMUPS,
    failover_sizes: tuple[int, ...] = failover.SIZES,
    quick: bool = False,
    scale_sizes: tuple[int, ...] = k8s_scale.SIZES,
) -> dict[str, Any]:
    """``warmups`` uncounted rounds (the readiness probe's pod, first imports), then ``runs``
    rounds of both variants, the order alternating from round to round; then, on the same
    cluster, the service's failover (failover.py) with ``failover_sizes`` kernels, and its scale
    curves (k8s_scale.py) at ``scale_sizes`` kernel pods."""
    cluster = Cluster(bench)
    try:
        # On this (the main) thread, not a worker: the harnesses tie their processes (etcd, the
        # apiserver, the kubelet, containerd…) to this process's life with a parent-death
        # signal, which Linux sends when the forking *thread* ends. Nothing else runs on the
        # loop while the section sets up, so blocking it here delays nothing.
        cluster.start()
        versions = await asyncio.to_thread(cluster.versions)
        with step("k8s: kernel starts"):
            measured = await _rounds(cluster, runs, warmups)
        assert cluster.service is not None
        log = cluster.service.output()
        with step("k8s: failover"):
            try:
                handover = await failover.run(cluster, failover_sizes, quick)
            except Exception as e:  # the starts' numbers stand; the report says why
                handover = {"error": f"{type(e).__name__}: {e}"}
                print(f"[benchmarks] k8s failover failed: {e}", file=sys.stderr)
        with step("k8s: scale"):
            try:
                if "error" in handover:
                    raise RuntimeError("the failover before them failed")
                scale = await k8s_scale.run(cluster, scale_sizes, quick)
            except Exception as e:  # the numbers before stand; the report says why
                scale = {"error": f"{type(e).__name__}: {e}"}
                print(f"[benchmarks] k8s scale failed: {e}", file=sys.stderr)
    except Exception as e:
        if cluster.service is not None:
            print(
                f"[benchmarks] k8s section failed: {e}\n--- the kernel service's log:\n"
                f"{cluster.service.output()[-3000:]}",
                file=sys.stderr,
            )
        raise
    finally:
        node_id = cluster.node.id if cluster.node is not None else ""
        await asyncio.to_thread(cluster.close)
    phases = phase_rows(log, measured.pop("pod_samples"), measured.pop("floor_samples"))
    return {
        **measured,
        "failover": handover,
        "scale": scale,
        "phases": phases,
        "runs": runs,
        "warmups": warmups,
        "gpus_per_kernel": GPUS_PER_KERNEL,
        "node_gpus": NODE_GPUS,
        "node_id": node_id,
        "namespace": cluster.namespace,
        "versions": versions,
        "goal": GOAL,
    }


async def _rounds(cluster: Cluster, runs: int, warmups: int) -> dict[str, Any]:
    measure = {POD: pod_kernel, FLOOR: floor, FLOOR_SHM: floor_with_shm}
    total = {v: Stats() for v in VARIANTS}
    first_reply = Stats()
    rounds: list[dict[str, dict[str, Any]]] = []
    for round_ in range(warmups + runs):
        shift = round_ % len(VARIANTS)
        this: dict[str, dict[str, Any]] = {}
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            try:
                this[variant] = await measure[variant](cluster)
            except Exception as e:  # counted and said; the run goes on
                if round_ >= warmups:
                    total[variant].failures += 1
                print(f"[benchmarks] k8s: {variant} failed: {e!r}", file=sys.stderr)
                await _clear(cluster)
        if round_ < warmups:
            continue
        rounds.append(this)
        for variant, sample in this.items():
            total[variant].add(sample["total"])
        if POD in this:
            first_reply.add(this[POD]["first_reply"])
    rows = [
        {
            "variant": v,
            "key": KEYS[v],
            **total[v].to_dict(),
            "mean": statistics.fmean(total[v].samples) if total[v].samples else float("nan"),
        }
        for v in VARIANTS
    ]
    for row, v in zip(rows, VARIANTS, strict=True):
        if v == FLOOR:
            continue
        pairs = [(r[v]["total"], r[FLOOR]["total"]) for r in rounds if v in r and FLOOR in r]
        floor_p50 = total[FLOOR].p50
        row["ratio_p50"] = total[v].p50 / floor_p50 if floor_p50 else float("nan")
        row["paired_ratio_p50"] = (
            statistics.median(a / b for a, b in pairs) if pairs else float("nan")
        )
    shm_p50 = total[FLOOR_SHM].p50
    rows[0]["ratio_over_shm_p50"] = total[POD].p50 / shm_p50 if shm_p50 else float("nan")
    rows[0]["first_reply_p50"] = first_reply.p50
    samples = {v: [r[v] for r in rounds if v in r] for v in VARIANTS}
    steps = [
        {
            "step": key,
            "description": description,
            **{
                f"{KEYS[v]}_{stat}": value
                for v in VARIANTS
                for stat, value in Stats([x[key] for x in samples[v] if key in x]).to_dict().items()
                if stat in ("p50", "p95", "n")
            },
        }
        for key, description in NODE_STEPS
    ]
    return {
        "rows": rows,
        "node_timeline": steps,
        "pod_samples": samples[POD],
        "floor_samples": samples[FLOOR],
    }


async def _clear(cluster: Cluster) -> None:
    """After a failure: the user's kernels shut down, the floor's pods deleted."""
    service = cluster.service
    with contextlib.suppress(Exception):
        if service is not None:
            await service.delete_all_kernels(cluster.token)
    with contextlib.suppress(Exception):
        await asyncio.to_thread(
            cluster.core().delete_collection_namespaced_pod,
            cluster.namespace,
            label_selector=f"{LABEL}={cluster.run_id}",
            grace_period_seconds=0,
        )


def kernel_phases(log: str) -> dict[str, dict[str, float]]:
    """Each kernel's phases from the service's log: {kernel id: {phase: seconds, "total": …}}."""
    found: dict[str, dict[str, float]] = {}
    for line in log.splitlines():
        match = ANSWERS.search(line)
        if match is None:
            continue
        phases = {"total": float(match.group(2))}
        for part in match.group(3).split(","):
            name, _, seconds = part.strip().rpartition(" ")
            with contextlib.suppress(ValueError):
                phases[name] = float(seconds)
        found[match.group(1)] = phases
    return found


def phase_rows(
    log: str, pod_samples: list[dict[str, Any]], floor_samples: list[dict[str, float]]
) -> list[dict[str, Any]]:
    """The medians of each phase of the measured kernels (from the service's log) beside the
    floor's create / start / ready, and what the service adds around the provisioner (its
    POST's time less the provisioner's, kernel by kernel)."""
    logged = kernel_phases(log)
    samples = [logged[p["kernel"]] for p in pod_samples if p["kernel"] in logged]
    around = [
        p["total"] - logged[p["kernel"]]["total"] for p in pod_samples if p["kernel"] in logged
    ]
    floors = dict(FLOOR_PHASES)
    rows = []
    for key, description in PHASES:
        stat = Stats([s[key] for s in samples if key in s])
        floor_stat = Stats([f[key] for f in floor_samples if key in f])
        rows.append(
            {
                "phase": key,
                "description": description,
                "floor_description": floors.get(key, ""),
                **stat.to_dict(),
                "floor_p50": floor_stat.p50 if key in floors else None,
            }
        )
    rows.append(
        {
            "phase": "provisioner",
            "description": "the provisioner alone: prepare to ready",
            "floor_description": "the floor: create to ready",
            **Stats([s["total"] for s in samples]).to_dict(),
            "floor_p50": Stats([f["total"] for f in floor_samples]).p50,
        }
    )
    rows.append(
        {
            "phase": "service",
            "description": "the service around the provisioner: HTTP, auth, spec, REST answer",
            "floor_description": "",
            **Stats(around).to_dict(),
            "floor_p50": None,
        }
    )
    return rows
