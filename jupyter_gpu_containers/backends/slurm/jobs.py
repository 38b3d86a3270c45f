"""Slurm jobs through Slurm's own commands: a job submitted as its user, read back, signalled,
cancelled; what Slurm says, in sentences.

The commands and not slurmrestd: every Slurm site has ``sbatch``, ``squeue`` and ``scancel``
(slurmrestd is optional and often off), and they need no token: munge vouches for the account
that runs them. A job is submitted *as its user* (``setpriv`` to the user's uid, gid and groups,
then ``sbatch``): the job runs as that user, Slurm counts it against that user's limits and
QOS, and the user sees it in ``squeue`` as their own. (``sbatch --uid`` would need a RootOnly
partition and is gone from later Slurm releases.) Reading, signalling and cancelling run as the
calling account, which must be allowed to see and act on every user's jobs (root, or Slurm's
operator).

Slurm is the ledger: which GPUs a job holds is read from Slurm (the job's ``gres_detail``), never
decided here. Every call blocks: the backend runs them on its thread pool.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from ...base.errors import ContainerKernelError, EngineRefused, EngineUnavailable
from . import accounting

# Slurm's job states (squeue's ``job_state``) a kernel's job can be in, by what they mean for it.
WAITING = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"})
RUNNING = frozenset({"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"})
# Everything else has ended: COMPLETED, CANCELLED, FAILED, TIMEOUT, PREEMPTED, NODE_FAIL,
# OUT_OF_MEMORY, BOOT_FAIL, DEADLINE, REVOKED, SPECIAL_EXIT.

# Why a job ended, as a person reads it (its state, when it did not end by itself).
ENDED_BECAUSE = {
    "TIMEOUT": "reached its time limit",
    "PREEMPTED": "was preempted by Slurm for a job of higher priority",
    "CANCELLED": "was cancelled",
    "NODE_FAIL": "lost its node, which failed",
    "OUT_OF_MEMORY": "ran out of memory",
    "BOOT_FAIL": "could not start: its node failed to boot",
    "DEADLINE": "reached its deadline",
    "FAILED": "failed",
}

# Pending reasons that end by themselves (resources free, priorities change, limits free up as
# the user's other jobs end); any other (a held job, a partition that is down, a request no node
# can ever meet) does not.
REASONS_THAT_PASS = frozenset(
    {
        "None",
        "Resources",
        "Priority",
        "Dependency",
        "BeginTime",
        "Licenses",
        "ReqNodeNotAvail",
        "Reservation",
        "JobArrayTaskLimit",
        "Prolog",
        "Cleaning",
        "Nodes_required_for_job_are_DOWN,_DRAINED_or_reserved_for_jobs_in_higher_priority_"
        "partitions",
    }
)

_IDX = re.compile(r"\(IDX:([^)]*)\)")


class SlurmSettings(Protocol):
    """What the commands read of the backend's configuration, each time they run."""

    @property
    def slurm_conf(self) -> str: ...

    @property
    def command_timeout(self) -> float: ...


class SlurmRefused(ContainerKernelError):
    """A Slurm command ran and said no; ``said`` is its last words."""

    status = 502
    reason_phrase = "Slurm refused"

    def __init__(self, sentence: str, said: str) -> None:
        super().__init__(sentence)
        self.said = said

    @property
    def job_not_found(self) -> bool:
        low = self.said.lower()
        return "invalid job id" in low or "job not found" in low

    @property
    def job_gone(self) -> bool:
        """The job has ended, or Slurm no longer knows it."""
        return self.job_not_found or "already completing or completed" in self.said.lower()


@dataclass(frozen=True)
class Account:
    """Whom a job runs as."""

    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class JobRequest:
    """What ``sbatch`` is asked for: the job's name and comment (this project's marks on it),
    where it starts, where its output goes, and what it needs."""

    name: str
    workdir: str
    output: str
    gpus: int = 0
    gres_name: str = "gpu"
    partition: str = ""
    account: str = ""
    qos: str = ""
    time_limit_minutes: int = 0  # 0: the partition's default
    cpus: int = 0  # 0: Slurm's default (one)
    memory_mb: int = 0  # 0: the partition's default
    comment: str = ""
    extra: tuple[str, ...] = ()  # the site's own sbatch options (admin configuration)

    def arguments(self) -> list[str]:
        args = [
            "--parsable",
            f"--job-name={self.name}",
            f"--chdir={self.workdir}",
            f"--output={self.output}",
            # The job's environment is its own script's, not this process's (which holds the
            # service's secrets).
            "--export=NONE",
            "--nodes=1",
            "--ntasks=1",
        ]
        if self.gpus:
            args.append(f"--gres={self.gres_name}:{self.gpus}")
        for option, value in (
            ("partition", self.partition),
            ("account", self.account),
            ("qos", self.qos),
            ("comment", self.comment),
        ):
            if value:
                args.append(f"--{option}={value}")
        if self.time_limit_minutes:
            args.append(f"--time={self.time_limit_minutes}")
        if self.cpus:
            args.append(f"--cpus-per-task={self.cpus}")
        if self.memory_mb:
            args.append(f"--mem={self.memory_mb}M")
        return [*args, *self.extra]


