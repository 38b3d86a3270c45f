"""Kernels in containers, end to end: the Jupyter server's REST API and websocket, the real
Docker engine, and the locally built test images."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest
from conftest import (
    CONDA_IMAGE,
    DEBIAN_IMAGE,
    NGC_IMAGE,
    TEST_LABEL,
    TEST_RUN,
    assert_no_test_containers,
    kernel_container,
    kernel_name,
)
from kernel_io import collect, execute, json_output, send_execute
from tornado.httpclient import HTTPClientError

from jupyter_gpu_containers.base import labels as L

pytestmark = pytest.mark.usefixtures("docker_client")

PROBE = """
import os, socket, sys, json
print(json.dumps({
    "hostname": socket.gethostname(),
    "cgroup": open("/proc/self/cgroup").read(),
    "pid1": open("/proc/1/cmdline").read().replace("\\0", " "),
    "uid": os.getuid(), "gid": os.getgid(),
    "cwd": os.getcwd(),
    "home": os.environ.get("HOME"),
    "home_writable": os.access(os.environ.get("HOME", "/"), os.W_OK),
    "python": sys.executable,
    "entrypoint_ran": os.environ.get("NGC_ENTRYPOINT_RAN"),
    "session": os.environ.get("JPY_SESSION_NAME"),
    "server_env_leaked": "JUPYTER_DATA_DIR" in os.environ,
}))
"""


async def start_kernel(jp_fetch: Any, image: str) -> str:
    response = await jp_fetch(
        "api", "kernels", method="POST", body=json.dumps({"name": kernel_name(image)})
    )
    return str(json.loads(response.body)["id"])


async def probe(jp_ws_fetch: Any, kernel_id: str) -> dict[str, Any]:
    return await json_output(jp_ws_fetch, kernel_id, PROBE)


async def kernelspecs(jp_fetch: Any) -> dict[str, Any]:
    response = await jp_fetch("api", "kernelspecs")
    return dict(json.loads(response.body)["kernelspecs"])


async def test_kernelspecs_list_local_images(jp_fetch: Any) -> None:
    specs = await kernelspecs(jp_fetch)
    ngc = specs[kernel_name(NGC_IMAGE)]["spec"]
    assert ngc["display_name"] == f"PyTorch 24.05 · {NGC_IMAGE}"
    provisioner = ngc["metadata"]["kernel_provisioner"]
    assert provisioner["provisioner_name"] == "gpu-containers-provisioner"
    assert provisioner["config"]["image"] == NGC_IMAGE
    # Before its readiness probe answers, a plain Python image is just "Python 3"; once it has
    # answered (in the background: the spec path never waits), the label names its version.
    debian = kernel_name(DEBIAN_IMAGE)
    assert specs[debian]["spec"]["display_name"] in (
        f"Python 3 · {DEBIAN_IMAGE}",
        f"Python 3.11 · {DEBIAN_IMAGE}",
    )
    await jp_fetch("gpu-containers", "images", params={"wait": "1"}, request_timeout=180)
    for _ in range(100):
        specs = await kernelspecs(jp_fetch)
        if specs[debian]["spec"]["display_name"] != f"Python 3 · {DEBIAN_IMAGE}":
            break
        await asyncio.sleep(0.1)
    assert specs[debian]["spec"]["display_name"] == f"Python 3.11 · {DEBIAN_IMAGE}"
    assert specs[kernel_name(NGC_IMAGE)]["spec"]["display_name"] == f"PyTorch 24.05 · {NGC_IMAGE}"
    assert set(specs) >= {debian, kernel_name(NGC_IMAGE)}  # the names never change


def transport(name: str) -> pytest.MarkDecorator:
    return pytest.mark.server_config(lambda _: {"ContainerProvisioner": {"transport": name}})


@pytest.mark.parametrize(
    ("image", "transport"),
    [
        pytest.param(DEBIAN_IMAGE, "ipc", marks=transport("ipc")),
        pytest.param(DEBIAN_IMAGE, "tcp", marks=transport("tcp")),
        pytest.param(NGC_IMAGE, "ipc", marks=transport("ipc")),
        pytest.param(CONDA_IMAGE, "ipc", marks=transport("ipc")),
    ],
)
async def test_kernel_runs_in_a_container(
    image: str,
    transport: str,
    jp_fetch: Any,
    jp_ws_fetch: Any,
    docker_client: Any,
    jp_serverapp: Any,
) -> None:
    kernel_id = await start_kernel(jp_fetch, image)
    container = kernel_container(docker_client, kernel_id)
    # Where the launch's time went, phase by phase, in order (the log line and benchmarks/).
    phases = jp_serverapp.kernel_manager.get_kernel(kernel_id).provisioner.launch_phases()
    assert list(phases) == ["prepare", "image", "gpus", "create", "start", "ready"]
    assert all(seconds >= 0 for seconds in phases.values())
    facts = await probe(jp_ws_fetch, kernel_id)

    # The code ran in that container, under init, as this server's user, in the workspace.
    assert facts["hostname"] == container.id[:12]
    assert "docker-init" in facts["pid1"] or "tini" in facts["pid1"]
    assert (facts["uid"], facts["gid"]) == (os.getuid(), os.getgid())
    assert facts["cwd"] == "/workspace"
    assert facts["home_writable"]
    assert not facts["server_env_leaked"]
    if image == NGC_IMAGE:
        assert facts["entrypoint_ran"] == "1", "the image's ENTRYPOINT must run before the kernel"
    if image == CONDA_IMAGE:
        assert facts["python"].startswith("/opt/conda/bin/")

    labels = container.labels
    assert labels[L.KERNEL_ID] == kernel_id
    assert labels[L.IMAGE] == image
    assert labels[TEST_LABEL] == TEST_RUN
    conn_dir = labels[L.CONNECTION_DIR]
    assert os.stat(conn_dir).st_mode & 0o777 == 0o700
    bindings = container.attrs["HostConfig"]["PortBindings"] or {}
    if transport == "tcp":
        assert len(bindings) == 5
        assert {b["HostIp"] for port in bindings.values() for b in port} == {"127.0.0.1"}
    else:
        assert bindings == {}
        assert sorted(n for n in os.listdir(conn_dir) if n.startswith("kernel-ipc-"))

    await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert_no_test_containers(docker_client)
    assert not os.path.exists(conn_dir)


async def test_init_reaps_zombies(jp_fetch: Any, jp_ws_fetch: Any) -> None:
    kernel_id = await start_kernel(jp_fetch, DEBIAN_IMAGE)
    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
    code = """
