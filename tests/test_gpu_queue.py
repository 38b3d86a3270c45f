"""The GPU wait queue between real servers of two users sharing one GPU: fair order, the stock
sessions API, cancel, timeout, and a server killed while its starts wait."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import DEBIAN_IMAGE, NGC_IMAGE, TEST_LABEL, TEST_RUN, kernel_name, write_notebook
from hostusers import ALICE, BOB, MALLORY, UserHome, host_state_dir, needs_accounts
from kernel_io import execute, send_execute
from servers import Server
from service_process import KernelService
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.kernel.launch_request import WAIT_ENV

pytestmark = [needs_accounts, pytest.mark.usefixtures("docker_client")]

GPU_SPEC = kernel_name(NGC_IMAGE)  # its kernels get one GPU by default
CPU_SPEC = kernel_name(DEBIAN_IMAGE)
# The kernel service's users (as tests/test_service.py picks them).
USER_A = os.environ.get("JGC_TEST_STUDENT_A") or MALLORY
USER_B = os.environ.get("JGC_TEST_STUDENT_B") or BOB
ONE_GPU = [{"index": 0, "uuid": "GPU-queue-0", "name": "Tesla T4", "brand": "tesla"}]
TWO_GPUS = [
    *ONE_GPU,
    {"index": 1, "uuid": "GPU-queue-1", "name": "Tesla T4", "brand": "tesla"},
]


@pytest.fixture
def homes() -> Iterator[list[UserHome]]:
    made: list[UserHome] = []
    yield made
    for home in made:
        home.close()


@pytest.fixture
def state() -> Iterator[Path]:
    with host_state_dir() as path:
        yield path


def lab_home(
    homes: list[UserHome],
    user: str,
    state: Path,
    launch_timeout: float = 120,
    gpus: list[dict[str, Any]] = ONE_GPU,
    allow_root: bool = False,
    **queue: Any,
) -> UserHome:
    """A user's server config on a host with one GPU (or ``gpus``), whose starts wait for it."""
    home = UserHome(
        user,
        {
            "ContainerPolicy": {"state_dir": str(state), "allow_root": allow_root},
            "GPUInventory": {"static_gpus": gpus},
            "GPUQueue": {"wait_by_default": True, "poll_interval": 0.2, **queue},
            "ContainerProvisioner": {"launch_timeout": launch_timeout},
        },
    )
    homes.append(home)
    return home


async def held_by_a_third_user(homes: list[UserHome], state: Path) -> tuple[Server, str]:
    """The one GPU held by a kernel of neither Alice nor Bob (root's server): a wait of theirs
    could then be served by its release (a user who holds the host's only GPU can never be
    served a second, and may not wait for one)."""
    server = lab_home(homes, "root", state, allow_root=True).start("--allow-root")
    code, holder = await server.answer("POST", "api", "kernels", body={"name": GPU_SPEC})
    assert code == 201, holder
    return server, str(holder["id"])


def open_notebook(home: UserHome, server: Server, name: str, gpus: int = 1) -> asyncio.Future[Any]:
    """Open a notebook the way JupyterLab does (POST /api/sessions), in the background."""
    write_notebook(home.workspace, name, gpus=gpus)
    body = {"path": name, "name": name, "type": "notebook", "kernel": {"name": GPU_SPEC}}
    return asyncio.ensure_future(server.answer("POST", "api", "sessions", body=body))


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.1)


async def queue_of(server: Server) -> list[dict[str, Any]]:
    code, body = await server.answer("GET", "gpu-containers", "queue")
    assert code == 200, body
    queue: list[dict[str, Any]] = body["queue"]
    return queue


async def until_queued(server: Server, length: int, what: str) -> None:
    """Until ``server``'s view of the host-wide queue holds ``length`` starts."""

    async def queued() -> bool:
        return len(await queue_of(server)) == length

    await until(queued, what)


def gpu_containers(client: docker.DockerClient) -> list[Any]:
    containers = client.containers.list(
        ignore_removed=True, all=True, filters={"label": f"{TEST_LABEL}={TEST_RUN}"}
    )
    return [c for c in containers if c.labels.get(L.GPUS)]


def tickets_in(state: Path) -> list[str]:
    """The waiting starts' files (not the users' "last served" marks)."""
    return sorted(p.name for p in state.iterdir() if re.fullmatch(r"gpuq-\d+-.*", p.name))


async def next_done(pending: dict[str, asyncio.Future[Any]], timeout: float = 90) -> str:
    done, _ = await asyncio.wait(
        pending.values(), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
    )
    assert len(done) == 1, f"{len(done)} starts ended at once"
    (name,) = [n for n, f in pending.items() if f in done]
    code, body = pending.pop(name).result()
    assert code == 201, (name, code, body)
    return name