@dataclass(frozen=True)
class Job:
    """A job as ``squeue --json`` lists it, with what a kernel needs of it."""

    id: str
    name: str
    state: str
    reason: str
    uid: int
    user: str
    node: str  # the batch host, "" while pending
    gpus: tuple[int, ...]  # the GPU indices Slurm gave it on its node
    comment: str
    submitted: float
    started: float  # 0 while pending
    ended: float  # 0 while it runs; for a running job with a limit, when the limit ends it
    time_limit_minutes: int | None  # None: unlimited
    exit_code: int
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def waiting(self) -> bool:
        return self.state in WAITING

    @property
    def running(self) -> bool:
        return self.state in RUNNING

    @property
    def over(self) -> bool:
        return not self.waiting and not self.running

    @property
    def wait_can_end(self) -> bool:
        """Whether the reason it pends is one that ends by itself (the launch may wait on):
        resources, priority, and limits on what the user or account holds now (QOSMaxGRESPerUser,
        AssocGrpGRES…), which free as their other jobs end; never a limit on the job itself
        (…PerJob…: it asks for more than it may ever have), a hold, or a partition's time limit."""
        if self.reason in REASONS_THAT_PASS:
            return True
        return "PerJob" not in self.reason and self.reason.startswith(
            ("QOSMax", "QOSGrp", "AssocMax", "AssocGrp")
        )

    def why_ended(self) -> str:
        """ "its Slurm job 12 reached its time limit", or "" for a job that ended by itself."""
        because = ENDED_BECAUSE.get(self.state)
        return f"its Slurm job {self.id} {because}" if because else ""


def gpu_indices(gres_detail: list[str]) -> tuple[int, ...]:
    """The GPU indices in squeue's ``gres_detail`` ("gpu:2(IDX:0-1)", "gpu:a100:2(IDX:0,3)")."""
    found: list[int] = []
    for entry in gres_detail:
        if not str(entry).startswith("gpu"):
            continue
        match = _IDX.search(str(entry))
        if not match:
            continue
        for part in match.group(1).split(","):
            part = part.strip()
            if not part or part == "N/A":
                continue
            low, _, high = part.partition("-")
            if not (low.isdigit() and (not high or high.isdigit())):
                continue
            found.extend(range(int(low), int(high or low) + 1))
    return tuple(found)


def _number(value: Any) -> float:
    # squeue 22.05 gives plain numbers; later releases {"set": …, "number": …}.
    if isinstance(value, dict):
        return float(value.get("number") or 0) if value.get("set", True) else 0.0
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def _state(value: Any) -> str:
    if isinstance(value, list):  # later releases: a list of flags
        return str(value[0]) if value else ""
    return str(value or "")


def job_from(raw: dict[str, Any]) -> Job:
    limit = raw.get("time_limit")
    unlimited = limit in (None, "") or (isinstance(limit, dict) and not limit.get("set", True))
    limit_minutes = None if unlimited else int(_number(limit))
    exit_code = raw.get("exit_code")
    if isinstance(exit_code, dict):  # later releases
        exit_code = (exit_code.get("return_code") or {}).get("number", 0)
    return Job(
        id=str(raw.get("job_id", "")),
        name=str(raw.get("name", "")),
        state=_state(raw.get("job_state")),
        reason=str(raw.get("state_reason") or "None"),
        uid=int(_number(raw.get("user_id"))),
        user=str(raw.get("user_name", "")),
        node=str(raw.get("batch_host") or ""),
        gpus=gpu_indices(list(raw.get("gres_detail") or [])),
        comment=str(raw.get("comment") or ""),
        submitted=_number(raw.get("submit_time")),
        started=_number(raw.get("start_time")),
        ended=_number(raw.get("end_time")),
        time_limit_minutes=limit_minutes,
        exit_code=int(exit_code or 0),
        raw=raw,
    )


