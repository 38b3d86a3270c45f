"""The kernel service (`jupyter gpu-containers serve`), real: the service process as root, its
users real local accounts (outside the docker group), their kernels real containers.

What the service promises (README, "Multi-user"): each request is a user, never the client's
word; a kernel runs as its user in their workspace; another user's kernel is the 404 of a kernel
that does not exist, over REST and the websocket; GPUs are booked for users, under their caps;
a service killed with -9 comes back with its kernels, still each user's.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import DEBIAN_IMAGE, NGC_IMAGE, kernel_container, kernel_name
from hostusers import BOB, MALLORY, UserHome, ids_of, needs_accounts, run_as
from kernel_io import execute
from registry import PrivateRegistry
from service_process import KernelService, ServiceUser
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClosedError, websocket_connect

from jupyter_gpu_containers import labels as L

pytestmark = [needs_accounts, pytest.mark.usefixtures("docker_client")]

CPU_SPEC = kernel_name(DEBIAN_IMAGE)
GPU_SPEC = kernel_name(NGC_IMAGE)  # one GPU by default
# Users whose servers are outside the docker group: the students when the test set-up made
# them, else the outsider and the peer (their docker group plays no part in service mode).
USER_A = os.environ.get("JGC_TEST_STUDENT_A") or MALLORY
USER_B = os.environ.get("JGC_TEST_STUDENT_B") or BOB


@pytest.fixture
def services() -> Iterator[list[KernelService]]:
    """The services a test starts: stopped and removed at the end, whatever happened."""
    made: list[KernelService] = []
    yield made
    for service in made:
        service.close()


def start_service(made: list[KernelService], config: dict[str, Any] | None = None) -> Any:
    service = KernelService(config)
    made.append(service)
    a = service.add_user(USER_A)
    b = service.add_user(USER_B)
    service.start()
    return service, a, b


async def run(service: KernelService, user: ServiceUser, kernel_id: str, code: str) -> Any:
    ws = await service.websocket(user, kernel_id)
    try:
        return await execute(ws, code)
    finally:
        ws.close()


async def test_a_kernel_runs_as_its_user_in_their_workspace(
    services: list[KernelService], docker_client: docker.DockerClient
) -> None:
    service, a, _b = start_service(services)
    (a.workspace / "course").mkdir()
    os.chown(a.workspace / "course", *ids_of(a.name))
    kernel_id = await service.start_kernel(
        a,
        CPU_SPEC,
        {
            # The client's word on who it is counts for nothing.
            "KERNEL_USERNAME": "root",
            "KERNEL_WORKING_DIR": str(a.workspace / "course"),
            "JPY_SESSION_NAME": str(a.workspace / "course" / "week1.ipynb"),
        },
    )
    result = await run(
        service,
        a,
        kernel_id,
        "import os; open('out.txt', 'w').write('hi'); print(os.getuid(), os.getgid(), os.getcwd())",
    )
    assert result.status == "ok", result
    uid, gid = ids_of(a.name)
    assert result.stdout.split() == [str(uid), str(gid), "/workspace/course"]
    written = (a.workspace / "course" / "out.txt").stat()
    assert (written.st_uid, written.st_gid) == (uid, gid)
    labels = kernel_container(docker_client, kernel_id).labels
    assert labels[L.USER] == a.name and labels[L.UID] == str(uid)
    assert labels[L.NOTEBOOK] == "course/week1.ipynb"

    # A directory outside the workspace is not the kernel's: it starts at the workspace root.
    outside = await service.start_kernel(a, CPU_SPEC, {"KERNEL_WORKING_DIR": "/etc"})
    result = await run(service, a, outside, "import os; print(os.getcwd())")
    assert result.stdout.strip() == "/workspace"


async def test_another_users_kernel_is_a_kernel_that_does_not_exist(
    services: list[KernelService],
) -> None:
    service, a, b = start_service(services)
    kernel_id = await service.start_kernel(a, CPU_SPEC)
    nobody = str(uuid.uuid4())
    for method, path, body in [
        ("GET", "api/kernels/{}", None),
        ("DELETE", "api/kernels/{}", None),
        ("POST", "api/kernels/{}/interrupt", None),
        ("POST", "api/kernels/{}/restart", None),
        ("GET", "gpu-containers/kernels/{}", None),
        ("GET", "gpu-containers/kernels/{}/log?follow=0", None),
        ("POST", "gpu-containers/kernels/{}/restart", {"gpus": 0}),
    ]:
        theirs = await service.answer(b, method, path.format(kernel_id), body)
        none = await service.answer(b, method, path.format(nobody), body)
        assert theirs[0] == 404, (method, path, theirs)
        # Word for word what a kernel id that exists nowhere gets, but the id itself.
        assert json.dumps(theirs[1]).replace(kernel_id, "ID") == json.dumps(none[1]).replace(
            nobody, "ID"
        ), (method, path)
    assert await service.answer(b, "GET", "api/kernels") == (200, [])
    code, listing = await service.answer(b, "GET", "gpu-containers/kernels")
    assert code == 200 and listing["kernels"] == []
    with pytest.raises(HTTPClientError) as refused:
        await service.websocket(b, kernel_id)
    assert refused.value.code == 404

    # The owner still has it, untouched by the attempts.
    code, mine = await service.answer(a, "GET", "api/kernels")
    assert code == 200 and [k["id"] for k in mine] == [kernel_id]
    assert (await run(service, a, kernel_id, "print(6 * 7)")).stdout.strip() == "42"


async def test_requests_without_a_valid_token_are_refused(services: list[KernelService]) -> None:
    service, a, _b = start_service(services)
    forged = ServiceUser(a.name, a.token[:-4] + "AAAA", a.workspace)
    for user in (None, forged):
        for path in ("api/kernels", "api/kernelspecs", "gpu-containers/gpus"):
            code, _ = await service.answer(user, "GET", path)
            assert code == 403, (user, path)
    # A name the token file knows but this host does not: refused with the reason.
    stranger = service.add_user_token_only("jgc-no-such-account")
    for _ in range(100):  # the service reads a changed token file within a second or so
        code, body = await service.answer(stranger, "GET", "api/kernels")
        if body["message"] != "Forbidden":
            break
        await asyncio.sleep(0.1)
    assert code == 403
    assert "no account 'jgc-no-such-account'" in body["message"]
    # Nothing of the stock server that a gateway does not need is served.
    for path in ("api/contents", "api/sessions", "lab", "tree", "api/terminals"):
        code, _ = await service.answer(a, "GET", path)
        assert code == 404, path


async def test_gpu_bookings_are_the_users_own_and_private(services: list[KernelService]) -> None:
    service, a, b = start_service(services, {"GPUAllocator": {"max_gpus_per_user": 1}})
    kernel_id = await service.start_kernel(
        a, CPU_SPEC, {"KERNEL_GPU_CONTAINERS_REQUEST": json.dumps(1)}
    )
    code, gpus_a = await service.answer(a, "GET", "gpu-containers/gpus")
    assert code == 200
    held = [h for g in gpus_a["gpus"] for h in g["holders"]]
    assert [(h["mine"], h["kernel_id"]) for h in held] == [(True, kernel_id)]
    code, gpus_b = await service.answer(b, "GET", "gpu-containers/gpus")
    held = [h for g in gpus_b["gpus"] for h in g["holders"]]
    assert [(h["mine"], h["kernel_id"], h["user"]) for h in held] == [(False, "", "")]
    # The cap counts the user's kernels, whichever server asked.
    code, refused = await service.answer(
        a,
        "POST",
        "api/kernels",
        {"name": CPU_SPEC, "env": {"KERNEL_GPU_CONTAINERS_REQUEST": "1"}},
    )
    assert code == 409, refused
    assert "1" in refused["message"]
    # A malformed request is the client's error, in a sentence.
    code, bad = await service.answer(
        a, "POST", "api/kernels", {"name": CPU_SPEC, "env": {"KERNEL_GPU_CONTAINERS_REQUEST": "{"}}
    )
    assert code == 400 and "KERNEL_GPU_CONTAINERS_REQUEST" in bad["message"]


async def test_a_service_killed_reattaches_its_users_kernels(
    services: list[KernelService], docker_client: docker.DockerClient
) -> None:
    service, a, b = start_service(services)
    kernel_id = await service.start_kernel(a, GPU_SPEC)
    assert (await run(service, a, kernel_id, "x = 41")).status == "ok"
    container = kernel_container(docker_client, kernel_id)
    service.kill9()
    service.start()
    assert "reattached 1" in service.output()
    assert kernel_container(docker_client, kernel_id).id == container.id
    # Still the same kernel (its state), still only its user's.
    assert (await run(service, a, kernel_id, "print(x + 1)")).stdout.strip() == "42"
    assert (await service.answer(b, "GET", f"api/kernels/{kernel_id}"))[0] == 404
    code, gpus = await service.answer(a, "GET", "gpu-containers/gpus")
    assert [h["kernel_id"] for g in gpus["gpus"] for h in g["holders"]] == [kernel_id]
    # A restart keeps the user, the workspace and the GPU.
    code, _ = await service.answer(a, "POST", f"api/kernels/{kernel_id}/restart")
    assert code == 200
    result = await run(service, a, kernel_id, "import os; print(os.getuid(), os.getcwd())")
    assert result.stdout.split() == [str(ids_of(a.name)[0]), "/workspace"]


async def test_a_service_restarted_keeps_its_users_kernels(
    services: list[KernelService], docker_client: docker.DockerClient
) -> None:
    service, a, _b = start_service(services, {"ServiceApp": {"keep_kernels_on_stop": True}})
    kernel_id = await service.start_kernel(a, CPU_SPEC)
    assert (await run(service, a, kernel_id, "y = 'kept'")).status == "ok"
    service.stop()  # SIGTERM, as systemctl restart sends
    assert "Leaving 1 kernel(s) running" in service.output()
    assert kernel_container(docker_client, kernel_id).status == "running"
    service.start()
    assert "reattached 1" in service.output()
    assert (await run(service, a, kernel_id, "print(y)")).stdout.strip() == "kept"
    # Shut down by its user, now: the stop at the end of the test must not find it.
    assert (await service.answer(a, "DELETE", f"api/kernels/{kernel_id}"))[0] == 204


async def test_kernels_nobody_uses_are_culled(
    services: list[KernelService], docker_client: docker.DockerClient
) -> None:
    service, a, _b = start_service(
        services, {"MappingKernelManager": {"cull_idle_timeout": 2, "cull_interval": 1}}
    )
    kernel_id = await service.start_kernel(a, CPU_SPEC)
    for _ in range(300):
        if (await service.answer(a, "GET", "api/kernels"))[1] == []:
            break
        await asyncio.sleep(0.1)
    assert (await service.answer(a, "GET", "api/kernels"))[1] == []
    assert f"kernel '{CPU_SPEC}' ({kernel_id}) with 0 connections due to" in service.output()
    label = f"{L.KERNEL_ID}={kernel_id}"
    for _ in range(100):
        if not docker_client.containers.list(all=True, filters={"label": label}):
            break
        await asyncio.sleep(0.1)
    assert docker_client.containers.list(all=True, filters={"label": label}) == []


async def test_twenty_starts_from_five_users_for_four_gpus(
    services: list[KernelService], docker_client: docker.DockerClient
) -> None:
    # Five users of the administrator's map (no system accounts needed), one GPU each at most.
    names = [f"race{i}" for i in range(5)]
    accounts = {name: f"{23001 + i}:{23001 + i}" for i, name in enumerate(names)}
    service = KernelService(
        {"UserDirectory": {"accounts": accounts}, "GPUAllocator": {"max_gpus_per_user": 1}}
    )
    services.append(service)
    users = [service.add_user(name, ids=accounts[name]) for name in names]
    service.start()

    async def one(user: ServiceUser) -> tuple[str, int, Any]:
        code, body = await service.answer(
            user, "POST", "api/kernels", {"name": GPU_SPEC, "env": {}}
        )
        return user.name, code, body

    results = await asyncio.gather(*(one(u) for u in users for _ in range(4)))
    won = [(name, body["id"]) for name, code, body in results if code == 201]
    lost = [(code, body["message"]) for _, code, body in results if code != 201]
    assert len(won) == 4, results
    assert all(code == 409 for code, _ in lost), lost
    assert max(Counter(name for name, _ in won).values()) == 1
    gpus = [kernel_container(docker_client, kid).labels[L.GPUS] for _, kid in won]
    assert len(set(gpus)) == 4 and all(gpus), gpus


def test_a_token_file_others_can_read_stops_the_service(services: list[KernelService]) -> None:
    service = KernelService()
    services.append(service)
    service.add_user(USER_A)
    Path(service.tokens_file).chmod(0o644)
    with pytest.raises(AssertionError, match="did not start"):
        service.start()
    assert "Traceback" not in service.output()
    assert str(service.tokens_file) in service.output()


async def wait_for_pull(service: KernelService, user: ServiceUser, pull_id: str) -> Any:
    for _ in range(600):
        _code, pull = await service.answer(user, "GET", f"gpu-containers/pulls/{pull_id}")
        if pull["state"] not in ("queued", "pulling"):
            return pull
        await asyncio.sleep(0.1)
    raise AssertionError(f"the pull did not end: {pull}")


async def test_a_pull_with_a_users_own_login_is_theirs_alone(
    services: list[KernelService], private_registry: PrivateRegistry
) -> None:
    ref = private_registry.push_test_image(f"private-svc-{uuid.uuid4().hex[:8]}:1")
    service, a, b = start_service(services, {"ContainerPolicy": {"allowed_images": [ref]}})
    try:
        login = {"username": private_registry.username, "password": private_registry.password}
        code, pull = await service.answer(
            a, "POST", "gpu-containers/pulls", {"image": ref, "auth": login}
        )
        assert code == 202, pull
        # Another user sees neither the pull nor its progress.
        assert (await service.answer(b, "GET", f"gpu-containers/pulls/{pull['id']}"))[0] == 404
        assert (await service.answer(b, "GET", "gpu-containers/pulls"))[1]["pulls"] == []
        assert (await wait_for_pull(service, a, pull["id"]))["state"] == "done"
        name = kernel_name(ref)
        for _ in range(100):  # listed once the engine says the image came
            if name in (await service.answer(a, "GET", "api/kernelspecs"))[1]["kernelspecs"]:
                break
            await asyncio.sleep(0.1)
        assert name in (await service.answer(a, "GET", "api/kernelspecs"))[1]["kernelspecs"]
        assert name not in (await service.answer(b, "GET", "api/kernelspecs"))[1]["kernelspecs"]
        assert (await service.answer(b, "GET", f"api/kernelspecs/{name}"))[0] == 404
        rows = (await service.answer(b, "GET", "gpu-containers/images"))[1]["images"]
        assert not any(row["reference"] == ref and row["pulled"] for row in rows)
        code, refusal = await service.answer(b, "POST", "api/kernels", {"name": name})
        assert code == 404, refusal
        kernel_id = await service.start_kernel(a, name)
        assert (await run(service, a, kernel_id, "print(1)")).stdout.strip() == "1"
        # The record of whose image it is lies in the service's own state directory, which
        # no user can open (let alone write).
        state = service.config["ContainerPolicy"]["state_dir"]
        said = run_as(
            a.name,
            "import os, sys\ntry:\n os.listdir(sys.argv[1])\nexcept "
            "PermissionError:\n print('refused')",
            state,
        )
        assert said.strip() == "refused"
    finally:
        private_registry.remove_local(ref)


async def test_who_may_pull_is_the_administrators_choice(services: list[KernelService]) -> None:
    service, a, _b = start_service(
        services, {"ServiceApp": {"pull_policy": "admins", "admin_users": []}}
    )
    code, refusal = await service.answer(a, "POST", "gpu-containers/pulls", {"image": "x:1"})
    assert code == 403 and "ServiceApp.pull_policy is 'admins'" in refusal["message"]
    service2, a2, _ = start_service(services)  # allowed images only, and none are allowed
    code, refusal = await service2.answer(a2, "POST", "gpu-containers/pulls", {"image": "x:1"})
    assert code == 403 and "allows none" in refusal["message"]


async def test_a_full_start_queue_answers_busy_at_once(services: list[KernelService]) -> None:
    service, a, _b = start_service(
        services, {"ServiceApp": {"max_concurrent_starts": 1, "max_queued_starts": 1}}
    )
    answers = await asyncio.gather(
        *(service.answer(a, "POST", "api/kernels", {"name": CPU_SPEC}) for _ in range(6))
    )
    codes = sorted(code for code, _ in answers)
    assert codes.count(201) >= 2, answers  # the one running and the one waiting
    busy = [body for code, body in answers if code == 503]
    assert busy, answers
    assert all("ServiceApp.max_queued_starts" in body["message"] for body in busy)


async def test_a_users_page_runs_code_again_after_the_service_was_killed(
    services: list[KernelService],
) -> None:
    """The whole chain: a user's own server (outside the docker group) in gateway mode, a page's
    websocket on it, the service killed with -9 and started again."""
    service, a, _b = start_service(services)
    home = UserHome(a.name, {})
    try:
        user = home.start(
            f"--gateway-url={service.url}",
            f"--GatewayClient.auth_token={a.token}",
            "--GatewayClient.request_timeout=60",
        )
        session = await user.open_notebook("week1.ipynb", CPU_SPEC)
        kernel_id = session["kernel"]["id"]
        assert (await user.execute(kernel_id, "x = 20")).status == "ok"

        async def connect() -> Any:
            return await websocket_connect(
                HTTPRequest(
                    f"ws://127.0.0.1:{user.port}/api/kernels/{kernel_id}/channels",
                    headers={"Authorization": f"token {user.token}"},
                )
            )

        page = await connect()
        try:
            service.kill9()
            reconnects = user.output().count("Connecting to ws://")
            service.start()
            assert "reattached 1" in service.output()
            # The user's server reconnects by itself (jupyter_server's gateway websocket retries).
            for _ in range(300):
                if user.output().count("Connecting to ws://") > reconnects:
                    break
                await asyncio.sleep(0.1)
            # The page runs code again: over its websocket once the user's server reconnected
            # to the service, or over a new one if its server closed it (JupyterLab opens one
            # again by itself, as this does).
            result = None
            for _ in range(60):
                try:
                    result = await execute(page, "print(x + 22)", timeout=5)
                    break
                except (TimeoutError, asyncio.TimeoutError):
                    continue
                except (ConnectionError, WebSocketClosedError):
                    page.close()
                    page = await connect()
            assert result is not None and result.stdout.strip() == "42", (
                result,
                service.output()[-4000:],
                user.output()[-4000:],
            )
        finally:
            page.close()
        # And a page opened afresh.
        assert (await user.execute(kernel_id, "print(x)")).stdout.strip() == "20"
    finally:
        home.close()


async def test_the_shared_host_attacks_fail_against_the_service(
    services: list[KernelService], docker_client: docker.DockerClient
) -> None:
    """The direct mode's security review, replayed by a user outside the docker group against the
    service: nothing a user can write decides a booking, a reattach or a deletion."""
    service, a, b = start_service(services)
    probe = (
        "import os, socket, sys\n"
        "def tries(what, f):\n"
        "    try:\n"
        "        f()\n"
        "        print(what, 'allowed')\n"
        "    except PermissionError:\n"
        "        print(what, 'refused')\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "tries('engine', lambda: s.connect('/var/run/docker.sock'))\n"
        "tries('state', lambda: os.listdir(sys.argv[1]))\n"
        "tries('kernels', lambda: os.listdir(sys.argv[2]))\n"
        "tries('tokens', lambda: open(sys.argv[3]).read())\n"
    )
    said = run_as(
        a.name,
        probe,
        service.config["ContainerPolicy"]["state_dir"],
        service.config["ContainerPolicy"]["connection_dir_root"],
        str(service.tokens_file),
    )
    # No engine: no planted container, no label naming a directory, no spoofed booking. No
    # state directory: no lock to hold or plant. No kernel files, no token file.
    assert said.split("\n")[:4] == [
        "engine refused",
        "state refused",
        "kernels refused",
        "tokens refused",
    ], said
    # What a start may say: nothing that chooses whose kernel it is, its labels or its mounts.
    kernel_id = await service.start_kernel(
        a,
        CPU_SPEC,
        {
            "KERNEL_USERNAME": b.name,
            "KERNEL_UID": "0",
            "KERNEL_GID": "0",
            "KERNEL_WORKING_DIR": str(b.workspace),
            "JPY_SESSION_NAME": str(b.workspace / "theirs.ipynb"),
            "KERNEL_EXTRA_LABELS": json.dumps({L.USER: b.name}),
        },
    )
    container = kernel_container(docker_client, kernel_id)
    assert container.labels[L.USER] == a.name
    assert container.labels[L.UID] == str(ids_of(a.name)[0])
    assert container.labels[L.NOTEBOOK] == ""
    assert container.attrs["Config"]["User"] == "{}:{}".format(*ids_of(a.name))
    sources = {m["Source"] for m in container.attrs["Mounts"]}
    assert str(b.workspace) not in sources and str(a.workspace) in sources
    # The service offers no kernel that would run on the host as its own account.
    code, specs = await service.answer(a, "GET", "api/kernelspecs")
    assert code == 200 and all(n.startswith("gpuc-") for n in specs["kernelspecs"]), specs
