"""The launch request record: what a start is given beside jupyter_client's call, set in one
place, and the same record across a kernel service's gateway (its environment form)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from jupyter_gpu_containers.base.errors import ValueRefused
from jupyter_gpu_containers.gpus.allocator import GPURequest, InvalidGPURequest
from jupyter_gpu_containers.host.identity import KernelUser
from jupyter_gpu_containers.kernel.launch_request import (
    KERNEL_ID_ENV,
    REQUEST_ENV,
    REQUEST_SAVED_ENV,
    WAIT_ENV,
    LaunchRequest,
    given,
    launching,
)

ALICE = KernelUser("alice", 2001, 2001, "/home/alice")


@contextlib.asynccontextmanager
async def nothing_given_back() -> AsyncIterator[None]:
    yield


@pytest.mark.parametrize(
    ("record", "environment"),
    [
        (LaunchRequest(), {}),
        (LaunchRequest(gpus=GPURequest(count=2)), {REQUEST_ENV: "2"}),
        (LaunchRequest(gpus=GPURequest()), {REQUEST_ENV: "0"}),
        (
            LaunchRequest(gpus=GPURequest(ids=("0", "GPU-abc")), wait=True),
            {REQUEST_ENV: '["0", "GPU-abc"]', WAIT_ENV: "true"},
        ),
        (LaunchRequest(wait=False), {WAIT_ENV: "false"}),
        # The notebook's saved request (a CPU build does not keep it), said with the request.
        (
            LaunchRequest(gpus=GPURequest(count=1), gpus_saved=True),
            {REQUEST_ENV: "1", REQUEST_SAVED_ENV: "true"},
        ),
        (
            LaunchRequest(kernel_id="5f0b2a4e-9c1d-4e2f-8a3b-6c7d8e9f0a1b"),
            {KERNEL_ID_ENV: "5f0b2a4e-9c1d-4e2f-8a3b-6c7d8e9f0a1b"},
        ),
    ],
)
def test_the_gateway_carries_the_records_gpus_and_wait(
    record: LaunchRequest, environment: dict[str, str]
) -> None:
    assert record.environment() == environment
    assert LaunchRequest.from_environment(environment) == record


def test_what_the_gateway_never_carries() -> None:
    """The user and the hook are the service's own: never sent, never read from a client."""
    record = LaunchRequest(gpus=GPURequest(count=1), user=ALICE, while_waiting=nothing_given_back)
    assert record.environment() == {REQUEST_ENV: "1"}
    read = LaunchRequest.from_environment({**record.environment(), "KERNEL_USERNAME": "root"})
    assert (read.user, read.while_waiting) == (None, None)


@pytest.mark.parametrize(
    ("environment", "error", "says"),
    [
        ({REQUEST_ENV: "two"}, ValueRefused, f"{REQUEST_ENV} must be the notebook's GPU request"),
        ({REQUEST_ENV: "-1"}, InvalidGPURequest, "a whole number from 0 to 1024"),
        ({WAIT_ENV: "yes"}, ValueRefused, f'{WAIT_ENV} must be "true" or "false".'),
        ({WAIT_ENV: True}, ValueRefused, f'{WAIT_ENV} must be "true" or "false".'),
        ({KERNEL_ID_ENV: "kernel-1"}, ValueRefused, f"{KERNEL_ID_ENV} must be a new kernel's id"),
        (
            {KERNEL_ID_ENV: "5F0B2A4E-9C1D-4E2F-8A3B-6C7D8E9F0A1B"},
            ValueRefused,
            "a UUID in lower case, with hyphens",
        ),
        (
            {KERNEL_ID_ENV: "5f0b2a4e9c1d4e2f8a3b6c7d8e9f0a1b"},
            ValueRefused,
            "a UUID in lower case, with hyphens",
        ),
        ({KERNEL_ID_ENV: 7}, ValueRefused, f"{KERNEL_ID_ENV} must be a new kernel's id"),
        ({REQUEST_SAVED_ENV: "yes"}, ValueRefused, f'{REQUEST_SAVED_ENV} must be "true"'),
    ],
)
def test_a_malformed_environment_is_refused_in_a_sentence(
    environment: dict[str, Any], error: type[Exception], says: str
) -> None:
    with pytest.raises(error) as info:
        LaunchRequest.from_environment(environment)
    assert says in str(info.value)


@pytest.mark.parametrize(
    "environment",
    [
        None,
        "not a mapping",
        {},
        {REQUEST_ENV: ""},
        {REQUEST_ENV: "null"},
        {REQUEST_ENV: 3},
        {REQUEST_SAVED_ENV: "true"},  # (saved without a request: nothing)
    ],
)
def test_an_environment_that_says_nothing_gives_nothing(environment: Any) -> None:
    assert LaunchRequest.from_environment(environment) == LaunchRequest()


def test_launching_sets_the_record_for_its_block_only() -> None:
    assert given() == LaunchRequest()
    with launching(user=ALICE, gpus=GPURequest(count=2), wait=True) as outer:
        assert given() is outer
        # An inner block replaces what it names and keeps the rest: "the notebook's own GPUs,
        # no waiting" inside a start for alice.
        with launching(gpus=None, wait=False):
            assert given() == LaunchRequest(user=ALICE, wait=False)
        assert given() is outer
    assert given() == LaunchRequest()


async def test_the_record_follows_the_launch_down_its_awaits_and_tasks() -> None:
    async def launch() -> LaunchRequest:
        await asyncio.sleep(0)
        return given()

    with launching(gpus=GPURequest(count=1), restart_of="k1"):
        seen = await asyncio.ensure_future(launch())
    assert (seen.gpus, seen.restart_of) == (GPURequest(count=1), "k1")
    # Another task, started outside the block, sees nothing of it.
    assert await launch() == LaunchRequest()
