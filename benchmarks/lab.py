"""Section 8: a teaching lab on one host (issue 17, "Measured, not claimed").

Sixty simulated students share a static inventory of eight GPUs through the kernel service
(`jupyter gpu-containers serve`, as root, loopback only). Each student is a service user of its
own: an account of the administrator's map (``UserDirectory.accounts``, uid:gid pairs that need
no system account), a workspace they own and a token of the service's token file. The GPUs are
the tests' NVML double (``benchmarks/lab_nvml.py``), whose per-process use the benchmark drives:
a student at work shows SM utilisation on their kernel's process, an idle one only memory.

A round, from a new random seed (given in the report, ``--seed`` repeats one):

- every student arrives at a random time and opens a CPU kernel, held until the round ends (so
  that some 60 kernels run at once: the service's memory is measured with them);
- then 1 to 3 notebooks, each asking for one GPU and to wait for it
  (``POST /api/kernels`` with env ``KERNEL_GPU_CONTAINERS_REQUEST=1`` and
  ``KERNEL_GPU_CONTAINERS_WAIT=true``), a few seconds apart;
- a notebook whose kernel answered either works for a random time and is shut down by its
  student (``DELETE``), or is left idle, and ``GPUReclaim`` (short idle and grace minutes,
  action "shutdown") takes its GPU.

Measured throughout, from outside the service: every 0.5 s the engine's containers of the run
(double bookings: one GPU UUID on two live kernel containers; the GPUs booked; the kernels
running) and the service's resident memory; each start's wait (its POST until its answer);
each reclaim's warning (the service's ``release_at``) against the moment its container went;
and the time from a GPU freed (a DELETE's answer) to the next waiting start's answer on it.

Every container carries the run's label and is removed at the end (Bench.close); this section
stops its service by its pid and removes its directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.host.tokens import add_token
from jupyter_gpu_containers.kernel.launch_request import REQUEST_ENV, WAIT_ENV
from jupyter_gpu_containers.service.service_routes import SESSION_ENV

from .bench import Bench
from .harness import LABEL, percentile, process_rss, step
from .server import ServerFailed
from .service import BenchService

GPUS = 8
# What benchmarks/lab_nvml.py (imported by the service, not here: it needs the tests' double)
# reads from the service's environment: the activity file, and how many GPUs the double has.
ACTIVITY_ENV = "JGC_LAB_ACTIVITY"
GPUS_ENV = "JGC_LAB_GPUS"
# uids of the administrator's map: no system account needed, none of the host's users (and
# not section 7's, 23101…).
FIRST_UID = 23201
SAMPLE_EVERY = 0.5  # seconds between two looks at the engine's containers
# How long a reclaim's record may take to appear once its container went (seconds).
RECORD_WAIT = 30.0
GPU_MEMORY = 2 * 2**30  # what each student's kernel holds on its GPU, at work or idle
BUSY = 60  # SM utilisation (percent) of a kernel at work


@dataclass(frozen=True)
class Plan:
    """A round's shape; the random draws within it come from the seed."""

    students: int
    arrival_window: float  # students arrive within this many seconds of the start
    notebook_gap: tuple[float, float]  # seconds between a student's notebooks
    run_seconds: tuple[float, float]  # how long a working notebook uses its GPU
    idle_share: float  # the chance that a notebook is left idle (lunch)
    idle_minutes: float  # GPUReclaim
    grace_minutes: float
    check_interval: float
    usage_interval: float  # GPUUsage.interval
    max_wait: float  # GPUQueue.max_wait
    poll_interval: float  # GPUQueue.poll_interval


FULL = Plan(
    students=60,
    arrival_window=60.0,
    notebook_gap=(0.0, 8.0),
    run_seconds=(6.0, 24.0),
    idle_share=0.2,
    idle_minutes=0.25,
    grace_minutes=0.25,
    check_interval=2.0,
    usage_interval=1.0,
    max_wait=480.0,
    poll_interval=1.0,
)
QUICK = Plan(
    students=10,
    arrival_window=4.0,
    notebook_gap=(0.0, 2.0),
    run_seconds=(2.0, 5.0),
    idle_share=0.25,
    idle_minutes=0.1,
    grace_minutes=0.1,
    check_interval=1.0,
    usage_interval=0.5,
    max_wait=150.0,
    poll_interval=1.0,
)


