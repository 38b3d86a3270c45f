"""Kernels as Slurm jobs through the kernel service (``ServiceApp.backend = "slurm"``), as two real
accounts outside the docker group, against a real Slurm (tests/slurm_cluster.py) and the
students' real rootless Podman: a notebook's request for GPUs becomes a job with that many GPUs
whose container sees exactly those devices; code runs as the user in their workspace; an
interrupt does not end the job; a restart runs the kernel again in the job's allocation, and a
restart under another request in a new job; shutdown ends the job and its container; the other
student neither sees nor reaches the kernel; the student's GPU-hours are Slurm's accounting's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import podman_user
import pytest
from conftest import DEBIAN_IMAGE
from conftest import TEST_RUN as RUN
from hostusers import ids_of
from kernel_io import collect, execute, send_execute
from servers import Server
from service_process import KernelService
from slurm_cluster import SlurmCluster, users_own_server

from jupyter_gpu_containers.backends.podman_args import LINE_BREAKS
from jupyter_gpu_containers.backends.slurm.jobs import SlurmCommands
from jupyter_gpu_containers.kernel.kernelspecs import kernel_name_for

STUDENT_A = os.environ.get("JGC_TEST_STUDENT_A", "")
STUDENT_B = os.environ.get("JGC_TEST_STUDENT_B", "")
PROBER = os.environ.get("JGC_TEST_PODMAN_USER", "")

pytestmark = [
    pytest.mark.skipif(
        not STUDENT_A or not STUDENT_B or not PROBER or os.getuid() != 0,
        reason="needs root, two student accounts and the Podman account (scripts/test.sh)",
    ),
    pytest.mark.timeout(600),
]


async def printed(ws: Any, msg_id: str, text: str, timeout: float = 60) -> None:
    """Until the request ``msg_id`` printed ``text``: its cell runs."""

    async def loop() -> None:
        while True:
            raw = await ws.read_message()
            if raw is None:
                raise ConnectionError("kernel websocket closed")
            msg = json.loads(raw)
            if (
                msg.get("parent_header", {}).get("msg_id") == msg_id
                and msg["msg_type"] == "stream"
                and text in msg["content"]["text"]
            ):
                return

    await asyncio.wait_for(loop(), timeout)


class Settings:
    def __init__(self, conf: Path) -> None:
        self.slurm_conf = str(conf)
        self.command_timeout = 30.0


@pytest.fixture
def slurm_service(
    slurm_cluster: SlurmCluster, docker_client: Any, cdi_by_index: str
) -> Iterator[KernelService]:
    """A kernel service on the session's Slurm cluster, its image in each student's and the
    probe account's Podman storage, with both students as its users."""
    for user in (STUDENT_A, STUDENT_B, PROBER):
        podman_user.load_images(docker_client, [DEBIAN_IMAGE], user=user)
    service = KernelService(
        {
            "ServiceApp": {"backend": "slurm"},
            "SlurmBackend": {
                "slurm_conf": str(slurm_cluster.conf),
                "probe_account": PROBER,
                "poll_interval": 0.2,
                "gpu_device": cdi_by_index,
            },
            "ImageCatalog": {"listed_images": [{"image": DEBIAN_IMAGE}]},
        }
    )
    service.config["SlurmBackend"]["records_dir"] = str(service.home / "slurm-records")
    try:
        for user in (STUDENT_A, STUDENT_B):
            service.add_user(user)
            (service.home / "ws" / user / "notes").mkdir()
            os.chown(service.home / "ws" / user / "notes", *ids_of(user))
        service.start()
        yield service
    finally:
        print("\n".join(service.output().splitlines()[-80:]))
        print(slurm_cluster._logs())
        service.close()
        for user in (STUDENT_A, STUDENT_B, PROBER):
            podman_user.remove_test_containers(user)


