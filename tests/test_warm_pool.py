"""The warm pool: kernel containers started ahead of demand and handed to kernels that get no
GPUs. Real engine, real images: a handed-over kernel must be indistinguishable from one started
cold, and whatever the pool cannot serve exactly (GPUs, other options, a re-tagged image, a broken
container) starts cold as before."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import (
    CONDA_IMAGE,
    DEBIAN_IMAGE,
    NGC_IMAGE,
    TEST_LABEL,
    TEST_RUN,
    assert_no_test_containers,
    install_spec,
    kernel_container,
    kernel_name,
)
from conftest import test_containers as containers_of_this_run
from jupyter_client.manager import start_new_async_kernel
from kernel_io import collect, execute, execute_in, json_output, send_execute, start_kernel
from servers import Server, write_server_config
from test_server_process import USER, servers, user_home  # noqa: F401 (fixtures)

from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.kernel.warmpool import CLAIM_FILE_NAME, WarmPool, handover_code
from jupyter_gpu_containers.services import services_for

pytestmark = pytest.mark.usefixtures("docker_client")

POOL_RETAG = f"jgc-test/pool:{TEST_RUN}"


def warm_pool_config(*images: str) -> pytest.MarkDecorator:
    # check_interval: only the launches themselves check the warm containers here, so that a
    # test can break one before a launch meets it.
    return pytest.mark.server_config(
        lambda _: {
            "WarmPool": {
                "size": 1,
                "images": list(images or [DEBIAN_IMAGE]),
                "check_interval": 3600,
            }
        }
    )


@pytest.fixture
def warm_pool(jp_serverapp: Any, jp_asyncio_loop: Any) -> WarmPool:
    """The server's extensions started as a running server starts them (recovery, then the warm
    pool); pytest-jupyter's server does not run that step by itself."""
    jp_asyncio_loop.run_until_complete(jp_serverapp.extension_manager.start_all_extensions())
    services = services_for(jp_serverapp)
    pool = services.warm_pool if services else None
    assert pool is not None, "the warm pool did not start"
    return pool


def pool_containers(client: docker.DockerClient, pool_id: str = "") -> list[Any]:
    """Running warm containers of this test run (of one pool, when given)."""
    wanted = f"{L.POOL}={pool_id}" if pool_id else L.POOL
    return client.containers.list(
        ignore_removed=True, filters={"label": [wanted, f"{TEST_LABEL}={TEST_RUN}"]}
    )


async def eventually(condition: Callable[[], Any], what: str, timeout: float = 90) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s")
        await asyncio.sleep(0.1)


async def warm_container(
    pool: WarmPool, client: docker.DockerClient, image: str = DEBIAN_IMAGE, other_than: str = ""
) -> Any:
    """The pool's warm container of ``image`` once it is ready (another than ``other_than``)."""

    def ready() -> Any:
        if not pool.has_ready(image):
            return None
        found = [
            c
            for c in pool_containers(client, pool.pool_id)
            if c.labels[L.IMAGE] == image and c.id != other_than
        ]
        return found[0] if found else None

    return await eventually(ready, f"a warm container of {image}")


def gone(client: docker.DockerClient, container_id: str) -> bool:
    try:
        client.containers.get(container_id)
    except docker.errors.NotFound:
        return True
    return False


async def start_session(jp_fetch: Any, path: str, image: str = DEBIAN_IMAGE) -> str:
    body = {
        "path": path,
        "type": "notebook",
        "name": os.path.basename(path),
        "kernel": {"name": kernel_name(image)},
    }
    response = await jp_fetch("api", "sessions", method="POST", body=json.dumps(body))
    return str(json.loads(response.body)["kernel"]["id"])


def provisioner_of(serverapp: Any, kernel_id: str) -> Any:
    return serverapp.kernel_manager.get_kernel(kernel_id).provisioner


# Everything of a kernel a notebook could tell apart: who, where, what environment, what path,
# what namespace and history.
FACTS = """
import json, os, sys
shell = get_ipython()
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
    "umask": os.umask(os.umask(0o22)),
    "cwd": os.getcwd(),
    "env": dict(os.environ),
    "sys_path": sys.path,
    "dh": [str(p) for p in shell.user_ns["_dh"]],
    "session": shell.user_ns.get("__session__"),
    "names": sorted(n for n in shell.user_ns if not n.startswith("_")),
    "execution_count": shell.execution_count,
    "home_writable": os.access(os.environ.get("HOME", "/"), os.W_OK),
}))
"""


