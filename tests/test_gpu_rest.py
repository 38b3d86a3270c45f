"""The GPU REST API: holders (with privacy between users), allocations, and applying a
notebook's GPU request to its kernel (the request itself lives in the notebook: see
test_notebook_requests.py). Real engine, static GPUs (conftest)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import nvml_double
import pytest
from conftest import (
    DEBIAN_IMAGE,
    NGC_IMAGE,
    NVML_DOUBLE_CONFIG,
    STATIC_GPUS,
    TEST_IMAGE_LABEL,
    TEST_LABEL,
    TEST_RUN,
    install_spec,
    kernel_container,
    kernel_name,
    write_notebook,
)
from kernel_io import execute, send_execute
from ledger_records import record_booking
from tornado.httpclient import HTTPClientError

from jupyter_gpu_containers.base import labels as L

pytestmark = pytest.mark.usefixtures("docker_client")


async def get(jp_fetch: Any, *path: str) -> Any:
    return json.loads((await jp_fetch("gpu-containers", *path)).body)


async def notebook_state(jp_fetch: Any, path: str) -> Any:
    response = await jp_fetch("gpu-containers", "notebooks", "kernel", params={"path": path})
    return json.loads(response.body)


async def sessions_of(jp_fetch: Any, path: str) -> list[Any]:
    sessions = json.loads((await jp_fetch("api", "sessions")).body)
    return [s for s in sessions if s["path"] == path]


def containers_of(docker_client: Any, kernel_id: str) -> list[Any]:
    return list(
        docker_client.containers.list(
            ignore_removed=True, all=True, filters={"label": f"{L.KERNEL_ID}={kernel_id}"}
        )
    )


async def open_session(jp_fetch: Any, path: str, kernel: str) -> Any:
    """Open a notebook's kernel as JupyterLab does, through the stock sessions API."""
    body = {
        "path": path,
        "type": "notebook",
        "name": path.split("/")[-1],
        "kernel": {"name": kernel},
    }
    response = await jp_fetch("api", "sessions", method="POST", body=json.dumps(body))
    return json.loads(response.body)


async def post_request(jp_fetch: Any, body: dict[str, Any]) -> Any:
    response = await jp_fetch(
        "gpu-containers", "notebooks", "kernel", method="POST", body=json.dumps(body)
    )
    return json.loads(response.body)


async def devices_seen(jp_ws_fetch: Any, kernel_id: str) -> str:
    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
    try:
        result = await execute(ws, "import os; print(os.environ['NVIDIA_VISIBLE_DEVICES'])")
    finally:
        ws.close()
    return result.stdout.strip()


@pytest.fixture
def alice_holds_gpu_3(docker_client: Any, tmp_path: Path) -> Iterator[None]:
    """Another user's kernel, from another host's view of the engine (so its server cannot be
    judged dead): it books GPU 3 in the shared ledger (its labels, and the record its server
    wrote: ledger_records.py)."""
    container = docker_client.containers.create(
        DEBIAN_IMAGE,
        "sleep 300",
        labels={
            TEST_LABEL: TEST_RUN,
            L.MANAGED: "true",
            L.KERNEL_ID: "alice-kernel-id",
            L.GPUS: "GPU-test-3",
            L.UID: "4242",
            L.USER: "alice",
            L.NOTEBOOK: "thesis/secret.ipynb",
            L.IMAGE: NGC_IMAGE,
            L.SERVER_ID: "alice-server",
            L.OWNER_PROCESS: "another-host/boot/1/1",
        },
    )
    record_booking(tmp_path / "state", container.id, "GPU-test-3", "4242", "alice-kernel-id")
    yield
    container.remove(force=True)