def test_a_notebooks_gpus_become_a_jobs_and_its_code_runs_as_the_user_there(
    slurm_service: KernelService, slurm_cluster: SlurmCluster
) -> None:
    service = slurm_service
    alice, bob = service.users[STUDENT_A], service.users[STUDENT_B]
    uid, gid = ids_of(STUDENT_A)
    commands = SlurmCommands(Settings(slurm_cluster.conf))
    name = kernel_name_for(DEBIAN_IMAGE)

    async def scenario() -> None:
        code, specs = await service.answer(alice, "GET", "api/kernelspecs")
        assert code == 200 and name in specs["kernelspecs"], specs
        notes = service.home / "ws" / STUDENT_A / "notes"
        kernel_id = await service.start_kernel(
            alice,
            name,
            {
                "JPY_SESSION_NAME": str(notes / "slurm.ipynb"),
                "KERNEL_WORKING_DIR": str(notes),
                "KERNEL_GPU_CONTAINERS_REQUEST": "2",
            },
        )
        (job,) = [j for j in commands.jobs() if j.state == "RUNNING" and j.user == STUDENT_A]
        assert len(job.gpus) == 2
        # The service's log says the GPUs it holds, Slurm's (issue 61, finding 12).
        (ready,) = [
            line
            for line in service.output().splitlines()
            if f"Kernel {kernel_id} answers from container" in line
        ]
        assert "GPUs: 2, placed by Slurm)" in ready, ready
        ws = await service.websocket(alice, kernel_id)
        try:
            result = await execute(
                ws,
                "import os\n"
                "open('from-slurm.txt', 'w').write('written in a job')\n"
                f"print(os.getuid(), os.getgid(), os.getcwd(), "
                f"' '.join(sorted(os.listdir('{slurm_cluster.dev}'))))",
                timeout=60,
            )
            ids, cwd, devices = (
                result.stdout.split()[:2],
                result.stdout.split()[2],
                (result.stdout.split()[3:]),
            )
            assert ids == [str(uid), str(gid)], result
            assert cwd.endswith("/notes"), result
            assert devices == [f"nvidia{index}" for index in job.gpus], result
            written = notes / "from-slurm.txt"
            assert written.read_text() == "written in a job"
            assert (written.stat().st_uid, written.stat().st_gid) == (uid, gid)
            # An interrupt reaches the kernel (once the cell runs); the job goes on.
            msg_id = await send_execute(
                ws, "import time\nprint('sleeping', flush=True)\ntime.sleep(120)", False
            )
            await printed(ws, msg_id, "sleeping")
            code, _ = await service.answer(alice, "POST", f"api/kernels/{kernel_id}/interrupt")
            assert code == 204
            interrupted = await collect(ws, msg_id, timeout=30)
            assert interrupted.ename == "KeyboardInterrupt", interrupted
            still = commands.job(job.id)
            assert still is not None and still.running
        finally:
            ws.close()

        # Restarted: the kernel runs again in its job's allocation (the same job, the same
        # GPUs, no wait in Slurm's queue), a fresh kernel (what it held in memory is gone).
        # Even a kernel slow to leave after the restart's shutdown request (here: 4 s of
        # exit handlers, past half of KernelManager.shutdown_wait_time, when jupyter_client
        # sends its SIGTERM without the restart flag: that once cancelled the job).
        ws = await service.websocket(alice, kernel_id)
        try:
            await execute(
                ws,
                "before_restart = 1\nimport atexit, time\natexit.register(time.sleep, 4)",
                timeout=60,
            )
        finally:
            ws.close()
        code, _ = await service.answer(alice, "POST", f"api/kernels/{kernel_id}/restart")
        assert code == 200
        again = commands.job(job.id)
        assert again is not None and again.running and again.gpus == job.gpus, again
        assert [j.id for j in commands.jobs() if j.user == STUDENT_A and not j.over] == [job.id]
        ws = await service.websocket(alice, kernel_id)
        try:
            result = await execute(
                ws,
                "import os\n"
                f"print('before_restart' in globals(), "
                f"' '.join(sorted(os.listdir('{slurm_cluster.dev}'))))",
                timeout=60,
            )
            assert result.stdout.split() == [
                "False",
                *(f"nvidia{index}" for index in job.gpus),
            ], result
        finally:
            ws.close()

        # Restarted under another request: a new job with what it asks for; the one before,
        # and its allocation, end first.
        code, _ = await service.answer(
            alice, "POST", f"gpu-containers/kernels/{kernel_id}/restart", {"gpus": 1}
        )
        assert code == 200
        (after,) = [
            j
            for j in commands.jobs()
            if j.state == "RUNNING" and j.user == STUDENT_A and j.id != job.id
        ]
        assert len(after.gpus) == 1
        for _ in range(150):  # cancelled before the new job was submitted; it may complete
            ended = commands.job(job.id)
            if ended is None or not ended.running:
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("the job before a restart under another request went on")
        ws = await service.websocket(alice, kernel_id)
        try:
            assert (await execute(ws, "print(6 * 7)", timeout=60)).stdout.strip() == "42"
        finally:
            ws.close()
        job = after

        # The other student neither sees nor reaches it.
        code, listed = await service.answer(bob, "GET", "api/kernels")
        assert code == 200 and kernel_id not in [k["id"] for k in listed]
        code, _ = await service.answer(bob, "GET", f"api/kernels/{kernel_id}")
        assert code in (403, 404)

        # The GPU panel's cluster: Slurm's node and its GPUs, the job's two by index for its
        # user; for the other student, two GPUs held by someone, no kernel id or notebook.
        code, view = await service.answer(alice, "GET", "gpu-containers/cluster")
        assert code == 200 and view["backend"] == "slurm" and not view["engine_error"], view
        ((node,),) = [pool["nodes"] for pool in view["pools"]]
        assert node["name"] == job.node and node["ready"], view
        holders = view["pools"][0]["holders"]
        # (The job before the restart may still be completing: what Slurm counts in use
        # beyond the kernels' jobs is the node's "other jobs", pod "".)
        others = sum(h["count"] for h in holders if not h["pod"])
        assert node["resources"] == [
            {
                "resource": "gpu",
                "allocatable": slurm_cluster.gpus,
                "held": 1 + others,
                "free": slurm_cluster.gpus - 1 - others,
            }
        ], view
        (holder,) = [h for h in holders if h["pod"]]
        assert holder["mine"] and holder["kernel_id"] == kernel_id, holder
        assert holder["pod"] == job.id and holder["notebook"].endswith("slurm.ipynb"), holder
        assert holder["gpus"] == [str(index) for index in job.gpus], holder
        code, seen = await service.answer(bob, "GET", "gpu-containers/cluster")
        (other,) = [h for h in seen["pools"][0]["holders"] if h["pod"]]
        assert not other["mine"] and other["count"] == 1, other
        assert other["kernel_id"] == other["notebook"] == other["user"] == "", other

        # Shut down: the job ends, and its container with it.
        code, _ = await service.answer(alice, "DELETE", f"api/kernels/{kernel_id}")
        assert code == 204
        for _ in range(300):
            ended = commands.job(job.id)
            if (ended is None or ended.over) and not podman_user.run_containers(STUDENT_A):
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("the kernel's job or its container outlived the shutdown")

        # Her GPU-hours this week, as Slurm's accounting counts them: her kernels' jobs held
        # GPUs. No quota of the service's own on Slurm, so nothing "left".
        code, quota = await service.answer(alice, "GET", "gpu-containers/quota")
        assert code == 200 and quota["accounted_by"] == "Slurm", quota
        assert quota["used_hours"] > 0 and not quota["enabled"], quota
        # Saving an environment as an image is not offered on Slurm, and the page is told why.
        code, saves = await service.answer(alice, "GET", "gpu-containers/saves")
        assert code == 200 and saves["refusal"].startswith("On Slurm each node"), saves
        assert saves["build_refusal"] == saves["refusal"], saves
        code, build = await service.answer(
            alice, "POST", "gpu-containers/builds", {"path": "e/Dockerfile"}
        )
        assert code == 501 and build["message"] == saves["refusal"], build

    asyncio.run(scenario())


