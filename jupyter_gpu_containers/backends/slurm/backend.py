"""The Slurm backend: each kernel a Slurm job, its container run by the job's user's rootless Podman
on the node Slurm chose, with the GPUs Slurm gave the job (issue #30).

Slurm is the scheduler and the ledger: a kernel asks for a number of GPUs, Slurm decides when and
where the job runs and which GPUs it holds; a kernel that cannot start yet waits in Slurm's queue
with Slurm's reason. The backend keeps its own record of each job it submitted (records.py): a
job's name and comment are its user's to change, so they are never read as labels.

This module holds the configuration and the kernel's lifecycle (create submits the job, start
waits while it pends, state, signals, cancel, logs, the connection the kernel wrote back, the
records listed by label); jobs.py runs Slurm's commands, kernels.py turns a ContainerSpec into a
job, script.py writes its batch script. Every Slurm command blocks: they run on this backend's
threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import functools
import os
import pwd
import secrets
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from jupyter_core.paths import jupyter_data_dir
from traitlets import Dict, Enum, Float, Int, List, Unicode, default
from traitlets.config import LoggingConfigurable

from ...base import labels as L
from ...base.errors import (
    BuildsNotSupported,
    ContainerKernelError,
    EngineRefused,
    EngineUnavailable,
    ImageMissing,
    SchedulerWaitTimedOut,
)
from ...base.records import (
    ContainerRecord,
    ContainerSpec,
    ContainerState,
    ImageRecord,
    ImagesDiskUse,
    OneshotResult,
)
from ..backend import ContainerDetails, Dataset, Finding, GPUHolder
from . import accounting, kernels, logs, nodes
from .jobs import ENDED_BECAUSE, Account, Job, SlurmCommands, SlurmRefused
from .kernels import listed_record
from .records import JobRecord, JobRecords, job_of

T = TypeVar("T")

# Seconds one read of the cluster's nodes (sinfo) answers every panel that asks.
NODES_FRESH_FOR = 2.0
# Seconds one user's GPU-hours read from Slurm's accounting (sacct) answer their panel's asks.
ACCOUNTING_FRESH_FOR = 30.0


def _iso(seconds: float) -> str:
    if not seconds:
        return ""
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat()


class SlurmBackend(LoggingConfigurable):
    """Kernels as Slurm jobs, run as their users, from a kernel service running as root."""

    slurm_conf = Unicode(
        "",
        config=True,
        help="""The Slurm configuration Slurm's commands read (SLURM_CONF); "" for the host's own
        (/etc/slurm/slurm.conf).""",
    )

    command_timeout = Float(
        30.0,
        config=True,
        help="""Seconds one Slurm command (sbatch, squeue, scancel, scontrol) may take before
        Slurm's controller is said not to answer.""",
    )

    max_workers = Int(
        8, config=True, help="""Threads that run Slurm's commands off the event loop."""
    )

    records_dir = Unicode(
        config=True,
        help="""Where the backend keeps its record of each kernel's job (one file per job): a
        directory of this process's account alone (0700; made if missing, refused if another
        account made it). The records let a restarted service find its kernels' jobs again.
        Default: /var/lib/jupyter-gpu-containers/slurm-jobs for a service run as root, else
        slurm-jobs in the user's Jupyter data directory.""",
    )

    @default("records_dir")
    def _default_records_dir(self) -> str:
        if os.geteuid() == 0:
            return "/var/lib/jupyter-gpu-containers/slurm-jobs"
        return os.path.join(jupyter_data_dir(), "gpu-containers", "slurm-jobs")

    partition = Unicode(
        "", config=True, help="""The partition kernels' jobs run in ("": Slurm's default)."""
    )

    account = Unicode(
        "",
        config=True,
        help="""The Slurm account kernels' jobs are charged to ("": each user's default).""",
    )

    qos = Unicode(
        "", config=True, help="""The QOS of kernels' jobs ("": the association's default)."""
    )

    time_limit_minutes = Int(
        0,
        config=True,
        help="""Each kernel's job's time limit in minutes (0: the partition's default). A kernel
        whose job reaches it ends, and its notebook is told why.""",
    )

    cpus_per_kernel = Int(
        0, config=True, help="""CPUs each kernel's job asks for (0: Slurm's default, one)."""
    )

    gres_name = Unicode(
        "gpu", config=True, help="""The GRES that GPUs are (``--gres=<name>:<count>``)."""
    )

    node_gpu_labels = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        default_value={},
        config=True,
        help="""What Slurm does not publish of the cluster's GPU nodes, for the GPU panel's pools
        and the images' verdicts, in NVIDIA GPU feature discovery's label names, e.g.
        ``{"nvidia.com/cuda.driver-version.full": "550.54.15", "nvidia.com/gpu.product":
        "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.memory": "81920"}``. They hold for every GPU
        node; a node's GRES type ("gpu:a100:4") is its product where they name none. Without a
        driver version an image's CUDA cannot be checked ("unknown").""",
    )

    launcher = Enum(
        ["podman", "pyxis"],
        "podman",
        config=True,
        help="""How a kernel's job runs its container on the node. "podman": the user's rootless
        Podman, given the job's GPUs by gpu_device (tested here against a real Slurm). "pyxis":
        NVIDIA's pyxis, the container a job step (``srun --container-image``) of enroot, its
        GPUs the job's through Slurm's cgroup (``ConstrainDevices=yes``); images by enroot's
        names, pulled by enroot on the node. The test cluster has no pyxis: this is not tested
        here (docs/slurm.md).""",
    )

    gpu_device = Unicode(
        "nvidia.com/gpu={index}",
        config=True,
        help="""How the batch script names to Podman each GPU Slurm gave the job, ``{index}``
        being its index on the node (SLURM_JOB_GPUS): NVIDIA's CDI name by default, which
        needs ``nvidia-ctk cdi generate`` on each node and gres.conf numbering the GPUs alike
        (docs/slurm.md).""",
    )

    extra_sbatch_args = List(
        Unicode(),
        config=True,
        help="""The site's own sbatch options for every kernel's job (["--constraint=a100"]).""",
    )

    pending_timeout = Float(
        0.0,
        config=True,
        help="""Seconds a kernel's start waits while its job pends for a reason that can end
        (Resources, Priority, a limit on what the user holds now) before the job is cancelled
        and the start given up; 0 (default): as long as Slurm says it pends for such a reason
        (its user may cancel the start). A reason that cannot end (a hold, a limit on the job
        itself) gives up at once.""",
    )

    restart_wait = Int(
        30,
        config=True,
        help="""Seconds a kernel's job keeps its allocation (its node, its GPUs) after its
        kernel ended, for a restart to run the kernel again in it: a restart whose job would be
        the same (the same GPU count, image and settings) then needs no new job and no wait in
        Slurm's queue, and the job's time limit goes on counting. Otherwise (another request,
        the allocation gone) the restart submits a new job. 0: every restart submits anew, and a
        job ends with its kernel.""",
    )

    poll_interval = Float(
        0.5, config=True, help="""Seconds between looks at a job that pends or starts."""
    )

    probe_account = Unicode(
        "",
        config=True,
        help="""The account whose jobs probe the listed images (is ipykernel there, which
        Python, the image's accounts): its rootless Podman on the nodes must hold every listed
        image, as each user's must (or a read-only image store they all share:
        ``additionalimagestores`` in storage.conf, docs/slurm.md). Required for a service run
        as root; a user's own server probes as that user when it is "".""",
    )

    probe_time_limit_minutes = Int(
        5,
        config=True,
        help="""The time limit of a probe's job, in minutes (Slurm's smallest is one).""",
    )

    resolved_url = Unicode(help="Which Slurm this is, for sentences.")

    # Slurm places kernels and their GPUs; an interrupt is a signal to the job's batch script,
    # which passes it on to the container; each node keeps its users' own images.
    schedules_gpus = True
    kernels_on_shared_nodes = True
    signals_reach_kernels = True
    tags_resolve_per_node = True
    pulls_report_bytes = False  # no pulls: each node's podman pulls for its jobs
    containers_shared = True  # Slurm lists every user's jobs, and the records are the service's
    images_shared = False  # each user's rootless Podman storage on each node

    on_removed: Callable[[ContainerRecord, float], None] | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.resolved_url:
            self.resolved_url = f"Slurm ({self.slurm_conf or 'the host configuration'})"
        self.commands = SlurmCommands(self)
        self.records = JobRecords(self.records_dir)
        self._executor = ThreadPoolExecutor(self.max_workers, thread_name_prefix="jgc-slurm")
        self._addresses: dict[str, str] = {}
        self._deadlines: dict[str, float] = {}  # starts waiting on a pending job: until when
        self._lock = threading.Lock()
        self._nodes_lock = threading.Lock()
        self._nodes_read: tuple[float, list[nodes.NodeGPUs] | None] = (0.0, None)
        # Each user's GPU-hours as sacct said them: (when read, since, hours); one entry per
        # account that asked.
        self._accounted: dict[str, tuple[float, float, float | None]] = {}
        self._closed = False
        self.listed: Callable[[], list[str]] | None = None

    cluster_name = "slurm"

    @property
    def cluster(self) -> SlurmBackend:
        """The GPU panel's nodes and holders are Slurm's (nodes.py)."""
        return self

    def nodes_sync(self) -> list[nodes.NodeGPUs]:
        """The GPU nodes as sinfo says them, read at most once per NODES_FRESH_FOR seconds:
        every open panel asks (its GPUs, its images' verdicts, the holders), and slurmctld is
        the whole cluster's."""
        with self._nodes_lock:
            read_at, found = self._nodes_read
            if found is not None and time.monotonic() - read_at < NODES_FRESH_FOR:
                return found
            out = self.commands.run(["sinfo", "--json"], what="list its nodes")
            found = nodes.nodes_from(out, self.gres_name, self.node_gpu_labels)
            self._nodes_read = (time.monotonic(), found)
            return found

    def cluster_version(self) -> None:
        """None: the jobs are read from Slurm at each look (its nodes at most every
        NODES_FRESH_FOR seconds), with no count of their changes to keep a view by."""
        return None

    def gpu_holders_sync(self) -> list[GPUHolder]:
        records = [r.as_container("") for r in self.records.all()]
        jobs = {job.id: job for job in self.commands.jobs()} if records else {}
        return nodes.gpu_holders(records, jobs, self.nodes_sync(), self.gres_name)

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._closed:
            # The service stops: what its kernels' clean-up still asks (a cancel) runs all the
            # same, on a thread of its own.
            return await asyncio.to_thread(fn)
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def close(self) -> None:
        """No new work for the pool; a start that waits on a pending job gives up at its next
        look (its clean-up then cancels the job)."""
        self._closed = True
        self._executor.shutdown(wait=False)

    def use_images(
        self,
        listed: Callable[[], list[str]],
        pull_auth: Callable[[str], dict[str, str] | None],
    ) -> None:
        """The images are the administrator's listed ones: each user's Podman on the nodes
        keeps its own (or a store they share), which this service neither lists nor pulls."""
        self.listed = listed

    @classmethod
    def kernel_service_problem(cls) -> str:
        if os.geteuid() == 0:
            return ""
        return (
            "A kernel service submits each user's kernels as Slurm jobs of that user (setpriv "
            "to the user's account, then sbatch), which only root can: run the service as root."
        )

    @classmethod
    def active_replica(cls, parent: Any) -> None:
        return None  # one service per host: its unit restarts it, and it reattaches

    # ------------------------------------------------------------------ the engine

    def version_sync(self) -> str:
        out = self.commands.run(["sinfo", "--version"], what="say its version").strip()
        return out.removeprefix("slurm").strip() or out

    async def version(self) -> str:
        return await self._run(self.version_sync)

    async def runtimes(self) -> list[str]:
        return []

    def diagnose_sync(self) -> list[Finding]:
        """Whether Slurm's controller answers, and whether this account may submit for users."""
        findings: list[Finding] = []
        try:
            findings.append(Finding(f"Slurm answers (Slurm {self.version_sync()})."))
        except ContainerKernelError as e:
            findings.append(Finding(e.sentence, problem=True, blocking=True))
        problem = self.kernel_service_problem()
        if problem:
            findings.append(Finding(problem, problem=True, blocking=True))
        return findings

    # ------------------------------------------------------------------ a kernel's job

    def _job_settings(self) -> kernels.JobSettings:
        return kernels.JobSettings(
            partition=self.partition,
            account=self.account,
            qos=self.qos,
            time_limit_minutes=self.time_limit_minutes,
            cpus=self.cpus_per_kernel,
            gres_name=self.gres_name,
            gpu_device=self.gpu_device,
            extra=tuple(self.extra_sbatch_args),
            restart_wait=max(0, self.restart_wait),
            launcher=self.launcher,
        )

    @staticmethod
    def _about(spec: ContainerSpec) -> str:
        return f"jupyter_gpu_containers kernel container {spec.name} ({spec.image})"

    def create_sync(self, spec: ContainerSpec) -> str:
        """Submit ``spec``'s job; its id, which is the kernel's container id from here on. The
        record is written before the id is returned: a service killed right after still knows
        the job."""
        job = kernels.kernel_job(spec, self._job_settings(), description=self._about(spec))
        job_id = self.commands.submit(job.account, job.request, job.script)
        record = JobRecord(
            job_id=job_id,
            name=spec.name,
            image=spec.image,
            labels=dict(spec.labels),
            user=job.account.name,
            uid=job.account.uid,
            gid=job.account.gid,
            private_dir=job.private_dir,
            output=job.request.output,
            created=time.time(),
            digest=job.digest,
        )
        try:
            self.records.save(record)
        except BaseException:
            self.commands.cancel(job_id)  # a job no record names would be nobody's to end
            raise
        return job_id

    async def create(self, spec: ContainerSpec) -> str:
        return await self._run(functools.partial(self.create_sync, spec))

    def _record(self, container_id: str) -> JobRecord:
        record = self.records.get(job_of(container_id)[0])
        if record is None:
            raise EngineRefused(f"No kernel's Slurm job {container_id} is known here.")
        return record

    def _current(self, container_id: str) -> JobRecord | None:
        """The record of the job whose kernel runs in ``container_id`` now; None when there is
        none, or when a restart in the job's allocation has run a later container since."""
        job_id, generation = job_of(container_id)
        record = self.records.get(job_id) if job_id else None
        if record is None or record.generation != generation:
            return None
        return record

    def _state_of(self, record: JobRecord, generation: int, job: Job | None) -> ContainerState:
        """The state of the job's container of ``generation``: one a later container replaced
        ended (how, as the script wrote it); the current one runs while its job runs and the
        script has not written its end."""
        if generation < record.generation:
            ended = kernels.generation_ended(
                record.private_dir, record.uid, record.job_id, generation
            )
            return ContainerState("exited", False, ended[0] if ended else 0, False, "")
        state = kernels.container_state(job)
        if state.status == "running":
            ended = kernels.generation_ended(
                record.private_dir, record.uid, record.job_id, generation
            )
            if ended is not None:
                return ContainerState("exited", False, ended[0], False, "")
        return state

    def _look_sync(self, container_id: str, image: str, said: str) -> tuple[Job | None, str]:
        """One look at a starting job: the job once it runs (None while it pends), and the
        reason last said; a reason that cannot end, or the job's end, is a sentence (the job
        cancelled). Blocking: one Slurm command, two for a refusal."""
        record = self._record(container_id)
        job = self.commands.job(record.job_id)
        if job is not None and job.running:
            return job, said
        if job is None or job.over:
            tail = logs.tail(record.output, record.uid, 10)
            because = ENDED_BECAUSE.get(job.state, "") if job is not None else ""
            # The cluster's doing (or its user's scancel), not this server's: 502, as Slurm's
            # other refusals (jobs.SlurmRefused).
            raise EngineRefused(
                f"The kernel's Slurm job {container_id} for {image} ended before it ran"
                + (f": it {because}." if because else ".")
                + (f" Its output: {tail}" if tail else ""),
                status=502,
            )
        if not job.wait_can_end:
            self.commands.cancel(record.job_id)
            raise EngineRefused(
                f"Slurm cannot start the kernel's job {container_id}: it waits for "
                f"{job.reason}, which will not pass by itself. Ask for fewer GPUs or less "
                "time, or ask the cluster's administrators.",
                status=409,
            )
        if job.reason != said and job.reason != "None":  # "None": not judged yet
            said = job.reason
            self.log.info(
                "The kernel's Slurm job %s for %s waits: %s", container_id, image, job.reason
            )
        if self.pending_timeout > 0 and time.monotonic() > self._deadline(container_id):
            self.commands.cancel(record.job_id)
            raise SchedulerWaitTimedOut(
                f"Slurm did not start the kernel's job {container_id} within "
                f"{self.pending_timeout:.0f} s, the longest a start waits here (it waited for "
                f"{job.reason}); it was cancelled. Try again later, or ask for fewer GPUs.",
                setting="SlurmBackend.pending_timeout",
            )
        return None, said

    def _deadline(self, container_id: str) -> float:
        with self._lock:
            return self._deadlines.setdefault(container_id, time.monotonic() + self.pending_timeout)

    async def start(self, container_id: str, image: str) -> None:
        """Until the job runs: while it pends for a reason that can end, up to
        ``pending_timeout``; a reason that cannot end, or the job's end, is a sentence (the job
        cancelled). The launch timeout then counts for the kernel's own start. Each look is one
        task on the backend's threads: a pending job holds none of them while it waits (a
        student's pending starts must not take the threads everyone's Slurm calls run on)."""
        said = ""
        try:
            while True:
                job, said = await self._run(
                    functools.partial(self._look_sync, container_id, image, said)
                )
                if job is not None:
                    break
                if self._closed:
                    raise EngineUnavailable(
                        f"The kernel service stopped while the kernel's Slurm job {container_id} "
                        "waited to start."
                    )
                await asyncio.sleep(self.poll_interval)
        finally:
            with self._lock:
                self._deadlines.pop(container_id, None)
        address = await self._run(functools.partial(self.commands.node_address, job.node))
        with self._lock:
            self._addresses[container_id] = address

    async def address(self, container_id: str) -> str:
        """The node's address (where the kernel's ports are), once its job runs."""
        with self._lock:
            known = self._addresses.get(container_id)
        if known:
            return known
        job = await self._run(functools.partial(self.commands.job, job_of(container_id)[0]))
        if job is None or not job.node:
            return ""
        address = await self._run(functools.partial(self.commands.node_address, job.node))
        with self._lock:
            self._addresses[container_id] = address
        return address

    def connection_sync(self, container_id: str) -> dict[str, Any] | None:
        """The kernel's connection once its channel relay wrote its ports back
        (kernels.written_connection), without its address; None before."""
        record = self._record(container_id)
        return kernels.written_connection(record.private_dir, record.uid)

    async def connection_info(self, container_id: str) -> dict[str, Any]:
        """The kernel's connection as its channel relay wrote it back, on its node's
        address."""
        info = await self._run(functools.partial(self.connection_sync, container_id))
        address = await self.address(container_id)
        if info is None or not address:
            raise EngineRefused(
                f"The kernel of Slurm job {container_id} has not written its ports yet."
            )
        return {**info, "ip": address}

    def state_sync(self, container_id: str) -> ContainerState | None:
        job_id, generation = job_of(container_id)
        record = self.records.get(job_id) if job_id else None
        if record is None or generation > record.generation:
            return None
        job = None if generation < record.generation else self.commands.job(job_id)
        return self._state_of(record, generation, job)

    async def state(self, container_id: str) -> ContainerState | None:
        return await self._run(functools.partial(self.state_sync, container_id))

    def kill_sync(self, container_id: str, signum: int) -> None:
        """A signal for the kernel: to the job's batch script, which passes it on to the
        container (script.py); SIGKILL and SIGTERM end the job (its script stops the
        container). A container a restart in the job's allocation replaced is gone: nothing
        to signal."""
        self._record(container_id)
        record = self._current(container_id)
        if record is None:
            return
        if signum in (signal.SIGKILL, signal.SIGTERM):
            self.commands.cancel(record.job_id)
        else:
            self.commands.signal(record.job_id, signum)

    async def kill(self, container_id: str, signum: int) -> None:
        await self._run(functools.partial(self.kill_sync, container_id, signum))

    def remove_sync(self, container_id: str) -> bool:
        """Cancel the job and forget it; whether there was one to remove. Whoever listens is
        told (the GPU-hours a job held are Slurm's to account, but the quota's record of the
        kernel ends here too). A container a restart in the job's allocation replaced is gone
        already, and its job is the kernel's still: nothing to remove."""
        record = self._current(container_id)
        if record is None:
            return False
        self.commands.cancel(record.job_id)
        self.records.drop(record.job_id)
        with self._lock:
            self._addresses.pop(container_id, None)
        listener = self.on_removed
        if listener is not None:
            try:
                listener(record.as_container("exited"), time.time())
            except Exception as e:  # the removal stands whatever its bookkeeping does
                self.log.warning("After removing Slurm job %s: %s", container_id, e)
        return True

    async def remove(self, container_id: str) -> None:
        await self._run(functools.partial(self.remove_sync, container_id))

    async def remove_or_defer(self, container_id: str) -> bool:
        """Cancel now; when Slurm does not answer, the next start's recovery cancels what is
        left (its record stays)."""
        try:
            await self.remove(container_id)
        except ContainerKernelError as e:
            self.log.warning("Slurm job %s could not be cancelled: %s", container_id, e)
            return False
        return True

    async def remove_deferred(self) -> None:
        """Nothing is deferred (remove_or_defer keeps the record instead)."""

    async def logs_tail(self, container_id: str, lines: int = 20) -> str:
        record = await self._run(functools.partial(self.records.get, job_of(container_id)[0]))
        if record is None:
            return ""
        return await self._run(functools.partial(logs.tail, record.output, record.uid, lines))

    def open_logs_sync(
        self, container_id: str, tail: int, follow: bool
    ) -> logs.FollowedOutput | None:
        """The job's output, its last ``tail`` lines, then (``follow``) each new line while the
        job runs; None when the job is unknown or has printed nothing yet. Blocking: a thread
        of the caller's own."""
        record = self.records.get(job_of(container_id)[0])
        if record is None:
            return None

        def running() -> bool:
            try:
                state = self.state_sync(container_id)
            except ContainerKernelError:
                return True  # Slurm away for a moment: keep following
            return state is not None and not state.ended

        return logs.open_output(
            record.output, record.uid, tail, follow, running, self.poll_interval
        )

    async def details(self, container_id: str) -> ContainerDetails | None:
        job_id, generation = job_of(container_id)
        record = await self._run(functools.partial(self.records.get, job_id))
        if record is None or generation > record.generation:
            return None
        job = await self._run(functools.partial(self.commands.job, job_id))
        state = await self._run(functools.partial(self._state_of, record, generation, job))
        return ContainerDetails(
            id=container_id,
            name=record.name,
            image_id="",  # known on the node only
            image_ref=record.image,
            labels=dict(record.labels),
            status=state.status,
            created=_iso(record.created),
            started_at=_iso(job.started) if job is not None and not job.waiting else "",
            finished_at=_iso(job.ended) if job is not None and job.over else "",
            exit_code=state.exit_code,
            oom_killed=state.oom_killed,
            error=state.error,
            mounts=(),
            tmpfs=(),
        )

    # A kernel's data is its spec's extra mounts (on the nodes' shared file system).
    kernel_datasets: tuple[Dataset, ...] = ()

    # ------------------------------------------------------------------ restarts in the allocation

    @property
    def kept_allocations(self) -> SlurmBackend | None:
        """A restart runs the kernel again in its job (restart_wait), where it would be the
        same job; None when restart_wait is 0."""
        return self if self.restart_wait > 0 else None

    def stop_for_restart_sync(self, container_id: str) -> None:
        """SIGALRM to the job's script (script.RESTART_SIGNAL): it stops the container and waits
        for the next generation, the job and its GPUs kept. Nothing when the container has
        ended already (the kernel left on its own, as it does on a restart's shutdown
        request)."""
        record = self._current(container_id)
        if record is None:
            return
        job = self.commands.job(record.job_id)
        if self._state_of(record, record.generation, job).status == "running":
            self.commands.signal(record.job_id, signal.SIGALRM)

    async def stop_for_restart(self, container_id: str) -> None:
        await self._run(functools.partial(self.stop_for_restart_sync, container_id))

    def continue_in_sync(self, container_id: str, spec: ContainerSpec) -> str | None:
        """The next generation of the stopped container's job runs ``spec``, when its job
        would be the same job (kernels.KernelJob.digest: the same request to Slurm, the same
        script), the job still runs, and its last container ended recently enough that the
        script still waits (half of restart_wait); its id, else None."""
        record = self._current(container_id)
        if record is None or not record.digest:
            return None
        # The job keeps its name (each launch names its container afresh): all else must be
        # the same.
        spec = dataclasses.replace(spec, name=record.name)
        wanted = kernels.kernel_job(spec, self._job_settings(), description=self._about(spec))
        job = self.commands.job(record.job_id)
        ended = kernels.generation_ended(
            record.private_dir, record.uid, record.job_id, record.generation
        )
        why_not = ""
        if wanted.digest != record.digest:
            why_not = "it asks Slurm for another job (its GPUs, image or settings changed)"
        elif job is None or not job.running:
            why_not = "the job has ended"
        elif ended is None:
            why_not = "its kernel's container did not stop"
        elif time.time() - ended[1] > self.restart_wait / 2:
            why_not = "the job was about to end (SlurmBackend.restart_wait)"
        if why_not:
            self.log.info(
                "The kernel's restart submits a new job instead of running in job %s: %s.",
                record.job_id,
                why_not,
            )
            return None
        following = dataclasses.replace(record, generation=record.generation + 1)
        # The record first: a service killed in between finds the job's new container (whose
        # start its recovery then waits for), never a job it lost track of.
        self.records.save(following)
        try:
            kernels.order_generation(
                record.private_dir,
                (record.uid, record.gid),
                record.job_id,
                following.generation,
            )
        except OSError as e:  # the private directory gone or refused: a new job then
            self.records.save(record)
            self.log.warning(
                "The kernel's restart could not run in job %s (%s): it submits a new job.",
                record.job_id,
                e,
            )
            return None
        with self._lock:
            self._addresses.pop(container_id, None)
        self.log.info(
            "Kernel restart in Slurm job %s's allocation (its container %d)",
            record.job_id,
            following.generation,
        )
        return following.container_id

    async def continue_in(self, container_id: str, spec: ContainerSpec) -> str | None:
        return await self._run(functools.partial(self.continue_in_sync, container_id, spec))

    # ------------------------------------------------------------------ accounting

    accounted_by = "Slurm"

    @property
    def gpu_accounting(self) -> SlurmBackend:
        """Each user's GPU-hours as Slurm's accounting records them (sacct)."""
        return self

    def gpu_hours_sync(self, user: str, since: float, until: float) -> float | None:
        """GPU-hours of every job of ``user``'s that held GPUs between ``since`` and
        ``until``, as sacct reports them, read at most once per ACCOUNTING_FRESH_FOR seconds
        per user (the panel asks often; slurmdbd is the cluster's); None where the cluster
        keeps no accounting."""
        with self._lock:
            read = self._accounted.get(user)
        if (
            read is not None
            and read[1] == since
            and time.monotonic() - read[0] < ACCOUNTING_FRESH_FOR
        ):
            return read[2]
        out = self.commands.accounting(user, since)
        hours = (
            None
            if out is None
            else accounting.gpu_seconds(out, user, self.gres_name, since, until) / 3600.0
        )
        with self._lock:
            self._accounted[user] = (time.monotonic(), since, hours)
        return hours

    # ------------------------------------------------------------------ the ledger and recovery

    def list_containers_sync(self, labels: dict[str, str | None]) -> list[ContainerRecord]:
        """The recorded jobs whose labels meet ``labels``, each with its state now. A recorded
        job Slurm no longer lists has ended."""
        records = [r for r in self.records.all() if r.matches(labels)]
        if not records:
            return []
        jobs = {job.id: job for job in self.commands.jobs()}
        return [
            r.as_container(self._state_of(r, r.generation, jobs.get(r.job_id)).status)
            for r in records
        ]

    async def list_containers(self, labels: dict[str, str | None]) -> list[ContainerRecord]:
        return await self._run(functools.partial(self.list_containers_sync, labels))

    async def ledger_containers(self) -> list[ContainerRecord]:
        """The managed kernel jobs, for the GPU ledger (Slurm books GPUs; this mirrors it)."""
        return await self.list_containers({L.MANAGED: "true"})

    def pending_reason_sync(self, container_id: str) -> tuple[str, float | None] | None:
        """Why the job still pends (Slurm's reason) and when Slurm expects it to start (unix
        time, or None); None when it no longer pends."""
        job_id = job_of(container_id)[0]
        job = self.commands.job(job_id)
        if job is None or not job.waiting:
            return None
        try:
            estimate = self.commands.start_estimate(job_id)
        except SlurmRefused:
            estimate = None
        return job.reason, estimate

    # ------------------------------------------------------------------ images and the probe

    def _listed(self) -> list[str]:
        return self.listed() if self.listed is not None else []

    def list_images_sync(self) -> list[ImageRecord]:
        """The listed images, each by its reference (what a node resolves it to is the node's:
        the probe's answer is kept per reference)."""
        return [listed_record(ref) for ref in self._listed()]

    async def list_images(self) -> list[ImageRecord]:
        return self.list_images_sync()

    def inspect_image_sync(self, ref: str) -> ImageRecord:
        if ref in self._listed():
            return listed_record(ref)
        raise ImageMissing(
            f"The image {ref} is not one the administrator lists for the Slurm cluster: kernels "
            "there run listed images only. Ask an administrator to list it, or choose a listed "
            "image.",
            setting="ImageCatalog.listed_images",
        )

    async def inspect_image(self, ref: str) -> ImageRecord:
        return self.inspect_image_sync(ref)

    def watch_images(self, on_change: Callable[[], None], stop: threading.Event) -> None:
        """The listed images change only with the configuration: nothing to watch. Returns once
        ``stop`` is set or the backend closes."""
        while not stop.is_set() and not self._closed:
            stop.wait(5.0)

    def wake_watchers(self) -> None:
        """Nothing waits but on its own stop event."""

    def open_pull(
        self, ref: str, tag: str, auth_config: dict[str, str] | None, *, registry: str, who: str
    ) -> Any:
        raise EngineRefused(
            "On Slurm each user's Podman on the nodes keeps its images (or a store the "
            "administrator fills): this service pulls none."
        )

    def build_refusal(self) -> str:
        return (
            "On Slurm each node's Podman keeps its own images: an image saved here would not "
            "reach the node of your next kernel. Your packages stay in your workspace, on every "
            "kernel of this image."
        )

    def build_steps(self) -> None:
        """No builds here (build_refusal says why)."""
        return None

    def tag_sync(self, image_id: str, ref: str) -> None:
        raise BuildsNotSupported("On Slurm images live on the nodes; this service names none.")

    def untag_sync(self, ref: str) -> None:
        raise EngineRefused("On Slurm images live on the nodes; this service removes none.")

    def image_disk_use_sync(self) -> ImagesDiskUse:
        return ImagesDiskUse(images=(), layers_size=0)

    def _probe_account(self) -> Account:
        if not self.probe_account and os.geteuid() != 0:  # a user's own server: theirs
            entry = pwd.getpwuid(os.geteuid())
            return Account(entry.pw_name, entry.pw_uid, os.getegid())
        if not self.probe_account:
            raise EngineRefused(
                "No account probes the Slurm cluster's images: an administrator must name an "
                "account whose Podman on the nodes holds the listed images.",
                setting="SlurmBackend.probe_account",
            )
        try:
            entry = pwd.getpwnam(self.probe_account)
        except KeyError:
            raise EngineRefused(
                f"The account named to probe the Slurm cluster's images, {self.probe_account!r}, "
                "is not in this host's user database: an administrator must name another.",
                setting="SlurmBackend.probe_account",
            ) from None
        return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)

    def run_oneshot_sync(
        self,
        image: str,
        command: list[str],
        *,
        labels: dict[str, str],
        timeout: float,
        entrypoint: list[str] | None = None,
        user: str | None = None,
        cap_add: list[str] | None = None,
        no_new_privileges: bool = True,
        environment: dict[str, str] | None = None,
    ) -> OneshotResult:
        """``command`` in a throw-away container of ``image`` (the readiness probe's), as a task
        of ``probe_account`` that ``srun`` waits on (its output relayed here), hardened, with no
        network and no GPU; past ``timeout`` s its job is cancelled."""
        account = self._probe_account()
        name = f"jgc-probe-{os.getpid()}-{secrets.token_hex(5)}"
        argv = [
            f"--job-name={name}",
            "--nodes=1",
            "--ntasks=1",
            f"--time={max(1, self.probe_time_limit_minutes)}",
            *([f"--partition={self.partition}"] if self.partition else []),
            *([f"--account={self.account}"] if self.account else []),
            *([f"--qos={self.qos}"] if self.qos else []),
            *self.extra_sbatch_args,
        ]
        if self.launcher == "pyxis":
            # The image's own entry point, user and capabilities are pyxis's and enroot's
            # (the user's account, no capabilities).
            script = ""
            argv += kernels.pyxis_oneshot_args(image, command, environment or {})
        else:
            script = kernels.oneshot_script(
                image,
                command,
                home=pwd.getpwuid(account.uid).pw_dir,
                labels=labels,
                entrypoint=entrypoint,
                user=user,
                cap_add=cap_add or [],
                no_new_privileges=no_new_privileges,
                environment=environment or {},
            )
            argv += ["--export=NONE", "/bin/sh", "-s"]
        code, out, err, timed_out = self.commands.run_task(
            account, argv, stdin=script, timeout=timeout
        )
        if timed_out:
            with contextlib.suppress(ContainerKernelError):
                self.commands.cancel_named(name)
        elif code != 0 and kernels.image_not_known(err):
            raise ImageMissing(
                f"The image {image} is not in the Podman storage of {account.name} (the account "
                "that probes the cluster's images) on the node Slurm chose: an administrator "
                "must load or pull it there, as for every user who runs it.",
                setting="SlurmBackend.probe_account",
            )
        return OneshotResult(exit_code=code, stdout=out, stderr=err, timed_out=timed_out)
