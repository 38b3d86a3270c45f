"""Section 12: how the cost of one decision grows with the work on the host.

Each curve measures the same decision at N = 10, 100, 1,000 and 10,000 (a quick run: 10 and
100), in one run, and states its fit: the exponent k of cost ∝ N^k between the smallest and the
largest N (0 is flat, about 0.2 logarithmic over these sizes, 1 linear).

- **queue**: a waiting start's turn, as a waiter checks it at each poll: the host's queue read
  from the state directory (N ticket files of M = N/4 users, each held by its flock as a waiting
  server holds it) and put in fair order, and the turn taken against a ledger whose eight GPUs
  are all held (so the start waits: the common case in a full lab). With the directory
  unchanged since the last check, the reading and the order are kept (tickets.py), and the turn
  asks only the ticket it rests on whether its waiter still holds it.
- **queue after a change**: the same, just after one start left the queue and another joined it
  (untimed): every ticket file is looked at again (a stat each, their flocks from /proc/locks)
  and the order made again.
- **quota**: a GPU start's quota check with N recorded GPU sessions of the user in the period
  (their ends, as the engine's removals write them), as GPUQuota makes it (RecordedUse: what the
  day files say is kept between checks, and read again only where they were appended to), one
  more session ended before each check.

The first decision of each size is timed apart: what a server's first one after its start costs
(it reads everything once).

Both are the host's own files, as every server on the host reads them: no engine is involved.

- **booking**: a GPU start's booking (GPUAllocator.book: the host's allocation lock, the ledger
  read, the choice) with N kernel containers holding GPUs on the Docker engine, as one kernel
  service holds them for N/4 users (cheap containers, created and never started: the ledger reads
  labels, and cannot tell them from kernels); seven of the eight GPUs are held, the eighth is
  chosen, and no container is made for it (what is timed is the decision). The ledger's index
  keeps the containers between bookings from the engine's events (container_index.py).
- **ledger by list**: the same ledger read from a full list of the engine's managed containers
  each time, as bookings read it before the index: the side-by-side reference.
- **the panel's endpoints** and the admin view, from a server of the section's own, with the N
  holders; the catalog (``/images``) also just after a container came and went (untimed), when
  the engine's disk report, kept while the engine's events show no change, is taken again.

These run only at 10, 100 and 1,000 (10 and 100 in a quick run): 10,000 containers on one
engine take longer to make than the rest of the benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import getpass
import math
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker

from jupyter_gpu_containers.backends.docker import event_window
from jupyter_gpu_containers.backends.docker.engine import Engine
from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.gpus.allocator import (
    GPUAllocator,
    GPURequest,
    Holding,
    Ledger,
    read_ledger,
    record_holding,
)
from jupyter_gpu_containers.gpus.gpuqueue import NotYourTurn, my_turn, read_tickets
from jupyter_gpu_containers.gpus.inventory import GPU, Inventory
from jupyter_gpu_containers.gpus.quota import RecordedUse, Span, append_records
from jupyter_gpu_containers.gpus.tickets import Ticket, remove_ticket, still_waiting, write_ticket
from jupyter_gpu_containers.host.hoststate import StateDir, open_state_dir

from .bench import Bench
from .harness import LABEL, Stats
from .server import BenchServer

SIZES = (10, 100, 1000, 10_000)
QUICK_SIZES = (10, 100)
GPUS = 8
# Decisions timed per size (fewer at 10,000: _repeats).
REPEATS = 30
QUICK_REPEATS = 3
HOLD_UP = 600.0  # GPUQueue.max_hold_up's default
FIRST_UID = 24001  # uids of the tickets: no account needed, and none of the other sections'
HOLDER_SIZES = (10, 100, 1000)
QUICK_HOLDER_SIZES = (10, 100)
KERNELS_PER_USER = 4
HOLDER_LABEL = "org.jupyter.gpu-containers.benchmark-holder"
# The endpoints timed with N holders, and requests to each per size.
HOLDER_ENDPOINTS = ("gpus", "images", "allocations", "queue", "admin")
REQUESTS = 30
MIN_REQUESTS = 3


def fit(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The exponent k of p50 ∝ N^k from the smallest to the largest N, and what it means."""
    first, last = rows[0], rows[-1]
    if first["p50"] <= 0 or last["p50"] <= 0 or first["n_items"] == last["n_items"]:
        return {"exponent": None, "shape": "unknown"}
    k = math.log(last["p50"] / first["p50"]) / math.log(last["n_items"] / first["n_items"])
    # Over 10..10,000, a cost that grows as log N has k near 0.2; linear, 1.
    shape = (
        "flat"
        if k < 0.1
        else "logarithmic"
        if k < 0.4
        else "sublinear"
        if k < 0.8
        else ("linear" if k < 1.3 else "superlinear")
    )
    return {"exponent": round(k, 2), "shape": shape}


