"""GPU-hour quotas against the real engine (static GPUs, runc-backed "nvidia" runtime): the REST
answer, a start refused once the quota is used up, ends recorded where containers are removed,
and use that survives a restart of the server (quota.py)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DEBIAN_IMAGE, NGC_IMAGE, assert_no_test_containers, kernel_name
from kernel_io import start_kernel, start_refusal
from servers import Server, write_server_config

from jupyter_gpu_containers.base.safefiles import owner_name

pytestmark = pytest.mark.usefixtures("docker_client")

ME = owner_name(os.getuid())


def usage_lines(state_dir: Path) -> list[dict[str, Any]]:
    lines = []
    for path in sorted(state_dir.glob(f"gpu-usage-{os.getuid()}-*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return lines


async def quota(jp_fetch: Any) -> Any:
    return json.loads((await jp_fetch("gpu-containers", "quota")).body)


async def test_quota_off_by_default_still_reports_use(jp_fetch: Any) -> None:
    answer = await quota(jp_fetch)
    assert answer["enabled"] is False
    assert (answer["period"], answer["limit_hours"], answer["used_hours"]) == ("week", 0, 0)
    assert (answer["group"], answer["group_limit_hours"], answer["group_used_hours"]) == (
        None,
        None,
        None,
    )
    assert answer["resets_at"].endswith(("+00:00", "Z")) or "T00:00:00" in answer["resets_at"]


@pytest.mark.server_config(
    lambda _: {
        "GPUQuota": {
            "hours_per_user": 0.0005,  # 1.8 GPU-seconds
            "period": "day",
            "user_groups": {ME: "lab"},
            "hours_per_group": {"lab": 5},
        }
    }
)
async def test_a_start_over_quota_is_refused_and_ends_are_recorded(
    jp_fetch: Any, tmp_path: Path, docker_client: Any
) -> None:
    first = await start_kernel(jp_fetch, kernel_name(NGC_IMAGE))  # one GPU
    answer = await quota(jp_fetch)
    assert answer["enabled"] is True
    assert (answer["period"], answer["limit_hours"], answer["group"]) == ("day", 0.0005, "lab")
    assert answer["group_limit_hours"] == 5
    # The running kernel counts up to now, for the user and for the group.
    await asyncio.sleep(2.5)
    answer = await quota(jp_fetch)
    assert answer["used_hours"] >= 0.0005
    assert answer["group_used_hours"] == answer["used_hours"]
    assert answer["left_hours"] == 0
    code, message = await start_refusal(jp_fetch, kernel_name(NGC_IMAGE))
    assert code == 409
    assert message.startswith("You have used ")
    assert "of your 0.0005 GPU-hours today; your quota starts again on " in message
    # Kernels without GPUs still start.
    cpu = await start_kernel(jp_fetch, kernel_name(DEBIAN_IMAGE))

    # The shutdown removes the container, and its end is remembered in the state directory.
    await jp_fetch("api", "kernels", first, method="DELETE")
    ends = [line for line in usage_lines(tmp_path / "state") if "end" in line]
    assert len(ends) == 1 and ends[0]["gpus"] == 1
    assert 2.5 <= ends[0]["end"] - ends[0]["start"] < 60
    used = (await quota(jp_fetch))["used_hours"]
    assert used == pytest.approx((ends[0]["end"] - ends[0]["start"]) / 3600, abs=1e-4)
    await asyncio.sleep(1.2)  # nothing holds GPUs now: the use stays
    assert (await quota(jp_fetch))["used_hours"] == used
    await jp_fetch("api", "kernels", cpu, method="DELETE")
    assert_no_test_containers(docker_client)


@pytest.mark.server_config(lambda _: {"GPUQuota": {"hours_per_user": 10}})
async def test_an_end_is_recorded_whoever_removes_the_container(
    jp_fetch: Any, tmp_path: Path, docker_client: Any
) -> None:
    """``docker rm -f`` by hand: the server never removes it, yet the kernel's note stands for
    its end; the engine's removals (here the next start's garbage collection does not apply,
    the container is gone) record nothing twice."""
    kernel_id = await start_kernel(jp_fetch, kernel_name(NGC_IMAGE))
    await quota(jp_fetch)  # computing the use notes the running container on disk
    seen = [line for line in usage_lines(tmp_path / "state") if "seen" in line]
    assert len(seen) == 1 and seen[0]["kernel_id"] == kernel_id
    for container in docker_client.containers.list(ignore_removed=True, all=True):
        if container.labels.get("org.jupyter.gpu-containers.kernel-id") == kernel_id:
            container.remove(force=True)
    await asyncio.sleep(1.1)
    answer = await quota(jp_fetch)
    assert answer["used_hours"] == pytest.approx(
        (seen[0]["seen"] - seen[0]["start"]) / 3600, abs=1e-4
    )
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert [line for line in usage_lines(tmp_path / "state") if "end" in line] == []
    assert_no_test_containers(docker_client)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[Path, list[Server]]]:
    for sub in ("config", "data", "runtime", "work"):
        (tmp_path / sub).mkdir()
    write_server_config(tmp_path, {"GPUQuota": {"hours_per_user": 1.0, "period": "week"}})
    servers: list[Server] = []
    yield tmp_path, servers
    for server in servers:
        server.stop()


async def test_use_survives_a_restart_of_the_server(
    host: tuple[Path, list[Server]], docker_client: Any
) -> None:
    home, servers = host
    servers.append(Server(home, home / "work", []))
    kernel = (
        await servers[0].call("POST", "api", "kernels", body={"name": kernel_name(NGC_IMAGE)})
    )["id"]
    await asyncio.sleep(2)
    before = await servers[0].call("GET", "gpu-containers", "quota")
    assert before["enabled"] is True and before["used_hours"] > 0
    await servers[0].call("DELETE", "api", "kernels", kernel)
    servers[0].stop()
    assert_no_test_containers(docker_client)

    servers.append(Server(home, home / "work", []))
    after = await servers[1].call("GET", "gpu-containers", "quota")
    assert after["used_hours"] >= before["used_hours"]
    assert after["used_hours"] < before["used_hours"] + 60 / 3600
    assert after["left_hours"] == pytest.approx(1 - after["used_hours"])
