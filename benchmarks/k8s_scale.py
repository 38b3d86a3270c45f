"""Section 9's scale curves (run inside its cluster, after the failover): what the kernel service
does with N kernel pods in its namespace on M GPU nodes, at N = 10, 100 and 1,000 (a quick run: 5
and 10), in one run, each curve with its fit (scale.py's: the exponent k of cost ∝ N^k).

A 2-core machine runs one real node and a few dozen real kernels, not a thousand. The N pods are
stand-ins on simulated nodes instead: KWOK's controller (tests/k8s_cluster.py, simulate_pods)
manages M = N/8 nodes of eight ``nvidia.com/gpu`` each, and reports the pods the scheduler binds
to them Running, with an address, as a kubelet would. Each stand-in is a copy of one of the
service's own kernel pods (a real kernel, started through ``POST /api/kernels`` on the real
node, with one GPU) and of its connection Secret, owned by it as the service makes them: a kernel
id of its own, one of N/4 users of the service's map (KERNELS_PER_USER each), the simulated
nodes' placement, an emptyDir where the workspace's claim was. The service cannot tell them from
its kernels: they carry its labels, its server id and its Secrets.

At each N, in this order:

- **reattach**: ``kill -9`` of the active replica (failover.py's path, with the lease of its last
  row) with the N stand-ins and the user's real kernels running. Holding the Lease, the standby
  reattaches every kernel pod from the pods and their Secrets (a service restarted on its host
  does the same), the user's first once the user asks (their list waits for theirs only): from
  the Lease to the user's first answer (``reattach``), and to every pod reattached
  (``reattach_all``, its log's word); the user's kernels are listed again and a cell runs in a
  real one. Every stand-in must have been reattached (the new replica's log says each), no real
  kernel lost. The killed replica starts again as the standby (but after the last N).
- **start**: a real kernel of the user on the real node, ``POST /api/kernels`` until 201 (the
  service's part: its pod watch's cache, the user's cap, the pod, the kernel answering), then
  ``DELETE``: with N pods, each one of the service's kernels.
- the user's **GET /api/kernels** and the cluster view (**GET /gpu-containers/cluster**: every
  node and every kernel pod), p50 and p95.
- **memory** and **CPU**: the active replica's resident memory (VmRSS) with N kernels adopted,
  and the CPU it uses while nobody asks it anything (its CPU time over IDLE seconds: what its
  kernels' restarters, pod watch and activity sockets cost it).

What a simulated node cannot give: anything of a kernel's own (no process runs in a stand-in: no
cell, no kernel_info; the real kernels give those), the kubelet's work (image, sandbox,
container) and how soon a node reports a pod. The service watches its kernels' activity on each
kernel's iopub port: for a stand-in that connection fails at once (its address is routed
nowhere on this host) and ZeroMQ tries again every 100 ms, a cost real kernels do not bring, which
the numbers at 1,000 include.

At the end both replicas are stopped (they leave their kernels' pods, as on any stop) and the
simulated nodes deleted with their pods; the rest goes with section 9's cluster (its namespace,
the control plane, KWOK's controller, the route).
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.kernel.launch_request import REQUEST_ENV

from . import failover
from .harness import LABEL, Stats, process_cpu_seconds, process_rss, step
from .scale import fit

if TYPE_CHECKING:
    from .k8s import Cluster
    from .service import BenchService

SIZES = (10, 100, 1000)
QUICK_SIZES = (5, 10)
NODE_GPUS = 8
KERNELS_PER_USER = 4
STARTS = 3
QUICK_STARTS = 1
REQUESTS = 30
QUICK_REQUESTS = 3
IDLE = 20.0  # seconds of the service's CPU time read with nothing asked of it
QUICK_IDLE = 2.0
# The stand-ins' own label (beside the run's), by which they are listed and counted.
STAND_IN = "org.jupyter.gpu-containers.benchmark-stand-in"
CREATORS = 8  # threads creating stand-ins
RUNNING_WAIT = 600.0  # seconds for every stand-in to be reported Running
# The users of the stand-ins: the administrator's map, from this uid on (no system account).
FIRST_UID = 23400
CURVES = ("reattach", "start", "rest_kernels", "rest_cluster", "memory")


def _users(n: int) -> dict[str, str]:
    return {f"kwok{i}": f"{FIRST_UID + i}:{FIRST_UID + i}" for i in range(_user_count(n))}


def _user_count(n: int) -> int:
    return math.ceil(n / KERNELS_PER_USER)


async def run(cluster: Cluster, sizes: tuple[int, ...], quick: bool) -> dict[str, Any]:
    """The curves at ``sizes``, on section 9's cluster after its failover (both replicas up)."""
    from .k8s import UID, USER

    plane = cluster.plane
    active, standby = _replicas(cluster)
    with step("k8s scale: KWOK's controller"):
        # On this (the main) thread: its process dies with the benchmark's (k8s.py's start).
        plane.simulate_pods()
    with step("k8s scale: the standby again, with the stand-ins' users"):
        # Only the replica that takes over must know them: the active one is killed at the
        # first size, and starts again (as the standby) with this configuration.
        accounts = {USER: f"{UID}:{UID}", **_users(max(sizes))}
        for replica in (active, standby):
            cluster.write_replica_config(replica, {"UserDirectory": {"accounts": accounts}})
        await asyncio.to_thread(standby.stop)
        await asyncio.to_thread(failover._start_as_standby, standby)
    cluster.service = active
    # The template: a real kernel with one GPU, which the user keeps to the end (the cell after
    # each reattach runs in it).
    template_id, _, _ = await active.start_kernel(
        cluster.spec, {REQUEST_ENV: "1"}, token=cluster.token
    )
    await failover._run(active, template_id, cluster.token, f"mark = {template_id!r}")
    template = await asyncio.to_thread(_template, cluster, template_id)
    curves: dict[str, list[dict[str, Any]]] = {name: [] for name in CURVES}
    nodes = 0
    made: list[str] = []  # the stand-ins' kernel ids
    repeats = QUICK_STARTS if quick else STARTS
    requests = QUICK_REQUESTS if quick else REQUESTS
    try:
        for n in sizes:
            with step(f"k8s scale: {n} kernel pods"):
                wanted = math.ceil(n / NODE_GPUS)
                await asyncio.to_thread(_add_nodes, cluster, nodes, wanted)
                nodes = wanted
                made += await asyncio.to_thread(_add_stand_ins, cluster, template, len(made), n)
                await asyncio.to_thread(_until_running, cluster, n)
                reattach = await _reattach(cluster, active, standby, template_id, made)
                active, standby = standby, active
                cluster.service = active
                if n != sizes[-1]:  # after the last, the standby is stopped anyway
                    with step("k8s scale: the killed replica again, as the standby"):
                        await asyncio.to_thread(failover._start_as_standby, standby)
                # (The kill's own row counts the kernels it checked: the user's real ones.)
                curves["reattach"].append({**reattach, "n_items": n, "nodes": nodes})
                curves["start"].append(
                    {"n_items": n, **(await _starts(cluster, active, repeats)).to_dict()}
                )
                for name, path in (
                    ("rest_kernels", "api/kernels"),
                    ("rest_cluster", "gpu-containers/cluster"),
                ):
                    stats = await _requests(active, path, cluster.token, requests)
                    curves[name].append({"n_items": n, **stats.to_dict()})
                assert active.process is not None
                pid = active.process.pid
                rss, _ = await asyncio.to_thread(process_rss, pid)
                idle = await _idle_cpu(pid, QUICK_IDLE if quick else IDLE)
                curves["memory"].append({"n_items": n, "rss_bytes": rss, "idle_cpu": idle})
    finally:
        cluster.service = active
        # The replicas first (stopped, they leave their kernels' pods): a replica that saw its
        # stand-ins' pods go would restart them as kernels of their users, on the real node.
        for replica in (standby, active):
            await asyncio.to_thread(replica.stop)
        await asyncio.to_thread(_delete_nodes, cluster, nodes)
    out: dict[str, Any] = {}
    for name, rows in curves.items():
        if name == "reattach":
            timed = [{**r, "p50": r["reattach"]} for r in rows]
        elif name == "memory":
            timed = [{**r, "p50": r["rss_bytes"]} for r in rows]
        else:
            timed = rows
        out[name] = {"rows": rows, "fit": fit(timed)}
        if name == "reattach":
            out[name]["fit_all"] = fit([{**r, "p50": r["reattach_all"]} for r in rows])
    return {"sizes": list(sizes), "node_gpus": NODE_GPUS, "curves": out}