async def test_gpus_and_their_holders(
    alice_holds_gpu_3: None, jp_fetch: Any, jp_root_dir: Path
) -> None:
    report = await get(jp_fetch, "gpus")
    assert report["source"] == "static" and report["policy"] == "exclusive"
    assert [g["uuid"] for g in report["gpus"]] == [f"GPU-test-{i}" for i in range(4)]
    # A static inventory does not know the memory in use: null, not 0 (which read "0 B used").
    assert {g["memory_used"] for g in report["gpus"]} == {None}
    alice = report["gpus"][3]["holders"]
    # Another user's holding: taken, but nothing about it (not even the kernel id).
    assert [(h["mine"], h["kernel_id"], h["user"], h["notebook"]) for h in alice] == [
        (False, "", "", "")
    ]

    (jp_root_dir / "work").mkdir()
    model = await post_request(
        jp_fetch, {"path": "work/mine.ipynb", "kernel_name": kernel_name(NGC_IMAGE), "gpus": 1}
    )
    kernel_id = model["session"]["kernel"]["id"]
    mine = (await get(jp_fetch, "gpus"))["gpus"][0]["holders"]
    assert [(h["mine"], h["kernel_id"], h["notebook"], h["image"]) for h in mine] == [
        (True, kernel_id, "work/mine.ipynb", NGC_IMAGE)
    ]
    allocations = (await get(jp_fetch, "allocations"))["allocations"]
    assert [(a["kernel_id"], [g["index"] for g in a["gpus"]]) for a in allocations] == [
        (kernel_id, ["0"])
    ]


@pytest.mark.server_config(lambda _: {"GPUVisibility": {"show_other_users": True}})
async def test_admin_may_show_other_users(alice_holds_gpu_3: None, jp_fetch: Any) -> None:
    alice = (await get(jp_fetch, "gpus"))["gpus"][3]["holders"][0]
    assert (alice["user"], alice["notebook"], alice["kernel_id"]) == (
        "alice",
        "thesis/secret.ipynb",
        "",
    )


async def test_notebook_request_survives_restart_and_reopening(
    jp_fetch: Any, jp_ws_fetch: Any, jp_root_dir: Path, docker_client: Any
) -> None:
    # The notebook asks for 2 GPUs in its metadata: the stock sessions API gives it 2.
    write_notebook(jp_root_dir, "lab.ipynb", gpus=2)
    opened = await open_session(jp_fetch, "lab.ipynb", kernel_name(NGC_IMAGE))
    kernel_id = opened["kernel"]["id"]
    assert await devices_seen(jp_ws_fetch, kernel_id) == "GPU-test-0,GPU-test-1"

    await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="")
    assert await devices_seen(jp_ws_fetch, kernel_id) == "GPU-test-0,GPU-test-1"

    # A request that cannot be met is refused before the running kernel is touched.
    with pytest.raises(HTTPClientError) as info:
        await post_request(jp_fetch, {"path": "lab.ipynb", "gpus": 5})
    assert info.value.code == 409
    assert await devices_seen(jp_ws_fetch, kernel_id) == "GPU-test-0,GPU-test-1"

    # Change the count: the same kernel restarts with one GPU, and the page saves the request
    # in the notebook, as the panel does.
    model = await post_request(jp_fetch, {"path": "lab.ipynb", "gpus": 1})
    assert model["session"]["kernel"]["id"] == kernel_id
    assert await devices_seen(jp_ws_fetch, kernel_id) == "GPU-test-0"
    write_notebook(jp_root_dir, "lab.ipynb", gpus=1)

    # Close the notebook, and reopen it next week through the stock sessions API.
    session_id = model["session"]["id"]
    await jp_fetch("api", "sessions", session_id, method="DELETE")
    reopened = await open_session(jp_fetch, "lab.ipynb", kernel_name(NGC_IMAGE))
    assert await devices_seen(jp_ws_fetch, reopened["kernel"]["id"]) == "GPU-test-0"

    # Switch the notebook to a CPU image: its default is no GPU, and the GPU is freed.
    switched = await post_request(
        jp_fetch, {"path": "lab.ipynb", "kernel_name": kernel_name(DEBIAN_IMAGE), "gpus": None}
    )
    assert switched["session"]["kernel"]["name"] == kernel_name(DEBIAN_IMAGE)
    assert await devices_seen(jp_ws_fetch, switched["session"]["kernel"]["id"]) == "void"
    assert (await get(jp_fetch, "allocations"))["allocations"] == []
    assert kernel_container(docker_client, switched["session"]["kernel"]["id"]).labels[L.GPUS] == ""


