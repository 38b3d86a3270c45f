"""Section 5: shutting a kernel down (until its container is gone) and restarting it (until the
new kernel answers), against a bare container removed with ``docker rm -f`` and replaced by a
fresh one.

Ours shuts down politely: a shutdown_request to the kernel, its exit, then the container's
removal; a restart does the same and starts a fresh container with the same GPUs and ports.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from jupyter_gpu_containers.base import labels as L

from .bench import DEFAULT_VARIANT, Bench
from .harness import Stats


async def run(bench: Bench, runs: int) -> dict[str, Any]:
    server = bench.server
    assert server is not None
    name = bench.kernel(bench.variant_ref(*DEFAULT_VARIANT))
    stats = {
        "ours: restart (POST …/restart to first reply)": Stats(),
        "ours: shutdown (DELETE to container removed)": Stats(),
        "bare: replace (docker rm -f, new container to first reply)": Stats(),
        "bare: docker rm -f": Stats(),
    }
    restart, shutdown, replace, remove = stats.values()
    for _ in range(runs):
        kernel_id, _, _ = await server.start_kernel(name)
        started = time.monotonic()
        await server.call("POST", f"api/kernels/{kernel_id}/restart")
        await server.kernel_info(kernel_id)
        restart.add(time.monotonic() - started)

        started = time.monotonic()
        await server.delete_kernel(kernel_id)
        await _until_removed(bench, kernel_id)
        shutdown.add(time.monotonic() - started)

        container_id = await bench.bare.start(*DEFAULT_VARIANT)
        started = time.monotonic()
        await asyncio.to_thread(bench.bare.remove, container_id)
        container_id = await bench.bare.start(*DEFAULT_VARIANT)
        replace.add(time.monotonic() - started)

        started = time.monotonic()
        await asyncio.to_thread(bench.bare.remove, container_id)
        remove.add(time.monotonic() - started)
    return {"runs": runs, "rows": [{"what": k, **v.to_dict()} for k, v in stats.items()]}


async def _until_removed(bench: Bench, kernel_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = await asyncio.to_thread(
            bench.client.containers.list,
            all=True,
            filters={"label": f"{L.KERNEL_ID}={kernel_id}"},
        )
        if not left:
            return
        await asyncio.sleep(0.02)
    raise RuntimeError(f"the container of kernel {kernel_id} was not removed within {timeout} s")
