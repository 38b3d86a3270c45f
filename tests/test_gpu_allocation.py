"""GPUs in kernels: attach modes, allocation policies and errors, against the real engine with a
static inventory of four GPUs (conftest) and the runc-backed "nvidia" runtime."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    DEBIAN_IMAGE,
    NGC_IMAGE,
    TEST_LABEL,
    TEST_RUN,
    assert_no_test_containers,
    install_spec,
    kernel_container,
    kernel_name,
)
from kernel_io import execute, start_kernel, start_refusal

from jupyter_gpu_containers.backends.docker import engine as engine_module
from jupyter_gpu_containers.backends.docker.engine import Engine
from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.base.records import ContainerSpec
from jupyter_gpu_containers.gpus.allocator import attachment
from jupyter_gpu_containers.gpus.inventory import GPU
from jupyter_gpu_containers.placement.placement import create_container

pytestmark = pytest.mark.usefixtures("docker_client")

GPU_ENV = (
    "import os; print(os.environ.get('NVIDIA_VISIBLE_DEVICES'), "
    "os.environ.get('CUDA_VISIBLE_DEVICES'))"
)


async def visible_devices(jp_ws_fetch: Any, kernel_id: str) -> str:
    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
    try:
        result = await execute(ws, GPU_ENV)
    finally:
        ws.close()
    return result.stdout.strip()


async def test_runtime_mode_end_to_end(jp_fetch: Any, jp_ws_fetch: Any, docker_client: Any) -> None:
    gpu_kernel = await start_kernel(
        jp_fetch, kernel_name(NGC_IMAGE)
    )  # a GPU image: 1 GPU by default
    cpu_kernel = await start_kernel(jp_fetch, kernel_name(DEBIAN_IMAGE))  # a CPU image: none
    # The kernel sees exactly its GPU; CUDA_VISIBLE_DEVICES is left alone (devices are
    # renumbered inside the container).
    assert await visible_devices(jp_ws_fetch, gpu_kernel) == "GPU-test-0 None"
    assert await visible_devices(jp_ws_fetch, cpu_kernel) == "void None"
    container = kernel_container(docker_client, gpu_kernel)
    assert container.attrs["HostConfig"]["Runtime"] == "nvidia"
    assert container.labels[L.GPUS] == "GPU-test-0"
    assert kernel_container(docker_client, cpu_kernel).labels[L.GPUS] == ""

    # A restart keeps the kernel's GPU, even with the other GPUs all free.
    await jp_fetch("api", "kernels", gpu_kernel, "restart", method="POST", body="")
    assert await visible_devices(jp_ws_fetch, gpu_kernel) == "GPU-test-0 None"
    for kernel_id in (gpu_kernel, cpu_kernel):
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert_no_test_containers(docker_client)


async def test_exclusive_exhaustion_and_release(
    jp_fetch: Any, jp_ws_fetch: Any, docker_client: Any
) -> None:
    kernels = [await start_kernel(jp_fetch, kernel_name(NGC_IMAGE)) for _ in range(4)]
    held = {kernel_container(docker_client, k).labels[L.GPUS] for k in kernels}
    assert held == {f"GPU-test-{i}" for i in range(4)}
    code, message = await start_refusal(jp_fetch, kernel_name(NGC_IMAGE))
    assert code == 409
    assert message.startswith("No free GPU: 1 requested, 0 free (GPU 0 is held by one of your ")
    # Shutting one down frees its GPU at once.
    freed = kernel_container(docker_client, kernels[2]).labels[L.GPUS]
    await jp_fetch("api", "kernels", kernels[2], method="DELETE")
    kernels[2] = await start_kernel(jp_fetch, kernel_name(NGC_IMAGE))
    assert kernel_container(docker_client, kernels[2]).labels[L.GPUS] == freed
    # Removed behind the server's back (docker rm -f): released too.
    kernel_container(docker_client, kernels[0]).remove(force=True)
    await jp_fetch("api", "kernels", kernels[0], method="DELETE")
    extra = await start_kernel(jp_fetch, kernel_name(NGC_IMAGE))
    for kernel_id in [*kernels[1:], extra]:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert_no_test_containers(docker_client)


@pytest.mark.server_config(
    lambda _: {"GPUAllocator": {"policy": "shared", "max_kernels_per_gpu": 2}}
)
async def test_shared_policy(jp_fetch: Any, docker_client: Any) -> None:
    kernels = [await start_kernel(jp_fetch, kernel_name(NGC_IMAGE)) for _ in range(8)]
    per_gpu: dict[str, int] = {}
    for kernel_id in kernels:
        uuid = kernel_container(docker_client, kernel_id).labels[L.GPUS]
        per_gpu[uuid] = per_gpu.get(uuid, 0) + 1
    assert per_gpu == {f"GPU-test-{i}": 2 for i in range(4)}  # least loaded first
    code, message = await start_refusal(jp_fetch, kernel_name(NGC_IMAGE))
    assert code == 409
    assert "and one of your kernels" in message  # both holders of a shared GPU are named


@pytest.mark.server_config(lambda _: {"GPUAllocator": {"max_gpus_per_user": 1}})
async def test_per_user_cap(jp_fetch: Any, docker_client: Any) -> None:
    await start_kernel(jp_fetch, kernel_name(NGC_IMAGE))
    code, message = await start_refusal(jp_fetch, kernel_name(NGC_IMAGE))
    assert code == 409
    assert "over the limit of 1 GPU per user (1 held by your other kernels)" in message
    await start_kernel(jp_fetch, kernel_name(DEBIAN_IMAGE))  # CPU kernels are not capped


async def test_specific_gpus_and_bad_requests(
    jp_fetch: Any, jp_ws_fetch: Any, jp_data_dir: Path, docker_client: Any
) -> None:
    two = install_spec(jp_data_dir, "by-id", NGC_IMAGE, gpus=["2", "GPU-test-3"])
    kernel_id = await start_kernel(jp_fetch, two)
    assert await visible_devices(jp_ws_fetch, kernel_id) == "GPU-test-2,GPU-test-3 None"
    taken = install_spec(jp_data_dir, "taken", NGC_IMAGE, gpus=["GPU-test-3"])
    code, message = await start_refusal(jp_fetch, taken)
    assert code == 409 and message.startswith("GPU 3 (GPU-test-3) is not free: one of your ")
    for name, gpus, status, says in [
        ("unknown", ["7"], 400, "There is no GPU '7' on this host"),
        ("negative", -1, 400, "a whole number from 0 to 1024"),
        ("fraction", 1.5, 400, "must be a whole number"),
        ("too-many", 5, 409, "5 requested, but this host has only 4"),
    ]:
        code, message = await start_refusal(
            jp_fetch, install_spec(jp_data_dir, name, NGC_IMAGE, gpus=gpus)
        )
        assert (code, says in message) == (status, True), message
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert_no_test_containers(docker_client)


@pytest.mark.parametrize(
    ("mode", "driver", "device_ids"),
    [
        ("device-requests", "nvidia", ["GPU-test-1"]),
        ("cdi", "cdi", ["nvidia.com/gpu=GPU-test-1"]),
    ],
)
async def test_device_request_modes_by_create_and_inspect(
    mode: str, driver: str, device_ids: list[str], docker_client: Any
) -> None:
    """Without the NVIDIA toolkit these cannot start, so the create call is checked instead."""
    gpu = GPU(index="1", uuid="GPU-test-1", name="Tesla T4")
    attached = attachment(mode, [gpu])
    engine = Engine()
    container_id = await engine.create(
        ContainerSpec(
            image=DEBIAN_IMAGE,
            command=["true"],
            name=f"jgc-test-{mode}-{TEST_RUN}",
            labels={TEST_LABEL: TEST_RUN},
            environment=attached.environment,
            device_requests=attached.device_requests,
        )
    )
    try:
        requests = docker_client.api.inspect_container(container_id)["HostConfig"]["DeviceRequests"]
        assert [(r["Driver"], r["DeviceIDs"]) for r in requests] == [(driver, device_ids)]
        if mode == "device-requests":
            assert requests[0]["Capabilities"] == [["gpu"]]
    finally:
        await engine.remove(container_id)


async def test_a_start_cancelled_while_its_container_is_created_still_knows_it(
    docker_client: Any,
) -> None:
    """The engine's create runs on a thread that a cancellation does not stop: a start cancelled
    meanwhile (a server stopping while its warm pool fills) waits for the engine's answer and
    tells the launch the container made, whose clean-up removes it (fresh run 22 found one left
    behind)."""

    class Steps:
        made: list[str] = []

        def created(self, container_id: str) -> None:
            self.made.append(container_id)

    engine, steps = Engine(), Steps()
    spec = ContainerSpec(
        image=DEBIAN_IMAGE,
        command=["true"],
        name=f"jgc-test-cancelled-create-{TEST_RUN}",
        labels={TEST_LABEL: TEST_RUN},
        environment={},
    )
    creating = asyncio.ensure_future(create_container(engine, spec, steps))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the engine's call is under way on its thread
    creating.cancel()
    try:
        with pytest.raises(asyncio.CancelledError):
            await creating
        listed = docker_client.containers.list(
            ignore_removed=True, all=True, filters={"name": spec.name}
        )
        assert [c.id for c in listed] == steps.made and len(steps.made) == 1
    finally:
        for container_id in steps.made:
            await engine.remove(container_id)
        engine.close()


async def test_the_engines_runtimes_are_asked_once_in_a_while(monkeypatch: Any) -> None:
    """Every GPU start chooses how its GPUs reach the container from the engine's runtimes;
    `docker info`, which answers them and is one of the engine's slowest calls, is asked again
    only once RUNTIMES_KNOWN_FOR seconds have passed."""
    engine = Engine()
    asked: list[Any] = []
    real_run = engine.run

    async def counted(fn: Any) -> Any:
        asked.append(fn)
        return await real_run(fn)

    monkeypatch.setattr(engine, "run", counted)
    try:
        first = await engine.runtimes()
        # The runc-backed "nvidia" runtime the test set-up gives dockerd, and runc.
        assert {"nvidia", "runc"} <= set(first)
        assert await engine.runtimes() == first
        assert len(asked) == 1
        monkeypatch.setattr(engine_module, "RUNTIMES_KNOWN_FOR", 0.0)
        assert await engine.runtimes() == first
        assert len(asked) == 2
    finally:
        engine.close()


@pytest.mark.server_config(lambda _: {"GPUAllocator": {"attach_mode": "device-requests"}})
async def test_device_requests_without_toolkit_fail_with_the_engine_reason(
    jp_fetch: Any, docker_client: Any
) -> None:
    code, message = await start_refusal(jp_fetch, kernel_name(NGC_IMAGE))
    assert code == 500
    assert "refused to start" in message and "device driver" in message
    assert_no_test_containers(docker_client)
    # ...and the failed start booked nothing: all four GPUs are still free.
    await jp_fetch("api", "kernels", method="GET")


@pytest.mark.server_config(lambda _: {"KernelRestarter": {"restart_limit": 1, "time_to_dead": 0.5}})
async def test_a_kernel_whose_restarts_fail_releases_its_gpu(
    jp_fetch: Any, jp_data_dir: Path, docker_client: Any
) -> None:
    ref = f"jgc-test/fragile:{TEST_RUN}"
    docker_client.images.get(NGC_IMAGE).tag(ref)
    kernel_id = await start_kernel(jp_fetch, install_spec(jp_data_dir, "fragile", ref, gpus=1))
    assert kernel_container(docker_client, kernel_id).labels[L.GPUS] == "GPU-test-0"
    # The image goes, then the kernel's container dies: every restart fails.
    docker_client.images.remove(ref)
    kernel_container(docker_client, kernel_id).kill()
    # (jupyter_client's restarter never declares such a kernel dead: a restart that raises leaves
    # it listed. What matters is that nothing of it keeps the GPU.)
    for _ in range(100):
        # ignore_removed: the restarter removes them meanwhile; one gone between the listing
        # and its inspection is no error.
        if not docker_client.containers.list(
            all=True, filters={"label": f"{L.KERNEL_ID}={kernel_id}"}, ignore_removed=True
        ):
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("the dead kernel's containers were not removed")
    # Its GPU is free again at once: a new kernel gets GPU 0.
    again = await start_kernel(jp_fetch, kernel_name(NGC_IMAGE))
    assert kernel_container(docker_client, again).labels[L.GPUS] == "GPU-test-0"