async def test_gpu_change_in_place_reconnects_the_pages(
    jp_fetch: Any, jp_ws_fetch: Any, jp_root_dir: Path
) -> None:
    """A restart the server makes for new GPUs keeps the kernel's ports, so an open websocket would
    stay attached and show the new kernel's "starting" for good: it is closed with 1012 (Service
    Restart) instead, and JupyterLab reconnects."""
    (jp_root_dir / "page.ipynb").write_text("{}")
    body = {"path": "page.ipynb", "kernel_name": kernel_name(NGC_IMAGE), "gpus": 1}
    kernel_id = (await post_request(jp_fetch, body))["session"]["kernel"]["id"]
    page = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
    bystander = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
    try:
        assert (await execute(page, "print('before')")).stdout == "before\n"

        await post_request(jp_fetch, {"path": "page.ipynb", "gpus": 2})
        for ws in (page, bystander):
            while await asyncio.wait_for(ws.read_message(), 10) is not None:
                pass  # what the old kernel said last, then the close
            assert ws.close_code == 1012
            assert "restarted" in (ws.close_reason or "")
    finally:
        page.close()
        bystander.close()
    assert await devices_seen(jp_ws_fetch, kernel_id) == "GPU-test-0,GPU-test-1"


async def test_a_kernel_its_restarter_brings_back_keeps_its_gpus(
    jp_fetch: Any, jp_ws_fetch: Any, jp_root_dir: Path, docker_client: Any
) -> None:
    """A kernel started with a request the extension's endpoint gave, whose container then ends:
    jupyter_client's restarter starts it again, and the restart keeps exactly its GPUs (a restart
    that took a request again would book another GPU, the old container still holding this
    one)."""
    (jp_root_dir / "crashes.ipynb").write_text("{}")
    body = {"path": "crashes.ipynb", "kernel_name": kernel_name(NGC_IMAGE), "gpus": 1}
    kernel_id = (await post_request(jp_fetch, body))["session"]["kernel"]["id"]
    assert await devices_seen(jp_ws_fetch, kernel_id) == "GPU-test-0"
    first = kernel_container(docker_client, kernel_id).id
    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
    try:
        await send_execute(ws, "import os; os._exit(3)")
    finally:
        ws.close()
    # Until the restarter's new container runs (a wait with a generous limit, not a timing).
    for _ in range(600):
        running = [
            c.id
            for c in containers_of(docker_client, kernel_id)
            if c.status == "running" and c.id != first
        ]
        if running:
            break
        await asyncio.sleep(0.1)
    assert running, "the restarter did not start the kernel again within a minute"
    assert docker_client.containers.get(running[0]).labels[L.GPUS] == "GPU-test-0"
    assert await devices_seen(jp_ws_fetch, kernel_id) == "GPU-test-0"


# A second GPU image (another kernel spec): the NGC-like one with a label of its own.
OTHER_GPU_IMAGE = f"jgc-test/ngc-like-other:{TEST_RUN}"


@pytest.fixture(scope="module")
def other_gpu_image(docker_client: Any) -> Iterator[str]:
    """Built before the server starts (list it before jp_fetch), so its first listing has it.
    Module-scoped so that it is removed after the servers' clean-up has removed the kernels that
    ran on it (before that, `docker rmi -f` would only untag it)."""
    dockerfile = f"FROM {NGC_IMAGE}\nLABEL {TEST_IMAGE_LABEL}={TEST_RUN}\n"
    docker_client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag=OTHER_GPU_IMAGE, rm=True, forcerm=True
    )
    try:
        yield OTHER_GPU_IMAGE
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(OTHER_GPU_IMAGE, force=True)


