"""The kernel service (`jupyter gpu-containers serve`), real: the service process as root, its
users real local accounts (outside the docker group), their kernels real containers.

What the service promises (README, "Multi-user"): each request is a user, never the client's
word; a kernel runs as its user in their workspace; another user's kernel is the 404 of a kernel
that does not exist, over REST and the websocket; GPUs are booked for users, under their caps;
a service killed with -9 comes back with its kernels, still each user's.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import re
import socket
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import (
    DEBIAN_IMAGE,
    NGC_IMAGE,
    NVML_DOUBLE_CONFIG,
    TEST_IMAGE_LABEL,
    TEST_RUN,
    kernel_container,
    kernel_name,
)
from hostusers import BOB, MALLORY, UserHome, ids_of, needs_accounts, run_as
from kernel_io import execute
from registry import PrivateRegistry
from servers import VENV_BIN, wait_until
from service_process import KernelService, ServiceUser
from tiny_wheel import tiny_wheel
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClosedError, websocket_connect

from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.host.packages_archive import SAVED_PACKAGES_DIR
from jupyter_gpu_containers.host.user_packages import packages_key

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
    # It has a name in its container (an entry of its own, the image untouched), and the
    # image's own accounts keep theirs; the account files are not the kernel's to change.
    result = await run(
        service,
        a,
        kernel_id,
        "import grp, os, pwd, subprocess\n"
        "me = pwd.getpwuid(os.getuid())\n"
        "who = subprocess.run(['whoami'], capture_output=True, text=True).stdout.strip()\n"
        "print(me.pw_name, me.pw_dir, grp.getgrgid(os.getgid()).gr_name, who,"
        " pwd.getpwnam('root').pw_uid, pwd.getpwnam('nobody').pw_uid > 0)\n"
        "try:\n"
        "    open('/etc/passwd', 'a').write('x::0:0::/:/bin/sh\\n')\n"
        "except OSError as e:\n"
        "    print(type(e).__name__)\n",
    )
    assert result.status == "ok", result
    named, home, group, who, root_uid, nobody, refused = result.stdout.split()
    assert (named, home, group, who) == (a.name, "/home/jupyter", grp.getgrgid(gid).gr_name, a.name)
    assert (root_uid, nobody) == ("0", "True")  # the image's own entries, as they were
    assert refused in ("PermissionError", "OSError"), refused

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
        if body.get("reason") != "Token refused":  # (a token it does not know yet)
            break
        await asyncio.sleep(0.1)
    assert code == 403
    assert "no account 'jgc-no-such-account'" in body["message"]
    # Nothing of the stock server that a gateway does not need is served.
    for path in ("api/contents", "api/sessions", "lab", "tree", "api/terminals"):
        code, _ = await service.answer(a, "GET", path)
        assert code == 404, path


async def test_gpu_bookings_are_the_users_own_and_private(
    services: list[KernelService], docker_client: docker.DockerClient
) -> None:
    service, a, b = start_service(services, {"GPUAllocator": {"max_gpus_per_user": 2}})
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
        {"name": CPU_SPEC, "env": {"KERNEL_GPU_CONTAINERS_REQUEST": "2"}},
    )
    assert code == 409, refused
    assert "limit of 2 GPUs per user (1 held by your other kernels)" in refused["message"], refused
    # So does a restart under new GPUs (issue 26, finding 12): the caller's kernels, not the
    # service's account's, and called theirs. Refused before the kernel is touched.
    cpu_kernel = await service.start_kernel(a, CPU_SPEC)
    container = kernel_container(docker_client, cpu_kernel).id
    [held_gpu] = [g for g in gpus_a["gpus"] if any(h["mine"] for h in g["holders"])]
    for gpus, said in (
        (2, "limit of 2 GPUs per user (1 held by your other kernels)"),
        ([held_gpu["uuid"]], "is not free: one of your kernels since"),
    ):
        code, refused = await service.answer(
            a, "POST", f"gpu-containers/kernels/{cpu_kernel}/restart", {"gpus": gpus}
        )
        assert code == 409 and said in refused["message"], (gpus, refused)
        assert "another user" not in refused["message"]
        assert kernel_container(docker_client, cpu_kernel).id == container
    assert (await run(service, a, cpu_kernel, "print(6 * 7)")).stdout.strip() == "42"
    # A malformed request is the client's error, in a sentence.
    code, bad = await service.answer(
        a, "POST", "api/kernels", {"name": CPU_SPEC, "env": {"KERNEL_GPU_CONTAINERS_REQUEST": "{"}}
    )
    assert code == 400 and "KERNEL_GPU_CONTAINERS_REQUEST" in bad["message"]


async def test_a_service_killed_reattaches_its_users_kernels(
    services: list[KernelService], docker_client: docker.DockerClient
) -> None:
    service, a, b = start_service(services, {"ServiceApp": {"max_kernels_per_user": 2}})
    kernel_id = await service.start_kernel(a, GPU_SPEC)
    assert (await run(service, a, kernel_id, "x = 41")).status == "ok"
    other = await service.start_kernel(a, CPU_SPEC)
    container = kernel_container(docker_client, kernel_id)
    service.kill9()
    # Asked from the moment it listens, while it may still be reattaching: each request waits
    # for its user's kernels only, so the user's list misses none of them, and a start counts
    # them against the user's cap (two kernels: a third is refused, not started beside them).
    service.start(ready="Kernel service: users authenticate with")
    (code, refused), (_, listed) = await asyncio.gather(
        service.answer(a, "POST", "api/kernels", {"name": CPU_SPEC}),
        service.answer(a, "GET", "api/kernels"),
    )
    assert code == 409 and "as many as one user may have" in refused["message"], refused
    assert {k["id"] for k in listed} == {kernel_id, other}, listed

    async def recovered() -> bool:
        return "reattached 2" in service.output()

    await wait_until(recovered, 60, "the service's recovery of both kernels")
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


async def test_only_a_kernels_user_keeps_its_idle_gpus_through_the_service(
    services: list[KernelService],
) -> None:
    """Behind the service, on the NVML double's GPUs (no process of a kernel's on them: idle),
    a warned kernel's user keeps its GPUs; another user's keep of it is the 404 of a kernel
    that does not exist, and changes nothing."""
    tests = Path(__file__).parent
    service = KernelService(
        {
            **NVML_DOUBLE_CONFIG,
            "GPUUsage": {"interval": 0.2},
            "GPUReclaim": {
                "enabled": True,
                "idle_minutes": 0.03,
                "grace_minutes": 0.5,
                "check_interval": 0.2,
                "keep_min_minutes": 1,
                "keep_max_minutes": 5,
            },
        },
        env={"PYTHONPATH": ":".join(filter(None, [str(tests), os.environ.get("PYTHONPATH")]))},
    )
    services.append(service)
    a, b = service.add_user(USER_A), service.add_user(USER_B)
    service.start()
    kernel_id = await service.start_kernel(a, GPU_SPEC)

    async def warned() -> Any:
        code, body = await service.answer(a, "GET", f"gpu-containers/kernels/{kernel_id}")
        reclaim = body.get("reclaim") if code == 200 else None
        return reclaim if reclaim and reclaim["state"] == "warned" else None

    before = await wait_until(warned, 60, "the idle kernel's warning")
    assert before["keep"] == {"min_minutes": 1.0, "max_minutes": 5.0, "times_left": 2}
    keep = f"gpu-containers/kernels/{kernel_id}/keep"
    code, refused = await service.answer(b, "POST", keep, {"minutes": 5})
    assert code == 404, refused
    code, kept = await service.answer(a, "POST", keep, {"minutes": 5})
    assert code == 200, kept
    assert kept["keeps"] == 1 and kept["kept_until"] == kept["release_at"]
    assert kept["user"] == a.name
    code, admin = await service.answer(a, "GET", "gpu-containers/admin")
    assert code == 403, admin  # a user sees their own kernels' state, not the admin view
    said = "its idle GPUs kept for 5 minutes at its user's word (1 of 2)"
    lines = service.output().splitlines()
    assert [line for line in lines if said in line and f"Kernel {kernel_id} ({a.name}" in line]


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
        if not docker_client.containers.list(
            ignore_removed=True, all=True, filters={"label": label}
        ):
            break
        await asyncio.sleep(0.1)
    assert (
        docker_client.containers.list(ignore_removed=True, all=True, filters={"label": label}) == []
    )


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


def test_a_service_whose_port_is_taken_exits_instead_of_moving(
    services: list[KernelService],
) -> None:
    """Users' servers know the service by its URL: one that listened on the next port would
    leave them sending their tokens to whatever holds its own (any local user may listen on
    a port above 1024)."""
    service = KernelService()
    services.append(service)
    service.add_user(USER_A)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", service.port))
        squatter.listen()
        with pytest.raises(AssertionError, match="did not start"):
            service.start(another_port=False)
    assert "Traceback" not in service.output()
    assert f"port {service.port} is not available" in service.output()
    assert "trying another port" not in service.output()


async def wait_for_pull(service: KernelService, user: ServiceUser, pull_id: str) -> Any:
    for _ in range(600):
        _code, pull = await service.answer(user, "GET", f"gpu-containers/pulls/{pull_id}")
        if pull["state"] not in ("queued", "pulling"):
            return pull
        await asyncio.sleep(0.1)
    raise AssertionError(f"the pull did not end: {pull}")


async def test_a_pull_with_a_users_own_login_is_theirs_alone(
    services: list[KernelService],
    private_registry: PrivateRegistry,
    docker_client: docker.DockerClient,
) -> None:
    repository = f"private-svc-{uuid.uuid4().hex[:8]}"
    ref = private_registry.push_test_image(f"{repository}:1")
    # The same repository's public tag, on the host for everyone (pulled without a user's login).
    public = private_registry.push(DEBIAN_IMAGE, f"{repository}:public")
    docker_client.images.pull(public, auth_config=private_registry.auth_config)
    allowed = {"ContainerPolicy": {"allowed_images": [ref, public]}}
    service, a, b = start_service(services, allowed)
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
        # Its content by its digest (a notebook's stamp names it so, issue 31): not the other
        # user's to see, nor to run through a pin on the repository's public tag.
        [digest] = docker_client.images.get(ref).attrs["RepoDigests"]
        query = f"ref={ref}&recorded={digest}"
        code, seen = await service.answer(b, "GET", f"gpu-containers/images/content?{query}")
        assert (code, seen["digest"], seen["recorded_present"]) == (200, "", False), seen
        code, mine = await service.answer(a, "GET", f"gpu-containers/images/content?{query}")
        assert (mine["digest"], mine["recorded_present"]) == (digest, True), mine

        async def offered() -> bool:
            specs = (await service.answer(b, "GET", "api/kernelspecs"))[1]["kernelspecs"]
            return kernel_name(public) in specs

        await wait_until(offered, 30, "the public tag's kernel spec")
        code, refusal = await service.answer(
            b,
            "POST",
            "api/kernels",
            {"name": kernel_name(public), "env": {"KERNEL_GPU_CONTAINERS_IMAGE_DIGEST": digest}},
        )
        # The sentence of an image that is not here: whose it is is not told (issue 61).
        assert code == 404 and "There is no image" in refusal["message"], (code, refusal)
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
        private_registry.remove_local(public)


async def test_a_private_pull_of_the_course_image_hides_its_own_reference_only(
    services: list[KernelService],
    private_registry: PrivateRegistry,
    docker_client: docker.DockerClient,
) -> None:
    """Issue 26, findings 8, 10 and 15: a student's private pull of a retag of the course image
    hides that reference from others, never the course image (its id); the hiding ends with the
    tag. What one student can learn of another's kernels (status, metrics, a private spec's
    files) is nothing, and each one's default kernel is one they may start."""
    ref = private_registry.push(DEBIAN_IMAGE, f"course-retag-{uuid.uuid4().hex[:8]}:1")
    retag_spec = kernel_name(ref)
    service, a, b = start_service(
        services,
        {
            "ContainerPolicy": {"allowed_images": [ref, DEBIAN_IMAGE]},
            "ServiceApp": {"admin_users": [USER_A]},
        },
    )

    async def specs_of(user: ServiceUser) -> Any:
        code, specs = await service.answer(user, "GET", "api/kernelspecs")
        assert code == 200, specs
        return specs

    async def a_lists_hers() -> bool:
        return retag_spec in (await specs_of(a))["kernelspecs"]

    try:
        b_kernel = await service.start_kernel(b, CPU_SPEC)
        assert (await run(service, b, b_kernel, "x = 1")).status == "ok"
        login = {"username": private_registry.username, "password": private_registry.password}
        code, pull = await service.answer(
            a, "POST", "gpu-containers/pulls", {"image": ref, "auth": login}
        )
        assert code == 202, pull
        assert (await wait_for_pull(service, a, pull["id"]))["state"] == "done"
        await wait_until(a_lists_hers, 60, "the private pull's kernel spec")

        # The course image (the same image id) is still everyone's: listed, read, restarted.
        specs_b = await specs_of(b)
        assert CPU_SPEC in specs_b["kernelspecs"], specs_b
        assert retag_spec not in specs_b["kernelspecs"]
        assert (await service.answer(b, "GET", f"api/kernelspecs/{CPU_SPEC}"))[0] == 200
        rows = (await service.answer(b, "GET", "gpu-containers/images"))[1]["images"]
        assert any(r["reference"] == DEBIAN_IMAGE and r["pulled"] for r in rows), rows
        assert not any(r["reference"] == ref for r in rows)
        # A student's panel lists what they may start (here the course image), not every image
        # of the host; the administrator's lists the others too, each with why it is not offered.
        assert {r["reference"] for r in rows if not r["listed"]} == {DEBIAN_IMAGE}, rows
        rows_a = (await service.answer(a, "GET", "gpu-containers/images"))[1]["images"]
        assert any(r["reference"] == NGC_IMAGE and not r["allowed"] for r in rows_a), rows_a
        code, restarted = await service.answer(b, "POST", f"api/kernels/{b_kernel}/restart")
        assert code == 200, restarted
        assert (await run(service, b, b_kernel, "print('again')")).stdout.strip() == "again"

        # Her reference, its spec and the spec's files: the 404 of a spec that does not exist.
        nothing = kernel_name(f"jgc-test/none-{uuid.uuid4().hex[:8]}:1")
        for path in ("api/kernelspecs/{}", "kernelspecs/{}/logo-svg.svg"):
            theirs = await service.fetch(b, "GET", path.format(retag_spec))
            none = await service.fetch(b, "GET", path.format(nothing))
            assert theirs.code == none.code == 404, (path, theirs.code, none.code)
            assert theirs.body.replace(retag_spec.encode(), b"NAME") == none.body.replace(
                nothing.encode(), b"NAME"
            ), path
        assert (await service.fetch(a, "GET", f"kernelspecs/{retag_spec}/logo-svg.svg")).code == 200

        # Each one's default kernel is one they are offered, and a start without a name gets it.
        specs_a = await specs_of(a)
        assert specs_a["default"] == min(specs_a["kernelspecs"]) == retag_spec, specs_a
        assert specs_b["default"] == CPU_SPEC, specs_b
        code, started = await service.answer(b, "POST", "api/kernels", {})
        assert code == 201 and started["name"] == CPU_SPEC, started
        a_kernel = await service.start_kernel(a, retag_spec)

        # Status counts the caller's kernels; metrics (which name every kernel's spec) are the
        # administrators' (A here).
        for user, mine in ((a, [a_kernel]), (b, [b_kernel, started["id"]])):
            code, status = await service.answer(user, "GET", "api/status")
            assert code == 200 and status["kernels"] == len(mine), (user.name, status)
        for path in ("metrics", "gpu-containers/metrics"):
            assert (await service.fetch(None, "GET", path)).code == 403, path
            refused = await service.fetch(b, "GET", path)
            assert refused.code == 403, (path, refused.code)
            assert retag_spec.encode() not in refused.body
            assert (await service.fetch(a, "GET", path)).code == 200, path
        assert retag_spec in (await service.fetch(a, "GET", "metrics")).body.decode()
        # Her kernel gone, container and all: the engine keeps a tag a container was made from.
        assert (await service.answer(a, "DELETE", f"api/kernels/{a_kernel}"))[0] == 204

        async def no_container_of_hers() -> bool:
            label = f"{L.KERNEL_ID}={a_kernel}"
            return not docker_client.containers.list(
                ignore_removed=True, all=True, filters={"label": label}
            )

        await wait_until(no_container_of_hers, 60, "her kernel's container to go")

        # A restart of the service keeps what is still true: her reference hers, the course
        # image everyone's.
        service.stop()
        service.start()
        assert retag_spec in (await specs_of(a))["kernelspecs"]
        specs_b = await specs_of(b)
        assert CPU_SPEC in specs_b["kernelspecs"] and retag_spec not in specs_b["kernelspecs"]

        # The tag removed, the hiding ends: the same name tagged again by an administrator is
        # everyone's.
        private_registry.remove_local(ref)
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(ref)

        async def a_lost_it() -> bool:
            return not await a_lists_hers()

        await wait_until(a_lost_it, 60, "the removed tag's kernel spec to go")
        repository, tag = ref.rsplit(":", 1)
        assert docker_client.images.get(DEBIAN_IMAGE).tag(repository, tag)

        async def b_lists_it() -> bool:
            return retag_spec in (await specs_of(b))["kernelspecs"]

        await wait_until(b_lists_it, 60, "the administrator's tag to be offered to B")
    finally:
        private_registry.remove_local(ref)


