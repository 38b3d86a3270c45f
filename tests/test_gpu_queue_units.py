"""The GPU wait queue's parts without a server: fair order, turns, and the ticket files."""

from __future__ import annotations

import asyncio
import fcntl
import json
import math
import os
import stat
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hostusers import ALICE, needs_accounts, uid_of

from jupyter_gpu_containers.gpus import tickets
from jupyter_gpu_containers.gpus.allocator import (
    GPUAllocator,
    GPURequest,
    Holding,
    Ledger,
    NoFreeGPU,
)
from jupyter_gpu_containers.gpus.gpuqueue import (
    NotYourTurn,
    fair_order,
    held_by_user,
    my_turn,
    read_tickets,
)
from jupyter_gpu_containers.gpus.inventory import GPU, Inventory
from jupyter_gpu_containers.gpus.quota import append_records
from jupyter_gpu_containers.gpus.recent_use import RESOLUTION, RecentUse, Standing, decayed
from jupyter_gpu_containers.gpus.tickets import Ticket, remove_stale_tickets
from jupyter_gpu_containers.host.hoststate import StateDir


def ticket(kernel_id: str, uid: int, arrived: float, gpus: object = 1) -> Ticket:
    return Ticket(
        name=f"gpuq-{int(arrived * 1e9):020d}-{uid}-{kernel_id}",
        kernel_id=kernel_id,
        uid=uid,
        user=f"user{uid}",
        request=GPURequest.parse(gpus),
        arrived=arrived,
    )


def inventory(n: int) -> Inventory:
    return Inventory(
        source="static", gpus=tuple(GPU(index=str(i), uuid=f"GPU-{i}", name="T4") for i in range(n))
    )


def held(*pairs: tuple[str, str]) -> Ledger:
    ledger = Ledger()
    for uuid, kernel_id in pairs:
        ledger.holdings.setdefault(uuid, []).append(
            Holding(kernel_id, "c", "someone", "999", "", "", "", 0.0)
        )
    return ledger


def test_fair_order_is_fifo_within_a_user_and_round_robin_across_users() -> None:
    # Alice asks three times before Bob asks twice, and Carol once, last.
    queue = [
        ticket("a1", 1, 1.0),
        ticket("a2", 1, 2.0),
        ticket("a3", 1, 3.0),
        ticket("b1", 2, 4.0),
        ticket("b2", 2, 5.0),
        ticket("c1", 3, 6.0),
    ]
    ordered = fair_order(list(reversed(queue)))
    assert [t.kernel_id for t in ordered] == ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert [t.position for t in ordered] == [1, 2, 3, 4, 5, 6]


def test_the_user_with_the_least_recent_use_goes_first_among_equal_ranks() -> None:
    # Alice used a GPU a moment ago (her first start); her second came before Bob's first.
    queue = [ticket("a2", 1, 2.0), ticket("b1", 2, 3.0), ticket("a3", 1, 4.0)]
    assert [t.kernel_id for t in fair_order(queue, {1: Standing(0, 10.0)})] == ["b1", "a2", "a3"]
    # Equal use: who used a GPU least recently first.
    both = {1: Standing(0, 10.0), 2: Standing(0, 11.0)}
    assert [t.kernel_id for t in fair_order(queue, both)] == ["a2", "b1", "a3"]
    # More use, however recent its end: after.
    more = {1: Standing(0, 10.0), 2: Standing(3, 1.0)}
    assert [t.kernel_id for t in fair_order(queue, more)] == ["a2", "b1", "a3"]


def test_a_turn_comes_only_after_those_ahead_are_served() -> None:
    allocator = GPUAllocator()
    two = inventory(2)
    queue = fair_order([ticket("a1", 1, 1.0), ticket("b1", 2, 2.0), ticket("c1", 3, 3.0)])
    # One GPU free: the head may book, the second may not (the head gets that GPU first).
    one_free = held(("GPU-0", "other"))
    assert my_turn(allocator, two, one_free, queue, "a1") is not one_free
    imagined = my_turn(allocator, two, one_free, queue, "b1")
    with pytest.raises(NoFreeGPU):
        allocator.choose(two, imagined, GPURequest(count=1), kernel_id="b1", uid="2")
    # Both free: the second books, with the GPU the head does not get.
    imagined = my_turn(allocator, two, Ledger(), queue, "b1")
    chosen = allocator.choose(two, imagined, GPURequest(count=1), kernel_id="b1", uid="2")
    assert [g.uuid for g in chosen] == ["GPU-1"]


