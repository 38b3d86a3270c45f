"""A real single-node Slurm for the tests: munged, slurmdbd, slurmctld and slurmd from Debian's
packages (``munge``, ``slurmdbd``, ``slurmctld``, ``slurmd``, ``slurm-client``; Slurm 22.05, and
``mariadb-server`` for slurmdbd), started here without systemd, on 127.0.0.1, as a small
university cluster runs them (issue #30).

The node has GPUs as GRES backed by device files made here with ``mknod`` (major 195, NVIDIA's;
with no NVIDIA driver on the machine, opening one fails, so they are harmless): Slurm 22.05 marks
a node whose ``Gres=gpu:N`` names no devices invalid, and one whose gres.conf names the files
(``AutoDetect=off``) idle. A job given GPUs gets their indices in ``SLURM_JOB_GPUS`` and
``CUDA_VISIBLE_DEVICES``, as on a real cluster; the container it starts is given those files.

``ProctrackType=proctrack/pgid`` and ``TaskPlugin=task/none``: the machine's cgroups are not
Slurm's to take (v1 here, shared with Docker and Podman), so a job's processes are tracked by
their process group and its devices are not confined by Slurm (the container is what confines
them). Accounting is on, as at a site that charges GPU-hours: ``slurmdbd`` (Debian's) stores
jobs in a MariaDB of the cluster's own (Debian's ``mariadb-server``: its data directory here, on
127.0.0.1 at a port of its own, Slurm's login a random password), so ``sacct`` reports each job's
GPUs and times; ``conf_without_accounting`` is the same cluster as a site without accounting
sees it (``sacct``: "accounting storage is disabled").

Everything lives in a directory of its own (``SLURM_CONF`` names its slurm.conf; the machine's
/etc/slurm is not touched), with ports of its own. Each daemon is started here and ended by its
pid in ``stop()`` (after every job is cancelled), also after a start that failed half-way, and
dies with the test process if that is killed. Its logs are under ``workdir/log``; a failure names
the daemon and ends with its log's tail.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import stale_runs
from k8s_cluster import ClusterStartError, _Process, free_port, log_tail, wait_for

GPUS = 4
# Slurm's own: the major number NVIDIA's driver registers its devices under.
NVIDIA_MAJOR = 195
START_TIMEOUT = 60.0
SBIN = Path("/usr/sbin")

EPILOG = Path(__file__).resolve().parent.parent / "deploy" / "slurm" / "epilog.sh"


class SlurmCluster:
    """munged, slurmctld and slurmd of one test session, and the Slurm commands pointed at them."""

    def __init__(self, workdir: str | os.PathLike[str], gpus: int = GPUS) -> None:
        self.workdir = Path(workdir)
        self.gpus = gpus
        self.node = "jgc-node"
        self.partition = "gpu"
        self.conf = self.workdir / "slurm.conf"
        self.dev = self.workdir / "dev"
        self.munge_socket = self.workdir / "munge" / "run" / "munge.socket.2"
        self.conf_without_accounting = self.workdir / "no-accounting" / "slurm.conf"
        self.database = self.workdir / "database"
        self.dbd_port = 0
        self._processes: list[_Process] = []

    @property
    def env(self) -> dict[str, str]:
        """What a Slurm command needs to reach this cluster (any account's)."""
        return {"SLURM_CONF": str(self.conf)}

    def device(self, index: int) -> Path:
        return self.dev / f"nvidia{index}"

    # -- start and stop ------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        try:
            self._write_files()
            munge = self.workdir / "munge"
            self._spawn(
                "munged",
                [
                    str(SBIN / "munged"),
                    "--foreground",
                    f"--key-file={munge / 'etc' / 'munge.key'}",
                    f"--socket={self.munge_socket}",
                    f"--pid-file={munge / 'run' / 'munged.pid'}",
                    f"--seed-file={munge / 'lib' / 'munge.seed'}",
                ],
            )
            wait_for(self.munge_socket.exists, timeout, "munged made no socket")
            self._start_accounting(timeout)
            self._spawn("slurmctld", [str(SBIN / "slurmctld"), "-D", "-i", "-f", str(self.conf)])
            self._spawn(
                "slurmd", [str(SBIN / "slurmd"), "-D", "-N", self.node, "-f", str(self.conf)]
            )
            self._wait_idle(timeout)
        except (ClusterStartError, TimeoutError, OSError, subprocess.SubprocessError) as e:
            self.stop()
            raise ClusterStartError(f"{e}\n{self._logs()}") from e

    def stop(self) -> None:
        """Every job cancelled (their processes are slurmstepd's, not ours), then the daemons,
        by pid, in the reverse order of their start."""
        if any(p.exited() is None for p in self._processes if p.name == "slurmctld"):
            self.run(["scancel", "--full", "--signal=KILL", f"--partition={self.partition}"])
            self.run(["scancel", f"--partition={self.partition}"])
            deadline = time.monotonic() + 20
            while self.job_ids() and time.monotonic() < deadline:
                time.sleep(0.2)
        for process in reversed(self._processes):
            process.stop()
        self._processes.clear()

    def __enter__(self) -> SlurmCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- commands ------------------------------------------------------------------------------

    def run(
        self, argv: Sequence[str], user: str | None = None, timeout: float = 30, **kwargs: object
    ) -> subprocess.CompletedProcess[str]:
        """A Slurm command against this cluster, as ``user`` (through setpriv) or as root; not
        checked."""
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **self.env}
        prefix: list[str] = []
        cwd = "/"
        if user is not None:
            entry = pwd.getpwnam(user)
            prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
            env["HOME"] = entry.pw_dir
        return subprocess.run(
            [*prefix, *argv],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,  # type: ignore[call-overload]
        )

    def hold_every_gpu(self, user: str, name: str = "jgc-test-holder") -> str:
        """A batch job of ``user``'s on every GPU of the node, once Slurm runs it: others'
        jobs that ask for GPUs then pend (Resources). Cancel it by its id."""
        done = self.run(
            [
                "sbatch",
                "--parsable",
                f"--gres=gpu:{self.gpus}",
                f"--job-name={name}",
                "--output=/dev/null",
                "--wrap=sleep 3600",
            ],
            user=user,
        )
        if done.returncode != 0:
            raise ClusterStartError(f"the holder job was refused: {done.stderr.strip()}")
        job = done.stdout.strip().split(";")[0]
        state = ""
        for _ in range(300):
            state = self.run(["squeue", "--noheader", "--format=%T", f"--jobs={job}"]).stdout
            if state.strip() == "RUNNING":
                return job
            time.sleep(0.2)
        raise ClusterStartError(f"the holder job {job} never ran ({state.strip() or 'gone'})")

    def job_ids(self) -> list[str]:
        """The jobs Slurm still lists as pending or running (or ending)."""
        done = self.run(["squeue", "--noheader", "--format=%i", "--states=PD,R,CG,S,CF"])
        return done.stdout.split()

    # -- the files -----------------------------------------------------------------------------

    def _write_files(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Every account reads slurm.conf (its commands do) and reaches munged's socket.
        self.workdir.chmod(0o755)
        munge = self.workdir / "munge"
        for sub, mode in (("etc", 0o700), ("lib", 0o700), ("run", 0o755)):
            (munge / sub).mkdir(parents=True, exist_ok=True)
            (munge / sub).chmod(mode)
        munge.chmod(0o755)
        key = munge / "etc" / "munge.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(1024))
        for sub in ("state", "spool", "log"):
            (self.workdir / sub).mkdir(exist_ok=True)
        self.dev.mkdir(exist_ok=True)
        self.dev.chmod(0o755)
        for index in range(self.gpus):
            os.mknod(self.device(index), 0o666 | stat.S_IFCHR, os.makedev(NVIDIA_MAJOR, index))
            self.device(index).chmod(0o666)  # the umask took some
        host = socket.gethostname().split(".")[0]
        cpus = os.cpu_count() or 1
        memory_mb = _memory_mb()
        w = self.workdir
        self.dbd_port = free_port()
        accounting = [
            "AccountingStorageType=accounting_storage/slurmdbd",
            "AccountingStorageHost=127.0.0.1",
            f"AccountingStoragePort={self.dbd_port}",
            "AccountingStorageTRES=gres/gpu",
            # How slurmctld and the commands reach slurmdbd through this cluster's munged.
            f"AccountingStoragePass={self.munge_socket}",
        ]
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=jgctest",
                    # slurmctld checks that it runs on the host this names.
                    f"SlurmctldHost={host}(127.0.0.1)",
                    f"SlurmctldPort={free_port()}",
                    f"SlurmdPort={free_port()}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={self.munge_socket}",
                    f"StateSaveLocation={w / 'state'}",
                    f"SlurmdSpoolDir={w / 'spool'}",
                    f"SlurmctldPidFile={w / 'slurmctld.pid'}",
                    f"SlurmdPidFile={w / 'slurmd.pid'}",
                    f"SlurmctldLogFile={w / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={w / 'log' / 'slurmd.log'}",
                    "ProctrackType=proctrack/pgid",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    *accounting,
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core",
                    "GresTypes=gpu",
                    "MpiDefault=none",
                    "ReturnToService=2",
                    "SlurmdTimeout=60",
                    "InactiveLimit=0",
                    # Slurm's default: a cancelled job's processes have 30 s after SIGTERM before
                    # SIGKILL, time for podman to stop and remove a kernel's container.
                    "KillWait=30",
                    # A job past its time limit ends at the next check of limits, not up to a
                    # minute later (the default, 30 s, plus the minute's rounding).
                    "OverTimeLimit=0",
                    # As a site that runs kernels would (docs/slurm.md): a kernel's container
                    # that outlived its job is removed after it.
                    f"Epilog={EPILOG}",
                    f"NodeName={self.node} NodeHostname={host} NodeAddr=127.0.0.1 "
                    f"CPUs={cpus} RealMemory={memory_mb} Gres=gpu:{self.gpus} State=UNKNOWN",
                    f"PartitionName={self.partition} Nodes={self.node} Default=YES "
                    "MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        (self.workdir / "gres.conf").write_text(
            "AutoDetect=off\n"
            f"NodeName={self.node} Name=gpu File={self.dev}/nvidia[0-{self.gpus - 1}]\n"
        )
        # The same cluster for commands that read no accounting (its daemons read slurm.conf).
        self.conf_without_accounting.parent.mkdir(mode=0o755)
        self.conf_without_accounting.write_text(
            "".join(
                line + "\n" for line in self.conf.read_text().splitlines() if line not in accounting
            )
        )

    def _start_accounting(self, timeout: float) -> None:
        """MariaDB with Slurm's login, slurmdbd on it, and this cluster registered there."""
        db = self.database
        db.mkdir(mode=0o700)
        socket_path = db / "mariadb.sock"
        _set_up(
            [
                "mariadb-install-db",
                "--no-defaults",
                "--user=root",
                f"--datadir={db / 'data'}",
                "--skip-test-db",
                "--auth-root-authentication-method=socket",
            ],
            "mariadb-install-db failed",
        )
        port = free_port()
        self._spawn(
            "mariadbd",
            [
                str(SBIN / "mariadbd"),
                "--no-defaults",
                "--user=root",
                f"--datadir={db / 'data'}",
                f"--socket={socket_path}",
                f"--port={port}",
                "--bind-address=127.0.0.1",
                f"--pid-file={db / 'mariadbd.pid'}",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
            ],
        )
        wait_for(socket_path.exists, timeout, "mariadbd made no socket")
        password = os.urandom(12).hex()
        for statement in (
            f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}'",
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'",
        ):
            _set_up(
                ["mariadb", "--no-defaults", f"--socket={socket_path}", "-u", "root"],
                "MariaDB refused a statement",
                statement,
            )
        dbd_conf = self.workdir / "slurmdbd.conf"
        fd = os.open(dbd_conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(
                "\n".join(
                    [
                        "AuthType=auth/munge",
                        f"AuthInfo=socket={self.munge_socket}",
                        "DbdHost=localhost",
                        "DbdAddr=127.0.0.1",
                        f"DbdPort={self.dbd_port}",
                        "SlurmUser=root",
                        f"PidFile={self.workdir / 'slurmdbd.pid'}",
                        f"LogFile={self.workdir / 'log' / 'slurmdbd.log'}",
                        "StorageType=accounting_storage/mysql",
                        "StorageHost=127.0.0.1",
                        f"StoragePort={port}",
                        "StorageUser=slurm",
                        f"StoragePass={password}",
                        "StorageLoc=slurm_acct_db",
                        "",
                    ]
                )
            )
        # slurmdbd reads slurmdbd.conf beside the slurm.conf SLURM_CONF names.
        self._spawn("slurmdbd", ["env", f"SLURM_CONF={self.conf}", str(SBIN / "slurmdbd"), "-D"])
        deadline = time.monotonic() + timeout
        while True:
            done = self.run(["sacctmgr", "--immediate", "add", "cluster", "jgctest"])
            said = done.stdout + done.stderr
            if done.returncode == 0 or "already exists" in said.lower():
                return
            for process in self._processes:
                if process.exited() is not None:
                    raise process.failure("ended during the start")
            if time.monotonic() > deadline:
                raise ClusterStartError(f"slurmdbd did not take the cluster: {said.strip()}")
            time.sleep(0.3)

    def _spawn(self, name: str, argv: list[str]) -> None:
        process = _Process(name, argv, self.workdir / "log" / f"{name}.out")
        self._processes.append(process)

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for process in self._processes:
                if process.exited() is not None:
                    raise process.failure("ended during the start")
            done = self.run(["sinfo", "--noheader", "--format=%T", f"--nodes={self.node}"])
            if done.returncode == 0 and done.stdout.strip() == "idle":
                return
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"The Slurm node {self.node} is not idle after {timeout:.0f} s "
                    f"(sinfo: {done.stdout.strip() or done.stderr.strip()})"
                )
            time.sleep(0.2)

    def _logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{log_tail(path, 15)}"
            for path in sorted((self.workdir / "log").glob("*"))
        )


