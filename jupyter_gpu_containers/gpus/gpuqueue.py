"""The host-wide GPU wait queue: a start that cannot get its GPUs now may wait its turn instead
of being refused.

The queue lives in the host state directory (hoststate.py), as the ledger's lock does, so every
server on the host (one per student under JupyterHub) and the kernel service share one queue:

- **A ticket** is a file ``gpuq-<arrival ns>-<uid>-<kernel id>``, created ``O_EXCL|O_NOFOLLOW``
  by the waiting process, which holds an flock on it for as long as the start waits. Its content
  (JSON, at most 4 KiB) names the user, the notebook, the request and the deadline. A ticket
  counts only while its flock is held (read from /proc/locks, as server liveness is): a server
  that dies loses its tickets with its process, and every other waiter rebuilds the queue from
  what is left on disk. Nobody can fake another user's ticket: the file must belong to the uid
  its name gives, or to root or the directory's owner (the kernel service, writing its users'
  tickets).
- **Fair order**: first come, first served within a user, round-robin across users, counted in
  GPUs: a start ranks by the GPUs its user would hold before it, those the ledger gives them now
  (however they were taken: a start that waited or not, another server of theirs) plus those
  their earlier waiting starts ask for. So one student's ten notebooks do not starve the others,
  and a student who holds a GPU comes after one who holds none. Among equal ranks, the user
  with the least recent GPU use goes first (recent_use.py: decayed GPU-seconds from the ledger
  and the recorded ends of GPU containers, ``usage_half_life``; then who used a GPU least
  recently), then the earlier arrival. Nothing a user writes, and nothing of how the GPUs were
  taken, changes a turn.
- **A turn**: under the host-wide allocation lock, with the ledger just read, the queue is walked
  in fair order and each ticket ahead is given, in imagination, the GPUs it would get. A start
  books only if its own request still fits after those ahead of it: nobody overtakes a start
  that could be served, and a start that cannot be served now (it wants 2 GPUs, 1 is free) holds
  up those behind it, so big requests are not starved either, for at most ``max_hold_up``
  seconds from its arrival. A ticket ahead that could not be served even if every other user's
  GPUs were free (its own user's GPUs, or their GPU cap, stand in its way) holds up nobody: it
  is stepped over. Booking itself is allocator.book: a GPU is never given twice.
- **Refused at once**: a start that may wait is refused before it queues when no wait could
  serve it: more GPUs than the host has, an unknown GPU, or what its own user's other kernels
  hold already (the GPU it names, or all but fewer GPUs than it asks for).
- **Waking up**: a waiter checks its turn every ``poll_interval`` seconds (one reading of the
  queue and of the ledger serves all of this process's waiters; only those the reading says
  would be served take the lock), and at once when a kernel of this process ends or a ticket
  leaves.

The wait is not part of the launch: the launch timeout starts when the GPUs are booked.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from traitlets import Bool, Float, Int, validate
from traitlets.config import LoggingConfigurable

from ..backends.backend import ContainerBackend
from ..base.errors import ContainerKernelError, EngineUnavailable
from ..host.hoststate import AllocationBusy, StateDir
from .allocator import (
    GPUAllocator,
    GPURequest,
    GPUsHeld,
    Holding,
    InvalidGPURequest,
    Ledger,
    NoFreeGPU,
    OverUserCap,
    current_ledger,
)
from .inventory import GPU, Inventory
from .recent_use import NOBODY, Standing, recent_use
from .tickets import (
    TICKET_NAME,
    TICKET_PREFIX,
    Ticket,
    read_queue_files,
    remove_stale_tickets,
    remove_ticket,
    still_waiting,
    write_ticket,
)

# What a launch gives back while it waits for a GPU, and takes again after (the kernel service's
# start slot: a start waiting for a GPU must not hold up starts that need none): entered when the
# start joins the queue, left when its wait ends.
WhileWaiting = Callable[[], contextlib.AbstractAsyncContextManager[None]]


# The queue's check under the allocation lock: the ledger to choose from, or NotYourTurn.
Turn = Callable[[Ledger], Awaitable[Ledger]]


class GPUWaitTimedOut(ContainerKernelError):
    status = 409
    reason_phrase = "GPU wait timed out"


class GPUWaitCancelled(ContainerKernelError):
    status = 409
    reason_phrase = "GPU wait cancelled"
    routine = True  # its user, an admin or a shutdown chose it


class NeverServed(ContainerKernelError):
    status = 409
    reason_phrase = "GPU wait refused"


class NotYourTurn(Exception):
    """Raised under the allocation lock: starts ahead of this one come first."""


@dataclass(frozen=True)
class Start:
    """A kernel start that asks for GPUs: whose, for which notebook, on which server."""

    kernel_id: str
    uid: int
    user: str
    request: GPURequest
    notebook: str = ""
    server_id: str = ""


def waiting_text(n: int) -> str:
    """How many starts wait, in words: "1 start waits", "3 starts wait"."""
    return "1 start waits" if n == 1 else f"{n} starts wait"


def held_by_user(ledger: Ledger | None) -> dict[int, int]:
    """uid -> the GPUs they hold, from the ledger: every GPU counts, however it was taken."""
    gpus: dict[int, set[str]] = {}
    for uuid, holders in (ledger.holdings if ledger is not None else {}).items():
        for h in holders:
            if not h.uid.isdigit():
                continue  # not a kernel of a local user (no uid label): nobody's turn
            gpus.setdefault(int(h.uid), set()).add(uuid)
    return {uid: len(held) for uid, held in gpus.items()}


def fair_order(
    tickets: list[Ticket],
    standings: dict[int, Standing] | None = None,
    held: dict[int, int] | None = None,
) -> list[Ticket]:
    """FIFO within a user, round-robin across users, in GPUs: a ticket ranks by the GPUs its user
    would hold before it, those they hold (``held``: uid -> GPUs held, see held_by_user) plus
    those their earlier tickets ask for, so a user's n-th one-GPU ticket ranks with every other
    user's n-th when nobody holds any. Among equal ranks, the user with the least recent GPU use
    first (``standings``: recent_use.py, decayed GPU-seconds, then who used a GPU least
    recently), then the earlier arrival. Positions are set."""
    held = held or {}
    standings = standings or {}
    by_user: dict[int, list[Ticket]] = {}
    for t in sorted(tickets, key=lambda t: (t.arrived, t.name)):
        by_user.setdefault(t.uid, []).append(t)
    ranked = []
    for uid, mine in by_user.items():
        before = held.get(uid, 0)
        standing = standings.get(uid, NOBODY).key()
        for t in mine:
            ranked.append((before, standing, t.arrived, t.name, t))
            before += len(t.request.ids) or t.request.count
    ranked.sort(key=lambda r: r[:4])
    return [
        Ticket(**{**t.__dict__, "position": i + 1})  # frozen: a copy with its position
        for i, (*_, t) in enumerate(ranked)
    ]


def own_share(ledger: Ledger, uid: str) -> Ledger:
    """The ledger with only ``uid``'s holdings: the host as it would be if every other user's
    GPUs were free."""
    mine = {uuid: [h for h in holders if h.uid == uid] for uuid, holders in ledger.holdings.items()}
    return Ledger(holdings={uuid: hs for uuid, hs in mine.items() if hs})


def could_ever_fit(
    allocator: GPUAllocator, inventory: Inventory, ledger: Ledger, ticket: Ticket
) -> bool:
    """Whether the ticket could be served if every other user's GPUs were free: False when its
    own user's kernels (or their GPU cap) stand in its way, or it asks for what the host lacks.
    Only others' releases end a wait, so such a ticket must not hold up anyone."""
    uid = str(ticket.uid)
    try:
        allocator.choose(
            inventory, own_share(ledger, uid), ticket.request, kernel_id=ticket.kernel_id, uid=uid
        )
    except ContainerKernelError:
        return False
    return True


