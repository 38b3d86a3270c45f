"""GPU use per kernel over the last minutes: memory and utilisation of each of this server's
kernels, sampled from the processes NVML reports on each GPU (process -> cgroup -> container ->
kernel), kept as a short history for the kernel's view and the panel's sparklines.

nvdashboard shows such numbers per device; here they are per kernel. The sampler costs one NVML
pass (the inventory's own reading, shared with the GPU panel) and one small /proc read per GPU
process, every ``interval`` seconds, on a thread of its own, and only while it is useful: while
someone looked at the numbers in the last ``look_seconds`` (the panel, a kernel's view), or while
one of the server's kernels holds a GPU. Without NVML (a static inventory, no driver) nothing is
sampled, and the report says why the numbers are unknown.

Which kernels to watch comes from the server (a callable, see :meth:`GPUUsage.start`): this module
knows no kernel manager, no HTTP and no engine client.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from traitlets import Float
from traitlets.config import LoggingConfigurable

from .inventory import GPUInventory, Inventory, container_of_pid


@dataclass(frozen=True)
class WatchedKernel:
    """One of the server's kernels, as the sampler needs it."""

    kernel_id: str
    container_id: str
    gpus: tuple[str, ...]  # UUIDs of the GPUs it holds (empty: none, or not known)
    started: float = 0.0  # unix time its container was launched (0: not known)


@dataclass(frozen=True)
class UsageSample:
    at: float  # unix time
    memory_used: int  # bytes, over all its GPUs
    utilization: int | None  # percent of its GPUs' SMs, averaged over them; None: not known


