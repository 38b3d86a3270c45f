"""The Slurm backend (backends/slurm/backend.py) against a real Slurm (tests/slurm_cluster.py) and
the students' real rootless Podman: a kernel's container submitted as a job of its user, waited
on while it pends, reached on its node at the ports it wrote back, interrupted, followed in its
log, found again by a new backend (a restarted service) from the backend's own records, and
cancelled; what it refuses, in sentences."""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import podman_user
import pytest
import zmq
from conftest import DEBIAN_IMAGE, TEST_LABEL
from conftest import TEST_RUN as RUN
from jupyter_client.blocking.client import BlockingKernelClient
from slurm_cluster import SlurmCluster

from jupyter_gpu_containers.backends.podman_args import LINE_BREAKS
from jupyter_gpu_containers.backends.slurm import kernels
from jupyter_gpu_containers.backends.slurm import logs as slurm_logs
from jupyter_gpu_containers.backends.slurm.backend import SlurmBackend
from jupyter_gpu_containers.backends.slurm.records import JobRecords
from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.base.errors import (
    ContainerExited,
    ContainerKernelError,
    EngineRefused,
    ImageNotKernelReady,
    SchedulerWaitTimedOut,
    ValueRefused,
)
from jupyter_gpu_containers.base.records import (
    CONNECTION_FILE_NAME,
    KERNEL_DIR_IN_CONTAINER,
    PORT_NAMES,
    RELAY_CONFIG_NAME,
    RELAY_PORTS_NAME,
    ContainerSpec,
    ImageRecord,
    Mount,
)
from jupyter_gpu_containers.base.safefiles import PathRefused
from jupyter_gpu_containers.gpus.allocator import Attachment, GPUAllocator, GPURequest, OverUserCap
from jupyter_gpu_containers.kernel import relay_files
from jupyter_gpu_containers.placement.batch import BatchPlacement
from jupyter_gpu_containers.placement.placement import PlacementStart
from jupyter_gpu_containers.policy.command import relayed_command

STUDENT_A = os.environ.get("JGC_TEST_STUDENT_A", "")
STUDENT_B = os.environ.get("JGC_TEST_STUDENT_B", "")
KERNEL_ID_LABEL = "org.jupyter.gpu-containers.kernel-id"
ME = os.geteuid()

needs_cluster = pytest.mark.skipif(
    not STUDENT_A or not STUDENT_B or os.getuid() != 0,
    reason="needs root and two student accounts (scripts/test.sh sets them up)",
)


def private_dir(base: Path, user: str, name: str) -> Path:
    """A kernel's private directory as the provisioner makes it for a service's user: theirs,
    0700, holding the connection file (ipc in the directory) and the channel relay's files,
    with a keypair of its own (relay_files.py)."""
    entry = pwd.getpwnam(user)
    path = base / name
    path.mkdir(mode=0o700)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    public, secret = (key.decode() for key in zmq.curve_keypair())
    ports_to_choose(path, user, os.urandom(16).hex(), (public, secret))
    return path


def ports_to_choose(private: Path, user: str, key: str, keys: tuple[str, str]) -> None:
    """The connection file and the relay's files, as the provisioner writes them before each
    start (the relay's ports of a start before removed)."""
    entry = pwd.getpwnam(user)
    connection = private / CONNECTION_FILE_NAME
    connection.unlink(missing_ok=True)
    connection.write_text(
        json.dumps({"key": key, "signature_scheme": "hmac-sha256", **relay_files.KERNEL_SIDE})
    )
    connection.chmod(0o600)
    os.chown(connection, entry.pw_uid, entry.pw_gid)
    relay_files.write(str(private), *keys, (entry.pw_uid, entry.pw_gid))


def relay_keys(private: Path) -> dict[str, str]:
    """The kernel's keypair, as the service's connection info holds it."""
    written = json.loads((private / RELAY_CONFIG_NAME).read_text())
    return {"curve_publickey": written["public_key"], "curve_secretkey": written["secret_key"]}


def client_info(private: Path, ports: dict[str, int], address: str) -> dict[str, Any]:
    """What the service connects with: the key, the relay's ports, the keypair."""
    written = json.loads((private / CONNECTION_FILE_NAME).read_text())
    return {
        "key": written["key"],
        "signature_scheme": written["signature_scheme"],
        **ports,
        "transport": "tcp",
        "ip": address,
        **relay_keys(private),
    }


