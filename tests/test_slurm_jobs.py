"""The Slurm backend's jobs (backends/slurm/jobs.py) against a real Slurm (tests/slurm_cluster.py):
submitted as the user, the GPUs Slurm gave read back from Slurm, a wait with Slurm's reason, a
signal that reaches the job's script without ending the job, a time limit said as the reason
the job ended, and one user's job out of another's reach."""

from __future__ import annotations

import json
import os
import pwd
import shlex
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import podman_user
import pytest
from conftest import DEBIAN_IMAGE, TEST_LABEL
from conftest import TEST_RUN as RUN
from slurm_cluster import SlurmCluster

from jupyter_gpu_containers.backends.podman_args import env_lines
from jupyter_gpu_containers.backends.slurm import accounting, nodes
from jupyter_gpu_containers.backends.slurm.backend import SlurmBackend
from jupyter_gpu_containers.backends.slurm.jobs import (
    Account,
    Job,
    JobRequest,
    SlurmCommands,
    SlurmRefused,
    gpu_indices,
    job_from,
)
from jupyter_gpu_containers.backends.slurm.script import (
    batch_script,
    generation_file,
    pyxis_batch_script,
)
from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.base.records import ContainerRecord

STUDENT_A = os.environ.get("JGC_TEST_STUDENT_A", "")
STUDENT_B = os.environ.get("JGC_TEST_STUDENT_B", "")

pytestmark = pytest.mark.skipif(
    not STUDENT_A or not STUDENT_B or os.getuid() != 0,
    reason="needs root and two student accounts (scripts/test.sh sets them up)",
)


@dataclass
class Settings:
    slurm_conf: str
    command_timeout: float = 30.0


def account(name: str) -> Account:
    entry = pwd.getpwnam(name)
    return Account(name, entry.pw_uid, entry.pw_gid)


def until(found: Callable[[], Job | None], timeout: float, what: str) -> Job:
    """The job once ``found()`` returns it; fails after ``timeout`` s, saying ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        job = found()
        if job is not None:
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout:.0f} s: {what}")
        time.sleep(0.2)


class Jobs:
    """Submits this test's jobs (named for the test run) and cancels them all at its end."""

    def __init__(self, cluster: SlurmCluster, tmp: Path) -> None:
        self.cluster = cluster
        self.commands = SlurmCommands(Settings(str(cluster.conf)))
        self.tmp = tmp
        self.ids: list[str] = []

    def submit(self, user: str, script: str, **options: object) -> str:
        who = account(user)
        out = self.tmp / f"{user}-{len(self.ids)}.out"
        request = JobRequest(
            name=f"jgc-test-{RUN}",
            workdir=str(self.tmp),
            output=str(out),
            comment=f"jgc-test-run={RUN}",
            **options,  # type: ignore[arg-type]
        )
        job_id = self.commands.submit(who, request, "#!/bin/sh\n" + script)
        self.ids.append(job_id)
        return job_id

    def output(self, user: str, index: int) -> str:
        path = self.tmp / f"{user}-{index}.out"
        return path.read_text() if path.exists() else ""

    def state(self, job_id: str, *states: str) -> Callable[[], Job | None]:
        def found() -> Job | None:
            job = self.commands.job(job_id)
            return job if job is not None and job.state in states else None

        return found

    def cancel_all(self) -> None:
        for job_id in self.ids:
            self.commands.cancel(job_id)


@pytest.fixture
def jobs(slurm_cluster: SlurmCluster) -> Iterator[Jobs]:
    # Outside pytest's root-only tmp_path: the jobs run as the students and write here.
    tmp = Path(slurm_cluster.workdir / "jobs" / os.urandom(4).hex())
    tmp.mkdir(parents=True)
    tmp.chmod(0o1777)
    made = Jobs(slurm_cluster, tmp)
    try:
        yield made
    finally:
        made.cancel_all()
        # A job killed before its container ended leaves it (podman's conmon is not the job's).
        for user in (STUDENT_A, STUDENT_B):
            podman_user.remove_test_containers(user)