async def facts(jp_ws_fetch: Any, kernel_id: str) -> dict[str, Any]:
    return await json_output(jp_ws_fetch, kernel_id, FACTS)


@warm_pool_config()
async def test_a_session_takes_the_warm_container_and_cannot_tell(
    warm_pool: WarmPool,
    jp_fetch: Any,
    jp_ws_fetch: Any,
    jp_root_dir: Path,
    jp_serverapp: Any,
    docker_client: Any,
) -> None:
    warm = await warm_container(warm_pool, docker_client)
    # Made after the warm container: the workspace is mounted live.
    (jp_root_dir / "course" / "week1").mkdir(parents=True)
    # Made as a kernel of this server is, but started outside the workspace (see provisioner).
    assert warm.labels[TEST_LABEL] == TEST_RUN
    assert warm.attrs["Config"]["WorkingDir"] == "/run/jupyter-kernel"
    assert warm.attrs["Config"]["User"] == f"{os.getuid()}:{os.getgid()}"

    kernel_id = await start_session(jp_fetch, "course/week1/lab.ipynb")
    provisioner = provisioner_of(jp_serverapp, kernel_id)
    assert provisioner.container_id == warm.id, "the warm container was not handed over"
    assert list(provisioner.launch_phases()) == ["prepare", "image", "handover", "ready"]
    # The kernel manager signs with the warm kernel's key, recorded in its private directory,
    # and the claim record names the kernel it serves now.
    conn_dir = Path(warm.labels[L.CONNECTION_DIR])
    key = json.loads((conn_dir / "kernel.json").read_text())["key"]
    assert jp_serverapp.kernel_manager.get_kernel(kernel_id).session.key == key.encode()
    claim = json.loads((conn_dir / CLAIM_FILE_NAME).read_text())
    assert claim["kernel_id"] == kernel_id
    assert claim["notebook"] == "course/week1/lab.ipynb"
    assert claim["kernel_name"] == kernel_name(DEBIAN_IMAGE)
    model = json.loads((await jp_fetch("api", "kernels", kernel_id)).body)
    assert (model["id"], model["name"]) == (kernel_id, kernel_name(DEBIAN_IMAGE))

    warm_facts = await facts(jp_ws_fetch, kernel_id)
    assert (warm_facts["uid"], warm_facts["gid"]) == (os.getuid(), os.getgid())
    assert warm_facts["cwd"] == "/workspace/course/week1"
    # Neither the start directory nor the notebook's is on sys.path as itself: the "" IPython
    # adds, after the standard library, is the working directory (policy/command.py's KERNEL_BOOT).
    assert "" in warm_facts["sys_path"]
    assert not {"/workspace/course/week1", "/run/jupyter-kernel"} & set(warm_facts["sys_path"])
    assert warm_facts["dh"] == ["/workspace/course/week1"]
    assert warm_facts["env"]["PWD"] == "/workspace/course/week1"
    assert warm_facts["env"]["JPY_SESSION_NAME"] == "/workspace/course/week1/lab.ipynb"
    # The images' ipykernel (6.17) does not set __session__ at start, so neither does the
    # handover (test_the_handover_sets_session_where_ipykernel_does covers one that does).
    assert warm_facts["session"] is None
    assert warm_facts["env"]["NVIDIA_VISIBLE_DEVICES"] == "void"  # no GPU, as a cold CPU kernel
    result = await execute_in(jp_ws_fetch, kernel_id, "open('result.txt', 'w').write('warm')")
    assert result.status == "ok"
    written = jp_root_dir / "course" / "week1" / "result.txt"
    assert (written.stat().st_uid, written.stat().st_gid) == (os.getuid(), os.getgid())

    # The pool starts a replacement.
    replacement = await warm_container(warm_pool, docker_client, other_than=warm.id)
    assert replacement.id != warm.id

    # A cold kernel of a notebook in the same directory: the same facts, but for the names.
    await warm_pool.stop()
    assert gone(docker_client, replacement.id)
    cold_id = await start_session(jp_fetch, "course/week1/other.ipynb")
    assert list(provisioner_of(jp_serverapp, cold_id).launch_phases())[-1] == "ready"
    assert provisioner_of(jp_serverapp, cold_id).container_id != warm.id
    cold_facts = await facts(jp_ws_fetch, cold_id)
    for found in (warm_facts, cold_facts):
        found["env"].pop("HOSTNAME")
        found["env"].pop("JPY_SESSION_NAME")
    assert warm_facts == cold_facts


