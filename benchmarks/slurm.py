"""Section 11: a kernel as a Slurm job through the kernel service, side by side with a bare ``srun``
of the same container running ipykernel, on one idle single-node Slurm, in one run.

Every variant runs once per round, in an order that rotates from round to round:

- ``srun --gres=gpu:1 true`` as the user: Slurm's own cost of an allocation and a step;
- the floor: ``srun --gres=gpu:1`` as the user, of ``podman run`` (rootless, the host's network,
  the job's GPU as its CDI device) of the image running ipykernel on ports chosen beforehand,
  timed to its first kernel_info_reply, then ended;
- ours: ``POST /api/kernels`` to the kernel service (``ServiceApp.backend = "slurm"``) with the
  user's token and a request for one GPU, until the kernel answers kernel_info over its
  websocket, then shut down. The service submits a batch job (``sbatch``), which Slurm starts at
  its next scheduling pass: that wait (the launch's "start" phase, from the job's submission to
  it running) is Slurm's, and is given apart from the rest.

The cluster is the test suite's (tests/slurm_cluster.py: munged, slurmctld and slurmd of Debian's
Slurm in a directory of their own, four GPUs as device files); the user (``--podman-user``) is a
real account with rootless Podman (scripts/test.sh makes one), the image loaded into its storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from jupyter_gpu_containers.kernel.kernelspecs import kernel_name_for
from jupyter_gpu_containers.kernel.launch_request import REQUEST_ENV

from .bench import Bench
from .harness import LABEL, REPO, Stats, interleaved, kernel_info_zmq, kernel_ports, step
from .k8s import kernel_phases
from .podman import DEFAULT_USER, RootlessPodman
from .service import BenchService

SRUN_TRUE = "srun --gres=gpu:1 true"
FLOOR = "floor: srun of podman run ipykernel, 1 GPU"
OURS = "ours: the kernel service on Slurm, 1 GPU"


def _tests_on_path() -> None:
    """The Slurm cluster's harness is the test suite's."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.append(tests)