import os, subprocess, time
# The shell exits at once, orphaning its background child; init must reap the orphan.
subprocess.run(["sh", "-c", "sleep 0.2 & exit 0"], check=True)
time.sleep(1.0)
states = [open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0]
          for p in os.listdir("/proc") if p.isdigit()]
print("zombies", states.count("Z"))
"""
    result = await execute(ws, code)
    ws.close()
    assert result.stdout.strip() == "zombies 0"


async def test_session_runs_in_the_notebook_directory(
    jp_fetch: Any, jp_ws_fetch: Any, jp_root_dir: Any, docker_client: Any
) -> None:
    (jp_root_dir / "course" / "week1").mkdir(parents=True)
    body = {
        "path": "course/week1/lab.ipynb",
        "type": "notebook",
        "name": "lab.ipynb",
        "kernel": {"name": kernel_name(NGC_IMAGE)},
    }
    response = await jp_fetch("api", "sessions", method="POST", body=json.dumps(body))
    session = json.loads(response.body)
    kernel_id = session["kernel"]["id"]
    assert session["kernel"]["name"] == kernel_name(NGC_IMAGE)

    facts = await probe(jp_ws_fetch, kernel_id)
    assert facts["cwd"] == "/workspace/course/week1"
    assert facts["session"] == "/workspace/course/week1/lab.ipynb"
    assert kernel_container(docker_client, kernel_id).labels[L.NOTEBOOK] == "course/week1/lab.ipynb"

    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
    result = await execute(ws, "open('result.txt', 'w').write('from the container')")
    ws.close()
    assert result.status == "ok"
    written = jp_root_dir / "course" / "week1" / "result.txt"
    assert written.read_text() == "from the container"
    assert (written.stat().st_uid, written.stat().st_gid) == (os.getuid(), os.getgid())

    await jp_fetch("api", "sessions", session["id"], method="DELETE")
    assert_no_test_containers(docker_client)


def interrupt_by(mode: str) -> Any:
    return pytest.param(
        mode,
        marks=pytest.mark.server_config(
            lambda _: {
                "ContainerKernelSpecManager": {
                    "image_overrides": {DEBIAN_IMAGE: {"interrupt_mode": mode}}
                }
            }
        ),
    )


@pytest.mark.parametrize("interrupt_mode", [interrupt_by("signal"), interrupt_by("message")])
async def test_interrupt_restart_shutdown(
    interrupt_mode: str, jp_fetch: Any, jp_ws_fetch: Any, docker_client: Any
) -> None:
    response = await jp_fetch("api", "kernelspecs", kernel_name(DEBIAN_IMAGE))
    assert json.loads(response.body)["spec"]["interrupt_mode"] == interrupt_mode

    kernel_id = await start_kernel(jp_fetch, DEBIAN_IMAGE)
    first = kernel_container(docker_client, kernel_id)
    conn_dir = first.labels[L.CONNECTION_DIR]
    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
    assert (await execute(ws, "x = 41")).status == "ok"

    busy = await send_execute(ws, "while True:\n    pass", stop_on_error=False)
    await asyncio.sleep(0.5)
    await jp_fetch("api", "kernels", kernel_id, "interrupt", method="POST", body="")
    interrupted = await collect(ws, busy, timeout=20)
    assert interrupted.ename == "KeyboardInterrupt"
    assert (await execute(ws, "print(x + 1)")).stdout.strip() == "42"
    ws.close()

    await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="")
    second = kernel_container(docker_client, kernel_id)
    assert second.id != first.id, "a restart must give a fresh container"
    assert second.labels[L.IMAGE] == DEBIAN_IMAGE
    assert second.attrs["HostConfig"]["ShmSize"] == first.attrs["HostConfig"]["ShmSize"]
    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
    assert (await execute(ws, "print('x' in globals())")).stdout.strip() == "False"
    ws.close()

    await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert_no_test_containers(docker_client)
    assert not os.path.exists(conn_dir)


@pytest.mark.parametrize("who", ["a restart request", "the server at stop"])
async def test_a_shutdown_during_a_restart_waits_for_it(
    who: str, jp_fetch: Any, jp_serverapp: Any, docker_client: Any
) -> None:
    """Shut Down while the kernel restarts (the restarter's, after its container died, or a
    user's) ends the kernel: jupyter_client used to answer it with a 500 (InvalidStateError)."""
    kernel_id = await start_kernel(jp_fetch, DEBIAN_IMAGE)
    km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    restart = asyncio.ensure_future(
        jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="")
    )
    # The restart is under way once the kernel's ready future is pending again (it takes a
    # container stop and start, far longer than these polls).
    for _ in range(6000):
        if not km.ready.done() or restart.done():
            break
        await asyncio.sleep(0.005)
    assert not restart.done() and not km.ready.done(), "the restart was never seen under way"
    if who == "a restart request":
        response = await jp_fetch("api", "kernels", kernel_id, method="DELETE")
        assert response.code == 204
    else:
        await jp_serverapp.kernel_manager.shutdown_all()
    assert (await restart).code == 200  # the restart finished before the shutdown began
    assert kernel_id not in jp_serverapp.kernel_manager
    assert_no_test_containers(docker_client)


