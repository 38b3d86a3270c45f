"""The kernel's own view: its details against `docker inspect`, its container log as a live tail
(what a cell wrote to the process's stdout/stderr, the reason its container ended), answers to
its owner only, and GPU use per kernel from NVML's processes (the double). Real engine."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import nvml_double
import pytest
import yaml
from conftest import (
    DEBIAN_IMAGE,
    NGC_IMAGE,
    NVML_DOUBLE_CONFIG,
    TEST_LABEL,
    TEST_RUN,
    kernel_container,
    kernel_name,
)
from hostusers import ALICE, BOB, UserHome, host_state_dir, needs_accounts
from kernel_io import execute_in, refusal, send_execute, start_kernel
from test_openapi import SPEC_PATH, Conformance, _StrictLoader
from test_shared_host import CPU_SPEC, home_for, start, stop_kernels

from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.gpus import inventory as gpus_module
from jupyter_gpu_containers.gpus.gpu_usage import WatchedKernel, usage_by_kernel
from jupyter_gpu_containers.gpus.inventory import read_nvml
from jupyter_gpu_containers.routes.kernel_view import NOT_YOURS, image_digest, unix_time

pytestmark = pytest.mark.usefixtures("docker_client")

KERNEL = "/gpu-containers/kernels/{kernel_id}"
LOG = "/gpu-containers/kernels/{kernel_id}/log"
LIST = "/gpu-containers/kernels"


@pytest.fixture(scope="module")
def conformance() -> Conformance:
    with SPEC_PATH.open(encoding="utf-8") as f:
        return Conformance(yaml.load(f, Loader=_StrictLoader))


async def view(jp_fetch: Any, conformance: Conformance, kernel_id: str) -> Any:
    response = await jp_fetch("gpu-containers", "kernels", kernel_id)
    return conformance.check(response, KERNEL, "get")


async def listing(jp_fetch: Any, conformance: Conformance) -> Any:
    response = await jp_fetch("gpu-containers", "kernels")
    return conformance.check(response, LIST, "get")


class LogClient:
    """The log's event stream over a raw connection of its own, as a browser holds one: events
    as they arrive, and a close that drops the connection."""

    def __init__(self, conformance: Conformance) -> None:
        self.conformance = conformance
        self.events: list[tuple[str, Any]] = []
        self.changed = asyncio.Event()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self.status = b""

    async def open(self, port: int, base_url: str, headers: dict[str, str], path: str) -> None:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", port)
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        url = base_url.rstrip("/") + path
        # HTTP/1.0: the stream comes as it is, without chunked encoding around the events.
        self._writer.write(f"GET {url} HTTP/1.0\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode())
        await self._writer.drain()
        self.status = await self._reader.readline()
        while (await self._reader.readline()).strip():
            pass  # the headers
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self._reader is not None
        text = b""
        while True:
            chunk = await self._reader.read(65536)
            if not chunk:
                return
            text += chunk
            while b"\n\n" in text:
                block, text = text.split(b"\n\n", 1)
                fields = {}
                for line in block.decode().splitlines():
                    if ": " in line and not line.startswith(":"):
                        key, value = line.split(": ", 1)
                        fields[key] = value
                if "event" in fields:
                    data = json.loads(fields["data"])
                    self.events.append((fields["event"], data))
                    self.changed.set()

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def text(self) -> str:
        return "\n".join(
            line["text"] for name, data in self.events if name == "lines" for line in data["lines"]
        )

    async def until(self, predicate: Any, timeout: float = 60) -> None:
        async def wait() -> None:
            while not predicate(self):
                self.changed.clear()
                await self.changed.wait()

        try:
            await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"not seen in {timeout} s; the events: {self.names()}") from None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()


@pytest.fixture
def log_clients() -> Iterator[list[LogClient]]:
    made: list[LogClient] = []
    yield made
    for client in made:
        client.close()


def log_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("gpu-containers-log-")]


async def until_no_log_threads(timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while log_threads() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert log_threads() == [], "a log stream's reading thread outlived its viewer"


# ----------------------------------------------------------------------------- details


async def test_details_of_a_running_kernel_match_docker_inspect(
    jp_fetch: Any, conformance: Conformance, docker_client: docker.DockerClient
) -> None:
    kernel_id = await start_kernel(jp_fetch, kernel_name(NGC_IMAGE))  # one static GPU
    container = kernel_container(docker_client, kernel_id)
    inspected = container.attrs
    got = await view(jp_fetch, conformance, kernel_id)

    assert got["kernel_id"] == kernel_id
    assert got["container"]["id"] == inspected["Id"] == container.id
    assert got["container"]["status"] == "running"
    assert got["image"]["reference"] == NGC_IMAGE
    assert got["image"]["id"] == inspected["Image"]
    image = docker_client.images.get(inspected["Image"])
    # A locally built test image has no registry digest: its content id names it.
    expected_digest = (image.attrs.get("RepoDigests") or [inspected["Image"]])[0]
    assert got["image"]["digest"] == expected_digest
    assert {(m["source"], m["target"], m["read_only"]) for m in got["mounts"]} == {
        (m["Source"], m["Destination"], not m["RW"]) for m in inspected["Mounts"]
    }
    assert any(m["target"] == "/workspace" and not m["read_only"] for m in got["mounts"])
    held = inspected["Config"]["Labels"][L.GPUS].split(",")
    assert [g["uuid"] for g in got["gpus"]] == held and got["gpus"][0]["index"] is not None
    names = [p["name"] for p in got["phases"]]
    assert names[-1] == "ready" and {"image", "create", "start"} <= set(names), names
    times = [p["at"] for p in got["phases"]]
    assert times == sorted(times) and got["launched_at"] <= times[0] <= time.time()
    started = unix_time(inspected["State"]["StartedAt"])
    assert started is not None and abs(got["container"]["started_at"] - started) < 0.01
    assert got["last_end"] is None
    # Static GPUs: their use is unknown, and the answer says so instead of showing zeros.
    usage = got["usage"]
    assert usage["samples"] == [] and "unknown" in usage["reason"]
    assert usage["since"] is not None and usage["since"] <= time.time()

    (entry,) = [k for k in (await listing(jp_fetch, conformance))["kernels"]]
    assert (entry["kernel_id"], entry["container_id"]) == (kernel_id, container.id)
    assert [g["uuid"] for g in entry["gpus"]] == held


def test_engine_times_are_read_in_their_own_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nanosecond fractions and a "Z" or an offset; the server's local zone never counts."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        midnight = 1704067200.0  # 2024-01-01T00:00:00Z
        assert unix_time("2024-01-01T00:00:00.123456789Z") == pytest.approx(midnight + 0.123456)
        assert unix_time("2024-01-01T01:00:00.5+01:00") == pytest.approx(midnight + 0.5)
        assert unix_time("2024-01-01T00:00:00Z") == midnight
        assert unix_time("") is None and unix_time("not a time") is None
    finally:
        monkeypatch.undo()
        time.tzset()


def test_the_image_digest_is_the_registry_digest_of_its_repository() -> None:
    digests = ("other/repo@sha256:" + "1" * 64, "nvcr.io/nvidia/pytorch@sha256:" + "2" * 64)
    assert image_digest("nvcr.io/nvidia/pytorch:24.05-py3", "sha256:ab", digests) == digests[1]
    assert image_digest("elsewhere/x:1", "sha256:ab", digests) == digests[0]
    assert image_digest("local/built:dev", "sha256:ab", ()) == "sha256:ab"


# ----------------------------------------------------------------------------- the log


async def test_the_log_tail_has_what_a_cell_wrote_and_follows_new_lines(
    jp_fetch: Any,
    jp_ws_fetch: Any,
    jp_http_port: int,
    jp_base_url: str,
    jp_auth_header: dict[str, str],
    conformance: Conformance,
    log_clients: list[LogClient],
) -> None:
    kernel_id = await start_kernel(jp_fetch, kernel_name(DEBIAN_IMAGE))
    token = uuid.uuid4().hex[:8]
    # A cell's print() goes to the notebook; what the process writes to its own stdout and
    # stderr (C libraries, subprocesses, os.write) is what the container log holds.
    first = await execute_in(
        jp_ws_fetch,
        kernel_id,
        f"import os\nos.write(1, b'kv-out-{token}\\n')\nos.write(2, b'kv-err-{token}\\n')",
    )
    assert first.status == "ok", first

    # The tail alone (follow=0): the stream ends after it. (The kernel forwards what reaches
    # its file descriptors from a thread of its own: it may take a moment to be in the log.)
    for _ in range(50):
        response = await jp_fetch(
            "gpu-containers", "kernels", kernel_id, "log", params={"tail": "50", "follow": "0"}
        )
        body = conformance.check(response, LOG, "get")
        if f"kv-out-{token}" in body and f"kv-err-{token}" in body:
            break
        await asyncio.sleep(0.1)
    assert f"kv-out-{token}" in body and f"kv-err-{token}" in body, body
    assert body.startswith("event: container\n")

    # Following: the tail, then a line printed afterwards arrives on the open stream.
    client = LogClient(conformance)
    log_clients.append(client)
    await client.open(jp_http_port, jp_base_url, jp_auth_header, LOG.format(kernel_id=kernel_id))
    assert client.status.split()[1] == b"200", client.status
    await client.until(lambda c: f"kv-err-{token}" in c.text())
    assert client.names()[0] == "container"
    (container,) = [data for name, data in client.events if name == "container"]
    assert container["last_end"] is None
    later = await execute_in(
        jp_ws_fetch, kernel_id, f"import subprocess\nsubprocess.run(['echo', 'kv-later-{token}'])"
    )
    assert later.status == "ok", later
    await client.until(lambda c: f"kv-later-{token}" in c.text())
    lines = [line for name, d in client.events if name == "lines" for line in d["lines"]]
    assert all(unix_time(line["time"]) for line in lines), lines[:3]
    assert len(log_threads()) == 1

    # The viewer goes away: the server's reading thread ends with its stream.
    client.close()
    await until_no_log_threads()


async def test_the_log_says_why_the_container_ended_and_follows_the_restart(
    jp_fetch: Any,
    jp_ws_fetch: Any,
    jp_http_port: int,
    jp_base_url: str,
    jp_auth_header: dict[str, str],
    conformance: Conformance,
    log_clients: list[LogClient],
    docker_client: docker.DockerClient,
) -> None:
    kernel_id = await start_kernel(jp_fetch, kernel_name(DEBIAN_IMAGE))
    first_container = kernel_container(docker_client, kernel_id).id
    client = LogClient(conformance)
    log_clients.append(client)
    await client.open(jp_http_port, jp_base_url, jp_auth_header, LOG.format(kernel_id=kernel_id))
    await client.until(lambda c: "container" in c.names())

    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
    try:
        await send_execute(
            ws, "import os, time\nos.write(2, b'kv-bye\\n')\ntime.sleep(0.5)\nos._exit(3)"
        )
        await client.until(lambda c: "ended" in c.names())
    finally:
        ws.close()
    ended = next(data for name, data in client.events if name == "ended")
    assert ended["container_id"] == first_container and ended["exit_code"] == 3
    assert "code 3" in ended["reason"]
    assert "kv-bye" in client.text()

    # The kernel's restarter brings it back in a new container: the stream follows it, and
    # its first event says how the previous container ended, in the provisioner's sentence.
    await client.until(lambda c: c.names().count("container") == 2)
    second = [data for name, data in client.events if name == "container"][1]
    assert second["container_id"] != first_container
    end = second["last_end"]
    assert (end["container_id"], end["exit_code"], end["oom_killed"]) == (first_container, 3, False)
    assert end["routine"] is False  # it ended on its own: trouble, shown as such
    assert end["reason"].startswith(f"The kernel's container ({DEBIAN_IMAGE}) exited with code 3")
    assert "kv-bye" in end["reason"]  # the last lines of its log

    got = await view(jp_fetch, conformance, kernel_id)
    assert got["last_end"] == end
    assert got["container"]["id"] == second["container_id"]

    # Shut down: the stream says so and ends; its thread is gone.
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    await client.until(lambda c: "shutdown" in c.names())
    await until_no_log_threads()


async def test_a_restart_records_how_the_previous_container_ended(
    jp_fetch: Any, conformance: Conformance, docker_client: docker.DockerClient
) -> None:
    kernel_id = await start_kernel(jp_fetch, kernel_name(DEBIAN_IMAGE))
    before = kernel_container(docker_client, kernel_id).id
    await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="")
    got = await view(jp_fetch, conformance, kernel_id)
    assert got["last_end"]["container_id"] == before
    assert got["last_end"]["reason"].startswith("The kernel was restarted: its previous container")
    assert got["last_end"]["routine"] is True  # asked for: news, not trouble
    assert got["container"]["id"] != before


async def test_a_bad_tail_is_refused(jp_fetch: Any, conformance: Conformance) -> None:
    kernel_id = await start_kernel(jp_fetch, kernel_name(DEBIAN_IMAGE))
    for tail in ("-1", "many", "10001"):
        response = await jp_fetch(
            "gpu-containers", "kernels", kernel_id, "log", params={"tail": tail}, raise_error=False
        )
        conformance.check(response, LOG, "get")
        assert response.code == 400, tail


# ----------------------------------------------------------------------------- the owner only


async def test_unknown_and_other_users_kernels_are_not_found(
    jp_fetch: Any,
    jp_serverapp: Any,
    conformance: Conformance,
    docker_client: docker.DockerClient,
) -> None:
    unknown = str(uuid.uuid4())
    for path in (["kernels", unknown], ["kernels", unknown, "log"]):
        code, message = await refusal(jp_fetch("gpu-containers", *path))
        assert (code, message) == (404, NOT_YOURS)

    # A kernel of this server whose container's labels name another uid (labels are evidence
    # anyone in the docker group can write: a record pointing at such a container must not
    # open it to this user).
    kernel_id = await start_kernel(jp_fetch, kernel_name(DEBIAN_IMAGE))
    provisioner = jp_serverapp.kernel_manager.get_kernel(kernel_id).provisioner
    other_uid = str(os.getuid() + 4242)
    foreign = docker_client.containers.create(
        DEBIAN_IMAGE,
        ["sleep", "60"],
        labels={
            L.MANAGED: "true",
            L.KERNEL_ID: kernel_id,
            L.UID: other_uid,
            L.USER: "someone-else",
            TEST_LABEL: TEST_RUN,
        },
    )
    own = provisioner.container_id
    try:
        provisioner.container_id = foreign.id
        for path in (["kernels", kernel_id], ["kernels", kernel_id, "log"]):
            response = await jp_fetch("gpu-containers", *path, raise_error=False)
            conformance.check(response, KERNEL if len(path) == 2 else LOG, "get")
            assert response.code == 404
            message = json.loads(response.body)["message"]
            assert message == NOT_YOURS and "someone-else" not in message
    finally:
        provisioner.container_id = own
        foreign.remove(force=True)
    assert (await view(jp_fetch, conformance, kernel_id))["container"]["id"] == own


async def test_the_kernel_view_needs_authentication(jp_fetch: Any) -> None:
    for path in (["kernels"], ["kernels", "x"], ["kernels", "x", "log"]):
        response = await jp_fetch(
            "gpu-containers",
            *path,
            headers={"Authorization": "token not-the-token"},
            raise_error=False,
        )
        assert response.code == 403, path


# ----------------------------------------------------------------------------- GPU use


def test_process_utilisation_is_read_per_process() -> None:
    nvml_double.BOX = nvml_double.eight_a100(mig_on=1)
    try:
        device = nvml_double.BOX.devices[0]
        device.processes = [(4242, 3 * nvml_double.GiB), (4343, nvml_double.GiB)]
        device.process_util = {4242: 55}
        nvml_double.BOX.devices[2].processes = [(4444, nvml_double.GiB)]  # idle: no samples
        nvml_double.BOX.devices[1].mig[0].processes = [(4545, nvml_double.GiB)]  # type: ignore[index]
        inventory = read_nvml(nvml_double)
        by_pid = {p.pid: p for g in inventory.allocatable() for p in g.processes}
        assert (by_pid[4242].sm_util, by_pid[4343].sm_util, by_pid[4444].sm_util) == (55, 0, 0)
        assert by_pid[4545].sm_util is None  # MIG: not supported
    finally:
        nvml_double.BOX = nvml_double.eight_a100()


def test_usage_adds_a_kernels_processes_over_its_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml_double.BOX = nvml_double.eight_a100()
    try:
        boxes = nvml_double.BOX.devices
        boxes[0].processes, boxes[0].process_util = [(10, 2 * nvml_double.GiB)], {10: 80}
        boxes[1].processes, boxes[1].process_util = [(11, nvml_double.GiB), (12, 5)], {11: 30}
        containers = {10: "c" * 64, 11: "c" * 64, 12: "d" * 64}
        monkeypatch.setattr(
            "jupyter_gpu_containers.gpus.gpu_usage.container_of_pid",
            lambda pid: containers.get(pid),
        )
        kernels = [
            WatchedKernel("k1", "c" * 64, (boxes[0].uuid, boxes[1].uuid)),
            WatchedKernel("k2", "e" * 64, (boxes[2].uuid,)),
        ]
        usage = usage_by_kernel(read_nvml(nvml_double), kernels)
        # 80 % of one GPU and 30 % of the other: 55 % of the kernel's two GPUs.
        assert usage == {"k1": (3 * nvml_double.GiB, 55)}
    finally:
        nvml_double.BOX = nvml_double.eight_a100()
    assert gpus_module.PROCESS_UTIL_WINDOW > 0


@pytest.mark.server_config(
    lambda _: {**NVML_DOUBLE_CONFIG, "GPUUsage": {"interval": 0.2, "history_seconds": 60}}
)
async def test_gpu_use_per_kernel_from_nvml_processes(
    two_gpu_nvml_box: nvml_double.Box,
    jp_fetch: Any,
    conformance: Conformance,
    docker_client: docker.DockerClient,
) -> None:
    kernel_id = await start_kernel(jp_fetch, kernel_name(NGC_IMAGE))
    container = kernel_container(docker_client, kernel_id)
    (held,) = container.labels[L.GPUS].split(",")
    device = next(d for d in two_gpu_nvml_box.devices if d.uuid == held)
    # NVML reports host pids: the kernel's process, and another container's (pid 1: not ours).
    pid = container.attrs["State"]["Pid"]
    device.processes = [(pid, 3 * nvml_double.GiB), (1, 5 * nvml_double.GiB)]
    device.process_util = {pid: 40, 1: 90}

    async def samples(predicate: Any) -> list[Any]:
        for _ in range(100):
            entry = next(
                k
                for k in (await listing(jp_fetch, conformance))["kernels"]
                if k["kernel_id"] == kernel_id
            )
            if predicate(entry["usage"]["samples"]):
                return list(entry["usage"]["samples"])
            await asyncio.sleep(0.1)
        raise AssertionError(f"no such samples: {entry['usage']}")

    found = await samples(lambda s: any(x["utilization"] == 40 for x in s))
    last = found[-1]
    assert (last["memory_used"], last["utilization"]) == (3 * nvml_double.GiB, 40)
    device.process_util = {pid: 75}
    found = await samples(lambda s: s[-1]["utilization"] == 75)
    assert [x["at"] for x in found] == sorted(x["at"] for x in found)

    got = await view(jp_fetch, conformance, kernel_id)
    usage = got["usage"]
    assert usage["source"] == "nvml" and usage["reason"] == ""
    assert usage["memory_total"] == device.total
    assert usage["since"] is not None
    assert got["launched_at"] - 0.01 <= usage["since"] <= time.time()
    assert usage["samples"][-1]["memory_used"] == 3 * nvml_double.GiB
    assert got["gpus"] == [
        {
            "uuid": held,
            "index": str(two_gpu_nvml_box.devices.index(device)),
            "name": device.name,
            "memory_total": device.total,
        }
    ]


# ----------------------------------------------------------------------------- two users


@pytest.fixture
def user_homes() -> Iterator[list[UserHome]]:
    """The homes a test makes; every server in them is stopped, every home removed."""
    made: list[UserHome] = []
    yield made
    for home in made:
        home.close()


@pytest.fixture
def host_state() -> Iterator[Path]:
    with host_state_dir() as path:
        yield path


@needs_accounts
async def test_another_users_kernel_is_not_found_on_your_server(
    user_homes: list[UserHome], host_state: Path
) -> None:
    """alice's kernel, asked of bob's server (both real accounts, one engine): a 404 that
    names nobody; alice's own server answers her."""
    alice = home_for(user_homes, ALICE, host_state).start()
    bob = home_for(user_homes, BOB, host_state).start()
    code, kernel = await start(alice, CPU_SPEC)
    assert code == 201, kernel
    try:
        code, mine = await alice.answer("GET", "gpu-containers", "kernels", kernel["id"])
        assert code == 200 and mine["kernel_id"] == kernel["id"]
        for path in (["kernels", kernel["id"]], ["kernels", kernel["id"], "log"]):
            code, answer = await bob.answer("GET", "gpu-containers", *path)
            assert (code, answer["message"]) == (404, NOT_YOURS)
            assert ALICE not in json.dumps(answer)
        code, listed = await bob.answer("GET", "gpu-containers", "kernels")
        assert code == 200 and listed["kernels"] == []
    finally:
        await stop_kernels(alice)
