"""The admin view, admin actions and metrics (routes/admin_view.py), real: a kernel service with
real users' containers, and a user's own server (direct mode) whose kernels an administrator's
record acts on.

- Only administrators see the view or act: a non-admin gets 403 with a sentence, in the service
  (ServiceApp.admin_users) and in direct mode (GPUAdmin.admin_users).
- A release restarts another user's kernel without GPUs, a shutdown ends it, and the user is
  told why: the kernel's last end, and a notice of their own.
- The metrics are Prometheus text that counts GPUs held and the actions taken.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from conftest import NGC_IMAGE, kernel_container, kernel_name
from hostusers import BOB, MALLORY, needs_accounts
from service_process import KernelService
from tornado.httpclient import HTTPClientError

from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.base.safefiles import owner_name
from jupyter_gpu_containers.routes.admin_actions_view import ActionRecord, write_record
from jupyter_gpu_containers.routes.admin_desk_view import desk_for
from jupyter_gpu_containers.services import SETTINGS_KEY

GPU_SPEC = kernel_name(NGC_IMAGE)  # one GPU by default
USER_A = os.environ.get("JGC_TEST_STUDENT_A") or MALLORY
USER_B = os.environ.get("JGC_TEST_STUDENT_B") or BOB
ME = owner_name(os.getuid())


@pytest.fixture
def service() -> Iterator[KernelService]:
    made = KernelService({"ServiceApp": {"admin_users": [USER_A]}})
    try:
        yield made
    finally:
        made.close()


def samples(text: str) -> dict[str, float]:
    """Prometheus text as {"name{labels}": value}."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def gpus_of(client: docker.DockerClient, kernel_id: str) -> str:
    return str(kernel_container(client, kernel_id).labels.get(L.GPUS, ""))


