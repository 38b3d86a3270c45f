"""Section 14 (run inside section 9's cluster): the kernel service's failover on Kubernetes.

Two replicas of the kernel service (ServiceApp.backend = "kubernetes", the same configuration,
each with private directories of its own, as two pods of the Deployment have), behind the Lease
(ActiveLease, backends/kubernetes/lease.py), on section 9's control plane and node. With N
kernel pods running (1, 10 and 50; a quick run: 1), each kernel's websocket open as a page holds
it: ``kill -9`` of the active replica's process. Timed from the kill:

- **took over**: the standby's log says it holds the Lease;
- **answers**: it answers ``GET /api/kernels`` (it reattaches its kernels first);
- **all listed**: the user's list holds all their kernels again;
- **a cell again**: a page reconnects (a new websocket) and a cell runs, its variables kept.

Then every kernel is checked: the same pod (uid), its variables kept. The killed replica is
started again, as its Deployment would, and waits as the standby for the next size's kill.

The replicas run as processes of this host, with the service account's kubeconfig: the standby
cannot see a process of this host end, so it waits for the Lease to lapse
(ActiveLease.lease_duration), which is the path of a node lost or a process frozen. In a pod, a
killed replica's container is seen exiting by the kubelet, and the standby takes over at once
(tests/test_k8s_deployment.py times that path). The default settings (15 s) are measured at
every size, and shorter ones (4 s) at the largest, to show what the setting buys (a quick run: an
8 s lease only). A user's server reaches the new active replica through the Service, whose
selector follows the Lease's label; that switch is not in these numbers.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from .harness import step
from .restart import _run

if TYPE_CHECKING:
    from .k8s import Cluster
    from .service import BenchService

SIZES = (1, 10, 50)
QUICK_SIZES = (1,)
DEFAULT: dict[str, float] = {}  # ActiveLease's own defaults
SHORT = {"lease_duration": 4.0, "renew_deadline": 3.0, "retry_period": 0.5}
# A quick run's (the tests'): short, with room for a renewal on a loaded machine, where a
# replica that missed its deadline would stand down before the kill.
QUICK = {"lease_duration": 8.0, "renew_deadline": 6.0, "retry_period": 1.0}
CPU = {"KERNEL_GPU_CONTAINERS_REQUEST": "0"}  # more kernels than the node's GPUs
WAIT = 180.0  # seconds after the kill for the standby to act and list every kernel
STANDBY = ("Standby: the lease",)
ACTIVE = "Active: this replica"
# What the extension says once its start-up recovery is done with every kernel (app.py).
RECOVERED = "Kernel containers at start: reattached"


async def run(cluster: Cluster, sizes: tuple[int, ...], quick: bool) -> dict[str, Any]:
    """The rows: one kill per size at the default settings, and one more at the largest size
    with SHORT (a quick run: QUICK at its sizes only)."""
    active = cluster.service
    assert active is not None
    standby = cluster.replica("standby")
    with step("failover: the standby replica"):
        await asyncio.to_thread(_start_as_standby, standby)
    kernels: list[str] = []
    rows = []
    try:
        # A quick run (the tests') with the short lease only: its wait is the test command's.
        short = QUICK if quick else SHORT
        for settings in (short,) if quick else (DEFAULT, short):
            if settings:
                # Both stopped cleanly (the active one gives the Lease up, kernels kept),
                # then started again with the shorter lease: the first acts at once.
                await asyncio.to_thread(standby.stop)
                await asyncio.to_thread(active.stop)
                for replica in (active, standby):
                    cluster.write_replica_config(replica, {"ActiveLease": settings})
                await asyncio.to_thread(active.start)
                await asyncio.to_thread(_start_as_standby, standby)
            for n in sizes if settings is DEFAULT or quick else sizes[-1:]:
                while len(kernels) < n:
                    kernel_id, _, _ = await active.start_kernel(
                        cluster.spec, CPU, token=cluster.token
                    )
                    await _run(active, kernel_id, cluster.token, f"mark = {kernel_id!r}")
                    kernels.append(kernel_id)
                row = await _kill_active(cluster, active, standby, kernels)
                rows.append({**row, "lease_duration": settings.get("lease_duration", 15.0)})
                active, standby = standby, active
                with step("failover: the killed replica again, as the standby"):
                    await asyncio.to_thread(_start_as_standby, standby)
    finally:
        cluster.service = active  # the one close() stops first (it leaves kernels running)
    return {"rows": rows, "sizes": list(sizes), "short": short}


def _start_as_standby(replica: BenchService) -> None:
    replica.ready_markers = STANDBY
    replica.start()
    replica.ready_markers = type(replica).ready_markers


async def _until(found: Any, deadline: float, what: str) -> float:
    while True:
        if await found():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"failover: {what} not within {WAIT:.0f} s of the kill")
        await asyncio.sleep(0.05)


async def _kill_active(
    cluster: Cluster, active: BenchService, standby: BenchService, kernels: list[str]
) -> dict[str, Any]:
    token = cluster.token
    pods = await asyncio.to_thread(cluster.kernel_pod_uids)
    pages = [await active.channels(k, token) for k in kernels]
    assert active.process is not None
    killed = time.monotonic()
    active.process.kill()
    await asyncio.to_thread(active.process.wait)
    for page in pages:
        page.close()  # the page sees its websocket end; it opens a new one below
    deadline = killed + WAIT

    async def took_over() -> bool:
        return ACTIVE in standby.output()

    async def answers() -> bool:
        try:
            await standby.call("GET", "api/kernels", token=token, timeout=5)
            return True
        except Exception:  # still the standby's 503, or not listening between the two
            return False

    async def all_listed() -> bool:
        listed = {k["id"] for k in await standby.call("GET", "api/kernels", token=token)}
        return set(kernels) <= listed

    async def recovered() -> bool:
        return RECOVERED in standby.output()

    # Beside the user's requests, which wait for the user's kernels only (service_routes.py):
    # the moment its recovery is done with every kernel of the namespace.
    all_back = asyncio.ensure_future(_until(recovered, deadline, "every kernel reattached"))
    try:
        took = await _until(took_over, deadline, "the standby taking the lease")
        answered = await _until(answers, deadline, "the new active replica answering")
        listed = await _until(all_listed, deadline, "every kernel listed again")
        kept = await _run(standby, kernels[-1], token, "")
        cell = time.monotonic()
        reattached = await all_back
    finally:
        all_back.cancel()
    lost = [] if kept == repr(kernels[-1]) else [kernels[-1]]
    for kernel_id in kernels[:-1]:
        if await _run(standby, kernel_id, token, "") != repr(kernel_id):
            lost.append(kernel_id)
    after = await asyncio.to_thread(cluster.kernel_pod_uids)
    return {
        "n_items": len(kernels),
        "took_over": took - killed,
        "answers": answered - killed,
        "all_listed": listed - killed,
        "cell_again": cell - killed,
        "all_reattached": reattached - killed,
        "kernels_lost": len(lost) + len(pods - after),
        "pods_replaced": len(after - pods),
    }