class SlurmBench:
    """The cluster, the CDI spec of its GPUs, the kernel service and its user, removed at the end
    whatever happened."""

    def __init__(self, bench: Bench, podman: RootlessPodman) -> None:
        _tests_on_path()
        from slurm_cluster import SlurmCluster

        self.bench, self.podman = bench, podman
        self.home = Path(tempfile.mkdtemp(prefix="jgc-bench-slurm-", dir="/tmp"))
        self.home.chmod(0o755)  # the user's workspace and kernels' directories lie below it
        self.cluster = SlurmCluster(self.home / "cluster")
        self.cdi = Path("/etc/cdi") / f"jgc-bench-slurm-{bench.run_id}.yaml"
        # The cluster's GPUs as CDI devices of a kind of this run's own: a spec of NVIDIA's kind
        # (or another run's) with the same device names would make every device of that kind
        # unusable.
        self.cdi_kind = (
            "jgc-bench-" + re.sub(r"[^a-z0-9]+", "-", bench.run_id.lower()) + ".test/gpu"
        )
        self.service: BenchService | None = None
        self.token = ""

    def env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "SLURM_CONF": str(self.cluster.conf),
            **self.podman.env,
        }

    def as_user(self, *argv: str) -> list[str]:
        user = self.podman.user
        return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *argv]

    def start(self) -> None:
        # On the main thread: the harness ties its daemons to this process's life.
        self.cluster.start()
        devices = "".join(
            f'  - name: "{index}"\n    containerEdits:\n      deviceNodes:\n'
            f"        - path: {self.cluster.device(index)}\n"
            for index in range(self.cluster.gpus)
        )
        self.cdi.parent.mkdir(mode=0o755, exist_ok=True)
        self.cdi.write_text(f'cdiVersion: "0.5.0"\nkind: "{self.cdi_kind}"\ndevices:\n{devices}')
        workspace = self.home / "ws" / self.podman.user
        workspace.mkdir(parents=True)
        os.chown(workspace, self.podman.uid, self.podman.gid)
        labels = {LABEL: self.bench.run_id}
        tokens_file = self.home / "service" / "etc" / "tokens"
        config = {
            "ServiceApp": {"backend": "slurm", "keep_kernels_on_stop": False},
            "SlurmBackend": {
                "slurm_conf": str(self.cluster.conf),
                "probe_account": self.podman.user,
                "records_dir": str(self.home / "records"),
                "poll_interval": 0.1,
                "gpu_device": self.cdi_kind + "={index}",
            },
            "ImageCatalog": {"listed_images": [{"image": self.bench.image}]},
            "ContainerProvisioner": {"extra_labels": labels},
            "KernelReadinessProbe": {"extra_labels": labels},
            "ContainerPolicy": {
                "state_dir": str(self.home / "state"),
                "connection_dir_root": str(self.home / "kernels"),
            },
            "ServiceTokens": {"tokens_file": str(tokens_file)},
            "UserDirectory": {"workspace_template": str(self.home / "ws" / "{username}")},
        }
        self.service = BenchService(self.home / "service", config)
        self.token = self.service.add_user(self.podman.user, tokens_file)
        with step("slurm: kernel service (backend slurm)"):
            self.service.start()

    def close(self) -> None:
        if self.service is not None:
            with contextlib.suppress(Exception):
                self.service.stop()
        with contextlib.suppress(Exception):
            self.cluster.stop()
        self.cdi.unlink(missing_ok=True)
        with contextlib.suppress(Exception):
            self.podman.run("rm", "--force", "--time", "0", "--filter", f"label={LABEL}")
        shutil.rmtree(self.home, ignore_errors=True)

    # ------------------------------------------------------------------ the variants

    async def srun_true(self) -> float:
        started = time.monotonic()
        await asyncio.to_thread(
            subprocess.run,
            self.as_user("srun", "--export=NONE", "--gres=gpu:1", "/bin/true"),
            env=self.env(),
            cwd="/",
            check=True,
            capture_output=True,
            timeout=120,
        )
        return time.monotonic() - started

    async def floor(self) -> float:
        """srun of the container, as a site's user would type it; to its kernel's first reply."""
        directory = Path(tempfile.mkdtemp(prefix="floor-", dir=self.home))
        os.chown(directory, self.podman.uid, self.podman.gid)
        key = uuid.uuid4().hex
        ports = kernel_ports()
        connection = directory / "kernel.json"
        connection.write_text(
            json.dumps(
                {
                    "transport": "tcp",
                    "ip": "127.0.0.1",
                    "key": key,
                    "signature_scheme": "hmac-sha256",
                    **ports,
                }
            )
        )
        os.chown(connection, self.podman.uid, self.podman.gid)
        name = f"jgc-bench-floor-{uuid.uuid4().hex[:10]}"
        # --export=NONE, as the kernel's job: the step's environment is its own.
        script = (
            "export PATH=/usr/local/bin:/usr/bin:/bin "
            f"HOME={self.podman.env['HOME']} XDG_RUNTIME_DIR={self.podman.env['XDG_RUNTIME_DIR']}; "
            'gpus="${SLURM_STEP_GPUS:-${SLURM_JOB_GPUS:-}}"; '
            f"exec podman run --rm --name {name} --label {LABEL}={self.bench.run_id} "
            "--pull=never --network=host --userns=keep-id "
            f'--device "{self.cdi_kind}=${{gpus%%,*}}" '
            f"-v {directory}:/run/jupyter-kernel -e HOME=/tmp {self.bench.image} "
            "python3 -m ipykernel_launcher -f /run/jupyter-kernel/kernel.json"
        )
        started = time.monotonic()
        process = subprocess.Popen(
            self.as_user("srun", "--export=NONE", "--gres=gpu:1", "/bin/sh", "-c", script),
            env=self.env(),
            cwd="/",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            await kernel_info_zmq(f"tcp://127.0.0.1:{ports['shell_port']}", key)
            return time.monotonic() - started
        finally:
            await asyncio.to_thread(self._end_floor, process, name)
            shutil.rmtree(directory, ignore_errors=True)

    def _end_floor(self, process: subprocess.Popen[bytes], name: str) -> None:
        with contextlib.suppress(RuntimeError):
            self.podman.run("rm", "--force", "--time", "0", "--ignore", name)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stderr is not None:
            process.stderr.close()

    async def ours(self, measured: dict[str, float]) -> float:
        """One start, as JupyterLab makes it; ``measured``: each kernel's time, by its id (the
        service's log has its phases)."""
        assert self.service is not None
        name = kernel_name_for(self.bench.image)
        started = time.monotonic()
        kernel_id, _, replied = await self.service.start_kernel(
            name, {REQUEST_ENV: "1"}, token=self.token
        )
        try:
            measured[kernel_id] = replied - started
            return replied - started
        finally:
            await self.service.delete_kernel(kernel_id, token=self.token)


async def run(
    bench: Bench, runs: int, user: str = DEFAULT_USER, warmup: bool = True
) -> dict[str, Any]:
    _tests_on_path()
    from slurm_cluster import slurm_installed

    if os.geteuid() != 0:
        return {"skipped": "the Slurm cluster's daemons run as root"}
    if not slurm_installed():
        return {"skipped": "Slurm is not installed (scripts/test.sh installs it)"}
    try:
        podman = RootlessPodman(user)
    except KeyError:
        return {"skipped": f"no account {user} (scripts/test.sh makes one; --podman-user)"}
    await asyncio.to_thread(podman.load, bench.image)
    slurm = SlurmBench(bench, podman)
    try:
        slurm.start()
        measured: dict[str, float] = {}
        variants: dict[str, Callable[[], Awaitable[float]]] = {
            SRUN_TRUE: slurm.srun_true,
            FLOOR: slurm.floor,
            OURS: lambda: slurm.ours(measured),
        }
        with step("slurm: kernel starts"):
            stats = await interleaved(variants, runs, after_warmup=measured.clear, warmup=warmup)
        assert slurm.service is not None
        found = kernel_phases(slurm.service.output())
        version = subprocess.run(
            ["sinfo", "--version"], env=slurm.env(), capture_output=True, text=True, check=False
        ).stdout.strip()
    finally:
        slurm.close()
    # Slurm's wait for its next scheduling pass: the launch's "start" phase, from the job's
    # submission to it running; ours without it, each start's own.
    timed = [
        (total, found[k]["start"]) for k, total in measured.items() if "start" in found.get(k, {})
    ]
    scheduling = Stats([start for _, start in timed])
    after = Stats([total - start for total, start in timed])
    rows = [{"variant": label, **stat.to_dict()} for label, stat in stats.items()]
    return {
        "runs": runs,
        "user": user,
        "slurm": version,
        "rows": rows,
        "slurm_scheduling": scheduling.to_dict(),
        "ours_without_scheduling": after.to_dict(),
        "ours_over_floor": stats[OURS].p50 / stats[FLOOR].p50,
        "ours_without_scheduling_over_floor": after.p50 / stats[FLOOR].p50,
    }
