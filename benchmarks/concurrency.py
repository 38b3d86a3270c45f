"""Section 3: 5, 10 and 20 kernels started at once through the REST API, against the same number
of bare containers started at once; and section 4's event-loop lag, sampled inside the server
during the 10-kernel launch.

Each kernel of ours asks for one GPU (when the engine can attach GPUs), so the launches also
queue on the allocator's host lock, as they do on a real GPU host.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .bench import DEFAULT_VARIANT, Bench
from .harness import Stats, percentile

SIZES = (5, 10, 20)


async def run(bench: Bench, rounds: int, sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    server = bench.server
    assert server is not None
    name = bench.kernel(bench.variant_ref(*DEFAULT_VARIANT))
    rows: list[dict[str, Any]] = []
    lag: list[float] = []
    for n in sizes:
        totals = {"ours": Stats(), "bare": Stats()}
        each = {"ours": Stats(), "bare": Stats()}
        # Interleaved, round by round: a machine that slows down or speeds up meanwhile (a
        # shared host's neighbours) weighs on both sides alike.
        for _ in range(rounds):
            for what in ("ours", "bare"):
                if what == "ours":
                    await server.call("GET", "bench/lag")  # resets the loop-lag samples
                    total, times, failures = await _ours(bench, name, n)
                    if n == 10:
                        lag.extend((await server.call("GET", "bench/lag"))["lags"])
                else:
                    total, times, failures = await _bare(bench, n)
                totals[what].add(total)
                for seconds in times:
                    each[what].add(seconds)
                each[what].failures += failures
        for what in ("ours", "bare"):
            rows.append(
                {
                    "kernels": n,
                    "what": what,
                    "total_p50": totals[what].p50,
                    "per_kernel_p50": each[what].p50,
                    "per_kernel_p95": each[what].p95,
                    "failures": each[what].failures,
                    "rounds": rounds,
                }
            )
    return {
        "rows": rows,
        "gpus_per_kernel": 1 if bench.gpus else 0,
        "loop_lag": _lag_summary(lag),
    }


async def _ours(bench: Bench, name: str, n: int) -> tuple[float, list[float], int]:
    server = bench.server
    assert server is not None

    async def start() -> str:
        kernel_id, _, _ = await server.start_kernel(name)
        return kernel_id

    return await _at_once(n, start, server.delete_kernel)


async def _bare(bench: Bench, n: int) -> tuple[float, list[float], int]:
    loop = asyncio.get_running_loop()

    async def remove(container_id: str) -> None:
        await loop.run_in_executor(bench.bare.executor, bench.bare.remove, container_id)

    return await _at_once(n, lambda: bench.bare.start(*DEFAULT_VARIANT), remove)


async def _at_once(
    n: int, start: Callable[[], Awaitable[str]], remove: Callable[[str], Awaitable[None]]
) -> tuple[float, list[float], int]:
    """Start n at once; the total until the last answered, each one's time from the common
    start, and how many failed. Removes what started (untimed)."""
    started = time.monotonic()

    async def one() -> tuple[str, float]:
        handle = await start()
        return handle, time.monotonic() - started

    results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    total = time.monotonic() - started
    ok = [r for r in results if isinstance(r, tuple)]
    for r in results:
        if isinstance(r, BaseException):
            print(f"[benchmarks] one of {n} started at once failed: {r}")
    await asyncio.gather(*(remove(handle) for handle, _ in ok))
    return total, [seconds for _, seconds in ok], n - len(ok)


def _lag_summary(lags: list[float]) -> dict[str, Any]:
    return {
        "samples": len(lags),
        "p50": percentile(lags, 0.5),
        "p95": percentile(lags, 0.95),
        "max": max(lags) if lags else float("nan"),
        "over_100ms": sum(1 for x in lags if x > 0.1),
    }