def test_gpu_indices_are_read_from_slurms_own_words() -> None:
    assert gpu_indices(["gpu:2(IDX:0-1)"]) == (0, 1)
    assert gpu_indices(["gpu:a100:3(IDX:0,2-3)"]) == (0, 2, 3)
    assert gpu_indices(["gpu:1(IDX:N/A)", "nic:1(IDX:0)"]) == ()
    assert gpu_indices([]) == ()


def test_a_nodes_gpus_are_read_from_sinfo_per_gres_type() -> None:
    sinfo = json.dumps(
        {
            "nodes": [
                # As 22.05 lists them (one node per partition it is in: listed once here).
                {
                    "name": "a",
                    "state": "mixed",
                    "gres": "gpu:a100:4(S:0-1),mps:400",
                    "gres_used": "gpu:a100:3(IDX:0-2),mps:0",
                },
                {
                    "name": "a",
                    "state": "mixed",
                    "gres": "gpu:a100:4(S:0-1),mps:400",
                    "gres_used": "gpu:a100:3(IDX:0-2),mps:0",
                },
                {
                    "name": "b",
                    "state": "idle",
                    "state_flags": ["DRAIN"],
                    "gres": "gpu:2",
                    "gres_used": "gpu:0",
                },
                {"name": "c", "state": ["IDLE"], "gres": "gpu:t4:1,gpu:l4:2", "gres_used": ""},
                {"name": "cpu", "state": "idle", "gres": "", "gres_used": ""},
            ]
        }
    )
    rows = nodes.nodes_from(sinfo, "gpu", {"nvidia.com/cuda.driver-version.full": "550.54.15"})
    assert [(r.name, r.resource, r.allocatable, r.in_use, r.ready) for r in rows] == [
        ("a", "gpu:a100", 4, 3, True),
        ("b", "gpu", 2, 0, False),
        ("c", "gpu:l4", 2, 0, True),
        ("c", "gpu:t4", 1, 0, True),
    ]
    # The GRES type is the product where the administrator's labels name none.
    assert rows[0].labels == {
        "nvidia.com/cuda.driver-version.full": "550.54.15",
        "nvidia.com/gpu.product": "a100",
    }
    assert "nvidia.com/gpu.product" not in rows[1].labels


def test_a_nodes_gpus_held_are_the_kernels_jobs_and_what_other_jobs_hold() -> None:
    node = nodes.NodeGPUs(name="a", resource="gpu:a100", allocatable=4, in_use=3)
    kernel_job = job_from(
        {
            "job_id": 12,
            "job_state": "RUNNING",
            "batch_host": "a",
            "gres_detail": ["gpu:a100:2(IDX:1,3)"],
        }
    )
    pending = job_from({"job_id": 13, "job_state": "PENDING", "state_reason": "Resources"})
    record = ContainerRecord(
        id="12",
        name="k",
        image="img",
        labels={L.KERNEL_ID: "kid", L.UID: "1000", L.USER: "alice", L.NOTEBOOK: "n.ipynb"},
        status="running",
    )
    waiting = ContainerRecord(id="13", name="w", image="img", labels={}, status="created")
    held = nodes.gpu_holders([record, waiting], {"12": kernel_job, "13": pending}, [node], "gpu")
    assert [(h.node, h.pod, h.count, h.resource, h.indices, h.kernel_id) for h in held] == [
        ("a", "12", 2, "gpu:a100", (1, 3), "kid"),
        ("a", "", 1, "gpu:a100", (), ""),  # someone's batch job
    ]


