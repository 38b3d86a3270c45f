"""Pre-pulls before class, image disk use, and pruning (prepull.py), against the real engine and
a real private registry (tests/registry.py).

The schedule's clock is PrePuller.clock, a seam these tests move to a scheduled time; the pulls,
the records in the host state directory and the removals are real."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import os
import secrets
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest
import yaml
from conftest import DEBIAN_IMAGE, TEST_LABEL, TEST_RUN, kernel_name
from kernel_io import start_kernel
from registry import PrivateRegistry
from stale_runs import image_ids
from test_openapi import SPEC_PATH, Conformance, _StrictLoader
from test_pulls import ended, watch
from traitlets import TraitError

from jupyter_gpu_containers.base.references import normalize_reference
from jupyter_gpu_containers.images.prepull import PrePuller
from jupyter_gpu_containers.images.prepull_schedule import next_daily, parse_entry
from jupyter_gpu_containers.images.pulls import PULLS_TURNED_OFF
from jupyter_gpu_containers.services import Services, services_for

pytestmark = pytest.mark.usefixtures("docker_client")

# The container the pruning test keeps an image in use with.
PRUNE_LABEL = "org.jupyter.gpu-containers.test-prune-user"
AT = (3, 0)  # the scheduled time of day these tests use: "03:00"


@functools.cache
def conformance() -> Conformance:
    with SPEC_PATH.open(encoding="utf-8") as f:
        return Conformance(yaml.load(f, Loader=_StrictLoader))


async def get(jp_fetch: Any, *path: str) -> Any:
    """GET /gpu-containers/<path>: its JSON, which must be what openapi.yaml describes."""
    response = await jp_fetch("gpu-containers", *path)
    return conformance().check(response, "/gpu-containers/" + "/".join(path), "get")


def push_fresh_image(client: docker.DockerClient, registry: PrivateRegistry, name: str) -> str:
    """Build an image of its own (a fresh 4 MiB random layer on the Debian test image, so a pull
    downloads something and no two such images share an id), push it to the test registry as
    ``name``, and leave it nowhere on this host; the registry reference."""
    nonce = secrets.token_hex(8)
    dockerfile = (
        f"FROM {DEBIAN_IMAGE}\n"
        f"RUN echo {nonce} && head -c 4194304 /dev/urandom > /opt/prepull-{nonce}.bin\n"
        f"LABEL {TEST_LABEL}={TEST_RUN}\n"
    )
    local = f"jgc-test/prepull-{nonce}:latest"
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=local, rm=True)
    try:
        ref = registry.push(local, name)
    finally:
        gone(client, registry, local)
    gone(client, registry, ref)
    return ref


def gone(client: docker.DockerClient, registry: PrivateRegistry, ref: str) -> None:
    """Remove the local ``ref``. A test server of another session on this engine may be
    probing it (a container that uses it, which makes the engine keep it): until it is gone."""
    deadline = time.monotonic() + 120
    while True:
        registry.remove_local(ref)
        try:
            client.images.get(ref)
        except docker.errors.ImageNotFound:
            return
        assert time.monotonic() < deadline, f"{ref} stays: a container keeps using it"
        time.sleep(0.5)


def registry_pull(client: docker.DockerClient, registry: PrivateRegistry, ref: str) -> str:
    """Pull ``ref`` from the test registry as a test would (not through the extension); its
    image id."""
    repo, tag = ref.rsplit(":", 1)
    client.api.pull(repo, tag, auth_config=registry.auth_config)
    return str(client.images.get(ref).id)


# ---------------------------------------------------------------------------- the schedule itself


def test_schedule_lines_are_checked_with_a_sentence() -> None:
    assert parse_entry({"image": "ubuntu:24.04", "at": "02:30"}).at == (2, 30)
    every = parse_entry({"image": "nvcr.io/nvidia/pytorch:24.05-py3", "every": 6})
    assert (every.every, every.image) == (6.0, "nvcr.io/nvidia/pytorch:24.05-py3")
    for bad, says in [
        ({"image": "ubuntu:24.04"}, "either at"),
        ({"image": "ubuntu:24.04", "at": "02:00", "every": 1}, "either at"),
        ({"image": "ubuntu:24.04", "at": "2am"}, "HH:MM"),
        ({"image": "ubuntu:24.04", "at": "24:00"}, "HH:MM"),
        ({"image": "ubuntu:24.04", "every": 0}, "above 0"),
        ({"image": "ubuntu:24.04", "every": True}, "above 0"),
        ({"image": "", "every": 1}, "names no image"),
        ({"image": "Bad Ref!", "every": 1}, "reference"),
        ({"image": "ubuntu:24.04", "time": "02:00"}, "not schedule keys"),
        ("ubuntu:24.04", "is not"),
    ]:
        with pytest.raises(ValueError, match=says):
            parse_entry(bad)
    with pytest.raises(TraitError, match=r"PrePuller.schedule: .*HH:MM"):
        PrePuller(
            schedule=[{"image": "ubuntu:24.04", "at": "25:00"}],
            backend=None,
            pulls=None,
            policy=None,
            listed=list,
            state=None,
        )


def test_a_daily_time_is_the_next_one_after_the_last_run() -> None:
    noon = time.mktime((2025, 3, 10, 12, 0, 0, 0, 0, -1))
    assert next_daily(noon, 13, 5) == time.mktime((2025, 3, 10, 13, 5, 0, 0, 0, -1))
    assert next_daily(noon, 2, 0) == time.mktime((2025, 3, 11, 2, 0, 0, 0, 0, -1))
    # Exactly at the time: the next day's (a run at 02:00 does not make 02:00 due again).
    two = time.mktime((2025, 3, 11, 2, 0, 0, 0, 0, -1))
    assert next_daily(two, 2, 0) == time.mktime((2025, 3, 12, 2, 0, 0, 0, 0, -1))
    # The end of a month.
    assert next_daily(time.mktime((2025, 1, 31, 23, 0, 0, 0, 0, -1)), 1, 0) == time.mktime(
        (2025, 2, 1, 1, 0, 0, 0, 0, -1)
    )


# ---------------------------------------------------------------------------- a scheduled pull


@pytest.fixture
def scheduled(private_registry: PrivateRegistry, docker_client: Any) -> Iterator[str]:
    """The small test image in the registry, not on this host; removed from it afterwards."""
    ref = push_fresh_image(docker_client, private_registry, "jgc/prepull-course:1")
    yield ref
    gone(docker_client, private_registry, ref)


@pytest.fixture
def jp_server_config(
    jp_server_config: dict[str, Any], request: pytest.FixtureRequest
) -> dict[str, Any]:
    """The test's extra config, which names the registry and images known only once the
    fixtures above ran: a test sets ``prepull_config`` (a fixture of its own)."""
    if "prepull_config" in request.fixturenames:
        extra = request.getfixturevalue("prepull_config")
        for section, values in extra.items():
            jp_server_config.setdefault(section, {}).update(values)
    return jp_server_config


@pytest.fixture
def prepull_config(
    request: pytest.FixtureRequest, private_registry: PrivateRegistry
) -> dict[str, Any]:
    config: dict[str, Any] = {
        # The administrator's login: a scheduled pull uses it, never a user's.
        "RegistryCredentials": {
            "registry_auth": {
                private_registry.host: {
                    "username": private_registry.username,
                    "password": private_registry.password,
                }
            }
        },
        "PullManager": {"progress_interval": 0.0},
    }
    if "scheduled" in request.fixturenames:
        ref = request.getfixturevalue("scheduled")
        config["PrePuller"] = {
            "schedule": [{"image": ref, "at": f"{AT[0]:02d}:{AT[1]:02d}"}],
            "pull_missing_at_once": False,
            "check_interval": 0.05,
        }
        # Users may not pull here; the administrator's schedule still does.
        config["ContainerPolicy"] = {"allow_user_pulls": False}
    if "prunable" in request.fixturenames:
        refs = request.getfixturevalue("prunable")
        config["ImageCatalog"] = {"extra_listed_images": [refs["unused"], refs["used"]]}
        config["PrePuller"] = {
            "prune_after_days": 1.0,
            "prune_images": ["*/jgc/prune-recent:*"],
            "check_interval": 3600.0,
        }
    return config


async def until(predicate: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await predicate()
        if found:
            return found
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_scheduled_pull_runs_at_its_time_with_progress_and_a_restart_does_not_repeat_it(
    jp_fetch: Any,
    jp_serverapp: Any,
    docker_client: Any,
    private_registry: PrivateRegistry,
    scheduled: str,
    prepull_config: dict[str, Any],
) -> None:
    services = services_for(jp_serverapp)
    assert services is not None
    prepull = services.prepull
    due = next_daily(time.time(), *AT)
    now = [due - 1.0]
    prepull.clock = lambda: now[0]
    # In-process test servers start no extension by themselves: the app starts the schedule.
    await jp_serverapp.extension_manager.start_all_extensions()

    # Users' own pulls are off: the status tells the panel so (no Pull button that can only fail).
    assert (await get(jp_fetch, "status"))["pull_refusal"] == PULLS_TURNED_OFF.sentence

    # A second before its time: nothing pulls, and the schedule says when it will.
    await asyncio.sleep(0.3)  # several checks of the periodic task
    report = await get(jp_fetch, "prepull")
    [row] = report["schedule"]
    assert report["running"] is True
    assert row["image"] == normalize_reference(scheduled) and row["at"] == "03:00"
    assert row["last_run"] is None and row["pull"] is None
    assert row["next_run"] == prepull_iso(due)
    assert services.pulls.listing() == []
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(scheduled)

    # Its time comes: the periodic task starts the pull, whose progress is the pull manager's.
    now[0] = due + 1.0

    async def pulling() -> Any:
        rows = (await get(jp_fetch, "prepull"))["schedule"]
        return rows[0]["pull"]

    pull = await until(pulling)
    assert pull["image"] == normalize_reference(scheduled)
    stream, request = watch(jp_fetch, pull["id"])
    await stream.until(ended)
    await request
    name, final = stream.events[-1]
    assert (name, final["state"]) == ("done", "done"), final
    assert final["total_bytes"] > 0, final
    assert final["downloaded_bytes"] == final["total_bytes"]
    assert final["progress"] == 1.0 and final["layers"]
    local = docker_client.images.get(scheduled)

    async def recorded() -> Any:
        row = (await get(jp_fetch, "prepull"))["schedule"][0]
        return row if row["last_run"] and row["last_run"]["state"] == "done" else None

    row = await until(recorded)
    assert row["last_run"]["image_id"] == local.id
    assert row["last_run"]["digest"].startswith("sha256:")
    assert row["next_run"] == prepull_iso(next_daily(due + 1.0, *AT))  # tomorrow's
    # Not a private pull of the server's user: the administrator's login pulled it.
    assert not [n for n in os.listdir(services.state.path) if n.startswith("private-images-")]

    # A restart (a new PrePuller on the same host state) does not pull it again at once.
    restarted = PrePuller(
        parent=jp_serverapp,
        backend=services.backend,
        pulls=services.pulls,
        policy=services.policy,
        listed=services.listed_images,
        state=lambda: services.state,
    )
    restarted.clock = lambda: due + 60.0
    pulls_before = len(services.pulls.listing())
    await restarted.check_now()
    assert len(services.pulls.listing()) == pulls_before
    [again] = (await restarted.report())["schedule"]
    assert again["last_run"]["state"] == "done"
    assert again["next_run"] == prepull_iso(next_daily(due + 1.0, *AT))


def prepull_iso(when: float) -> str:
    from jupyter_gpu_containers.base.records import iso_time

    return iso_time(when)


# ---------------------------------------------------------------------------- pruning and disk use


@pytest.fixture
def prunable(private_registry: PrivateRegistry, docker_client: Any) -> Iterator[dict[str, str]]:
    """Four images pulled from the registry (each a build of its own): one listed and unused,
    one listed and used by a container, one matched by a pattern and launched recently, one
    nobody names. Removed afterwards, with the container."""
    refs = {
        name: push_fresh_image(docker_client, private_registry, f"jgc/prune-{name}:1")
        for name in ("unused", "used", "recent", "unnamed")
    }
    for ref in refs.values():
        registry_pull(docker_client, private_registry, ref)
    container = docker_client.containers.create(
        refs["used"], ["true"], labels={TEST_LABEL: TEST_RUN, PRUNE_LABEL: TEST_RUN}
    )
    try:
        yield refs
    finally:
        container.remove(force=True)
        for ref in refs.values():
            gone(docker_client, private_registry, ref)


async def only_our_container(client: docker.DockerClient, ids: dict[str, str]) -> None:
    """Wait until no container but the test's own (on the "used" image) uses the test's
    images: readiness probes (this server's, or a test server's of another session on this
    engine, which probes every local image it finds) are containers that use them too."""

    def others() -> list[str]:
        found = []
        for container in client.containers.list(all=True, ignore_removed=True):
            image = container.attrs.get("Image", "")
            if image in ids.values() and container.labels.get(PRUNE_LABEL) != TEST_RUN:
                found.append(container.name)
        return found

    deadline = time.monotonic() + 120
    while await asyncio.to_thread(others):
        assert time.monotonic() < deadline, "other containers keep using the test's images"
        await asyncio.sleep(0.5)


async def test_prune_removes_an_unused_image_and_keeps_used_and_unnamed_ones(
    jp_fetch: Any,
    jp_serverapp: Any,
    docker_client: Any,
    prunable: dict[str, str],
    prepull_config: dict[str, Any],
) -> None:
    services = services_for(jp_serverapp)
    assert services is not None
    prepull = services.prepull
    ids = {name: docker_client.images.get(ref).id for name, ref in prunable.items()}

    # Disk use in the images API: per image, and the host's totals. The first look starts
    # readiness probes of the new images, containers that use them too: once they are done.
    await get(jp_fetch, "images")
    await asyncio.to_thread(services.probe.wait_idle, 180)
    await only_our_container(docker_client, ids)
    catalog = await get(jp_fetch, "images")
    rows = {row["reference"]: row for row in catalog["images"]}
    used_row = rows[normalize_reference(prunable["used"])]
    assert used_row["containers"] == 1 and used_row["size"] > 0
    assert used_row["shared_size"] > 0  # the Debian base layers every test image shares
    assert used_row["unique_size"] == used_row["size"] - used_row["shared_size"] > 0
    assert rows[normalize_reference(prunable["unused"])]["containers"] == 0
    disk = catalog["disk"]
    assert disk["images"] >= 4 and disk["unused_images"] >= 3
    assert 0 < disk["layers_bytes"] < disk["images_bytes"]  # shared layers counted once
    listed_only = [row for row in catalog["images"] if not row["pulled"]]
    assert all(row["containers"] is None and row["shared_size"] is None for row in listed_only)

    # A first pass sees the images arrive: nothing goes, however old they are.
    first = await prepull.prune_now()
    assert first["removed"] == []
    assert ids["unused"] in image_ids(docker_client)

    # Two days later (one is the limit): a kernel launched on the "recent" image just now.
    later = time.time() + 2 * 86400.0
    prepull.clock = lambda: later
    await asyncio.to_thread(prepull.record_use, prunable["recent"], ids["recent"])
    for _attempt in range(10):
        await only_our_container(docker_client, ids)
        report = await prepull.prune_now()
        kept = {row["id"]: row["reason"] for row in report["kept"]}
        # A probe of another session's server that started meanwhile uses an image too, and
        # pruning rightly keeps it: look again once it is over.
        if kept.get(ids["used"]) == "1 container uses it." and all(
            "container" not in kept.get(ids[name], "") for name in ("unused", "recent")
        ):
            break

    assert [row["id"] for row in report["removed"]] == [ids["unused"]]
    assert report["freed_bytes"] > 0
    present = image_ids(docker_client)
    assert ids["unused"] not in present
    assert {ids["used"], ids["recent"], ids["unnamed"]} <= present
    assert kept[ids["used"]] == "1 container uses it."
    assert "recently" in kept[ids["recent"]]
    assert ids["unnamed"] not in kept  # nobody named it: never considered

    # What ran is in the host state (and the API): a non-administrator sees the counts.
    view = (await get(jp_fetch, "prepull"))["pruning"]
    assert view["enabled"] is True and view["after_days"] == 1.0
    assert view["last_run"]["removed_count"] == 1 and view["last_run"]["removed"] is None
    assert view["last_run"]["kept_count"] == 2


async def test_a_launch_records_when_its_image_was_last_used(
    jp_fetch: Any, jp_serverapp: Any, tmp_path: Any
) -> None:
    services: Services | None = services_for(jp_serverapp)
    assert services is not None
    before = time.time()
    kernel_id = await start_kernel(jp_fetch, kernel_name(DEBIAN_IMAGE))
    try:
        path = tmp_path / "state" / f"image-use-{os.geteuid()}.json"
        record = json.loads(path.read_text())["images"][normalize_reference(DEBIAN_IMAGE)]
        assert record["used"] >= before
        assert record["image_id"] == services.backend.inspect_image_sync(DEBIAN_IMAGE).id
        assert oct(path.stat().st_mode & 0o777) == "0o644"
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