async def test_who_may_pull_and_build_is_the_administrators_choice(
    services: list[KernelService],
) -> None:
    service, a, _b = start_service(
        services, {"ServiceApp": {"pull_policy": "admins", "admin_users": []}}
    )
    code, refusal = await service.answer(a, "POST", "gpu-containers/pulls", {"image": "x:1"})
    assert code == 403, refusal
    assert "Only the administrators of this kernel service may pull" in refusal["message"]
    # A student reads what to do, not the option that decided it: that is an administrator's.
    assert "setting" not in refusal and "ServiceApp." not in refusal["message"], refusal
    # The status says so first, and that the user is no admin: the panel then shows no Pull
    # button that can only fail, and never asks for the admin view (a 403 each time).
    code, status = await service.answer(a, "GET", "gpu-containers/status")
    assert code == 200, status
    assert status["pull_refusal"] == refusal["message"]
    assert "pull_refusal_setting" not in status, status
    assert status["admin"] is False
    service2, a2, _ = start_service(services)  # allowed images only, and none are allowed
    code, refusal = await service2.answer(a2, "POST", "gpu-containers/pulls", {"image": "x:1"})
    assert code == 403 and "allows none" in refusal["message"]
    code, status = await service2.answer(a2, "GET", "gpu-containers/status")
    assert code == 200 and status["pull_refusal"] == refusal["message"]
    # Builds from a student's workspace run their steps as root on the engine: nobody's by
    # default (ServiceApp.build_policy), said before anything is read, and in the saves' list.
    code, refusal = await service2.answer(
        a2, "POST", "gpu-containers/builds", {"path": "env/Dockerfile"}
    )
    assert code == 403 and "builds no images from users' workspaces" in refusal["message"], refusal
    code, saves = await service2.answer(a2, "GET", "gpu-containers/saves")
    assert code == 200 and saves["build_refusal"] == refusal["message"], saves


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
    assert all("as many as it takes. Try again" in body["message"] for body in busy)


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
        # A stock client's default kernel, through the user's server: one it may start (issue
        # 26, finding 15), the service's default for this user. (The stock gateway client
        # answers its first listing with its own default, and takes the service's from it.)
        assert (await user.answer("GET", "api", "kernelspecs"))[0] == 200
        code, specs = await user.answer("GET", "api", "kernelspecs")
        assert code == 200 and specs["default"] in specs["kernelspecs"], specs
        assert specs["default"] == (await service.answer(a, "GET", "api/kernelspecs"))[1]["default"]
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


