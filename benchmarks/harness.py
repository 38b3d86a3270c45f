"""What every benchmark section shares: statistics, the machine's description, bare containers
(the floor), a kernel_info round trip over ZMQ, and the run's container label.

Benchmarks talk to Docker directly through docker-py: the floor must not go through the project's
own engine module, whose cost is part of what is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import docker
import zmq
import zmq.asyncio
from jupyter_client.session import Session

REPO = Path(__file__).resolve().parent.parent
# Every container a benchmark starts carries this label (value: the run's id), so that the run
# removes exactly its own containers at the end, even after a failure.
LABEL = "org.jupyter.gpu-containers.benchmark"


@dataclass
class Stats:
    """p50, p95 and min of a sample, in seconds; failures are counted, not timed."""

    samples: list[float] = field(default_factory=list)
    failures: int = 0

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    @property
    def p50(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def p95(self) -> float:
        return percentile(self.samples, 0.95)

    @property
    def min(self) -> float:
        return min(self.samples) if self.samples else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "p50": self.p50,
            "p95": self.p95,
            "min": self.min,
            "n": len(self.samples),
            "failures": self.failures,
        }


async def interleaved(
    variants: dict[str, Callable[[], Awaitable[float]]],
    runs: int,
    after_warmup: Callable[[], None] | None = None,
    warmup: bool = True,
) -> dict[str, Stats]:
    """Each variant once per round, ``runs`` rounds after one uncounted warm-up each (none in a
    quick run, whose numbers mean nothing anyway), the order rotating from round to round, so
    that machine noise (and any warming of caches) hits every variant alike. A failure is
    counted and said, and the run goes on."""
    stats = {name: Stats() for name in variants}
    names = list(variants)
    for name in names if warmup else ():
        await variants[name]()
    if after_warmup is not None:
        after_warmup()
    for round_ in range(runs):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            try:
                stats[name].add(await variants[name]())
            except Exception as e:
                stats[name].failures += 1
                print(f"[benchmarks] {name} failed: {e}")
    return stats


def percentile(samples: list[float], q: float) -> float:
    """The nearest-rank percentile (no interpolation: with 10 runs, p95 is the worst but one)."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def free_port() -> int:
    return free_ports(1)[0]


# A kernel's five channels, as its connection file names their ports.
CHANNELS = ("shell", "iopub", "stdin", "control", "hb")


def free_ports(count: int) -> list[int]:
    """``count`` different free ports, all bound at once before any is given back: ports asked
    for one after the other may repeat (the kernel would bind two channels to one port, or, over
    ipc, one channel's socket file would replace another's, and its first reply never come; one
    kernel in a thousand on Linux, measured)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def kernel_ports() -> dict[str, int]:
    """A kernel's five ports, by channel (``shell_port``...), all different."""
    return {f"{name}_port": port for name, port in zip(CHANNELS, free_ports(5), strict=True)}


def docker_client() -> docker.DockerClient:
    return docker.from_env(timeout=120)


def remove_labelled(client: docker.DockerClient, run_id: str) -> int:
    """Remove every container of this run (blocking)."""
    gone = 0
    for container in client.containers.list(all=True, filters={"label": f"{LABEL}={run_id}"}):
        try:
            container.remove(force=True)
            gone += 1
        except docker.errors.NotFound:
            pass
    return gone


# ---------------------------------------------------------------- kernel_info over ZMQ


async def kernel_info_zmq(url: str, key: str, timeout: float = 60.0) -> None:
    """One kernel_info_request on the shell channel at ``url``, until its reply."""
    session = Session(key=key.encode())
    sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    # As the provisioner does: retry the connection to a socket not bound yet every 5 ms, not
    # ZMQ's default 100 ms, so that the floor is not late by up to 100 ms (the floor is the
    # kernel's first possible reply, not a client's retry interval).
    sock.reconnect_ivl = 5
    sock.connect(url)
    try:
        request = session.msg("kernel_info_request", {})
        await sock.send_multipart(session.serialize(request))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not await sock.poll(int(left * 1000)):
                raise TimeoutError(f"no kernel_info_reply from {url} within {timeout:.0f} s")
            _, parts = session.feed_identities(await sock.recv_multipart())
            reply = session.deserialize(parts)
            if reply["parent_header"].get("msg_id") == request["header"]["msg_id"]:
                return
    finally:
        sock.close(linger=0)


def shell_url(info: dict[str, Any]) -> str:
    if info["transport"] == "ipc":
        return f"ipc://{info['ip']}-{info['shell_port']}"
    return f"tcp://{info['ip']}:{info['shell_port']}"


