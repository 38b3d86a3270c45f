"""Idle GPUs given back, end to end: a real server with GPUReclaim on, kernels in real containers
on the NVML double's GPUs (tests/nvml_double.py), whose processes the double reports per GPU. A
kernel showing no GPU activity is warned, then loses its GPUs (restarted without them, or shut
down), and is told why; a kernel using its GPU keeps it. Short intervals through config."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import nvml_double
import pytest
import yaml
from conftest import (
    NGC_IMAGE,
    NVML_DOUBLE_CONFIG,
    PROBE_CACHE,
    TEST_LABEL,
    TEST_RUN,
    all_log_text,
    kernel_container,
    kernel_name,
)
from kernel_io import execute_in, start_kernel
from servers import Server, write_server_config
from test_openapi import KEEP, SPEC_PATH, Conformance, _StrictLoader

from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.routes.kernel_view import watched_kernels
from jupyter_gpu_containers.server.reclaimer import Reclaimer
from jupyter_gpu_containers.services import SETTINGS_KEY

pytestmark = pytest.mark.usefixtures("docker_client")

LIST = "/gpu-containers/kernels"
KERNEL = "/gpu-containers/kernels/{kernel_id}"
IDLE_MINUTES = 0.03  # 1.8 s
GRACE_MINUTES = 0.05  # 3 s


def reclaim_config(action: str) -> Callable[[Any], dict[str, Any]]:
    return lambda _: {
        **NVML_DOUBLE_CONFIG,
        "GPUUsage": {"interval": 0.1, "history_seconds": 60},
        "GPUReclaim": {
            "enabled": True,
            "idle_minutes": IDLE_MINUTES,
            "grace_minutes": GRACE_MINUTES,
            "check_interval": 0.2,
            "action": action,
        },
    }


@contextlib.asynccontextmanager
async def reclaiming(serverapp: Any) -> AsyncIterator[Reclaimer]:
    """What the extension's start does for the in-process test server (which pytest-jupyter
    never starts): sample the kernels' GPU use and run the reclaimer; stopped afterwards as the
    extension's stop stops it."""
    services = serverapp.web_app.settings[SETTINGS_KEY]
    mkm = serverapp.kernel_manager
    services.usage.start(lambda: watched_kernels(mkm))
    reclaimer = Reclaimer(services, mkm, serverapp.log)
    assert reclaimer.start()
    try:
        yield reclaimer
    finally:
        await reclaimer.stop()


@pytest.fixture(scope="module")
def conformance() -> Conformance:
    with SPEC_PATH.open(encoding="utf-8") as f:
        return Conformance(yaml.load(f, Loader=_StrictLoader))


async def listing(jp_fetch: Any, conformance: Conformance) -> Any:
    return conformance.check(await jp_fetch("gpu-containers", "kernels"), LIST, "get")


async def row_of(jp_fetch: Any, conformance: Conformance, kernel_id: str) -> Any:
    rows = (await listing(jp_fetch, conformance))["kernels"]
    return next((r for r in rows if r["kernel_id"] == kernel_id), None)


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 30) -> Any:
    """``check()``'s first truthy answer, asked every 0.1 s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout} s")


async def start_gpu_kernel(
    jp_fetch: Any, docker_client: docker.DockerClient, box: nvml_double.Box, utilization: int
) -> tuple[str, Any, nvml_double.Device]:
    """A kernel holding one of the double's GPUs, its process there at ``utilization``%."""
    kernel_id = await start_kernel(jp_fetch, kernel_name(NGC_IMAGE))
    container = kernel_container(docker_client, kernel_id)
    (held,) = container.labels[L.GPUS].split(",")
    device = next(d for d in box.devices if d.uuid == held)
    pid = container.attrs["State"]["Pid"]
    device.processes = [(pid, 2 * nvml_double.GiB)]
    device.process_util = {pid: utilization}
    return kernel_id, container, device


async def wait_warned(jp_fetch: Any, conformance: Conformance, kernel_id: str) -> Any:
    async def warned() -> Any:
        row = await row_of(jp_fetch, conformance, kernel_id)
        return row["reclaim"] if row and (row["reclaim"] or {}).get("state") == "warned" else None

    return await until(warned)