# ------------------------------------------- issue 26: per-user bounds and clean refusals

# Tags of the CPU image, for the bounds' service: a kernel that never answers until the test
# lets it end (its command waits for a file in its user's workspace), and one with a larger
# memory limit. Removed with the service.
SILENT_REF = f"jgc-test/silent-{uuid.uuid4().hex[:8]}:1"
BIG_REF = f"jgc-test/big-{uuid.uuid4().hex[:8]}:1"
RELEASE = ".jgc-release"  # in the workspace: the silent kernels' command ends when it is there


@pytest.fixture(scope="module")
def bounded() -> Iterator[tuple[KernelService, ServiceUser, ServiceUser]]:
    """One service for issue 26's per-user bounds (findings 4, 6, 11 and 16), shared by the tests
    below (each ends its own kernels): room for 2 starts at once and 1 waiting, of which one
    user may hold 1 and 1; 3 kernels per user; each user's kernels' memory limits up to 1.5 GiB
    (the CPU image's kernels 256 MiB, BIG_REF's 1 GiB, the administrator's ceiling); 3 open
    kernel websockets per user."""
    client = docker.from_env()
    for ref in (SILENT_REF, BIG_REF):
        client.images.get(DEBIAN_IMAGE).tag(*ref.rsplit(":", 1))
    service = KernelService(
        {
            "ServiceApp": {
                "max_concurrent_starts": 2,
                "max_queued_starts": 1,
                "max_concurrent_starts_per_user": 1,
                "max_queued_starts_per_user": 1,
                "max_kernels_per_user": 3,
                "max_memory_per_user": "1536m",
                "build_policy": "everyone",
            },
            "ContainerPolicy": {"max_mem_limit": "1g"},
            "GPUContainersKernelManager": {"max_websockets_per_user": 3},
            # Saved and built images are the test run's, swept with its other images.
            "ImageSaves": {"extra_labels": {TEST_IMAGE_LABEL: TEST_RUN}, "build_network": False},
            "ContainerKernelSpecManager": {
                "image_overrides": {
                    SILENT_REF: {
                        "provisioner": {
                            "kernel_cmd": [
                                "sh",
                                "-c",
                                f"until [ -e /workspace/{RELEASE} ]; do sleep 0.2; done",
                            ],
                            "launch_timeout": 600,
                            "mem_limit": "128m",
                        }
                    },
                    BIG_REF: {"provisioner": {"mem_limit": "1g"}},
                    DEBIAN_IMAGE: {"provisioner": {"mem_limit": "256m"}},
                }
            },
        }
    )
    try:
        a = service.add_user(USER_A)
        b = service.add_user(USER_B)
        service.start()
        yield service, a, b
    finally:
        service.close()
        for ref in (SILENT_REF, BIG_REF):
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.images.remove(ref, noprune=True)
        client.close()