async def test_notebook_kernel_state(jp_fetch: Any, jp_root_dir: Path) -> None:
    (jp_root_dir / "work").mkdir()
    assert await notebook_state(jp_fetch, "work/nb.ipynb") == {
        "path": "work/nb.ipynb",
        "request": None,
        "request_problem": "",
        "default": None,
        "kernel": None,
        "stamp": None,
        "retired": None,
    }
    started = await post_request(
        jp_fetch, {"path": "work/nb.ipynb", "kernel_name": kernel_name(NGC_IMAGE), "gpus": [1, 3]}
    )
    # The page saves the request in the notebook; the state reads it from there.
    write_notebook(jp_root_dir, "work/nb.ipynb", gpus=[1, 3])
    state = await notebook_state(jp_fetch, "work/nb.ipynb")
    kernel = state.pop("kernel")
    assert state == {
        "path": "work/nb.ipynb",
        "request": ["1", "3"],
        "request_problem": "",
        "default": 1,
        "stamp": None,  # (the page writes it once the kernel runs: test_environment_stamp.py)
        "retired": None,  # (test_retired_images.py)
    }
    assert kernel.pop("execution_state") in ("starting", "idle", "busy")
    # What it runs on, the notebook's stamp to be (images/environment.py): its GPUs' names.
    environment = kernel.pop("environment")
    assert environment["image"] == NGC_IMAGE and environment["gpus"] == ["Tesla T4"] * 2
    assert environment["framework"] == "PyTorch" and kernel.pop("pinned") == ""
    assert kernel == {
        "id": started["session"]["kernel"]["id"],
        "name": kernel_name(NGC_IMAGE),
        "image": NGC_IMAGE,
        "display_name": f"PyTorch 24.05 · {NGC_IMAGE}",
        "gpus": [{"uuid": "GPU-test-1", "index": "1"}, {"uuid": "GPU-test-3", "index": "3"}],
    }
    # Back to the spec's default: the notebook says nothing, one GPU.
    await post_request(jp_fetch, {"path": "work/nb.ipynb", "gpus": None})
    write_notebook(jp_root_dir, "work/nb.ipynb")
    state = await notebook_state(jp_fetch, "work/nb.ipynb")
    assert (state["request"], state["default"]) == (None, 1)
    assert [g["uuid"] for g in state["kernel"]["gpus"]] == ["GPU-test-0"]

    for query, says in [
        ({}, "notebook's path"),
        ({"path": "nb.py"}, "notebook's path"),
        ({"path": "../outside.ipynb"}, "outside the workspace"),
    ]:
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch("gpu-containers", "notebooks", "kernel", params=query)
        assert info.value.code == 400 and info.value.response is not None
        assert says in json.loads(info.value.response.body)["message"]


@pytest.mark.server_config(lambda _: {"GPUInventory": {"static_gpus": STATIC_GPUS[:2]}})
async def test_switch_frees_the_notebooks_gpus_first(
    other_gpu_image: str,
    jp_fetch: Any,
    jp_ws_fetch: Any,
    jp_root_dir: Path,
    docker_client: Any,
) -> None:
    """The notebook's kernel holds both GPUs of the host: switching it to another GPU image
    must not fail for want of the GPUs that the switch itself frees."""
    (jp_root_dir / "switch.ipynb").write_text("{}")
    first = await post_request(
        jp_fetch, {"path": "switch.ipynb", "kernel_name": kernel_name(NGC_IMAGE), "gpus": 2}
    )
    old_id = first["session"]["kernel"]["id"]
    assert await devices_seen(jp_ws_fetch, old_id) == "GPU-test-0,GPU-test-1"
    # Nothing is free for anyone else.
    with pytest.raises(HTTPClientError) as info:
        await post_request(
            jp_fetch, {"path": "other.ipynb", "kernel_name": kernel_name(NGC_IMAGE), "gpus": 1}
        )
    assert info.value.code == 409

    # A browser polls the sessions all along: the notebook's session must never vanish (it
    # would drop its connection to the session and show no kernel).
    seen: list[list[str]] = []
    switching = asyncio.ensure_future(
        post_request(
            jp_fetch,
            {"path": "switch.ipynb", "kernel_name": kernel_name(other_gpu_image), "gpus": 2},
        )
    )
    while not switching.done():
        seen.append([s["id"] for s in await sessions_of(jp_fetch, "switch.ipynb")])
        await asyncio.sleep(0.05)
    switched = await switching
    assert len(seen) > 3 and all(ids == [first["session"]["id"]] for ids in seen), seen
    session = switched["session"]
    new_id = session["kernel"]["id"]
    assert session["id"] == first["session"]["id"] and new_id != old_id
    assert session["kernel"]["name"] == kernel_name(other_gpu_image)
    assert containers_of(docker_client, old_id) == []
    # The request given reached the new kernel: both GPUs, not the spec's one.
    assert await devices_seen(jp_ws_fetch, new_id) == "GPU-test-0,GPU-test-1"
    assert kernel_container(docker_client, new_id).labels[L.GPUS] == "GPU-test-0,GPU-test-1"
    assert [s["kernel"]["id"] for s in await sessions_of(jp_fetch, "switch.ipynb")] == [new_id]
    state = await notebook_state(jp_fetch, "switch.ipynb")
    assert state["default"] == 1
    assert (state["kernel"]["id"], state["kernel"]["image"]) == (new_id, other_gpu_image)
    assert [g["index"] for g in state["kernel"]["gpus"]] == ["0", "1"]