def _replicas(cluster: Cluster) -> tuple[BenchService, BenchService]:
    """(the active replica, the standby) after section 9's failover."""
    active = cluster.service
    assert active is not None
    others = [r for r in cluster.all_replicas() if r is not active]
    if len(others) != 1 or others[0].process is None or others[0].process.poll() is not None:
        raise RuntimeError("the scale curves need the failover's two replicas, one the standby")
    return active, others[0]


def _template(cluster: Cluster, kernel_id: str) -> dict[str, Any]:
    """The real kernel's pod and connection Secret, as the API gives them (plain dicts)."""
    core = cluster.core()
    pods = core.list_namespaced_pod(
        cluster.namespace, label_selector=f"{L.KERNEL_ID}={kernel_id}"
    ).items
    if len(pods) != 1:
        raise RuntimeError(f"kernel {kernel_id} has {len(pods)} pods, not one")
    serialize = cluster.plane.admin_client.sanitize_for_serialization
    pod = serialize(pods[0])
    secret = serialize(
        core.read_namespaced_secret(f"{pod['metadata']['name']}-connection", cluster.namespace)
    )
    return {"pod": pod, "secret": secret, "kernel_id": kernel_id}


def stand_in(
    template: dict[str, Any], kernel_id: str, user: str, uid: int, run_id: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pod and connection Secret of a stand-in for ``template``'s kernel (not yet owned:
    the Secret's owner is the pod once it has a uid)."""
    old_id = template["kernel_id"]
    source = template["pod"]
    old_uid = int(source["metadata"]["labels"][L.UID])

    def relabelled(values: dict[str, str]) -> dict[str, str]:
        out = {k: v.replace(old_id, kernel_id) for k, v in values.items()}
        for key, value in ((L.USER, user), (L.UID, str(uid))):
            if key in out:
                out[key] = value
        return out

    # A name as the service gives its pods (launchplan.py), in which the kernel's id begins.
    name = f"jupyter-kernel-{kernel_id[:8]}-{secrets.token_hex(3)}"
    # Wherever the spec names the pod or the kernel (its Secret's volume, its environment), it
    # names this one.
    text = json.dumps(source["spec"]).replace(source["metadata"]["name"], name)
    spec = json.loads(text.replace(old_id, kernel_id))
    # What the API filled in (the node it was bound to; the priority its class gave it, which
    # the API refuses from a pod's author) is the API's to fill in again.
    for key in ("nodeName", "priority"):
        spec.pop(key, None)
    from k8s_cluster import SIMULATED_LABEL, SIMULATED_TAINT

    spec["nodeSelector"] = {SIMULATED_LABEL: "kwok"}
    spec["tolerations"] = [*spec.get("tolerations", []), {**SIMULATED_TAINT, "operator": "Equal"}]
    # The workspace's claim is the user's on the real node; a stand-in mounts nothing real.
    spec["volumes"] = [
        {"name": v["name"], "emptyDir": {}} if "persistentVolumeClaim" in v else v
        for v in spec.get("volumes", [])
    ]
    for context in [spec.get("securityContext") or {}] + [
        c.get("securityContext") or {}
        for c in spec.get("containers", []) + spec.get("initContainers", [])
    ]:
        for key in ("runAsUser", "runAsGroup", "fsGroup"):
            if context.get(key) == old_uid:
                context[key] = uid
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {
                **relabelled(source["metadata"].get("labels") or {}),
                LABEL: run_id,
                STAND_IN: "true",
            },
            "annotations": relabelled(source["metadata"].get("annotations") or {}),
        },
        "spec": spec,
    }
    secret_source = template["secret"]
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": f"{name}-connection",
            "labels": relabelled(secret_source["metadata"].get("labels") or {}),
        },
        "type": secret_source.get("type", "Opaque"),
        "data": dict(secret_source.get("data") or {}),
    }
    return pod, secret