@warm_pool_config(DEBIAN_IMAGE, NGC_IMAGE)
async def test_kernels_that_get_gpus_never_take_a_warm_container(
    warm_pool: WarmPool, jp_fetch: Any, docker_client: Any
) -> None:
    warm = await warm_container(warm_pool, docker_client)
    # The GPU build's kernels get a GPU by default on this host: it is not kept warm at all.
    assert {c.labels[L.IMAGE] for c in pool_containers(docker_client)} == {DEBIAN_IMAGE}

    # A notebook that asks for a GPU, on the image that is kept warm.
    body = {"path": "gpu.ipynb", "gpus": 1, "kernel_name": kernel_name(DEBIAN_IMAGE)}
    response = await jp_fetch(
        "gpu-containers", "notebooks", "kernel", method="POST", body=json.dumps(body)
    )
    kernel_id = json.loads(response.body)["session"]["kernel"]["id"]
    container = kernel_container(docker_client, kernel_id)
    assert container.id != warm.id
    assert container.labels[L.GPUS] == "GPU-test-0"
    assert L.POOL not in container.labels

    # The spec's default of a GPU image: one GPU, a container of its own.
    gpu_default = await start_kernel(jp_fetch, kernel_name(NGC_IMAGE))
    assert kernel_container(docker_client, gpu_default).labels[L.GPUS] == "GPU-test-1"
    assert warm_pool.has_ready(DEBIAN_IMAGE)
    assert [c.id for c in pool_containers(docker_client)] == [warm.id]


@warm_pool_config()
async def test_other_container_options_need_a_container_of_their_own(
    warm_pool: WarmPool,
    jp_fetch: Any,
    jp_data_dir: Path,
    jp_serverapp: Any,
    docker_client: Any,
) -> None:
    warm = await warm_container(warm_pool, docker_client)
    big_shm = install_spec(jp_data_dir, "debian-big-shm", DEBIAN_IMAGE, shm_size="2g")
    kernel_id = await start_kernel(jp_fetch, big_shm)
    container = kernel_container(docker_client, kernel_id)
    assert container.id != warm.id
    assert container.attrs["HostConfig"]["ShmSize"] == 2 * 2**30
    assert warm_pool.has_ready(DEBIAN_IMAGE)

    # Another kernel spec whose containers are made alike (only its name differs) is served,
    # and its kernel keeps its own spec's name.
    alike = install_spec(jp_data_dir, "debian-alike", DEBIAN_IMAGE)
    alike_id = await start_kernel(jp_fetch, alike)
    assert provisioner_of(jp_serverapp, alike_id).container_id == warm.id
    claim = Path(warm.labels[L.CONNECTION_DIR]) / CLAIM_FILE_NAME
    assert json.loads(claim.read_text())["kernel_name"] == alike
    model = json.loads((await jp_fetch("api", "kernels", alike_id)).body)
    assert model["name"] == alike


@warm_pool_config()
@pytest.mark.server_config(lambda _: {"ContainerProvisioner": {"transport": "tcp"}})
async def test_a_warm_kernel_over_tcp(
    warm_pool: WarmPool, jp_fetch: Any, jp_ws_fetch: Any, jp_serverapp: Any, docker_client: Any
) -> None:
    warm = await warm_container(warm_pool, docker_client)
    kernel_id = await start_kernel(jp_fetch, kernel_name(DEBIAN_IMAGE))
    assert provisioner_of(jp_serverapp, kernel_id).container_id == warm.id
    # The kernel manager now talks to the warm kernel's published ports (loopback only).
    km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    published = {
        int(binding["HostPort"])
        for bindings in warm.attrs["HostConfig"]["PortBindings"].values()
        for binding in bindings
    }
    assert {km.shell_port, km.iopub_port, km.stdin_port, km.control_port, km.hb_port} == published
    assert (await execute_in(jp_ws_fetch, kernel_id, "print(6 * 7)")).stdout.strip() == "42"