@pytest.mark.parametrize(
    ("reason", "ends"),
    [
        ("Resources", True),
        ("Priority", True),
        ("QOSMaxGRESPerUser", True),
        ("AssocGrpGRES", True),
        ("QOSMaxGRESPerJob", False),
        ("QOSMaxWallDurationPerJobLimit", False),
        ("PartitionTimeLimit", False),
        ("JobHeldUser", False),
        ("JobHeldAdmin", False),
    ],
)
def test_a_wait_is_judged_by_whether_slurms_reason_can_end(reason: str, ends: bool) -> None:
    job = job_from({"job_id": 7, "job_state": "PENDING", "state_reason": reason})
    assert job.waiting and job.wait_can_end is ends


def test_a_job_runs_as_its_user_on_the_gpus_slurm_gave_it(jobs: Jobs) -> None:
    job_id = jobs.submit(
        STUDENT_A,
        'echo "$(id -u) $(id -un) $SLURM_JOB_GPUS $CUDA_VISIBLE_DEVICES"\n'
        # --export=NONE: nothing of the submitting process's environment reaches the job.
        'echo "secret=${JGC_TEST_RUN:-none}"\n',
        gpus=2,
    )
    job = until(jobs.state(job_id, "COMPLETED"), 60, f"job {job_id} did not complete")
    entry = pwd.getpwnam(STUDENT_A)
    assert (job.uid, job.user) == (entry.pw_uid, STUDENT_A)
    assert job.node == jobs.cluster.node
    lines = jobs.output(STUDENT_A, 0).splitlines()
    uid, name, slurm_gpus, cuda = lines[0].split()
    assert (int(uid), name) == (entry.pw_uid, STUDENT_A)
    assert slurm_gpus == cuda
    assert len(slurm_gpus.split(",")) == 2
    assert lines[1] == "secret=none"


def test_a_job_waits_with_slurms_reason_and_starts_when_gpus_free(jobs: Jobs) -> None:
    holder = jobs.submit(STUDENT_A, "sleep 300\n", gpus=jobs.cluster.gpus)
    held = until(jobs.state(holder, "RUNNING"), 60, "the job holding every GPU did not run")
    assert sorted(held.gpus) == list(range(jobs.cluster.gpus))

    waiting = jobs.submit(STUDENT_B, "sleep 300\n", gpus=1)
    pending = until(jobs.state(waiting, "PENDING"), 30, "the second job did not pend")
    pending = until(
        lambda: (j := jobs.commands.job(waiting)) and (j if j.reason != "None" else None),
        30,
        "Slurm gave no reason for the wait",
    )
    assert pending.reason == "Resources"
    assert pending.waiting and pending.wait_can_end and pending.gpus == ()

    jobs.commands.cancel(holder)
    started = until(jobs.state(waiting, "RUNNING"), 60, "the waiting job did not start")
    assert len(started.gpus) == 1
    ended = until(jobs.state(holder, "CANCELLED"), 30, "the first job is not listed cancelled")
    assert ended.why_ended() == f"its Slurm job {holder} was cancelled"