@dataclass
class Notebook:
    """One GPU notebook of a student: what was drawn, and what happened (monotonic times)."""

    student: str
    name: str
    offset: float  # seconds after the round began when it is opened
    run: float  # seconds of work once its kernel answered (a working notebook)
    idle: bool
    posted: float | None = None
    answered: float | None = None
    replied: float | None = None  # its first kernel_info_reply
    code: int | None = None
    message: str = ""
    kernel_id: str = ""
    gpus: list[str] = field(default_factory=list)
    delete_sent: float | None = None
    freed: float | None = None  # its DELETE answered
    # Reclaim (idle notebooks): the service's stamps (unix) and when its container went.
    idle_since: float | None = None
    release_at: float | None = None
    gone: float | None = None  # monotonic: the monitor's first look without its container

    @property
    def wait(self) -> float | None:
        if self.code != 201 or self.posted is None or self.answered is None:
            return None
        return self.answered - self.posted


@dataclass
class Student:
    name: str
    token: str
    workspace: Path
    arrival: float
    notebooks: list[Notebook]
    cpu_kernel: str = ""
    cpu_start: float | None = None  # seconds until its CPU kernel's POST answered
    cpu_refused: str = ""


def draw(plan: Plan, seed: int) -> list[tuple[str, float, list[tuple[float, float, bool]]]]:
    """Each student's arrival and notebooks (offset, run, idle), from the seed alone."""
    rng = random.Random(seed)
    students = []
    for i in range(plan.students):
        arrival = rng.uniform(0, plan.arrival_window)
        at = arrival
        notebooks = []
        for _ in range(rng.randint(1, 3)):
            at += rng.uniform(*plan.notebook_gap)
            notebooks.append((at, rng.uniform(*plan.run_seconds), rng.random() < plan.idle_share))
        students.append((f"lab{i:02d}", arrival, notebooks))
    return students


# ---------------------------------------------------------------------- the GPUs' activity


class Activity:
    """What the NVML double shows on each GPU (the file lab_nvml.py reads): kernel id -> its
    GPUs, its container's main pid, its utilisation (None: idle)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.kernels: dict[str, tuple[list[str], int, int | None]] = {}
        self.write()

    def set(self, kernel_id: str, gpus: list[str], pid: int, util: int | None) -> None:
        self.kernels[kernel_id] = (gpus, pid, util)
        self.write()

    def drop(self, kernel_id: str) -> None:
        if self.kernels.pop(kernel_id, None) is not None:
            self.write()

    def write(self) -> None:
        # A few hundred bytes in /tmp, replaced at once: the service never reads half a file.
        by_gpu: dict[str, list[list[Any]]] = {}
        for gpus, pid, util in self.kernels.values():
            for uuid in gpus:
                by_gpu.setdefault(uuid, []).append([pid, GPU_MEMORY, util])
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(by_gpu))
        os.replace(tmp, self.path)


# ---------------------------------------------------------------------- the monitor


@dataclass
class Look:
    at: float  # monotonic
    kernels: int  # kernel containers running
    gpu_kernels: int
    booked: int  # distinct GPUs on live kernel containers
    rss: int  # the service's resident memory (bytes)
    children_rss: int


class Monitor:
    """Every SAMPLE_EVERY seconds, on a thread: the run's kernel containers (one list request
    to the engine, labels included) and the service's memory from /proc."""

    def __init__(self, client: docker.DockerClient, run_id: str, pid: int) -> None:
        self.client = client
        self.run_id = run_id
        self.pid = pid
        self.looks: list[Look] = []
        self.double_bookings: list[dict[str, Any]] = []
        self.errors = 0
        self.gone: dict[str, float] = {}  # kernel id -> first look without its live container
        self.seen: dict[str, float] = {}  # kernel id -> first look with it (its GPUs booked)
        self._live: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lab-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            try:
                self.look()
            except Exception as e:  # counted; one failed look does not end the watch
                self.errors += 1
                print(f"[benchmarks] lab monitor: {e!r}", file=sys.stderr)

    def look(self) -> None:
        at = time.monotonic()
        rows = self.client.api.containers(
            all=True, filters={"label": [f"{LABEL}={self.run_id}", L.KERNEL_ID]}
        )
        holders: dict[str, set[str]] = {}
        live: set[str] = set()
        running = gpu_kernels = 0
        for row in rows:
            state = row.get("State", "")
            labels = row.get("Labels") or {}
            kernel_id = labels.get(L.KERNEL_ID, "")
            if state not in ("created", "running", "restarting", "paused"):
                continue  # exited or being removed: it holds no GPU
            live.add(kernel_id)
            gpus = [u for u in labels.get(L.GPUS, "").split(",") if u]
            if state == "running":
                running += 1
                gpu_kernels += bool(gpus)
            for uuid in gpus:
                holders.setdefault(uuid, set()).add(kernel_id)
        for uuid, kernels in holders.items():
            if len(kernels) > 1:
                self.double_bookings.append({"at": at, "gpu": uuid, "kernels": sorted(kernels)})
        for kernel_id in self._live - live:
            self.gone.setdefault(kernel_id, at)
        for kernel_id in live - self._live:
            self.seen.setdefault(kernel_id, at)
        self._live = live
        rss, children = process_rss(self.pid)
        self.looks.append(Look(at, running, gpu_kernels, len(holders), rss, children))


