"""The images' disk report on the real Docker engine (backends/docker/images.py, the catalog's
sizes and containers per image): what it answers is what the engine's report says now, after
containers and tags come and go by other hands; it is kept between reads while the engine's
events show no change (event_window.py), and taken again after a change, after a window fuller
than the engine keeps, and after the engine's connections were cut (as a restart cuts them).

The containers counted are of an image of each test's own (committed from the test image, so a
new id): the other pytest session's benchmark runs containers of the test image itself, and its
servers probe every new image that carries none of the project's record labels."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import DEBIAN_IMAGE, TEST_IMAGE_LABEL, TEST_LABEL, TEST_RUN
from faults import engine_proxy
from servers import wait_until

from jupyter_gpu_containers.backends.docker import event_window
from jupyter_gpu_containers.backends.docker.engine import Engine
from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.base.records import ImageDiskUse

TAG = f"jgc-test/disk-report:{TEST_RUN}"
OWN = f"jgc-test/disk-report-own:{TEST_RUN}"


@pytest.fixture
def image(docker_client: Any) -> Iterator[str]:
    """An image of the test's own (its id), whose containers only the test makes: the test
    image committed with the run's image label, removed at the end."""
    source = docker_client.api.create_container(
        DEBIAN_IMAGE, ["true"], labels={TEST_LABEL: TEST_RUN}
    )["Id"]
    try:
        repository, _, tag = OWN.rpartition(":")
        # A key of the project's record namespace (not one recovery or the ledger lists
        # containers by): no server on the host probes the image (probe.py), so the other
        # pytest session's servers, which probe every new local image, add no container of it.
        labels = {TEST_IMAGE_LABEL: TEST_RUN, L.NOTEBOOK: "disk-report-test"}
        committed = docker_client.api.commit(
            source, repository=repository, tag=tag, conf={"Labels": labels}
        )
    finally:
        docker_client.api.remove_container(source, force=True)
    yield str(committed["Id"])
    with contextlib.suppress(Exception):
        docker_client.api.remove_image(OWN, force=True)


@pytest.fixture
def made(docker_client: Any, image: str) -> Iterator[list[str]]:
    """Containers a test creates (never started but by the test), removed whatever happens; and
    the test's tag."""
    ids: list[str] = []
    yield ids
    for container_id in ids:
        with contextlib.suppress(Exception):
            docker_client.api.remove_container(container_id, force=True)
    with contextlib.suppress(Exception):
        docker_client.api.remove_image(TAG, noprune=True)


def create(docker_client: Any, made: list[str], command: str = "true") -> str:
    container_id = str(
        docker_client.api.create_container(
            OWN,
            [command],
            name=f"jgc-disk-{len(made)}-{TEST_RUN}",
            labels={TEST_LABEL: TEST_RUN},
        )["Id"]
    )
    made.append(container_id)
    return container_id


async def the_image(engine: Engine, image_id: str) -> ImageDiskUse:
    use = await asyncio.to_thread(engine.image_disk_use_sync)
    (image,) = [i for i in use.images if i.id == image_id]
    return image


async def settled(engine: Engine, image_id: str) -> int:
    """Once the engine's events are watched and a report is kept (reads within a few seconds of
    a change take it again: the window reaches back before the report): the reports taken."""
    await the_image(engine, image_id)
    await watched(engine, True)
    for _ in range(100):
        taken = engine.disk_reports
        for _ in range(3):
            await the_image(engine, image_id)
        if engine.disk_reports == taken:
            return taken
        await asyncio.sleep(0.2)
    raise AssertionError("the disk report was taken again at every read for 20 s")


async def watched(engine: Engine, state: bool) -> None:
    """Until the engine's event watcher's stream is open (or closed)."""

    async def now() -> bool:
        return engine.ledger_watching is state

    await wait_until(now, 60, f"the engine's event watcher {'open' if state else 'closed'}")


async def test_the_report_is_what_the_engine_says_after_changes_by_other_hands(
    docker_client: Any, image: str, made: list[str]
) -> None:
    image_id = image
    engine = Engine()
    try:
        await settled(engine, image_id)
        before = await the_image(engine, image_id)
        first = create(docker_client, made)
        assert (await the_image(engine, image_id)).containers == before.containers + 1
        create(docker_client, made)
        assert (await the_image(engine, image_id)).containers == before.containers + 2
        docker_client.api.remove_container(first, force=True)
        assert (await the_image(engine, image_id)).containers == before.containers + 1

        repository, _, tag = TAG.rpartition(":")
        docker_client.api.tag(OWN, repository, tag)
        assert TAG in (await the_image(engine, image_id)).tags
        docker_client.api.remove_image(TAG, noprune=True)
        assert TAG not in (await the_image(engine, image_id)).tags

        # A kept report is the engine's own of the moment.
        taken = await settled(engine, image_id)
        (engines,) = [i for i in docker_client.api.df()["Images"] if i["Id"] == image_id]
        kept = await the_image(engine, image_id)
        assert engine.disk_reports == taken
        assert (kept.containers, kept.size, kept.shared_size, set(kept.tags)) == (
            engines["Containers"],
            engines["Size"],
            engines["SharedSize"],
            set(engines["RepoTags"]),
        )
    finally:
        engine.close()


async def test_a_window_fuller_than_the_engine_keeps_takes_the_report_again(
    docker_client: Any, image: str, made: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine keeps its last 256 events of every kind (three stand in for them here): a
    window as full may have lost a change, even when events that change nothing filled it."""
    image_id = image
    monkeypatch.setattr(event_window, "RING", 3)
    engine = Engine()
    try:
        container_id = create(docker_client, made)
        taken = await settled(engine, image_id)
        # A start of a container that exists: its events (network connect, start, die,
        # disconnect) change no size and no count.
        docker_client.api.start(container_id)
        docker_client.api.wait(container_id, timeout=60)
        await the_image(engine, image_id)
        assert engine.disk_reports == taken + 1
    finally:
        engine.close()


async def test_an_engine_whose_connections_were_cut_takes_the_report_again(
    docker_client: Any, image: str, made: list[str]
) -> None:
    """A restarted engine forgets its events: a report kept from before cannot be vouched for."""
    image_id = image
    with engine_proxy() as proxy:
        engine = Engine(docker_url=proxy.url)
        try:
            before = await the_image(engine, image_id)
            taken = await settled(engine, image_id)
            proxy.stop()  # cuts every connection, the event watcher's stream among them
            await watched(engine, False)
            create(docker_client, made)  # through the engine's own socket
            proxy.start()
            assert (await the_image(engine, image_id)).containers == before.containers + 1
            assert engine.disk_reports > taken
        finally:
            engine.close()