def kernel_spec(user: str, private: Path, name: str, gpus: int = 0) -> ContainerSpec:
    entry = pwd.getpwnam(user)
    return ContainerSpec(
        image=DEBIAN_IMAGE,
        command=relayed_command(
            [
                "sh",
                "-c",
                # Something in the job's output before the kernel says anything itself.
                f"echo kernel of {name} starting; exec python3 -m ipykernel_launcher "
                f"-f {KERNEL_DIR_IN_CONTAINER}/{CONNECTION_FILE_NAME}",
            ]
        ),
        name=name,
        labels={TEST_LABEL: RUN, KERNEL_ID_LABEL: name},
        environment={"HOME": "/tmp", "JGC_GREETING": "hello from the job's environment"},
        user=f"{entry.pw_uid}:{entry.pw_gid}",
        working_dir="/tmp",
        mounts=[Mount(str(private), KERNEL_DIR_IN_CONTAINER, read_only=False)],
        gpu_count=gpus,
    )


def start_time(backend: SlurmBackend, job_id: str) -> str:
    """What ``squeue --start`` says of the job's start, as Slurm prints it."""
    return backend.commands.run(
        ["squeue", "--start", "--noheader", "--format=%S", f"--jobs={job_id}"], what="ask"
    ).strip()


def until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout:.0f} s: {what}")
        time.sleep(0.2)


def run_cell(client: BlockingKernelClient, code: str, timeout: float = 60) -> tuple[str, dict]:
    """What the cell printed, and its execute_reply's content."""
    msg_id = client.execute(code)
    printed = []
    deadline = time.monotonic() + timeout
    while True:
        message = client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "stream":
            printed.append(message["content"]["text"])
        if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            break
    reply = client.get_shell_msg(timeout=timeout)
    return "".join(printed), reply["content"]


def connect(info: dict[str, Any]) -> BlockingKernelClient:
    client = BlockingKernelClient()
    client.load_connection_info(info)
    client.start_channels()
    client.wait_for_ready(timeout=60)
    return client


class Kernels:
    """This test's backend, its records, its private directories, and its jobs ended at the
    end whatever happened."""

    def __init__(self, cluster: SlurmCluster, base: Path) -> None:
        self.cluster = cluster
        self.base = base
        self.records = base / "records"
        self.backends: list[SlurmBackend] = []

    def backend(self, **traits: Any) -> SlurmBackend:
        made = SlurmBackend(
            slurm_conf=str(self.cluster.conf),
            records_dir=str(self.records),
            poll_interval=0.2,
            **traits,
        )
        self.backends.append(made)
        return made

    def end(self) -> None:
        for backend in self.backends:
            for record in backend.records.all():
                backend.commands.cancel(record.job_id)
            backend.close()


@pytest.fixture
def slurm_kernels(slurm_cluster: SlurmCluster) -> Iterator[Kernels]:
    base = slurm_cluster.workdir / "backend" / os.urandom(4).hex()
    base.mkdir(parents=True)
    base.chmod(0o755)
    made = Kernels(slurm_cluster, base)
    try:
        yield made
    finally:
        made.end()
        for user in (STUDENT_A, STUDENT_B):
            podman_user.remove_test_containers(user)


