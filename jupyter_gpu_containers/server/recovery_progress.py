"""Where a start-up recovery stands, kernel by kernel, for those who wait on one kernel.

Recovery (recovery.py) lists what a previous process left, then judges it a few records at a
time: a thousand kernel pods take seconds to adopt. A kernel service's routes would otherwise
hold every request until the last one is adopted; with this, a request about one kernel (or one
user's kernels) waits only until the listing is known and that kernel is done, and its kernel
goes to the front of the queue. The kernels' labels decide only the order and who waits on
what: whether a kernel is the caller's is decided afterwards by the adopted kernel's owner, as
for any other.

Every wait is bounded: a recovery that ends, well or badly, wakes everyone (:meth:`finish`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterable

from ..base import labels as L
from ..base.records import ContainerRecord


class RecoveryProgress:
    """The records a recovery has still to judge, by kernel id and by user."""

    def __init__(self) -> None:
        self._listed = asyncio.Event()
        self._done = asyncio.Event()
        # The records by their place in the listing, in two queues: those somebody waits on,
        # then the rest. A record hurried stays in the second too, skipped once taken.
        self._queue: deque[tuple[int, ContainerRecord]] = deque()
        self._urgent: deque[tuple[int, ContainerRecord]] = deque()
        self._taken: set[int] = set()
        self._untaken: dict[str, list[tuple[int, ContainerRecord]]] = {}  # by kernel id
        self._left: dict[str, int] = {}  # kernel id -> its records not yet judged
        self._events: dict[str, asyncio.Event] = {}
        self._by_user: dict[str, set[str]] = {}  # username (label) -> its pending kernel ids

    # ------------------------------------------------------------------ recovery's side

    def listed(self, records: Iterable[ContainerRecord]) -> None:
        """What recovery listed, in the order it would judge it; waiters may look now."""
        for place, record in enumerate(records):
            self._queue.append((place, record))
            kernel_id = record.labels.get(L.KERNEL_ID, "")
            if kernel_id:
                self._untaken.setdefault(kernel_id, []).append((place, record))
                self._left[kernel_id] = self._left.get(kernel_id, 0) + 1
                self._events.setdefault(kernel_id, asyncio.Event())
                user = record.labels.get(L.USER, "")
                self._by_user.setdefault(user, set()).add(kernel_id)
        self._listed.set()

    def next(self) -> ContainerRecord | None:
        """The next record to judge (one somebody waits on first); None: none left."""
        for queue in (self._urgent, self._queue):
            while queue:
                place, record = queue.popleft()
                if place not in self._taken:
                    self._taken.add(place)
                    return record
        return None

    def judged(self, record: ContainerRecord) -> None:
        """``record`` is done with (reattached, removed, left alone, or failed)."""
        kernel_id = record.labels.get(L.KERNEL_ID, "")
        left = self._left.get(kernel_id, 0) - 1
        if left > 0:
            self._left[kernel_id] = left
            return
        self._left.pop(kernel_id, None)
        self._settle(kernel_id, record.labels.get(L.USER, ""))

    def finish(self) -> None:
        """Recovery ended (or failed, or never ran): nobody waits any longer."""
        self._queue.clear()
        self._urgent.clear()
        self._untaken.clear()
        self._left.clear()
        self._by_user.clear()
        for event in self._events.values():
            event.set()
        self._events.clear()
        self._listed.set()
        self._done.set()

    def _settle(self, kernel_id: str, user: str) -> None:
        event = self._events.pop(kernel_id, None)
        if event is not None:
            event.set()
        kernels = self._by_user.get(user)
        if kernels is not None:
            kernels.discard(kernel_id)
            if not kernels:
                del self._by_user[user]

    # ------------------------------------------------------------------ the waiters' side

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait_done(self) -> None:
        await self._done.wait()

    async def wait_listed(self) -> None:
        await self._listed.wait()

    async def wait_kernels(self, kernel_ids: Iterable[str], timeout: float) -> None:
        """Until the listing is known and each of ``kernel_ids`` that recovery has still to
        judge is done (those first in its queue), or ``timeout`` seconds have passed."""
        wanted = set(kernel_ids)
        await self._bounded(lambda: wanted, timeout)

    async def wait_user(self, username: str, timeout: float) -> None:
        """:meth:`wait_kernels` for every kernel whose labels name ``username``."""
        await self._bounded(lambda: set(self._by_user.get(username, ())), timeout)

    async def _bounded(self, kernel_ids: Callable[[], set[str]], timeout: float) -> None:
        if self._listed.is_set():
            # At once, not once the wait's task runs: a worker may take the next record first.
            self._hurry(kernel_ids())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wait_kernels(kernel_ids), timeout)

    async def _wait_kernels(self, kernel_ids: Callable[[], set[str]]) -> None:
        """Wait for the kernels ``kernel_ids()`` names once the listing is known."""
        await self._listed.wait()
        waiting = [(k, self._events[k]) for k in kernel_ids() if k in self._events]
        if not waiting:
            return
        self._hurry({k for k, _ in waiting})
        await asyncio.gather(*(event.wait() for _, event in waiting))

    def _hurry(self, kernel_ids: set[str]) -> None:
        """The records of ``kernel_ids`` not yet taken go before the rest (those of one asking
        in the listing's order; each once)."""
        entries = [e for k in kernel_ids for e in self._untaken.pop(k, ())]
        self._urgent.extend(
            sorted((e for e in entries if e[0] not in self._taken), key=lambda e: e[0])
        )


def recovery_progress(serverapp: object) -> RecoveryProgress | None:
    """A kernel service's start-up recovery progress (``ServiceApp.kernel_recovery``); None for
    a server whose routes do not wait on recovery (direct mode)."""
    found = getattr(serverapp, "kernel_recovery", None)
    return found if isinstance(found, RecoveryProgress) else None