@needs_accounts
async def test_service_admin_view_actions_and_metrics(
    service: KernelService, docker_client: docker.DockerClient
) -> None:
    admin = service.add_user(USER_A)
    student = service.add_user(USER_B)
    service.start()
    kernel_id = await service.start_kernel(student, GPU_SPEC)
    assert gpus_of(docker_client, kernel_id)

    # A non-admin: 403 with a sentence, for the view and for an action on anyone's kernel.
    code, refused = await service.answer(student, "GET", "gpu-containers/admin")
    assert code == 403 and "not an administrator" in refused["message"], refused
    code, refused = await service.answer(
        student, "POST", f"gpu-containers/admin/kernels/{kernel_id}", {"action": "shutdown"}
    )
    assert code == 403, refused
    assert (await service.answer(None, "GET", "gpu-containers/admin"))[0] == 403

    # The admin sees the student's kernel with its user, image and GPUs.
    code, view = await service.answer(admin, "GET", "gpu-containers/admin")
    assert code == 200, view
    [holder] = [h for h in view["holders"] if h["kernel_id"] == kernel_id]
    assert holder["user"] == student.name and holder["image"] == NGC_IMAGE
    assert len(holder["gpus"]) == 1 and holder["here"] and holder["server_alive"]
    assert holder["held_seconds"] >= 0
    assert view["queue"]["length"] == 0

    # Metrics: every user's together, so the service's administrators' only (issue 26,
    # finding 10); they count the GPU held.
    response = await service.fetch(None, "GET", "gpu-containers/metrics")
    assert response.code == 403
    response = await service.fetch(student, "GET", "gpu-containers/metrics")
    assert response.code == 403 and b"not an administrator" in response.body
    response = await service.fetch(admin, "GET", "gpu-containers/metrics")
    assert response.code == 200 and response.headers["Content-Type"].startswith("text/plain")
    metrics = response.body.decode()
    # Other tests' kernels on this engine hold GPUs too: the student's GPU is counted.
    [gpu] = holder["gpus"]
    held = samples(metrics)
    assert (
        held[f'jupyter_gpu_containers_gpu_kernels{{gpu="{gpu["index"]}",uuid="{gpu["uuid"]}"}}']
        >= 1
    )
    assert held["jupyter_gpu_containers_gpus_held"] >= 1
    assert held["jupyter_gpu_containers_gpus"] == 4
    assert "jupyter_gpu_containers_queue_length" in held
    assert "jupyter_gpu_containers_gpu_wait_seconds_bucket" in metrics
    # The period's GPU-hours, of all users together (the student's kernel counts up to now).
    assert held['jupyter_gpu_containers_gpu_hours_used{period="week"}'] > 0
    assert student.name not in metrics

    # A bad action is a 400, an unknown kernel a 404.
    code, _ = await service.answer(
        admin, "POST", f"gpu-containers/admin/kernels/{kernel_id}", {"action": "evict"}
    )
    assert code == 400
    code, _ = await service.answer(
        admin, "POST", f"gpu-containers/admin/kernels/{uuid.uuid4()}", {"action": "release"}
    )
    assert code == 404

    # Release: the kernel restarts without GPUs, and its user is told why.
    before = kernel_container(docker_client, kernel_id).id
    code, done = await service.answer(
        admin,
        "POST",
        f"gpu-containers/admin/kernels/{kernel_id}",
        {"action": "release", "reason": "The lab\nstarts at 10."},
    )
    assert code == 200 and done["state"] == "done", done
    assert gpus_of(docker_client, kernel_id) == ""
    code, own = await service.answer(student, "GET", f"gpu-containers/kernels/{kernel_id}")
    assert code == 200, own
    said = own["last_end"]["reason"]
    assert f"An administrator ({admin.name}) released" in said and "The lab starts at 10." in said
    # The end it tells of is the container that held the GPUs, not the one started since.
    assert own["last_end"]["container_id"] == before != own["container"]["id"], own
    code, notices = await service.answer(student, "GET", "gpu-containers/admin/notices")
    assert code == 200 and [n["action"] for n in notices["notices"]] == ["release"], notices
    assert notices["notices"][0]["by"] == admin.name
    # Another user sees none of them.
    code, others = await service.answer(admin, "GET", "gpu-containers/admin/notices")
    assert code == 200 and others["notices"] == []
    # Nothing left to release.
    code, refused = await service.answer(
        admin, "POST", f"gpu-containers/admin/kernels/{kernel_id}", {"action": "release"}
    )
    assert code == 409 and "holds no GPUs" in refused["message"], refused

    # Shutdown: the kernel is gone, and the notice says why.
    code, done = await service.answer(
        admin,
        "POST",
        f"gpu-containers/admin/kernels/{kernel_id}",
        {"action": "shutdown", "reason": "Exam mode."},
    )
    assert code == 200 and done["state"] == "done", done
    assert (await service.answer(student, "GET", f"api/kernels/{kernel_id}"))[0] == 404
    code, notices = await service.answer(student, "GET", "gpu-containers/admin/notices")
    assert [n["action"] for n in notices["notices"]] == ["release", "shutdown"], notices
    assert "Exam mode." in notices["notices"][-1]["message"]

    response = await service.fetch(admin, "GET", "gpu-containers/metrics")
    metrics = response.body.decode()
    assert 'jupyter_gpu_containers_admin_actions_total{action="release"} 1.0' in metrics
    assert 'jupyter_gpu_containers_admin_actions_total{action="shutdown"} 1.0' in metrics


