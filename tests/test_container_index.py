"""The GPU ledger's index of managed containers on the real Docker engine
(backends/docker/container_index.py): what it answers is what a list would answer, after
containers come and go by other hands, with one list taken while the engine can vouch for the
events between reads, and a new list when it cannot (a window fuller than the engine keeps, an
engine whose connections were cut, as a restart cuts them)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import DEBIAN_IMAGE, TEST_LABEL, TEST_RUN
from faults import engine_proxy

from jupyter_gpu_containers.backends.docker import event_window
from jupyter_gpu_containers.backends.docker.engine import Engine
from jupyter_gpu_containers.base import labels as L

# Not the test GPUs' labels: these stand-ins book nothing, so the other tests' ledgers are unmoved.
LABELS = {L.MANAGED: "true", TEST_LABEL: TEST_RUN, L.KERNEL_ID: "index-test"}


@pytest.fixture
def made(docker_client: Any) -> Iterator[list[str]]:
    """Containers a test creates (never started), removed whatever happens."""
    ids: list[str] = []
    yield ids
    for container_id in ids:
        with contextlib.suppress(Exception):
            docker_client.api.remove_container(container_id, force=True)


def create(docker_client: Any, made: list[str], name: str) -> str:
    container_id = str(
        docker_client.api.create_container(
            DEBIAN_IMAGE,
            ["true"],
            name=f"jgc-index-{name}-{TEST_RUN}",
            labels={**LABELS, L.NOTEBOOK: name},
        )["Id"]
    )
    made.append(container_id)
    return container_id


async def ours(engine: Engine) -> dict[str, dict[str, str]]:
    """This run's stand-ins in the index: id -> labels."""
    return {
        r.id: r.labels
        for r in await engine.ledger_containers()
        if r.labels.get(TEST_LABEL) == TEST_RUN and r.labels.get(L.KERNEL_ID) == "index-test"
    }


async def listed(engine: Engine) -> set[str]:
    return {r.id for r in await engine.list_containers({**LABELS})}


async def test_the_index_answers_what_a_list_would_with_one_list(
    docker_client: Any, made: list[str]
) -> None:
    engine = Engine()
    try:
        assert await ours(engine) == {}
        first = await watching(engine)
        a = create(docker_client, made, "a")
        seen = await ours(engine)
        assert set(seen) == {a} == await listed(engine)
        # The labels come from the engine's event: the ledger reads its bookings from them.
        assert seen[a][L.NOTEBOOK] == "a" and seen[a][L.MANAGED] == "true"

        b = create(docker_client, made, "b")
        docker_client.api.remove_container(a, force=True)
        assert set(await ours(engine)) == {b} == await listed(engine)

        # Made and gone between two reads: neither left behind nor missed.
        c = create(docker_client, made, "c")
        docker_client.api.remove_container(c, force=True)
        d = create(docker_client, made, "d")
        assert set(await ours(engine)) == {b, d} == await listed(engine)
        for _ in range(5):  # reads with nothing new cost no list
            assert set(await ours(engine)) == {b, d}
        assert engine.ledger_lists == first
    finally:
        engine.close()


async def test_a_window_fuller_than_the_engine_keeps_is_listed_again(
    docker_client: Any, made: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine keeps its last 256 events of every kind (three stand in for them here): a
    window as full may have lost one of ours, even when the others' events filled it."""
    monkeypatch.setattr(event_window, "RING", 3)
    engine = Engine()
    try:
        first = await watching(engine)
        for i in range(3):  # not managed: events of the engine's, none of the ledger's
            made.append(
                str(
                    docker_client.api.create_container(
                        DEBIAN_IMAGE,
                        ["true"],
                        name=f"jgc-index-other-{i}-{TEST_RUN}",
                        labels={TEST_LABEL: TEST_RUN},
                    )["Id"]
                )
            )
        ours_now = create(docker_client, made, "ring")
        assert set(await ours(engine)) == {ours_now}
        assert engine.ledger_lists == first + 1
    finally:
        engine.close()


async def test_an_engine_whose_connections_were_cut_is_listed_again(
    docker_client: Any, made: list[str]
) -> None:
    """A restarted engine forgets its events: the index cannot read what happened before from
    it, and lists once the engine answers again."""
    with engine_proxy() as proxy:
        engine = Engine(docker_url=proxy.url)
        try:
            first = await watching(engine)
            proxy.stop()  # cuts every connection, the index's event stream among them
            await until(lambda: not engine.ledger_watching)
            during = create(docker_client, made, "during")  # through the engine's own socket
            proxy.start()
            assert set(await ours(engine)) == {during}
            assert engine.ledger_lists == first + 1
            # Its stream open again, the index keeps its records between reads once more.
            settled = await watching(engine)
            after = create(docker_client, made, "after")
            assert set(await ours(engine)) == {during, after}
            assert engine.ledger_lists == settled
        finally:
            engine.close()


async def watching(engine: Engine) -> int:
    """Once the index watches the engine (its first read starts the watcher) and has listed
    since: the lists taken so far."""
    await ours(engine)
    await until(lambda: engine.ledger_watching)
    await ours(engine)  # the list that a read without the watcher left to the next one
    return engine.ledger_lists


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition``; a minute is a failure, not a slow machine."""
    for _ in range(600):
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the index's watcher did not change its state within a minute")
