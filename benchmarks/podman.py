"""Section 10: a kernel's cold start on a user's rootless Podman, side by side with Podman's own
floor and Docker's, in one run.

Every variant runs once per round, in an order that rotates from round to round:

- ``podman run --rm IMAGE true`` as the user, and ``docker run --rm IMAGE true``: a container
  alone, through each engine's command;
- the floor on each engine: a bare container running ipykernel (ipc transport, no network),
  timed to its first kernel_info_reply. On Podman through the ``podman`` command (there is no
  daemon: the command is Podman's API), as the user, with ``--userns=keep-id``; on Docker through
  its API (harness.BareKernels);
- ours: a real Jupyter server run as the user with ``ContainerEngine.backend = "podman"``, through
  its REST API and the kernel's websocket, as JupyterLab starts a kernel (ipc, no network, no
  GPU).

The user (``--podman-user``, default jgc-podman-user) is a real account with subordinate ids and
its Podman storage on overlay (scripts/test.sh makes one); the image is loaded into its storage
from Docker's.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from jupyter_gpu_containers.kernel.kernelspecs import kernel_name_for

from .bench import Bench
from .harness import LABEL, Stats, interleaved, kernel_info_zmq, kernel_ports, shell_url
from .kernel_start import docker_true, phase_rows, split
from .server import BenchServer

DEFAULT_USER = "jgc-podman-user"


class RootlessPodman:
    """One account's rootless Podman, run as that account."""

    def __init__(self, user: str) -> None:
        entry = pwd.getpwnam(user)
        self.user = user
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        runtime = Path(f"/run/user/{self.uid}")
        if not runtime.is_dir():
            runtime.mkdir(mode=0o700, parents=True)
            os.chown(runtime, self.uid, self.gid)
        self.env = {"HOME": entry.pw_dir, "XDG_RUNTIME_DIR": str(runtime)}

    def command(self, *args: str) -> list[str]:
        as_user = ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--init-groups"]
        return [*as_user, "podman", *args]

    def run(self, *args: str, stdin: Any = None) -> str:
        done = subprocess.run(
            self.command(*args),
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", **self.env},
            cwd="/",
            stdin=stdin,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    async def run_async(self, *args: str) -> str:
        return await asyncio.to_thread(self.run, *args)

    def load(self, image: str) -> None:
        """``image`` from Docker into the user's storage, unless it holds that very image."""
        wanted = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Id}}", image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        try:
            if self.run("image", "inspect", "--format", "{{.Id}}", image).strip() in (
                wanted,
                wanted.removeprefix("sha256:"),
            ):
                return
        except RuntimeError:
            pass
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        try:
            self.run("load", "--quiet", stdin=save.stdout)
        finally:
            assert save.stdout is not None
            save.stdout.close()
            save.wait(120)


async def run(
    bench: Bench, runs: int, user: str = DEFAULT_USER, warmup: bool = True
) -> dict[str, Any]:
    try:
        podman = RootlessPodman(user)
    except KeyError:
        return {"skipped": f"no account {user} (scripts/test.sh makes one; --podman-user)"}
    await asyncio.to_thread(podman.load, bench.image)
    server = await asyncio.to_thread(_server, bench, podman)
    try:
        name = kernel_name_for(bench.image)
        phases: list[dict[str, float]] = []
        floor_runs: list[float] = []
        variants: dict[str, Callable[[], Awaitable[float]]] = {
            "podman run --rm IMAGE true (rootless)": lambda: _podman_true(bench, podman),
            "docker run --rm IMAGE true": lambda: docker_true(bench),
            FLOOR_PODMAN: lambda: _podman_floor(bench, podman, floor_runs),
            FLOOR_DOCKER: lambda: _docker_floor(bench),
            OURS: lambda: _ours(server, name, phases),
        }

        def after_warmup() -> None:
            phases.clear()
            floor_runs.clear()

        stats = await interleaved(variants, runs, after_warmup=after_warmup, warmup=warmup)
    finally:
        server.stop()
        await _remove_containers(bench, podman)
        # The server's home, which the account owns (its runtime files, the kernels' workspace).
        await asyncio.to_thread(shutil.rmtree, server.home, True)
    rows = [{"variant": label, **stat.to_dict()} for label, stat in stats.items()]
    version = (await podman.run_async("version", "--format", "{{.Client.Version}}")).strip()
    driver = (await podman.run_async("info", "--format", "{{.Store.GraphDriverName}}")).strip()
    return {
        "runs": runs,
        "user": user,
        "podman": version,
        "storage_driver": driver,
        "rows": rows,
        "phases": phase_rows(phases),
        "floor_run_d": Stats(floor_runs).to_dict(),
        "ours_over_podman_floor": stats[OURS].p50 / stats[FLOOR_PODMAN].p50,
        "ours_over_podman_floor_min": stats[OURS].min / stats[FLOOR_PODMAN].min,
        "podman_floor_over_docker_floor": stats[FLOOR_PODMAN].p50 / stats[FLOOR_DOCKER].p50,
    }