@needs_cluster
async def test_a_kernel_runs_as_a_job_of_its_user_and_a_new_backend_finds_it_again(
    slurm_kernels: Kernels, docker_client: Any, cdi_by_index: str
) -> None:
    podman_user.load_images(docker_client, [DEBIAN_IMAGE], user=STUDENT_A)
    backend = slurm_kernels.backend(gpu_device=cdi_by_index)
    removed: list[str] = []
    backend.on_removed = lambda record, when: removed.append(record.id)
    private = private_dir(slurm_kernels.base, STUDENT_A, "kernel-a")
    spec = kernel_spec(STUDENT_A, private, f"jgc-test-{RUN}-a", gpus=1)

    job_id = await backend.create(spec)
    await backend.start(job_id, spec.image)
    job = backend.commands.job(job_id)
    assert job is not None and job.running and job.user == STUDENT_A and len(job.gpus) == 1
    assert (await backend.state(job_id)).running  # type: ignore[union-attr]
    assert await backend.address(job_id) == "127.0.0.1"  # the node's NodeAddr
    info = until(
        lambda: backend.connection_sync(job_id), 90, "the kernel never wrote back its ports"
    )
    info = await backend.connection_info(job_id)
    assert info["ip"] == "127.0.0.1" and all(info[p] > 0 for p in PORT_NAMES)

    client = connect(client_info(private, {p: info[p] for p in PORT_NAMES}, info["ip"]))
    try:
        printed, reply = run_cell(
            client,
            "import os\n"
            "print(os.environ['JGC_GREETING'], os.getuid())\n"
            f"print(sorted(n for n in os.listdir('{slurm_kernels.cluster.dev}')))",
        )
        assert reply["status"] == "ok", reply
        greeting, devices = printed.strip().splitlines()
        assert greeting == f"hello from the job's environment {pwd.getpwnam(STUDENT_A).pw_uid}"
        # Exactly the GPU Slurm gave the job.
        assert devices == repr([f"nvidia{index}" for index in job.gpus])

        # An interrupt reaches the kernel through the job's script; the job goes on.
        msg_id = client.execute("import time\ntime.sleep(120)")
        while True:  # until the kernel is busy with the cell
            message = client.get_iopub_msg(timeout=60)
            if (
                message["parent_header"].get("msg_id") == msg_id
                and message["msg_type"] == "status"
                and message["content"]["execution_state"] == "busy"
            ):
                break
        await backend.kill(job_id, signal.SIGINT)
        reply = client.get_shell_msg(timeout=60)
        assert reply["parent_header"]["msg_id"] == msg_id
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        assert (await backend.state(job_id)).running  # type: ignore[union-attr]
    finally:
        client.stop_channels()

    # The job's output: what the container printed, as a tail and as a stream.
    assert f"kernel of {spec.name} starting" in await backend.logs_tail(job_id, 50)
    stream = backend.open_logs_sync(job_id, tail=50, follow=False)
    assert stream is not None
    assert any(f"kernel of {spec.name} starting" in line.text for line in stream)

    # A new backend (the service restarted) knows the job from its records, and reaches the
    # kernel again; the job's own marks, which its user may change, are not what it reads.
    subprocess.run(
        [
            "setpriv",
            f"--reuid={STUDENT_A}",
            f"--regid={pwd.getpwnam(STUDENT_A).pw_gid}",
            "--init-groups",
            "scontrol",
            "update",
            f"JobId={job_id}",
            f"Comment={TEST_LABEL}=someone-else",
        ],
        env={**os.environ, "SLURM_CONF": str(slurm_kernels.cluster.conf)},
        check=True,
        capture_output=True,
    )
    again = slurm_kernels.backend()
    listed = await again.list_containers({TEST_LABEL: RUN})
    assert [(c.id, c.status, c.labels[KERNEL_ID_LABEL]) for c in listed] == [
        (job_id, "running", spec.name)
    ]
    assert await again.list_containers({TEST_LABEL: "someone-else"}) == []
    info = await again.connection_info(job_id)
    client = connect(client_info(private, {p: info[p] for p in PORT_NAMES}, info["ip"]))
    try:
        _, reply = run_cell(client, "1 + 1")
        assert reply["status"] == "ok"
    finally:
        client.stop_channels()
    details = await again.details(job_id)
    assert details is not None and details.status == "running" and details.started_at

    # Removed: the job is cancelled, its record gone, the listener told; its container ends.
    await again.remove(job_id)
    again.on_removed = None
    assert await again.list_containers({TEST_LABEL: RUN}) == []
    assert await again.state(job_id) is None
    until(
        lambda: (j := again.commands.job(job_id)) is None or j.over,
        60,
        "the removed kernel's job did not end",
    )
    # Within the job's KillWait (30 s), after which Slurm would kill podman itself.
    until(lambda: not podman_user.run_containers(STUDENT_A), 45, "the container outlived its job")