def test_a_start_waits_in_slurms_queue_without_its_slot_and_starts_when_gpus_free(
    slurm_service: KernelService, slurm_cluster: SlurmCluster
) -> None:
    """Every GPU held, by two students' kernels: a third start pends
    in Slurm for Resources and waits (no launch timeout while Slurm says why), giving back its
    start slot meanwhile: with ServiceApp.max_concurrent_starts = 1, the other student's start
    is submitted too (and, on a node without CPUs to spare, waits behind it in Slurm's queue).
    As kernels end, Slurm starts the waiting jobs in turn and both starts complete."""
    service = slurm_service
    service.stop()
    service.config["ServiceApp"]["max_concurrent_starts"] = 1
    service.config_file.write_text(json.dumps(service.config))
    service.start()
    alice, bob = service.users[STUDENT_A], service.users[STUDENT_B]
    commands = SlurmCommands(Settings(slurm_cluster.conf))
    name = kernel_name_for(DEBIAN_IMAGE)
    two = {"KERNEL_GPU_CONTAINERS_REQUEST": "2"}

    async def scenario() -> None:
        first = await service.start_kernel(alice, name, two)
        second = await service.start_kernel(bob, name, two)
        bobs = {j.id for j in commands.jobs() if j.user == STUDENT_B}
        waiting = asyncio.ensure_future(
            service.answer(
                alice, "POST", "api/kernels", {"name": name, "env": {**two, "X": "third"}}
            )
        )
        for _ in range(300):
            pending = [
                j
                for j in commands.jobs()
                if j.waiting and j.user == STUDENT_A and j.reason in ("Resources", "Priority")
            ]
            if pending:
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("the third start's job never pended for Resources or Priority")
        # Its slot given back: another start (no GPU) is submitted while it waits.
        other_start = asyncio.ensure_future(
            service.answer(bob, "POST", "api/kernels", {"name": name, "env": {}})
        )
        for _ in range(300):
            if [j for j in commands.jobs() if j.user == STUDENT_B and j.id not in bobs]:
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("the other start was not submitted while the first one waited")
        assert not waiting.done()
        for _ in range(100):
            if "waits: Resources" in service.output() or "waits: Priority" in service.output():
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("the service's log never said why the job waits")
        # The queue lists it with Slurm's reason: to its user in full, to the other student
        # without its kernel id; only its user may cancel it.
        code, queue = await service.answer(alice, "GET", "gpu-containers/queue")
        assert code == 200, queue
        (mine,) = [t for t in queue["queue"] if t["yours"] and t.get("scheduler") == "Slurm"]
        assert mine["reason"] in ("Resources", "Priority") and mine["gpus"] == 2, mine
        assert mine["kernel_id"] and mine["position"] == 0
        third_id = mine["kernel_id"]
        code, seen = await service.answer(bob, "GET", "gpu-containers/queue")
        assert {t["kernel_id"] for t in seen["queue"] if not t["yours"]} == {None}, seen
        code, _ = await service.answer(bob, "DELETE", f"gpu-containers/queue/{third_id}")
        assert code == 404
        # A fourth start waits too, and its user cancels it: its job is cancelled, and the
        # start ends with 409.
        fourth = asyncio.ensure_future(
            service.answer(
                alice, "POST", "api/kernels", {"name": name, "env": {**two, "X": "fourth"}}
            )
        )
        for _ in range(300):
            code, queue = await service.answer(alice, "GET", "gpu-containers/queue")
            ids = {t["kernel_id"] for t in queue["queue"] if t["yours"]} - {third_id}
            if ids:
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("the fourth start was never listed as waiting")
        (fourth_id,) = ids
        code, _ = await service.answer(alice, "DELETE", f"gpu-containers/queue/{fourth_id}")
        assert code == 204
        code, refused = await asyncio.wait_for(fourth, 60)
        assert code == 409, refused
        assert "cancelled while its job waited in Slurm's queue" in refused["message"]
        assert not waiting.done()
        # A kernel ends: its GPUs free, Slurm starts the waiting job.
        code, _ = await service.answer(alice, "DELETE", f"api/kernels/{first}")
        assert code == 204
        code, model = await asyncio.wait_for(waiting, 120)
        assert code == 201, model
        third = str(model["id"])
        ws = await service.websocket(alice, third)
        try:
            assert (await execute(ws, "1 + 1", timeout=60)).status == "ok"
        finally:
            ws.close()
        # (The other start may have begun as well, where the node has CPUs to spare.)
        code, _ = await service.answer(bob, "DELETE", f"api/kernels/{second}")
        assert code == 204
        code, model = await asyncio.wait_for(other_start, 120)
        assert code == 201, model
        other = str(model["id"])
        for kernel_id, user in ((other, bob), (third, alice)):
            code, _ = await service.answer(user, "DELETE", f"api/kernels/{kernel_id}")
            assert code == 204

    asyncio.run(scenario())