# ---------------------------------------------------------------------- the world


class LabService(BenchService):
    """The kernel service, told where the NVML double reads the GPUs' activity."""

    def __init__(self, home: Path, config: dict[str, Any], activity: Path) -> None:
        self.activity = activity
        super().__init__(home, config)

    def argv(self) -> list[str]:
        # env(1) execs the service: the pid stays the service's own (its memory is measured).
        return [
            "/usr/bin/env",
            f"{ACTIVITY_ENV}={self.activity}",
            f"{GPUS_ENV}={GPUS}",
            *super().argv(),
        ]


class Lab:
    def __init__(self, bench: Bench, plan: Plan, seed: int) -> None:
        self.bench = bench
        self.plan = plan
        self.seed = seed
        self.ref = bench.tag("lab")  # untagged by Bench.close
        self.spec = bench.kernel(self.ref)
        self.home = Path(tempfile.mkdtemp(prefix="jgc-bench-lab-", dir="/tmp"))
        self.home.chmod(0o755)  # the students' workspaces lie below it
        self.activity = Activity(self.home / "activity.json")
        self.students: list[Student] = []
        self.service: LabService | None = None
        self.monitor: Monitor | None = None
        self.log = ""  # the service's, kept when its directory goes
        # Many requests at once (60 students' starts, polls and shutdowns): a client of the
        # section's own, so that none waits in the client's queue (its default is 10 at once).
        self.http = AsyncHTTPClient(force_instance=True, max_clients=1000)

    def config(self, accounts: dict[str, str], tokens_file: Path) -> dict[str, Any]:
        plan = self.plan
        labels = {LABEL: self.bench.run_id}
        return {
            "ContainerKernelSpecManager": {
                "image_include": [f"{self.bench.repo}/lab:*"],
                # The image's default spec, without GPUs: a notebook asks for its GPU.
                "image_overrides": {self.ref: {"provisioner": {"gpus": 0}}},
            },
            "ContainerProvisioner": {"extra_labels": labels},
            "KernelReadinessProbe": {"extra_labels": labels},
            "ContainerPolicy": {
                "state_dir": str(self.home / "state"),
                "connection_dir_root": str(self.home / "kernels"),
            },
            "GPUInventory": {
                "source": "nvml",
                "nvml_module": "benchmarks.lab_nvml",
                "cache_seconds": min(0.5, plan.usage_interval),
            },
            "GPUAllocator": {"attach_mode": "runtime"},
            "GPUUsage": {"interval": plan.usage_interval},
            "GPUQueue": {"max_wait": plan.max_wait, "poll_interval": plan.poll_interval},
            "GPUReclaim": {
                "enabled": True,
                "idle_minutes": plan.idle_minutes,
                "grace_minutes": plan.grace_minutes,
                "check_interval": plan.check_interval,
                "action": "shutdown",
            },
            "ServiceTokens": {"tokens_file": str(tokens_file)},
            "UserDirectory": {
                "workspace_template": str(self.home / "ws" / "{username}"),
                "accounts": accounts,
            },
            # A 60-seat lab's starts come together: room for all of them in the start queue.
            "ServiceApp": {"max_queued_starts": 256, "keep_kernels_on_stop": False},
        }

    def start(self) -> None:
        drawn = draw(self.plan, self.seed)
        accounts = {
            name: f"{FIRST_UID + i}:{FIRST_UID + i}" for i, (name, _, _) in enumerate(drawn)
        }
        tokens_file = self.home / "service" / "etc" / "tokens"
        self.service = LabService(
            self.home / "service", self.config(accounts, tokens_file), self.activity.path
        )
        for name, arrival, notebooks in drawn:
            workspace = self.home / "ws" / name
            workspace.mkdir(parents=True)
            uid, gid = (int(i) for i in accounts[name].split(":"))
            os.chown(workspace, uid, gid)
            token, _ = add_token(str(tokens_file), name, "lab benchmark")
            self.students.append(
                Student(
                    name,
                    token,
                    workspace,
                    arrival,
                    [
                        Notebook(name, f"nb{j}.ipynb", offset, run, idle)
                        for j, (offset, run, idle) in enumerate(notebooks, 1)
                    ],
                )
            )
        with step("lab: the kernel service"):
            self.service.start()

    def close(self) -> None:
        self.http.close()
        if self.service is not None:
            self.service.stop()
            self.log = self.service.output()
        shutil.rmtree(self.home, ignore_errors=True)

    def log_lines(self, *words: str, limit: int = 20) -> list[str]:
        """The service log's lines that say one of ``words`` (the first ``limit``)."""
        lines = [line for line in self.log.splitlines() if any(w in line for w in words)]
        return [line[:400] for line in lines[:limit]]

    # ------------------------------------------------------------------ requests

    async def call(
        self, student: Student, method: str, path: str, body: Any = None, timeout: float = 60
    ) -> tuple[int, Any]:
        """One request with a student's token: the status and the answer, whatever it is."""
        assert self.service is not None
        request = HTTPRequest(
            f"{self.service.url}/{path}",
            method=method,
            headers={"Authorization": f"token {student.token}"},
            body=None if body is None else json.dumps(body),
            request_timeout=timeout,
        )
        try:
            response = await self.http.fetch(request)
        except HTTPClientError as e:
            if e.response is None:
                raise
            return e.code, json.loads(e.response.body or b"null")
        return response.code, json.loads(response.body) if response.body else None

    # ------------------------------------------------------------------ a round

    async def round(self) -> float:
        """Every student's afternoon; returns when the round began (monotonic)."""
        began = time.monotonic()
        await asyncio.gather(*(self.student(s, began) for s in self.students))
        return began

    async def student(self, s: Student, began: float) -> None:
        await asyncio.sleep(max(0.0, began + s.arrival - time.monotonic()))
        posted = time.monotonic()
        code, body = await self.call(s, "POST", "api/kernels", {"name": self.spec, "env": {}})
        if code == 201:
            s.cpu_kernel, s.cpu_start = body["id"], time.monotonic() - posted
        else:  # counted; the student's GPU notebooks still come
            s.cpu_refused = f"{code}: {str((body or {}).get('message', body))[:300]}"
        await asyncio.gather(*(self.notebook(s, nb, began) for nb in s.notebooks))

    async def notebook(self, s: Student, nb: Notebook, began: float) -> None:
        await asyncio.sleep(max(0.0, began + nb.offset - time.monotonic()))
        try:
            await self.use(s, nb)
        except Exception as e:  # said in the results; its kernel goes at the round's end
            nb.message = f"{type(e).__name__}: {e}"[:300]
            print(f"[benchmarks] lab: {s.name}/{nb.name}: {nb.message}", file=sys.stderr)
            if nb.kernel_id:
                self.activity.drop(nb.kernel_id)

    async def use(self, s: Student, nb: Notebook) -> None:
        """Open the notebook (its GPU start waits in the queue), then work or leave it idle."""
        assert self.service is not None
        env = {
            REQUEST_ENV: "1",
            WAIT_ENV: "true",
            SESSION_ENV: str(s.workspace / nb.name),
        }
        nb.posted = time.monotonic()
        nb.code, body = await self.call(
            s,
            "POST",
            "api/kernels",
            {"name": self.spec, "env": env},
            timeout=self.plan.max_wait + 120,
        )
        nb.answered = time.monotonic()
        if nb.code != 201:
            nb.message = str((body or {}).get("message", body))[:300]
            return
        nb.kernel_id = body["id"]
        await self.service.kernel_info(nb.kernel_id, token=s.token)
        nb.replied = time.monotonic()
        nb.gpus, pid = await asyncio.to_thread(self.container_of, nb.kernel_id)
        self.activity.set(nb.kernel_id, nb.gpus, pid, None if nb.idle else BUSY)
        if nb.idle:
            await self.left_idle(s, nb)
        else:
            await asyncio.sleep(nb.run)
            self.activity.drop(nb.kernel_id)
            nb.delete_sent = time.monotonic()
            code, body = await self.call(s, "DELETE", f"api/kernels/{nb.kernel_id}")
            nb.freed = time.monotonic()
            if code != 204:  # a reclaim of a working notebook would show here
                nb.message = f"DELETE answered {code}: {body}"

    async def left_idle(self, s: Student, nb: Notebook) -> None:
        """Leave the notebook idle until its container is gone (the monitor sees it: no request
        adds load meanwhile), then read the service's record of the reclaim (the student's
        kernel list, as their panel does); shut it down if no reclaim came in twice the time
        it should take."""
        assert self.monitor is not None
        plan = self.plan
        expected = (plan.idle_minutes + plan.grace_minutes) * 60 + 2 * plan.check_interval
        deadline = time.monotonic() + 2 * expected + 10
        while nb.kernel_id not in self.monitor.gone and time.monotonic() < deadline:
            await asyncio.sleep(SAMPLE_EVERY)
        self.activity.drop(nb.kernel_id)
        if nb.kernel_id not in self.monitor.gone:
            nb.message = "not reclaimed in time: shut down by its student"
            await self.call(s, "DELETE", f"api/kernels/{nb.kernel_id}")
            return
        # The service records the reclaim as its shutdown ends, which may be a moment after the
        # container went: read until it is there (a fresh-clone run read it too early once).
        record_deadline = time.monotonic() + RECORD_WAIT
        while True:
            code, body = await self.call(s, "GET", "gpu-containers/kernels")
            records = (body or {}).get("reclaimed") or [] if code == 200 else []
            record = next((r for r in records if r.get("kernel_id") == nb.kernel_id), None)
            if (record and record.get("release_at")) or time.monotonic() > record_deadline:
                break
            await asyncio.sleep(SAMPLE_EVERY)
        if record is None or not record.get("release_at"):
            nb.message = f"its kernel went, but the service has no reclaim of it ({code})"
            return
        nb.release_at = unix(record["release_at"])
        nb.idle_since = unix(record["idle_since"])

    def container_of(self, kernel_id: str) -> tuple[list[str], int]:
        """A kernel's GPUs (its container's label) and its container's main pid (blocking)."""
        client = self.bench.client
        rows = client.api.containers(
            filters={"label": [f"{L.KERNEL_ID}={kernel_id}", f"{LABEL}={self.bench.run_id}"]}
        )
        if not rows:
            raise ServerFailed(f"kernel {kernel_id} answered, but has no running container")
        gpus = [u for u in (rows[0].get("Labels") or {}).get(L.GPUS, "").split(",") if u]
        pid = int(client.api.inspect_container(rows[0]["Id"])["State"]["Pid"])
        return gpus, pid

    async def shut_down_all(self) -> None:
        gate = asyncio.Semaphore(8)

        async def one(s: Student) -> None:
            async with gate:
                code, kernels = await self.call(s, "GET", "api/kernels")
                for kernel in kernels if code == 200 else []:
                    await self.call(s, "DELETE", f"api/kernels/{kernel['id']}")

        await asyncio.gather(*(one(s) for s in self.students))


