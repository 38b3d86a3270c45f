"""GPU-hours per user, and per group, per day or per week: the accounting and the check.

Usage is the GPU ledger's own times (allocator.py): a GPU container books its GPUs from its
creation (the engine's ``Created``) until it is removed, and one holding of ``n`` GPUs for ``t``
hours uses ``n * t`` GPU-hours. Holdings that go on count up to now, read from the ledger; ended
ones are remembered in the host state directory (hoststate.py), so that use survives restarts of
every server and of the kernel service:

    gpu-usage-<uid>-<YYYYMMDD>.jsonl    owner <uid> (or root, or the state directory's owner),
                                        mode 0644, one JSON object a line, appended to

A line is written

- when a GPU container is removed, whoever removes it (a kernel's shutdown, recovery's sweep, the
  allocator's removal of a dead server's containers, a removal left for when the engine is back):
  the engine tells :meth:`GPUQuota.record_removal` (``Engine.on_removed``), the one place every
  removal passes through. ``{"container", "kernel_id", "start", "gpus", "end"}``;
- while a GPU container runs, at most every few minutes, when its user's use is computed
  (``{"container", "kernel_id", "start", "gpus", "seen"}``): a container that disappears
  unrecorded (``docker rm`` by hand, a removal by another user's server, which cannot write this
  user's file) still counts up to when it was last seen.

The date in a file's name is the UTC day of its lines' ``end`` or ``seen``: a period's use needs
only the files from its first day on, and files older than KEEP_DAYS are removed by their owner.

Threat model (README, Security): the state directory is shared by the docker group, and its
sticky bit lets anyone create any name there. So a file is believed only when it is a regular
file owned by the uid its name gives, or by root or the state directory's owner (a kernel
service): nobody can charge GPU-hours to someone else. It is opened without following a symlink,
and never written unless it is this process's own (created with O_EXCL, or checked after
opening). A name another user took first is not written (that user's use then goes unrecorded:
the server says so in its log). Each line is one ``write`` to a file opened with O_APPEND, so
servers appending at the same time need no lock, and a line cut off by a crash is skipped.

Periods follow the host's local time: a day from midnight, a week from Monday midnight.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from traitlets import Dict, Enum, Float, Unicode
from traitlets.config import LoggingConfigurable

from ..backends.backend import ContainerBackend, GPUAccounting
from ..base import labels as L
from ..base.errors import ContainerKernelError, EngineUnavailable
from ..base.records import ContainerRecord
from ..base.safefiles import account_uid, owner_name, read_trusted, remove_own_files
from ..host.hoststate import StateDir
from .allocator import current_ledger

KEEP_DAYS = 15  # the longest period (a week) and its predecessor, with room for clocks
SEEN_INTERVAL = 300.0  # seconds between notes of a container that still runs
_FILE = re.compile(r"gpu-usage-([0-9]{1,10})-([0-9]{8})\.jsonl")
_CONTAINER = re.compile(r"[0-9a-f]{12,64}")
_MAX_FILE = 8 << 20  # bytes read of one file: a week of notes of many kernels fits
_MAX_GPUS = 1024
_CLOCK_SLACK = 60.0  # seconds a recorded time may lie ahead of this server's clock


class QuotaUsedUp(ContainerKernelError):
    status = 409
    reason_phrase = "GPU-hour quota used up"


@dataclass(frozen=True)
class Span:
    """One container's hold on ``gpus`` GPUs from ``start`` to ``end`` (unix times). ``live``:
    it still holds them (``end`` is now)."""

    container: str
    kernel_id: str
    start: float
    end: float
    gpus: int
    live: bool = False


def gpu_hours(spans: Iterable[Span], since: float, until: float) -> float:
    """GPU-hours the spans use between ``since`` and ``until``: each span's overlap with that
    interval, times its GPUs."""
    seconds = 0.0
    for span in spans:
        overlap = min(span.end, until) - max(span.start, since)
        if overlap > 0:
            seconds += overlap * span.gpus
    return seconds / 3600.0


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The local-time period ("day" or "week") ``now`` (aware) lies in: its start and the start
    of the next one (when the use starts again from zero)."""
    local = now.astimezone()
    first = local.date()
    if period == "week":
        first -= timedelta(days=first.weekday())
    days = 7 if period == "week" else 1
    return _local_midnight(first), _local_midnight(first + timedelta(days=days))