async def test_check_only_starts_nothing(
    jp_fetch: Any, jp_root_dir: Path, docker_client: Any
) -> None:
    """start: false only checks that the request can be met now. The page then saves it in the
    notebook, and the next start of a kernel for the notebook through the stock sessions API
    (what JupyterLab does) reads it there."""
    write_notebook(jp_root_dir, "sub/later.ipynb")
    reply = await post_request(
        jp_fetch,
        {
            "path": "sub/later.ipynb",
            "kernel_name": kernel_name(NGC_IMAGE),
            "gpus": 2,
            "start": False,
        },
    )
    assert reply == {"session": None, "gpus": 2}
    assert await sessions_of(jp_fetch, "sub/later.ipynb") == []
    # Nothing kept on the server: the notebook says nothing yet.
    assert (await notebook_state(jp_fetch, "sub/later.ipynb"))["request"] is None
    with pytest.raises(HTTPClientError) as info:
        await post_request(
            jp_fetch,
            {
                "path": "sub/later.ipynb",
                "kernel_name": kernel_name(NGC_IMAGE),
                "gpus": 5,
                "start": False,
            },
        )
    assert info.value.code == 409
    write_notebook(jp_root_dir, "sub/later.ipynb", gpus=2)
    # As JupyterLab starts a notebook's kernel: a placeholder path beside the notebook, then a
    # rename to the notebook's path.
    placeholder = f"sub/{uuid.uuid4()}"
    created = json.loads(
        (
            await jp_fetch(
                "api",
                "sessions",
                method="POST",
                body=json.dumps(
                    {
                        "path": placeholder,
                        "name": "later.ipynb",
                        "type": "notebook",
                        "kernel": {"name": kernel_name(NGC_IMAGE)},
                    }
                ),
            )
        ).body
    )
    kernel_id = created["kernel"]["id"]
    assert kernel_container(docker_client, kernel_id).labels[L.GPUS] == "GPU-test-0,GPU-test-1"
    await jp_fetch("api", "sessions", created["id"], method="DELETE")
    with pytest.raises(HTTPClientError) as info:
        await post_request(jp_fetch, {"path": "sub/later.ipynb", "gpus": 1, "start": "no"})
    assert info.value.code == 400