@needs_cluster
async def test_a_start_waits_while_slurm_says_why_and_gives_up_in_a_sentence(
    slurm_kernels: Kernels, docker_client: Any
) -> None:
    """Every GPU held by another student's job: the kernel's job pends for Resources, the start
    waits up to pending_timeout, then cancels it and says so; a held job (a wait that never ends
    by itself) ends the start at once; a request no node can ever meet is refused by Slurm at
    once, in a sentence."""
    cluster = slurm_kernels.cluster
    backend = slurm_kernels.backend(pending_timeout=3)
    holder = backend.commands.submit(
        kernels.account_of(kernel_spec(STUDENT_B, slurm_kernels.base, "holder")),
        kernels.JobRequest(
            name=f"jgc-test-{RUN}",
            workdir="/tmp",
            output="/dev/null",
            gpus=cluster.gpus,
            comment=f"jgc-test-run={RUN}",
        ),
        "#!/bin/sh\nsleep 300\n",
    )
    try:
        until(
            lambda: (j := backend.commands.job(holder)) is not None and j.running,
            60,
            "the holder's job did not run",
        )
        private = private_dir(slurm_kernels.base, STUDENT_A, "kernel-waits")
        spec = kernel_spec(STUDENT_A, private, f"jgc-test-{RUN}-waits", gpus=1)
        job_id = await backend.create(spec)
        assert backend.pending_reason_sync(job_id) is not None
        # Slurm has no estimate for it (the holder's job has no time limit): squeue --start
        # says its placeholder, a year ahead, once the scheduler has looked; never shown as a
        # time (issue 61, finding 12).
        raw = until(
            lambda: (out := start_time(backend, job_id)) not in ("", "N/A") and out,
            60,
            "Slurm said no start time for the pending job",
        )
        reason = backend.pending_reason_sync(job_id)
        assert reason is not None and reason[1] is None, (raw, reason)
        with pytest.raises(SchedulerWaitTimedOut) as refused:
            await backend.start(job_id, spec.image)
        assert refused.value.status == 409 and refused.value.routine
        assert refused.value.sentence.startswith(
            f"Slurm did not start the kernel's job {job_id} within 3 s, the longest a start "
            "waits here (it waited for "
        ), refused.value.sentence
        assert "cancelled" in refused.value.sentence
        until(
            lambda: (j := backend.commands.job(job_id)) is None or j.over,
            30,
            "the job that waited too long was not cancelled",
        )
    finally:
        backend.commands.cancel(holder)

    # A job held (a hold never passes by itself): the start ends at once, the job cancelled.
    held = slurm_kernels.backend(extra_sbatch_args=["--hold"])
    private = private_dir(slurm_kernels.base, STUDENT_A, "kernel-held")
    spec = kernel_spec(STUDENT_A, private, f"jgc-test-{RUN}-held")
    job_id = await held.create(spec)
    with pytest.raises(EngineRefused, match=r"which will not pass by itself") as refused:
        await held.start(job_id, spec.image)
    assert f"Slurm cannot start the kernel's job {job_id}: it waits for JobHeld" in (
        refused.value.sentence
    )
    until(
        lambda: (j := held.commands.job(job_id)) is None or j.over,
        30,
        "the held job was not cancelled",
    )

    # A job that ends before it runs (cancelled by its own user with scancel, or by the
    # cluster): an upstream failure in a sentence, 502, never a server fault (500).
    private = private_dir(slurm_kernels.base, STUDENT_A, "kernel-cancelled")
    spec = kernel_spec(STUDENT_A, private, f"jgc-test-{RUN}-cancelled")
    job_id = await held.create(spec)
    held.commands.cancel(job_id)
    until(
        lambda: (j := held.commands.job(job_id)) is None or j.over,
        30,
        "the cancelled job did not end",
    )
    with pytest.raises(EngineRefused) as refused:
        await held.start(job_id, spec.image)
    assert refused.value.status == 502, refused.value.status
    assert refused.value.sentence.startswith(
        f"The kernel's Slurm job {job_id} for {spec.image} ended before it ran"
    ), refused.value.sentence

    private = private_dir(slurm_kernels.base, STUDENT_A, "kernel-too-many")
    spec = kernel_spec(STUDENT_A, private, f"jgc-test-{RUN}-too-many", gpus=cluster.gpus + 1)
    with pytest.raises(ContainerKernelError, match=r"^Slurm refused to start a job for "):
        await backend.create(spec)
    assert all(record.name != spec.name for record in backend.records.all())


@needs_cluster
async def test_the_epilog_removes_a_container_that_outlived_its_job(
    slurm_kernels: Kernels, docker_client: Any, cdi_by_index: str
) -> None:
    """A job whose batch script is killed outright (SIGKILL, which it cannot pass on) leaves its
    container running: podman's conmon is not in the job's process group, which is all
    proctrack/pgid ends. deploy/slurm/epilog.sh, the cluster's Epilog, removes it after the
    job, as the job's user."""
    podman_user.load_images(docker_client, [DEBIAN_IMAGE], user=STUDENT_A)
    backend = slurm_kernels.backend(gpu_device=cdi_by_index)
    private = private_dir(slurm_kernels.base, STUDENT_A, "outlived")
    spec = kernel_spec(STUDENT_A, private, f"jgc-test-{RUN}-outlived", gpus=1)
    job_id = await backend.create(spec)
    await backend.start(job_id, spec.image)
    name = f"jupyter-slurm-job-{job_id}"
    until(
        lambda: any(name in c["Names"] for c in podman_user.run_containers(STUDENT_A)),
        60,
        "the job's container never ran",
    )
    backend.commands.signal(job_id, signal.SIGKILL)
    until(
        lambda: (j := backend.commands.job(job_id)) is None or j.over,
        60,
        "the job did not end with its batch script",
    )
    until(
        lambda: not any(name in c["Names"] for c in podman_user.run_containers(STUDENT_A)),
        60,
        "the Epilog did not remove the container that outlived its job",
    )


