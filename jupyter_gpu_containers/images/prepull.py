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

Blocking work (files, the engine's disk report, removals) runs on worker threads. The schedule's
entries are prepull_schedule.py's, the record files prepull_records.py's, pruning pruning.py's;
this module runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import time
from collections.abc import Callable
from typing import Any

from traitlets import Bool, Float, List, Unicode, validate
from traitlets.config import LoggingConfigurable
from traitlets.traitlets import TraitError

from ..backends.backend import ContainerBackend
from ..base.errors import ContainerKernelError, ImageMissing
from ..base.records import iso_time
from ..base.safefiles import remove_own_files
from ..host.hoststate import StateDir
from ..policy.admin_policy import ContainerPolicy
from .prepull_records import HostRecords, Run
from .prepull_schedule import ScheduleEntry, parse_entry
from .pruning import Pruner, prune_json
from .pruning import disk_totals as disk_totals  # routes/images.py reads it here
from .pulls import Pull, PullManager

_CLAIM_FILE = re.compile(r"prepull-claim-[0-9a-f]{20}-[0-9]{1,12}")
# Seconds a claim file is kept by its owner: far longer than any claim counts.
_CLAIM_KEEP = 2 * 86400.0


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
        self._records = HostRecords(state, self.log)
        self._pruner = Pruner(
            backend=backend, policy=policy, listed=listed, records=self._records, log=self.log
        )

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
            last = await asyncio.to_thread(self._records.last_prune)
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
        run = Run(started=self.clock(), uid=self._records.uid)
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

    def _save_run(self, key: str, run: Run) -> None:
        self._records.save_run(key, run, {e.key for e in self.entries})

    def _host_runs(self) -> dict[str, Run]:
        return self._records.host_runs(self._active)

    def record_use(self, ref: str, image_id: str, *, tagged: bool = True) -> None:
        """Record that a kernel is starting on ``ref`` (image ``image_id``) now; ``tagged``:
        ``image_id`` is what ``ref`` names (False: a notebook's pin). Blocking: a worker thread
        (admission.py's). Never fails a launch: a record that cannot be written is a
        warning."""
        self._records.record_use(ref, image_id, self.clock(), tagged=tagged)

    def named_before(self, ref: str, image_id: str) -> bool:
        """Whether a kernel of this server started on ``image_id`` as the content ``ref``
        named then (now, or before the tag moved): the only local content a notebook may pin
        to by its id (admission.py). Blocking (a file)."""
        return self._records.named_before(ref, image_id)

    # ------------------------------------------------------------------ pruning

    async def prune_now(self) -> dict[str, Any]:
        """One pruning pass now (whether or not it is due); its report, also recorded."""
        return await asyncio.to_thread(self._prune_sync)

    def _prune_sync(self) -> dict[str, Any]:
        return self._pruner.prune_sync(
            now=self.clock(),
            state=self._state(),
            after_days=self.prune_after_days,
            patterns=list(self.prune_images),
            scheduled={e.image for e in self.entries},
        )

    # ------------------------------------------------------------------ what the API shows

    async def report(self, details: bool = True) -> dict[str, Any]:
        """The schedule with each entry's last and next run and its pull under way, and
        pruning's settings and last pass (GET /gpu-containers/prepull). ``details``: which
        images pruning removed and kept, and why (an administrator's); else their counts."""
        runs = await asyncio.to_thread(self._host_runs)
        rows = []
        for entry in self.entries:
            last = runs.get(entry.key)
            active = pull = self._active.get(entry.key)
            if pull is None and last is not None and last.uid == self._records.uid and last.pull_id:
                pull = self.pulls.get(last.pull_id)
            # Under way until the end of its own run is recorded: that record is written (in a
            # thread) before the pull leaves _active, and a report between the two read a
            # finished run with no next one.
            ended = (
                active is not None
                and last is not None
                and last.pull_id == active.id
                and last.finished is not None
            )
            if entry.key in self._active and not ended:
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
        prune = await asyncio.to_thread(self._records.prune_record)
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
                "last_run": prune_json(prune, details) if last_prune is not None else None,
                "next_run": iso_time(
                    max(self.clock(), last_prune + self.prune_interval * 3600.0)
                    if last_prune is not None
                    else self.clock()
                )
                if pruning_on
                else None,
            },
        }