def _add_nodes(cluster: Cluster, have: int, wanted: int) -> None:
    for i in range(have, wanted):
        cluster.plane.add_fake_node(
            _node_name(cluster, i),
            gpus=NODE_GPUS,
            labels={LABEL: cluster.run_id},
            simulated=True,
        )


def _node_name(cluster: Cluster, i: int) -> str:
    return f"kwok-{cluster.run_id}-{i}"


def _delete_nodes(cluster: Cluster, count: int) -> None:
    for i in range(count):
        cluster.plane.delete_node(_node_name(cluster, i))


def _add_stand_ins(cluster: Cluster, template: dict[str, Any], have: int, n: int) -> list[str]:
    """Stand-ins ``have`` to ``n``: each pod, then its Secret owned by it, as the service makes
    a kernel's; returns their kernel ids."""
    from .k8s import UID

    core = cluster.core()
    owner_uid = int(template["pod"]["metadata"]["labels"][L.UID])
    assert owner_uid == UID

    def make(i: int) -> str:
        kernel_id = str(uuid.uuid4())
        user = f"kwok{i // KERNELS_PER_USER}"
        pod, secret = stand_in(
            template, kernel_id, user, FIRST_UID + i // KERNELS_PER_USER, cluster.run_id
        )
        created = core.create_namespaced_pod(cluster.namespace, pod)
        owner = {"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"]}
        secret["metadata"]["ownerReferences"] = [{**owner, "uid": created.metadata.uid}]
        core.create_namespaced_secret(cluster.namespace, secret)
        return kernel_id

    with ThreadPoolExecutor(CREATORS) as pool:
        return list(pool.map(make, range(have, n)))