def _set_up(argv: list[str], failed: str, stdin: str | None = None) -> None:
    """A step of the cluster's set-up, as root; ClusterStartError saying ``failed`` and what the
    command printed when it fails."""
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise ClusterStartError(f"{failed}: {done.stdout}{done.stderr}")


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 1024


def slurm_installed() -> bool:
    daemons = ("munged", "slurmdbd", "slurmctld", "slurmd", "mariadbd")
    return all((SBIN / name).exists() for name in daemons) and bool(shutil.which("sbatch"))


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """The session's Slurm cluster (root only: its daemons run as root, its jobs as the test
    accounts)."""
    if os.getuid() != 0:
        pytest.skip("the Slurm cluster's daemons run as root (scripts/test.sh runs as root)")
    if not slurm_installed():
        pytest.fail(
            "Slurm is not installed (scripts/test.sh installs Debian's slurmctld, slurmd, "
            "slurmdbd, slurm-client, munge and mariadb-server)",
            pytrace=False,
        )
    workdir = Path(tempfile.mkdtemp(prefix="jgc-slurm-", dir="/tmp"))
    cluster = SlurmCluster(workdir)
    try:
        cluster.start()
    except ClusterStartError as e:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"The Slurm cluster did not start: {e}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def cdi_spec(cluster: SlurmCluster, run: str) -> Iterator[str]:
    """A CDI spec naming ``cluster``'s GPUs by index, as NVIDIA's names them ("<kind>=0", as
    ``nvidia-ctk cdi generate`` does), each the device file gres.conf names for that index, at
    the same path in a container (rootless Podman 4.3 bind-mounts a device node from its
    container path, not from a ``hostPath``; NVIDIA's specs name /dev/nvidia<n>, the same on
    both sides); in /etc/cdi (Podman 4.3 reads no other place), removed afterwards. Its kind is
    the run's own, not NVIDIA's: the same device names in two specs of one kind make every
    device of that kind unusable, and two runs on one machine (or a machine's real NVIDIA spec)
    must not. Yields the GPU device template (SlurmBackend.gpu_device) for it."""
    devices = "".join(
        f'  - name: "{index}"\n    containerEdits:\n      deviceNodes:\n'
        f"        - path: {cluster.device(index)}\n"
        for index in range(cluster.gpus)
    )
    spec = Path("/etc/cdi") / f"jgc-test-slurm-{run}.yaml"
    spec.parent.mkdir(mode=0o755, exist_ok=True)
    # A run that was killed left its spec behind.
    for left in spec.parent.glob("jgc-test-slurm-*.yaml"):
        if stale_runs.run_is_over(left.stem.removeprefix("jgc-test-slurm-")) is True:
            left.unlink(missing_ok=True)
    kind = "jgc-" + re.sub(r"[^a-z0-9]+", "-", run.lower()).strip("-") + ".test/gpu"
    spec.write_text(f'cdiVersion: "0.5.0"\nkind: "{kind}"\ndevices:\n{devices}')
    try:
        yield kind + "={index}"
    finally:
        spec.unlink(missing_ok=True)