# Slurm's StartTime for a pending job it has no estimate for is a placeholder a year ahead
# (slurmctld sets it so that such a job sorts last), not a time: an estimate further away than
# this is none.
PLACEHOLDER_AFTER = 300 * 24 * 3600.0


def estimate_from(said: str, now: float) -> float | None:
    """The start time ``squeue --start --format=%S`` said (unix time), or None where it said
    none: N/A, Unknown, or Slurm's placeholder a year ahead (PLACEHOLDER_AFTER)."""
    said = said.strip()
    if not said or said in ("N/A", "Unknown", "(null)"):
        return None
    try:
        when = datetime.datetime.fromisoformat(said).timestamp()
    except ValueError:
        return None
    return None if when - now > PLACEHOLDER_AFTER else when


class SlurmCommands:
    """Slurm's commands, run in the calling thread, against the configured cluster."""

    def __init__(self, settings: SlurmSettings) -> None:
        self.settings = settings

    def environment(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        if self.settings.slurm_conf:
            env["SLURM_CONF"] = self.settings.slurm_conf
        return env

    def run(
        self,
        argv: list[str],
        *,
        what: str,
        stdin: str | None = None,
        as_account: Account | None = None,
    ) -> str:
        """A Slurm command: its stdout. SlurmRefused when it says no (``what`` names the action
        in the sentence); EngineUnavailable when it cannot be run or does not answer in time."""
        env = self.environment()
        cwd = "/"
        prefix = _as_account(as_account, env)
        limit = self.settings.command_timeout
        try:
            done = subprocess.run(
                [*prefix, *argv],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=limit,
                env=env,
                cwd=cwd,
                check=False,
            )
        except FileNotFoundError as e:
            raise EngineUnavailable(
                f"Slurm's {argv[0]} cannot be run here: {e.strerror}. Install Slurm's client "
                "commands (Debian: `slurm-client`) on this host, configured for the cluster."
            ) from e
        except subprocess.TimeoutExpired as e:
            raise EngineUnavailable(
                f"Slurm did not answer within {limit:.0f} s ({argv[0]}): its controller may be "
                "down or overloaded. Try again in a while.",
                setting="SlurmBackend.command_timeout",
            ) from e
        if done.returncode != 0:
            said = _last_words(done.stderr) or f"exit status {done.returncode}"
            if "unable to contact slurm controller" in said.lower() or "connection refused" in said:
                raise EngineUnavailable(f"Slurm's controller does not answer: {said.rstrip('.')}.")
            raise SlurmRefused(f"Slurm refused to {what}: {said.rstrip('.')}.", said)
        return done.stdout

    def run_task(
        self, account: Account, argv: list[str], *, stdin: str, timeout: float
    ) -> tuple[int, str, str, bool]:
        """``srun`` ``argv`` as ``account``, waited on: its exit status, stdout, stderr, and
        whether it was ended past ``timeout`` s (status -1). srun relays the task's output to
        this process: no file on a shared file system is needed. EngineUnavailable when srun
        cannot be run."""
        env = self.environment()
        prefix = _as_account(account, env)
        try:
            done = subprocess.run(
                [*prefix, "srun", *argv],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                cwd="/",
                check=False,
            )
        except FileNotFoundError as e:
            raise EngineUnavailable(
                f"Slurm's srun cannot be run here: {e.strerror}. Install Slurm's client "
                "commands (Debian: `slurm-client`) on this host, configured for the cluster."
            ) from e
        except subprocess.TimeoutExpired as e:

            def text(value: Any) -> str:
                return value.decode(errors="replace") if isinstance(value, bytes) else value or ""

            return -1, text(e.stdout), text(e.stderr), True
        return done.returncode, done.stdout, done.stderr, False

    def cancel_named(self, name: str) -> None:
        """Cancel every job of that name (a task whose srun was ended)."""
        self.run(["scancel", f"--name={name}"], what=f"cancel the jobs named {name}")

    def submit(self, account: Account, request: JobRequest, script: str) -> str:
        """The job's id. The script goes on sbatch's standard input: no file to leave behind."""
        out = self.run(
            ["sbatch", *request.arguments()],
            what=f"start a job for {account.name}",
            stdin=script,
            as_account=account,
        )
        job_id = out.strip().split(";")[0]  # "id" or "id;cluster"
        if not job_id.isdigit():
            raise EngineRefused(f"sbatch answered no job id: {out.strip()[:200]!r}.")
        return job_id

    def jobs(self) -> list[Job]:
        """Every job Slurm lists now (pending, running, and ended within MinJobAge)."""
        return _jobs_of(self.run(["squeue", "--json"], what="list its jobs"))

    def job(self, job_id: str) -> Job | None:
        """The job, or None when Slurm no longer lists it. One job asked for, not the cluster's
        every job: a start looks at its job twice a second."""
        if not job_id.isdigit():
            return None
        try:
            out = self.run(["squeue", "--json", f"--jobs={job_id}"], what=f"describe job {job_id}")
        except SlurmRefused as e:
            if e.job_not_found:  # some releases refuse a job they no longer list
                return None
            raise
        return next((job for job in _jobs_of(out) if job.id == job_id), None)

    def start_estimate(self, job_id: str) -> float | None:
        """When Slurm expects the pending job to start (unix time), or None when it has no
        estimate (the backfill scheduler has not looked at it yet, or cannot tell)."""
        out = self.run(
            ["squeue", "--start", "--noheader", "--format=%S", f"--jobs={job_id}"],
            what=f"estimate when job {job_id} starts",
        ).strip()
        return estimate_from(out, time.time())

    def signal(self, job_id: str, signum: int) -> None:
        """``signum`` to the job's batch script alone (its kernel's process), never to the job:
        the job, its allocation and its GPUs go on. A job that has ended has no script to
        signal: no error (a shutdown that meets a job its time limit just ended must end, not
        fail)."""
        name = signal.Signals(signum).name.removeprefix("SIG")
        try:
            self.run(
                ["scancel", "--batch", f"--signal={name}", job_id],
                what=f"send SIG{name} to job {job_id}",
            )
        except SlurmRefused as e:
            if not e.job_gone:
                raise

    def cancel(self, job_id: str) -> None:
        """End the job (a job that has ended already is no error)."""
        try:
            self.run(["scancel", job_id], what=f"cancel job {job_id}")
        except SlurmRefused as e:
            if not e.job_gone:
                raise

    def accounting(self, user: str, since: float) -> str | None:
        """``sacct``'s lines (accounting.FORMAT) of ``user``'s jobs that ran since ``since``
        (unix time), or None where the cluster keeps no accounting (no slurmdbd)."""
        start = datetime.datetime.fromtimestamp(since).strftime("%Y-%m-%dT%H:%M:%S")
        try:
            return self.run(
                [
                    "sacct",
                    f"--user={user}",
                    f"--starttime={start}",
                    "--endtime=now",
                    "--allocations",
                    "--noheader",
                    "--parsable2",
                    f"--format={accounting.FORMAT}",
                ],
                what=f"report {user}'s jobs from its accounting",
            )
        except SlurmRefused as e:
            if accounting.DISABLED in e.said.lower():
                return None
            raise

    def node_address(self, node: str) -> str:
        """Where the node is reached (its NodeAddr), for a kernel's ports."""
        out = self.run(
            ["scontrol", "show", "node", "--oneliner", node], what=f"describe node {node}"
        )
        for part in out.split():
            if part.startswith("NodeAddr="):
                return part.split("=", 1)[1]
        return node


def _jobs_of(out: str) -> list[Job]:
    try:
        listed = json.loads(out).get("jobs", [])
    except (ValueError, AttributeError) as e:
        raise EngineRefused(f"squeue --json answered no JSON: {out[:200]!r}.") from e
    return [job_from(raw) for raw in listed if isinstance(raw, dict)]


def _as_account(account: Account | None, env: dict[str, str]) -> list[str]:
    """The command's prefix that runs it as ``account`` (``env`` told its name): setpriv to
    another account's ids (root only); nothing for this process's own (a user's own server
    submitting its own kernels) or for none."""
    if account is None or account.uid == os.geteuid():
        return []
    env["USER"] = env["LOGNAME"] = account.name
    return ["setpriv", f"--reuid={account.uid}", f"--regid={account.gid}", "--init-groups"]


def _last_words(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    chosen = errors[-1] if errors else (lines[-1] if lines else "")
    # "sbatch: error: Batch job submission failed: Invalid account…" → what follows "error: ".
    return chosen.split("error:", 1)[-1].strip()