@pytest.fixture
def retagged_ref(docker_client: docker.DockerClient) -> Iterator[str]:
    """POOL_RETAG naming the Debian image; the test tags another image onto it."""
    docker_client.images.get(DEBIAN_IMAGE).tag(POOL_RETAG)
    yield POOL_RETAG
    docker_client.images.remove(POOL_RETAG)


@warm_pool_config(POOL_RETAG)
async def test_a_warm_container_of_a_retagged_image_is_never_handed_over(
    retagged_ref: str, warm_pool: WarmPool, jp_fetch: Any, docker_client: Any
) -> None:
    warm = await warm_container(warm_pool, docker_client, image=retagged_ref)
    assert warm.image.id == docker_client.images.get(DEBIAN_IMAGE).id
    conda = docker_client.images.get(CONDA_IMAGE)
    conda.tag(retagged_ref)  # a pull of a new version, say

    kernel_id = await start_kernel(jp_fetch, kernel_name(retagged_ref))
    container = kernel_container(docker_client, kernel_id)
    assert container.id != warm.id
    assert container.image.id == conda.id
    await eventually(lambda: gone(docker_client, warm.id), "the stale warm container's removal")


@warm_pool_config()
async def test_a_broken_warm_container_is_replaced_by_a_cold_start(
    warm_pool: WarmPool,
    jp_fetch: Any,
    jp_ws_fetch: Any,
    jp_serverapp: Any,
    docker_client: Any,
) -> None:
    warm = await warm_container(warm_pool, docker_client)
    warm.kill()
    kernel_id = await start_kernel(jp_fetch, kernel_name(DEBIAN_IMAGE))
    provisioner = provisioner_of(jp_serverapp, kernel_id)
    assert provisioner.container_id not in (None, warm.id)
    phases = list(provisioner.launch_phases())
    assert phases == ["prepare", "image", "pool", "gpus", "create", "start", "ready"]
    assert (await execute_in(jp_ws_fetch, kernel_id, "print(6 * 7)")).stdout.strip() == "42"
    await eventually(lambda: gone(docker_client, warm.id), "the broken warm container's removal")


@warm_pool_config()
async def test_a_warm_kernel_interrupts_restarts_and_shuts_down_like_any(
    warm_pool: WarmPool,
    jp_fetch: Any,
    jp_ws_fetch: Any,
    jp_serverapp: Any,
    docker_client: Any,
) -> None:
    warm = await warm_container(warm_pool, docker_client)
    kernel_id = await start_kernel(jp_fetch, kernel_name(DEBIAN_IMAGE))
    assert provisioner_of(jp_serverapp, kernel_id).container_id == warm.id
    found = await facts(jp_ws_fetch, kernel_id)
    assert found["cwd"] == "/workspace"  # no session: the workspace, as a cold kernel
    assert "JPY_SESSION_NAME" not in found["env"]

    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
    assert (await execute(ws, "x = 41")).status == "ok"
    busy = await send_execute(ws, "while True:\n    pass", stop_on_error=False)
    await asyncio.sleep(0.5)
    await jp_fetch("api", "kernels", kernel_id, "interrupt", method="POST", body="")
    assert (await collect(ws, busy, timeout=20)).ename == "KeyboardInterrupt"
    assert (await execute(ws, "print(x + 1)")).stdout.strip() == "42"
    ws.close()

    # A restart is a cold start in a fresh container, labelled with the kernel's own id.
    await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="")
    restarted = kernel_container(docker_client, kernel_id)
    assert restarted.id != warm.id
    assert L.POOL not in restarted.labels
    assert gone(docker_client, warm.id)
    assert (
        await execute_in(jp_ws_fetch, kernel_id, "print('x' in globals())")
    ).stdout.strip() == "False"

    await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert gone(docker_client, restarted.id)
    assert not os.path.exists(warm.labels[L.CONNECTION_DIR])
    # Left: the pool's replacement, removed when the server stops (the leak check), and the
    # readiness probes the server may be running in the background.
    left = [c for c in containers_of_this_run(docker_client) if L.PROBE not in c.labels]
    assert all(L.POOL in c.labels for c in left), [c.name for c in left]


