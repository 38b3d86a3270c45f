"""A kernel's container as a Slurm job, pure: the job a ContainerSpec becomes (whom it runs as,
what it asks Slurm for, its batch script), a job's state as a container's, and the ports a
kernel's channel relay wrote back.

The kernel's container runs on the job's node with the host's network: the node's address is
where its ports are, and the ports are chosen there (no port can be chosen free in advance on a
node that other users' jobs share). The kernel itself binds ipc in its private directory; its
channel relay (kernel/channel_relay.py, which the service put in that directory and in the
container's command) binds the node's ports as CurveZMQ servers and writes them back: every
account on the network reaches a node, and only the kernel's own keypair is let through.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pwd
import re
from typing import Any

from ...base.errors import EngineRefused, ValueRefused
from ...base.records import (
    KERNEL_DIR_IN_CONTAINER,
    PORT_NAMES,
    RELAY_PORTS_NAME,
    ContainerSpec,
    ContainerState,
    ImageRecord,
)
from ...base.safefiles import read_trusted, write_atomic
from ..podman_args import env_lines, hardening_args, run_options
from .jobs import Account, Job, JobRequest
from .script import batch_script, generation_file, pyxis_batch_script, pyxis_image

# The job's output (its script's and its container's): beside the connection file.
OUTPUT_FILE_NAME = "slurm-job.log"
_UNITS = {"b": 1 / (1 << 20), "k": 1 / 1024, "m": 1, "g": 1024, "t": 1 << 20}
_SIZE = re.compile(r"([0-9]+)([bkmgt]?)b?", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class JobSettings:
    """What the administrator configured for every kernel's job (SlurmBackend's traits)."""

    partition: str = ""
    account: str = ""
    qos: str = ""
    time_limit_minutes: int = 0
    cpus: int = 0
    gres_name: str = "gpu"
    gpu_device: str = "nvidia.com/gpu={index}"
    extra: tuple[str, ...] = ()
    restart_wait: int = 0  # seconds a job keeps its allocation for a restart (script.py)
    launcher: str = "podman"  # or "pyxis": the container as a job step (script.py)


@dataclasses.dataclass(frozen=True)
class KernelJob:
    """What is submitted for one kernel."""

    account: Account
    request: JobRequest
    script: str
    private_dir: str

    @property
    def digest(self) -> str:
        """What the job is, in one word: a restart whose job would be the same (the same
        request to Slurm, the same script) may run in the allocation of the job before."""
        whole = "\0".join([self.account.name, *self.request.arguments(), self.script])
        return hashlib.sha256(whole.encode()).hexdigest()


def private_dir_of(spec: ContainerSpec) -> str:
    """The kernel's private directory: the source of its mount at KERNEL_DIR_IN_CONTAINER."""
    for mount in spec.mounts:
        if mount.target == KERNEL_DIR_IN_CONTAINER:
            return mount.source
    raise EngineRefused(
        "A kernel's job needs the kernel's private directory (its connection file), which this "
        "container mounts nowhere."
    )


def account_of(spec: ContainerSpec) -> Account:
    """Whom the job runs as: the container's user ("uid:gid", a kernel service's user), or this
    process's account when the spec names none (a user's own server)."""
    if spec.user:
        uid_text, _, gid_text = spec.user.partition(":")
        if not uid_text.isdigit() or (gid_text and not gid_text.isdigit()):
            raise EngineRefused(
                f"A kernel's Slurm job runs as a numeric account (uid:gid), not as {spec.user!r}."
            )
        uid = int(uid_text)
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            raise EngineRefused(
                f"The account {uid} has no entry in this host's user database: Slurm runs a "
                "job as an account the cluster knows."
            ) from None
        return Account(entry.pw_name, uid, int(gid_text) if gid_text else entry.pw_gid)
    entry = pwd.getpwuid(os.geteuid())
    return Account(entry.pw_name, entry.pw_uid, os.getegid())