def my_turn(
    allocator: GPUAllocator,
    inventory: Inventory,
    ledger: Ledger,
    ordered: list[Ticket],
    kernel_id: str,
    *,
    hold_up: float = math.inf,
    now: float | None = None,
    waiting: Callable[[Ticket], bool] | None = None,
) -> Ledger:
    """Under the allocation lock: the ledger ``kernel_id`` must choose its GPUs from, with every
    ticket ahead of it given, in imagination, the GPUs it would get; NotYourTurn when a ticket
    ahead cannot be served now (it holds up those behind it), unless it arrived ``hold_up``
    seconds or more before ``now``. A ticket that could not be served even with every other
    user's GPUs free holds up nobody. A start without a ticket (one that does not wait) comes
    after the whole queue. ``waiting``: whether a ticket's waiter still holds it (still_waiting),
    asked of each ticket the answer rests on (those given GPUs, the one that holds it up), never
    of the others: one that no longer waits is stepped over. Pure but for that: ``ledger`` is not
    changed."""
    now = time.time() if now is None else now
    holdings = {uuid: list(holders) for uuid, holders in ledger.holdings.items()}
    imagined = Ledger(holdings=holdings, garbage=ledger.garbage)
    for ticket in ordered:
        if ticket.kernel_id == kernel_id:
            break
        if not could_ever_fit(allocator, inventory, imagined, ticket):
            # Its own user's kernels (those ahead of it included) or their cap hold it back, or
            # it will be refused itself at its next turn: only its own user can change that.
            continue
        try:
            gpus = allocator.choose(
                inventory, imagined, ticket.request, kernel_id=ticket.kernel_id, uid=str(ticket.uid)
            )
        except NoFreeGPU:
            if now - ticket.arrived >= hold_up:
                continue  # it has held up the others long enough: served if its GPUs are free
            if waiting is not None and not waiting(ticket):
                continue  # its waiter is gone: nobody's place
            if not ticket.request.ids:
                raise NotYourTurn(ticket.position) from None
            # It waits for those very GPUs: they are kept for it once they free, and the others
            # are given on (a start for GPU 0 does not hold up starts that any GPU serves).
            gpus = [g for g in (inventory.find(i) for i in ticket.request.ids) if g is not None]
        except ContainerKernelError:
            continue  # it will be refused itself at its next turn
        else:
            if waiting is not None and not waiting(ticket):
                continue  # its waiter is gone: nobody's place
        for gpu in gpus:
            imagined.holdings.setdefault(gpu.uuid, []).append(
                Holding(ticket.kernel_id, "", ticket.user, str(ticket.uid), "", "", "", 0.0)
            )
    return imagined