async def wait_reclaimed(jp_fetch: Any, conformance: Conformance, kernel_id: str) -> Any:
    """The kernel's row once its GPUs were reclaimed (it still runs: restarted without them)."""

    async def reclaimed() -> Any:
        row = await row_of(jp_fetch, conformance, kernel_id)
        reclaim = row["reclaim"] if row else None
        return row if reclaim and reclaim["state"] == "reclaimed" else None

    return await until(reclaimed, timeout=60)


@pytest.mark.server_config(reclaim_config("restart-without-gpus"))
async def test_an_idle_kernel_is_warned_then_restarted_without_its_gpus(
    two_gpu_nvml_box: nvml_double.Box,
    jp_fetch: Any,
    jp_ws_fetch: Any,
    jp_serverapp: Any,
    conformance: Conformance,
    docker_client: docker.DockerClient,
) -> None:
    async with reclaiming(jp_serverapp):
        with all_log_text() as lines:
            kernel_id, first, device = await start_gpu_kernel(
                jp_fetch, docker_client, two_gpu_nvml_box, utilization=0
            )
            warned = await wait_warned(jp_fetch, conformance, kernel_id)
            assert warned["action"] == "restart-without-gpus"
            assert warned["gpus"] == [device.uuid] and warned["release_at"] is not None
            assert "no GPU activity for" in warned["message"]
            assert "restarted without GPUs" in warned["message"]
            # Still holding its GPU while warned: the grace period.
            assert kernel_container(docker_client, kernel_id).id == first.id

            row = await wait_reclaimed(jp_fetch, conformance, kernel_id)
        assert row["gpus"] == []
        assert "GPUs were reclaimed after" in row["reclaim"]["message"]
        assert "without GPU activity" in row["reclaim"]["message"]
        # A new container, without GPUs; the old one is gone.
        second = kernel_container(docker_client, kernel_id)
        assert second.id != first.id and second.labels.get(L.GPUS, "") == ""
        # The kernel's own view and jupyter_server's model say why it was restarted.
        view = conformance.check(
            await jp_fetch("gpu-containers", "kernels", kernel_id), KERNEL, "get"
        )
        assert view["last_end"]["container_id"] == first.id
        assert "GPUs were reclaimed after" in view["last_end"]["reason"]
        assert view["reclaim"]["state"] == "reclaimed"
        model = json.loads((await jp_fetch("api", "kernels", kernel_id)).body)
        assert "GPUs were reclaimed after" in model["reason"]
        # It runs, without GPUs, and can ask for them again.
        result = await execute_in(jp_ws_fetch, kernel_id, "print(6 * 7)")
        assert result.status == "ok" and result.stdout.strip() == "42"
        text = "\n".join(lines)
        assert f"Kernel {kernel_id}" in text and "has shown no GPU activity for" in text
        assert "reclaimed after" in text and "restarted without GPUs" in text


@pytest.mark.server_config(reclaim_config("shutdown"))
async def test_an_idle_kernel_is_warned_then_shut_down(
    two_gpu_nvml_box: nvml_double.Box,
    jp_fetch: Any,
    jp_serverapp: Any,
    conformance: Conformance,
    docker_client: docker.DockerClient,
) -> None:
    async with reclaiming(jp_serverapp):
        kernel_id, first, _device = await start_gpu_kernel(
            jp_fetch, docker_client, two_gpu_nvml_box, utilization=0
        )
        warned = await wait_warned(jp_fetch, conformance, kernel_id)
        assert warned["action"] == "shutdown" and "shut down" in warned["message"]

        async def gone() -> Any:
            body = await listing(jp_fetch, conformance)
            if any(r["kernel_id"] == kernel_id for r in body["kernels"]):
                return None
            return body["reclaimed"]

        (record,) = await until(gone, timeout=60)
        assert record["kernel_id"] == kernel_id and record["state"] == "reclaimed"
        assert record["action"] == "shutdown"
        assert "GPUs were reclaimed after" in record["message"]
        assert "the kernel was shut down" in record["message"]
        kernels = json.loads((await jp_fetch("api", "kernels")).body)
        assert kernel_id not in [k["id"] for k in kernels]
        assert (
            docker_client.containers.list(ignore_removed=True, all=True, filters={"id": first.id})
            == []
        )