@pytest.fixture
def cdi_by_index(slurm_cluster: SlurmCluster) -> Iterator[str]:
    """cdi_spec for the session's cluster and this run."""
    # conftest names this plugin: imported once the session runs, not while it is loaded.
    from conftest import TEST_RUN as RUN

    with cdi_spec(slurm_cluster, RUN) as template:
        yield template


@contextlib.contextmanager
def users_own_server(
    cluster: SlurmCluster,
    user: str,
    config: dict[str, Any] | None = None,
    labextension: Path | None = None,
) -> Iterator[Any]:
    """``user``'s own Jupyter server with ContainerEngine.backend = "slurm" (docs/slurm.md's
    section 5): its kernels jobs it submits itself, the listed test image in its Podman (the
    caller loads it), ``config`` over the test servers' own; ``labextension``: a build its
    JupyterLab uses. Stopped at the end, its home and the user's containers of this run
    removed."""
    import podman_user
    from conftest import DEBIAN_IMAGE
    from servers import Server, write_server_config

    entry = pwd.getpwnam(user)
    home = Path(tempfile.mkdtemp(prefix="jgc-slurm-own-", dir="/tmp"))
    try:
        for sub in ("config", "data", "data/labextensions", "runtime", "workspace"):
            (home / sub).mkdir()
        if labextension is not None:
            (home / "data" / "labextensions" / "jupyter-gpu-containers").symlink_to(labextension)
        for path in [home, *home.rglob("*")]:
            os.lchown(path, entry.pw_uid, entry.pw_gid)
        settings: dict[str, Any] = {
            "ContainerEngine": {"backend": "slurm"},
            "ImageCatalog": {"listed_images": [{"image": DEBIAN_IMAGE}]},
            **(config or {}),
        }
        settings["SlurmBackend"] = {
            "slurm_conf": str(cluster.conf),
            "poll_interval": 0.2,
            **settings.get("SlurmBackend", {}),
        }
        # Its pages with the labextension only: a browser opens them (ui-tests/slurm_lab.py).
        write_server_config(home, settings, pages=labextension is not None)
        server = Server(home, home / "workspace", [], user=user, env=podman_user.user_env(user))
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(home, ignore_errors=True)
        podman_user.remove_test_containers(user)
