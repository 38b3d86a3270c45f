"""RecoveryProgress (server/recovery_progress.py): the order a start-up recovery judges what it
listed in, who waits on what, and that every wait ends. The recovery and the routes that use it
run against the real engines elsewhere (test_service.py, test_k8s_failover.py); here the queue
itself, with records as an engine lists them; and the collector's full passes, deferred while a
recovery runs."""

from __future__ import annotations

import asyncio
import gc

from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.base.records import ContainerRecord
from jupyter_gpu_containers.server.recovery import full_passes_deferred
from jupyter_gpu_containers.server.recovery_progress import RecoveryProgress


def record(name: str, kernel_id: str = "", user: str = "") -> ContainerRecord:
    labels = {L.MANAGED: "true"}
    if kernel_id:
        labels[L.KERNEL_ID] = kernel_id
    if user:
        labels[L.USER] = user
    return ContainerRecord(name, name, "jgc/x:1", labels, "running")


def judge_all(progress: RecoveryProgress) -> list[str]:
    """Judge every record left, in the queue's order; their names."""
    order = []
    while (r := progress.next()) is not None:
        order.append(r.name)
        progress.judged(r)
    return order


async def test_a_kernel_asked_about_is_judged_first_and_its_waiter_woken_then() -> None:
    progress = RecoveryProgress()
    progress.listed(
        [record(f"c{i}", f"k{i}", "ann" if i % 2 else "bob") for i in range(6)]
        + [record("probe")]  # no kernel id: judged in its turn, nobody waits on it
    )
    first = progress.next()
    assert first is not None and first.name == "c0"  # already taken: not hurried again
    waiter = asyncio.ensure_future(progress.wait_kernels(["k4"], 30))
    await asyncio.sleep(0)  # the waiter runs: it has hurried k4
    assert not waiter.done()
    progress.judged(first)
    hurried = progress.next()
    assert hurried is not None and hurried.name == "c4"
    progress.judged(hurried)
    await asyncio.wait_for(waiter, 5)  # woken without the rest being judged
    assert judge_all(progress) == ["c1", "c2", "c3", "c5", "probe"]
    assert not progress.done
    progress.finish()
    assert progress.done


async def test_a_users_kernels_go_first_and_a_kernel_of_two_records_waits_for_both() -> None:
    progress = RecoveryProgress()
    progress.listed(
        [
            record("c0", "k0", "bob"),
            record("c1", "k1", "ann"),
            record("c2", "k2", "bob"),
            record("c3", "k1", "ann"),  # a second record of k1 (an old container left)
            record("c4", "k4", "ann"),
        ]
    )
    waiter = asyncio.ensure_future(progress.wait_user("ann", 30))
    await asyncio.sleep(0)
    order = []
    for _ in range(2):
        r = progress.next()
        assert r is not None
        order.append(r.name)
        progress.judged(r)
    assert order == ["c1", "c3"]
    await asyncio.sleep(0)
    assert not waiter.done()  # k4 is ann's too
    r = progress.next()
    assert r is not None and r.name == "c4"
    progress.judged(r)
    await asyncio.wait_for(waiter, 5)
    assert judge_all(progress) == ["c0", "c2"]


async def test_waiters_wait_for_the_listing_and_no_longer_than_recovery() -> None:
    progress = RecoveryProgress()
    # Asked before recovery has listed: waits for the listing, then for its kernel.
    early = asyncio.ensure_future(progress.wait_kernels(["k1"], 30))
    unknown = asyncio.ensure_future(progress.wait_kernels(["not-left-behind"], 30))
    stranger = asyncio.ensure_future(progress.wait_user("nobody", 30))
    await asyncio.sleep(0)
    assert not early.done() and not unknown.done() and not stranger.done()
    progress.listed([record("c0", "k0", "ann"), record("c1", "k1", "ann")])
    # Nothing recovery left behind of theirs: answered once the listing is known.
    await asyncio.wait_for(asyncio.gather(unknown, stranger), 5)
    assert not early.done()
    # A recovery that fails, or ends, wakes everyone still waiting.
    progress.finish()
    await asyncio.wait_for(early, 5)
    assert progress.next() is None


async def test_a_wait_ends_at_its_bound_when_recovery_never_comes_to_its_kernel() -> None:
    progress = RecoveryProgress()
    progress.listed([record("c0", "k0", "ann")])
    # Bounded: the route answers anyway (as if the kernel were unknown) after its time.
    await asyncio.wait_for(progress.wait_kernels(["k0"], 0.05), 5)
    await asyncio.wait_for(progress.wait_user("ann", 0.05), 5)
    assert not progress.done


def test_no_full_collection_while_recovery_runs_and_one_after_it() -> None:
    """full_passes_deferred (server/recovery.py): a heap that grows by many times inside sets
    off no full pass of the collector (the young generations are collected as ever), and the
    pass comes once, on the way out, with the thresholds as they were."""
    thresholds = gc.get_threshold()
    passes: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            passes.append(info["generation"])

    kept: list[list[int]] = []
    gc.callbacks.append(seen)
    try:
        with full_passes_deferred():
            # As adopted kernels do: objects the collector tracks, kept, by the hundred thousand.
            kept.extend([i] for i in range(300_000))
            inside = list(passes)
        after = list(passes)
    finally:
        gc.callbacks.remove(seen)
    assert 0 in inside and 2 not in inside, inside
    assert after[len(inside) :].count(2) == 1, after
    assert gc.get_threshold() == thresholds
