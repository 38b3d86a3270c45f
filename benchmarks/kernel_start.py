"""Kernel start latency, side by side in one run: ours (both transports) against the floor.

    python -m benchmarks.kernel_start [--image IMAGE] [--runs N]

Measures, on the same image and the same engine, interleaved round by round so that machine
noise hits every variant alike:

- ``docker run --rm IMAGE true``: the cost of a container alone;
- floor: a bare container (no Jupyter in between) started with ipykernel, timed to its first
  kernel_info_reply, over ipc sockets in a bind-mounted directory;
- ours (ipc) and ours (tcp): jupyter_client's AsyncKernelManager with this project's kernel spec
  and provisioner, timed from start_kernel to the first kernel_info_reply.

Prints a Markdown table with p50, p95 and min, and each variant's p50 as a ratio over the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

import zmq
import zmq.asyncio
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.session import Session
from traitlets.config import Config

from jupyter_gpu_containers.kernelspecs import ContainerKernelSpecManager, kernel_name_for

LABEL = "org.jupyter.gpu-containers.benchmark=kernel-start"


async def kernel_info(url: str, key: bytes, timeout: float = 60.0) -> None:
    session = Session(key=key)
    sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(url)
    try:
        await sock.send_multipart(session.serialize(session.msg("kernel_info_request", {})))
        if not await sock.poll(int(timeout * 1000)):
            raise TimeoutError("no kernel_info_reply")
        await sock.recv_multipart()
    finally:
        sock.close(linger=0)


async def docker_true(image: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "docker", "run", "--rm", "--label", LABEL, image, "true"
    )
    assert await proc.wait() == 0


async def floor(image: str) -> float:
    """A bare `docker run` of ipykernel, to its first reply (the physical floor)."""
    with tempfile.TemporaryDirectory(prefix="jgc-bench-") as tmp:
        key = uuid.uuid4().hex
        info = {
            "transport": "ipc",
            "ip": "/k/kernel-ipc",
            "key": key,
            "signature_scheme": "hmac-sha256",
            "shell_port": 1,
            "iopub_port": 2,
            "stdin_port": 3,
            "control_port": 4,
            "hb_port": 5,
            "kernel_name": "",
        }
        with open(os.path.join(tmp, "kernel.json"), "w") as f:
            json.dump(info, f)
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            "docker",
            "run",
            "-d",
            "--init",
            "--label",
            LABEL,
            "-v",
            f"{tmp}:/k",
            image,
            "python3",
            "-m",
            "ipykernel_launcher",
            "-f",
            "/k/kernel.json",
            stdout=subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        await kernel_info(f"ipc://{tmp}/kernel-ipc-1", key.encode())
        elapsed = time.perf_counter() - started
        subprocess.run(
            ["docker", "rm", "-f", out.decode().strip()], capture_output=True, check=True
        )
        return elapsed


def ours(image: str, transport: str) -> Callable[[], Awaitable[float]]:
    ksm = ContainerKernelSpecManager()
    config = Config()
    config.ContainerProvisioner.transport = transport
    config.ContainerProvisioner.extra_labels = dict([LABEL.split("=")])
    # Benchmark hosts often run this as root; kernels as root are refused unless allowed.
    config.ContainerPolicy.allow_root = os.getuid() == 0

    async def run() -> float:
        km = AsyncKernelManager(
            kernel_name=kernel_name_for(image), kernel_spec_manager=ksm, config=config
        )
        started = time.perf_counter()
        await km.start_kernel(cwd=os.getcwd())
        info = km.get_connection_info()
        if info["transport"] == "ipc":
            url = f"ipc://{info['ip']}-{info['shell_port']}"
        else:
            url = f"tcp://{info['ip']}:{info['shell_port']}"
        await kernel_info(url, info["key"])
        elapsed = time.perf_counter() - started
        await km.shutdown_kernel(now=True)
        return elapsed

    return run


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    value = await fn()
    return value if isinstance(value, float) else time.perf_counter() - started


def summary(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95, ordered[0]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="jgc/debian-ipykernel:bookworm")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    variants: dict[str, Callable[[], Awaitable[object]]] = {
        "docker run --rm IMAGE true": lambda: docker_true(args.image),
        "floor: bare docker run + ipykernel (ipc)": lambda: floor(args.image),
        "ours, ipc transport": ours(args.image, "ipc"),
        "ours, tcp transport (127.0.0.1)": ours(args.image, "tcp"),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():  # one warm-up each, not counted
        await timed(fn)
    for _ in range(args.runs):
        for name, fn in variants.items():
            samples[name].append(await timed(fn))
    floor_p50 = summary(samples["floor: bare docker run + ipykernel (ipc)"])[0]
    server = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True
    ).stdout.strip()
    print(f"Kernel start, image {args.image}, {args.runs} runs each, interleaved.")
    print(
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.node()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, Docker engine {server}.\n"
    )
    print("| variant | p50 (s) | p95 (s) | min (s) | p50 / floor |")
    print("|---|---|---|---|---|")
    for name, values in samples.items():
        p50, p95, low = summary(values)
        print(f"| {name} | {p50:.3f} | {p95:.3f} | {low:.3f} | {p50 / floor_p50:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