def memory_mb(limit: str | None) -> int:
    """Docker's size ("4g", "512m", "1073741824") in MiB for ``sbatch --mem``; 0 when unset."""
    if not limit:
        return 0
    match = _SIZE.fullmatch(limit.strip())
    if not match:
        raise EngineRefused(f"The memory limit {limit!r} is no size Slurm can be asked for.")
    return max(1, int(int(match.group(1)) * _UNITS[(match.group(2) or "b").lower()]))


def kernel_job(spec: ContainerSpec, settings: JobSettings, *, description: str) -> KernelJob:
    """The job for ``spec``: as its user, in its private directory (where its output goes too),
    asking Slurm for ``spec.gpu_count`` GPUs; the script runs the container with rootless Podman
    on the node, on the host's network, with the GPUs Slurm gave it (script.py), removed as it
    ends. The spec's own network, published ports and GPU devices do not apply: the node's
    network is the kernel's, and its GPUs are the job's."""
    account = account_of(spec)
    private = private_dir_of(spec)
    home = pwd.getpwuid(account.uid).pw_dir
    environment = env_lines(spec.environment).decode()
    if settings.launcher == "pyxis":
        script = pyxis_batch_script(
            spec.image,
            spec.command,
            mounts=[(m.source, m.target, m.read_only) for m in spec.mounts],
            workdir=spec.working_dir or "",
            home=home,
            description=description,
            environment=environment,
            restart_wait=settings.restart_wait,
        )
    else:
        container = dataclasses.replace(spec, port_bindings={}, device_requests=[])
        options = [
            "--rm",
            "--pull=never",
            *run_options(container, network="host", userns="keep-id", ulimits={}),
        ]
        if environment:
            options += ["--env-file", "/dev/stdin"]
        script = batch_script(
            options,
            [spec.image, *spec.command],
            gpu_device=settings.gpu_device,
            home=home,
            description=description,
            environment=environment,
            restart_wait=settings.restart_wait,
        )
    request = JobRequest(
        name=spec.name,
        workdir=private,
        output=os.path.join(private, OUTPUT_FILE_NAME),
        gpus=spec.gpu_count,
        gres_name=settings.gres_name,
        partition=settings.partition,
        account=settings.account,
        qos=settings.qos,
        time_limit_minutes=settings.time_limit_minutes,
        cpus=settings.cpus,
        memory_mb=memory_mb(spec.mem_limit),
        comment=description,
        extra=settings.extra,
    )
    return KernelJob(account, request, script, private)


def container_state(job: Job | None) -> ContainerState:
    """A job's state as a kernel's container's: waiting ("created"), running, or ended (why, when
    it did not end by itself). A job Slurm no longer lists has ended."""
    if job is None:
        return ContainerState("exited", False, -1, False, "Slurm no longer lists its job")
    if job.waiting:
        return ContainerState("created", False, 0, False, "")
    if job.running:
        return ContainerState("running", True, 0, False, "")
    return ContainerState(
        "exited", False, job.exit_code, job.state == "OUT_OF_MEMORY", job.why_ended()
    )


def written_connection(private_dir: str, owner: int) -> dict[str, Any] | None:
    """The kernel's connection once its channel relay wrote the ports it bound on the node
    (kernel/channel_relay.py: CurveZMQ servers in front of the kernel's ipc channels, the one
    way in from the network): those ports, transport tcp (the address is the node's, which
    Slurm says, never the file); None while there are none or they cannot be read. Never the
    kernel's connection file: a kernel that bound tcp there itself would be open to every
    account on the node, and is not connected to. The file is the job's user's to write: it is
    read only as a regular file of theirs with one link (never a link to another's file), each
    value read from it is checked to be what it must be, and nothing else is taken from it."""
    read = _users_file(private_dir, RELAY_PORTS_NAME, owner, 1 << 12)
    try:
        found: Any = json.loads(read[0].decode("utf-8")) if read is not None else None
    except ValueError:
        return None
    if not isinstance(found, dict):
        return None
    info: dict[str, Any] = {"transport": "tcp"}
    for name in PORT_NAMES:
        value = found.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
            return None
        info[name] = value
    return info