# The default of GPUQueue.usage_half_life (seconds).
HALF_LIFE = 3600.0


def read_tickets(
    state: StateDir,
    locks: frozenset[str] | None = None,
    ledger: Ledger | None = None,
    half_life: float = HALF_LIFE,
) -> list[Ticket]:
    """Every live ticket in the state directory, in fair order (each user's GPUs in ``ledger``
    and their recent use counted: recent_use.py, ``half_life`` seconds). Blocking (a directory
    listing and small reads in /run, which is in memory): a worker thread, or the loop under the
    allocation lock. Shared between readings: never changed by the caller."""
    return ordered_tickets(state, read_queue_files(state, locks), ledger, half_life)


# The last fair order (StateDir.readings): given again while the reading, the GPUs held and what
# the ledger shows holding them are the same, as they are at most of a waiter's polls.
_ORDER = "queue-order"


def ordered_tickets(
    state: StateDir, found: list[Ticket], ledger: Ledger | None, half_life: float = HALF_LIFE
) -> list[Ticket]:
    """fair_order of ``found``, with the GPUs each user holds in ``ledger`` and each one's recent
    use, kept for the next call with the very same reading (read_queue_files gives a kept one
    again while nothing changed, and reads every file again at least every few seconds) and the
    same holdings: a turn with nothing changed reads no usage record."""
    if not found:
        return []
    use = recent_use(state)
    use.observe(ledger, time.time())
    held = held_by_user(ledger)
    kept = state.readings.get(_ORDER)
    if (
        kept is not None
        and kept[0] is found
        and kept[1] == (use.version, half_life)
        and kept[2] == held
    ):
        ordered: list[Ticket] = kept[3]
        return ordered
    standings = use.standings(state, {t.uid for t in found}, time.time(), half_life)
    ordered = fair_order(found, standings, held)
    state.readings[_ORDER] = (found, (use.version, half_life), held, ordered)
    return ordered


# ---------------------------------------------------------------------- the queue


