"""The GPU wait queue's tickets on disk (gpuqueue.py has the queue): one file per waiting start in
the host state directory, created O_EXCL|O_NOFOLLOW and held by an flock for as long as the
start waits; read back only when its file belongs to the uid its name gives (or to root or the
directory's owner: the kernel service, writing its users' tickets) and its flock is held. The
removal of a user's stale tickets lives here too. (The "served" marks of earlier versions,
``gpuq-served-<uid>``, which only a queue's grant wrote, are neither written nor read: a turn is
recent GPU use, recent_use.py.)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import stat
import time
from dataclasses import dataclass
from typing import Any

from ..base.errors import ContainerKernelError
from ..base.records import iso_time
from ..base.safefiles import read_trusted, remove_own_files
from ..host.hoststate import StateDir, flock_held, flocked_files
from .allocator import (
    GPURequest,
)

TICKET_PREFIX = "gpuq-"
TICKET_NAME = re.compile(r"gpuq-(\d{19,20})-(\d{1,10})-([A-Za-z0-9][A-Za-z0-9._-]{0,127})")
_MAX_TICKET_BYTES = 4096
# A ticket file nobody holds any more is removed by its own user's next waiter after this long
# (a waiter creates its file, then locks it: a younger unlocked file may be one being made).
_STALE_AFTER = 60.0
# A ticket that names no deadline counts for at most this long.
_LONGEST_WAIT = 24 * 3600.0
# A ticket counts this long past its own deadline (its waiter gives up at the deadline itself).
_DEADLINE_GRACE = 30.0


def shown_to(
    viewer_uid: int, show_others: bool, uid: int, kernel_id: str, user: str, notebook: str
) -> dict[str, Any]:
    """Who a waiting start is, as the API shows it to ``viewer_uid``: another user's kernel id
    never, their name and notebook only with GPUVisibility.show_other_users."""
    yours = uid == viewer_uid
    reveal = yours or show_others
    return {
        "kernel_id": kernel_id if yours else None,
        "yours": yours,
        "user": user if reveal else None,
        "notebook": notebook if reveal else None,
    }


@dataclass(frozen=True)
class Ticket:
    """One waiting start, as any server on the host reads it."""

    name: str  # its file's name in the state directory
    kernel_id: str
    uid: int
    user: str
    request: GPURequest
    arrived: float  # unix time
    notebook: str = ""
    server_id: str = ""
    deadline: float = 0.0  # unix time; 0: none known
    position: int = 0  # 1-based, in fair order (0: not ordered yet)

    def to_json(
        self, viewer_uid: int, show_others: bool, now: float | None = None
    ) -> dict[str, Any]:
        """The ticket as the API shows it to ``viewer_uid``: another user's kernel id never, their
        name and notebook only with GPUVisibility.show_other_users."""
        now = time.time() if now is None else now
        return {
            **shown_to(viewer_uid, show_others, self.uid, self.kernel_id, self.user, self.notebook),
            "gpus": self.request.to_json(),
            "position": self.position,
            "waited": round(max(0.0, now - self.arrived), 1),
            "deadline": iso_time(self.deadline) if self.deadline else None,
            # A wait in this host's queue, not an engine's scheduler (placement.SchedulerWait).
            "scheduler": "",
            "reason": "",
            "estimate": None,
        }


# What each ticket file said when last read (kept in StateDir.readings, by name): the file's
# inode, size, change time (which nobody can set back, and which any write or chown moves) and
# owner, and the ticket it held (None: not a ticket). A full reading of the queue then costs a
# stat per ticket, not an open, a read and a parse.
_Key = tuple[int, int, int, int]
_READING = "tickets"
# The last full reading, kept while the directory has not changed since (StateDir.readings): a
# waiter checks its turn at each poll, and with nothing new a check costs one fstat of the
# directory, not a stat of every ticket and a reading of /proc/locks.
_QUEUE = "queue"
# A reading is kept only when the directory's last change came this long before it began: a
# change's time is taken from a clock that ticks every few milliseconds, so a change made in
# the same tick as an earlier one could leave the directory's times as they were.
_QUIET_NS = 1_000_000_000
# What a kept reading cannot see, it sees at the next full one, at most this long after: a
# waiter that died (its flock gone, its file left; my_turn asks the tickets its decision rests
# on, see still_waiting) or a ticket written again in place by its owner.
_READ_ALL_EVERY = 10.0


@dataclass
class _QueueReading:
    directory: tuple[int, int]  # the directory's change and modification times (ns)
    taken: float  # time.monotonic() of the reading
    found: list[Ticket]
    expires: float  # unix time at which the first of ``found`` stops counting
    # Ticket files it did not count that may count soon (one being made: created, then locked,
    # then written): name -> its key then. Asked again at each use of the reading.
    pending: dict[str, tuple[_Key, bool]]


def read_queue_files(state: StateDir, locks: frozenset[str] | None = None) -> list[Ticket]:
    """The live tickets (not ordered). Blocking.
    ``locks``: flocked_files(), read here (once, and only if some ticket is there) when not
    given: an empty queue, the usual one, costs a directory listing.

    Without ``locks``, the last full reading is given again while the directory has not changed
    since and nothing it left out may count now (_QueueReading). What is returned is shared
    between readings: never changed by the caller."""
    try:
        directory = os.fstat(state.fd)
    except OSError:
        return []
    stamp = (directory.st_ctime_ns, directory.st_mtime_ns)
    now = time.time()
    if locks is None:
        kept = state.readings.get(_QUEUE)
        if (
            isinstance(kept, _QueueReading)
            and kept.directory == stamp
            and now < kept.expires
            and time.monotonic() - kept.taken < _READ_ALL_EVERY
            and not _any_pending_counts(state, kept.pending)
        ):
            return kept.found
    state.readings.pop(_QUEUE, None)
    began_ns, began = time.time_ns(), time.monotonic()
    pending: dict[str, tuple[_Key, bool]] = {}
    found = _read_all(state, locks, directory.st_uid, now, pending)
    if locks is None and began_ns - directory.st_ctime_ns > _QUIET_NS:
        expires = min((_expires(t) for t in found), default=math.inf)
        state.readings[_QUEUE] = _QueueReading(stamp, began, found, expires, pending)
    return found


def forget_queue_reading(state: StateDir) -> None:
    """The next reading of the queue reads every file again (a ticket it counted is gone)."""
    state.readings.pop(_QUEUE, None)


def _any_pending_counts(state: StateDir, pending: dict[str, tuple[_Key, bool]]) -> bool:
    """Whether a ticket file a kept reading left out, young enough to be one being made, was
    written since, or is whole and now locked."""
    for name, (key, whole) in pending.items():
        try:
            info = os.stat(name, dir_fd=state.fd, follow_symlinks=False)
        except OSError:
            continue  # gone: it counts no more than it did
        if (info.st_ino, info.st_size, info.st_ctime_ns, info.st_uid) != key:
            return True
        if whole and _probed_held(state.fd, name, info.st_ino):
            return True
    return False


def _read_all(
    state: StateDir,
    locks: frozenset[str] | None,
    directory_owner: int,
    now: float,
    pending: dict[str, tuple[_Key, bool]],
) -> list[Ticket]:
    try:
        names = os.listdir(state.fd)
    except OSError:
        return []
    found = []
    read_locks = locks is None
    known: dict[str, tuple[_Key, Ticket | None]] = state.readings.get(_READING, {})
    seen: dict[str, tuple[_Key, Ticket | None]] = {}
    for name in names:
        m = TICKET_NAME.fullmatch(name)
        if m is not None:
            if read_locks:
                locks, read_locks = flocked_files(), False
            ticket = _read_ticket(state, name, m, locks, directory_owner, known, seen, now)
            if ticket is not None:
                found.append(ticket)
            elif name in seen:
                key, parsed = seen[name]
                if key[2] / 1e9 > now - _STALE_AFTER:
                    # Perhaps one being made (not written yet, or not locked yet): asked again
                    # at each use. A whole one counts once locked, unless past its deadline.
                    pending[name] = (key, parsed is not None and not _expired(parsed, now))
    # Only the names listed now are kept: the cache holds no more than the directory does.
    state.readings[_READING] = seen
    return found


def _read_ticket(
    state: StateDir,
    name: str,
    m: re.Match[str],
    locks: frozenset[str] | None,
    directory_owner: int,
    known: dict[str, tuple[_Key, Ticket | None]],
    seen: dict[str, tuple[_Key, Ticket | None]],
    now: float,
) -> Ticket | None:
    # The uid its name claims must be its owner's, unless root or the directory's owner (the
    # kernel service) wrote it: nobody else queues in another user's name.
    owners = (int(m.group(2)), 0, directory_owner)
    try:
        info = os.stat(name, dir_fd=state.fd, follow_symlinks=False)
    except OSError:
        return None  # gone meanwhile
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_uid not in owners:
        return None  # a symlink, a FIFO, a hard link, or another's
    key = (info.st_ino, info.st_size, info.st_ctime_ns, info.st_uid)
    before = known.get(name)
    if before is not None and before[0] == key:
        ticket = before[1]
    else:
        try:
            data, info = read_trusted(state.fd, name, owners, _MAX_TICKET_BYTES + 1)
        except OSError:
            return None  # gone or changed meanwhile, or not readable to us
        key = (info.st_ino, info.st_size, info.st_ctime_ns, info.st_uid)
        ticket = _parse_ticket(name, m, data, info)
    seen[name] = (key, ticket)
    if ticket is None or not _held(state, name, info, locks):
        return None  # not a ticket, or its waiter is gone (the server died): nobody's place
    if _expired(ticket, now):
        return None
    return ticket


def _expired(ticket: Ticket, now: float) -> bool:
    """A ticket past its own deadline counts no more, even if a process still holds it."""
    return now > _expires(ticket)


def _expires(ticket: Ticket) -> float:
    return (ticket.deadline or ticket.arrived + _LONGEST_WAIT) + _DEADLINE_GRACE


def _parse_ticket(name: str, m: re.Match[str], data: bytes, info: os.stat_result) -> Ticket | None:
    """The ticket a file of the queue holds, or None for one that is not well formed."""
    arrived_ns, uid, kernel_id = int(m.group(1)), int(m.group(2)), m.group(3)
    if len(data) > _MAX_TICKET_BYTES:
        return None
    try:
        body = json.loads(data)
        request = GPURequest.parse(body.get("gpus"))
        user, notebook = body.get("user", ""), body.get("notebook", "")
        server_id, deadline = body.get("server_id", ""), body.get("deadline", 0)
        if not all(isinstance(v, str) for v in (user, notebook, server_id)):
            return None
        if not isinstance(deadline, (int, float)) or isinstance(deadline, bool):
            return None
    except (ValueError, AttributeError, ContainerKernelError):
        return None
    if not request.wants_gpus:
        return None
    return Ticket(
        name=name,
        kernel_id=kernel_id,
        uid=uid,
        user=user[:64],
        request=request,
        # Its arrival is the name's, but never much before the file was made: the change time
        # cannot be set back, so nobody jumps the queue by naming an earlier time.
        arrived=max(arrived_ns / 1e9, info.st_ctime - 2.0),
        notebook=notebook[:1024],
        server_id=server_id[:160],
        deadline=float(deadline),
    )


def _held(state: StateDir, name: str, info: os.stat_result, locks: frozenset[str] | None) -> bool:
    """Whether a process holds the ticket's flock. /proc/locks lists the held ones cheaply; one
    it does not list is asked of the file itself (_probed_held): a reading of /proc/locks is no
    snapshot (many reads of a list that changes meanwhile, so on a busy host a held lock can be
    missed), and a live waiter must never be taken for a dead one."""
    return bool(flock_held(info, locks)) or _probed_held(state.fd, name, info.st_ino)


def _probed_held(dir_fd: int, name: str, ino: int) -> bool:
    """Whether a process holds an flock on the file ``name`` (inode ``ino``), by trying a shared
    lock on a descriptor of our own: it fails while a waiter holds its exclusive one (closing the
    descriptor drops ours)."""
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except OSError:
        return False  # gone meanwhile
    try:
        if os.fstat(fd).st_ino != ino:
            return False  # another file by now: this ticket is gone
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True  # held (BlockingIOError), or cannot tell: it keeps its place
    finally:
        os.close(fd)
    return False


def write_ticket(state: StateDir, ticket: Ticket) -> int:
    """Create the ticket's file and hold its flock; the descriptor keeps the place."""
    fd = os.open(
        ticket.name,
        os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        # Readable by the directory's group (the other servers that share the queue): it says
        # who waits for what, which the panel shows only as GPUVisibility allows.
        0o644,
        dir_fd=state.fd,
    )
    try:
        os.fchmod(fd, 0o644)  # whatever the umask: every server sharing the queue reads it
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        body = {
            "user": ticket.user,
            "notebook": ticket.notebook,
            "gpus": ticket.request.to_json(),
            "server_id": ticket.server_id,
            "deadline": ticket.deadline,
        }
        os.write(fd, json.dumps(body).encode()[:_MAX_TICKET_BYTES])
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(ticket.name, dir_fd=state.fd)
        raise
    return fd