def _local_midnight(day: date) -> datetime:
    # astimezone() on a naive time reads it as local time, summer time included.
    return datetime(day.year, day.month, day.day).astimezone()


@dataclass(frozen=True)
class Usage:
    """One user's standing in the current period. A limit of 0: no such quota."""

    uid: int
    user: str
    period: str
    limit_hours: float
    used_hours: float
    resets_at: datetime
    group: str | None = None
    group_limit_hours: float = 0.0
    group_used_hours: float = 0.0
    engine_error: str = ""  # why running kernels' use is missing, when it is
    # Who counted ``used_hours`` where this project keeps no quota and the engine accounts
    # GPU-hours itself ("Slurm": every job of the user's there); "" for this project's count.
    accounted_by: str = ""

    @property
    def enabled(self) -> bool:
        return self.limit_hours > 0 or self.group_limit_hours > 0

    @property
    def left_hours(self) -> float:
        """What may still be used: the smaller of what the user's and the group's quota leave."""
        left = [
            max(0.0, limit - used)
            for limit, used in (
                (self.limit_hours, self.used_hours),
                (self.group_limit_hours, self.group_used_hours),
            )
            if limit > 0
        ]
        return min(left) if left else 0.0

    def to_json(self) -> dict[str, Any]:
        """The REST answer (GET /gpu-containers/quota)."""
        return {
            "enabled": self.enabled,
            "period": self.period,
            "limit_hours": _rounded(self.limit_hours),
            "used_hours": _rounded(self.used_hours),
            "left_hours": _rounded(self.left_hours),
            "resets_at": self.resets_at.isoformat(timespec="seconds"),
            "group": self.group,
            "group_limit_hours": _rounded(self.group_limit_hours) if self.group else None,
            "group_used_hours": _rounded(self.group_used_hours) if self.group else None,
            **({"engine_error": self.engine_error} if self.engine_error else {}),
            **({"accounted_by": self.accounted_by} if self.accounted_by else {}),
        }

    def admin_json(self) -> dict[str, Any]:
        """One row of every user's use (the admin view)."""
        return {"uid": self.uid, "user": self.user, **self.to_json()}


def _rounded(hours: float) -> float:
    return round(hours, 4)


# ---------------------------------------------------------------------- the files


def _file_name(uid: int, day: date) -> str:
    return f"gpu-usage-{uid}-{day:%Y%m%d}.jsonl"


def _utc_day(when: float) -> date:
    return datetime.fromtimestamp(when, timezone.utc).date()


def may_write_for(state: StateDir, uid: int) -> bool:
    """Whether this process's records of ``uid``'s use would be believed."""
    me = os.geteuid()
    return me == uid or me in state.service_uids()


def _read_lines(
    state: StateDir, name: str, uid: int, trusted: frozenset[int]
) -> list[dict[str, Any]]:
    """The records of one file: [] for one that is missing, not a regular file, or owned by
    someone who may not write ``uid``'s use. A last line without its newline is not one yet
    (being written, or cut off)."""
    try:
        data, _info = read_trusted(state.fd, name, {uid, *trusted}, _MAX_FILE)
    except OSError:
        return []
    records = []
    for line in data[: data.rfind(b"\n") + 1].split(b"\n"):
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                records.append(value)
    return records


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def read_spans(state: StateDir, uid: int, since: float, now: float) -> dict[str, Span]:
    """``uid``'s recorded holdings that may overlap ``since``..``now``, by container: ended ones
    to their end, others to when they were last seen. Every file read whole (RecordedUse keeps
    what it read between checks). Blocking: a worker thread."""
    trusted = state.service_uids()
    found: dict[str, _Entry] = {}
    day, last = _utc_day(since), _utc_day(now + _CLOCK_SLACK)
    while day <= last:
        for record in _read_lines(state, _file_name(uid, day), uid, trusted):
            _merge(found, record, now)
        day += timedelta(days=1)
    return {container: e.span(container, now) for container, e in found.items()}


@dataclass
class _Entry:
    """What a container's records say so far: its start, its GPUs, and its end (``ended``) or
    when it was last seen (``at``)."""

    kernel_id: str
    start: float
    at: float
    ended: bool
    gpus: int

    def span(self, container: str, now: float) -> Span:
        return Span(container, self.kernel_id[:64], self.start, min(self.at, now), self.gpus)

    def seconds(self, since: float, now: float) -> float:
        """GPU-seconds from ``since`` to ``now`` (gpu_hours of its span, in seconds)."""
        return max(0.0, min(self.at, now) - max(self.start, since)) * self.gpus