class Steps:
    """The launch's side of a placement (LaunchSteps), as the provisioner's does it: the plan is
    the test's spec with the decided GPU count and the kernel's labels; ``before_waiting``
    removes ``previous``, the container a restart stopped."""

    def __init__(
        self, spec: ContainerSpec, uid: int, previous: tuple[SlurmBackend, str] | None = None
    ) -> None:
        self.spec, self.uid, self.previous = spec, uid, previous
        self.created_ids: list[str] = []
        self.phases: list[str] = []
        self.removed_first = False

    def plan(self, attached: Attachment, gpus: tuple[str, ...]) -> ContainerSpec:
        labels = {
            **self.spec.labels,
            L.MANAGED: "true",
            L.UID: str(self.uid),
            L.GPU_COUNT: str(attached.count),
        }
        return dataclasses.replace(
            self.spec,
            labels=labels,
            gpu_count=attached.count,
            environment={**self.spec.environment, **attached.environment},
        )

    def stamp(self, phase: str) -> None:
        self.phases.append(phase)

    def created(self, container_id: str) -> None:
        self.created_ids.append(container_id)

    async def before_waiting(self) -> None:
        if self.previous is not None:
            backend, container_id = self.previous
            await backend.remove(container_id)
            self.removed_first = True

    async def from_warm_pool(self, spec: ContainerSpec) -> bool:
        return False


def placement_start(spec: ContainerSpec, uid: int, gpus: int) -> PlacementStart:
    return PlacementStart(
        kernel_id=spec.name,
        image_ref=spec.image,
        image=ImageRecord(spec.image, (spec.image,), {}, {}, (), "", "", 0),
        request=GPURequest(count=gpus),
        request_is_default=False,
        keeps_gpus=False,
        wait=False,
        uid=uid,
        user=pwd.getpwuid(uid).pw_name,
        notebook="",
        server_id="svc",
        gpu_resource="",
        began=time.monotonic(),
        launch_timeout=60,
    )


@needs_cluster
async def test_the_batch_placement_waits_for_the_ports_the_kernel_chose_on_its_node(
    slurm_kernels: Kernels, docker_client: Any, cdi_by_index: str
) -> None:
    """BatchPlacement on the real backend: the kernel's job runs, the placement answers with
    the node's address and the ports the kernel bound there (its connection file named port
    0); a second start over the user's GPU cap is refused before any job is submitted; a
    container that ends without a kernel is said to have ended, with what it printed."""
    podman_user.load_images(docker_client, [DEBIAN_IMAGE], user=STUDENT_A)
    backend = slurm_kernels.backend(gpu_device=cdi_by_index)
    placement = BatchPlacement(backend=backend, allocator=GPUAllocator(max_gpus_per_user=1))
    uid = pwd.getpwnam(STUDENT_A).pw_uid
    private = private_dir(slurm_kernels.base, STUDENT_A, "placed")
    spec = kernel_spec(STUDENT_A, private, f"jgc-test-{RUN}-placed")
    steps = Steps(spec, uid)
    placed = await placement.place(placement_start(spec, uid, 1), steps)
    assert steps.created_ids == [placed.container_id]
    assert placed.address == "127.0.0.1" and placed.ports is not None
    assert sorted(placed.ports) == sorted(PORT_NAMES) and all(placed.ports.values())
    client = connect(client_info(private, placed.ports, placed.address))
    try:
        _, reply = run_cell(client, "2 + 2")
        assert reply["status"] == "ok"
    finally:
        client.stop_channels()

    over = kernel_spec(STUDENT_A, private_dir(slurm_kernels.base, STUDENT_A, "over"), "over")
    with pytest.raises(OverUserCap, match="over the limit of 1 GPU per user"):
        await placement.place(placement_start(over, uid, 1), Steps(over, uid))
    assert [r.job_id for r in backend.records.all()] == [placed.container_id]

    ends = dataclasses.replace(
        kernel_spec(STUDENT_A, private_dir(slurm_kernels.base, STUDENT_A, "ends"), "ends"),
        command=["sh", "-c", "echo there is no kernel in here; exit 3"],
    )
    with pytest.raises(ContainerExited, match="there is no kernel in here"):
        await placement.place(placement_start(ends, uid, 0), Steps(ends, uid))