def test_a_signal_reaches_the_jobs_script_and_the_job_goes_on(jobs: Jobs) -> None:
    job_id = jobs.submit(
        STUDENT_A,
        "trap 'echo interrupted' INT\n"
        "echo ready\n"
        # sleep in the background and wait: a trap runs as soon as the signal comes.
        "while true; do sleep 1 & wait $!; done\n",
        gpus=1,
    )
    until(jobs.state(job_id, "RUNNING"), 60, "the job did not run")
    deadline = time.monotonic() + 30
    while "ready" not in jobs.output(STUDENT_A, 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    jobs.commands.signal(job_id, signal.SIGINT)
    while "interrupted" not in jobs.output(STUDENT_A, 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "interrupted" in jobs.output(STUDENT_A, 0)
    job = jobs.commands.job(job_id)
    assert job is not None and job.running, job
    # Ended, it has no script to signal: no error (a kernel's shutdown that meets a job its
    # time limit just ended must succeed).
    jobs.commands.cancel(job_id)

    def ended() -> bool:
        job = jobs.commands.job(job_id)
        return job is None or job.over

    until(ended, 60, "the job did not end")
    jobs.commands.signal(job_id, signal.SIGINT)
    jobs.commands.cancel(job_id)


def test_a_pyxis_scripts_step_gets_the_environment_signals_and_restarts(jobs: Jobs) -> None:
    """The script for a site with pyxis (SlurmBackend.launcher = "pyxis"), with what only pyxis
    understands taken out of its srun line (the --container-* options: this cluster has no
    pyxis, docs/slurm.md), run by the real Slurm: the kernel's command is a step of the job with
    the environment the script exported, an interrupt to the batch script reaches the step and
    the job goes on, and a restart ends the step and runs the next generation's in the same
    job."""
    entry = pwd.getpwnam(STUDENT_A)
    script = pyxis_batch_script(
        "nvcr.io/nvidia/pytorch:24.05-py3",
        [
            "sh",
            "-c",
            # One line: the test finds the srun line of the script by its lines.
            "trap 'echo interrupted' INT; "
            'echo "session: $JPY_SESSION_NAME"; echo "step $SLURM_STEP_ID ready"; '
            "while true; do sleep 1 & wait $!; done",
        ],
        mounts=[("/shared/home", "/shared/home", False)],
        workdir="/shared/home",
        home=entry.pw_dir,
        description="jupyter_gpu_containers test: a pyxis script without pyxis",
        environment=env_lines({"JPY_SESSION_NAME": "it's a $HOME `notebook`"}).decode(),
        restart_wait=30,
    )
    lines = script.splitlines()
    [at] = [i for i, line in enumerate(lines) if line.strip().startswith("srun ")]
    argv = shlex.split(lines[at].strip().removesuffix(" &"))
    kept = [arg for arg in argv if not arg.startswith(("--container-", "--no-container-"))]
    assert len(kept) == len(argv) - 4, argv
    lines[at] = "  " + shlex.join(kept) + " &"
    job_id = jobs.submit(STUDENT_A, "\n".join(lines[1:]) + "\n", gpus=1)
    until(jobs.state(job_id, "RUNNING"), 60, "the job did not run")

    def output_has(text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in jobs.output(STUDENT_A, 0) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert text in jobs.output(STUDENT_A, 0)

    output_has("step 0 ready")
    assert "session: it's a $HOME `notebook`" in jobs.output(STUDENT_A, 0)
    jobs.commands.signal(job_id, signal.SIGINT)
    output_has("interrupted")
    job = jobs.commands.job(job_id)
    assert job is not None and job.running, job

    # A restart in the allocation: the step ends, its status is written, the next one runs.
    jobs.commands.signal(job_id, signal.SIGALRM)
    exit_file = jobs.tmp / generation_file(job_id, 0, "exit")
    deadline = time.monotonic() + 60
    while not exit_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert exit_file.exists(), jobs.output(STUDENT_A, 0)
    next_file = jobs.tmp / generation_file(job_id, 1, "next")
    next_file.touch()
    os.chown(next_file, entry.pw_uid, entry.pw_gid)
    output_has("step 1 ready")
    job = jobs.commands.job(job_id)
    assert job is not None and job.running, job


def test_gpu_seconds_are_read_from_saccts_own_lines() -> None:
    """Each job of the user's: its GPUs (the untyped GRES only, not counted twice with its
    type), from its start to its end or, while it runs, to ``until``, within the period; a job
    that never started, another user's line, a line of another shape: nothing."""
    import datetime

    def at(seconds: float) -> str:
        return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%dT%H:%M:%S")

    base = 1_800_000_000
    out = "\n".join(
        [
            f"1|ann|{at(base)}|{at(base + 100)}|billing=1,cpu=1,gres/gpu=2,node=1",
            f"2|ann|{at(base + 50)}|Unknown|cpu=1,gres/gpu:a100=1,gres/gpu=1,node=1",
            "3|ann|Unknown|Unknown|cpu=1,gres/gpu=4",
            f"4|bob|{at(base)}|{at(base + 100)}|gres/gpu=4",
            f"5|ann|{at(base)}|{at(base + 100)}|cpu=1,node=1",
            "a line of another shape",
        ]
    )
    # Job 1: 2 GPUs for 100 s; job 2: 1 GPU from +50 to until (+150).
    assert accounting.gpu_seconds(out, "ann", "gpu", base, base + 150) == 2 * 100 + 100
    # From +60: job 1's last 40 s, job 2's 90.
    assert accounting.gpu_seconds(out, "ann", "gpu", base + 60, base + 150) == 2 * 40 + 90
    assert accounting.gpu_seconds(out, "bob", "gpu", base, base + 150) == 4 * 100
    assert accounting.gpu_seconds(out, "cid", "gpu", base, base + 150) == 0


def test_gpu_hours_come_from_slurms_accounting_per_user(
    jobs: Jobs, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """slurmdbd records each job's GPUs and times: a user's GPU-hours over a period are what
    their jobs held in it (SlurmBackend.gpu_hours_sync, through sacct), as slurmctld itself
    started and ended the job, clipped to the period; another user's jobs are not theirs; a site
    without accounting has no count (None), not zero. The job is the probe account's: the only
    GPUs it ever holds are this test's (the students' are every Slurm test's)."""
    prober = podman_user.PODMAN_USER
    if not prober:
        pytest.skip("needs the Podman account (scripts/test.sh)")
    mine = jobs.submit(prober, "sleep 3", gpus=2)
    theirs = jobs.submit(STUDENT_B, "sleep 3", gpus=1)
    done = [
        until(jobs.state(j, "COMPLETED"), 120, f"job {j} never completed") for j in (mine, theirs)
    ]
    started, ended = done[0].started, done[0].ended
    assert ended - started >= 2, done[0]

    def recorded() -> Job | None:
        out = jobs.commands.accounting(prober, started - 60)
        assert out is not None
        lines = [line.split("|") for line in out.splitlines()]
        found = [f for f in lines if f[0] == mine and f[3] not in ("Unknown", "None")]
        return done[0] if found else None

    until(recorded, 60, "slurmdbd never recorded the job's end")
    backend = SlurmBackend(slurm_conf=str(slurm_cluster.conf), records_dir=str(tmp_path / "r"))
    try:
        hours = backend.gpu_hours_sync(prober, started - 60, ended + 60)
        assert hours == pytest.approx(2 * (ended - started) / 3600, abs=1e-9)
        # From a second into the job: a second less of each GPU.
        clipped = backend.gpu_hours_sync(prober, started + 1, ended + 60)
        assert clipped == pytest.approx(2 * (ended - started - 1) / 3600, abs=1e-9)
    finally:
        backend.close()
    elsewhere = SlurmBackend(
        slurm_conf=str(slurm_cluster.conf_without_accounting), records_dir=str(tmp_path / "r")
    )
    try:
        assert elsewhere.gpu_hours_sync(prober, started - 60, ended + 60) is None
    finally:
        elsewhere.close()


def test_a_job_past_its_time_limit_ends_with_that_reason(jobs: Jobs) -> None:
    # Slurm's limits are in minutes (and checked every 30 s): the shortest is one.
    job_id = jobs.submit(STUDENT_A, "sleep 600\n", time_limit_minutes=1)
    running = until(jobs.state(job_id, "RUNNING"), 60, "the job did not run")
    assert running.time_limit_minutes == 1
    ended = until(jobs.state(job_id, "TIMEOUT"), 150, "the job did not end at its limit")
    assert ended.why_ended() == f"its Slurm job {job_id} reached its time limit"


def test_one_users_job_is_out_of_anothers_reach(jobs: Jobs) -> None:
    job_id = jobs.submit(STUDENT_A, "sleep 300\n")
    until(jobs.state(job_id, "RUNNING", "PENDING"), 60, "the job was not listed")
    other = jobs.cluster.run(["scancel", job_id], user=STUDENT_B)
    assert other.returncode != 0
    assert "access/permission denied" in other.stderr.lower(), other.stderr
    signalled = jobs.cluster.run(["scancel", "--signal=INT", "--batch", job_id], user=STUDENT_B)
    assert signalled.returncode != 0
    job = jobs.commands.job(job_id)
    assert job is not None and not job.over


def test_slurms_refusal_is_a_sentence(jobs: Jobs) -> None:
    with pytest.raises(SlurmRefused) as refused:
        jobs.submit(STUDENT_A, "true\n", gpus=jobs.cluster.gpus + 1)
    assert str(refused.value).startswith(f"Slurm refused to start a job for {STUDENT_A}: ")
    assert "node configuration is not available" in str(refused.value)


def test_a_jobs_container_sees_exactly_the_gpus_slurm_gave_it(
    jobs: Jobs, docker_client: Any, cdi_by_index: str
) -> None:
    """The batch script (script.py) runs the kernel's image in the user's rootless Podman on the
    job's node, with one CDI device per GPU index Slurm gave the job: the container lists those
    device files and no other, and runs as the user."""
    podman_user.load_images(docker_client, [DEBIAN_IMAGE], user=STUDENT_A)
    holder = jobs.submit(STUDENT_A, "sleep 300\n", gpus=1)  # so that the kernel's are not 0, 1
    held = until(jobs.state(holder, "RUNNING"), 60, "the first job did not run")
    entry = pwd.getpwnam(STUDENT_A)
    script = batch_script(
        [
            "--rm",
            "--pull=never",
            "--network=host",
            "--userns=keep-id",
            # An init as PID 1, as a kernel's container has: the job's end (SIGTERM to its
            # processes) ends the container, which podman then removes.
            "--init",
            "--label",
            f"{TEST_LABEL}={RUN}",
        ],
        # It stays (Slurm lists a job's GPUs only while it runs), and says when it is
        # interrupted, as a kernel would be.
        [
            DEBIAN_IMAGE,
            "sh",
            "-c",
            "trap 'echo interrupted' INT\n"
            f'ls {jobs.cluster.dev} | tr "\\n" " "; echo; id -u\n'
            "while true; do sleep 1 & wait $!; done",
        ],
        home=entry.pw_dir,
        description="jupyter_gpu_containers test: a container on Slurm's GPUs",
        gpu_device=cdi_by_index,
    )
    job_id = jobs.submit(STUDENT_A, script.removeprefix("#!/bin/sh\n"), gpus=2)
    job = until(
        lambda: (j := jobs.commands.job(job_id)) and (j if j.running or j.over else None),
        120,
        "the container's job did not run",
    )
    assert job.running, jobs.output(STUDENT_A, 1)
    deadline = time.monotonic() + 60
    while len(jobs.output(STUDENT_A, 1).splitlines()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    printed = jobs.output(STUDENT_A, 1)
    devices, uid = printed.strip().splitlines()[:2]
    expected = sorted(f"nvidia{index}" for index in job.gpus)
    assert len(expected) == 2 and held.gpus[0] not in job.gpus
    assert devices.split() == expected, printed
    assert int(uid) == entry.pw_uid
    # An interrupt reaches the container's process, and the job and its container go on.
    jobs.commands.signal(job_id, signal.SIGINT)
    while "interrupted" not in jobs.output(STUDENT_A, 1) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "interrupted" in jobs.output(STUDENT_A, 1)
    job = jobs.commands.job(job_id)
    assert job is not None and job.running and len(podman_user.run_containers(STUDENT_A)) == 1
    # Cancelled (the kernel shut down), the job ends its container, and podman removes it.
    jobs.commands.cancel(job_id)
    until(jobs.state(job_id, "CANCELLED"), 60, "the container's job was not cancelled")
    # Within the job's KillWait (30 s), after which Slurm would kill podman itself.
    deadline = time.monotonic() + 45
    while podman_user.run_containers(STUDENT_A) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert podman_user.run_containers(STUDENT_A) == []
