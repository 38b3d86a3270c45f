"""GPU allocation across real server processes: the race, kill -9, and NVML failing mid-run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nvml_double
import pytest
from conftest import (
    NGC_IMAGE,
    NVML_DOUBLE_CONFIG,
    TEST_LABEL,
    TEST_RUN,
    assert_no_test_containers,
    kernel_name,
)
from servers import Server, write_server_config
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from jupyter_gpu_containers.base import labels as L

pytestmark = pytest.mark.usefixtures("docker_client")


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[Path, list[Server]]]:
    """Config shared by every server of a test: the same four GPUs and host state directory."""
    for sub in ("config", "data", "runtime", "a", "b"):
        (tmp_path / sub).mkdir()
    write_server_config(tmp_path)
    servers: list[Server] = []
    yield tmp_path, servers
    for server in servers:
        server.stop()


def gpu_holders(docker_client: Any) -> list[str]:
    containers = docker_client.containers.list(
        all=True, filters={"label": f"{TEST_LABEL}={TEST_RUN}"}
    )
    return sorted(c.labels[L.GPUS] for c in containers if c.labels.get(L.GPUS))


async def start_many(servers: list[Server], per_server: int) -> list[Any]:
    client = AsyncHTTPClient(force_instance=True, max_clients=64)
    try:
        requests = [
            client.fetch(
                HTTPRequest(
                    f"{server.url}/api/kernels",
                    method="POST",
                    headers={"Authorization": f"token {server.token}"},
                    body=json.dumps({"name": kernel_name(NGC_IMAGE)}),
                    request_timeout=120,
                ),
                raise_error=False,
            )
            for _ in range(per_server)
            for server in servers
        ]
        return list(await asyncio.gather(*requests))
    finally:
        client.close()


async def test_two_servers_twenty_concurrent_starts_four_gpus(
    host: tuple[Path, list[Server]], docker_client: Any
) -> None:
    home, servers = host
    servers += [Server(home, home / "a", []), Server(home, home / "b", [])]
    responses = await start_many(servers, per_server=10)

    codes = sorted(r.code for r in responses)
    assert codes == [201] * 4 + [409] * 16, [
        r.body[:200] for r in responses if r.code not in (201, 409)
    ]
    for r in responses:
        if r.code == 409:
            assert json.loads(r.body)["message"].startswith("No free GPU: 1 requested, 0 free")
    assert gpu_holders(docker_client) == [f"GPU-test-{i}" for i in range(4)]

    for server in servers:
        for kernel in await server.call("GET", "api", "kernels"):
            await server.call("DELETE", "api", "kernels", kernel["id"])
    assert gpu_holders(docker_client) == []
    assert_no_test_containers(docker_client)


async def test_kill_9_rebuilds_the_ledger_from_labels(
    host: tuple[Path, list[Server]], docker_client: Any
) -> None:
    home, servers = host
    first = Server(home, home / "a", [])
    servers.append(first)
    for _ in range(2):
        await first.call("POST", "api", "kernels", body={"name": kernel_name(NGC_IMAGE)})
    first.kill9()

    # The same server again: its two kernels come back, still holding their GPUs, so only the two
    # other GPUs can be given.
    again = Server(home, home / "a", [])
    servers.append(again)
    assert len(await again.call("GET", "api", "kernels")) == 2
    codes = sorted(r.code for r in await start_many([again], per_server=3))
    assert codes == [201, 201, 409]
    assert gpu_holders(docker_client) == [f"GPU-test-{i}" for i in range(4)]

    # Killed for good: another server's start sweeps the dead server's kernels, and all four
    # GPUs are free again.
    again.kill9()
    other = Server(home, home / "b", [])
    servers.append(other)
    assert gpu_holders(docker_client) == []
    codes = sorted(r.code for r in await start_many([other], per_server=4))
    assert codes == [201] * 4
    for kernel in await other.call("GET", "api", "kernels"):
        await other.call("DELETE", "api", "kernels", kernel["id"])
    assert_no_test_containers(docker_client)


@pytest.mark.server_config(lambda _: NVML_DOUBLE_CONFIG)
async def test_nvml_failure_mid_run(two_gpu_nvml_box: nvml_double.Box, jp_fetch: Any) -> None:
    async def start(image_kernel: str) -> Any:
        return await jp_fetch(
            "api",
            "kernels",
            method="POST",
            body=json.dumps({"name": image_kernel}),
            raise_error=False,
        )

    first = await start(kernel_name(NGC_IMAGE))
    assert first.code == 201
    two_gpu_nvml_box.lost = True
    refused = await start(kernel_name(NGC_IMAGE))
    assert refused.code == 409
    assert "NVML could not be read (GPU is lost)" in json.loads(refused.body)["message"]
    # CPU kernels still start, and the running GPU kernel is untouched.
    assert (await start(kernel_name("jgc/debian-ipykernel:bookworm"))).code == 201
    kernel = json.loads((await jp_fetch("api", "kernels", json.loads(first.body)["id"])).body)
    assert kernel["execution_state"] != "dead"
    two_gpu_nvml_box.lost = False
    assert (await start(kernel_name(NGC_IMAGE))).code == 201