async def test_the_handover_sets_session_where_ipykernel_does(tmp_path: Path) -> None:
    """The handover code in this environment's ipykernel, which (unlike the test images' 6.17)
    sets __session__ from JPY_SESSION_NAME at start: the handover must do the same."""
    (tmp_path / "start").mkdir()
    (tmp_path / "nb").mkdir()
    km, kc = await start_new_async_kernel(kernel_name="python3", cwd=str(tmp_path / "start"))
    try:
        start_dir, cwd = str(tmp_path / "start"), str(tmp_path / "nb")
        reply = await kc.execute_interactive(
            handover_code(cwd=cwd, start=start_dir, session=f"{cwd}/x.ipynb"),
            silent=True,
            store_history=False,
            timeout=30,
        )
        assert reply["content"]["status"] == "ok", reply["content"]
        output: list[str] = []
        reply = await kc.execute_interactive(
            FACTS,
            output_hook=lambda m: output.append(m["content"].get("text", "")),
            timeout=30,
        )
        assert reply["content"]["execution_count"] == 1  # the handover request was silent
        found = json.loads("".join(output))
        assert found["session"] == f"{cwd}/x.ipynb"
        assert found["env"]["JPY_SESSION_NAME"] == f"{cwd}/x.ipynb"
        assert found["cwd"] == cwd
        # This ipykernel takes its start directory off sys.path: nothing to move there.
        assert start_dir not in found["sys_path"] and cwd not in found["sys_path"]
        assert found["dh"] == [cwd]
        assert "__jgc_hand_over" not in found["names"]
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


@pytest.mark.skipif(
    not USER or os.getuid() != 0,
    reason="needs root and JGC_TEST_USER (scripts/test.sh sets both up)",
)
async def test_a_restarted_server_reattaches_a_warm_kernel_by_its_claim(
    user_home: Path,  # noqa: F811
    servers: list[Server],  # noqa: F811
    docker_client: Any,
) -> None:
    entry = pwd.getpwnam(USER)
    workspace = user_home / "workspace"
    write_server_config(user_home, {"WarmPool": {"size": 1, "images": [DEBIAN_IMAGE]}})
    os.chown(user_home / "config" / "jupyter_server_config.json", entry.pw_uid, entry.pw_gid)
    (workspace / "work").mkdir()
    os.chown(workspace / "work", entry.pw_uid, entry.pw_gid)

    def start_server() -> Server:
        servers.append(Server(user_home, workspace, [], user=USER))
        return servers[-1]

    def warm_and_ready(server: Server, other_than: str = "") -> Any:
        """The server's warm container once its kernel answers (the server's log says so)."""
        found = [c for c in pool_containers(docker_client) if c.id != other_than]
        ready = [c for c in found if f"Warm pool: container {c.id[:12]}" in server.output()]
        return ready[0] if ready else None

    first = start_server()
    warm = await eventually(lambda: warm_and_ready(first), "a warm container")
    session = await first.open_notebook("work/nb.ipynb", kernel_name(DEBIAN_IMAGE))
    kernel_id = session["kernel"]["id"]
    where = "import os, socket\nprint(socket.gethostname(), os.getcwd(), os.getuid())"
    result = await first.execute(kernel_id, f"marker = 'state survives'\n{where}")
    assert result.stdout.split() == [warm.id[:12], "/workspace/work", str(entry.pw_uid)]
    replacement = await eventually(
        lambda: warm_and_ready(first, other_than=warm.id), "the warm container's replacement"
    )

    first.kill9()
    second = start_server()
    kernels = await second.call("GET", "api", "kernels")
    assert [k["id"] for k in kernels] == [kernel_id], second.output()
    assert kernels[0]["name"] == kernel_name(DEBIAN_IMAGE)
    result = await second.execute(kernel_id, f"print(marker)\n{where}")
    served_by = [warm.id[:12], "/workspace/work", str(entry.pw_uid)]
    assert result.stdout.split() == ["state", "survives", *served_by]
    # The old server's warm container that nobody claimed is gone; the new server has its own.
    assert gone(docker_client, replacement.id)
    await eventually(
        lambda: warm_and_ready(second, other_than=warm.id), "the restarted server's warm container"
    )

    # A restart after the reattach: the notebook's directory and session, from the claim.
    await second.call("POST", "api", "kernels", kernel_id, "restart", body={})
    result = await second.execute(
        kernel_id, "import os\nprint(os.getcwd(), os.environ.get('JPY_SESSION_NAME'))"
    )
    assert result.stdout.split() == ["/workspace/work", "/workspace/work/nb.ipynb"]

    # A server stopped for good removes its warm containers, and shuts its kernels down.
    second.stop()
    assert_no_test_containers(docker_client)