def test_a_start_that_outwaits_the_pending_timeout_is_refused_with_409_in_a_sentence(
    slurm_service: KernelService, slurm_cluster: SlurmCluster
) -> None:
    """Every GPU held by the other student's job: a start whose job Slurm keeps pending past
    SlurmBackend.pending_timeout answers 409 with a sentence (as the host GPU queue's timeout
    does), never 500, and the service logs it as news, not as its own error (issue 61,
    finding 12); the job is cancelled."""
    service = slurm_service
    service.stop()
    service.config["SlurmBackend"]["pending_timeout"] = 3
    service.config_file.write_text(json.dumps(service.config))
    service.start()
    alice = service.users[STUDENT_A]
    commands = SlurmCommands(Settings(slurm_cluster.conf))
    holder = slurm_cluster.hold_every_gpu(STUDENT_B, f"{RUN}-holder")
    try:

        async def scenario() -> None:
            code, refused = await service.answer(
                alice,
                "POST",
                "api/kernels",
                {
                    "name": kernel_name_for(DEBIAN_IMAGE),
                    "env": {"KERNEL_GPU_CONTAINERS_REQUEST": "1"},
                },
            )
            assert code == 409, (code, refused)
            assert refused["message"].startswith("Slurm did not start the kernel's job"), refused
            assert "within 3 s" in refused["message"] and "cancelled" in refused["message"]

        asyncio.run(scenario())
        said = [line for line in service.output().splitlines() if "Slurm did not start" in line]
        assert said and not [line for line in said if line.startswith("[E")], said
        for _ in range(150):  # cancelled: it may still be completing
            if not [j for j in commands.jobs() if j.user == STUDENT_A and not j.over]:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the job that waited too long was not cancelled")
    finally:
        commands.cancel(holder)