def test_a_big_request_at_the_head_holds_up_those_behind_it() -> None:
    allocator = GPUAllocator()
    queue = fair_order([ticket("big", 1, 1.0, gpus=2), ticket("small", 2, 2.0)])
    with pytest.raises(NotYourTurn):
        my_turn(allocator, inventory(2), held(("GPU-0", "other")), queue, "small")
    # A start that does not wait comes after the whole queue.
    with pytest.raises(NotYourTurn):
        my_turn(allocator, inventory(2), held(("GPU-0", "other")), queue, "not-queued")


def test_a_ticket_its_users_cap_holds_back_is_stepped_over() -> None:
    allocator = GPUAllocator(max_gpus_per_user=1)
    ledger = Ledger()
    ledger.holdings["GPU-0"] = [Holding("mine", "c", "user1", "1", "", "", "", 0.0)]
    queue = fair_order([ticket("capped", 1, 1.0), ticket("b1", 2, 2.0)])
    imagined = my_turn(allocator, inventory(2), ledger, queue, "b1")
    chosen = allocator.choose(inventory(2), imagined, GPURequest(count=1), kernel_id="b1", uid="2")
    assert [g.uuid for g in chosen] == ["GPU-1"]


def holding(kernel_id: str, uid: int, created: float = 0.0) -> Holding:
    return Holding(kernel_id, "c", f"user{uid}", str(uid), "", "", "", created)


def test_every_gpu_a_user_holds_counts_toward_their_turn() -> None:
    # Issue 26, finding 3: Alice holds a GPU taken without waiting (no "served" mark), then waits
    # for a second, before Bob waits for his first: Bob's comes first.
    ledger = Ledger(holdings={"GPU-0": [holding("ordinary", 1, created=5.0)]})
    queue = [ticket("a2", 1, 10.0), ticket("b1", 2, 11.0)]
    assert [t.kernel_id for t in fair_order(queue, {}, held_by_user(ledger))] == ["b1", "a2"]
    # Ranks count GPUs: Alice's first start asks for two, so her next ranks with Bob's third.
    queue = [
        ticket("a1", 1, 1.0, gpus=2),
        ticket("a2", 1, 2.0),
        ticket("b1", 2, 3.0),
        ticket("b2", 2, 4.0),
        ticket("b3", 2, 5.0),
    ]
    assert [t.kernel_id for t in fair_order(queue)] == ["a1", "b1", "b2", "a2", "b3"]
    # Equal GPUs held: the one with more recent use comes last.
    ledger = Ledger(
        holdings={"GPU-0": [holding("x", 1, created=20.0)], "GPU-1": [holding("y", 2, 9.0)]}
    )
    queue = [ticket("a", 1, 1.0), ticket("b", 2, 2.0)]
    standings = {1: Standing(2, 30.0), 2: Standing(1, 30.0)}
    assert [t.kernel_id for t in fair_order(queue, standings, held_by_user(ledger))] == ["b", "a"]


def test_a_ticket_its_users_own_gpus_block_holds_up_nobody() -> None:
    # Issue 26, finding 2: Alice holds GPU 1 and waits for two GPUs on a two-GPU host; only her
    # own kernel's end could serve her, so Bob's start, behind her, gets GPU 0.
    allocator = GPUAllocator()
    ledger = Ledger(holdings={"GPU-1": [holding("hers", 1)]})
    queue = fair_order([ticket("both", 1, 1.0, gpus=2), ticket("b1", 2, 2.0)])
    imagined = my_turn(allocator, inventory(2), ledger, queue, "b1")
    chosen = allocator.choose(inventory(2), imagined, GPURequest(count=1), kernel_id="b1", uid="2")
    assert [g.uuid for g in chosen] == ["GPU-0"]
    # Nor does one that names a GPU its own user holds.
    queue = fair_order([ticket("gpu1", 1, 1.0, gpus=["1"]), ticket("b1", 2, 2.0)])
    imagined = my_turn(allocator, inventory(2), ledger, queue, "b1")
    chosen = allocator.choose(inventory(2), imagined, GPURequest(count=1), kernel_id="b1", uid="2")
    assert [g.uuid for g in chosen] == ["GPU-0"]
    # Another user's GPU in the way is worth waiting for: the same ticket holds Bob up when
    # Carol holds GPU 1.
    carols = Ledger(holdings={"GPU-1": [holding("carols", 3)]})
    queue = fair_order([ticket("both", 1, 1.0, gpus=2), ticket("b1", 2, 2.0)])
    with pytest.raises(NotYourTurn):
        my_turn(allocator, inventory(2), carols, queue, "b1")