async def test_fifo_within_a_user_and_round_robin_across_users_over_two_servers(
    homes: list[UserHome], state: Path, docker_client: docker.DockerClient
) -> None:
    # Alice's launches time out after 15 s; her first start waits longer than that.
    alice_home = lab_home(homes, ALICE, state, launch_timeout=15)
    bob_home = lab_home(homes, BOB, state)
    alice, bob = alice_home.start(), bob_home.start()
    third, holder = await held_by_a_third_user(homes, state)

    # Alice opens two notebooks before Bob opens two: the order is a1, b1, a2, b2.
    pending: dict[str, asyncio.Future[Any]] = {}
    for name, home, server in (
        ("a1", alice_home, alice),
        ("a2", alice_home, alice),
        ("b1", bob_home, bob),
        ("b2", bob_home, bob),
    ):
        pending[name] = open_notebook(home, server, f"{name}.ipynb")
        await until_queued(alice, len(pending), f"{len(pending)} starts wait")
    first_queued = time.monotonic()

    seen_by_alice = await queue_of(alice)
    assert [(t["position"], t["yours"], t["notebook"]) for t in seen_by_alice] == [
        (1, True, "a1.ipynb"),
        (2, False, None),  # Bob's notebook is not shown to Alice (GPUVisibility)
        (3, True, "a2.ipynb"),
        (4, False, None),
    ]
    assert all(t["kernel_id"] is None for t in seen_by_alice if not t["yours"])
    assert [t["yours"] for t in await queue_of(bob)] == [False, True, False, True]
    # The stock sessions API lists the waiting notebooks, their kernels "waiting for a GPU".
    _, sessions = await alice.answer("GET", "api", "sessions")
    assert sorted((s["path"], s["kernel"]["execution_state"]) for s in sessions) == [
        ("a1.ipynb", "waiting for a GPU"),
        ("a2.ipynb", "waiting for a GPU"),
    ]
    # Longer than Alice's launch timeout: the wait is not part of the launch.
    await asyncio.sleep(max(0.0, 16 - (time.monotonic() - first_queued)))
    assert not any(f.done() for f in pending.values())

    await third.answer("DELETE", "api", "kernels", holder)
    order = []
    while pending:
        name = await next_done(pending)
        order.append(name)
        assert len(gpu_containers(docker_client)) == 1  # never two on the one GPU
        server = alice if name.startswith("a") else bob
        _, sessions = await server.answer("GET", "api", "sessions")
        (session,) = [s for s in sessions if s["path"] == f"{name}.ipynb"]
        assert session["kernel"]["execution_state"] != "waiting for a GPU"
        await server.answer("DELETE", "api", "sessions", session["id"])
    assert order == ["a1", "b1", "a2", "b2"]
    assert tickets_in(state) == []
    assert gpu_containers(docker_client) == []


async def session_of(server: Server, name: str) -> dict[str, Any]:
    code, sessions = await server.answer("GET", "api", "sessions")
    assert code == 200, sessions
    (session,) = [s for s in sessions if s["path"] == name]
    return dict(session)


async def test_a_wait_only_its_users_own_gpus_could_end_holds_up_nobody(
    homes: list[UserHome], state: Path, docker_client: docker.DockerClient
) -> None:
    """Issue 26, finding 2, on a two-GPU host with no per-user cap: Alice waits for one GPU and
    then for two while Bob holds both. Once she holds one, her wait for two could end only by her
    own kernel's end: it no longer holds up Bob's start (which does not wait) on the other GPU,
    and a new wait for two GPUs is refused at once, saying why."""
    alice_home = lab_home(homes, ALICE, state, gpus=TWO_GPUS)
    bob_home = lab_home(homes, BOB, state, gpus=TWO_GPUS, wait_by_default=False)
    alice, bob = alice_home.start(), bob_home.start()
    holders = []
    for _ in range(2):
        code, holder = await bob.answer("POST", "api", "kernels", body={"name": GPU_SPEC})
        assert code == 201, holder
        holders.append(holder["id"])
    one = open_notebook(alice_home, alice, "one.ipynb")
    await until_queued(alice, 1, "Alice's one-GPU start waits")
    two = open_notebook(alice_home, alice, "two.ipynb", gpus=2)
    await until_queued(alice, 2, "both of Alice's starts wait")

    await bob.answer("DELETE", "api", "kernels", holders.pop())
    code, first = await asyncio.wait_for(one, 60)
    assert code == 201, first
    await bob.answer("DELETE", "api", "kernels", holders.pop())
    # GPU 0 or 1 is free; Alice's two-GPU start still waits, and Bob's start gets the free GPU.
    code, bobs = await asyncio.wait_for(
        bob.answer("POST", "api", "kernels", body={"name": GPU_SPEC}), 60
    )
    assert code == 201, bobs
    assert not two.done()
    assert len(gpu_containers(docker_client)) == 2
    # A new wait for both GPUs while she holds one is refused before it queues.
    code, refused = await asyncio.wait_for(
        open_notebook(alice_home, alice, "three.ipynb", gpus=2), 60
    )
    assert code == 409, refused
    assert "your own kernels hold GPUs it needs" in refused["message"], refused
    assert [t["notebook"] for t in await queue_of(alice)] == ["two.ipynb"]

    waiting = await session_of(alice, "two.ipynb")
    code, _ = await alice.answer("DELETE", "api", "sessions", waiting["id"])
    assert code == 204
    code, body = await asyncio.wait_for(two, 30)
    assert code == 409 and "cancelled" in body["message"], body
    await alice.answer("DELETE", "api", "sessions", first["id"])
    await bob.answer("DELETE", "api", "kernels", bobs["id"])
    assert tickets_in(state) == []