# ---------------------------------------------------------------- the floor: a bare container


class BareKernels:
    """ipykernel in a bare container of the image, started with the engine's API (create +
    start, as `docker run -d` does, without the CLI's own process start-up), timed to its first
    kernel_info_reply. No Jupyter server, no checks, no GPU allocation, no hardening: what any
    launcher has to pay at least."""

    def __init__(self, client: docker.DockerClient, image: str, run_id: str) -> None:
        self.client = client
        self.image = image
        self.run_id = run_id
        self.python = "python3"
        # Bare containers started "at once" must be: asyncio's default pool has cores + 4 threads.
        self.executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="bare")

    def launch(self, transport: str, network: str) -> tuple[str, dict[str, Any], str]:
        """Start one (blocking); returns the container id, the host's connection info and the
        kernel's directory."""
        tmp = tempfile.mkdtemp(prefix="jgc-bench-")
        key = uuid.uuid4().hex
        ports = kernel_ports()
        inside = {
            "transport": transport,
            "ip": "/k/kernel-ipc" if transport == "ipc" else "0.0.0.0",
            "key": key,
            "signature_scheme": "hmac-sha256",
            **ports,
        }
        if transport == "tcp" and network == "host":
            inside["ip"] = "127.0.0.1"
        Path(tmp, "kernel.json").write_text(json.dumps(inside))
        published = (
            {port: ("127.0.0.1", port) for port in ports.values()}
            if transport == "tcp" and network != "host"
            else None
        )
        container = self.client.api.create_container(
            self.image,
            [self.python, "-m", "ipykernel_launcher", "-f", "/k/kernel.json"],
            user=f"{os.getuid()}:{os.getgid()}",
            environment={"HOME": "/tmp"},
            labels={LABEL: self.run_id},
            ports=list(ports.values()) if published else None,
            host_config=self.client.api.create_host_config(
                binds={tmp: {"bind": "/k", "mode": "rw"}},
                network_mode=network,
                port_bindings=published,
            ),
        )
        self.client.api.start(container["Id"])
        host = dict(inside, ip=f"{tmp}/kernel-ipc" if transport == "ipc" else "127.0.0.1")
        return container["Id"], host, tmp

    async def start(self, transport: str, network: str) -> str:
        """Start one and wait for its first reply; returns the container id."""
        loop = asyncio.get_running_loop()
        container_id, info, _ = await loop.run_in_executor(
            self.executor, self.launch, transport, network
        )
        await kernel_info_zmq(shell_url(info), info["key"])
        return container_id

    def remove(self, container_id: str) -> None:
        container = self.client.containers.get(container_id)
        binds = container.attrs["HostConfig"].get("Binds") or []
        container.remove(force=True)
        for bind in binds:
            tmp = bind.split(":", 1)[0]
            if os.path.basename(tmp).startswith("jgc-bench-"):
                shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- the machine


def machine() -> dict[str, Any]:
    """Where and with what the run was measured."""
    client = docker_client()
    info = client.info()
    versions = {}
    for dist in ("jupyter_server", "jupyter_client", "ipykernel", "pyzmq", "tornado", "docker"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "absent"
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": _os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "docker_engine": info.get("ServerVersion", ""),
        "storage_driver": info.get("Driver", ""),
        "cgroup": f"v{info.get('CgroupVersion', '?')}",
        "runtimes": sorted((info.get("Runtimes") or {}).keys()),
        "packages": versions,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


@contextmanager
def step(name: str) -> Iterator[None]:
    """Say on stderr what runs, and how long it took (long sections show progress)."""
    started = time.monotonic()
    print(f"[benchmarks] {name} …", file=sys.stderr, flush=True)
    yield
    print(f"[benchmarks] {name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)


def process_rss(pid: int) -> tuple[int, int]:
    """The resident memory of ``pid`` and of all its descendants, in bytes (0: gone)."""

    def rss(p: int) -> int:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def children(p: int) -> list[int]:
        found: list[int] = []
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    text = Path(f"/proc/{p}/task/{task}/children").read_text()
                    found += [int(c) for c in text.split()]
        return found

    total, todo = 0, children(pid)
    while todo:
        child = todo.pop()
        total += rss(child)
        todo += children(child)
    return rss(pid), total


def process_cpu_seconds(pid: int) -> float:
    """The CPU time ``pid`` has used so far (user and system, its threads'), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command's closing parenthesis: state is field 3, utime and stime 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