async def delete_kernels(service: KernelService, *users: ServiceUser) -> None:
    """Every kernel of ``users`` on ``service``, shut down (a test's own, at its end)."""
    for user in users:
        code, kernels = await service.answer(user, "GET", "api/kernels")
        for kernel in kernels if code == 200 else []:
            await service.answer(user, "DELETE", f"api/kernels/{kernel['id']}")


async def test_a_notebooks_own_modules_do_not_change_what_starts(
    bounded: tuple[KernelService, ServiceUser, ServiceUser],
) -> None:
    """Issue 26, finding 4: a student's ipykernel_launcher.py (one that never answers) and
    queue.py (a module ipykernel imports) in her notebook's directory are not what the kernel
    runs at its start; her code still runs there, and imports her own modules."""
    service, a, _b = bounded
    run_as(
        a.name,
        "import os, sys\n"
        "d = os.path.join(sys.argv[1], 'shadowed')\n"
        "os.mkdir(d)\n"
        "files = {\n"
        "    'ipykernel_launcher.py': 'import time\\ntime.sleep(3600)\\n',\n"
        "    'queue.py': 'raise SystemExit(\"the notebook directory queue.py ran\")\\n',\n"
        "    'course_helpers.py': 'WHO = \"hers\"\\n',\n"
        "}\n"
        "for name, text in files.items():\n"
        "    with open(os.path.join(d, name), 'w') as f:\n"
        "        f.write(text)\n",
        str(a.workspace),
    )
    try:
        kernel_id = await service.start_kernel(
            a, CPU_SPEC, {"KERNEL_WORKING_DIR": str(a.workspace / "shadowed")}
        )
        result = await run(
            service,
            a,
            kernel_id,
            "import os, queue, course_helpers\n"
            "print(os.getcwd(), course_helpers.WHO, hasattr(queue, 'Queue'))",
        )
        assert result.status == "ok", result
        # Where her code runs, what it imports of hers; the standard library's queue stays the
        # standard library's, as IPython orders sys.path (the notebook's directory after it).
        assert result.stdout.split() == ["/workspace/shadowed", "hers", "True"], result
    finally:
        await delete_kernels(service, a)