def test_a_line_break_in_a_notebooks_path_is_refused_with_400_in_a_sentence(
    slurm_service: KernelService, slurm_cluster: SlurmCluster
) -> None:
    """A notebook's path is JPY_SESSION_NAME in its kernel's environment, which reaches the
    job's script and podman's --env-file as lines: a path holding any character some reader
    ends a line at (a carriage return, U+2028, …) is refused with 400 and a sentence naming
    it, never a 500, and no job is submitted (issue 61, finding 10)."""
    service = slurm_service
    alice = service.users[STUDENT_A]
    notes = service.home / "ws" / STUDENT_A / "notes"
    commands = SlurmCommands(Settings(slurm_cluster.conf))

    async def scenario() -> None:
        for char, name in LINE_BREAKS.items():
            code, refused = await service.answer(
                alice,
                "POST",
                "api/kernels",
                {
                    "name": kernel_name_for(DEBIAN_IMAGE),
                    "env": {"JPY_SESSION_NAME": str(notes / f"a{char}b.ipynb")},
                },
            )
            assert code == 400, (repr(char), code, refused)
            assert f"its value holds {name}" in refused["message"], refused
            assert "rename the notebook" in refused["message"], refused
        assert not [j for j in commands.jobs() if j.user == STUDENT_A and not j.over]

    asyncio.run(scenario())


def test_a_service_killed_with_sigkill_reattaches_its_kernels_jobs(
    slurm_service: KernelService, slurm_cluster: SlurmCluster
) -> None:
    """kill -9 of the service: its kernel's job runs on; the next service finds it in its
    records, reaches the kernel at the ports it wrote back, and its state is still there; its
    shutdown then ends the job."""
    service = slurm_service
    alice = service.users[STUDENT_A]
    commands = SlurmCommands(Settings(slurm_cluster.conf))

    async def scenario() -> None:
        kernel_id = await service.start_kernel(alice, kernel_name_for(DEBIAN_IMAGE))
        ws = await service.websocket(alice, kernel_id)
        try:
            assert (await execute(ws, "kept = 'still here'", timeout=60)).status == "ok"
        finally:
            ws.close()
        (job,) = [j for j in commands.jobs() if j.state == "RUNNING" and j.user == STUDENT_A]
        service.kill9()
        service.start()
        assert "reattached 1" in service.output(), service.output()
        code, model = await service.answer(alice, "GET", f"api/kernels/{kernel_id}")
        assert code == 200, model
        ws = await service.websocket(alice, kernel_id)
        try:
            result = await execute(ws, "print(kept)", timeout=60)
            assert result.stdout.strip() == "still here", result
        finally:
            ws.close()
        still = commands.job(job.id)
        assert still is not None and still.running
        code, _ = await service.answer(alice, "DELETE", f"api/kernels/{kernel_id}")
        assert code == 204
        for _ in range(300):
            ended = commands.job(job.id)
            if ended is None or ended.over:
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("the reattached kernel's job outlived its shutdown")

    asyncio.run(scenario())