def unix(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


# The service's log lines of a warning and of a reclaim done (reclaimer.py), stamped to the ms
# in the host's local time, as this process reads it too.
_LOGGED = r"^\[W (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) \w+\] Kernel ([0-9a-f-]{36})\b"
WARNED = re.compile(_LOGGED + r".* has shown no GPU activity", re.MULTILINE)
RECLAIMED = re.compile(_LOGGED + r": .* reclaimed after", re.MULTILINE)


def logged(pattern: re.Pattern[str], log: str) -> dict[str, float]:
    """kernel id -> unix time of its first line that ``pattern`` matches."""
    found: dict[str, float] = {}
    for m in pattern.finditer(log):
        when = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        found.setdefault(m.group(2), when)
    return found


# ---------------------------------------------------------------------- the run


async def run(bench: Bench, plan: Plan, seed: int | None = None) -> dict[str, Any]:
    """One round of ``plan``; a new seed unless one is given (to repeat a round)."""
    if not bench.gpus:
        return {
            "not_measured": "The lab needs an engine that can attach GPUs (a runtime named "
            "nvidia; scripts/ensure-docker.sh sets one up)."
        }
    seed = random.SystemRandom().randrange(2**32) if seed is None else seed
    lab = Lab(bench, plan, seed)
    monitor: Monitor | None = None
    try:
        lab.start()
        assert lab.service is not None and lab.service.process is not None
        monitor = lab.monitor = Monitor(bench.client, bench.run_id, lab.service.process.pid)
        await asyncio.to_thread(monitor.look)  # before any kernel: the service's own memory
        monitor.start()
        with step(f"lab: {plan.students} students, seed {seed}"):
            began = await lab.round()
            ended = time.monotonic()
        monitor.stop()
        with step("lab: shutting the CPU kernels down"):
            await lab.shut_down_all()
    except Exception as e:
        if lab.service is not None:
            print(
                f"[benchmarks] lab section failed: {e}\n{lab.service.output()[-3000:]}",
                file=sys.stderr,
            )
        raise
    finally:
        if monitor is not None:
            monitor.stop()
        lab.close()
    return summarise(lab, monitor, began, ended)


def summarise(lab: Lab, monitor: Monitor, began: float, ended: float) -> dict[str, Any]:
    plan = lab.plan
    notebooks = [nb for s in lab.students for nb in s.notebooks]
    # unix = monotonic + offset (the service stamps its reclaims in unix time)
    offset = time.time() - time.monotonic()
    for kernel_id, at in monitor.gone.items():
        for nb in notebooks:
            if nb.kernel_id == kernel_id:
                nb.gone = at
    refused: dict[str, int] = {}
    for nb in notebooks:
        if nb.code != 201:
            refused[str(nb.code)] = refused.get(str(nb.code), 0) + 1
    return {
        "seed": lab.seed,
        "plan": asdict(plan),
        "gpus": GPUS,
        "students": len(lab.students),
        "accounts": f"{len(lab.students)} accounts of the administrator's map "
        f"(UserDirectory.accounts), uids {FIRST_UID} to {FIRST_UID + len(lab.students) - 1}",
        "notebooks": len(notebooks),
        "idle_notebooks": sum(nb.idle for nb in notebooks),
        "round_s": ended - began,
        "gpu_starts": {"answered_201": sum(nb.code == 201 for nb in notebooks), "refused": refused},
        "refusals": sorted({nb.message for nb in notebooks if nb.code != 201})[:5],
        "cpu_kernels_refused": [s.cpu_refused for s in lab.students if s.cpu_refused][:5],
        "problems": sorted({nb.message for nb in notebooks if nb.code == 201 and nb.message})[:10],
        "double_bookings": {
            "looks": len(monitor.looks),
            "every_s": SAMPLE_EVERY,
            "count": len(monitor.double_bookings),
            "first": monitor.double_bookings[:10],
            "monitor_errors": monitor.errors,
        },
        "utilisation": utilisation(monitor.looks, notebooks, began, ended),
        "waits": waits(lab.students),
        "reclaims": reclaims(
            plan, notebooks, offset, logged(WARNED, lab.log), logged(RECLAIMED, lab.log)
        ),
        "memory": memory(monitor.looks),
        "handoff": handoff(notebooks, monitor),
        # What the service said about idle GPUs, and anything that went wrong.
        "service_log": lab.log_lines("GPU activity", "reclaim", "Traceback", "ERROR"),
        "students_rows": [
            {"student": s.name, **wait_stats([nb.wait for nb in s.notebooks])} for s in lab.students
        ],
    }


def utilisation(
    looks: list[Look], notebooks: list[Notebook], began: float, ended: float
) -> dict[str, Any]:
    """The fraction of GPU-seconds booked over the round (each look weighs until the next), and
    over the time some GPU start waited (its POST sent, not answered yet)."""
    inside = [look for look in looks if began <= look.at <= ended]
    booked = waiting_booked = total = waiting_total = 0.0
    for look, after in zip(inside, inside[1:], strict=False):
        span = after.at - look.at
        booked += look.booked * span
        total += GPUS * span
        someone_waits = any(
            nb.posted is not None
            and nb.posted <= look.at
            and (nb.answered is None or nb.answered > look.at)
            for nb in notebooks
        )
        if someone_waits:
            waiting_booked += look.booked * span
            waiting_total += GPUS * span
    return {
        "booked": booked / total if total else float("nan"),
        "while_waiting": waiting_booked / waiting_total if waiting_total else float("nan"),
        "waiting_s": waiting_total / GPUS,
        "window_s": total / GPUS,
    }


def wait_stats(samples: list[float | None]) -> dict[str, Any]:
    values = [v for v in samples if v is not None]
    return {
        "n": len(values),
        "failures": len(samples) - len(values),
        "p50": statistics.median(values) if values else float("nan"),
        "p95": percentile(values, 0.95),
        "max": max(values) if values else float("nan"),
        "mean": statistics.fmean(values) if values else float("nan"),
    }


def waits(students: list[Student]) -> dict[str, Any]:
    """Each GPU start's wait (its POST until its answer: the queue and the launch), overall and
    per student, and the spread between students: Jain's fairness index of the per-student mean
    waits ((Σx)² / (n·Σx²): 1 when every student waited alike, 1/n when one did all the
    waiting), and the largest per-student mean over the smallest."""
    overall = wait_stats([nb.wait for s in students for nb in s.notebooks])
    means = [
        statistics.fmean(w)
        for s in students
        if (w := [nb.wait for nb in s.notebooks if nb.wait is not None])
    ]
    squares = sum(m * m for m in means)
    per_student_max = [
        max(w) for s in students if (w := [nb.wait for nb in s.notebooks if nb.wait is not None])
    ]
    cpu = [s.cpu_start for s in students if s.cpu_start is not None]
    return {
        "overall": overall,
        "per_student_mean": wait_stats(list(means)),
        "per_student_max": wait_stats(list(per_student_max)),
        "jain_index": sum(means) ** 2 / (len(means) * squares) if squares else float("nan"),
        "max_over_min_mean": max(means) / min(means) if means and min(means) > 0 else float("nan"),
        # A start that never waits, for scale: the students' CPU kernels on the same service.
        "cpu_start": wait_stats(list(cpu)),
    }


def reclaims(
    plan: Plan,
    notebooks: list[Notebook],
    offset: float,
    warned_at: dict[str, float],
    done_at: dict[str, float],
) -> dict[str, Any]:
    """Each reclaim: its warning (the service log's line, to the ms; else its ``release_at``
    less the grace, whole seconds) after the notebook went idle (the service's ``idle_since``,
    whole seconds) against idle_minutes + check_interval; its GPU given back (the monitor's first
    look without the running container, at most SAMPLE_EVERY late) after the warning, against
    grace_minutes + check_interval; and the service's "reclaimed" line (once the shutdown is
    done) after the warning. Every stamp reads late rather than early, so "within" errs on the
    side of "not within"."""
    grace = plan.grace_minutes * 60
    rows = []
    for nb in notebooks:
        if not nb.idle or nb.code != 201:
            continue
        row: dict[str, Any] = {"student": nb.student, "notebook": nb.name, "reclaimed": False}
        if nb.release_at is not None and nb.idle_since is not None and nb.gone is not None:
            warned = warned_at.get(nb.kernel_id, nb.release_at - grace)
            row.update(
                reclaimed=True,
                warned_after_idle_s=warned - nb.idle_since,
                released_after_warning_s=nb.gone + offset - warned,
            )
            if nb.kernel_id in done_at:
                row["done_after_warning_s"] = done_at[nb.kernel_id] - warned
        else:
            row["why_not"] = nb.message or "no reclaim was seen"
        rows.append(row)
    done = [r for r in rows if r["reclaimed"]]
    warn_bound = plan.idle_minutes * 60 + plan.check_interval + 1  # idle_since: whole seconds
    release_bound = grace + plan.check_interval + SAMPLE_EVERY
    # A working notebook's kernel gone before its student shut it down: a wrong reclaim.
    working_lost = [
        nb
        for nb in notebooks
        if not nb.idle
        and nb.kernel_id
        and (
            "DELETE answered" in nb.message
            or (nb.gone is not None and (nb.delete_sent is None or nb.gone < nb.delete_sent))
        )
    ]
    releases = [r["released_after_warning_s"] for r in done]
    return {
        "idle": len(rows),
        "reclaimed": len(done),
        "warned_within": sum(r["warned_after_idle_s"] <= warn_bound for r in done),
        "released_within": sum(r["released_after_warning_s"] <= release_bound for r in done),
        "warn_bound_s": warn_bound,
        "release_bound_s": release_bound,
        "released_after_warning": wait_stats(list(releases)),
        "done_after_warning": wait_stats([r.get("done_after_warning_s") for r in done]),
        "warned_from_log": sum(nb.kernel_id in warned_at for nb in notebooks if nb.idle),
        "working_notebooks_reclaimed": len(working_lost),
        "rows": rows,
    }


def memory(looks: list[Look]) -> dict[str, Any]:
    """The service's resident memory before any kernel, at the look with the most kernels
    running, and at its highest."""
    if not looks:
        return {}
    most = max(looks, key=lambda look: (look.kernels, look.rss))
    return {
        "before_rss": looks[0].rss,
        "most_kernels": most.kernels,
        "most_gpu_kernels": most.gpu_kernels,
        "at_most_kernels_rss": most.rss,
        "at_most_kernels_children_rss": most.children_rss,
        "peak_rss": max(look.rss for look in looks),
        "peak_children_rss": max(look.children_rss for look in looks),
    }


def handoff(notebooks: list[Notebook], monitor: Monitor) -> dict[str, Any]:
    """From a GPU freed to the next waiting start on it answering: for each working notebook's
    DELETE, the first start answered afterwards with that GPU, if it was sent before the DELETE
    (it waited); until its POST's 201, and until its first kernel_info_reply. The same after a
    reclaim, from the monitor's first look without the idle kernel's container."""
    grants = [nb for nb in notebooks if nb.code == 201 and nb.gpus and nb.answered is not None]

    def after(frees: list[tuple[str, float, float]]) -> tuple[list[float], ...]:
        to_booked, to_answer, to_reply = [], [], []
        for gpu, sent, freed in frees:
            later = [(g.answered, g) for g in grants if gpu in g.gpus and (g.answered or 0) > sent]
            if not later:
                continue
            answered, first = min(later, key=lambda pair: pair[0] or 0.0)
            if answered is None or first.posted is None or first.posted >= sent:
                continue  # nobody waited for it: it went to a later request
            to_answer.append(answered - freed)
            if first.replied is not None:
                to_reply.append(first.replied - freed)
            if first.kernel_id in monitor.seen:
                to_booked.append(monitor.seen[first.kernel_id] - freed)
        return to_booked, to_answer, to_reply

    deletes = [
        (gpu, nb.delete_sent, nb.freed)
        for nb in notebooks
        if nb.freed is not None and nb.delete_sent is not None
        for gpu in nb.gpus
    ]
    # The container went between the monitor's previous look and this one.
    reclaimed = [
        (gpu, nb.gone - SAMPLE_EVERY, nb.gone)
        for nb in notebooks
        if nb.idle and nb.gone is not None and nb.delete_sent is None
        for gpu in nb.gpus
    ]
    booked, answer, reply = after(deletes)
    r_booked, r_answer, r_reply = after(reclaimed)
    return {
        # The next kernel's container first seen by the monitor (up to SAMPLE_EVERY late).
        "after_delete_booked": wait_stats(list(booked)),
        "after_reclaim_booked": wait_stats(list(r_booked)),
        "after_delete": wait_stats(list(answer)),
        "after_delete_to_reply": wait_stats(list(reply)),
        "after_reclaim": wait_stats(list(r_answer)),
        "after_reclaim_to_reply": wait_stats(list(r_reply)),
        "frees": len(deletes),
    }