@contextlib.contextmanager
def _state_dir() -> Iterator[StateDir]:
    """A host state directory of the benchmark's own, as setup-host makes one (sticky, the
    users' group's; its owner this account, which _server_config names to its server)."""
    path = Path(tempfile.mkdtemp(prefix="jgc-bench-scale-"))
    path.chmod(0o1770)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    state = StateDir(str(path), fd)
    try:
        yield state
    finally:
        state.close()
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _descriptors(needed: int) -> Iterator[None]:
    """Room for ``needed`` more open files (each waiting ticket holds one), within the hard
    limit; the soft limit is put back after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = len(os.listdir("/proc/self/fd")) + needed + 64
    if hard != resource.RLIM_INFINITY and want > hard:
        raise RuntimeError(
            f"{needed} waiting tickets need {want} open files; the hard limit is {hard}"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _inventory() -> Inventory:
    return Inventory(
        source="static",
        gpus=tuple(GPU(index=str(i), uuid=f"GPU-scale-{i}", name="T4") for i in range(GPUS)),
    )


def _full_ledger(inventory: Inventory) -> Ledger:
    """Every GPU held by a kernel of someone who does not wait."""
    ledger = Ledger()
    for i, gpu in enumerate(inventory.gpus):
        ledger.holdings[gpu.uuid] = [
            Holding(f"held-{i}", f"{i:012x}", "holder", str(FIRST_UID - 1), "", "", "", 1.0)
        ]
    return ledger


def _timed(
    decide: Callable[[], None], repeats: int, between: Callable[[int], None] | None = None
) -> tuple[Stats, float]:
    """``repeats`` decisions timed, after a first one (its time given apart: what a server's
    first decision after its start costs); ``between(i)``, untimed, before each."""
    started = time.perf_counter()
    decide()
    first = time.perf_counter() - started
    stats = Stats()
    for i in range(repeats):
        if between is not None:
            between(i)
        started = time.perf_counter()
        decide()
        stats.add(time.perf_counter() - started)
    return stats, first


def queue_curve(sizes: tuple[int, ...], repeats: int, *, changed: bool) -> dict[str, Any]:
    rows = []
    for n in sizes:
        users = max(1, n // 4)
        with _descriptors(n + 1), _state_dir() as state:
            stats, first = _queue_decisions(state, n, users, _repeats(n, repeats), changed)
        rows.append({"n_items": n, "users": users, **stats.to_dict(), "first": first})
    return {"rows": rows, "fit": fit(rows)}


def _queue_decisions(
    state: StateDir, n: int, users: int, repeats: int, changed: bool
) -> tuple[Stats, float]:
    """The newest of ``n`` waiting tickets checks its turn ``repeats`` times: with the queue as
    it was at its last check (the directory quiet since: the reading kept, as at most polls),
    or, ``changed``, just after one start left the queue and another (the one timed) joined it
    (untimed)."""
    allocator, inventory = GPUAllocator(), _inventory()
    ledger = _full_ledger(inventory)
    fds: dict[str, int] = {}
    now = time.time()
    newest = [""]

    def join(i: int) -> None:
        uid = FIRST_UID + i % users
        ticket = Ticket(
            name=f"gpuq-{time.time_ns():020d}-{uid}-scale-{i}",
            kernel_id=f"scale-{i}",
            uid=uid,
            user=f"student{i % users}",
            request=GPURequest(count=1),
            arrived=now,
            notebook=f"week3/exercise-{i}.ipynb",
            server_id="bench-scale",
            deadline=now + 3600,
        )
        fds[ticket.name] = write_ticket(state, ticket)
        newest[0] = ticket.kernel_id

    def churn(i: int) -> None:
        # The oldest start is served (its ticket goes) and a newcomer joins.
        first = next(iter(fds))
        remove_ticket(state, first, fds.pop(first))
        join(n + i)

    try:
        for i in range(n):
            join(i)
        if not changed:
            # A reading is kept once the directory's last change is a second old.
            time.sleep(1.1)

        def decide() -> None:
            ordered = read_tickets(state, None, ledger)
            assert len(ordered) == n, (len(ordered), n)
            try:
                my_turn(
                    allocator,
                    inventory,
                    ledger,
                    ordered,
                    newest[0],
                    hold_up=HOLD_UP,
                    waiting=functools.partial(still_waiting, state),
                )
            except NotYourTurn:
                return
            raise AssertionError("a start was given its turn with every GPU held")

        return _timed(decide, repeats, churn if changed else None)
    finally:
        for fd in fds.values():
            os.close(fd)


def quota_curve(sizes: tuple[int, ...], repeats: int) -> dict[str, Any]:
    rows = []
    for n in sizes:
        with _state_dir() as state:
            stats, first = _quota_checks(state, n, _repeats(n, repeats))
        rows.append({"n_items": n, **stats.to_dict(), "first": first})
    return {"rows": rows, "fit": fit(rows)}


def _quota_checks(state: StateDir, n: int, repeats: int) -> tuple[Stats, float]:
    """The running user's use checked ``repeats`` times over ``n`` recorded sessions, as
    GPUQuota checks it (RecordedUse: kept between checks), one more session ended before each."""
    uid = os.geteuid()  # append_records writes only the running user's own files
    now = time.time()
    # N sessions of the last days (within the week's period), each up to four days long.
    spans = [
        Span(f"{i:064x}", f"kernel-{i}", now - 3600 * (1 + i % 96) - i, now - i, 1)
        for i in range(n + repeats)
    ]
    for first in range(0, n, 500):
        problem = append_records(
            state, uid, [_ended(s) for s in spans[first : min(n, first + 500)]], now
        )
        if problem:
            raise RuntimeError(problem)
    since, recorded = now - 7 * 24 * 3600, RecordedUse()

    def one_more(i: int) -> None:
        problem = append_records(state, uid, [_ended(spans[n + i])], now)
        if problem:
            raise RuntimeError(problem)

    def decide() -> None:
        hours, _ = recorded.standing(state, uid, since, now)
        assert hours > 0

    return _timed(decide, repeats, one_more)


def _ended(span: Span) -> dict[str, Any]:
    """A line as GPUQuota.record_removal writes a removal: the span and its end."""
    return {
        "container": span.container,
        "kernel_id": span.kernel_id,
        "start": span.start,
        "gpus": span.gpus,
        "end": span.end,
    }


def _repeats(n: int, repeats: int) -> int:
    """Fewer at the largest size, whose single decision is long enough to time."""
    return repeats if n < 10_000 else max(1, repeats // 5)


async def holder_curves(
    bench: Bench, sizes: tuple[int, ...], repeats: int, requests: int
) -> dict[str, Any]:
    """The booking and the ledger by list, measured side by side at each N, then the panel's
    and the admin view's endpoints of a server of the section's own with the same eight GPUs;
    the holders made once and added to between sizes, and every one removed at the end."""
    engine = Engine()
    curves: dict[str, list[dict[str, Any]]] = {
        "booking": [],
        "ledger_by_list": [],
        **{f"rest_{endpoint}": [] for endpoint in HOLDER_ENDPOINTS},
        "rest_images_changed": [],
    }
    try:
        with _state_dir() as state, _servers(state) as claim:
            _usable_by_a_server(state)
            server = BenchServer(bench.home / "scale", _server_config(bench, state))
            try:
                await asyncio.to_thread(server.start)
                made = 0
                for n in sizes:
                    await asyncio.to_thread(_add_holders, bench, made, n, claim, state)
                    made = n
                    # A booking reads its window again this long: within it, the burst of
                    # creations just made (more events than the engine keeps) is listed.
                    await asyncio.sleep(event_window.REPLAY)
                    await _measure(bench, engine, state, server, n, repeats, requests, curves)
            finally:
                await asyncio.to_thread(server.stop)
    finally:
        engine.close()
        await asyncio.to_thread(_remove_holders, bench.client, bench.run_id)
    return {name: {"rows": rows, "fit": fit(rows)} for name, rows in curves.items()}


async def _measure(
    bench: Bench,
    engine: Engine,
    state: StateDir,
    server: BenchServer,
    n: int,
    repeats: int,
    requests: int,
    curves: dict[str, list[dict[str, Any]]],
) -> None:
    """Each holder curve's row at N = ``n``."""
    allocator, inventory = GPUAllocator(), _inventory()

    async def create(chosen: list[GPU]) -> str:
        assert [g.uuid for g in chosen] == [inventory.gpus[-1].uuid], chosen
        # The decision is what is timed (and its holder record), not a container's creation.
        return "0" * 64

    async def book() -> None:
        await allocator.book(
            state=state,
            backend=engine,
            inventory=inventory,
            request=GPURequest(count=1),
            kernel_id="bench-booking",
            uid=str(os.geteuid()),
            show_others=True,
            create=create,
        )

    async def by_list() -> None:
        containers = await engine.list_containers({L.MANAGED: "true"})
        ledger = read_ledger(containers, state, L.OwnerProcess.current().host)
        assert sum(len(h) for h in ledger.holdings.values()) >= n

    decisions: dict[str, tuple[Callable[[], Any], int]] = {
        "booking": (book, repeats),
        "ledger_by_list": (by_list, repeats),
    }
    for endpoint in HOLDER_ENDPOINTS:

        async def get(endpoint: str = endpoint) -> None:
            await server.call("GET", f"gpu-containers/{endpoint}")

        decisions[f"rest_{endpoint}"] = (get, requests)
    for name, (decide, times) in decisions.items():
        stats, first = await _timed_async(decide, times)
        curves[name].append({"n_items": n, **stats.to_dict(), "first": first})

    async def images() -> None:
        await server.call("GET", "gpu-containers/images")

    # The catalog just after a container came and went (untimed): the engine's disk report,
    # kept while its events show no change, is taken again.
    stats = Stats()
    for _ in range(requests):
        await asyncio.to_thread(_container_came_and_went, bench.client, bench.run_id, bench.image)
        started = time.perf_counter()
        await images()
        stats.add(time.perf_counter() - started)
    curves["rest_images_changed"].append({"n_items": n, **stats.to_dict()})
    shown = len((await server.call("GET", "gpu-containers/admin"))["holders"])
    if shown < n:
        raise RuntimeError(f"the admin view showed {shown} of {n} holders")


