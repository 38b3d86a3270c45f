"""What earlier test runs left on the engine when they could not clean up after themselves.

Every run removes what it made, even when a test fails (conftest.py). A run that is killed (a
session stopped, a timeout, kill -9) cannot: its kernel containers stay, booking the test GPUs,
and so do the images it built, some of which are made to be slow (a probe that never answers).
On the next run, on the same engine, those would hold GPUs the tests count on and slow every
listing of the catalog. So a run first removes the leftovers of runs that are over.

A run's id (the test-run label's value, and the tag of the images it builds) is
``<unix time>-<pid>``, optionally with a prefix (``ui-…``): the process that started the run and
when. The run is over when that process is gone, or when the pid now belongs to a process that
started later. A run id of any other form cannot be judged: its leftovers are removed only when
none of its containers runs. Runs still going, on the same engine, are never touched.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable

import docker

TEST_LABEL = "org.jupyter.gpu-containers.test-run"
# The run label of the images a run builds. Not TEST_LABEL: a container made from an image
# inherits the image's labels, and one that a server of the other pytest session makes from it
# (a probe of every local image) would count as this run's leftover.
TEST_IMAGE_LABEL = "org.jupyter.gpu-containers.test-image-run"
_RUN_ID = re.compile(r"(?:^|-)(\d{9,11})-(\d{1,10})$")


def new_run_id() -> str:
    """A run id for this process, which later runs can judge."""
    return f"{int(_boot_time() + _started_ticks(os.getpid()) / _ticks())}-{os.getpid()}"


def _ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _boot_time() -> float:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    raise RuntimeError("/proc/stat gives no boot time")


def _started_ticks(pid: int) -> int:
    """When ``pid`` started, in clock ticks since boot."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name (field 2) may hold spaces and parentheses: count from its end.
        after_name = f.read().rsplit(")", 1)[1].split()
    return int(after_name[19])  # field 22, starttime


def run_is_over(run_id: str) -> bool | None:
    """Whether the run ``run_id`` has ended; None when its id does not say."""
    match = _RUN_ID.search(run_id)
    if match is None:
        return None
    started_by, pid = int(match.group(1)), int(match.group(2))
    try:
        process_start = _boot_time() + _started_ticks(pid) / _ticks()
    except (OSError, ValueError, IndexError):
        return True  # no such process
    # The same pid, but a process that started after the run did: the pid was reused.
    return process_start > started_by + 2


def sweep(client: docker.DockerClient, current: str, say: Callable[[str], None]) -> None:
    """Remove the containers, images and image tags of test runs that are over (never
    ``current``'s), saying what was removed."""
    # ignore_removed: a container another run removes while this lists them is no error.
    containers = client.containers.list(
        all=True, filters={"label": TEST_LABEL}, ignore_removed=True
    )
    runs: dict[str, list[object]] = {}
    for c in containers:
        runs.setdefault(c.labels.get(TEST_LABEL, ""), []).append(c)

    def over(run: str) -> bool:
        if not run or run == current:
            return False
        verdict = run_is_over(run)
        if verdict is None:  # an id that says nothing: over once nothing of it runs
            return all(getattr(c, "status", "") != "running" for c in runs.get(run, []))
        return verdict

    for run, of_run in runs.items():
        if over(run):
            for c in of_run:
                with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                    c.remove(force=True)  # type: ignore[attr-defined]
            say(f"removed {len(of_run)} container(s) of the ended test run {run}")

    # The engine's own listing, one request each: docker-py's images.list() inspects every image
    # it listed, and one that another lane's test removed meanwhile failed it with a 404.
    for image in client.api.images(filters={"label": TEST_IMAGE_LABEL}) + client.api.images(
        filters={"label": TEST_LABEL}  # images of runs from before TEST_IMAGE_LABEL
    ):
        labels = image.get("Labels") or {}
        run = labels.get(TEST_IMAGE_LABEL) or labels.get(TEST_LABEL, "")
        if over(run):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                client.images.remove(image["Id"], force=True)
            say(f"removed image {image.get('RepoTags') or image['Id']} of the ended test run {run}")

    # Tags the runs put on the shared test images (`<repo>:<run id>`): the images stay.
    for tag in image_tags(client):
        run = tag.rsplit(":", 1)[-1]
        if _RUN_ID.search(run) and over(run):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                client.images.remove(tag)
            say(f"removed tag {tag} of the ended test run {run}")


def image_tags(client: docker.DockerClient) -> set[str]:
    """Every tag the engine's images have, in one request: docker-py's images.list() inspects
    each image it listed, and one that a test of the other lane removed meanwhile failed it with
    a 404 (a fresh run's benchmark test did)."""
    return {
        tag
        for image in client.api.images()
        for tag in image.get("RepoTags") or ()
        if tag != "<none>:<none>"
    }


def image_ids(client: docker.DockerClient) -> set[str]:
    """Every image id the engine has, in one request (see image_tags)."""
    return {str(image["Id"]) for image in client.api.images()}