async def test_a_start_that_cannot_be_served_holds_up_others_for_at_most_max_hold_up(
    homes: list[UserHome], state: Path, docker_client: docker.DockerClient
) -> None:
    """Alice waits for both GPUs while Bob holds one: her start holds up Bob's wait for the
    other for GPUQueue.max_hold_up seconds only; then Bob gets it, and Alice, still waiting,
    gets both GPUs once they free."""
    alice_home = lab_home(homes, ALICE, state, gpus=TWO_GPUS, max_hold_up=3)
    bob_home = lab_home(homes, BOB, state, gpus=TWO_GPUS, max_hold_up=3)
    alice, bob = alice_home.start(), bob_home.start()
    code, holder = await bob.answer("POST", "api", "kernels", body={"name": GPU_SPEC})
    assert code == 201, holder
    both = open_notebook(alice_home, alice, "both.ipynb", gpus=2)
    await until_queued(bob, 1, "Alice's start waits")
    second = asyncio.ensure_future(bob.answer("POST", "api", "kernels", body={"name": GPU_SPEC}))
    code, bobs = await asyncio.wait_for(second, 60)
    assert code == 201, bobs
    assert not both.done()
    for kernel in (holder, bobs):
        await bob.answer("DELETE", "api", "kernels", kernel["id"])
    code, session = await asyncio.wait_for(both, 60)
    assert code == 201, session
    (container,) = gpu_containers(docker_client)
    assert sorted(container.labels[L.GPUS].split(",")) == ["GPU-queue-0", "GPU-queue-1"]
    await alice.answer("DELETE", "api", "sessions", session["id"])


async def test_a_gpu_taken_without_waiting_counts_toward_its_users_turn(
    homes: list[UserHome], state: Path, docker_client: docker.DockerClient
) -> None:
    """Issue 26, finding 3: Alice holds a GPU taken by a start that did not wait, then waits for
    a second; Bob waits for his first after her. When a GPU frees, Bob is served first."""
    alice_home = lab_home(homes, ALICE, state, gpus=TWO_GPUS, wait_by_default=False)
    bob_home = lab_home(homes, BOB, state, gpus=TWO_GPUS)
    alice, bob = alice_home.start(), bob_home.start()
    code, bobs_holder = await bob.answer("POST", "api", "kernels", body={"name": GPU_SPEC})
    assert code == 201, bobs_holder
    code, alices = await alice.answer("POST", "api", "kernels", body={"name": GPU_SPEC})
    assert code == 201, alices

    pending: dict[str, asyncio.Future[Any]] = {}
    write_notebook(alice_home.workspace, "a.ipynb", gpus=1)
    pending["a"] = asyncio.ensure_future(
        alice.answer(
            "POST",
            "gpu-containers",
            "notebooks",
            "kernel",
            body={"path": "a.ipynb", "kernel_name": GPU_SPEC, "gpus": 1, "wait": True},
        )
    )
    await until_queued(bob, 1, "Alice's second start waits")
    pending["b"] = open_notebook(bob_home, bob, "b.ipynb")
    await until_queued(bob, 2, "Bob's start waits too")

    await bob.answer("DELETE", "api", "kernels", bobs_holder["id"])
    done, _ = await asyncio.wait(pending.values(), timeout=60, return_when=asyncio.FIRST_COMPLETED)
    assert [name for name, f in pending.items() if f in done] == ["b"]
    code, session = pending.pop("b").result()
    assert code == 201, session
    assert not pending["a"].done()
    await bob.answer("DELETE", "api", "sessions", session["id"])
    code, hers = await asyncio.wait_for(pending.pop("a"), 60)
    assert code == 200, hers
    await alice.answer("DELETE", "api", "sessions", hers["session"]["id"])
    await alice.answer("DELETE", "api", "kernels", alices["id"])
    assert tickets_in(state) == []


def wait_from_the_panel(server: Server, home: UserHome, name: str) -> asyncio.Future[Any]:
    """A start through the panel that asks to wait ({"wait": true}), in the background."""
    write_notebook(home.workspace, name, gpus=1)
    body = {"path": name, "kernel_name": GPU_SPEC, "gpus": 1, "wait": True}
    return asyncio.ensure_future(
        server.answer("POST", "gpu-containers", "notebooks", "kernel", body=body)
    )