def _server_config(bench: Bench, state: StateDir) -> dict[str, Any]:
    """The section's server: the benchmark's, with the eight GPUs, its account an administrator
    (GET /gpu-containers/admin), on the state directory whose servers hold the holders."""
    return bench.server_config(
        {
            "GPUInventory": {
                "source": "static",
                "static_gpus": [
                    {"index": int(g.index), "uuid": g.uuid, "name": g.name}
                    for g in _inventory().gpus
                ],
            },
            "GPUAdmin": {"admin_users": [getpass.getuser()]},
            "ContainerPolicy": {
                "state_dir": state.path,
                "state_dir_owner": "" if os.geteuid() == 0 else getpass.getuser(),
            },
        }
    )


def _usable_by_a_server(state: StateDir) -> None:
    """A server given a state directory it refuses uses a private one instead, where the
    holders' servers are not alive: every holder's liveness then costs more, and the curves
    would measure that. Refused here instead."""
    opened = open_state_dir(state.path, "" if os.geteuid() == 0 else getpass.getuser())
    opened.close()
    if opened.problem:
        raise RuntimeError(opened.problem)


@contextlib.contextmanager
def _servers(state: StateDir) -> Iterator[Callable[[str], None]]:
    """The holders' servers, alive: their ids held in the state directory by a second handle on
    it (the booking's own handle then finds them alive as another server's would be, by
    /proc/locks), released at the end."""
    fd = os.open(state.path, os.O_RDONLY | os.O_DIRECTORY)
    servers = StateDir(state.path, fd)

    def claim(server_id: str) -> None:
        if not servers.claim(server_id):
            raise RuntimeError(f"the benchmark's server id {server_id} could not be held")

    try:
        yield claim
    finally:
        servers.close()