def test_a_kernel_whose_job_reaches_its_time_limit_is_told_why(
    slurm_service: KernelService, slurm_cluster: SlurmCluster
) -> None:
    """SlurmBackend.time_limit_minutes = 1 (Slurm's smallest): the kernel's job ends at its
    limit, and the kernel's reason (GET /api/kernels/<id>) and the service's log say so in
    Slurm's words, not as a bare exit code."""
    service = slurm_service
    service.stop()
    service.config["SlurmBackend"]["time_limit_minutes"] = 1
    service.config_file.write_text(json.dumps(service.config))
    service.start()
    alice = service.users[STUDENT_A]

    async def scenario() -> None:
        kernel_id = await service.start_kernel(alice, kernel_name_for(DEBIAN_IMAGE))
        reason = ""
        # The limit, Slurm's KillWait and the kernel restarter's poll: well within three
        # minutes.
        for _ in range(900):
            code, model = await service.answer(alice, "GET", f"api/kernels/{kernel_id}")
            assert code == 200, model
            reason = model.get("reason", "")
            if reason:
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("the kernel was never told its job ended")
        assert reason.startswith(f"The kernel's container ({DEBIAN_IMAGE}) exited with code ")
        assert "reached its time limit." in reason, reason
        assert "reached its time limit" in service.output()
        code, _ = await service.answer(alice, "DELETE", f"api/kernels/{kernel_id}")
        assert code == 204

    asyncio.run(scenario())


@contextlib.contextmanager
def own_server(slurm_cluster: SlurmCluster, docker_client: Any, **slurm: Any) -> Iterator[Server]:
    """The student's own server on the cluster (slurm_cluster.users_own_server), the test image
    in their Podman."""
    podman_user.load_images(docker_client, [DEBIAN_IMAGE], user=STUDENT_A)
    with users_own_server(slurm_cluster, STUDENT_A, {"SlurmBackend": slurm}) as server:
        yield server


async def offered(server: Server, name: str) -> None:
    for _ in range(300):
        specs = (await server.call("GET", "api", "kernelspecs"))["kernelspecs"]
        if name in specs:
            return
        await asyncio.sleep(0.2)
    pytest.fail(f"the server never offered {name}")


async def test_a_users_own_server_runs_its_kernels_as_its_own_slurm_jobs(
    slurm_cluster: SlurmCluster, docker_client: Any
) -> None:
    """ContainerEngine.backend = "slurm" on a student's own Jupyter server (no service, no
    root): its kernels are jobs it submits as itself, the probe a task of its own, its records
    in its own data directory; a notebook's code runs as the student, and the server's stop
    ends the job."""
    entry = pwd.getpwnam(STUDENT_A)
    commands = SlurmCommands(Settings(slurm_cluster.conf))
    name = kernel_name_for(DEBIAN_IMAGE)
    with own_server(slurm_cluster, docker_client) as server:
        await offered(server, name)
        session = await server.open_notebook("own.ipynb", name)
        result = await server.execute(session["kernel"]["id"], "import os\nprint(os.getuid())")
        assert result.stdout.strip() == str(entry.pw_uid), result
        (job,) = [j for j in commands.jobs() if j.state == "RUNNING" and j.user == STUDENT_A]
        records = server.home / "data" / "gpu-containers" / "slurm-jobs"
        assert [p.name for p in records.iterdir()] == [f"job-{job.id}.json"]
        assert records.stat().st_uid == entry.pw_uid
    ended = commands.job(job.id)
    assert ended is None or ended.over or ended.state == "COMPLETING", ended


