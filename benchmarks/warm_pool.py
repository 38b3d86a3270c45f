"""Section 6: the warm pool (WarmPool.size), measured against a cold start of the same image with
the same options, through the same REST API.

The pool serves only kernels that get no GPUs (GPU visibility is fixed when a container is
created), so both variants are CPU kernels: the image under two tags, one kept warm. Before each
warm launch the benchmark waits (untimed) until the pool is full again, so every warm sample is
a handover; a launch the pool did not serve is counted as a miss. The refill after a handover
(the pool starting its next container in the background) is timed too.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .bench import Bench
from .harness import Stats

COLD = "cold start, CPU kernel (no pool for this image)"
WARM = "warm pool handover, CPU kernel"


def server_config(bench: Bench) -> dict[str, Any]:
    """One warm container, of the pool tag only (every other tag starts cold)."""
    return {"WarmPool": {"size": 1, "max_total": 1, "images": [f"{bench.repo}/pool:*"]}}


async def run(bench: Bench, runs: int) -> dict[str, Any]:
    server = bench.server
    assert server is not None
    pool_ref = f"{bench.repo}/pool:1"
    cold_name = bench.kernel(f"{bench.repo}/cpu:1")
    warm_name = bench.kernel(pool_ref)
    stats = {COLD: Stats(), WARM: Stats()}
    handover = Stats()  # the provisioner's handover phase alone
    refill = Stats()
    misses = 0
    for round_ in range(runs + 1):  # the first round warms up, uncounted
        counted = round_ > 0
        for name in (COLD, WARM) if round_ % 2 else (WARM, COLD):
            if name == WARM:
                await _until_ready(bench, pool_ref)
            started = time.monotonic()
            kernel_id, _, replied = await server.start_kernel(
                warm_name if name == WARM else cold_name
            )
            elapsed = replied - started
            stamps = (await server.call("GET", f"bench/launch/{kernel_id}"))["stamps"]
            if name == WARM:
                if "handover" not in stamps:
                    misses += counted
                elif counted:
                    # Its phases: take a matching container ("handover"), then the silent
                    # execute and the claim record ("ready").
                    handover.add(stamps["ready"] - stamps["image"])
                    refill.add(await _until_ready(bench, pool_ref))
            if counted:
                stats[name].add(elapsed)
            await server.delete_kernel(kernel_id)
    cold, warm = stats[COLD], stats[WARM]
    return {
        "runs": runs,
        "description": (
            "From `POST /api/kernels` to the first `kernel_info_reply`, for a CPU kernel of the "
            "same image with the same options: started cold, or handed a warm container "
            f"(WarmPool.size = 1), {runs} runs each, interleaved. Handover is the "
            "provisioner's own phase: take the container, rewrite the launch to its connection, "
            "move the kernel to the notebook's directory and session, write the claim record. "
            "Refill: until the pool holds a ready container again."
        ),
        "rows": [
            {"variant": COLD, **cold.to_dict()},
            {"variant": WARM, **warm.to_dict()},
            {"variant": "handover phase (in the provisioner)", **handover.to_dict()},
            {"variant": "refill after a handover (background)", **refill.to_dict()},
        ],
        "misses": misses,
        "reading": (
            f"A warm handover answers in {warm.p50 * 1000:.0f} ms at the median against "
            f"{cold.p50 * 1000:.0f} ms cold ({cold.p50 / warm.p50:.1f}× faster); the handover "
            f"itself takes {handover.p50 * 1000:.0f} ms (p95 {handover.p95 * 1000:.0f} ms). "
            f"Launches the pool did not serve: {misses}. The pool is full again "
            f"{refill.p50 * 1000:.0f} ms after a handover, so kernels started closer together "
            "than that start cold. Only CPU kernels can be served (see benchmarks/README.md)."
        ),
    }


async def _until_ready(bench: Bench, ref: str, timeout: float = 60) -> float:
    """Until the pool holds a ready container of ``ref``; returns how long that took."""
    server = bench.server
    assert server is not None
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if (await server.call("GET", f"bench/pool?ref={ref}"))["ready"]:
            return time.monotonic() - started
        await asyncio.sleep(0.01)
    raise RuntimeError(f"the warm pool held no ready container of {ref} after {timeout:.0f} s")