async def _timed_async(decide: Callable[[], Any], repeats: int) -> tuple[Stats, float]:
    """As _timed, for a coroutine function."""
    started = time.perf_counter()
    await decide()
    first = time.perf_counter() - started
    stats = Stats()
    for _ in range(repeats):
        started = time.perf_counter()
        await decide()
        stats.add(time.perf_counter() - started)
    return stats, first


def _add_holders(
    bench: Bench, start: int, n: int, claim: Callable[[str], None], state: StateDir
) -> None:
    """Holders ``start`` to ``n``: kernel containers' labels on created containers, each holding
    one of the first seven GPUs, KERNELS_PER_USER to a server whose id ``claim`` holds, and the
    holder record a booking writes (gpus/allocator.py: the ledger believes no label without)."""
    owner = L.OwnerProcess.current().token()
    uid = os.geteuid()
    gpus = _inventory().gpus[:-1]
    run_id = bench.run_id
    for first in range(start - start % KERNELS_PER_USER, n, KERNELS_PER_USER):
        claim(f"bench-{run_id}-{first // KERNELS_PER_USER}")

    def make(i: int) -> None:
        made = bench.client.api.create_container(
            bench.image,
            ["sleep", "infinity"],
            name=f"jgc-bench-{run_id}-holder-{i}",
            labels={
                LABEL: run_id,
                HOLDER_LABEL: "true",
                L.MANAGED: "true",
                L.KERNEL_ID: f"holder-{i}",
                L.GPUS: gpus[i % len(gpus)].uuid,
                L.GPU_COUNT: "1",
                L.UID: str(uid),
                L.USER: f"student{i // KERNELS_PER_USER}",
                L.SERVER_ID: f"bench-{run_id}-{i // KERNELS_PER_USER}",
                L.OWNER_PROCESS: owner,
            },
        )
        record_holding(state, made["Id"], [gpus[i % len(gpus)].uuid], str(uid), f"holder-{i}")

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(make, range(start, n)))