async def test_a_kernel_being_shut_down_is_not_restarted(
    jp_fetch: Any, jp_serverapp: Any, docker_client: Any
) -> None:
    """The restarter decides to restart a kernel whose container died; its user shuts it down
    meanwhile (Shut Down, a docker rm -f and then DELETE). The restart that follows must not
    bring it back in a new container that nobody owns."""
    mkm = jp_serverapp.kernel_manager
    kernel_id = await start_kernel(jp_fetch, DEBIAN_IMAGE)
    km = mkm.get_kernel(kernel_id)
    shutdown = asyncio.ensure_future(mkm.shutdown_kernel(kernel_id))
    await asyncio.sleep(0)  # the shutdown has begun
    # What jupyter_client's asyncio restarter calls once it found the kernel dead.
    await km.restart_kernel(now=True, newports=True)
    await shutdown
    assert kernel_id not in mkm
    assert_no_test_containers(docker_client)


async def test_a_kernel_shut_down_while_its_restart_asks_the_engine_is_not_restarted(
    jp_fetch: Any, jp_serverapp: Any, docker_client: Any
) -> None:
    """The other order: the restarter's restart has begun (it asks the engine whether the
    kernel still runs) when the user's shutdown comes and ends. The restart must not go on into
    a new container, holding the kernel's GPUs, for a kernel nobody has (CI, once)."""
    mkm = jp_serverapp.kernel_manager
    kernel_id = await start_kernel(jp_fetch, DEBIAN_IMAGE)
    km = mkm.get_kernel(kernel_id)
    kernel_container(docker_client, kernel_id).remove(force=True)
    restart = asyncio.ensure_future(km.restart_kernel(now=True, newports=True))
    await asyncio.sleep(0)  # the restart waits on the engine's answer
    assert not restart.done()
    await mkm.shutdown_kernel(kernel_id)
    await restart
    assert kernel_id not in mkm
    assert_no_test_containers(docker_client)


