"""Each user's recent GPU use, decayed: what the GPU wait queue's turns go by (gpuqueue.py).

A user's use is GPU-seconds, each second weighted by how long ago it was: a second of one GPU
``a`` seconds ago counts ``2 ** (-a / half_life)`` (GPUQueue.usage_half_life), as Slurm's
fair-share decays usage. Only what the service records counts, however the GPUs were taken (an
ordinary start, a queue's grant, the warm pool's handover, a restart):

- holdings that go on: the ledger's containers (their labels' uid and GPUs, the engine's
  ``Created``), counted up to now;
- holdings that ended: quota.py's records in the host state directory (every removal of a GPU
  container appends its end there, ``Engine.on_removed``), believed only when written by the
  user's own processes, root or the state directory's owner (a kernel service); a student of a
  kernel service can write none;
- a container this process saw in the ledger and no longer sees, while its end is not recorded
  yet (the engine reports a removal before the removing thread appends it): counted up to when it
  was first missed, until the record comes or for at most ``_GONE_KEPT`` seconds.

Uses within ``RESOLUTION`` GPU-seconds of each other are equal: the order between those users is
who used a GPU least recently (the end of their latest holding; now for one that goes on), so two
students who each held a GPU for a few seconds take turns, round-robin.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from datetime import datetime, timezone

from ..host.hoststate import StateDir
from .allocator import Ledger
from .quota import KEEP_DAYS, RecordedUse, Span

# GPU-seconds that count as one step of use: uses within a step of each other are equal.
RESOLUTION = 60.0
# Use older than this many half-lives weighs under 0.4 %: its records are not read.
_HALF_LIVES_READ = 8
# How long a container missed from the ledger counts (to when it was missed) while its end is
# not recorded: a removal's record follows it at once, unless nobody may write it.
_GONE_KEPT = 600.0
_MAX_GONE = 4096


def decayed(span_start: float, span_end: float, gpus: int, now: float, half_life: float) -> float:
    """GPU-seconds of ``gpus`` GPUs held from ``span_start`` to ``span_end``, each second ``a``
    seconds before ``now`` weighted ``2 ** (-a / half_life)``: the integral, exactly.
    (A hold of one GPU for a half-life that ended just now counts ``half_life / (2 ln 2)``.)"""
    end = min(span_end, now)
    start = min(span_start, end)
    if end <= start or gpus <= 0:
        return 0.0
    rate = math.log(2) / half_life
    return gpus * (math.exp(-rate * (now - end)) - math.exp(-rate * (now - start))) / rate


@dataclass(frozen=True)
class Standing:
    """A user's place among others: their decayed use in steps of RESOLUTION, then when they
    last used a GPU (0: never that anyone recorded)."""

    steps: int
    last: float

    def key(self) -> tuple[int, float]:
        return (self.steps, self.last)


NOBODY = Standing(0, 0.0)


@dataclass(frozen=True)
class _Held:
    uid: int
    start: float
    gpus: int


class RecentUse:
    """One process's view of users' recent use (kept in its StateDir's ``readings``): the
    containers it saw hold GPUs, and the records read so far (quota.RecordedUse: a user's files
    are read only where appended to). Thread-safe."""

    def __init__(self) -> None:
        self._records = RecordedUse()
        self._lock = threading.Lock()
        self._live: dict[str, _Held] = {}
        self._gone: dict[str, tuple[_Held, float]] = {}  # container -> (its hold, missed at)
        # Changed whenever what the ledger showed changed: an order made before is made again.
        self.version = 0

    def observe(self, ledger: Ledger | None, now: float) -> None:
        """What the ledger shows holding GPUs now (call with every ledger the queue orders by)."""
        live: dict[str, _Held] = {}
        for holders in (ledger.holdings if ledger is not None else {}).values():
            for h in holders:
                if not h.uid.isdigit() or len(h.uid) > 10 or not h.container_id:
                    continue  # not a local user's kernel: nobody's use
                before = live.get(h.container_id)
                start = min(h.created or now, now)
                live[h.container_id] = _Held(int(h.uid), start, (before.gpus if before else 0) + 1)
        with self._lock:
            if live.keys() == self._live.keys() and all(live[c] == self._live[c] for c in live):
                return
            for container, held in self._live.items():
                if container not in live:
                    self._gone[container] = (held, now)
            for container in live:
                self._gone.pop(container, None)
            while len(self._gone) > _MAX_GONE:
                self._gone.pop(next(iter(self._gone)))
            self._live = live
            self.version += 1

    def standings(
        self, state: StateDir, uids: set[int], now: float, half_life: float
    ) -> dict[int, Standing]:
        """Each of ``uids``' standing now. Blocking (a stat of each of their day files in the
        window, and what was appended to them): a worker thread, or the loop under the
        allocation lock, as the ticket files are read (/run is in memory)."""
        window = min(_HALF_LIVES_READ * half_life, KEEP_DAYS * 86400.0)
        # The window's first UTC day: the same for a day, so that records are read on from
        # where the last reading stopped (a new ``since`` reads the files again).
        first = datetime.fromtimestamp(now - window, timezone.utc).date()
        since = datetime(first.year, first.month, first.day, tzinfo=timezone.utc).timestamp()
        with self._lock:
            for container, (_, missed) in list(self._gone.items()):
                if now - missed > _GONE_KEPT:
                    del self._gone[container]
            live = dict(self._live)
            gone = dict(self._gone)
        found = {}
        for uid in uids:
            spans: dict[str, Span] = {}
            if state.shared:
                spans = {s.container: s for s in self._records.spans(state, uid, since, now)}
            for container, (held, missed) in gone.items():
                if held.uid == uid and container not in spans:
                    spans[container] = Span(container, "", held.start, missed, held.gpus)
            for container, held in live.items():
                if held.uid == uid:
                    spans[container] = Span(container, "", held.start, now, held.gpus, live=True)
            seconds = sum(decayed(s.start, s.end, s.gpus, now, half_life) for s in spans.values())
            last = max((s.end for s in spans.values()), default=0.0)
            found[uid] = Standing(int(seconds // RESOLUTION), last)
        return found


def recent_use(state: StateDir) -> RecentUse:
    """This process's RecentUse for ``state`` (one per StateDir, kept with its readings)."""
    kept = state.readings.get("recent-use")
    if not isinstance(kept, RecentUse):
        kept = state.readings["recent-use"] = RecentUse()
    return kept
