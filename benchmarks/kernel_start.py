"""Sections 1 and 2: how long from ``POST /api/kernels`` to the first ``kernel_info_reply``, side
by side with the physical floor and the alternatives, and where that time goes.

Every variant runs once per round, rounds repeat, and the order rotates from round to round, so
that machine noise (and any warming of caches) hits every variant alike:

- ``docker run --rm IMAGE true`` (the Docker CLI): a container alone;
- floor, per transport and network: a bare container running ipykernel, started through the
  engine's API and timed to its first reply (harness.BareKernels);
- ours, per transport and network: a real Jupyter server with this project, through its REST API
  and the kernel's websocket, exactly as JupyterLab starts a kernel; with one GPU from the
  benchmark's NVML double when the engine can attach one;
- a local ipykernel (no container) through jupyter_client.

The phases of ours come from the provisioner's own stamps (server_probe.LaunchHandler), on the
same clock as the client's.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

from jupyter_client.manager import AsyncKernelManager

from .bench import DEFAULT_VARIANT, VARIANTS, Bench
from .harness import LABEL, Stats, interleaved, kernel_info_zmq, shell_url

PHASES = [
    ("server", "request to provisioner: HTTP, spec lookup, kernel manager"),
    ("prepare", "prepare: checks, private directory, connection files"),
    ("image", "image: inspect, policy, probe cache"),
    ("gpus", "gpus: request, inventory, allocation under the host lock"),
    ("create", "create: the engine creates the container"),
    ("start", "start: the engine starts it"),
    ("ready", "ready: ipykernel boots and answers the provisioner"),
    ("reply", "server after launch: post-launch, session, REST answer"),
    ("first_reply", "first reply: websocket connect, kernel_info round trip"),
]

# The phases inside the provisioner, from pre_launch to the kernel's first answer.
PROVISIONER = ("prepare", "image", "gpus", "create", "start", "ready")


def label(kind: str, transport: str, network: str) -> str:
    return f"{kind}: {transport}, network {network}"


async def run(bench: Bench, runs: int, warmup: bool = True) -> dict[str, Any]:
    server = bench.server
    assert server is not None
    variants: dict[str, Callable[[], Awaitable[float]]] = {
        "docker run --rm IMAGE true": lambda: docker_true(bench),
    }
    for transport, network in VARIANTS:
        variants[label("floor", transport, network)] = _floor(bench, transport, network)
    phases: list[dict[str, float]] = []
    for transport, network in VARIANTS:
        record = phases if (transport, network) == DEFAULT_VARIANT else None
        variants[label("ours", transport, network)] = _ours(bench, transport, network, record)
    variants["local ipykernel (no container), jupyter_client"] = local_ipykernel
    # The same REST path to a kernel without a container: what the Jupyter server itself costs.
    variants[LOCAL_REST] = _ours_local(bench)
    stats = await interleaved(variants, runs, after_warmup=phases.clear, warmup=warmup)
    rows = []
    for name, stat in stats.items():
        row: dict[str, Any] = {"variant": name, **stat.to_dict()}
        for transport, network in VARIANTS:
            if name == label("ours", transport, network):
                floor = stats[label("floor", transport, network)]
                row["ratio_p50"] = stat.p50 / floor.p50
                row["ratio_min"] = stat.min / floor.min
        rows.append(row)
    return {
        "runs": runs,
        "gpus_per_kernel": 1 if bench.gpus else 0,
        "rows": rows,
        "phases": phase_rows(phases),
        "spec_lookup_median": (
            await server.call(
                "GET",
                f"bench/spec-lookup?name={bench.kernel(bench.variant_ref(*DEFAULT_VARIANT))}",
            )
        )["median"],
    }


def phase_rows(samples: list[dict[str, float]]) -> list[dict[str, Any]]:
    rows = []
    for key, description in PHASES:
        stat = Stats([s[key] for s in samples if key in s])
        rows.append({"phase": key, "description": description, **stat.to_dict()})
    provisioner = Stats([sum(s[k] for k in PROVISIONER if k in s) for s in samples])
    rows.append(
        {
            "phase": "provisioner",
            "description": "the provisioner alone: prepare to ready",
            **provisioner.to_dict(),
        }
    )
    total = Stats([sum(s.values()) for s in samples])
    rows.append({"phase": "total", "description": "total", **total.to_dict()})
    return rows


async def docker_true(bench: Bench) -> float:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        "docker", "run", "--rm", "--label", f"{LABEL}={bench.run_id}", bench.image, "true"
    )
    if await proc.wait() != 0:
        raise RuntimeError("docker run --rm IMAGE true failed")
    return time.monotonic() - started


def _floor(bench: Bench, transport: str, network: str) -> Callable[[], Awaitable[float]]:
    async def measure() -> float:
        started = time.monotonic()
        container_id = await bench.bare.start(transport, network)
        elapsed = time.monotonic() - started
        await asyncio.to_thread(bench.bare.remove, container_id)
        return elapsed

    return measure


def _ours(
    bench: Bench, transport: str, network: str, phases: list[dict[str, float]] | None
) -> Callable[[], Awaitable[float]]:
    name = bench.kernel(bench.variant_ref(transport, network))

    async def measure() -> float:
        server = bench.server
        assert server is not None
        started = time.monotonic()
        kernel_id, answered, replied = await server.start_kernel(name)
        try:
            if phases is not None:
                stamps = (await server.call("GET", f"bench/launch/{kernel_id}"))["stamps"]
                phases.append(split(started, stamps, answered, replied))
        finally:
            await server.delete_kernel(kernel_id)
        return replied - started

    return measure


LOCAL_REST = "local ipykernel (no container), same server's REST API"


def _ours_local(bench: Bench) -> Callable[[], Awaitable[float]]:
    async def measure() -> float:
        server = bench.server
        assert server is not None
        started = time.monotonic()
        kernel_id, _, replied = await server.start_kernel("python3")
        await server.delete_kernel(kernel_id)
        return replied - started

    return measure


def split(
    started: float, stamps: dict[str, float], answered: float, replied: float
) -> dict[str, float]:
    """Durations of each phase, from the client's and the provisioner's stamps (one clock)."""
    out = {"server": stamps["pre_launch"] - started}
    names = list(stamps)
    for previous, phase in zip(names, names[1:], strict=False):
        out[phase] = stamps[phase] - stamps[previous]
    out["reply"] = answered - stamps[names[-1]]
    out["first_reply"] = replied - answered
    return out


async def local_ipykernel() -> float:
    km = AsyncKernelManager(kernel_name="python3")
    started = time.monotonic()
    await km.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=os.getcwd())
    try:
        info: dict[str, Any] = dict(km.get_connection_info())
        key = info["key"]
        await kernel_info_zmq(shell_url(info), key.decode() if isinstance(key, bytes) else key)
        return time.monotonic() - started
    finally:
        await km.shutdown_kernel(now=True)