def test_a_ticket_holds_up_the_others_for_at_most_max_hold_up() -> None:
    allocator = GPUAllocator()
    carols = Ledger(holdings={"GPU-1": [holding("carols", 3)]})
    queue = fair_order([ticket("both", 1, 100.0, gpus=2), ticket("b1", 2, 101.0)])
    with pytest.raises(NotYourTurn):
        my_turn(allocator, inventory(2), carols, queue, "b1", hold_up=60, now=159.0)
    imagined = my_turn(allocator, inventory(2), carols, queue, "b1", hold_up=60, now=160.0)
    chosen = allocator.choose(inventory(2), imagined, GPURequest(count=1), kernel_id="b1", uid="2")
    assert [g.uuid for g in chosen] == ["GPU-0"]
    # Past its hold-up, a ticket whose GPUs are free is still served before those behind it.
    imagined = my_turn(allocator, inventory(2), Ledger(), queue, "b1", hold_up=60, now=160.0)
    with pytest.raises(NoFreeGPU):
        allocator.choose(inventory(2), imagined, GPURequest(count=1), kernel_id="b1", uid="2")


# ------------------------------------------------------------------------- the files


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateDir]:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o1770)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    opened = StateDir(str(directory), fd)
    yield opened
    opened.close()


def write(state: StateDir, name: str, body: object, lock: bool = True) -> int:
    path = Path(state.path) / name
    path.write_text(json.dumps(body))
    fd = os.open(path, os.O_RDONLY)
    if lock:
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_only_held_well_formed_tickets_count(state: StateDir) -> None:
    me = os.getuid()
    deadline = time.time() + 600
    body = {"user": "me", "notebook": "a.ipynb", "gpus": 1, "server_id": "s", "deadline": deadline}
    fds = [
        write(state, f"gpuq-{1_000_000_000_000_000_000:020d}-{me}-live", body),
        write(state, f"gpuq-{1_000_000_000_000_000_001:020d}-{me}-dead", body, lock=False),
        write(state, f"gpuq-{1_000_000_000_000_000_002:020d}-{me}-junk", {"gpus": "x y"}),
        write(state, f"gpuq-{1_000_000_000_000_000_003:020d}-{me}-nogpu", {**body, "gpus": 0}),
        write(state, "gpuq-not-a-ticket", body),
    ]
    os.symlink(
        Path(state.path) / f"gpuq-{1_000_000_000_000_000_000:020d}-{me}-live",
        Path(state.path) / f"gpuq-{1_000_000_000_000_000_004:020d}-{me}-link",
    )
    try:
        found = read_tickets(state)
        assert [(t.kernel_id, t.notebook, t.position) for t in found] == [("live", "a.ipynb", 1)]
        # The dead one is removed by its own user's next waiter, once old enough.
        dead = Path(state.path) / f"gpuq-{1_000_000_000_000_000_001:020d}-{me}-dead"
        os.utime(dead, (1.0, 1.0))
        assert remove_stale_tickets(state, me) == 1
        assert not dead.exists()
    finally:
        for fd in fds:
            os.close(fd)