def _container_came_and_went(client: docker.DockerClient, run_id: str, image: str) -> None:
    """A container of the run's, not a holder (it books nothing), created and removed."""
    made = client.api.create_container(image, ["true"], labels={LABEL: run_id})
    client.api.remove_container(made["Id"], force=True)


def _remove_holders(client: docker.DockerClient, run_id: str) -> None:
    def remove(container_id: str) -> None:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            client.api.remove_container(container_id, force=True)

    holders = client.api.containers(
        all=True, quiet=True, filters={"label": [f"{LABEL}={run_id}", f"{HOLDER_LABEL}=true"]}
    )
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(remove, [h["Id"] for h in holders]))


async def run(bench: Bench, quick: bool) -> dict[str, Any]:
    """The files' curves on a worker thread, then the engine's."""
    sizes = QUICK_SIZES if quick else SIZES
    repeats = QUICK_REPEATS if quick else REPEATS
    curves = {
        "queue": await asyncio.to_thread(queue_curve, sizes, repeats, changed=False),
        "queue_changed": await asyncio.to_thread(queue_curve, sizes, repeats, changed=True),
        "quota": await asyncio.to_thread(quota_curve, sizes, repeats),
    }
    holder_sizes = QUICK_HOLDER_SIZES if quick else HOLDER_SIZES
    curves.update(
        await holder_curves(bench, holder_sizes, repeats, QUICK_REPEATS if quick else REQUESTS)
    )
    return {"sizes": list(sizes), "curves": curves}