@dataclass
class _Waiter:
    ticket: Ticket
    # Resolved (with the reason) when the start is cancelled.
    cancelled: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GPUQueue(LoggingConfigurable):
    """Admin policy and this process's waiting starts (owned by services.Services)."""

    wait_by_default = Bool(
        False,
        config=True,
        help="""Whether a GPU start that cannot get its GPUs now waits for them in the host-wide
        queue (True) or is refused at once with 409 "No free GPU" (False, the default). A start
        through the panel says for itself ({"wait": true} on the notebook endpoint); starts
        through the stock APIs (the Launcher, /api/sessions, /api/kernels) follow this default.
        A teaching lab wants True.""",
    )

    max_wait = Float(
        3600.0,
        config=True,
        help="""The longest a start waits for its GPUs, in seconds; then it is refused with 409
        "GPU wait timed out". At least 1.""",
    )

    poll_interval = Float(
        1.0,
        config=True,
        help="""Seconds between two checks of a waiting start's turn, when nothing in this process
        said that GPUs were freed (a kernel here ending wakes its waiters at once; a kernel of
        another server ending is seen at the next check). Between 0.05 and 30.""",
    )

    max_waiting_per_user = Int(
        16,
        config=True,
        help="""Starts one user may have waiting at once on this host; one more is refused with
        409. 0: no limit.""",
    )

    max_hold_up = Float(
        600.0,
        config=True,
        help="""The longest one waiting start holds up the starts behind it, in seconds from its
        arrival. A start that cannot be served yet (it wants two GPUs, one is free) keeps the
        GPUs that free for itself, so that big requests are not starved; after this long, starts
        behind it that can be served are, and it is served when its GPUs are free at its turn
        (it keeps waiting until max_wait). 0: a start that cannot be served never holds up
        another. A start that could not be served even if every other user's GPUs were free
        (its own user's kernels hold them) never holds up anyone.""",
    )

    usage_half_life = Float(
        HALF_LIFE,
        config=True,
        help="""The half-life of GPU use in a turn, in seconds (default 3600: one hour). Among
        starts whose users would hold as many GPUs, the user with the least recent GPU use goes
        first: GPU-seconds, each weighted by its age (a second used one half-life ago counts
        half), however the GPUs were taken (a start that waited or not, the warm pool, a
        restart), as the ledger and the recorded ends of GPU containers in the host state
        directory say; uses within a GPU-minute of each other are equal, and then who used a
        GPU least recently goes first. As Slurm's fair-share decays usage
        (PriorityDecayHalfLife). Between 60 s and 15 days.""",
    )

    @validate("usage_half_life")
    def _valid_usage_half_life(self, proposal: Any) -> float:
        return min(15 * 86400.0, max(60.0, float(proposal["value"])))

    @validate("max_hold_up")
    def _valid_max_hold_up(self, proposal: Any) -> float:
        return max(0.0, float(proposal["value"]))

    @validate("max_wait")
    def _valid_max_wait(self, proposal: Any) -> float:
        return max(1.0, float(proposal["value"]))

    @validate("poll_interval")
    def _valid_poll_interval(self, proposal: Any) -> float:
        return min(30.0, max(0.05, float(proposal["value"])))

    def __init__(self, backend: ContainerBackend | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Where the ledger is read from (the GPUs each user holds count toward their turn);
        # None: nobody is known to hold any (a queue outside a server, in unit tests).
        self.backend = backend
        self._waiters: dict[str, _Waiter] = {}
        self._changed: asyncio.Event | None = None
        # One reading of the queue and the ledger shared by this process's waiters (a service
        # has many).
        self._reading: asyncio.Future[tuple[list[Ticket], Ledger]] | None = None
        self._read_at = 0.0
        # For monitoring (admin view, metrics): how waits ended, and recent wait times.
        self.counts = {"granted": 0, "timed_out": 0, "cancelled": 0, "failed": 0}
        # (ended, seconds, outcome): outcome is a key of counts.
        self.recent_waits: deque[tuple[float, float, str]] = deque(maxlen=1000)

    # ------------------------------------------------------------------ what others ask

    def waiting_ids(self) -> set[str]:
        """The kernels whose starts wait in this process."""
        return set(self._waiters)

    def waiting_ticket(self, kernel_id: str) -> Ticket | None:
        waiter = self._waiters.get(kernel_id)
        return waiter.ticket if waiter else None

    def cancel(self, kernel_id: str, reason: str = "") -> bool:
        """End a start waiting in this process (its launch fails with 409 "GPU wait
        cancelled"). False when no such start waits here."""
        waiter = self._waiters.get(kernel_id)
        if waiter is None or waiter.cancelled.done():
            return False
        waiter.cancelled.set_result(reason)
        return True

    def poke(self) -> None:
        """GPUs may have been freed (a kernel of this process ended): waiters check at once."""
        if self._changed is not None:
            self._changed.set()

    async def snapshot(self, state: StateDir) -> list[Ticket]:
        """The host-wide queue in fair order (every server's waiting starts)."""
        if not state.shared:
            return []
        tickets, _ = await self._read(state)
        return tickets

    async def _read(self, state: StateDir) -> tuple[list[Ticket], Ledger]:
        """The queue in fair order, and the ledger it was ordered with (read only while someone
        waits: an empty queue needs no engine)."""
        found = await asyncio.to_thread(read_queue_files, state)
        ledger = await self._ledger(state) if found else Ledger()
        # A thread: the users' usage records may be read (only what was appended since).
        ordered = await asyncio.to_thread(
            ordered_tickets, state, found, ledger, self.usage_half_life
        )
        return ordered, ledger

    async def _ledger(self, state: StateDir) -> Ledger:
        """The ledger as the engine has it now; empty when it cannot be read (the engine
        restarting): an order for a moment without holdings, never a failed start, since every
        booking checks its turn again under the lock with the ledger read there."""
        if self.backend is None:
            return Ledger()
        try:
            return await current_ledger(self.backend, state)
        except (EngineUnavailable, OSError) as e:
            self.log.debug("The GPU queue reads no ledger for now: %s", e)
            return Ledger()

    async def _shared_snapshot(self, state: StateDir) -> tuple[list[Ticket], Ledger]:
        """The queue and the ledger for this process's waiters: one reading serves every waiter
        that asks within a tenth of a poll interval of it (a kernel service may have a hundred
        waiting)."""
        loop = asyncio.get_running_loop()
        reading = self._reading
        if reading is None or (
            reading.done() and loop.time() - self._read_at > self.poll_interval / 10
        ):
            self._read_at = loop.time()
            reading = self._reading = asyncio.ensure_future(self._read(state))
        tickets, ledger = await asyncio.shield(reading)
        return list(tickets), ledger

    # ------------------------------------------------------------------ waiting

    async def book(
        self,
        start: Start,
        *,
        wait: bool,
        allocator: GPUAllocator,
        state: StateDir,
        inventory: Inventory,
        book: Callable[[Turn | None], Awaitable[tuple[list[GPU], str]]],
        on_queued: Callable[[Ticket], None] | None = None,
        while_waiting: WhileWaiting | None = None,
    ) -> tuple[list[GPU], str]:
        """Book GPUs for ``start`` in its turn: ``book(turn)`` is the allocator's booking, with
        the queue's check run under the lock. ``wait``: the start may wait in the queue; else it
        books now or is refused, and never before the starts that wait (a free GPU goes to the
        head of the queue, not to whoever asks next). ``while_waiting``: what the start gives
        back while it waits.

        A start that may wait tries at once (its turn: nobody waits, or nobody ahead can be
        served); after that a ticket holds its place until the GPUs are booked, the wait times
        out, or it is cancelled."""
        kernel_id, uid, request = start.kernel_id, start.uid, start.request
        if not wait:

            async def turn(ledger: Ledger) -> Ledger:
                if not state.shared:
                    return ledger  # (booking refuses it with its own sentence)
                # What its user's own kernels hold stands in its way: said as it is (joining
                # the queue would not help, and the sentence does not offer it).
                try:
                    allocator.choose(
                        inventory,
                        own_share(ledger, str(uid)),
                        request,
                        kernel_id=kernel_id,
                        uid=str(uid),
                    )
                except GPUsHeld as e:
                    raise NoFreeGPU(e.sentence, setting=e.setting) from None
                # On the loop: see current_ledger.
                queue = read_tickets(state, None, ledger, self.usage_half_life)
                try:
                    return self._turn(allocator, inventory, ledger, queue, kernel_id, state)
                except NotYourTurn:
                    raise NoFreeGPU(
                        f"No free GPU for this start: {waiting_text(len(queue))} for GPUs, and "
                        "a GPU that frees goes to them first. Ask to wait for a GPU to join "
                        "the queue."
                    ) from None

            try:
                return await book(turn)
            except GPUsHeld as e:
                if not state.shared:
                    raise  # (no queue to wait in here)
                # What the student can do now, where they clicked (a Launcher card, a
                # notebook opened from the file browser): the wait is theirs to ask for.
                raise GPUsHeld(
                    f'{e.sentence} To wait for one in the GPU queue, tick "Wait for a free '
                    "GPU\" (the GPU Containers panel, or the notebook toolbar's image "
                    "choice); or try again once one frees.",
                    setting=e.setting,
                ) from None

        state.require_shared()
        # Outside the lock: a ticket whose user takes more GPUs meanwhile is stepped over.
        self._refuse_impossible(allocator, inventory, await self._ledger(state), start)
        # What a server of this user left when it died while a start waited.
        await asyncio.to_thread(remove_stale_tickets, state, uid)
        if self.max_waiting_per_user > 0:
            mine = [t for t in await self.snapshot(state) if t.uid == uid]
            if len(mine) >= self.max_waiting_per_user:
                raise NoFreeGPU(
                    f"You already have {len(mine)} starts waiting for a GPU, as many as one user "
                    "may. Cancel one, or wait for them.",
                    setting="GPUQueue.max_waiting_per_user",
                )
        now = time.time()
        ticket = Ticket(
            name=f"{TICKET_PREFIX}{time.time_ns():020d}-{uid}-{kernel_id}",
            kernel_id=kernel_id,
            uid=uid,
            user=start.user,
            request=request,
            arrived=now,
            notebook=start.notebook,
            server_id=start.server_id,
            deadline=now + self.max_wait,
        )
        if not TICKET_NAME.fullmatch(ticket.name):
            raise InvalidGPURequest(f"A kernel id like {kernel_id!r} cannot wait for a GPU.")
        writing = asyncio.ensure_future(asyncio.to_thread(write_ticket, state, ticket))
        try:
            fd = await asyncio.shield(writing)
        except asyncio.CancelledError:
            # The file is made (or not) by the thread anyway: never leave a held ticket behind.
            def discard(done: asyncio.Future[int]) -> None:
                if not done.cancelled() and done.exception() is None:
                    remove_ticket(state, ticket.name, done.result())

            writing.add_done_callback(discard)
            raise
        waiter = _Waiter(ticket)
        self._waiters[kernel_id] = waiter
        if self._changed is None:
            self._changed = asyncio.Event()
        started = time.monotonic()
        outcome = "failed"
        try:
            result = await self._wait(
                waiter, allocator, state, book, inventory, on_queued, while_waiting
            )
            outcome = "granted"
            return result
        except GPUWaitTimedOut:
            outcome = "timed_out"
            raise
        except GPUWaitCancelled:
            outcome = "cancelled"
            raise
        finally:
            self._waiters.pop(kernel_id, None)
            waited = time.monotonic() - started
            self.counts[outcome] += 1
            self.recent_waits.append((time.time(), waited, outcome))
            # On the loop, not a thread: an unlink and a close in /run (in memory), which must
            # happen even when this task is being cancelled.
            remove_ticket(state, ticket.name, fd)
            self.poke()  # the next in line may be here
            if outcome == "granted" and waited > 1:
                self.log.info("Kernel %s got its GPUs after waiting %.0f s.", kernel_id, waited)

    async def _wait(
        self,
        waiter: _Waiter,
        allocator: GPUAllocator,
        state: StateDir,
        book: Callable[[Turn | None], Awaitable[tuple[list[GPU], str]]],
        inventory: Inventory,
        on_queued: Callable[[Ticket], None] | None,
        while_waiting: WhileWaiting | None,
    ) -> tuple[list[GPU], str]:
        ticket = waiter.ticket

        async def turn(ledger: Ledger) -> Ledger:
            # Under the allocation lock: the queue as it is now, read on the loop as the ledger
            # is (current_ledger): a listing and a few small reads in /run, which is in memory,
            # where a worker thread would wait behind other launches' file work while every GPU
            # launch waits on the lock.
            queue = read_tickets(state, None, ledger, self.usage_half_life)
            return self._turn(allocator, inventory, ledger, queue, ticket.kernel_id, state)

        told = False
        given_back: contextlib.AbstractAsyncContextManager[None] | None = None
        changed = self._changed
        assert changed is not None
        try:
            while True:
                changed.clear()  # before looking: a poke from here on ends the next sleep
                if waiter.cancelled.done():
                    reason = waiter.cancelled.result()
                    raise GPUWaitCancelled(
                        "The start was cancelled while it waited for a GPU"
                        + (f": {reason}" if reason else ".")
                    )
                queue, ledger = await self._shared_snapshot(state)
                position = next((t.position for t in queue if t.kernel_id == ticket.kernel_id), 0)
                # Only a start the reading says would be served takes the lock and asks the
                # engine (one not in the reading yet tries: it was just queued).
                if not position or self._may_be_served(
                    allocator, inventory, ledger, queue, ticket, state
                ):
                    try:
                        return await book(turn)
                    except (NotYourTurn, NoFreeGPU, OverUserCap):
                        pass
                    except (AllocationBusy, EngineUnavailable) as e:
                        # Passing trouble (a long-held lock, the engine restarting): an hour in
                        # line is not lost for it; the next check tries again.
                        self.log.warning("Kernel %s keeps waiting: %s", ticket.kernel_id, e)
                if not told:
                    told = True
                    self.log.info(
                        "Kernel %s (%s) waits for %s, position %d in the queue.",
                        ticket.kernel_id,
                        ticket.user,
                        ticket.request.describe(),
                        position,
                    )
                    if on_queued is not None:
                        on_queued(ticket)
                    if while_waiting is not None:
                        given_back = while_waiting()
                        await given_back.__aenter__()
                left = ticket.deadline - time.time()
                if left <= 0:
                    raise GPUWaitTimedOut(
                        f"No GPU became free for this start within {self.max_wait / 60:.0f} "
                        f"minutes, the longest a start waits here ({ticket.request.describe()} "
                        "requested). Try again later, or ask for fewer GPUs.",
                        setting="GPUQueue.max_wait",
                    )
                await self._sleep(min(self.poll_interval, left), waiter)
        finally:
            if given_back is not None:
                await given_back.__aexit__(None, None, None)

    def _turn(
        self,
        allocator: GPUAllocator,
        inventory: Inventory,
        ledger: Ledger,
        queue: list[Ticket],
        kernel_id: str,
        state: StateDir,
    ) -> Ledger:
        """my_turn with this queue's hold-up, asking the state directory's ticket files whether
        the tickets the answer rests on still wait."""
        return my_turn(
            allocator,
            inventory,
            ledger,
            queue,
            kernel_id,
            hold_up=self.max_hold_up,
            waiting=functools.partial(still_waiting, state),
        )

    async def _sleep(self, seconds: float, waiter: _Waiter) -> None:
        """Until the next check: the interval, a poke, or a cancel, whichever comes first."""
        assert self._changed is not None
        poked: asyncio.Future[Any] = asyncio.ensure_future(self._changed.wait())
        either: list[asyncio.Future[Any]] = [poked, waiter.cancelled]
        try:
            await asyncio.wait(either, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            poked.cancel()

    def _may_be_served(
        self,
        allocator: GPUAllocator,
        inventory: Inventory,
        ledger: Ledger,
        queue: list[Ticket],
        ticket: Ticket,
        state: StateDir,
    ) -> bool:
        """Whether the ticket's turn has come by a recent reading (the booking checks again under
        the lock, with the ledger read there)."""
        try:
            imagined = self._turn(allocator, inventory, ledger, queue, ticket.kernel_id, state)
            allocator.choose(
                inventory, imagined, ticket.request, kernel_id=ticket.kernel_id, uid=str(ticket.uid)
            )
        except (NotYourTurn, ContainerKernelError):
            return False
        return True

    def _refuse_impossible(
        self, allocator: GPUAllocator, inventory: Inventory, ledger: Ledger, start: Start
    ) -> None:
        """A request no wait can meet is refused at once: more GPUs than the host has, an unknown
        GPU, more than one user may hold, or what the user's own kernels hold already (only other
        users' releases end a wait)."""
        uid = str(start.uid)
        mine = own_share(ledger, uid)
        try:
            allocator.choose(inventory, mine, start.request, kernel_id=start.kernel_id, uid=uid)
        except NoFreeGPU as e:
            if not any(h.kernel_id != start.kernel_id for hs in mine.holdings.values() for h in hs):
                raise  # the host itself is too small: said as it is
            raise NeverServed(
                f"This start cannot wait for {start.request.describe()}: your own kernels hold "
                f"GPUs it needs, and only other users' GPUs free while it waits ({e.sentence}) "
                "Shut down one of your kernels that holds a GPU, then start again, or ask for "
                "fewer GPUs.",
                setting=e.setting,
            ) from None