@needs_cluster
async def test_an_image_whose_pyzmq_has_no_curve_starts_no_kernel_and_opens_no_port(
    slurm_kernels: Kernels, docker_client: Any, cdi_by_index: str
) -> None:
    """The channel relay refuses to start without CurveZMQ (issue 61, finding 4): the kernel
    is never started, no port is written back, and the start ends in a sentence that says
    what the image lacks. The image's pyzmq is made to say it has no Curve by a module of that
    name ahead of it on PYTHONPATH (a pyzmq built without libsodium says the same)."""
    podman_user.load_images(docker_client, [DEBIAN_IMAGE], user=STUDENT_A)
    backend = slurm_kernels.backend(gpu_device=cdi_by_index)
    placement = BatchPlacement(backend=backend, allocator=GPUAllocator(max_gpus_per_user=1))
    uid = pwd.getpwnam(STUDENT_A).pw_uid
    private = private_dir(slurm_kernels.base, STUDENT_A, "no-curve")
    shim = private / "no-curve" / "zmq"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("def has(capability):\n    return capability != 'curve'\n")
    for path in (shim.parent, shim, shim / "__init__.py"):
        os.chown(path, uid, pwd.getpwnam(STUDENT_A).pw_gid)
    spec = kernel_spec(STUDENT_A, private, f"jgc-test-{RUN}-no-curve")
    spec = dataclasses.replace(
        spec,
        environment={**spec.environment, "PYTHONPATH": f"{KERNEL_DIR_IN_CONTAINER}/no-curve"},
    )
    with pytest.raises(ImageNotKernelReady) as ended:
        await placement.place(placement_start(spec, uid, 0), Steps(spec, uid))
    assert ended.value.status == 422
    assert "its pyzmq has no CurveZMQ" in ended.value.sentence, ended.value.sentence
    assert f"kernel of {spec.name} starting" not in ended.value.sentence
    assert not (private / RELAY_PORTS_NAME).exists()


@needs_cluster
async def test_a_restart_runs_in_its_jobs_allocation_when_it_would_be_the_same_job(
    slurm_kernels: Kernels, docker_client: Any, cdi_by_index: str
) -> None:
    """The JSC pattern: a kernel's container stopped for a restart (as jupyter_client's
    terminate with ``restart`` does) leaves its job running; the restart's container runs in
    it (the job's next generation: the same job, the same GPUs, a fresh kernel), and a restart
    asking for something else removes the job first and submits anew. A job whose kernel nobody
    restarts ends by itself after restart_wait, and a kernel's own end is its container's, not
    its job's."""
    podman_user.load_images(docker_client, [DEBIAN_IMAGE], user=STUDENT_A)
    backend = slurm_kernels.backend(gpu_device=cdi_by_index, restart_wait=10)
    kept = backend.kept_allocations
    assert kept is not None
    assert slurm_kernels.backend(restart_wait=0).kept_allocations is None
    placement = BatchPlacement(backend=backend, allocator=GPUAllocator(max_gpus_per_user=2))
    uid = pwd.getpwnam(STUDENT_A).pw_uid
    private = private_dir(slurm_kernels.base, STUDENT_A, "restarted")
    key = json.loads((private / CONNECTION_FILE_NAME).read_text())["key"]
    keys = tuple(relay_keys(private).values())
    spec = kernel_spec(STUDENT_A, private, f"jgc-test-{RUN}-restarted")
    devices = f"print(sorted(n for n in os.listdir('{slurm_kernels.cluster.dev}')))"

    async def run_in(placed: Any, code: str) -> str:
        client = connect(client_info(private, placed.ports, placed.address))
        try:
            printed, reply = run_cell(client, code)
            assert reply["status"] == "ok", reply
            return printed.strip()
        finally:
            client.stop_channels()

    async def stopped(container_id: str) -> None:
        await kept.stop_for_restart(container_id)
        until(
            lambda: (s := backend.state_sync(container_id)) is not None and s.ended,
            60,
            "the container stopped for a restart did not end",
        )
        ports_to_choose(private, STUDENT_A, key, keys)  # as the restart's pre_launch does

    first = await placement.place(placement_start(spec, uid, 1), Steps(spec, uid))
    job_id = first.container_id
    job = backend.commands.job(job_id)
    assert job is not None and len(job.gpus) == 1
    assert await run_in(first, f"import os\nkept = 1\n{devices}") == repr(
        [f"nvidia{index}" for index in job.gpus]
    )

    # Stopped for a restart: the container ended, the job (and its GPU) goes on.
    await stopped(job_id)
    still = backend.commands.job(job_id)
    assert still is not None and still.running and still.gpus == job.gpus

    # The restart, the same job: its next container, on the same GPU, a fresh kernel.
    steps = Steps(spec, uid, (backend, job_id))
    start = dataclasses.replace(placement_start(spec, uid, 1), previous_container=job_id)
    second = await placement.place(start, steps)
    assert second.container_id == f"{job_id}.1" and steps.created_ids == [second.container_id]
    assert not steps.removed_first
    assert await run_in(second, f"import os\nprint('kept' in globals())\n{devices}") == (
        f"False\n{[f'nvidia{index}' for index in job.gpus]!r}"
    )
    # The container before it ended; removing it leaves the job, which runs the kernel now.
    before = await backend.state(job_id)
    assert before is not None and before.ended
    await backend.remove(job_id)
    assert backend.records.get(job_id) is not None
    assert (await backend.state(second.container_id)).running  # type: ignore[union-attr]
    listed = await backend.list_containers({TEST_LABEL: RUN})
    assert [(c.id, c.status) for c in listed] == [(second.container_id, "running")]
    # A restarted service finds the kernel in the job's second container, at its ports.
    again = slurm_kernels.backend(restart_wait=10)
    listed = await again.list_containers({TEST_LABEL: RUN})
    assert [(c.id, c.status) for c in listed] == [(second.container_id, "running")]
    info = await again.connection_info(second.container_id)
    assert {name: info[name] for name in PORT_NAMES} == second.ports

    # A restart asking for two GPUs is another job: the one before goes first.
    await stopped(second.container_id)
    steps = Steps(spec, uid, (backend, second.container_id))
    start = dataclasses.replace(
        placement_start(spec, uid, 2), previous_container=second.container_id
    )
    third = await placement.place(start, steps)
    assert steps.removed_first and third.container_id not in (job_id, second.container_id)
    assert backend.records.get(job_id) is None
    until(
        lambda: (j := backend.commands.job(job_id)) is None or j.over,
        60,
        "the job before a restart under another request did not end",
    )
    new_job = backend.commands.job(third.container_id)
    assert new_job is not None and len(new_job.gpus) == 2

    # A kernel that ends and is not restarted: its container has ended at once, its job ends
    # by itself within restart_wait (10 s) and Slurm's look at it.
    await backend.kill(third.container_id, signal.SIGALRM)  # as stop_for_restart does
    until(
        lambda: (s := backend.state_sync(third.container_id)) is not None and s.ended,
        60,
        "the kernel's container did not end",
    )
    until(
        lambda: (j := backend.commands.job(third.container_id)) is None or j.over,
        60,
        "a job whose kernel nobody restarted did not end by itself",
    )