async def test_a_students_packages_are_hers_kept_per_image_and_reset_by_her(
    bounded: tuple[KernelService, ServiceUser, ServiceUser],
) -> None:
    """Issue 31, item 2, behind the service: a student's `%pip install` lands in her workspace,
    owned by her, and is on her next kernel's path; the panel's route lists and resets her
    folders only; the other student's link to them from her own workspace makes the service
    (root) measure and remove nothing of the first's."""
    service, a, b = bounded
    wheel = tiny_wheel(a.workspace)
    os.chown(wheel, *ids_of(a.name))
    key = packages_key(NGC_IMAGE)
    imports = "import jgc_tiny; print(jgc_tiny.__file__)"
    no_gpu = {"KERNEL_GPU_CONTAINERS_REQUEST": "0"}
    try:
        kernel_id = await service.start_kernel(a, GPU_SPEC, no_gpu)
        ws = await service.websocket(a, kernel_id)
        try:
            result = await execute(
                ws,
                f"%pip install --no-index --disable-pip-version-check /workspace/{wheel.name}",
                timeout=120,
            )
        finally:
            ws.close()
        assert re.search(r"Successfully installed jgc[-_]tiny-1\.0", result.stdout), result
        folder = a.workspace / ".jupyter-gpu-containers" / "packages" / key
        (installed,) = folder.glob("lib/python3*/site-packages/jgc_tiny.py")
        assert (installed.stat().st_uid, installed.stat().st_gid) == ids_of(a.name)
        await delete_kernels(service, a)
        again = await service.start_kernel(a, GPU_SPEC, no_gpu)
        result = await run(service, a, again, imports)
        assert result.stdout.startswith(f"/workspace/.jupyter-gpu-containers/packages/{key}/")

        await save_as_image(service, a, b, again)
        await build_from_her_workspace(service, a, b)

        code, mine = await service.answer(a, "GET", "gpu-containers/packages")
        assert code == 200 and mine["measured"], mine
        # Her folders: the image's, and those her other kernels' starts made, empty (the
        # module-scoped service's earlier tests started some).
        with_packages = [(f["key"], f["image"]) for f in mine["folders"] if f["packages"]]
        assert with_packages == [(key, NGC_IMAGE)], mine
        code, hers = await service.answer(b, "GET", "gpu-containers/packages")
        assert code == 200 and not [f for f in hers["folders"] if f["packages"]], hers
        # The other student's packages folder: a link to the first's.
        run_as(
            b.name,
            "import os, sys\n"
            "mine = os.path.join(sys.argv[1], '.jupyter-gpu-containers')\n"
            "os.makedirs(mine)\n"
            "os.symlink(sys.argv[2], os.path.join(mine, 'packages'))\n",
            str(b.workspace),
            str(folder.parent),
        )
        code, hers = await service.answer(b, "GET", "gpu-containers/packages")
        assert code == 200 and hers["folders"] == [] and "symbolic link" in hers["message"], hers
        code, refused = await service.answer(b, "DELETE", f"gpu-containers/packages/{key}")
        assert code == 400 and "symbolic link" in refused["message"], refused
        assert installed.exists()

        # Her own reset: her next kernel of the image has the image's packages only.
        code, _ = await service.answer(a, "DELETE", f"gpu-containers/packages/{key}")
        assert code == 204 and not installed.exists()
        await delete_kernels(service, a)
        fresh = await service.start_kernel(a, GPU_SPEC, no_gpu)
        result = await run(service, a, fresh, imports)
        assert result.ename == "ModuleNotFoundError", result
    finally:
        await delete_kernels(service, a, b)