def _merge(found: dict[str, _Entry], record: dict[str, Any], now: float) -> str | None:
    """Add one line to what the records say, by container: the container it concerns, or None
    for a line this module does not write (ignored, never trusted in part)."""
    container = record.get("container")
    start, gpus = _number(record.get("start")), record.get("gpus")
    end, seen = _number(record.get("end")), _number(record.get("seen"))
    at = end if end is not None else seen
    if (
        not isinstance(container, str)
        or not _CONTAINER.fullmatch(container)
        or start is None
        or at is None
        or not start <= at <= now + _CLOCK_SLACK
        or isinstance(gpus, bool)
        or not isinstance(gpus, int)
        or not 0 < gpus <= _MAX_GPUS
    ):
        return None
    kernel_id = record.get("kernel_id")
    entry = found.get(container)
    if entry is None:
        entry = found[container] = _Entry("", start, at, False, gpus)
    entry.kernel_id = kernel_id if isinstance(kernel_id, str) else entry.kernel_id
    entry.start = min(entry.start, start)
    entry.gpus = max(entry.gpus, gpus)
    if end is not None:
        # The removal: what the notes guessed. (Recorded twice, the earlier: lines are merged
        # in the order read, which is not the order written when days' files grow together.)
        entry.at = min(entry.at, end) if entry.ended else end
        entry.ended = True
    elif not entry.ended:
        entry.at = max(entry.at, at)
    return container


class _UserRecords:
    """One user's records of one period as read so far: each file's inode and how far it was
    read (to the end of its last whole line), the entries by container, and their GPU-seconds
    (``seconds``: of the entries not ahead of the clock when counted; ``ahead``: the others)."""

    def __init__(self, since: float) -> None:
        self.since = since
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.files: dict[str, tuple[int, int]] = {}
        self.entries: dict[str, _Entry] = {}
        self.seconds = 0.0
        self.ahead: set[str] = set()