def test_the_records_directory_is_refused_when_another_account_made_it(
    tmp_path: Path,
) -> None:
    made = tmp_path / "records"
    made.mkdir(mode=0o700)
    if os.getuid() == 0:
        os.chown(made, 65534, 65534)
    else:
        made.chmod(0o755)
    with pytest.raises(PathRefused, match="Another user may have created it first"):
        JobRecords(str(made)).all()


def test_a_jobs_environment_is_on_podmans_stdin_never_on_a_command_line(tmp_path: Path) -> None:
    entry = pwd.getpwuid(os.getuid())
    spec = ContainerSpec(
        image="jgc/x:1",
        command=["python3", "-m", "ipykernel_launcher"],
        name="jupyter-kernel-x",
        labels={"a": "b"},
        environment={"SECRET_TOKEN": "s3cret value"},
        user=f"{entry.pw_uid}:{entry.pw_gid}",
        mounts=[Mount(str(tmp_path), KERNEL_DIR_IN_CONTAINER, read_only=False)],
        port_bindings={8888: ("127.0.0.1", 40000)},
        mem_limit="4g",
        gpu_count=2,
    )
    job = kernels.kernel_job(spec, kernels.JobSettings(partition="gpu"), description="a kernel")
    run_line = next(line for line in job.script.splitlines() if line.startswith("podman run"))
    assert "s3cret" not in run_line and "--env-file /dev/stdin" in run_line
    assert "--network host" in run_line and "--publish" not in run_line
    assert run_line.endswith("<<'JGC_END_OF_ENVIRONMENT' &")
    after = job.script.split(run_line, 1)[1].splitlines()
    assert after[1:3] == ["SECRET_TOKEN=s3cret value", "JGC_END_OF_ENVIRONMENT"]
    arguments = job.request.arguments()
    assert "--gres=gpu:2" in arguments and "--mem=4096M" in arguments
    assert "--partition=gpu" in arguments and "--export=NONE" in arguments
    assert job.request.output == str(tmp_path / kernels.OUTPUT_FILE_NAME)
    assert job.account.uid == entry.pw_uid
    with pytest.raises(EngineRefused, match="numeric account"):
        kernels.kernel_job(
            ContainerSpec(**{**spec.__dict__, "user": "jovyan"}),
            kernels.JobSettings(),
            description="",
        )