async def save_ended(service: KernelService, user: ServiceUser, save_id: str, what: str) -> Any:
    """The user's save (or build) once it ended, read as their page reads it."""

    async def ended() -> Any:
        code, now = await service.answer(user, "GET", f"gpu-containers/saves/{save_id}")
        assert code == 200, now
        return now if now["state"] in ("done", "error", "cancelled") else None

    return await wait_until(ended, 300, what)


async def save_as_image(
    service: KernelService, a: ServiceUser, b: ServiceUser, kernel_id: str
) -> None:
    """Issue 31, item 3, behind the service: the student saves her kernel's environment as an
    image; it is hers alone (the other student is offered no kernel spec of it, cannot start
    one, cannot save her kernel), and its kernels import her packages from the image."""
    code, refused = await service.answer(b, "POST", f"gpu-containers/kernels/{kernel_id}/save")
    assert code == 404, refused
    code, started = await service.answer(
        a, "POST", f"gpu-containers/kernels/{kernel_id}/save", {"name": "tiny-env"}
    )
    assert code == 202, started
    uid = ids_of(a.name)[0]
    assert started["image"].startswith(f"localhost/jupyter-gpu-containers/saved/u{uid}/tiny-env:")
    saved_name = kernel_name(started["image"])
    code, theirs = await service.answer(b, "GET", f"gpu-containers/saves/{started['id']}")
    assert code == 404, theirs

    try:
        done = await save_ended(service, a, started["id"], "the save's end")
        assert done["state"] == "done", done

        async def offered() -> bool:
            code, specs = await service.answer(a, "GET", "api/kernelspecs")
            return code == 200 and saved_name in specs["kernelspecs"]

        await wait_until(offered, 60, "the saved image's kernel spec")
        code, specs = await service.answer(b, "GET", "api/kernelspecs")
        assert code == 200 and saved_name not in specs["kernelspecs"]
        code, refused = await service.answer(
            b, "POST", "api/kernels", {"name": saved_name, "env": {}}
        )
        assert code in (403, 404), refused
        code, catalog = await service.answer(b, "GET", "gpu-containers/images")
        assert started["image"] not in {r["reference"] for r in catalog["images"]}

        await delete_kernels(service, a)  # her memory bound: one such kernel at a time
        saved = await service.start_kernel(a, saved_name, {"KERNEL_GPU_CONTAINERS_REQUEST": "0"})
        result = await run(service, a, saved, "import jgc_tiny; print(jgc_tiny.__file__)")
        assert result.stdout.startswith(f"{SAVED_PACKAGES_DIR}/lib/python3"), result
        await service.answer(a, "DELETE", f"api/kernels/{saved}")
    finally:
        with (
            contextlib.closing(docker.from_env()) as client,
            contextlib.suppress(docker.errors.APIError),
        ):
            client.images.remove(started["image"], force=True)


async def build_from_her_workspace(service: KernelService, a: ServiceUser, b: ServiceUser) -> None:
    """Issue 31, item 4, behind the service (ServiceApp.build_policy "everyone" here): the
    student builds a Dockerfile of her workspace into an image of her own, which the other
    student neither sees nor can follow; his link to her folder builds nothing of hers."""
    run_as(
        a.name,
        "import os, sys\n"
        "d = os.path.join(sys.argv[1], 'env')\n"
        "os.mkdir(d)\n"
        "open(os.path.join(d, 'Dockerfile'), 'w').write(\n"
        f"    'FROM {DEBIAN_IMAGE}\\nCOPY notes.txt /opt/notes.txt\\nRUN echo her-step-ran\\n')\n"
        "open(os.path.join(d, 'notes.txt'), 'w').write('hers\\n')\n",
        str(a.workspace),
    )
    code, started = await service.answer(
        a, "POST", "gpu-containers/builds", {"path": "env/Dockerfile"}
    )
    assert code == 202, started
    uid = ids_of(a.name)[0]
    assert started["image"].startswith(f"localhost/jupyter-gpu-containers/saved/u{uid}/env:")
    try:
        code, theirs = await service.answer(b, "GET", f"gpu-containers/saves/{started['id']}")
        assert code == 404, theirs

        done = await save_ended(service, a, started["id"], "the build's end")
        assert done["state"] == "done" and "her-step-ran" in done["log"], done
        code, catalog = await service.answer(b, "GET", "gpu-containers/images")
        assert started["image"] not in {r["reference"] for r in catalog["images"]}
        code, catalog = await service.answer(a, "GET", "gpu-containers/images")
        assert started["image"] in {r["reference"] for r in catalog["images"]}
        # The other student's link to her folder, from his own workspace: not followed.
        run_as(
            b.name,
            "import os, sys\nos.symlink(sys.argv[2], os.path.join(sys.argv[1], 'hers'))\n",
            str(b.workspace),
            str(a.workspace / "env"),
        )
        code, refused = await service.answer(
            b, "POST", "gpu-containers/builds", {"path": "hers/Dockerfile"}
        )
        assert code == 400 and "cannot be opened" in refused["message"], refused
        # Nor can he build on her image: another user's private image is no base of his.
        run_as(
            b.name,
            "import os, sys\n"
            "d = os.path.join(sys.argv[1], 'on-hers')\n"
            "os.mkdir(d)\n"
            "open(os.path.join(d, 'Dockerfile'), 'w').write('FROM ' + sys.argv[2] + '\\n')\n",
            str(b.workspace),
            started["image"],
        )
        code, refused = await service.answer(
            b, "POST", "gpu-containers/builds", {"path": "on-hers/Dockerfile"}
        )
        # The sentence of an image that is not here (issue 61): whose it is is not told.
        assert code == 404 and "There is no image" in refused["message"], refused
    finally:
        with (
            contextlib.closing(docker.from_env()) as client,
            contextlib.suppress(docker.errors.APIError),
        ):
            client.images.remove(started["image"], force=True)