class GPUUsage(LoggingConfigurable):
    """The server's per-kernel GPU sampler and its history (owned by services.Services)."""

    interval = Float(
        5.0,
        config=True,
        help="""Seconds between two samples of the kernels' GPU use (per-kernel memory and
        utilisation in the kernel view and the panel). At least 0.1.""",
    )

    history_seconds = Float(
        600.0,
        config=True,
        help="""How much history of each kernel's GPU use is kept (and shown as a sparkline),
        in seconds.""",
    )

    look_seconds = Float(
        120.0,
        config=True,
        help="""Keep sampling this many seconds after someone last looked at the numbers (the
        panel, a kernel's view), even when no kernel holds a GPU. While a kernel holds one,
        sampling goes on regardless, so that its view has the last minutes when opened.""",
    )

    def __init__(self, inventory: GPUInventory, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inventory = inventory
        self._lock = threading.Lock()
        self._history: dict[str, deque[UsageSample]] = {}
        # kernel id -> (the GPUs it holds, since when it holds exactly those)
        self._held: dict[str, tuple[tuple[str, ...], float]] = {}
        self._last_look = -float("inf")
        self._last_sample = -float("inf")
        self._watched: Callable[[], list[WatchedKernel]] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()

    # ------------------------------------------------------------------ life cycle

    def start(self, watched: Callable[[], list[WatchedKernel]]) -> None:
        """Begin sampling the kernels ``watched()`` lists, on a thread of the sampler's own
        (``watched`` is called there: it must only read memory). Idempotent."""
        with self._lock:
            self._watched = watched
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="gpu-containers-usage", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop sampling (any thread; the sampler's thread ends after the pass under way)."""
        self._stop.set()
        self._wake.set()

    def looked(self) -> None:
        """Someone looks at the numbers now: sample (at once, if nothing was sampled lately) and
        for the next ``look_seconds``."""
        self._last_look = time.monotonic()
        if time.monotonic() - self._last_sample > self._every():
            self._wake.set()

    def _every(self) -> float:
        return max(0.1, self.interval)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                kernels = self._watched() if self._watched else []
                recent = time.monotonic() - self._last_look < self.look_seconds
                if kernels and (recent or any(k.gpus for k in kernels)):
                    self._sample(kernels)
                else:
                    self._forget_others(kernels)
            except RuntimeError:
                pass  # the kernels changed while they were listed: next time
            except Exception as e:  # never let one failed pass end the sampling
                self.log.warning("GPU use per kernel could not be sampled: %s", e)
            self._wake.wait(self._every())
            self._wake.clear()

    # ------------------------------------------------------------------ sampling

    def _sample(self, kernels: list[WatchedKernel]) -> None:
        """One pass (blocking: the sampler's thread): NVML's processes, mapped to the
        kernels."""
        inventory = self.inventory.read_sync()
        now = time.time()
        self._last_sample = time.monotonic()
        usage = usage_by_kernel(inventory, kernels)
        keep = max(2, int(self.history_seconds / self._every()) + 1)
        with self._lock:
            for kernel in kernels:
                held = self._held.get(kernel.kernel_id)
                holds = tuple(sorted(kernel.gpus))
                if holds and (held is None or held[0] != holds):
                    self._held[kernel.kernel_id] = (holds, kernel.started or now)
                if inventory.source != "nvml" or (
                    not kernel.gpus and kernel.kernel_id not in usage
                ):
                    continue  # unknown, or a CPU kernel: no sample
                memory, utilization = usage.get(kernel.kernel_id, (0, 0))
                history = self._history.get(kernel.kernel_id)
                if history is None or history.maxlen != keep:
                    history = self._history[kernel.kernel_id] = deque(history or (), maxlen=keep)
                history.append(UsageSample(now, memory, utilization))
        self._forget_others(kernels)

    def _forget_others(self, kernels: list[WatchedKernel]) -> None:
        live = {k.kernel_id for k in kernels}
        with self._lock:
            for kernel_id in set(self._history) - live:
                del self._history[kernel_id]
            for kernel_id in set(self._held) - live:
                del self._held[kernel_id]

    # ------------------------------------------------------------------ reading

    def report(self, kernel_id: str, gpus: tuple[str, ...], inventory: Inventory) -> dict[str, Any]:
        """One kernel's GPU use, for the REST API: the history (oldest first), since when it
        holds ``gpus`` (its GPUs now), their memory, and why the numbers are unknown if they are
        (from ``inventory``, the GPUs now)."""
        cutoff = time.time() - self.history_seconds
        with self._lock:
            samples = [s for s in self._history.get(kernel_id, ()) if s.at >= cutoff]
            held = self._held.get(kernel_id)
        since = held[1] if held is not None and gpus and held[0] == tuple(sorted(gpus)) else None
        known = inventory.source == "nvml"
        totals = [g.memory_total if (g := inventory.find(uuid)) else 0 for uuid in gpus]
        return {
            "source": inventory.source,
            "reason": unknown_reason(inventory),
            "interval": self._every(),
            "since": since,
            "memory_total": sum(totals) if known and totals and all(totals) else None,
            "samples": [
                {"at": s.at, "memory_used": s.memory_used, "utilization": s.utilization}
                for s in samples
            ]
            if known
            else [],
        }


def usage_by_kernel(
    inventory: Inventory, kernels: list[WatchedKernel]
) -> dict[str, tuple[int, int | None]]:
    """kernel id -> (GPU memory its processes use, their SM utilisation averaged over the
    kernel's GPUs), from the processes NVML reported (blocking: reads /proc)."""
    by_container = {k.container_id: k for k in kernels if k.container_id}
    memory: dict[str, int] = {}
    per_gpu: dict[str, dict[str, int]] = {}
    unknown: set[str] = set()
    for gpu in inventory.allocatable():
        for process in gpu.processes:
            kernel = by_container.get(container_of_pid(process.pid) or "")
            if kernel is None:
                continue
            kid = kernel.kernel_id
            memory[kid] = memory.get(kid, 0) + process.memory_used
            on_gpu = per_gpu.setdefault(kid, {})
            on_gpu.setdefault(gpu.uuid, 0)
            if process.sm_util is None:
                unknown.add(kid)
            else:
                on_gpu[gpu.uuid] += process.sm_util
    out: dict[str, tuple[int, int | None]] = {}
    for kernel in kernels:
        kid = kernel.kernel_id
        if kid not in memory:
            continue
        gpus = max(1, len(kernel.gpus) or len(per_gpu[kid]))
        busy = sum(min(100, v) for v in per_gpu[kid].values())
        out[kid] = (memory[kid], None if kid in unknown else round(busy / gpus))
    return out


def unknown_reason(inventory: Inventory) -> str:
    """Why per-kernel GPU use is not known, "" when it is."""
    if inventory.source == "nvml":
        return ""
    if inventory.source == "static":
        return (
            "This server's GPUs are declared by its administrator, not read from the NVIDIA "
            "driver, so their use per kernel is unknown."
        )
    return inventory.reason or "No GPUs are known on this host, so their use is unknown."