@pytest.mark.parametrize("wait_by_default", [False, True])
async def test_a_turn_is_the_same_however_the_gpus_were_taken_and_whatever_the_setting(
    homes: list[UserHome], state: Path, docker_client: docker.DockerClient, wait_by_default: bool
) -> None:
    """Issue 61, finding 11, on two GPUs: C holds one; A holds the other by an ordinary start and
    asks to wait for a second; B, holding nothing, asks to wait after A. When A's first kernel
    ends, B is served first, with GPUQueue.wait_by_default False (A's first GPU then taken by a
    start that never queued) as with True: a turn is recent GPU use, from what the service
    records, not how the GPUs were taken."""
    carol = lab_home(
        homes, "root", state, gpus=TWO_GPUS, allow_root=True, wait_by_default=wait_by_default
    ).start("--allow-root")
    alice_home = lab_home(homes, ALICE, state, gpus=TWO_GPUS, wait_by_default=wait_by_default)
    bob_home = lab_home(homes, BOB, state, gpus=TWO_GPUS, wait_by_default=wait_by_default)
    alice, bob = alice_home.start(), bob_home.start()
    code, carols = await carol.answer("POST", "api", "kernels", body={"name": GPU_SPEC})
    assert code == 201, carols
    code, alices = await alice.answer("POST", "api", "kernels", body={"name": GPU_SPEC})
    assert code == 201, alices
    pending = {"a": wait_from_the_panel(alice, alice_home, "a.ipynb")}
    await until_queued(bob, 1, "Alice's second start waits")
    pending["b"] = wait_from_the_panel(bob, bob_home, "b.ipynb")
    await until_queued(bob, 2, "Bob's first start waits too")

    await alice.answer("DELETE", "api", "kernels", alices["id"])
    done, _ = await asyncio.wait(pending.values(), timeout=60, return_when=asyncio.FIRST_COMPLETED)
    assert [name for name, f in pending.items() if f in done] == ["b"]
    code, bobs = pending.pop("b").result()
    assert code == 200, bobs
    assert not pending["a"].done()
    await bob.answer("DELETE", "api", "sessions", bobs["session"]["id"])
    code, hers = await asyncio.wait_for(pending.pop("a"), 60)
    assert code == 200, hers
    await alice.answer("DELETE", "api", "sessions", hers["session"]["id"])
    await carol.answer("DELETE", "api", "kernels", carols["id"])
    assert tickets_in(state) == []


async def test_cancel_and_timeout(
    homes: list[UserHome], state: Path, docker_client: docker.DockerClient
) -> None:
    alice_home = lab_home(homes, ALICE, state, max_wait=4)
    bob_home = lab_home(homes, BOB, state)
    alice, bob = alice_home.start(), bob_home.start()
    code, holder = await bob.answer("POST", "api", "kernels", body={"name": GPU_SPEC})
    assert code == 201, holder

    waiting = open_notebook(alice_home, alice, "cancelled.ipynb")

    await until_queued(alice, 1, "Alice's start waits")
    (mine,) = await queue_of(alice)
    kernel_id = mine["kernel_id"]
    # Nobody but Alice can cancel it: Bob's server does not know it, and says so.
    code, _ = await bob.answer("DELETE", "gpu-containers", "queue", kernel_id)
    assert code == 404
    code, _ = await alice.answer("DELETE", "gpu-containers", "queue", kernel_id)
    assert code == 204
    code, body = await asyncio.wait_for(waiting, 30)
    assert code == 409 and "cancelled" in body["message"], body
    assert await queue_of(alice) == []

    began = time.monotonic()
    code, body = await asyncio.wait_for(open_notebook(alice_home, alice, "late.ipynb"), 60)
    assert code == 409, body
    assert "No GPU became free for this start within" in body["message"]
    assert time.monotonic() - began >= 4
    code, sessions = await alice.answer("GET", "api", "sessions")
    assert sessions == []
    assert tickets_in(state) == []
    assert len(gpu_containers(docker_client)) == 1  # Bob's, untouched
    await bob.answer("DELETE", "api", "kernels", holder["id"])


async def test_a_killed_server_loses_its_places_and_nobody_elses(
    homes: list[UserHome], state: Path, docker_client: docker.DockerClient
) -> None:
    alice_home, bob_home = lab_home(homes, ALICE, state), lab_home(homes, BOB, state)
    alice, bob = alice_home.start(), bob_home.start()
    third, holder = await held_by_a_third_user(homes, state)
    lost = open_notebook(alice_home, alice, "lost.ipynb")

    await until_queued(bob, 1, "Alice's start waits")
    kept = open_notebook(bob_home, bob, "kept.ipynb")

    await until_queued(bob, 2, "both starts wait")
    assert [t["yours"] for t in await queue_of(bob)] == [False, True]

    alice.kill9()
    await asyncio.wait([lost], timeout=30)
    assert lost.done()  # the connection died with the server
    assert lost.exception() is not None or lost.result()[0] == 599
    # Alice's ticket is still on disk, but nobody holds it: Bob's start is first now.
    assert len(tickets_in(state)) == 2
    assert [(t["position"], t["yours"]) for t in await queue_of(bob)] == [(1, True)]
    await third.answer("DELETE", "api", "kernels", holder)
    code, session = await asyncio.wait_for(kept, 60)
    assert code == 201, session
    assert len(gpu_containers(docker_client)) == 1
    await bob.answer("DELETE", "api", "sessions", session["id"])