def generation_ended(
    private_dir: str, owner: int, job_id: str, generation: int
) -> tuple[int, float] | None:
    """How the job's container of ``generation`` ended (its exit status, and when: the exit
    file's mtime), or None while it runs (no exit file yet). The file is the job's user's to
    write (their kernel can write the directory): read only as a regular file of theirs with
    one link, and nothing but a small number is taken from it."""
    read = _users_file(private_dir, generation_file(job_id, generation, "exit"), owner, 16)
    if read is None:
        return None
    text = read[0].decode("ascii", "replace").strip()
    code = int(text) if text.isdigit() and len(text) <= 3 else -1
    return code, read[1].st_mtime


def _users_file(
    private_dir: str, name: str, owner: int, limit: int
) -> tuple[bytes, os.stat_result] | None:
    """A small file of the kernel's private directory, which its user (``owner``) writes:
    read only as a regular file of theirs with one link, the directory opened without
    following a link; None when it cannot be read so."""
    try:
        dir_fd = os.open(private_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return read_trusted(dir_fd, name, {owner}, limit)
    except OSError:
        return None
    finally:
        os.close(dir_fd)


def order_generation(
    private_dir: str, owner: tuple[int, int], job_id: str, generation: int
) -> None:
    """Tell the job's script to run its container's ``generation`` (its ``next`` file, which
    the script waits for): written as the job's user's, atomically, never through a link the
    directory's owner left at its name."""
    dir_fd = os.open(private_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        write_atomic(dir_fd, generation_file(job_id, generation, "next"), b"", 0o600, owner)
    finally:
        os.close(dir_fd)


def listed_record(ref: str) -> ImageRecord:
    """A listed image as this service knows it: by its reference alone (each node's storage
    resolves it)."""
    return ImageRecord(
        id=ref, tags=(ref,), labels={}, env={}, entrypoint=(), user="", created="", size=0
    )


def oneshot_script(
    image: str,
    command: list[str],
    *,
    home: str,
    labels: dict[str, str],
    entrypoint: list[str] | None,
    user: str | None,
    cap_add: list[str],
    no_new_privileges: bool,
    environment: dict[str, str],
) -> str:
    """The probe's task: ``podman run`` of a throw-away container with no network, small
    limits, the kernels' hardening, and no GPU (the task asks for none)."""
    options = ["--rm", "--pull=never", "--network=none", "--init"]
    options += ["--memory", "512m", "--pids-limit", "128"]
    options += hardening_args(cap_add, no_new_privileges)
    for key, value in labels.items():
        options += ["--label", f"{key}={value}"]
    if user:
        options += ["--user", user]
    if entrypoint is not None:
        options += ["--entrypoint", json.dumps(entrypoint) if entrypoint else ""]
    lines = env_lines(environment).decode()
    if lines:
        options += ["--env-file", "/dev/stdin"]
    return batch_script(
        options,
        [image, *command],
        home=home,
        description=f"jupyter_gpu_containers: is {image} kernel-ready?",
        environment=lines,
    )


def pyxis_oneshot_args(image: str, command: list[str], environment: dict[str, str]) -> list[str]:
    """The probe's task where the site has pyxis: ``srun`` runs ``command`` in a container of
    ``image`` itself (no script between: a step cannot start steps of its own), its environment
    given in ``--export`` (no value may hold a comma: srun's separator). No GPU (the task asks
    for none), the node's network: pyxis makes no network of the container's own."""
    env_lines(environment)  # (what no reader of lines would read as given: refused)
    exports = ["NONE"]
    for name, value in environment.items():
        if "," in value:
            raise ValueRefused(
                f"The probe's variable {name} cannot be given through srun's --export (a comma)."
            )
        exports.append(f"{name}={value}")
    return [
        f"--export={','.join(exports)}",
        f"--container-image={pyxis_image(image)}",
        "--no-container-mount-home",
        *command,
    ]


def image_not_known(stderr: str) -> bool:
    """Whether Podman said the image is not in the storage (it would not pull: --pull=never)."""
    low = stderr.lower()
    return "image not known" in low or "no such image" in low