def remove_ticket(state: StateDir, name: str, fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=state.fd)
    with contextlib.suppress(OSError):
        os.close(fd)


def remove_stale_tickets(state: StateDir, uid: int) -> int:
    """Remove this user's tickets that no process holds any more (a server that died while a
    start waited). Only one's own files can be removed in the sticky directory; others' are
    ignored by every reader anyway. Blocking: a worker thread."""
    locks = flocked_files()
    if locks is None:
        return 0
    now = time.time()
    return remove_own_files(
        state.fd,
        TICKET_NAME,
        lambda m, info: (
            int(m.group(2)) == uid
            and now - info.st_mtime >= _STALE_AFTER
            and flock_held(info, locks) is False
            and not _probed_held(state.fd, m.group(0), info.st_ino)
        ),
    )


def still_waiting(state: StateDir, ticket: Ticket) -> bool:
    """Whether the ticket's waiter still holds it, asked of its file: what a decision that rests
    on the ticket asks of a kept reading (read_queue_files), which does not see a waiter die.
    When it does not, the next reading reads every file again."""
    known = state.readings.get(_READING, {}).get(ticket.name)
    try:
        info = os.stat(ticket.name, dir_fd=state.fd, follow_symlinks=False)
    except OSError:
        info = None
    if (
        info is not None
        and (known is None or known[0][0] == info.st_ino)
        and _probed_held(state.fd, ticket.name, info.st_ino)
    ):
        return True
    forget_queue_reading(state)
    return False