async def test_in_the_kernel_service_a_waiting_start_holds_no_start_slot() -> None:
    """Behind the service: a start that waits (KERNEL_GPU_CONTAINERS_WAIT) gives its start slot
    back, so another user's CPU kernel starts meanwhile; it starts when the GPU frees."""
    service = KernelService(
        {
            "GPUInventory": {"static_gpus": ONE_GPU},
            "GPUQueue": {"poll_interval": 0.2},
            "ServiceApp": {"max_concurrent_starts": 1, "max_queued_starts": 1},
        }
    )
    try:
        a = service.add_user(USER_A)
        b = service.add_user(USER_B)
        service.start()
        holder = await service.start_kernel(a, CPU_SPEC, {"KERNEL_GPU_CONTAINERS_REQUEST": "1"})
        # Without asking to wait (the service's default here), a start is refused at once.
        code, refused = await service.answer(
            b, "POST", "api/kernels", {"name": GPU_SPEC, "env": {WAIT_ENV: "false"}}
        )
        assert code == 409 and refused["message"].startswith("No free GPU"), refused
        # What to do is said where the student clicked (a Launcher card): ask to wait.
        assert 'tick "Wait for a free GPU"' in refused["message"], refused
        waiting = asyncio.ensure_future(
            service.answer(b, "POST", "api/kernels", {"name": GPU_SPEC, "env": {WAIT_ENV: "true"}})
        )

        async def queued() -> bool:
            code, body = await service.answer(b, "GET", "gpu-containers/queue")
            return code == 200 and body["length"] == 1

        await until(queued, "B's start waits")
        code, seen = await service.answer(a, "GET", "gpu-containers/queue")
        assert [(t["yours"], t["kernel_id"], t["user"]) for t in seen["queue"]] == [
            (False, None, None)
        ]
        # One start slot: the waiting start gave it back.
        other = await asyncio.wait_for(service.start_kernel(a, CPU_SPEC), 60)
        assert not waiting.done()
        await service.answer(a, "DELETE", f"api/kernels/{holder}")
        code, started = await asyncio.wait_for(waiting, 60)
        assert code == 201, started
        # A client that gives up while its start waits (a user's server whose request timed
        # out) cancels the wait: no kernel starts later for nobody.
        impatient = HTTPRequest(
            f"{service.url}/api/kernels",
            method="POST",
            headers={"Authorization": f"token {a.token}"},
            body=json.dumps({"name": GPU_SPEC, "env": {WAIT_ENV: "true"}}),
            request_timeout=3,
        )
        with pytest.raises(HTTPClientError):
            await AsyncHTTPClient(force_instance=True).fetch(impatient)

        async def gone() -> bool:
            code, body = await service.answer(b, "GET", "gpu-containers/queue")
            return code == 200 and body["length"] == 0

        await until(gone, "the abandoned start left the queue", timeout=20)
        code, kernels = await service.answer(a, "GET", "api/kernels")
        assert sorted(k["id"] for k in kernels) == sorted([other])
        for user, kernel_id in ((a, other), (b, started["id"])):
            await service.answer(user, "DELETE", f"api/kernels/{kernel_id}")
    finally:
        service.close()


async def test_a_waiting_notebook_is_seen_and_stopped_the_stock_ways(
    homes: list[UserHome], state: Path, docker_client: docker.DockerClient
) -> None:
    alice_home, bob_home = lab_home(homes, ALICE, state), lab_home(homes, BOB, state)
    alice, bob = alice_home.start(), bob_home.start()
    code, holder = await bob.answer("POST", "api", "kernels", body={"name": GPU_SPEC})
    assert code == 201, holder

    for how in ("DELETE /api/sessions", "DELETE /api/kernels"):
        waiting = open_notebook(alice_home, alice, "w.ipynb")

        await until_queued(alice, 1, "the notebook's start waits")
        # The extension's own view of the notebook says so, and will not start it twice.
        code, view = await alice.answer("GET", "gpu-containers", "notebooks", "kernel?path=w.ipynb")
        assert code == 200, view
        assert view["kernel"]["execution_state"] == "waiting for a GPU"
        assert view["kernel"]["gpus"] == []
        code, again = await alice.answer(
            "POST", "gpu-containers", "notebooks", "kernel", body={"path": "w.ipynb"}
        )
        assert code == 409 and "already waiting" in again["message"], again
        code, (session,) = await alice.answer("GET", "api", "sessions")
        # A page that asks for the notebook's session again (its own was lost, a second tab)
        # gets the waiting one, as the sessions API answers for any notebook that has one; no
        # second kernel starts, under that kernel's id or another.
        body = {"path": "w.ipynb", "name": "w.ipynb", "type": "notebook"}
        for kernel in ({"name": GPU_SPEC}, {"id": session["kernel"]["id"]}):
            code, same = await alice.answer(
                "POST", "api", "sessions", body={**body, "kernel": kernel}
            )
            assert code == 201 and same == session, (kernel, same)
        code, same = await alice.answer("GET", "api", "sessions", session["id"])
        assert code == 200 and same == session, same
        body = {"path": "x.ipynb", "name": "x.ipynb", "type": "notebook"}
        code, refused = await alice.answer(
            "POST", "api", "sessions", body={**body, "kernel": {"id": session["kernel"]["id"]}}
        )
        assert code == 409 and "still starting" in refused["message"], refused
        assert len(await queue_of(alice)) == 1
        assert len(gpu_containers(docker_client)) == 1  # Bob's
        # JupyterLab's Shut Down (either API) cancels the wait.
        if how == "DELETE /api/sessions":
            code, _ = await alice.answer("DELETE", "api", "sessions", session["id"])
        else:
            code, _ = await alice.answer("DELETE", "api", "kernels", session["kernel"]["id"])
        assert code == 204, how
        code, body = await asyncio.wait_for(waiting, 30)
        assert code == 409 and "cancelled" in body["message"], (how, body)
        assert await queue_of(alice) == []
        code, sessions = await alice.answer("GET", "api", "sessions")
        assert sessions == []
    assert tickets_in(state) == []
    await bob.answer("DELETE", "api", "kernels", holder["id"])


