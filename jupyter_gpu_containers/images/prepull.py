"""Pre-pulls before class, when each image was last used, and pruning of images left unused.

A lab's first start must not wait for a 20 GB pull. So the administrator schedules pulls of the
images a course needs (``PrePuller.schedule``: "the course image every night at 02:00", or
"every 6 hours"), as z2jh's pre-puller and Enterprise Gateway's image puller do. Scheduled pulls
are ordinary pulls of pulls.py (progress, the bounded queue, joining), made with the
administrator's registry login only (``RegistryCredentials.registry_auth``, never a user's own,
so a pre-pulled image is never anyone's private pull) and within ``ContainerPolicy.
allowed_images``; ``ContainerPolicy.allow_user_pulls`` does not stop them. A periodic task runs
them in the server, or the kernel service, while it runs (app.py starts and stops it).

What ran last and when is kept in the host state directory (hoststate.py), so a restart does
not pull again at once, and every server of the host sees the runs of the others:

    prepull-<uid>.json    owner <uid>, mode 0644: {"runs": {entry: run}, "prune": {…},
                          "first_seen": {image id: unix time}}
    image-use-<uid>.json  owner <uid>, mode 0644: {"images": {reference: {"image_id", "used"}}}
    prepull-claim-<hash>-<n>  empty; created with O_EXCL by the one server that pulls an entry
                          when it falls due (see PrePuller._claim)

When an entry falls due, every server of the host that has the schedule sees it; the first to
create its claim file pulls it, and the others see the run it records.

The engine does not keep when an image was last used, so each launch records it
(``record_use``, called by admission.py when a kernel is admitted on an image).

**Pruning** (``prune_after_days``; off by default) removes an image only when all of these hold:

1. every tag it has is one the administrator named as the extension's to manage: listed in the
   catalog (``ImageCatalog.listed_images`` / ``extra_listed_images``) or matched by
   ``PrePuller.prune_images``; and every tag is within ``ContainerPolicy.allowed_images``
   (an image the allow-list refuses is not one this extension runs: not its business);
2. it is not in the pre-pull schedule (the next pre-pull would only bring it back);
3. it came from a registry (it has a repository digest): an image built on this host cannot be
   pulled again, and is never removed;
4. no container uses it, in any state, whoever's (the engine's count); the engine refuses to
   remove an image a container uses anyway, and nothing is ever forced;
5. it was not used for ``prune_after_days`` days: the latest of its last launch (any server's
   record), and the first time a pruner on this host saw it (an image is never removed within
   that many days of pruning being turned on, or of its arrival).

Images nobody names (a database's image, a user's own builds, dangling layers) are never touched.
A record file is believed only when its owner is the uid its name gives, root, or the state
directory's owner (a kernel service); another user's record can only make an image look used
more recently (kept longer), never make it removable.

Blocking work (files, the engine's disk report, removals) runs on worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from traitlets import Bool, Float, List, Unicode, validate
from traitlets.config import LoggingConfigurable
from traitlets.traitlets import TraitError

from ..backends.backend import ContainerBackend
from ..base.errors import ContainerKernelError, ImageMissing
from ..base.records import ImageDiskUse, ImagesDiskUse, iso_time
from ..base.references import BadReference, normalize_reference, parse_reference
from ..base.safefiles import read_trusted, remove_own_files, write_atomic
from ..host.hoststate import StateDir
from ..policy.admin_policy import ContainerPolicy, image_allowed
from .pulls import Pull, PullManager

_RUNS_FILE = re.compile(r"prepull-([0-9]{1,10})\.json")
_USE_FILE = re.compile(r"image-use-([0-9]{1,10})\.json")
_CLAIM_FILE = re.compile(r"prepull-claim-[0-9a-f]{20}-[0-9]{1,12}")
# Seconds a claim file is kept by its owner: far longer than any claim counts.
_CLAIM_KEEP = 2 * 86400.0
_AT = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
# Launches of one image recorded at most this often by one process (seconds): a lab of 60
# starting at once writes the file once, not 60 times.
_USE_THROTTLE = 60.0
# References kept in one process's use record (the most recent): the file stays small.
_USE_KEEP = 500
# Bytes read of one record file: 500 references with their image ids fit many times over.
_MAX_RECORD = 1 << 20


@dataclass(frozen=True)
class ScheduleEntry:
    """One line of the schedule: an image, and either a daily time or an interval."""

    image: str  # normalised reference
    at: tuple[int, int] | None = None  # local hour and minute, daily
    every: float | None = None  # hours

    @property
    def key(self) -> str:
        """What its runs are recorded under: a changed rule starts afresh."""
        rule = f"at={self.at[0]:02d}:{self.at[1]:02d}" if self.at else f"every={self.every:g}h"
        return f"{self.image} {rule}"

    def rule_json(self) -> dict[str, Any]:
        return {
            "at": f"{self.at[0]:02d}:{self.at[1]:02d}" if self.at else None,
            "every_hours": self.every,
        }

    def next_after(self, after: float) -> float:
        """The first time this entry is due after ``after`` (a run's start)."""
        if self.every is not None:
            return after + self.every * 3600.0
        assert self.at is not None
        return next_daily(after, *self.at)


def next_daily(after: float, hour: int, minute: int) -> float:
    """The first local ``hour:minute`` strictly after ``after`` (unix times). mktime normalises
    day 32 and daylight saving time changes."""
    local = time.localtime(after)
    for days in (0, 1, 2):
        when = time.mktime(
            (local.tm_year, local.tm_mon, local.tm_mday + days, hour, minute, 0, 0, 0, -1)
        )
        if when > after:
            return when
    raise AssertionError("unreachable: a day always has this time")  # pragma: no cover


def parse_entry(raw: Any) -> ScheduleEntry:
    """A schedule line from configuration; ValueError with a sentence when it is not one."""
    if not isinstance(raw, dict):
        raise ValueError(
            f'{raw!r} is not {{"image": …, "at": "HH:MM"}} or {{"image": …, "every": hours}}.'
        )
    unknown = set(raw) - {"image", "at", "every"}
    if unknown:
        raise ValueError(
            f'{sorted(unknown)} are not schedule keys: give image, and at ("HH:MM", daily, the '
            "host's local time) or every (hours)."
        )
    image = raw.get("image")
    if not isinstance(image, str) or not image.strip():
        raise ValueError(f"{raw!r} names no image to pull.")
    try:
        ref = parse_reference(image.strip()).written
    except (BadReference, ValueError) as e:
        raise ValueError(str(e)) from None
    at, every = raw.get("at"), raw.get("every")
    if (at is None) == (every is None):
        raise ValueError(f'{image}: give either at ("HH:MM") or every (hours), not both or none.')
    if at is not None:
        m = _AT.fullmatch(at) if isinstance(at, str) else None
        if m is None:
            raise ValueError(
                f'{image}: at must be a time of day as "HH:MM" (e.g. "02:00"), not {at!r}.'
            )
        return ScheduleEntry(ref, at=(int(m[1]), int(m[2])))
    if isinstance(every, bool) or not isinstance(every, (int, float)) or not every > 0:
        raise ValueError(f"{image}: every must be a number of hours above 0, not {every!r}.")
    return ScheduleEntry(ref, every=float(every))


@dataclass
class Run:
    """One scheduled pull, as recorded: when it started and ended, and how."""

    started: float
    state: str = "pulling"  # pulling, done, error, cancelled; "interrupted" when read back
    finished: float | None = None
    message: str = ""
    digest: str = ""
    image_id: str = ""
    pull_id: str = ""
    uid: int = -1  # whose server ran it

    def to_file(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "state": self.state,
            "finished": self.finished,
            "message": self.message,
            "digest": self.digest,
            "image_id": self.image_id,
            "pull_id": self.pull_id,
        }

    @classmethod
    def from_file(cls, data: Any, uid: int) -> Run | None:
        if not isinstance(data, dict):
            return None
        try:
            finished = data.get("finished")
            return cls(
                started=float(data["started"]),
                state=str(data.get("state", "")),
                finished=float(finished) if finished is not None else None,
                message=str(data.get("message", ""))[:1000],
                digest=str(data.get("digest", ""))[:200],
                image_id=str(data.get("image_id", ""))[:200],
                pull_id=str(data.get("pull_id", ""))[:64],
                uid=uid,
            )
        except (KeyError, TypeError, ValueError):
            return None

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "started": iso_time(self.started),
            "finished": iso_time(self.finished),
            "message": self.message,
            "digest": self.digest,
            "image_id": self.image_id,
        }