def test_a_live_ticket_that_a_reading_of_proc_locks_missed_still_counts_and_stays(
    state: StateDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/proc/locks is read in many reads of a list that changes meanwhile: on a busy host a
    held lock can be missed. Such a ticket is asked of its file: it keeps its place, and its own
    user's next waiter does not remove it as stale."""
    me = os.getuid()
    body = {"user": "me", "gpus": 1, "deadline": time.time() + 600}
    name = f"gpuq-{1_000_000_000_000_000_000:020d}-{me}-live"
    fd = write(state, name, body)
    try:
        assert [t.kernel_id for t in read_tickets(state, frozenset())] == ["live"]
        os.utime(Path(state.path) / name, (1.0, 1.0))  # old enough to be removed, were it dead
        monkeypatch.setattr(tickets, "flocked_files", frozenset)
        assert remove_stale_tickets(state, me) == 0
        assert (Path(state.path) / name).exists()
    finally:
        os.close(fd)
    # Its waiter gone, it counts no more, and goes.
    assert read_tickets(state, frozenset()) == []
    assert remove_stale_tickets(state, me) == 1


def test_a_ticket_file_is_read_again_once_it_changed(state: StateDir) -> None:
    """Tickets are parsed once and kept by their file's inode, size and change time: a file
    written again (or replaced) under the same name is read again."""
    me = os.getuid()
    name = f"gpuq-{1_000_000_000_000_000_000:020d}-{me}-k"
    body = {"user": "me", "notebook": "a.ipynb", "gpus": 1, "deadline": time.time() + 600}
    fd = write(state, name, body)
    try:
        assert [t.notebook for t in read_tickets(state)] == ["a.ipynb"]
        assert [t.notebook for t in read_tickets(state)] == ["a.ipynb"]  # from what was kept
        (Path(state.path) / name).write_text(json.dumps({**body, "notebook": "longer.ipynb"}))
        assert [t.notebook for t in read_tickets(state)] == ["longer.ipynb"]
        # Same size, new content: the change time tells it (a clock tick later).
        path, before = Path(state.path) / name, os.stat(Path(state.path) / name).st_ctime_ns
        while os.stat(path).st_ctime_ns == before:
            time.sleep(0.005)
            path.write_text(json.dumps({**body, "notebook": "lonxer.ipynb"}))
        assert [t.notebook for t in read_tickets(state)] == ["lonxer.ipynb"]
        # Made junk: no longer a ticket.
        (Path(state.path) / name).write_text('{"gpus": "x y"}')
        assert read_tickets(state) == []
    finally:
        os.close(fd)


@needs_accounts
def test_a_ticket_in_another_users_name_does_not_count(state: StateDir) -> None:
    """Root's directory owner may write for anyone (the kernel service); a file of one user
    claiming another user's uid is ignored."""
    alice = uid_of(ALICE)
    body = {"user": "alice", "gpus": 1}
    name = f"gpuq-{1_000_000_000_000_000_000:020d}-{alice + 1}-forged"
    fd = write(state, name, body)
    os.chown(Path(state.path) / name, alice, -1)
    own = f"gpuq-{1_000_000_000_000_000_001:020d}-{alice}-hers"
    fd2 = write(state, own, body)
    os.chown(Path(state.path) / own, alice, -1)
    try:
        assert [t.kernel_id for t in read_tickets(state)] == ["hers"]
    finally:
        os.close(fd)
        os.close(fd2)


def test_a_start_for_a_busy_specific_gpu_does_not_hold_up_the_others() -> None:
    allocator = GPUAllocator()
    queue = fair_order([ticket("gpu0", 1, 1.0, gpus=["0"]), ticket("any", 2, 2.0)])
    busy0 = held(("GPU-0", "other"))
    imagined = my_turn(allocator, inventory(2), busy0, queue, "any")
    chosen = allocator.choose(inventory(2), imagined, GPURequest(count=1), kernel_id="any", uid="2")
    assert [g.uuid for g in chosen] == ["GPU-1"]
    # Once GPU 0 frees, it is kept for the start that waits for it.
    imagined = my_turn(allocator, inventory(2), held(("GPU-1", "other")), queue, "any")
    with pytest.raises(NoFreeGPU):
        allocator.choose(inventory(2), imagined, GPURequest(count=1), kernel_id="any", uid="2")


async def test_a_ticket_is_readable_to_the_other_servers_whatever_the_umask(
    state: StateDir,
) -> None:
    from jupyter_gpu_containers.gpus.gpuqueue import GPUQueue, Start

    queue = GPUQueue(max_wait=5, poll_interval=0.05)
    seen: list[int] = []

    async def never(turn: object) -> tuple[list[GPU], str]:
        tickets = [p for p in Path(state.path).iterdir() if p.name.startswith("gpuq-0")]
        seen.extend(stat.S_IMODE(p.stat().st_mode) for p in tickets)
        raise NoFreeGPU("taken")

    old = os.umask(0o077)
    try:
        waiting = asyncio.ensure_future(
            queue.book(
                Start(kernel_id="k1", uid=os.getuid(), user="me", request=GPURequest(count=1)),
                wait=True,
                allocator=GPUAllocator(),
                state=state,
                inventory=inventory(1),
                book=never,
            )
        )
        while not seen:
            await asyncio.sleep(0.02)
        assert queue.cancel("k1", "done")
        with pytest.raises(Exception, match="cancelled"):
            await waiting
    finally:
        os.umask(old)
    assert seen[0] == 0o644
    assert read_tickets(state) == []  # gone with its start


def test_a_ticket_past_its_deadline_counts_no_more(state: StateDir) -> None:
    me = os.getuid()
    body = {"user": "me", "gpus": 1, "deadline": time.time() - 60}
    fd = write(state, f"gpuq-{time.time_ns():020d}-{me}-late", body)
    try:
        assert read_tickets(state) == []
    finally:
        os.close(fd)


# ------------------------------------------------- a reading kept while nothing changes


@pytest.fixture
def quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """The directory counts as quiet at once: a reading is kept from the first one (by default
    only once the directory's last change is a second old, which a test would have to wait
    for)."""
    monkeypatch.setattr(tickets, "_QUIET_NS", -(10**12))


def body_for(kernel: str, deadline: float | None = None) -> dict[str, object]:
    return {
        "user": "me",
        "notebook": f"{kernel}.ipynb",
        "gpus": 1,
        "deadline": time.time() + 600 if deadline is None else deadline,
    }


def test_a_reading_is_given_again_while_the_directory_is_unchanged(
    state: StateDir, quiet: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    me = os.getuid()
    fds = [
        write(state, f"gpuq-{1_000_000_000_000_000_000 + i:020d}-{me}-k{i}", body_for(f"k{i}"))
        for i in range(3)
    ]
    try:
        first = read_tickets(state)
        assert [t.kernel_id for t in first] == ["k0", "k1", "k2"]
        # Nothing changed: no ticket is looked at again, and the order is the one kept.
        monkeypatch.setattr(tickets, "_read_all", None)
        assert read_tickets(state) is first
        monkeypatch.undo()
        monkeypatch.setattr(tickets, "_QUIET_NS", -(10**12))
        # Another start's GPUs move the order, not the reading.
        ledger = held(("GPU-0", "x"))
        ledger.holdings["GPU-0"][0] = Holding("x", "c", "me", str(me), "", "", "", 1.0)
        moved = read_tickets(state, None, ledger)
        assert moved is not first and [t.kernel_id for t in moved] == ["k0", "k1", "k2"]
        # A new ticket changes the directory: read at once.
        fds.append(write(state, f"gpuq-{1_000_000_000_000_000_009:020d}-{me}-new", body_for("n")))
        assert [t.kernel_id for t in read_tickets(state)] == ["k0", "k1", "k2", "new"]
        # And one that goes.
        os.unlink(Path(state.path) / f"gpuq-{1_000_000_000_000_000_001:020d}-{me}-k1")
        assert [t.kernel_id for t in read_tickets(state)] == ["k0", "k2", "new"]
    finally:
        for fd in fds:
            os.close(fd)


def test_a_reading_right_after_a_change_is_not_kept(
    state: StateDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change made in the same clock tick as the one before it could leave the directory's
    times as they were: a reading is kept only once the directory has been quiet a while."""
    monkeypatch.setattr(tickets, "_QUIET_NS", 10**15)  # never quiet enough
    me = os.getuid()
    fd = write(state, f"gpuq-{1_000_000_000_000_000_000:020d}-{me}-k", body_for("k"))
    try:
        first = read_tickets(state)
        assert [t.kernel_id for t in first] == ["k"]
        assert read_tickets(state) is not first
    finally:
        os.close(fd)


def test_a_waiter_that_dies_under_a_kept_reading_holds_nobody_up(
    state: StateDir, quiet: None
) -> None:
    """A waiter's death changes no directory: the kept reading still counts its ticket, but a
    turn asks each ticket it rests on, steps over the dead one, and the next reading reads every
    file again."""
    from jupyter_gpu_containers.gpus.tickets import still_waiting

    me = os.getuid()
    dead_fd = write(state, f"gpuq-{1_000_000_000_000_000_000:020d}-{me}-gone", body_for("gone"))
    mine = write(state, f"gpuq-{1_000_000_000_000_000_001:020d}-{me + 1}-mine", body_for("m"))
    try:
        queue = read_tickets(state)
        assert [t.kernel_id for t in queue] == ["gone", "mine"]
        allocator, taken = GPUAllocator(), held(("GPU-0", "other"))

        def turn() -> Ledger:
            return my_turn(
                allocator,
                inventory(1),
                taken,
                queue,
                "mine",
                waiting=lambda t: still_waiting(state, t),
            )

        with pytest.raises(NotYourTurn):
            turn()  # the start ahead waits for the one GPU too
        os.close(dead_fd)  # its server died
        dead_fd = -1
        assert read_tickets(state) is queue  # the directory is as it was
        assert turn().holdings == taken.holdings  # stepped over: nothing imagined for it
        assert [t.kernel_id for t in read_tickets(state)] == ["mine"]
    finally:
        for fd in (dead_fd, mine):
            if fd >= 0:
                os.close(fd)


def test_a_ticket_locked_after_a_kept_reading_counts_at_once(state: StateDir, quiet: None) -> None:
    """A waiter creates its file, then locks it, then writes it: a reading between those steps
    leaves it out, and a later one with the directory unchanged counts it once it is whole and
    locked."""
    me = os.getuid()
    name = f"gpuq-{1_000_000_000_000_000_000:020d}-{me}-late"
    path = Path(state.path) / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        assert read_tickets(state) == []  # empty, unlocked: being made
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert read_tickets(state) == []  # locked, still empty
        os.write(fd, json.dumps(body_for("late")).encode())
        assert [t.kernel_id for t in read_tickets(state)] == ["late"]
    finally:
        os.close(fd)
    # Written and then locked, as well.
    name2 = f"gpuq-{1_000_000_000_000_000_001:020d}-{me}-later"
    fd = write(state, name2, body_for("later"), lock=False)
    try:
        assert read_tickets(state) == []
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert [t.kernel_id for t in read_tickets(state)] == ["later"]
    finally:
        os.close(fd)


def test_a_kept_reading_drops_a_ticket_past_its_deadline(
    state: StateDir, quiet: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    me = os.getuid()
    deadline = time.time() + 600
    fd = write(state, f"gpuq-{1_000_000_000_000_000_000:020d}-{me}-k", body_for("k", deadline))
    try:
        assert [t.kernel_id for t in read_tickets(state)] == ["k"]
        later = deadline + tickets._DEADLINE_GRACE + 1
        monkeypatch.setattr(tickets.time, "time", lambda: later)
        assert read_tickets(state) == []
    finally:
        os.close(fd)


def test_a_kept_reading_is_read_again_in_full_after_a_while(
    state: StateDir, quiet: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a kept reading cannot see (a ticket written again in place by its owner) is seen at
    the next full reading, at most _READ_ALL_EVERY seconds after."""
    me = os.getuid()
    name = f"gpuq-{1_000_000_000_000_000_000:020d}-{me}-k"
    fd = write(state, name, body_for("k"))
    try:
        assert [t.notebook for t in read_tickets(state)] == ["k.ipynb"]
        (Path(state.path) / name).write_text(json.dumps({**body_for("k"), "notebook": "b"}))
        assert [t.notebook for t in read_tickets(state)] == ["k.ipynb"]
        later = time.monotonic() + tickets._READ_ALL_EVERY
        monkeypatch.setattr(tickets.time, "monotonic", lambda: later)
        assert [t.notebook for t in read_tickets(state)] == ["b"]
    finally:
        os.close(fd)


# ---------------------------------------------------------------- a turn: recent use, decayed


def test_decayed_use_is_gpu_seconds_weighted_by_age_in_half_lives() -> None:
    """Issue 61, finding 11: the arithmetic of a turn's use."""
    h = 3600.0
    # One GPU for one half-life that ended just now: the integral of 2^(-age/h) over [0, h].
    assert decayed(0.0, h, 1, h, h) == pytest.approx(h / (2 * math.log(2)))
    # The same hold, one half-life later, counts half; two GPUs count twice.
    assert decayed(0.0, h, 1, 2 * h, h) == pytest.approx(decayed(0.0, h, 1, h, h) / 2)
    assert decayed(0.0, h, 2, h, h) == pytest.approx(2 * decayed(0.0, h, 1, h, h))
    # A hold split in two counts as the whole; a second that just passed counts (nearly) one.
    assert decayed(0.0, 100.0, 1, 500.0, h) + decayed(100.0, 300.0, 1, 500.0, h) == pytest.approx(
        decayed(0.0, 300.0, 1, 500.0, h)
    )
    assert decayed(99.0, 100.0, 1, 100.0, h) == pytest.approx(1.0, rel=1e-3)
    # Nothing counts after now, before its start, or without GPUs.
    assert decayed(0.0, 2 * h, 1, h, h) == decayed(0.0, h, 1, h, h)
    assert decayed(10.0, 5.0, 1, 20.0, h) == 0.0 == decayed(0.0, 10.0, 0, 20.0, h)
    # A short half-life forgets faster: use a day old is nothing with an hour's.
    assert decayed(0.0, 3600.0, 1, 86400.0, h) < 1e-3


def _gpu_container(container: str, uid: int, created: float) -> Holding:
    return Holding(f"k-{container[:4]}", container, f"user{uid}", str(uid), "", "", "", created)


def _end(container: str, start: float, end: float, gpus: int = 1) -> dict[str, object]:
    return {"container": container, "kernel_id": "k", "start": start, "gpus": gpus, "end": end}


def test_a_turn_counts_recorded_ends_and_the_ledger_however_the_gpus_were_taken(
    state: StateDir,
) -> None:
    """Issue 61, finding 11: A's ordinary start held a GPU and ended (its end recorded as every
    removal's is); B used none. Among equal ranks B goes first, though A arrived first: nothing
    of how A's GPU was taken (no queue grant, no "served" mark) is in the reckoning."""
    now = time.time()
    a, b, c = 5001, 5002, 5003
    assert append_records(state, a, [_end("a" * 64, now - 30, now - 5)], now) == ""
    fds = [
        write(state, f"gpuq-{int((now - 20) * 1e9):020d}-{a}-a2", body_for("a2")),
        write(state, f"gpuq-{int((now - 10) * 1e9):020d}-{b}-b1", body_for("b1")),
    ]
    try:
        assert [t.kernel_id for t in read_tickets(state, None, Ledger())] == ["b1", "a2"]
    finally:
        for fd in fds:
            os.close(fd)

    use = RecentUse()
    h = 3600.0
    standings = use.standings(state, {a, b}, now, h)
    assert standings[b] == Standing(0, 0.0) and standings[a].last == pytest.approx(now - 5)
    # The ledger's holdings count up to now, whatever took them; a record of the same
    # container (a note while it ran) is replaced by the ledger's span.
    ledger = Ledger(holdings={"GPU-0": [_gpu_container("b" * 64, b, now - 600)]})
    use.observe(ledger, now)
    standings = use.standings(state, {a, b}, now, h)
    assert standings[b].steps == int(decayed(now - 600, now, 1, now, h) // RESOLUTION) == 9
    assert standings[b].last == now
    # A container gone from the ledger before its end is recorded still counts, to when it was
    # missed; once recorded, the record says how long it held its GPU.
    use.observe(Ledger(), now + 1)
    assert use.standings(state, {b}, now + 1, h)[b].steps == 9
    assert append_records(state, b, [_end("b" * 64, now - 600, now - 540)], now + 1) == ""
    assert use.standings(state, {b}, now + 1, h)[b].steps == 0
    # A record nobody trusted wrote (a file of C's naming A) counts for nothing.
    forged = Path(state.path) / f"gpu-usage-{a}-{datetime.now(timezone.utc):%Y%m%d}.jsonl"
    os.chown(forged, c, c)
    assert RecentUse().standings(state, {a}, now, h)[a] == Standing(0, 0.0)


def test_equal_use_takes_turns_round_robin_and_more_use_waits() -> None:
    """Uses within a GPU-minute are equal: whoever used a GPU least recently goes first."""
    queue = [ticket("a2", 1, 1.0), ticket("b2", 2, 2.0)]
    # Alice's few seconds ended before Bob's few seconds: round-robin, Alice next.
    turns = {1: Standing(0, 100.0), 2: Standing(0, 200.0)}
    assert [t.kernel_id for t in fair_order(queue, turns)] == ["a2", "b2"]
    # Alice held hers for an hour an hour ago, Bob for a minute just now: Bob next.
    h = 3600.0
    alice = Standing(int(decayed(0.0, h, 1, 2 * h, h) // RESOLUTION), h)
    bob = Standing(int(decayed(2 * h - 60, 2 * h, 1, 2 * h, h) // RESOLUTION), 2 * h)
    assert [t.kernel_id for t in fair_order(queue, {1: alice, 2: bob})] == ["b2", "a2"]