async def test_failed_switch_leaves_the_notebook_without_a_session(
    jp_fetch: Any, jp_data_dir: Path, jp_root_dir: Path, docker_client: Any
) -> None:
    """The old kernel is shut down before the new one starts; when the new one cannot start,
    the launch's sentence comes back and no session names the dead kernel."""
    absent = install_spec(jp_data_dir, "absent", f"jgc-test/absent:{TEST_RUN}")
    (jp_root_dir / "gone.ipynb").write_text("{}")
    first = await post_request(
        jp_fetch, {"path": "gone.ipynb", "kernel_name": kernel_name(NGC_IMAGE), "gpus": 1}
    )
    old_id = first["session"]["kernel"]["id"]
    with pytest.raises(HTTPClientError) as info:
        await post_request(jp_fetch, {"path": "gone.ipynb", "kernel_name": absent, "gpus": 1})
    assert info.value.code == 404 and info.value.response is not None
    error = json.loads(info.value.response.body)
    assert error["reason"] == "Image not found"
    assert f"jgc-test/absent:{TEST_RUN} is not on this host" in error["message"]
    assert containers_of(docker_client, old_id) == []
    assert await sessions_of(jp_fetch, "gone.ipynb") == []
    state = await notebook_state(jp_fetch, "gone.ipynb")
    assert state["kernel"] is None
    assert (await get(jp_fetch, "allocations"))["allocations"] == []
    # The notebook can start again.
    again = await post_request(
        jp_fetch, {"path": "gone.ipynb", "kernel_name": kernel_name(NGC_IMAGE), "gpus": 1}
    )
    assert (await notebook_state(jp_fetch, "gone.ipynb"))["kernel"]["id"] == again["session"][
        "kernel"
    ]["id"]


@pytest.mark.parametrize(
    ("body", "code", "says"),
    [
        (
            {"path": "x.ipynb", "kernel_name": kernel_name(NGC_IMAGE), "gpus": -1},
            400,
            "a whole number from 0 to 1024",
        ),
        ({"path": "x.ipynb", "kernel_name": kernel_name(NGC_IMAGE), "gpus": "1.5"}, 400, "GPU"),
        ({"path": "../outside.ipynb", "gpus": 1, "kernel_name": "x"}, 400, "outside the workspace"),
        ({"path": "x.ipynb", "gpus": 1}, 400, "give kernel_name"),
        ({"path": "x.ipynb", "gpus": 1, "kernel_name": "no-such-spec"}, 404, "no kernel spec"),
        ({"path": "x.py", "gpus": 1}, 400, "notebook's path"),
    ],
)
async def test_bad_notebook_requests(
    body: dict[str, Any], code: int, says: str, jp_fetch: Any
) -> None:
    with pytest.raises(HTTPClientError) as info:
        await post_request(jp_fetch, body)
    assert info.value.response is not None
    assert info.value.code == code
    assert says in json.loads(info.value.response.body)["message"]


async def test_endpoints_need_authentication(jp_fetch: Any) -> None:
    for path, method in [
        ("gpus", "GET"),
        ("allocations", "GET"),
        ("status", "GET"),
        ("notebooks/kernel", "GET"),
        ("notebooks/kernel", "POST"),
    ]:
        response = await jp_fetch(
            "gpu-containers",
            *path.split("/"),
            method=method,
            body="{}" if method == "POST" else None,
            headers={"Authorization": "token not-the-token"},
            raise_error=False,
        )
        assert response.code == 403, path


@pytest.mark.server_config(lambda _: NVML_DOUBLE_CONFIG)
async def test_memory_per_kernel_from_gpu_processes(
    two_gpu_nvml_box: nvml_double.Box, jp_fetch: Any, docker_client: Any
) -> None:
    response = await jp_fetch(
        "api", "kernels", method="POST", body=json.dumps({"name": kernel_name(NGC_IMAGE)})
    )
    kernel_id = json.loads(response.body)["id"]
    # NVML reports host pids; the kernel container's own process must map back to its kernel.
    pid = kernel_container(docker_client, kernel_id).attrs["State"]["Pid"]
    two_gpu_nvml_box.devices[0].processes = [(pid, 3 * nvml_double.GiB), (1, 5 * nvml_double.GiB)]
    report = await get(jp_fetch, "gpus")
    assert report["source"] == "nvml" and report["driver_version"] == "535.104.05"
    (holder,) = report["gpus"][0]["holders"]
    assert (holder["kernel_id"], holder["memory_used"]) == (kernel_id, 3 * nvml_double.GiB)