async def start_listed(
    server: Server, body: dict[str, Any]
) -> tuple[asyncio.Future[tuple[int, Any]], dict[str, Any]]:
    """Start a notebook's kernel (POST /gpu-containers/notebooks/kernel, under way), and its
    session once the sessions API lists it (the only one)."""
    start = asyncio.ensure_future(
        server.answer("POST", "gpu-containers", "notebooks", "kernel", body=body)
    )
    for _ in range(300):
        sessions = await server.call("GET", "api", "sessions")
        if sessions:
            break
        await asyncio.sleep(0.2)
    (session,) = sessions
    return start, session


async def test_a_notebook_whose_job_pends_has_a_waiting_session_whose_shutdown_cancels_it(
    slurm_cluster: SlurmCluster, docker_client: Any, cdi_by_index: str
) -> None:
    """On a student's own server, a notebook whose kernel's job Slurm keeps pending is listed
    at once, waiting (the page opens it and says why); deleting that session (JupyterLab's
    Shut Down) cancels the job, and the start ends with 409. Started again, once the GPUs free
    its session stays listed, the same, while its container starts after its job (a page that
    found it missing would drop its kernel and the cells run meanwhile: seen in CI), until its
    kernel runs."""
    commands = SlurmCommands(Settings(slurm_cluster.conf))
    name = kernel_name_for(DEBIAN_IMAGE)
    holder = slurm_cluster.hold_every_gpu(STUDENT_B, f"{RUN}-holder")
    try:
        with own_server(slurm_cluster, docker_client, gpu_device=cdi_by_index) as server:
            await offered(server, name)
            body = {"path": "pending.ipynb", "kernel_name": name, "gpus": 1}
            start, session = await start_listed(server, body)
            assert session["path"] == "pending.ipynb", session
            assert session["kernel"]["execution_state"] == "waiting for a GPU", session
            # The kernel's job: the one the backend recorded (the probe's task is not).
            records = server.home / "data" / "gpu-containers" / "slurm-jobs"
            (record,) = records.iterdir()
            pending = commands.job(record.name.removeprefix("job-").removesuffix(".json"))
            assert pending is not None and pending.waiting, pending
            assert pending.reason == "Resources", pending
            code, _ = await server.answer("DELETE", "api", "sessions", session["id"])
            assert code == 204
            code, refused = await asyncio.wait_for(start, 60)
            assert code == 409 and "cancelled" in refused["message"], refused
            gone = commands.job(pending.id)
            assert gone is None or gone.over, gone
            assert await server.call("GET", "api", "sessions") == []

            # Again, and the holder's job ends: every listing names the session, with its
            # kernel's id, until the kernel runs.
            start, session = await start_listed(server, body)
            assert session["kernel"]["execution_state"] == "waiting for a GPU", session
            commands.cancel(holder)
            states = []
            while not start.done():
                listed = await server.call("GET", "api", "sessions")
                assert [(s["id"], s["kernel"]["id"]) for s in listed] == [
                    (session["id"], session["kernel"]["id"])
                ], (states, listed)
                state = listed[0]["kernel"]["execution_state"]
                if state == "starting":
                    # The notebook's own view answers meanwhile (its kernel not yet there), and
                    # a check of another start says in a sentence to wait (or, the kernel
                    # running by then, answers it).
                    code, view = await server.answer(
                        "GET", "gpu-containers", "notebooks", "kernel?path=pending.ipynb"
                    )
                    assert code == 200, view
                    code, check = await server.answer(
                        "POST",
                        "gpu-containers",
                        "notebooks",
                        "kernel",
                        body={**body, "start": False},
                    )
                    assert code == 200 or (
                        code == 409 and "kernel is starting" in check["message"]
                    ), check
                if not states or states[-1] != state:
                    states.append(state)
                await asyncio.sleep(0.1)
            code, started = await start
            assert code == 200, started
            assert started["session"]["id"] == session["id"], started
            assert started["session"]["kernel"]["id"] == session["kernel"]["id"], started
            # Its wait, then (most often) its launch, and no other state before it runs.
            assert states[0] == "waiting for a GPU", states
            assert set(states) <= {"waiting for a GPU", "starting"}, states
            code, _ = await server.answer("DELETE", "api", "sessions", session["id"])
            assert code == 204
    finally:
        commands.cancel(holder)
