"""Who holds which GPU, for the REST API: the inventory joined with the label ledger, and each
kernel's GPU memory from the processes NVML reports (process -> cgroup -> container)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from .allocator import GPUAllocator, GPURequest, Holding, Ledger
from .inventory import GPU, Inventory, container_of_pid


def _memory_by_container(gpus: Iterable[GPU]) -> dict[tuple[str, str], int]:
    """(GPU UUID, container id) -> bytes, from the GPU processes NVML reported."""
    usage: dict[tuple[str, str], int] = {}
    for gpu in gpus:
        for process in gpu.processes:
            container = container_of_pid(process.pid)
            if container:
                key = (gpu.uuid, container)
                usage[key] = usage.get(key, 0) + process.memory_used
    return usage


def _holder(h: Holding, mine: bool, show_others: bool, memory: int | None) -> dict[str, Any]:
    visible = mine or show_others
    return {
        "mine": mine,
        # Another user's kernel id is never shown: it would let them be reached through the API.
        "kernel_id": h.kernel_id if mine else "",
        "user": h.user if visible else "",
        "notebook": h.notebook if visible else "",
        "image": h.image if visible else "",
        "since": h.created,
        "memory_used": memory,
    }


async def gpu_report(
    inventory: Inventory,
    ledger: Ledger,
    *,
    uid: str,
    show_others: bool,
    allocator: GPUAllocator,
    engine_error: str = "",
    own_kernels_only: bool = False,
) -> dict[str, Any]:
    """The GPUs and their holders. ``engine_error``: why the holders are unknown (no engine).
    ``own_kernels_only``: the ledger is the user's own kernels' (StateDir.per_user)."""
    devices = inventory.allocatable()
    memory = (
        await asyncio.to_thread(_memory_by_container, devices) if inventory.source == "nvml" else {}
    )
    rows = []
    for gpu in devices:
        holders = [
            _holder(h, h.uid == uid, show_others, memory.get((gpu.uuid, h.container_id)))
            for h in ledger.holdings.get(gpu.uuid, [])
        ]
        rows.append({**gpu.to_dict(), "holders": holders})
    return {
        "source": inventory.source,
        "reason": inventory.reason,
        "driver_version": inventory.driver_version,
        "cuda_driver_version": inventory.cuda_driver_version,
        "policy": allocator.policy,
        "max_kernels_per_gpu": allocator.max_kernels_per_gpu if allocator.policy == "shared" else 1,
        "max_gpus_per_user": allocator.max_gpus_per_user,
        "gpus": rows,
        "engine_error": engine_error,
        "ledger_scope": "user" if own_kernels_only else "host",
    }


def my_allocations(inventory: Inventory, ledger: Ledger, uid: str) -> list[dict[str, Any]]:
    """This user's kernels that hold GPUs, one entry per kernel."""
    by_kernel: dict[str, dict[str, Any]] = {}
    for uuid, holders in ledger.holdings.items():
        gpu = inventory.find(uuid)
        for h in holders:
            if h.uid != uid:
                continue
            entry = by_kernel.setdefault(
                h.kernel_id,
                {
                    "kernel_id": h.kernel_id,
                    "notebook": h.notebook,
                    "image": h.image,
                    "since": h.created,
                    "server_id": h.server_id,
                    "gpus": [],
                },
            )
            entry["gpus"].append({"uuid": uuid, "index": gpu.index if gpu else None})
    for entry in by_kernel.values():
        entry["gpus"].sort(key=lambda g: str(g["index"]))
    return sorted(by_kernel.values(), key=lambda e: e["since"])


def kernel_gpus(inventory: Inventory, ledger: Ledger, uid: str, kernel_id: str) -> list[Any]:
    """The GPUs one of this user's kernels holds now, as my_allocations lists them."""
    for entry in my_allocations(inventory, ledger, uid):
        if entry["kernel_id"] == kernel_id:
            return list(entry["gpus"])
    return []


def preflight(
    allocator: GPUAllocator,
    inventory: Inventory,
    ledger: Ledger,
    request: GPURequest,
    kernel_id: str,
    *,
    uid: str,
    show_others: bool = False,
) -> list[GPU]:
    """Would this request be granted now to ``uid``'s kernel? Raises the same sentence a launch
    would, so a running kernel is not restarted into a request that cannot be met."""
    return allocator.choose(
        inventory,
        ledger,
        request,
        kernel_id=kernel_id,
        uid=uid,
        show_others=show_others,
    )