async def test_direct_mode_non_admin_gets_403(jp_fetch: Any) -> None:
    for path, method, body in [
        (("admin",), "GET", None),
        (("admin", "kernels", "k1"), "POST", json.dumps({"action": "shutdown"})),
    ]:
        with pytest.raises(HTTPClientError) as e:
            await jp_fetch("gpu-containers", *path, method=method, body=body)
        assert e.value.code == 403
        message = json.loads(e.value.response.body)["message"]
        assert f"{ME}, is not an administrator" in message and "GPUAdmin.admin_users" in message
    # The status says so, so that the panel never asks for the admin view (a 403 each time).
    status = json.loads((await jp_fetch("gpu-containers", "status")).body)
    assert status["admin"] is False
    assert status["pull_refusal"] == ""  # a user's own server that allows pulls
    # The notices and the metrics are not the admin's alone.
    response = await jp_fetch("gpu-containers", "admin", "notices")
    assert json.loads(response.body) == {"notices": []}
    response = await jp_fetch("gpu-containers", "metrics")
    assert b"jupyter_gpu_containers_gpus " in response.body


async def wait_for(check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


@pytest.mark.server_config(lambda _: {"GPUAdmin": {"admin_users": [ME], "poll_interval": 1.0}})
async def test_direct_mode_actions_reach_the_kernels_own_server(
    jp_fetch: Any, jp_serverapp: Any, docker_client: docker.DockerClient
) -> None:
    status = json.loads((await jp_fetch("gpu-containers", "status")).body)
    assert status["admin"] is True  # the panel reads the admin view
    services = jp_serverapp.web_app.settings[SETTINGS_KEY]
    # The test server never runs the extension's start, where the watcher starts: start it.
    desk = desk_for(jp_serverapp.web_app.settings, services, jp_serverapp)
    desk.start_watching(services, jp_serverapp.kernel_manager, jp_serverapp.log)
    try:
        await _direct_mode_actions(jp_fetch, services, docker_client)
    finally:
        await desk.stop()


async def _direct_mode_actions(
    jp_fetch: Any, services: Any, docker_client: docker.DockerClient
) -> None:

    async def start(spec: str) -> str:
        response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": spec}))
        return str(json.loads(response.body)["id"])

    kept = await start(GPU_SPEC)
    ended = await start(GPU_SPEC)
    view = json.loads((await jp_fetch("gpu-containers", "admin")).body)
    assert {kept, ended} <= {h["kernel_id"] for h in view["holders"]}

    # Another administrator's server records actions in the host state directory (as root
    # here, whom every server believes); this server, the kernels' own, carries them out.
    ledger_uid = str(os.getuid())
    before = kernel_container(docker_client, kept).id
    for kernel_id, action in [(kept, "release"), (ended, "shutdown")]:
        container = kernel_container(docker_client, kernel_id)
        record = ActionRecord(
            kernel_id, container.id, ledger_uid, ME, action, "Maintenance.", ME, time.time()
        )
        await asyncio.to_thread(write_record, services.state, record, os.geteuid())

    async def carried_out() -> bool:
        kernels = json.loads((await jp_fetch("api", "kernels")).body)
        return [k["id"] for k in kernels] == [kept] and gpus_of(docker_client, kept) == ""

    await wait_for(carried_out)
    own = json.loads((await jp_fetch("gpu-containers", "kernels", kept)).body)
    assert "released this kernel's GPUs" in own["last_end"]["reason"]
    assert "Maintenance." in own["last_end"]["reason"]
    assert own["last_end"]["container_id"] == before != own["container"]["id"], own
    # Applied once: the record names the container it was for, which is gone now.
    await asyncio.sleep(2.5)
    assert kernel_container(docker_client, kept).id == own["container"]["id"]
    notices = json.loads((await jp_fetch("gpu-containers", "admin", "notices")).body)["notices"]
    assert sorted(n["action"] for n in notices) == ["release", "shutdown"]
    assert all(n["by"] == ME for n in notices)

    # The admin's own endpoint acts on this server's kernel at once.
    response = await jp_fetch(
        "gpu-containers",
        "admin",
        "kernels",
        kept,
        method="POST",
        body=json.dumps({"action": "shutdown", "reason": "Done for today."}),
    )
    assert response.code == 200
    assert json.loads((await jp_fetch("api", "kernels")).body) == []