async def test_every_tab_of_a_waiting_notebook_finds_its_one_wait_as_jupyterlab_asks(
    homes: list[UserHome], state: Path, docker_client: docker.DockerClient
) -> None:
    """JupyterLab asks for a notebook's session under a path of its own (``<folder>/<uuid>``,
    the file's name beside it) and moves it to the notebook's path once it has it. While the
    notebook's start waits, a reload, a second tab or the file browser asks so again: each joins
    the one wait (never a second ticket, never "No free GPU" for the user's own ticket), under
    the path it asked for; the sessions and kernels APIs list it under the notebook's path and
    its kernel's id; the grant gives every tab the same session and kernel."""
    alice_home, bob_home = lab_home(homes, ALICE, state), lab_home(homes, BOB, state)
    alice, bob = alice_home.start(), bob_home.start()
    code, holder = await bob.answer("POST", "api", "kernels", body={"name": GPU_SPEC})
    assert code == 201, holder
    write_notebook(alice_home.workspace, "course/w.ipynb", gpus=1)

    def as_jupyterlab() -> dict[str, Any]:
        return {
            "path": f"course/{uuid.uuid4()}",
            "name": "w.ipynb",
            "type": "notebook",
            "kernel": {"name": GPU_SPEC},
        }

    first_body = as_jupyterlab()
    first = asyncio.ensure_future(alice.answer("POST", "api", "sessions", body=first_body))
    await until_queued(alice, 1, "the notebook's start waits")
    code, (listed,) = await alice.answer("GET", "api", "sessions")
    assert code == 200
    assert listed["path"] == "course/w.ipynb" and listed["name"] == "w.ipynb", listed
    assert listed["kernel"]["execution_state"] == "waiting for a GPU"
    kernel_id = listed["kernel"]["id"]
    # The kernels API lists it too, under the same id: JupyterLab drops a connection to a kernel
    # that it does not list.
    code, kernels = await alice.answer("GET", "api", "kernels")
    assert code == 200 and [k["id"] for k in kernels] == [kernel_id], kernels
    assert kernels[0]["execution_state"] == "waiting for a GPU"
    assert kernels[0]["name"] == GPU_SPEC
    code, model = await alice.answer("GET", "api", "kernels", kernel_id)
    assert code == 200 and model["execution_state"] == "waiting for a GPU", model
    # Bob's server lists none of it.
    code, bobs = await bob.answer("GET", "api", "kernels")
    assert [k["id"] for k in bobs] == [holder["id"]]

    # A second tab, then a reload: each asks as JupyterLab does, joins, and moves its session
    # to the notebook's path as JupyterLab does.
    for _ in range(2):
        body = as_jupyterlab()
        code, joined = await alice.answer("POST", "api", "sessions", body=body)
        assert code == 201, joined
        assert joined["id"] == listed["id"] and joined["kernel"]["id"] == kernel_id
        assert joined["path"] == body["path"]  # else JupyterLab shuts it down as preempted
        code, moved = await alice.answer(
            "PATCH", "api", "sessions", listed["id"], body={"path": "course/w.ipynb"}
        )
        assert code == 200 and moved["path"] == "course/w.ipynb", moved
    # Another kernel for the waiting session is refused in a sentence; the wait goes on.
    code, refused = await alice.answer(
        "PATCH", "api", "sessions", listed["id"], body={"kernel": {"name": GPU_SPEC}}
    )
    assert code == 501 and "waiting for a GPU" in refused["message"], refused
    assert len(await queue_of(alice)) == 1
    assert len(tickets_in(state)) == 1
    assert len(gpu_containers(docker_client)) == 1  # Bob's

    # The GPU is free: the first request gets the session under its own path, and the
    # notebook's session runs under the notebook's path and the kernel's id.
    await bob.answer("DELETE", "api", "kernels", holder["id"])
    code, started = await asyncio.wait_for(first, 90)
    assert code == 201, started
    assert started["id"] == listed["id"] and started["kernel"]["id"] == kernel_id
    assert started["path"] == first_body["path"]
    code, (running,) = await alice.answer("GET", "api", "sessions")
    assert running["path"] == "course/w.ipynb" and running["kernel"]["id"] == kernel_id
    code, kernels = await alice.answer("GET", "api", "kernels")
    assert [k["id"] for k in kernels] == [kernel_id]
    assert kernels[0]["execution_state"] != "waiting for a GPU"
    assert len(gpu_containers(docker_client)) == 1  # Alice's, one
    # A tab that had no session when the wait ended takes the notebook's up by its kernel: that
    # session, under the path it asked for, never a second one.
    body = {**as_jupyterlab(), "kernel": {"id": kernel_id}}
    code, same = await alice.answer("POST", "api", "sessions", body=body)
    assert code == 201 and same["id"] == listed["id"] and same["path"] == body["path"], same
    code, sessions = await alice.answer("GET", "api", "sessions")
    assert [s["id"] for s in sessions] == [listed["id"]]
    await alice.answer("DELETE", "api", "sessions", running["id"])