@pytest.mark.server_config(reclaim_config("shutdown"))
async def test_a_kernel_using_its_gpu_keeps_it_until_it_stops(
    two_gpu_nvml_box: nvml_double.Box,
    jp_fetch: Any,
    jp_serverapp: Any,
    conformance: Conformance,
    docker_client: docker.DockerClient,
) -> None:
    async with reclaiming(jp_serverapp):
        kernel_id, first, device = await start_gpu_kernel(
            jp_fetch, docker_client, two_gpu_nvml_box, utilization=60
        )
        # Longer than the idle time and the grace period together: never warned.
        deadline = time.monotonic() + (IDLE_MINUTES + GRACE_MINUTES) * 60 + 2
        states = []
        while time.monotonic() < deadline:
            row = await row_of(jp_fetch, conformance, kernel_id)
            assert row is not None, "the active kernel was shut down"
            if row["reclaim"] is not None:
                states.append(row["reclaim"]["state"])
            await asyncio.sleep(0.2)
        # (Idle for a moment at most: from its launch until its process first ran on the GPU.)
        assert set(states) <= {"active", "idle"} and states[-1] == "active", states
        assert kernel_container(docker_client, kernel_id).id == first.id
        # Once it stops using the GPU, the idle time begins: it is warned.
        device.process_util = {}
        await wait_warned(jp_fetch, conformance, kernel_id)


def reclaim_and_keep(_: Any) -> dict[str, Any]:
    config = reclaim_config("restart-without-gpus")(_)
    # Keeps of 3 to 6 s, once per idle spell: longer than the grace period's 3 s.
    config["GPUReclaim"].update(
        {"keep_min_minutes": 0.05, "keep_max_minutes": 0.1, "keep_max_times": 1}
    )
    return config


@pytest.mark.server_config(lambda tmp_path: reclaim_and_keep(tmp_path))
async def test_a_warned_kernels_user_keeps_its_gpus_within_the_bounds_then_loses_them_idle(
    two_gpu_nvml_box: nvml_double.Box,
    jp_fetch: Any,
    jp_serverapp: Any,
    conformance: Conformance,
    docker_client: docker.DockerClient,
) -> None:
    async def keep(kernel_id: str, body: Any) -> tuple[int, Any]:
        response = await jp_fetch(
            *KEEP.format(kernel_id=kernel_id).strip("/").split("/"),
            method="POST",
            body=json.dumps(body),
            raise_error=False,
        )
        return response.code, conformance.check(response, KEEP, "post")

    async with reclaiming(jp_serverapp):
        with all_log_text() as lines:
            kernel_id, first, _device = await start_gpu_kernel(
                jp_fetch, docker_client, two_gpu_nvml_box, utilization=0
            )
            warned = await wait_warned(jp_fetch, conformance, kernel_id)
            assert warned["keep"] == {"min_minutes": 0.05, "max_minutes": 0.1, "times_left": 1}
            assert warned["kept_until"] is None and warned["keeps"] == 0
            # Out of the administrator's bounds, or not a number: refused, nothing kept.
            for body in ({"minutes": 30}, {"minutes": "6"}, {"minutes": True}, {}):
                code, error = await keep(kernel_id, body)
                assert code == 400, (body, error)
            code, error = await keep(kernel_id, {"minutes": 30})
            assert "GPUs can be kept for 3 seconds to 6 seconds, not 30 minutes" in error["message"]
            # Only one's own kernel: any other id is the 404 of a kernel that does not exist.
            code, error = await keep("0" * 8 + "-0000-4000-8000-" + "0" * 12, {"minutes": 0.1})
            assert code == 404, error
            code, kept = await keep(kernel_id, {"minutes": 0.1})
            assert code == 200, kept
            assert kept["state"] == "warned" and kept["keeps"] == 1
            assert kept["kept_until"] is not None and kept["kept_until"] == kept["release_at"]
            assert kept["kept_until"] > warned["release_at"]
            assert kept["keep"] == {"min_minutes": 0.05, "max_minutes": 0.1, "times_left": 0}
            assert kept["message"].startswith("Kept at your word for 6 seconds")
            # Once per idle spell here.
            code, error = await keep(kernel_id, {"minutes": 0.05})
            assert code == 409 and "kept once while idle, as often as" in error["message"], error
            row = await row_of(jp_fetch, conformance, kernel_id)
            assert row["reclaim"]["kept_until"] == kept["kept_until"]

            # Still idle when the keep ends: its GPU goes then, not at the grace period's end.
            done = (await wait_reclaimed(jp_fetch, conformance, kernel_id))["reclaim"]
        assert done["reclaimed_at"] >= kept["kept_until"], (done, kept)
        assert done["kept_until"] is None and done["keep"] is None
        second = kernel_container(docker_client, kernel_id)
        assert second.id != first.id and second.labels.get(L.GPUS, "") == ""
        text = "\n".join(lines)
        said = "its idle GPUs kept for 0.1 minutes at its user's word (1 of 1)"
        assert any(f"Kernel {kernel_id}" in line and said in line for line in lines), text
        # The metrics count it.
        metrics = (await jp_fetch("gpu-containers", "metrics")).body.decode()
        assert "jupyter_gpu_containers_reclaim_keeps_total 1.0" in metrics