def test_every_line_break_in_an_environment_value_is_a_400_on_every_slurm_path(
    tmp_path: Path,
) -> None:
    """Every way a value reaches a line-by-line reader on Slurm (the batch script's podman
    --env-file, pyxis's exports, the probe's script and srun's --export) refuses a value
    holding a line break of any reader's, as ValueRefused (400) naming it: no ValueError (a
    500) and no value read as two (issue 61, finding 10)."""
    entry = pwd.getpwuid(os.getuid())
    spec = ContainerSpec(
        image="jgc/x:1",
        command=["python3"],
        name="jupyter-kernel-x",
        labels={},
        environment={},
        user=f"{entry.pw_uid}:{entry.pw_gid}",
        mounts=[Mount(str(tmp_path), KERNEL_DIR_IN_CONTAINER, read_only=False)],
    )
    for char, name in LINE_BREAKS.items():
        value = {"JPY_SESSION_NAME": f"/home/a{char}b.ipynb"}
        odd = dataclasses.replace(spec, environment=value)
        for launcher in ("podman", "pyxis"):
            settings = kernels.JobSettings(launcher=launcher)
            with pytest.raises(ValueRefused, match=f"its value holds {re.escape(name)}") as e:
                kernels.kernel_job(odd, settings, description="a kernel")
            assert e.value.status == 400
        probe = {"home": "/tmp", "labels": {}, "entrypoint": None, "user": None}
        with pytest.raises(ValueRefused, match=re.escape(name)):
            kernels.oneshot_script(
                "jgc/x:1", ["true"], cap_add=[], no_new_privileges=True, environment=value, **probe
            )
        with pytest.raises(ValueRefused, match=re.escape(name)):
            kernels.pyxis_oneshot_args("jgc/x:1", ["true"], value)
    # What they do take, they pass on whole: a value with quotes, '$' and '=' is one line.
    job = kernels.kernel_job(
        dataclasses.replace(spec, environment={"A": "it's $HOME = `x`"}),
        kernels.JobSettings(),
        description="a kernel",
    )
    assert "\nA=it's $HOME = `x`\nJGC_END_OF_ENVIRONMENT\n" in job.script
    with pytest.raises(ValueRefused, match="a name is ASCII letters"):
        kernels.kernel_job(
            dataclasses.replace(spec, environment={"#A": "1"}),
            kernels.JobSettings(),
            description="",
        )


def test_only_port_numbers_are_read_back_from_a_kernels_channel_relay(
    tmp_path: Path,
) -> None:
    """The relay's ports file is the job's user's to write: a port that is no port, or a file
    that is a link, gives no connection; the kernel's own connection file is never read for
    ports (a kernel that bound tcp itself is not connected to: its ports have no Curve)."""
    path = tmp_path / RELAY_PORTS_NAME
    good = {"ip": "10.9.9.9", **{p: 40000 + i for i, p in enumerate(PORT_NAMES)}}
    (tmp_path / CONNECTION_FILE_NAME).write_text(
        json.dumps({"key": "k", "signature_scheme": "hmac-sha256", **good})
    )
    assert kernels.written_connection(str(tmp_path), ME) is None
    path.write_text(json.dumps(good))
    read = kernels.written_connection(str(tmp_path), ME)
    assert read is not None and "ip" not in read and read["shell_port"] == 40000
    assert read["transport"] == "tcp" and "key" not in read
    path.write_text(json.dumps({**good, "hb_port": 0}))
    assert kernels.written_connection(str(tmp_path), ME) is None
    path.write_text(json.dumps({**good, "hb_port": "40004; rm -rf /"}))
    assert kernels.written_connection(str(tmp_path), ME) is None
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(good))
    path.unlink()
    path.symlink_to(elsewhere)
    assert kernels.written_connection(str(tmp_path), ME) is None
    # A hard link to a file (another account's, say) is not the kernel's own file.
    path.unlink()
    os.link(elsewhere, path)
    assert kernels.written_connection(str(tmp_path), ME) is None
    path.unlink()
    path.write_text(json.dumps(good))
    assert kernels.written_connection(str(tmp_path), ME + 1) is None  # not the job's user's
    assert kernels.written_connection(str(tmp_path), ME) is not None
    assert kernels.memory_mb("512m") == 512 and kernels.memory_mb("1073741824") == 1024


def test_a_jobs_output_is_read_only_as_the_jobs_users_own_file(tmp_path: Path) -> None:
    """The job's output file lies in a directory its user writes: a link (soft or hard) to
    another file, or a file of another account, shows nothing in the kernel's log."""
    output = tmp_path / kernels.OUTPUT_FILE_NAME
    output.write_text("".join(f"line {n}\n" for n in range(100)))
    assert slurm_logs.tail(str(output), ME, 2) == "line 98\nline 99"
    stream = slurm_logs.open_output(str(output), ME, 1, False, lambda: False)
    assert stream is not None and [line.text for line in stream] == ["line 99"]
    assert slurm_logs.tail(str(output), ME + 1, 2) == ""
    secret = tmp_path / "secret"
    secret.write_text("not the kernel's\n")
    output.unlink()
    os.link(secret, output)
    assert slurm_logs.tail(str(output), ME, 2) == ""
    assert slurm_logs.open_output(str(output), ME, 2, False, lambda: False) is None
    output.unlink()
    output.symlink_to(secret)
    assert slurm_logs.tail(str(output), ME, 2) == ""