FLOOR_PODMAN = "floor, rootless Podman: ipc, no network"
FLOOR_DOCKER = "floor, Docker: ipc, no network"
OURS = "ours on rootless Podman: ipc, no network"


def _server(bench: Bench, podman: RootlessPodman) -> BenchServer:
    home = Path(tempfile.mkdtemp(prefix="jgc-bench-podman-"))
    for sub in ("config", "data", "runtime", "workspace"):
        (home / sub).mkdir()
    config = {
        "ContainerEngine": {"backend": "podman"},
        "ContainerProvisioner": {"extra_labels": {LABEL: bench.run_id}},
        "ContainerKernelSpecManager": {
            "image_include": [bench.image],
            "image_overrides": {
                bench.image: {
                    "provisioner": {"transport": "ipc", "network_mode": "none", "gpus": 0}
                }
            },
        },
    }
    server = BenchServer(home, config, user=podman.user, env=podman.env)
    for path in [home, *home.rglob("*")]:
        os.chown(path, podman.uid, podman.gid)
    try:
        server.start()
    except BaseException:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
        raise
    return server


async def _ours(server: BenchServer, name: str, phases: list[dict[str, float]]) -> float:
    started = time.monotonic()
    kernel_id, answered, replied = await server.start_kernel(name)
    try:
        stamps = (await server.call("GET", f"bench/launch/{kernel_id}"))["stamps"]
        phases.append(split(started, stamps, answered, replied))
    finally:
        await server.delete_kernel(kernel_id)
    return replied - started


async def _podman_true(bench: Bench, podman: RootlessPodman) -> float:
    started = time.monotonic()
    label = f"{LABEL}={bench.run_id}"
    await podman.run_async("run", "--rm", "--network=none", f"--label={label}", bench.image, "true")
    return time.monotonic() - started


async def _docker_floor(bench: Bench) -> float:
    started = time.monotonic()
    container_id = await bench.bare.start("ipc", "none")
    elapsed = time.monotonic() - started
    await asyncio.to_thread(bench.bare.remove, container_id)
    return elapsed


async def _podman_floor(bench: Bench, podman: RootlessPodman, run_d: list[float]) -> float:
    """ipykernel in a bare rootless container (``podman run -d``), to its first reply; how long
    ``podman run -d`` itself took is added to ``run_d``."""
    tmp = Path(tempfile.mkdtemp(prefix="jgc-bench-"))
    os.chown(tmp, podman.uid, podman.gid)
    key = uuid.uuid4().hex
    inside = {
        "transport": "ipc",
        "ip": "/k/kernel-ipc",
        "key": key,
        "signature_scheme": "hmac-sha256",
        **kernel_ports(),
    }
    (tmp / "kernel.json").write_text(json.dumps(inside))
    started = time.monotonic()
    container_id = (
        await podman.run_async(
            "run",
            "-d",
            "--userns",
            "keep-id",
            "--network",
            "none",
            "--env",
            "HOME=/tmp",
            "--label",
            f"{LABEL}={bench.run_id}",
            "--mount",
            f"type=bind,source={tmp},destination=/k",
            bench.image,
            "python3",
            "-m",
            "ipykernel_launcher",
            "-f",
            "/k/kernel.json",
        )
    ).strip()
    run_d.append(time.monotonic() - started)
    try:
        await kernel_info_zmq(shell_url(dict(inside, ip=f"{tmp}/kernel-ipc")), key)
        return time.monotonic() - started
    finally:
        await podman.run_async("rm", "--force", "--time", "0", container_id)
        shutil.rmtree(tmp, ignore_errors=True)


async def _remove_containers(bench: Bench, podman: RootlessPodman) -> None:
    listed = await podman.run_async(
        "ps", "--all", "--quiet", "--filter", f"label={LABEL}={bench.run_id}"
    )
    ids = listed.split()
    if ids:
        await podman.run_async("rm", "--force", "--time", "0", *ids)