async def test_a_restart_that_waits_gives_its_old_gpus_up_first(
    homes: list[UserHome], state: Path, docker_client: docker.DockerClient
) -> None:
    """Alice's kernel holds the GPU and restarts under a new request that may wait, while Bob
    waits: her stopped container must not keep booking the GPU (else each waits for the other
    until max_wait). Bob, ahead in the queue, gets it; her kernel then waits its turn."""
    alice_home, bob_home = lab_home(homes, ALICE, state), lab_home(homes, BOB, state)
    alice, bob = alice_home.start(), bob_home.start()
    write_notebook(alice_home.workspace, "mine.ipynb", gpus=1)
    body = {"path": "mine.ipynb", "kernel_name": GPU_SPEC, "gpus": 1, "wait": True}
    code, started = await alice.answer("POST", "gpu-containers", "notebooks", "kernel", body=body)
    assert code == 200, started
    bobs = asyncio.ensure_future(bob.answer("POST", "api", "kernels", body={"name": GPU_SPEC}))

    await until_queued(alice, 1, "Bob's start waits")
    restart = asyncio.ensure_future(
        alice.answer("POST", "gpu-containers", "notebooks", "kernel", body={**body, "gpus": "1"})
    )
    code, bob_kernel = await asyncio.wait_for(bobs, 60)
    assert code == 201, bob_kernel
    assert not restart.done()
    await bob.answer("DELETE", "api", "kernels", bob_kernel["id"])
    code, restarted = await asyncio.wait_for(restart, 60)
    assert code == 200, restarted
    assert restarted["session"]["kernel"]["id"] == started["session"]["kernel"]["id"]
    assert len(gpu_containers(docker_client)) == 1
    await alice.answer("DELETE", "api", "sessions", restarted["session"]["id"])