async def test_one_students_flood_of_starts_leaves_the_others_room(
    bounded: tuple[KernelService, ServiceUser, ServiceUser],
) -> None:
    """Issue 26, finding 4: starts that hold their slots (kernels that do not answer) fill only
    their user's share of the start queue; hers beyond it are answered 429 at once, and another
    student's start goes ahead meanwhile."""
    service, a, b = bounded
    release = a.workspace / RELEASE
    release.unlink(missing_ok=True)
    silent = kernel_name(SILENT_REF)
    flood = [
        asyncio.ensure_future(service.answer(a, "POST", "api/kernels", {"name": silent}))
        for _ in range(5)
    ]
    try:

        async def three_answered() -> bool:
            return sum(f.done() for f in flood) >= 3

        await wait_until(three_answered, 120, "the starts beyond her share to be answered")
        # Her share is one start under way and one waiting: the other three are refused, and
        # the two in her share cannot end before the test lets them.
        answered = [f.result() for f in flood if f.done()]
        assert [code for code, _ in answered] == [429, 429, 429], answered
        for _, body in answered:
            assert "as many as one user may (1 under way, 1 waiting)" in body["message"], body
        # Another student's start goes ahead while hers hold their slots.
        b_kernel = await service.start_kernel(b, CPU_SPEC)
        assert (await run(service, b, b_kernel, "print(6 * 7)")).stdout.strip() == "42"
        assert sum(f.done() for f in flood) == 3
    finally:
        release.touch()  # her kernels' command ends: their starts fail, their containers go
        await asyncio.gather(*flood, return_exceptions=True)
        release.unlink(missing_ok=True)
        await delete_kernels(service, a, b)


async def test_a_students_kernels_and_their_memory_are_bounded(
    bounded: tuple[KernelService, ServiceUser, ServiceUser],
) -> None:
    """Issue 26, finding 6: max_kernels_per_user and max_memory_per_user hold for starts at once
    (each counts from its request), a restart counts once, and an ended kernel makes room."""
    service, a, b = bounded

    async def starts_at_once(user: ServiceUser, spec: str, n: int) -> list[tuple[int, Any]]:
        return list(
            await asyncio.gather(
                *(service.answer(user, "POST", "api/kernels", {"name": spec}) for _ in range(n))
            )
        )

    try:
        kernels = [await service.start_kernel(b, CPU_SPEC) for _ in range(2)]
        racing = await starts_at_once(b, CPU_SPEC, 3)
        assert sorted(code for code, _ in racing) == [201, 409, 409], racing
        kernels += [body["id"] for code, body in racing if code == 201]
        for code, body in racing:
            if code == 409:
                assert "as many as one user may have (3)" in body["message"], body
        # A restart replaces its kernel's container: still three kernels, no more.
        code, restarted = await service.answer(b, "POST", f"api/kernels/{kernels[0]}/restart")
        assert code == 200, restarted
        code, refused = await service.answer(b, "POST", "api/kernels", {"name": CPU_SPEC})
        assert code == 409 and "as many as one user may have" in refused["message"], refused
        # One ended: room for one more.
        assert (await service.answer(b, "DELETE", f"api/kernels/{kernels.pop(0)}"))[0] == 204
        kernels.append(await service.start_kernel(b, CPU_SPEC))

        # Memory: A's 256 MiB kernel and a 1 GiB one fit her 1.5 GiB; of two more 1 GiB ones
        # asked at once, one gets in.
        await service.start_kernel(a, CPU_SPEC)
        racing = await starts_at_once(a, kernel_name(BIG_REF), 2)
        assert sorted(code for code, _ in racing) == [201, 409], racing
        [(_, refused)] = [(code, body) for code, body in racing if code == 409]
        assert "of the 1.5 GiB one user's kernels may have" in refused["message"], refused
        assert "may use up to 1 GiB" in refused["message"], refused
        # Hers do not count against B's: B's three kernels (768 MiB) are B's alone.
        code, listing = await service.answer(b, "GET", "api/kernels")
        assert code == 200 and sorted(k["id"] for k in listing) == sorted(kernels), listing
    finally:
        await delete_kernels(service, a, b)