def _trusted_files(state: StateDir, pattern: re.Pattern[str]) -> list[tuple[int, Any]]:
    """(uid, parsed JSON) of every file ``pattern`` names whose owner is the uid its name
    gives, or root, or the state directory's owner (a kernel service, which writes for its
    users: quota.py and admin_view.py believe the same); missing, malformed and foreign files are
    skipped."""
    try:
        names = os.listdir(state.fd)
    except OSError:
        return []
    services = state.service_uids()
    found = []
    for name in names:
        m = pattern.fullmatch(name)
        if not m:
            continue
        uid = int(m[1])
        try:
            raw, _info = read_trusted(state.fd, name, {uid, *services}, _MAX_RECORD)
            data = json.loads(raw.decode("utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            found.append((uid, data))
    return found


class PrePuller(LoggingConfigurable):
    """The administrator's scheduled pulls and pruning of unused images (see the module)."""

    schedule: List[Any] = List(
        config=True,
        help="""Images to pull on a schedule, before users need them. Each is
        {"image": ref, "at": "HH:MM"} (daily, the host's local time) or
        {"image": ref, "every": hours}, e.g. [{"image": "nvcr.io/nvidia/pytorch:24.05-py3",
        "at": "02:00"}]. Pulled with the administrator's registry login
        (RegistryCredentials.registry_auth), within ContainerPolicy.allowed_images, through the
        server's pull queue (PullManager). What ran last is kept in the host state directory:
        a restart does not pull again before the next time. Empty (the default): none.""",
    )

    @validate("schedule")
    def _valid_schedule(self, proposal: Any) -> list[Any]:
        for raw in proposal["value"]:
            try:
                parse_entry(raw)
            except ValueError as e:
                raise TraitError(f"PrePuller.schedule: {e}") from None
        return list(proposal["value"])

    pull_missing_at_once = Bool(
        True,
        config=True,
        help="""Pull a scheduled image that is not on the host at once (at the server's first
        check), rather than waiting for its next time.""",
    )

    check_interval = Float(
        60.0,
        config=True,
        help="""Seconds between two looks at the schedule (and whether pruning is due). A
        scheduled pull starts within this long of its time.""",
    )

    retry_after = Float(
        15.0,
        config=True,
        help="""Minutes after a failed or interrupted scheduled pull before it is tried again
        (if its next regular time is not sooner).""",
    )

    prune_after_days = Float(
        0.0,
        config=True,
        help="""Remove images unused for this many days (0, the default: never). Only images
        every tag of which is listed in ImageCatalog.listed_images / extra_listed_images or
        matched by PrePuller.prune_images, and allowed by ContainerPolicy.allowed_images; never
        one in the pre-pull schedule, one built on this host (no registry digest), or one any
        container uses. Unused means: no kernel launched on it, and no pruner on this host saw
        it arrive, for that long.""",
    )

    prune_images = List(
        Unicode(),
        config=True,
        help="""Glob patterns of image references that pruning may remove besides the catalog's
        listed images, e.g. ["nvcr.io/nvidia/*"]. Matched against the reference as written
        and fully qualified (docker.io/library/ubuntu:22.04).""",
    )

    prune_interval = Float(
        6.0,
        config=True,
        help="Hours between two pruning passes (when prune_after_days is above 0).",
    )

    @validate("check_interval", "retry_after", "prune_interval")
    def _positive(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not value > 0:
            raise TraitError(f"PrePuller.{proposal['trait'].name} must be above 0.")
        return value

    @validate("prune_after_days")
    def _not_negative(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if value < 0:
            raise TraitError("PrePuller.prune_after_days must be 0 (off) or more.")
        return value

    def __init__(
        self,
        *,
        backend: ContainerBackend,
        pulls: PullManager,
        policy: ContainerPolicy,
        listed: Callable[[], list[str]],
        state: Callable[[], StateDir],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.backend = backend
        self.pulls = pulls
        self.policy = policy
        self._listed = listed
        self._state = state
        # The time now (unix seconds). A seam for tests, which move it to a scheduled time.
        self.clock: Callable[[], float] = time.time
        self._since = self.clock()  # "at" entries never run before are due after this
        self._task: asyncio.Task[None] | None = None
        self._followers: set[asyncio.Task[None]] = set()
        # Entry key -> this process's pull of it under way (None while it is being started).
        self._active: dict[str, Pull | None] = {}
        self._recorded: dict[str, float] = {}  # reference -> when this process last wrote its use
        self._uid = os.geteuid()

    @property
    def entries(self) -> list[ScheduleEntry]:
        return [parse_entry(raw) for raw in self.schedule]

    @property
    def enabled(self) -> bool:
        return bool(self.schedule) or self.prune_after_days > 0

    # ------------------------------------------------------------------ the periodic task

    def start(self) -> bool:
        """Start the periodic task when there is a schedule or pruning (on the event loop)."""
        if not self.enabled or self._task is not None:
            return False
        self._since = self.clock()
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return True

    async def stop(self) -> None:
        """Stop the periodic task. Pulls under way go on to their end in the pull manager."""
        task, self._task = self._task, None
        tasks = [t for t in (task, *self._followers) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def _loop(self) -> None:
        while True:
            try:
                await self.check_now()
            except ContainerKernelError as e:
                self.log.warning("Pre-pulls: %s", e)
            except Exception:  # a bug must not end the schedule for the server's lifetime
                self.log.exception("Pre-pulls: the check failed")
            await asyncio.sleep(self.check_interval)

    async def check_now(self) -> None:
        """Start the scheduled pulls that are due, then prune when due."""
        entries = self.entries
        if entries:
            runs = await asyncio.to_thread(self._host_runs)
            for entry in entries:
                if entry.key in self._active:
                    continue
                previous = runs.get(entry.key)
                next_run = await self._next_run(entry, previous)
                if next_run > self.clock():
                    continue
                if await asyncio.to_thread(self._claim, entry, previous):
                    await self._start_pull(entry)
        if self.prune_after_days > 0:
            last = await asyncio.to_thread(self._last_prune)
            if last is None or last + self.prune_interval * 3600.0 <= self.clock():
                await self.prune_now()

    async def _next_run(self, entry: ScheduleEntry, last: Run | None) -> float:
        if last is None:
            if self.pull_missing_at_once and not await self._on_host(entry.image):
                return self._since
            if entry.every is not None:
                return self._since  # no time of day to wait for: now
            return entry.next_after(self._since)
        regular = entry.next_after(last.started)
        if last.state in ("error", "cancelled", "interrupted"):
            return min(regular, (last.finished or last.started) + self.retry_after * 60.0)
        return regular

    def _claim(self, entry: ScheduleEntry, last: Run | None) -> bool:
        """Whether this server pulls ``entry`` now that it is due, the run after ``last``: the
        first server of the host to create its claim file (O_CREAT | O_EXCL) does; the others
        see the run it records. A claim counts for PrePuller.retry_after minutes: one made by a
        server that died before it recorded its run (or planted by another user, who could
        as well record a run of their own) delays the pull by that long, as a failed pull
        would. Blocking: a worker thread."""
        state = self._state()
        now = self.clock()
        window = self.retry_after * 60.0
        after = f"{last.started!r}" if last is not None else "none"
        digest = hashlib.sha256(f"{entry.key}\n{after}".encode()).hexdigest()[:20]
        name = f"prepull-claim-{digest}-{int(now // window)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            os.close(os.open(name, flags, 0o644, dir_fd=state.fd))
        except FileExistsError:
            self.log.debug("Pre-pull of %s: another server of this host pulls it.", entry.key)
            return False
        except OSError as e:
            self.log.warning(
                "Pre-pulls: %s cannot be claimed in %s (%s); pulled here regardless.",
                entry.key,
                state.path,
                e.strerror,
            )
            return True
        remove_own_files(
            state.fd, _CLAIM_FILE, lambda _m, info: time.time() - info.st_mtime > _CLAIM_KEEP
        )
        return True

    async def _on_host(self, image: str) -> bool:
        try:
            await self.backend.inspect_image(image)
        except ImageMissing:
            return False
        return True

    async def _start_pull(self, entry: ScheduleEntry) -> None:
        key = entry.key
        self._active[key] = None  # claimed before any await: one pull per entry
        run = Run(started=self.clock(), uid=self._uid)
        try:
            pull = await self.pulls.start(entry.image, scheduled=True)
        except ContainerKernelError as e:
            run.state, run.message, run.finished = "error", e.sentence, self.clock()
            self.log.warning("Pre-pull of %s refused: %s", entry.image, e.sentence)
            self._active.pop(key, None)
            await asyncio.to_thread(self._save_run, key, run)
            return
        self._active[key] = pull
        run.pull_id = pull.id
        self.log.info("Pre-pull of %s started (%s)", entry.image, key)
        try:
            await asyncio.to_thread(self._save_run, key, run)
        finally:
            follower = asyncio.get_running_loop().create_task(self._follow(entry, run, pull))
            self._followers.add(follower)
            follower.add_done_callback(self._followers.discard)

    async def _follow(self, entry: ScheduleEntry, run: Run, pull: Pull) -> None:
        try:
            await self.pulls.wait(pull)
            snapshot = pull.snapshot()
            run.state = snapshot["state"]
            run.message = snapshot["message"]
            run.digest = snapshot["digest"]
            run.finished = self.clock()
            if run.state == "done":
                with contextlib.suppress(ContainerKernelError):
                    run.image_id = (await self.backend.inspect_image(entry.image)).id
            await asyncio.to_thread(self._save_run, entry.key, run)
        finally:
            self._active.pop(entry.key, None)

    # ------------------------------------------------------------------ records

    def _own_name(self, kind: str) -> str:
        return f"{kind}-{self._uid}.json"

    def _read_own(self, state: StateDir, kind: str) -> dict[str, Any]:
        for uid, data in _trusted_files(state, _RUNS_FILE if kind == "prepull" else _USE_FILE):
            if uid == self._uid:
                return dict(data)
        return {}

    def _write_own(self, state: StateDir, kind: str, data: dict[str, Any]) -> None:
        write_atomic(state.fd, self._own_name(kind), json.dumps(data).encode(), 0o644)

    def _save_run(self, key: str, run: Run) -> None:
        state = self._state()
        with state.write_lock:
            data = self._read_own(state, "prepull")
            runs = _dict(data.get("runs"))
            current = {e.key for e in self.entries}
            # Entries no longer scheduled are forgotten: the file holds the schedule's runs only.
            runs = {k: v for k, v in runs.items() if k in current}
            runs[key] = run.to_file()
            data["runs"] = runs
            try:
                self._write_own(state, "prepull", data)
            except OSError as e:
                self.log.warning(
                    "Pre-pulls: the run of %s cannot be recorded in %s (%s); a restart may "
                    "pull it again.",
                    key,
                    state.path,
                    e.strerror,
                )

    def _host_runs(self) -> dict[str, Run]:
        """Each entry's latest run by any server of this host. A run of this user's that this
        process does not follow was cut short by a restart: "interrupted"."""
        latest: dict[str, Run] = {}
        for uid, data in _trusted_files(self._state(), _RUNS_FILE):
            runs = data.get("runs")
            if not isinstance(runs, dict):
                continue
            for key, raw in runs.items():
                run = Run.from_file(raw, uid)
                if run is None:
                    continue
                if run.state == "pulling" and uid == self._uid and key not in self._active:
                    run.state = "interrupted"
                    run.message = run.message or "The server stopped before the pull ended."
                if key not in latest or run.started > latest[key].started:
                    latest[key] = run
        return latest

    def _last_prune(self) -> float | None:
        times = []
        for _uid, data in _trusted_files(self._state(), _RUNS_FILE):
            prune = data.get("prune")
            if isinstance(prune, dict) and isinstance(prune.get("ran"), (int, float)):
                times.append(float(prune["ran"]))
        return max(times) if times else None

    def record_use(self, ref: str, image_id: str) -> None:
        """Record that a kernel is starting on ``ref`` (image ``image_id``) now. Blocking: a
        worker thread (admission.py's). Never fails a launch: a record that cannot be written
        is a warning."""
        now = self.clock()
        try:
            ref = normalize_reference(ref)
        except BadReference:
            return
        if now - self._recorded.get(ref, float("-inf")) < _USE_THROTTLE:
            return
        self._recorded[ref] = now
        state = self._state()
        with state.write_lock:
            data = self._read_own(state, "image-use")
            images = _dict(data.get("images"))
            images[ref] = {"image_id": image_id, "used": now}
            if len(images) > _USE_KEEP:
                newest = sorted(images.items(), key=lambda kv: _used(kv[1]) or 0.0, reverse=True)
                images = dict(newest[:_USE_KEEP])
            try:
                self._write_own(state, "image-use", {"images": images})
            except OSError as e:
                self.log.warning(
                    "The use of %s cannot be recorded in %s (%s): pruning may think it unused.",
                    ref,
                    state.path,
                    e.strerror,
                )

    def _host_uses(self) -> tuple[dict[str, float], dict[str, float]]:
        """The last use of each reference and each image id, by any server of this host."""
        by_ref: dict[str, float] = {}
        by_id: dict[str, float] = {}
        for _uid, data in _trusted_files(self._state(), _USE_FILE):
            images = data.get("images")
            if not isinstance(images, dict):
                continue
            for ref, raw in images.items():
                used = _used(raw)
                if used is None:
                    continue
                by_ref[str(ref)] = max(used, by_ref.get(str(ref), used))
                image_id = raw.get("image_id") if isinstance(raw, dict) else None
                if isinstance(image_id, str) and image_id:
                    by_id[image_id] = max(used, by_id.get(image_id, used))
        return by_ref, by_id

    # ------------------------------------------------------------------ pruning

    async def prune_now(self) -> dict[str, Any]:
        """One pruning pass now (whether or not it is due); its report, also recorded."""
        return await asyncio.to_thread(self._prune_sync)

    def _prune_sync(self) -> dict[str, Any]:
        now = self.clock()
        state = self._state()
        report: dict[str, Any] = {"ran": now, "removed": [], "kept": [], "freed_bytes": 0}
        try:
            disk = self.backend.image_disk_use_sync()
        except ContainerKernelError as e:
            report["error"] = e.sentence
            self._save_prune(state, report, None)
            return report
        with state.write_lock:
            own = self._read_own(state, "prepull")
        seen = _dict(own.get("first_seen"))
        first_seen = {
            i.id: float(seen[i.id]) if isinstance(seen.get(i.id), (int, float)) else now
            for i in disk.images
        }
        by_ref, by_id = self._host_uses()
        listed = {normalize_reference(r) for r in self._listed()}
        scheduled = {e.image for e in self.entries}
        horizon = now - self.prune_after_days * 86400.0
        for image in disk.images:
            tags = [_normalized(t) for t in image.tags]
            if not tags or not all(self._managed(t, listed) for t in tags):
                continue  # not the extension's to manage: never looked at again
            last_used = max(
                [
                    first_seen[image.id],
                    by_id.get(image.id, 0.0),
                    *(by_ref.get(t, 0.0) for t in tags),
                ]
            )
            reason = _keep_reason(image, tags, scheduled, last_used, horizon)
            row = {
                "image": tags,
                "id": image.id,
                "size": image.size,
                "last_used": iso_time(last_used),
            }
            if reason:
                report["kept"].append({**row, "reason": reason})
                continue
            removed = self._remove(image)
            if removed:
                report["removed"].append(row)
                report["freed_bytes"] += image.unique_size
                self.log.info(
                    "Pruned %s (%s), unused since %s",
                    ", ".join(tags),
                    image.id,
                    iso_time(last_used),
                )
            else:
                reason = "The engine kept it: a container started on it meanwhile."
                report["kept"].append({**row, "reason": reason})
        self._save_prune(state, report, first_seen)
        return report

    def _managed(self, ref: str, listed: set[str]) -> bool:
        if image_allowed(self.policy, ref):
            return False  # refused by the allow-list: not an image this extension runs
        if ref in listed:
            return True
        forms = {ref, _fully_qualified(ref)}
        return any(fnmatch.fnmatchcase(f, p) for f in forms for p in self.prune_images)

    def _remove(self, image: ImageDiskUse) -> bool:
        """Untag each tag (never forced: the engine refuses while a container uses the image);
        whether the image is gone."""
        try:
            for tag in image.tags:
                self.backend.untag_sync(tag)
            self.backend.inspect_image_sync(image.id)
        except ImageMissing:
            return True
        except ContainerKernelError as e:
            self.log.warning("Pruning %s failed: %s", image.id, e.sentence)
        return False

    def _save_prune(
        self, state: StateDir, report: dict[str, Any], first_seen: dict[str, float] | None
    ) -> None:
        with state.write_lock:
            data = self._read_own(state, "prepull")
            data["prune"] = report
            if first_seen is not None:
                data["first_seen"] = first_seen
            try:
                self._write_own(state, "prepull", data)
            except OSError as e:
                self.log.warning("Pruning cannot be recorded in %s (%s).", state.path, e.strerror)

    # ------------------------------------------------------------------ what the API shows

    async def report(self, details: bool = True) -> dict[str, Any]:
        """The schedule with each entry's last and next run and its pull under way, and
        pruning's settings and last pass (GET /gpu-containers/prepull). ``details``: which
        images pruning removed and kept, and why (an administrator's); else their counts."""
        runs = await asyncio.to_thread(self._host_runs)
        rows = []
        for entry in self.entries:
            last = runs.get(entry.key)
            pull = self._active.get(entry.key)
            if pull is None and last is not None and last.uid == self._uid and last.pull_id:
                pull = self.pulls.get(last.pull_id)
            if entry.key in self._active:
                next_run = None  # under way
            else:
                try:
                    next_run = iso_time(max(await self._next_run(entry, last), self.clock()))
                except ContainerKernelError:  # no engine: whether it is on the host is unknown
                    next_run = None
            rows.append(
                {
                    "image": entry.image,
                    **entry.rule_json(),
                    "last_run": last.to_json() if last is not None else None,
                    "next_run": next_run,
                    "pull": pull.snapshot() if pull is not None else None,
                }
            )
        prune = await asyncio.to_thread(self._prune_record)
        last_prune = prune.get("ran") if isinstance(prune.get("ran"), (int, float)) else None
        pruning_on = self.prune_after_days > 0
        return {
            "schedule": rows,
            "running": self._task is not None,
            "check_interval": self.check_interval,
            "time_zone": time.strftime("%Z", time.localtime(self.clock())),
            "pruning": {
                "enabled": pruning_on,
                "after_days": self.prune_after_days,
                "interval_hours": self.prune_interval,
                "last_run": _prune_json(prune, details) if last_prune is not None else None,
                "next_run": iso_time(
                    max(self.clock(), last_prune + self.prune_interval * 3600.0)
                    if last_prune is not None
                    else self.clock()
                )
                if pruning_on
                else None,
            },
        }

    def _prune_record(self) -> dict[str, Any]:
        latest: dict[str, Any] = {}
        for _uid, data in _trusted_files(self._state(), _RUNS_FILE):
            prune = data.get("prune")
            ran = prune.get("ran") if isinstance(prune, dict) else None
            if isinstance(ran, (int, float)) and (not latest or ran > latest["ran"]):
                latest = prune
        return latest


def _dict(value: Any) -> dict[str, Any]:
    """``value`` when a record's JSON gave an object there, else an empty one."""
    return dict(value) if isinstance(value, dict) else {}


def _used(raw: Any) -> float | None:
    used = raw.get("used") if isinstance(raw, dict) else None
    return float(used) if isinstance(used, (int, float)) else None


def _normalized(tag: str) -> str:
    try:
        return normalize_reference(tag)
    except BadReference:
        return tag


def _fully_qualified(ref: str) -> str:
    try:
        parsed = parse_reference(ref)
    except (BadReference, ValueError):
        return ref
    return f"{parsed.registry}/{parsed.repository}:{parsed.pull_tag}"


def _keep_reason(
    image: ImageDiskUse, tags: list[str], scheduled: set[str], last_used: float, horizon: float
) -> str:
    """Why a managed image stays ("" when it may go)."""
    if set(tags) & scheduled:
        return "It is in the pre-pull schedule (PrePuller.schedule)."
    if not image.repo_digests:
        return "It was built on this host: it could not be pulled again."
    if image.containers != 0:
        if image.containers < 0:
            return "The engine did not say whether a container uses it."
        return f"{image.containers} container(s) use it."
    if last_used > horizon:
        return "It was used (or arrived) too recently."
    return ""


def _prune_json(prune: dict[str, Any], details: bool) -> dict[str, Any]:
    removed, kept = list(prune.get("removed") or []), list(prune.get("kept") or [])
    return {
        "ran": iso_time(float(prune["ran"])),
        "removed_count": len(removed),
        "kept_count": len(kept),
        "removed": removed if details else None,
        "kept": kept if details else None,
        "freed_bytes": int(prune.get("freed_bytes") or 0),
        "error": str(prune.get("error") or ""),
    }


def disk_totals(disk: ImagesDiskUse) -> dict[str, Any]:
    """Host-wide totals of images' disk use: the bytes all layers take (each shared layer
    once), the sum of images' sizes, and what removing every image no container uses would
    free at least (their layers no other image shares; ``docker system df`` counts it so)."""
    unused = [i for i in disk.images if i.containers == 0]
    return {
        "images": len(disk.images),
        "layers_bytes": disk.layers_size,
        "images_bytes": sum(i.size for i in disk.images),
        "unused_images": len(unused),
        "reclaimable_bytes": sum(i.unique_size for i in unused),
    }
