"""A killed test run's leftovers are removed by the next run, and a run still going is never
touched (stale_runs.py), against the real engine."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import docker
import pytest
import stale_runs
from conftest import DEBIAN_IMAGE, TEST_RUN

pytestmark = pytest.mark.usefixtures("docker_client")


def started(pid: int) -> int:
    return int(stale_runs._boot_time() + stale_runs._started_ticks(pid) / stale_runs._ticks())


def pid_max() -> int:
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read())


# A pid no process can have: the run it names is over.
DEAD_RUN = f"{started(os.getpid())}-{pid_max() + 1}"
# Another run started by this very process: going on while this test runs, and over for the
# next run's sweep should this one be killed before its clean-up (nothing is left for good).
LIVE_RUN = f"ui-{started(os.getpid())}-{os.getpid()}"


def test_run_ids_say_whether_their_run_is_over() -> None:
    assert stale_runs.run_is_over(stale_runs.new_run_id()) is False
    assert stale_runs.run_is_over(TEST_RUN) is False
    assert stale_runs.run_is_over(LIVE_RUN) is False
    assert stale_runs.run_is_over(DEAD_RUN) is True
    # This process's pid, but a run that started an hour before it: the pid was reused.
    assert stale_runs.run_is_over(f"{started(os.getpid()) - 3600}-{os.getpid()}") is True
    assert stale_runs.run_is_over("3f9c0a1b2d") is None


@pytest.fixture
def made(docker_client: docker.DockerClient) -> Iterator[list[Any]]:
    """Containers and tags this test makes under other runs' labels, removed whatever happens."""
    things: list[Any] = []
    yield things
    for thing in things:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            if isinstance(thing, str):
                docker_client.images.remove(thing)
            else:
                thing.remove(force=True)


def test_leftovers_of_an_ended_run_go_and_a_live_runs_stay(
    docker_client: docker.DockerClient, made: list[Any]
) -> None:
    def container(run: str) -> Any:
        c = docker_client.containers.create(
            DEBIAN_IMAGE, "true", labels={stale_runs.TEST_LABEL: run}
        )
        made.append(c)
        return c

    dead, live = container(DEAD_RUN), container(LIVE_RUN)
    base = docker_client.images.get(DEBIAN_IMAGE)
    for run in (DEAD_RUN, LIVE_RUN):
        tag = f"jgc-test/stale-runs:{run}"
        made.append(tag)
        base.tag(tag)

    said: list[str] = []
    stale_runs.sweep(docker_client, TEST_RUN, said.append)

    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(dead.id)
    docker_client.containers.get(live.id)  # still there
    tags = set(docker_client.images.get(DEBIAN_IMAGE).tags)
    assert f"jgc-test/stale-runs:{DEAD_RUN}" not in tags
    assert {f"jgc-test/stale-runs:{LIVE_RUN}", DEBIAN_IMAGE} <= tags
    assert f"removed 1 container(s) of the ended test run {DEAD_RUN}" in said
    assert f"removed tag jgc-test/stale-runs:{DEAD_RUN} of the ended test run {DEAD_RUN}" in said
