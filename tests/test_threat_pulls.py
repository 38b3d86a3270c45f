"""Attacks on a kernel service's pulls and event streams: a student who takes every pull slot
and every place in the queue, so that nobody else can pull, or opens progress and log streams
until the service runs out of connections and threads.
Against the real kernel service (root) and Docker engine, the students real accounts outside
the docker group. The registry is the test's own: it answers the engine's ping, then never
sends a manifest (a registry a student runs could do the same), so a pull stays under way until
it is cancelled, however slow the machine.

The mechanisms under attack: images/pulls.py's per-user share (``PullManager.max_per_user``)
and its queue, which gives a free slot to the user with the fewest running pulls; and
server/event_streams.py, one count per user of every event stream, whatever its kind
(``GPUContainersKernelManager.max_event_streams_per_user``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import DEBIAN_IMAGE, kernel_name
from hostusers import BOB, MALLORY, needs_accounts
from servers import wait_until
from service_process import KernelService, ServiceUser
from stalling_registry import StallingRegistry

pytestmark = [needs_accounts, pytest.mark.usefixtures("docker_client")]

USER_A = os.environ.get("JGC_TEST_STUDENT_A") or MALLORY
USER_B = os.environ.get("JGC_TEST_STUDENT_B") or BOB


@pytest.fixture
def stalling() -> Iterator[StallingRegistry]:
    registry = StallingRegistry()
    yield registry
    registry.close()


async def pull(server: KernelService, user: ServiceUser, ref: str) -> tuple[int, Any]:
    return await server.answer(user, "POST", "gpu-containers/pulls", {"image": ref})


async def state_of(server: KernelService, user: ServiceUser, pull_id: str) -> str:
    code, now = await server.answer(user, "GET", f"gpu-containers/pulls/{pull_id}")
    assert code == 200, now
    return str(now["state"])


async def until_state(server: KernelService, user: ServiceUser, pull_id: str, state: str) -> None:
    async def reached() -> bool:
        return await state_of(server, user, pull_id) == state

    await wait_until(reached, 60, f"pull {pull_id} to be {state}")


async def test_one_student_cannot_hold_the_pulls_or_their_streams(
    stalling: StallingRegistry,
) -> None:
    a_refs = [stalling.ref(f"a{i}") for i in range(4)]
    b_ref = stalling.ref("b0")
    server = KernelService(
        {
            "ContainerPolicy": {"allowed_images": ["*", *a_refs, b_ref]},
            "PullManager": {
                "max_concurrent": 2,
                "max_queued": 8,
                "max_per_user": 3,
            },
            "GPUContainersKernelManager": {"max_event_streams_per_user": 3},
        }
    )
    streams = []
    a = b = None
    pulls: list[tuple[ServiceUser, str]] = []
    try:
        a = server.add_user(USER_A)
        b = server.add_user(USER_B)
        server.start()
        # She takes both slots, and waits for a third: her share.
        for ref in a_refs[:3]:
            code, started = await pull(server, a, ref)
            assert code == 202, started
            pulls.append((a, started["id"]))
        a1, a2, a3 = (pull_id for _user, pull_id in pulls)
        await until_state(server, a, a1, "pulling")
        await until_state(server, a, a2, "pulling")
        assert await state_of(server, a, a3) == "queued"
        code, refusal = await pull(server, a, a_refs[3])
        assert code == 429 and "as many as it takes from one user" in refusal["message"], refusal
        assert refusal["message"].startswith("You have 3 pulls under way or waiting"), refusal

        # His pull still finds a place, and the next free slot is his, not her third's.
        code, his = await pull(server, b, b_ref)
        assert code == 202 and his["state"] == "queued", his
        pulls.append((b, his["id"]))
        code, cancelled = await server.answer(a, "DELETE", f"gpu-containers/pulls/{a1}")
        assert code == 200, cancelled
        await until_state(server, a, a1, "cancelled")
        await until_state(server, b, his["id"], "pulling")
        assert await state_of(server, a, a3) == "queued"
        assert await state_of(server, a, a2) == "pulling"

        # Her streams, progress and logs together, are bounded on their own; his still open.
        kernel_id = await server.start_kernel(a, kernel_name(DEBIAN_IMAGE))
        log = f"gpu-containers/kernels/{kernel_id}/log"
        for path in (f"gpu-containers/pulls/{a2}/events", f"gpu-containers/pulls/{a3}/events"):
            streams.append(await server.open_stream(a, path))
        streams.append(await server.open_stream(a, log))
        for path in (f"gpu-containers/pulls/{a2}/events", log):
            code, refusal = await server.answer(a, "GET", path)
            assert code == 429, refusal
            assert "the most one user may" in refusal["message"], refusal
        streams.append(await server.open_stream(b, f"gpu-containers/pulls/{his['id']}/events"))
        # A stream closed gives her place back at once (not at its next keepalive).
        streams.pop(0).close()

        async def reopened() -> bool:
            # (The service learns of the close when its next write fails or the socket ends.)
            try:
                streams.append(await server.open_stream(a, f"gpu-containers/pulls/{a2}/events"))
            except AssertionError:
                return False
            return True

        await wait_until(reopened, 60, "her closed stream's place to be free again")
        await server.answer(a, "DELETE", f"api/kernels/{kernel_id}")
    finally:
        for stream in streams:
            stream.close()
        for user, pull_id in pulls:
            with contextlib.suppress(Exception):
                await server.answer(user, "DELETE", f"gpu-containers/pulls/{pull_id}")
        server.close()


async def test_a_pull_the_registry_never_answers_is_stopped_and_frees_its_slot(
    stalling: StallingRegistry,
) -> None:
    """With one slot, her pull from a registry that never sends its manifest would hold it for
    ever: after ``stall_timeout`` without a word from the engine it ends, as an error with a
    sentence, and his waiting pull runs."""
    refs = [stalling.ref("held"), stalling.ref("next")]
    server = KernelService(
        {
            "ContainerPolicy": {"allowed_images": ["*", *refs]},
            "PullManager": {"max_concurrent": 1, "stall_timeout": 5.0},
        }
    )
    pulls: list[tuple[ServiceUser, str]] = []
    try:
        a = server.add_user(USER_A)
        b = server.add_user(USER_B)
        server.start()
        code, hers = await pull(server, a, refs[0])
        assert code == 202, hers
        pulls.append((a, hers["id"]))
        code, his = await pull(server, b, refs[1])
        assert code == 202 and his["state"] == "queued", his
        pulls.append((b, his["id"]))
        await until_state(server, a, hers["id"], "error")
        _code, ended = await server.answer(a, "GET", f"gpu-containers/pulls/{hers['id']}")
        assert "its registry sent nothing for 5 s" in ended["message"], ended
        assert "ask an administrator whether that registry is reachable" in ended["message"]
        # His runs now, and ends the same way: nothing stays held.
        await until_state(server, b, his["id"], "error")
    finally:
        for user, pull_id in pulls:
            with contextlib.suppress(Exception):
                await server.answer(user, "DELETE", f"gpu-containers/pulls/{pull_id}")
        server.close()


async def test_registry_logins_are_bounded_per_user_and_never_scrub_anothers_sentences() -> None:
    """His login's password is scrubbed from his pulls' sentences, never from hers: were it
    scrubbed from everyone's, her pull of an image named after her guess would come back with
    dots where the guess was his password. And she keeps at most
    ``RegistryCredentials.max_per_user`` logins, each of a bounded size."""
    guess = "jgc-guess-4f1c9e"
    ref = f"127.0.0.1:1/{guess}:1"  # nothing listens there: the pull fails at once
    server = KernelService(
        {
            "ContainerPolicy": {"allowed_images": ["*", ref]},
            "RegistryCredentials": {"max_per_user": 2},
        }
    )
    try:
        a = server.add_user(USER_A)
        b = server.add_user(USER_B)
        server.start()
        login = {"username": "him", "password": guess}
        code, answer = await server.answer(b, "PUT", login_path("b.example"), login)
        assert code == 204, answer
        code, hers = await pull(server, a, ref)
        assert code == 202, hers
        await wait_until(
            lambda: ended_pull(server, a, hers["id"]), 120, "her pull from nowhere to end"
        )
        _code, ended = await server.answer(a, "GET", f"gpu-containers/pulls/{hers['id']}")
        assert ended["state"] == "error", ended
        assert guess in ended["message"] and "••••" not in ended["message"], ended

        mine = {"username": "her", "password": "her-secret"}
        for registry in ("a1.example", "a2.example", "a2.example"):  # a new one, then a change
            code, answer = await server.answer(a, "PUT", login_path(registry), mine)
            assert code == 204, answer
        code, refusal = await server.answer(a, "PUT", login_path("a3.example"), mine)
        assert code == 429 and "as many as it keeps for one user" in refusal["message"], refusal
        huge = {"username": "her", "password": "x" * (64 * 1024)}
        code, refusal = await server.answer(a, "PUT", login_path("a1.example"), huge)
        assert code == 400 and "at most" in refusal["message"], refusal
        code, listing = await server.answer(a, "GET", "gpu-containers/registries")
        assert [r["registry"] for r in listing["registries"] if r["source"] == "user"] == [
            "a1.example",
            "a2.example",
        ]
        code, answer = await server.answer(b, "PUT", login_path("c.example"), login)
        assert code == 204, answer  # his share is his own
    finally:
        server.close()


def login_path(registry: str) -> str:
    return f"gpu-containers/registries/{registry}/credentials"


async def ended_pull(server: KernelService, user: ServiceUser, pull_id: str) -> bool:
    return await state_of(server, user, pull_id) not in ("queued", "pulling")