class RecordedUse:
    """Users' recorded GPU use, kept between checks. The usage files are appended to, never
    rewritten: a check stats the period's files and reads only the lines appended since the last
    one, and the GPU-seconds are kept with the entries, so a check costs the same whatever a
    user's number of recorded sessions (benchmarks, section 12). A file replaced, shortened or
    gone (an administrator's hand), or a new period, is read again whole. Thread-safe: checks
    run on worker threads."""

    # Users kept (the least recently checked go first): each holds at most its period's files.
    MAX_USERS = 4096

    def __init__(self) -> None:
        self._users: dict[tuple[str, int], _UserRecords] = {}
        self._guard = threading.Lock()

    def standing(
        self, state: StateDir, uid: int, since: float, now: float, running: Iterable[Span] = ()
    ) -> tuple[float, dict[str, Span]]:
        """``uid``'s GPU-hours from ``since`` to ``now``, its ``running`` spans counted instead of
        what the records say of those containers; and the recorded spans of those containers
        (what a note of the running ones goes by). Blocking: a worker thread."""
        key = (state.path, uid)
        with self._guard:
            user = self._users.pop(key, None)
            if user is None or user.since != since:
                user = _UserRecords(since)
            self._users[key] = user  # the most recently checked last
            while len(self._users) > self.MAX_USERS:
                self._users.pop(next(iter(self._users)))
        with user.lock:
            if not self._read(state, uid, user, now):
                user.reset()  # a file read before changed otherwise than by appending: again
                self._read(state, uid, user, now)
            for container in [c for c in user.ahead if user.entries[c].at <= now]:
                user.ahead.discard(container)
                user.seconds += user.entries[container].seconds(since, now)
            seconds = user.seconds + sum(user.entries[c].seconds(since, now) for c in user.ahead)
            running = list(running)
            recorded = {
                s.container: user.entries[s.container].span(s.container, now)
                for s in running
                if s.container in user.entries
            }
        for span in running:
            if span.container in recorded:
                seconds -= user.entries[span.container].seconds(since, now)
        return seconds / 3600.0 + gpu_hours(running, since, now), recorded

    def spans(self, state: StateDir, uid: int, since: float, now: float) -> list[Span]:
        """``uid``'s recorded holdings that may overlap ``since``..``now`` (ended ones to their
        end, others to when they were last seen), read as :meth:`standing` reads them: only
        what was appended since the last call (the GPU queue's turns, recent_use.py). Blocking:
        a worker thread, or the loop under the allocation lock (/run is in memory)."""
        key = (state.path, uid)
        with self._guard:
            user = self._users.pop(key, None)
            if user is None or user.since != since:
                user = _UserRecords(since)
            self._users[key] = user
            while len(self._users) > self.MAX_USERS:
                self._users.pop(next(iter(self._users)))
        with user.lock:
            if not self._read(state, uid, user, now):
                user.reset()
                self._read(state, uid, user, now)
            return [entry.span(container, now) for container, entry in user.entries.items()]

    def _read(self, state: StateDir, uid: int, user: _UserRecords, now: float) -> bool:
        """Read what was appended to the period's files; False when a file read before was
        replaced, shortened or removed (what it said cannot be taken back: read all again)."""
        trusted = {uid, *state.service_uids()}
        names = []
        day, last = _utc_day(user.since), _utc_day(now + _CLOCK_SLACK)
        while day <= last:
            names.append(_file_name(uid, day))
            day += timedelta(days=1)
        if any(name not in names for name in user.files):
            return False
        for name in names:
            done = user.files.get(name)
            try:
                info = os.stat(name, dir_fd=state.fd, follow_symlinks=False)
            except OSError:
                if done is not None:
                    return False
                continue
            if done is not None and (info.st_ino != done[0] or info.st_size < done[1]):
                return False
            if done is not None and info.st_size == done[1]:
                continue  # nothing appended: the usual case
            offset = done[1] if done is not None else 0
            try:
                data, opened = read_trusted(state.fd, name, trusted, _MAX_FILE, offset=offset)
            except OSError:
                if done is not None:
                    return False
                continue  # not a file to believe: its lines count for nothing
            if done is not None and opened.st_ino != done[0]:
                return False
            whole = data.rfind(b"\n") + 1  # a line being written waits for its end
            for line in data[:whole].split(b"\n"):
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict):
                        self._count(user, record, now)
            user.files[name] = (opened.st_ino, offset + whole)
        return True

    @staticmethod
    def _count(user: _UserRecords, record: dict[str, Any], now: float) -> None:
        """Merge one line into the user's entries, their GPU-seconds kept up to date."""
        container = record.get("container")
        before = user.entries.get(container) if isinstance(container, str) else None
        # Taken before the merge, which changes the entry in place.
        counted = 0.0
        if before is not None and container not in user.ahead:
            counted = before.seconds(user.since, now)
        merged = _merge(user.entries, record, now)
        if merged is None:
            return  # not a line of this module's: nothing changed
        user.seconds -= counted
        user.ahead.discard(merged)
        entry = user.entries[merged]
        if entry.at > now:
            user.ahead.add(merged)  # counted at each check until the clock passes it
        else:
            user.seconds += entry.seconds(user.since, now)