async def test_a_students_open_kernel_connections_are_bounded(
    bounded: tuple[KernelService, ServiceUser, ServiceUser],
) -> None:
    """Each kernel websocket holds sockets to its kernel in the one service process: a student
    who opens them by the thousand (a loop in a notebook, tabs) would take the service's file
    descriptors from everyone. GPUContainersKernelManager.max_websockets_per_user (3 here)
    bounds them per user, over all their kernels: the next is refused (429) with a sentence;
    another student is not affected; one closed makes room."""
    service, a, b = bounded
    opened: list[Any] = []
    try:
        kernels = [await service.start_kernel(b, CPU_SPEC) for _ in range(2)]
        for kernel in (kernels[0], kernels[1], kernels[1]):
            opened.append(await service.websocket(b, kernel))
        with pytest.raises(HTTPClientError) as refused:
            await service.websocket(b, kernels[0])
        assert refused.value.code == 429, refused.value

        async def said() -> bool:  # its sentence, in the service's log
            return "max_websockets_per_user" in service.output()

        await wait_until(said, 30, "the refusal's sentence in the service's log")
        # A's page is hers to open: B's connections are not counted against her.
        theirs = await service.start_kernel(a, CPU_SPEC)
        ws = await service.websocket(a, theirs)
        opened.append(ws)
        assert (await execute(ws, "print(6 * 7)")).stdout.strip() == "42"
        # B closes a page: a new one is admitted once the service saw the close, and runs code.
        opened.pop(0).close()

        async def admitted() -> Any:
            try:
                return await service.websocket(b, kernels[0])
            except HTTPClientError as e:
                assert e.code == 429, e
                return None

        ws = await wait_until(admitted, 30, "a connection once another closed")
        opened.append(ws)
        assert (await execute(ws, "print(7 * 6)")).stdout.strip() == "42"
    finally:
        for ws in opened:
            ws.close()
        await delete_kernels(service, a, b)


async def test_malformed_gpu_requests_are_refused_with_a_sentence(
    bounded: tuple[KernelService, ServiceUser, ServiceUser], docker_client: docker.DockerClient
) -> None:
    """Issue 26, finding 11: whatever a start's GPU request says, a 400 with a sentence, never
    the service's "Unhandled error"; no container is made."""
    service, a, _b = bounded
    for raw in (
        '["0","0"]',
        "-1",
        '"-1"',
        "[-1]",
        '"\u00b2"',
        "1e400",
        "[[]]",
        '{"n": 1}',
        "9" * 40,
    ):
        code, body = await service.answer(
            a,
            "POST",
            "api/kernels",
            {"name": CPU_SPEC, "env": {"KERNEL_GPU_CONTAINERS_REQUEST": raw}},
        )
        assert code == 400, (raw, code, body)
        assert body["reason"] == "Invalid GPU request", (raw, body)
        assert "GPU" in body["message"] and body["message"].endswith("."), (raw, body)
    label = f"{L.USER}={a.name}"
    assert not docker_client.containers.list(
        ignore_removed=True, all=True, filters={"label": label}
    )


async def test_a_wrong_or_revoked_token_is_told_so(
    bounded: tuple[KernelService, ServiceUser, ServiceUser],
) -> None:
    """Issue 26, finding 16: a request whose token the service's token file does not have (a
    wrong one, one revoked) is refused 403 with a sentence about the token, a POST too (not the
    stock "'_xsrf' argument missing")."""
    service, a, b = bounded
    last = "B" if a.token.endswith("A") else "A"
    wrong = ServiceUser(a.name, a.token[:-1] + last, a.workspace)
    cases = [
        ("POST", "api/kernels", {"name": CPU_SPEC}),
        ("GET", "api/kernels", None),
        ("DELETE", f"api/kernels/{uuid.uuid4()}", None),
        ("POST", "gpu-containers/pulls", {"image": DEBIAN_IMAGE}),
    ]
    for method, path, body in cases:
        code, answer = await service.answer(wrong, method, path, body)
        assert code == 403, (method, path, code, answer)
        assert "does not know the token this request carries" in answer["message"], answer
        assert "revoked" in answer["message"] and "_xsrf" not in answer["message"], answer

    # A token of B's that worked, revoked by the administrator's command.
    spare = service.add_user_token_only(b.name)

    async def accepted() -> bool:  # (the service reads a changed token file within a second)
        return (await service.answer(spare, "GET", "api/kernels"))[0] == 200

    await wait_until(accepted, 30, "the new token to be accepted")
    found = re.fullmatch(r"jgc_([0-9a-f]{8})_.+", spare.token)
    assert found is not None, spare.token
    subprocess.run(
        [
            str(VENV_BIN / "jupyter"),
            "gpu-containers",
            "token",
            "revoke",
            b.name,
            f"--id={found.group(1)}",
            f"--tokens-file={service.tokens_file}",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )

    async def refused() -> bool:
        return (await service.answer(spare, "GET", "api/kernels"))[0] == 403

    await wait_until(refused, 30, "the revoked token to be refused")
    code, answer = await service.answer(spare, "POST", "api/kernels", {"name": CPU_SPEC})
    assert code == 403 and "revoked" in answer["message"], answer
    assert (await service.answer(b, "GET", "api/kernels"))[0] == 200  # B's other token works

    # No token at all: a sentence too, for a POST as for a GET.
    code, answer = await service.answer(None, "POST", "api/kernels", {"name": CPU_SPEC})
    assert code == 403 and "carries no token" in answer["message"], answer