async def test_a_restart_whose_wait_is_cancelled_brings_the_kernel_back_as_it_was(
    homes: list[UserHome], state: Path, docker_client: docker.DockerClient
) -> None:
    """Alice's kernel runs without a GPU; she restarts it on one GPU, which Bob holds, and her
    restart waits; she cancels the wait. Her kernel comes back as it was (no GPU), under the same
    kernel id and session, so her page stays attached; then she waits again and gets the GPU
    when Bob's kernel ends, still the same kernel and session. Her cancel is news in the log,
    not an error."""
    alice_home, bob_home = lab_home(homes, ALICE, state), lab_home(homes, BOB, state)
    alice, bob = alice_home.start(), bob_home.start()
    code, holder = await bob.answer("POST", "api", "kernels", body={"name": GPU_SPEC})
    assert code == 201, holder
    write_notebook(alice_home.workspace, "mine.ipynb", gpus=0)
    body = {"path": "mine.ipynb", "kernel_name": GPU_SPEC, "gpus": 0}
    code, started = await alice.answer("POST", "gpu-containers", "notebooks", "kernel", body=body)
    assert code == 200, started
    session = started["session"]
    kernel_id = session["kernel"]["id"]
    # A page's connection, as JupyterLab makes it: its session id lets it take up again what
    # the server kept for it while it was away.
    page = await page_connection(alice, kernel_id, "page-1")
    assert (await execute(page, "x = 6 * 7\nprint(x)")).stdout.strip() == "42"
    # Her kernel knows her name (its own /etc/passwd, accounts.py).
    who = await execute(page, "import os, pwd\nprint(pwd.getpwuid(os.getuid()).pw_name)")
    assert who.stdout.strip() == ALICE

    on_gpu = {**body, "gpus": 1, "wait": True}
    restart = asyncio.ensure_future(
        alice.answer("POST", "gpu-containers", "notebooks", "kernel", body=on_gpu)
    )
    await until_queued(alice, 1, "Alice's restart waits")
    # A cell run while it waits: it runs once the kernel is back, and its output reaches the
    # page (held until the page's connection hears the new kernel).
    meanwhile = await send_execute(page, "print('ran once back')")
    code, _ = await alice.answer("DELETE", "gpu-containers", "queue", kernel_id)
    assert code == 204
    code, body_ = await asyncio.wait_for(restart, 60)
    assert code == 409, body_
    assert "cancelled" in body_["message"] and "restarted as it was before" in body_["message"]
    # The server closed the page's connection (to tell it the kernel's state); the page
    # reconnects with its session id and gets what it missed; its code runs.
    seen: list[dict[str, Any]] = []
    while (raw := await asyncio.wait_for(page.read_message(), 30)) is not None:
        seen.append(json.loads(raw))
    page.close()
    page = await page_connection(alice, kernel_id, "page-1")

    async def replied() -> bool:
        """Whether the cell's reply and its end on IOPub (status idle) reached the page. Its
        reply and its output come on two sockets, in either order: a page that stopped reading
        at the reply missed output the server had sent it (seen in a loaded run)."""
        if not cell_ended(seen, meanwhile):
            raw = await asyncio.wait_for(page.read_message(), 30)
            assert raw is not None, "the page's connection closed"
            seen.append(json.loads(raw))
            return False
        return True

    await until(replied, "the cell run while it waited is answered")
    assert output_of(seen, meanwhile) == "ran once back", seen
    result = await execute(page, "print(globals().get('x', 'gone'))")
    assert result.stdout.strip() == "gone"
    code, (same,) = await alice.answer("GET", "api", "sessions")
    assert same["id"] == session["id"] and same["kernel"]["id"] == kernel_id, same
    code, view = await alice.answer("GET", "gpu-containers", "notebooks", "kernel?path=mine.ipynb")
    assert code == 200 and view["kernel"]["gpus"] == [], view
    assert len(gpu_containers(docker_client)) == 1  # Bob's

    # Wait again; Bob's kernel ends; the same kernel and session get the GPU.
    restart = asyncio.ensure_future(
        alice.answer("POST", "gpu-containers", "notebooks", "kernel", body=on_gpu)
    )
    await until_queued(alice, 1, "Alice's restart waits again")
    # (A page connecting while the kernel restarts waits for it to run: the page is connected.)
    meanwhile = await send_execute(page, "print('ran on the GPU kernel')")
    await bob.answer("DELETE", "api", "kernels", holder["id"])
    code, restarted = await asyncio.wait_for(restart, 60)
    assert code == 200, restarted
    # The server closes the page's connection after the restart; reconnected, the page has the
    # output of the cell it ran while waiting.
    seen = []
    while (raw := await asyncio.wait_for(page.read_message(), 30)) is not None:
        seen.append(json.loads(raw))
    page.close()
    page = await page_connection(alice, kernel_id, "page-1")
    await until(replied, "the cell run while it waited again is answered")
    assert output_of(seen, meanwhile) == "ran on the GPU kernel", seen
    page.close()
    assert restarted["session"]["id"] == session["id"]
    assert restarted["session"]["kernel"]["id"] == kernel_id
    code, view = await alice.answer("GET", "gpu-containers", "notebooks", "kernel?path=mine.ipynb")
    assert len(view["kernel"]["gpus"]) == 1, view
    assert (await alice.execute(kernel_id, "print(6 * 7)")).stdout.strip() == "42"
    cancel_lines = [line for line in alice.output().splitlines() if "was cancelled" in line]
    assert cancel_lines and not [line for line in cancel_lines if line.startswith("[E")]
    await alice.answer("DELETE", "api", "sessions", session["id"])
    assert tickets_in(state) == []


async def page_connection(server: Server, kernel_id: str, session_id: str) -> Any:
    """A kernel websocket as JupyterLab opens it, with the page's session id."""
    return await websocket_connect(
        HTTPRequest(
            f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels"
            f"?session_id={session_id}",
            headers={"Authorization": f"token {server.token}"},
        )
    )


def cell_ended(messages: list[dict[str, Any]], msg_id: str) -> bool:
    """Whether the request ``msg_id``'s reply and its final "idle" are among ``messages``."""
    ours = [m for m in messages if m["parent_header"].get("msg_id") == msg_id]
    return any(m["msg_type"] == "execute_reply" for m in ours) and any(
        m["msg_type"] == "status" and m["content"].get("execution_state") == "idle" for m in ours
    )


def output_of(messages: list[dict[str, Any]], msg_id: str) -> str:
    """What the request ``msg_id`` printed, as the page received it."""
    return "".join(
        m["content"]["text"]
        for m in messages
        if m["msg_type"] == "stream" and m["parent_header"].get("msg_id") == msg_id
    ).strip()