def reclaim_and_cull(tmp_path: Any) -> dict[str, Any]:
    config = reclaim_config("shutdown")(tmp_path)
    config["GPUReclaim"]["idle_minutes"] = 10.0
    return {**config, "MappingKernelManager": {"cull_idle_timeout": 2, "cull_interval": 1}}


# (A lambda: pytest.mark applied to a lone named function would decorate it instead.)
@pytest.mark.server_config(lambda tmp_path: reclaim_and_cull(tmp_path))
async def test_culling_by_jupyter_server_still_works_beside_reclaim(
    two_gpu_nvml_box: nvml_double.Box,
    jp_fetch: Any,
    jp_serverapp: Any,
    docker_client: docker.DockerClient,
) -> None:
    """Culling (MappingKernelManager.cull_idle_timeout) ends an idle kernel, GPUs or not, long
    before reclaim would: the two are separate, and neither gets in the other's way."""
    async with reclaiming(jp_serverapp) as reclaimer:
        kernel_id, first, _device = await start_gpu_kernel(
            jp_fetch, docker_client, two_gpu_nvml_box, utilization=0
        )

        async def culled() -> bool:
            kernels = json.loads((await jp_fetch("api", "kernels")).body)
            return kernel_id not in [k["id"] for k in kernels]

        await until(culled, timeout=60)
        await until(
            lambda: asyncio.to_thread(
                lambda: (
                    not docker_client.containers.list(
                        ignore_removed=True, all=True, filters={"id": first.id}
                    )
                )
            )
        )
        assert reclaimer.policy.counters() == {"warnings": 0, "reclaims": 0, "keeps": 0}
        await reclaimer.check()
        assert reclaimer.policy.states() == []


# ----------------------------------------------------------------------------- a server process


