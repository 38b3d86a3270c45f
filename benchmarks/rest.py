"""Section 4: how fast the panel's endpoints answer as the host's image count grows, and what one
NVML poll costs.

Cheap images are more tags of the benchmark's image (``docker tag``: instant, no disk), added on
top of the images the host already has: 10, then 50, then 200. Each tag is a catalog row and a
kernel spec, which is where the per-image cost of these endpoints lies; they share one image id,
so the readiness probe (cached per image id, measured elsewhere) runs once, not per tag.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from jupyter_gpu_containers.gpus.inventory import GPUInventory

from .bench import Bench
from .harness import REPO, Stats

TIERS = (10, 50, 200)
ENDPOINTS = (
    "gpu-containers/images",
    "gpu-containers/gpus",
    "gpu-containers/allocations",
    "api/kernelspecs",
)


async def run(bench: Bench, requests: int, tiers: tuple[int, ...] = TIERS) -> dict[str, Any]:
    server = bench.server
    assert server is not None
    rows = []
    added = 0
    for tier in tiers:
        for i in range(added, tier):
            await asyncio.to_thread(bench.tag, f"cheap-{i:03d}")
        added = tier
        await _settle(bench, tier)
        # Warm: probes of images the server has not seen yet run (and finish) here, not below.
        listed = await server.call("GET", "gpu-containers/images?wait=1", timeout=600)
        for endpoint in ENDPOINTS:
            stat = Stats()
            for _ in range(requests):
                started = time.monotonic()
                await server.call("GET", endpoint)
                stat.add(time.monotonic() - started)
            rows.append(
                {
                    "cheap_images": tier,
                    "catalog_rows": len(listed["images"]),
                    "endpoint": f"/{endpoint}",
                    **stat.to_dict(),
                }
            )
    return {"rows": rows, "requests": requests, "nvml_poll": nvml_poll()}


async def _settle(bench: Bench, tier: int, timeout: float = 120) -> None:
    """Until the server's kernel specs include every cheap tag (it follows the engine's events)."""
    server = bench.server
    assert server is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        specs = (await server.call("GET", "api/kernelspecs"))["kernelspecs"]
        if sum(1 for name in specs if "cheap-" in name) >= tier:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the server did not list {tier} cheap images within {timeout:.0f} s")


def nvml_poll(polls: int = 500) -> dict[str, Any]:
    """One read of the GPU inventory through the NVML double (24 GPUs), with the cache off:
    the cost of the code above NVML (a real driver's calls take longer; see RESULTS.md)."""
    if str(REPO / "tests") not in sys.path:
        sys.path.append(str(REPO / "tests"))  # the double lives with the tests
    import benchmarks.nvml_box as box

    inventory = GPUInventory(source="nvml", nvml_module=box.__name__, cache_seconds=0)
    inventory.read_sync()
    stat = Stats()
    for _ in range(polls):
        started = time.perf_counter()
        inventory.read_sync()
        stat.add(time.perf_counter() - started)
    return {"gpus": box.GPU_COUNT, "polls": polls, **stat.to_dict()}
