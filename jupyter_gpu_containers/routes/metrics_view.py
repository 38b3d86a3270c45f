"""The Prometheus metrics of GPU sharing (``GET /gpu-containers/metrics``): read at each scrape from
the ledger, the queue, the reclaimer and the quotas. They name GPUs, never users; on a kernel
service they count every user together, so only its administrators read them (and Jupyter
Server's own ``/metrics``, service_routes.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..base.errors import ContainerKernelError
from ..gpus.allocator import Ledger
from ..gpus.inventory import Inventory
from ..services import Services
from .admin_actions_view import RELEASE, SHUTDOWN

# The wait-time histogram's buckets, in seconds: a lab's waits run from moments to an hour.
WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, float("inf"))


class SharingCollector:
    """The metrics of GPU sharing, read at each scrape (a prometheus_client custom collector)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.inventory: Inventory | None = None
        self.ledger: Ledger | None = None
        self.tickets: list[Any] = []
        self.quota: dict[str, Any] | None = None  # GPUQuota.totals(), None when unreadable
        self.admin_actions: dict[str, int] = {RELEASE: 0, SHUTDOWN: 0}

    def collect(self) -> Iterable[Any]:
        inventory, ledger = self.inventory, self.ledger
        prefix = "jupyter_gpu_containers"
        if inventory is not None:
            gpus = inventory.allocatable()
            total = GaugeMetricFamily(f"{prefix}_gpus", "GPUs this host allocates to kernels.")
            total.add_metric([], len(gpus))
            yield total
            held = GaugeMetricFamily(f"{prefix}_gpus_held", "GPUs held by at least one kernel.")
            per_gpu = GaugeMetricFamily(
                f"{prefix}_gpu_kernels", "Kernels holding each GPU.", labels=["gpu", "uuid"]
            )
            holdings = ledger.holdings if ledger is not None else {}
            held.add_metric([], sum(1 for g in gpus if holdings.get(g.uuid)))
            for g in gpus:
                per_gpu.add_metric([str(g.index), g.uuid], len(holdings.get(g.uuid, [])))
            yield held
            yield per_gpu
            kernels = GaugeMetricFamily(f"{prefix}_kernels_holding_gpus", "Kernels holding GPUs.")
            kernels.add_metric(
                [], len({h.kernel_id for held_by in holdings.values() for h in held_by})
            )
            yield kernels
        now = time.time()
        length = GaugeMetricFamily(
            f"{prefix}_queue_length", "Starts waiting for GPUs on this host."
        )
        length.add_metric([], len(self.tickets))
        yield length
        oldest = GaugeMetricFamily(
            f"{prefix}_queue_oldest_wait_seconds", "How long the longest-waiting start has waited."
        )
        oldest.add_metric([], max((now - t.arrived for t in self.tickets), default=0.0))
        yield oldest
        outcomes = CounterMetricFamily(
            f"{prefix}_gpu_waits",
            "Waits for GPUs in this process, by how they ended.",
            labels=["outcome"],
        )
        for outcome, count in self.services.queue.counts.items():
            outcomes.add_metric([outcome], count)
        yield outcomes
        counters = self.services.reclaim.counters()
        reclaims = CounterMetricFamily(
            f"{prefix}_reclaims", "Kernels whose idle GPUs were reclaimed."
        )
        reclaims.add_metric([], counters.get("reclaims", 0))
        yield reclaims
        warnings = CounterMetricFamily(
            f"{prefix}_reclaim_warnings", "Warnings of an idle kernel about to lose its GPUs."
        )
        warnings.add_metric([], counters.get("warnings", 0))
        yield warnings
        keeps = CounterMetricFamily(
            f"{prefix}_reclaim_keeps", "Warned kernels' GPUs kept at their users' word."
        )
        keeps.add_metric([], counters.get("keeps", 0))
        yield keeps
        actions = CounterMetricFamily(
            f"{prefix}_admin_actions", "Admin releases and shutdowns.", labels=["action"]
        )
        for action, count in self.admin_actions.items():
            actions.add_metric([action], count)
        yield actions
        if self.quota is not None:
            yield from self._quota_metrics(prefix, self.quota)

    @staticmethod
    def _quota_metrics(prefix: str, totals: dict[str, Any]) -> Iterable[Any]:
        period = str(totals["period"])
        used = GaugeMetricFamily(
            f"{prefix}_gpu_hours_used",
            "GPU-hours used on this host in the current quota period (GPUQuota.period), all "
            "users together.",
            labels=["period"],
        )
        used.add_metric([period], float(totals["used_hours"]))
        yield used
        groups = GaugeMetricFamily(
            f"{prefix}_group_gpu_hours_used",
            "GPU-hours used in the current quota period by each group of GPUQuota.user_groups.",
            labels=["period", "group"],
        )
        for group, hours in sorted(totals["groups"].items()):
            groups.add_metric([period, group], float(hours))
        yield groups
        used_up = GaugeMetricFamily(
            f"{prefix}_quota_users_used_up",
            "Users whose GPU-hour quota (their own or their group's) is used up now.",
        )
        used_up.add_metric([], int(totals["used_up"]))
        yield used_up


class SharingMetrics:
    """A registry of this server's own (not prometheus_client's global one, which the server's
    own /metrics serves): the collector above and the histogram of wait times."""

    def __init__(self, services: Services) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = SharingCollector(services)
        self.registry.register(self.collector)
        self.waits = Histogram(
            "jupyter_gpu_containers_gpu_wait_seconds",
            "Seconds a start waited until it was given its GPUs, in this process (cancelled, "
            "timed-out and failed waits are counted in jupyter_gpu_containers_gpu_waits).",
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self._seen_until = 0.0

    async def render(self, services: Services) -> bytes:
        """The metrics now, in Prometheus' text format."""
        collector = self.collector
        try:
            collector.inventory = await services.inventory.read()
            from ..gpus.allocator import current_ledger

            collector.ledger = await current_ledger(services.backend, services.state)
        except ContainerKernelError:
            collector.ledger = None  # no engine: holders unknown; the rest still answers
        queue = services.queue
        collector.tickets = await queue.snapshot(services.state)
        try:
            collector.quota = await services.quota.totals()
        except ContainerKernelError:
            collector.quota = None  # no engine: the live holdings are unknown
        # The queue keeps its last waits (ended, seconds, outcome): the granted ones not yet
        # counted go in now. A wait that ended otherwise never got GPUs: its length says
        # nothing of how long GPUs take to come, and the outcome counter has it.
        recent = list(queue.recent_waits)
        for ended, seconds, *outcome in recent:
            if ended > self._seen_until and outcome[:1] in ([], ["granted"]):
                self.waits.observe(seconds)
        if recent:
            self._seen_until = max(self._seen_until, max(wait[0] for wait in recent))
        return generate_latest(self.registry)