@pytest.fixture
def server_home() -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="jgc-reclaim-", dir="/tmp"))
    try:
        for sub in ("config", "data", "runtime", "workspace"):
            (home / sub).mkdir()
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def test_a_server_process_reclaims_idle_gpus_from_its_start_to_its_stop(
    server_home: Path, docker_client: docker.DockerClient
) -> None:
    """The extension's own start runs the reclaimer and its stop ends it: a real `jupyter
    server`, on the NVML double's eight GPUs (no process of the kernel on them: idle)."""
    write_server_config(
        server_home,
        {
            "GPUInventory": {
                "static_gpus": [],
                "source": "nvml",
                "nvml_module": "nvml_double",
                "cache_seconds": 0,
            },
            "GPUUsage": {"interval": 0.2},
            # The test's image only: the server probes no other image of the engine (the
            # server's stop waits for probes under way).
            "ContainerKernelSpecManager": {"image_include": [NGC_IMAGE]},
            "KernelReadinessProbe": {
                "cache_dir": str(PROBE_CACHE),
                "extra_labels": {TEST_LABEL: TEST_RUN},
            },
            "GPUReclaim": {
                "enabled": True,
                "idle_minutes": IDLE_MINUTES,
                "grace_minutes": GRACE_MINUTES,
                "check_interval": 0.2,
            },
        },
    )
    server = Server(
        server_home,
        server_home / "workspace",
        [],
        env={"PYTHONPATH": str(Path(__file__).parent)},
    )
    try:
        assert "GPUs idle for 2 seconds are reclaimed 3 seconds later" in server.output()
        started = await server.call("POST", "api", "kernels", body={"name": kernel_name(NGC_IMAGE)})
        kernel_id = started["id"]
        first = kernel_container(docker_client, kernel_id)
        assert first.labels[L.GPUS]

        async def reclaim_state() -> Any:
            rows = (await server.call("GET", "gpu-containers", "kernels"))["kernels"]
            return next(r["reclaim"] for r in rows if r["kernel_id"] == kernel_id)

        async def reclaimed() -> Any:
            state = await reclaim_state()
            return state if state and state["state"] == "reclaimed" else None

        done = await until(reclaimed, timeout=60)
        assert done["action"] == "restart-without-gpus"
        second = kernel_container(docker_client, kernel_id)
        assert second.id != first.id and second.labels.get(L.GPUS, "") == ""
        result = await server.execute(kernel_id, "print('still here')")
        assert result.stdout.strip() == "still here"
        log = server.output()
        assert f"Kernel {kernel_id}" in log and "has shown no GPU activity for" in log
        assert "reclaimed after" in log and "restarted without GPUs" in log
    finally:
        server.stop()
    log = Path(server.log.name).read_text()
    assert server.process.returncode in (0, -signal.SIGTERM), log
    assert (
        docker_client.containers.list(ignore_removed=True, all=True, filters={"id": first.id}) == []
    )


async def test_a_reattached_kernels_idle_gpus_are_reclaimed(
    server_home: Path, docker_client: docker.DockerClient
) -> None:
    """A kernel reattached after its server's `kill -9` holds its GPUs as its labels say, and
    the next server's reclaim watches them as it watches the kernels it launched."""
    env = {"PYTHONPATH": str(Path(__file__).parent)}
    nvml = {
        "GPUInventory": {
            "static_gpus": [],
            "source": "nvml",
            "nvml_module": "nvml_double",
            "cache_seconds": 0,
        },
        "GPUUsage": {"interval": 0.2},
        "ContainerKernelSpecManager": {"image_include": [NGC_IMAGE]},
        "KernelReadinessProbe": {
            "cache_dir": str(PROBE_CACHE),
            "extra_labels": {TEST_LABEL: TEST_RUN},
        },
    }
    write_server_config(server_home, nvml)
    first_server = Server(server_home, server_home / "workspace", [], env=env)
    try:
        started = await first_server.call(
            "POST", "api", "kernels", body={"name": kernel_name(NGC_IMAGE)}
        )
        kernel_id = started["id"]
        held = kernel_container(docker_client, kernel_id).labels[L.GPUS]
        assert held
    finally:
        first_server.kill9()
        first_server.stop()
    write_server_config(
        server_home,
        {
            **nvml,
            "GPUReclaim": {
                "enabled": True,
                "idle_minutes": IDLE_MINUTES,
                "grace_minutes": GRACE_MINUTES,
                "check_interval": 0.2,
                "action": "shutdown",
            },
        },
    )
    second_server = Server(server_home, server_home / "workspace", [], env=env)
    try:
        said = second_server.output()
        assert "reattached 1" in said, said  # whole: pytest would cut a long string short
        rows = (await second_server.call("GET", "gpu-containers", "kernels"))["kernels"]
        (row,) = [r for r in rows if r["kernel_id"] == kernel_id]
        assert [g["uuid"] for g in row["gpus"]] == held.split(",")

        async def reclaimed() -> Any:
            body = await second_server.call("GET", "gpu-containers", "kernels")
            return [r for r in body["reclaimed"] if r["kernel_id"] == kernel_id]

        (record,) = await until(reclaimed, timeout=60)
        assert record["gpus"] == held.split(",") and record["action"] == "shutdown"
        assert (await second_server.call("GET", "api", "kernels")) == []
    finally:
        second_server.stop()