def _until_running(cluster: Cluster, n: int) -> None:
    """Until KWOK reports all ``n`` stand-ins Running with an address."""
    core = cluster.core()
    deadline = time.monotonic() + RUNNING_WAIT
    selector = f"{STAND_IN}=true,{LABEL}={cluster.run_id}"
    while True:
        pods = core.list_namespaced_pod(cluster.namespace, label_selector=selector).items
        running = sum(1 for p in pods if p.status.phase == "Running" and p.status.pod_ip)
        if running >= n:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{running} of {n} stand-in pods were Running after {RUNNING_WAIT:.0f} s"
            )
        time.sleep(0.5)


async def _reattach(
    cluster: Cluster,
    active: BenchService,
    standby: BenchService,
    template_id: str,
    stand_ins: list[str],
) -> dict[str, Any]:
    """failover.py's kill of the active replica, with the stand-ins running; the row, with
    ``reattach`` (from holding the Lease to answering) and how many stand-ins came back."""
    before = len(standby.output())
    row = await failover._kill_active(cluster, active, standby, [template_id])
    said = standby.output()[before:]
    missing = [k for k in stand_ins if f"Reattached kernel {k} " not in said]
    if missing:
        raise RuntimeError(
            f"{len(missing)} of {len(stand_ins)} stand-ins were not reattached, e.g. "
            f"{missing[0]}; the replica's log:\n{said[-2000:]}"
        )
    return {
        **row,
        # The user's first answer (their kernels reattached first), and every kernel pod's.
        "reattach": row["answers"] - row["took_over"],
        "reattach_all": row["all_reattached"] - row["took_over"],
        # The stand-ins and the user's real kernels (the failover's, and the template).
        "reattached": said.count("Reattached kernel "),
    }


async def _idle_cpu(pid: int, seconds: float) -> float:
    """The share of one core ``pid`` used over ``seconds`` in which nothing was asked of it."""
    began, used = time.monotonic(), process_cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return (process_cpu_seconds(pid) - used) / (time.monotonic() - began)


async def _starts(cluster: Cluster, service: BenchService, repeats: int) -> Stats:
    stats = Stats()
    for _ in range(repeats):
        began = time.monotonic()
        model = await service.call(
            "POST",
            "api/kernels",
            {"name": cluster.spec, "env": {REQUEST_ENV: "1"}},
            token=cluster.token,
        )
        stats.add(time.monotonic() - began)
        await service.delete_kernel(model["id"], token=cluster.token)
    return stats


async def _requests(service: BenchService, path: str, token: str, requests: int) -> Stats:
    await service.call("GET", path, token=token)  # the first, apart: caches filled
    stats = Stats()
    for _ in range(requests):
        began = time.perf_counter()
        await service.call("GET", path, token=token)
        stats.add(time.perf_counter() - began)
    return stats