async def test_kernelspecs_follow_the_engine(jp_fetch: Any, docker_client: Any) -> None:
    ref = f"jgc-test/live:{TEST_RUN}"
    name = kernel_name(ref)

    async def names() -> set[str]:
        response = await jp_fetch("api", "kernelspecs")
        return set(json.loads(response.body)["kernelspecs"])

    async def wait_for(present: bool) -> None:
        for _ in range(100):
            if (name in await names()) == present:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{name} {'never appeared' if present else 'never went away'}")

    assert name not in await names()
    docker_client.images.get(DEBIAN_IMAGE).tag(ref)
    try:
        await wait_for(True)
    finally:
        docker_client.images.remove(ref)
    await wait_for(False)


@pytest.mark.server_config(
    lambda tmp: {
        "ContainerPolicy": {"allowed_mount_roots": [str(tmp / "raid" / "public")]},
        "ContainerProvisioner": {
            "extra_mounts": [
                {"source": str(tmp / "raid" / "public" / "my_datasets"), "target": "/data/datasets"}
            ]
        },
    }
)
async def test_extra_mounts_are_read_only_and_inside_allowed_roots(
    jp_fetch: Any, jp_ws_fetch: Any, tmp_path: Any
) -> None:
    datasets = tmp_path / "raid" / "public" / "my_datasets"
    datasets.mkdir(parents=True)
    (datasets / "train.csv").write_text("a,b\n1,2\n")
    kernel_id = await start_kernel(jp_fetch, DEBIAN_IMAGE)
    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
    result = await execute(
        ws,
        "print(open('/data/datasets/train.csv').read().splitlines()[1])\n"
        "open('/data/datasets/new.csv', 'w')",
    )
    ws.close()
    assert result.stdout.strip() == "1,2"
    assert result.ename in ("OSError", "PermissionError")
    assert "Read-only file system" in result.evalue
    # The panel's "Your kernels" says what data the kernel sees (the Docker engine gives
    # none of its own: the extra mounts are all).
    (listed,) = json.loads((await jp_fetch("gpu-containers", "kernels")).body)["kernels"]
    assert listed["datasets"] == [
        {
            "name": "my_datasets",
            "target": "/data/datasets",
            "read_only": True,
            "source": str(datasets),
        }
    ]


@pytest.mark.server_config(
    lambda tmp: {
        "ContainerProvisioner": {"extra_mounts": [{"source": str(tmp / "secrets"), "target": "/s"}]}
    }
)
async def test_mount_outside_allowed_roots_is_refused(
    jp_fetch: Any, tmp_path: Any, docker_client: Any
) -> None:
    (tmp_path / "secrets").mkdir()
    with pytest.raises(HTTPClientError) as info:
        await start_kernel(jp_fetch, DEBIAN_IMAGE)
    assert info.value.code == 403
    assert (
        "outside the directories allowed for mounts"
        in json.loads(info.value.response.body)["message"]
    )
    assert_no_test_containers(docker_client)


async def test_status_endpoint(jp_fetch: Any) -> None:
    response = await jp_fetch("gpu-containers", "status")
    status = json.loads(response.body)
    assert status["engine"]["ok"] is True
    assert status["engine"]["version"]
    # The three kernel-ready test images are offered whatever the probes have found so far (the
    # fourth, without ipykernel, only until its probe answers: not counted on).
    assert status["kernelspecs"] >= 3