def append_records(state: StateDir, uid: int, records: list[dict[str, Any]], now: float) -> str:
    """Append ``records`` of ``uid``'s use to today's file of this process's own (created if
    missing). "" when written, else a sentence saying why not. Blocking: a worker thread."""
    name = _file_name(uid, _utc_day(now))
    data = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
    flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=state.fd)
        os.fchmod(fd, 0o644)  # just created: the umask must not narrow it (the admin reads it)
    except FileExistsError:
        try:
            info = os.stat(name, dir_fd=state.fd, follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
                return _taken(state, name, info.st_uid)
            fd = os.open(name, flags, dir_fd=state.fd)
        except OSError as e:
            return f"{name} in {state.path} cannot be opened ({e.strerror})."
    except OSError as e:
        return f"{name} cannot be created in {state.path} ({e.strerror})."
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_nlink != 1:
            return _taken(state, name, info.st_uid)
        os.write(fd, data)  # one write to an O_APPEND file: never interleaved with another's
    except OSError as e:
        return f"{name} in {state.path} cannot be written ({e.strerror})."
    finally:
        os.close(fd)
    return ""


def _taken(state: StateDir, name: str, owner: int) -> str:
    return (
        f"{name} in {state.path} is not this server's own file (it belongs to "
        f"{owner_name(owner)}, or is a link): another user may have created it first. Ask an "
        "administrator to remove it."
    )


def prune(state: StateDir, today: date) -> None:
    """Remove this process's own usage files older than KEEP_DAYS (in the sticky state
    directory nobody else's can be removed anyway). Blocking: a worker thread."""
    oldest = f"{today - timedelta(days=KEEP_DAYS):%Y%m%d}"
    remove_own_files(state.fd, _FILE, lambda m, _info: m[2] < oldest)


def recorded_uids(state: StateDir) -> set[int]:
    """Every uid some usage file names (the admin view's users besides the holders). Blocking."""
    try:
        names = os.listdir(state.fd)
    except OSError:
        return set()
    return {int(m[1]) for m in map(_FILE.fullmatch, names) if m}


def _gpu_span(record: ContainerRecord, end: float) -> tuple[int, Span] | None:
    """The uid a GPU container charges and its span up to ``end``; None for anything else."""
    labels = record.labels
    gpus = [u for u in labels.get(L.GPUS, "").split(",") if u]
    uid = labels.get(L.UID, "")
    if labels.get(L.MANAGED) != "true" or not gpus or not uid.isdigit() or len(uid) > 10:
        return None
    if not _CONTAINER.fullmatch(record.id) or not record.created:
        return None
    start = min(record.created, end)
    return int(uid), Span(record.id, labels.get(L.KERNEL_ID, "")[:64], start, end, len(gpus))


def _line(span: Span, key: str) -> dict[str, Any]:
    return {
        "container": span.container,
        "kernel_id": span.kernel_id,
        "start": span.start,
        "gpus": span.gpus,
        key: span.end,
    }


# ---------------------------------------------------------------------- the policy


class GPUQuota(LoggingConfigurable):
    """GPU-hours per user and per group, per day or week (off by default)."""

    hours_per_user = Float(
        0.0,
        config=True,
        help="""GPU-hours each user may use per period (GPUQuota.period), over all their
        kernels and servers on this host: one GPU held for an hour is one GPU-hour, from the
        container's creation to its removal. A start that asks for GPUs once the quota is used
        up is refused (409, "GPU-hour quota used up"); kernels already running keep their GPUs.
        0 (default): no quota per user.""",
    )

    period = Enum(
        ["day", "week"],
        "week",
        config=True,
        help="""The period quotas count over: "day" (from midnight) or "week" (default, from
        Monday midnight), in the host's local time. Use starts again from zero at the next
        one.""",
    )

    user_groups = Dict(
        value_trait=Unicode(),
        key_trait=Unicode(),
        config=True,
        help="""Groups for quotas: user name -> group name, e.g. {"alice": "ml-course", "bob":
        "ml-course"}. A group's members share its GPUQuota.hours_per_group, on top of each one's
        GPUQuota.hours_per_user.""",
    )

    hours_per_group = Dict(
        value_trait=Float(),
        key_trait=Unicode(),
        config=True,
        help="""GPU-hours per period each group (GPUQuota.user_groups) may use in all, e.g.
        {"ml-course": 200}. A group not listed, or 0: no quota for that group.""",
    )

    def __init__(
        self, *, backend: ContainerBackend, state: Callable[[], StateDir], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._backend = backend
        self._state = state
        self._pruned: date | None = None
        self._recorded = RecordedUse()

    @property
    def enabled(self) -> bool:
        return self.hours_per_user > 0 or any(h > 0 for h in self.hours_per_group.values())

    def group_of(self, user: str) -> str | None:
        group = self.user_groups.get(user)
        return group or None

    # ------------------------------------------------------------ recording (engine threads)

    def record_removal(self, record: ContainerRecord, at: float) -> None:
        """The engine removed ``record``'s container at ``at``: remember a GPU container's end.
        Blocking: called on the engine's removing thread (Engine.on_removed)."""
        found = _gpu_span(record, at)
        if found is None:
            return
        uid, span = found
        state = self._state()
        if not state.shared:
            return  # no GPU containers without the host-wide directory: nothing to remember
        if not may_write_for(state, uid):
            # Another user's kernel, removed because its server is dead: only that user (or
            # root, or a kernel service) may write its use; its last note stands for its end.
            self.log.debug(
                "The end of uid %s's GPU container %s is not ours to record.",
                uid,
                span.container[:12],
            )
            return
        problem = append_records(state, uid, [_line(span, "end")], at)
        if problem:
            self.log.warning("The GPU-hours of uid %s go unrecorded: %s", uid, problem)
        self._prune(state, at)

    def _prune(self, state: StateDir, now: float) -> None:
        today = _utc_day(now)
        if self._pruned != today:
            self._pruned = today
            prune(state, today)

    # ------------------------------------------------------------ reading (the event loop)

    async def usage(self, uid: int, user: str) -> Usage:
        """``uid``'s use in the current period, and the group's where ``user`` has one. With
        no quota of this project's, on an engine that accounts GPU-hours itself (Slurm), the
        engine's count for the user, without a limit (the engine's own limits apply)."""
        now = time.time()
        engine = self._backend.gpu_accounting
        if not self.enabled and engine is not None:
            return await self._accounted(engine, uid, user, now)
        state = await asyncio.to_thread(self._state)
        try:
            live = await self._live(state, now) if state.shared else {}
        except EngineUnavailable as e:
            # What ended is on disk; what runs cannot be asked: say so, answer the rest.
            found = await self._standing(state, uid, user, {}, now)
            return dataclasses.replace(found, engine_error=e.sentence)
        return await self._standing(state, uid, user, live, now)

    async def _accounted(self, engine: GPUAccounting, uid: int, user: str, now: float) -> Usage:
        start, resets = period_bounds(self.period, datetime.fromtimestamp(now, timezone.utc))
        usage = Usage(uid, user, self.period, 0.0, 0.0, resets)
        try:
            hours = await asyncio.to_thread(engine.gpu_hours_sync, user, start.timestamp(), now)
        except ContainerKernelError as e:
            return dataclasses.replace(usage, engine_error=e.sentence)
        if hours is None:  # the engine keeps no accounting: nothing to show
            return usage
        return dataclasses.replace(usage, used_hours=hours, accounted_by=engine.accounted_by)

    async def _standing(
        self, state: StateDir, uid: int, user: str, live: dict[int, list[Span]], now: float
    ) -> Usage:
        start, resets = period_bounds(self.period, datetime.fromtimestamp(now, timezone.utc))
        since = start.timestamp()
        group = self.group_of(user)
        members = {uid}
        if group is not None:
            names = [name for name, g in self.user_groups.items() if g == group]
            members |= await asyncio.to_thread(_uids_of, names)
        used = await asyncio.to_thread(self._used, state, members, live, since, now, uid)
        return Usage(
            uid=uid,
            user=user,
            period=self.period,
            limit_hours=max(0.0, self.hours_per_user),
            used_hours=used.get(uid, 0.0),
            resets_at=resets,
            group=group,
            group_limit_hours=max(0.0, self.hours_per_group.get(group, 0.0)) if group else 0.0,
            group_used_hours=sum(used.values()) if group else 0.0,
        )

    async def check(self, uid: int | str, user: str) -> None:
        """Refuse a start that asks for GPUs when ``uid``'s quota, or its group's, is used up
        (QuotaUsedUp, a sentence with the use, the limit and when it resets)."""
        if not self.enabled:
            return
        found = await self.usage(int(uid), user)
        when = f"{found.resets_at:%A %Y-%m-%d at %H:%M}"
        each = "today" if found.period == "day" else "this week"
        if found.limit_hours > 0 and found.used_hours >= found.limit_hours:
            raise QuotaUsedUp(
                f"You have used {_hours(found.used_hours)} of your {_hours(found.limit_hours)} "
                f"GPU-hours {each}; your quota starts again on {when}. Until then kernels "
                "without GPUs still start."
            )
        if 0 < found.group_limit_hours <= found.group_used_hours:
            raise QuotaUsedUp(
                f"Your group {found.group!r} has used {_hours(found.group_used_hours)} of its "
                f"{_hours(found.group_limit_hours)} GPU-hours {each}; its quota starts "
                f"again on {when}. Until then kernels without GPUs still start."
            )

    async def everyone(self) -> list[Usage]:
        """Every user's use in the current period (the admin view): those who hold GPUs now or
        used some recently, by name (a uid the account database does not know: "uid N")."""
        state = await asyncio.to_thread(self._state)
        if not state.shared:
            return []
        now = time.time()
        live = await self._live(state, now)
        uids = await asyncio.to_thread(recorded_uids, state) | set(live)
        names = await asyncio.to_thread(_names_of, uids)
        rows = [await self._standing(state, uid, names[uid], live, now) for uid in sorted(uids)]
        return [row for row in rows if row.used_hours > 0 or row.uid in live]

    async def all_usage(self) -> dict[str, Any]:
        """:meth:`everyone` as the admin view's JSON: the policy and a row per user."""
        rows = await self.everyone()
        return {
            "enabled": self.enabled,
            "period": self.period,
            "hours_per_user": self.hours_per_user,
            "hours_per_group": dict(self.hours_per_group),
            "users": [row.admin_json() for row in rows],
        }

    async def totals(self) -> dict[str, Any]:
        """The host's GPU-hours in the current period without anyone's name (the metrics):
        ``used_hours`` of all users, ``groups`` (each GPUQuota group's use; 0 for one unused so
        far), and ``used_up``, how many users (or members of a group) may start no GPU kernel
        now."""
        rows = await self.everyone()
        groups = {g: 0.0 for g in (*self.user_groups.values(), *self.hours_per_group) if g}
        for row in rows:
            if row.group is not None:
                groups[row.group] = row.group_used_hours
        used_up = sum(1 for row in rows if row.enabled and row.left_hours <= 0)
        return {
            "period": self.period,
            "used_hours": sum(row.used_hours for row in rows),
            "groups": groups,
            "used_up": used_up,
        }

    async def _live(self, state: StateDir, now: float) -> dict[int, list[Span]]:
        """Holdings that go on, from the ledger, by uid (to now): those of servers that live in
        this state directory, where their ends are recorded (a server configured with another
        one accounts there). Liveness is read on a worker thread, /proc/locks once."""
        ledger = await current_ledger(self._backend, state)
        holders = [h for held in ledger.holdings.values() for h in held]
        # Any owner: a kernel service's lock is its own, its kernels' uids its users'.
        alive = await asyncio.to_thread(state.alive_servers, [(h.server_id, None) for h in holders])
        spans: dict[str, tuple[int, Span]] = {}
        for h in holders:
            if not h.uid.isdigit() or not _CONTAINER.fullmatch(h.container_id):
                continue
            if not alive[(h.server_id, None)]:
                continue
            before = spans.get(h.container_id)
            gpus = before[1].gpus + 1 if before else 1
            start = min(h.created or now, now)
            spans[h.container_id] = (
                int(h.uid),
                Span(h.container_id, h.kernel_id[:64], start, now, gpus, live=True),
            )
        by_uid: dict[int, list[Span]] = {}
        for uid, span in spans.values():
            by_uid.setdefault(uid, []).append(span)
        return by_uid

    def _used(
        self,
        state: StateDir,
        uids: set[int],
        live: dict[int, list[Span]],
        since: float,
        now: float,
        noting: int,
    ) -> dict[int, float]:
        """GPU-hours per uid since ``since``; notes ``noting``'s running containers on disk
        (at most every SEEN_INTERVAL). Blocking: a worker thread."""
        used: dict[int, float] = {}
        for uid in uids:
            running = live.get(uid, [])
            if state.shared:
                used[uid], recorded = self._recorded.standing(state, uid, since, now, running)
            else:
                used[uid], recorded = gpu_hours(running, since, now), {}
            if uid == noting and running and may_write_for(state, uid):
                stale = [
                    s
                    for s in running
                    if s.container not in recorded
                    or recorded[s.container].end < now - SEEN_INTERVAL
                ]
                if stale:
                    problem = append_records(state, uid, [_line(s, "seen") for s in stale], now)
                    if problem:
                        self.log.warning("The GPU-hours of uid %s go unrecorded: %s", uid, problem)
        return used


def _hours(value: float) -> str:
    """Hours for a sentence: 10, 3.5, 0.25, 12.3."""
    return f"{value:.3g}"


def _uids_of(names: Iterable[str]) -> set[int]:
    """The uids of the accounts ``names`` (unknown names left out). Blocking: a worker thread."""
    return {uid for uid in map(account_uid, names) if uid is not None}


def _names_of(uids: Iterable[int]) -> dict[int, str]:
    """Each uid's account name ("uid N" for an unknown one). Blocking: a worker thread."""
    return {uid: owner_name(uid) for uid in uids}
