"""Section 12: how the cost of one decision grows with the work on the host.

Each curve measures the same decision at N = 10, 100, 1,000 and 10,000 (a quick run: 10 and
100), in one run, and states its fit: the exponent k of cost ∝ N^k between the smallest and the
largest N (0 is flat, about 0.2 logarithmic over these sizes, 1 linear).

- **queue**: a waiting start's turn, as a waiter checks it at each poll: the host's queue read
  from the state directory (N ticket files of M = N/4 users, each held by its flock as a waiting
  server holds it) and put in fair order, and the turn taken against a ledger whose eight GPUs
  are all held (so the start waits: the common case in a full lab).
- **quota**: a GPU start's quota check with N recorded GPU sessions of the user in the period
  (their ends, as the engine's removals write them), as GPUQuota makes it (RecordedUse: what the
  day files say is kept between checks, and read again only where they were appended to), one
  more session ended before each check.

The first decision of each size is timed apart: what a server's first one after its start costs
(it reads everything once).

Both are the host's own files, as every server on the host reads them: no engine is involved
(what the ledger's reading costs with N kernel containers is the engine's, measured on its own).
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from jupyter_gpu_containers.gpus.allocator import GPUAllocator, GPURequest, Holding, Ledger
from jupyter_gpu_containers.gpus.gpuqueue import NotYourTurn, my_turn, read_tickets
from jupyter_gpu_containers.gpus.inventory import GPU, Inventory
from jupyter_gpu_containers.gpus.quota import RecordedUse, Span, append_records
from jupyter_gpu_containers.gpus.tickets import Ticket, write_ticket
from jupyter_gpu_containers.host.hoststate import StateDir

from .harness import Stats

SIZES = (10, 100, 1000, 10_000)
QUICK_SIZES = (10, 100)
GPUS = 8
# Decisions timed per size (fewer at 10,000: _repeats).
REPEATS = 30
QUICK_REPEATS = 3
HOLD_UP = 600.0  # GPUQueue.max_hold_up's default
FIRST_UID = 24001  # uids of the tickets: no account needed, and none of the other sections'


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
    """A host state directory of the benchmark's own, as setup-host makes one (sticky, shared)."""
    path = Path(tempfile.mkdtemp(prefix="jgc-bench-scale-"))
    path.chmod(0o1777)
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


def queue_curve(sizes: tuple[int, ...], repeats: int) -> dict[str, Any]:
    rows = []
    for n in sizes:
        users = max(1, n // 4)
        with _descriptors(n), _state_dir() as state:
            stats, first = _queue_decisions(state, n, users, _repeats(n, repeats))
        rows.append({"n_items": n, "users": users, **stats.to_dict(), "first": first})
    return {"rows": rows, "fit": fit(rows)}


def _queue_decisions(state: StateDir, n: int, users: int, repeats: int) -> tuple[Stats, float]:
    """The last of ``n`` waiting tickets checks its turn ``repeats`` times."""
    allocator, inventory = GPUAllocator(), _inventory()
    ledger = _full_ledger(inventory)
    fds = []
    try:
        now = time.time()
        for i in range(n):
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
            fds.append(write_ticket(state, ticket))

        def decide() -> None:
            ordered = read_tickets(state, None, ledger)
            assert len(ordered) == n, (len(ordered), n)
            try:
                my_turn(allocator, inventory, ledger, ordered, f"scale-{n - 1}", hold_up=HOLD_UP)
            except NotYourTurn:
                return
            raise AssertionError("a start was given its turn with every GPU held")

        return _timed(decide, repeats)
    finally:
        for fd in fds:
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


def run(quick: bool) -> dict[str, Any]:
    """Blocking (files only): the caller runs it on a worker thread."""
    sizes = QUICK_SIZES if quick else SIZES
    repeats = QUICK_REPEATS if quick else REPEATS
    return {
        "sizes": list(sizes),
        "curves": {
            "queue": queue_curve(sizes, repeats),
            "quota": quota_curve(sizes, repeats),
        },
    }
