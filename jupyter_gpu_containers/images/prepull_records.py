"""What pre-pulls, launches and pruning record in the host state directory (hoststate.py), and
what every server of the host recorded, read back (prepull.py's docstring names the files):
scheduled runs, the last pruning pass and when each image was first seen, and each image's last
launch.

A record file is believed only when its owner is the uid its name gives, root, or the state
directory's owner (a kernel service). Blocking (files): worker threads.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any

from ..base.records import iso_time
from ..base.references import BadReference, normalize_reference
from ..base.safefiles import read_trusted, write_atomic
from ..host.hoststate import StateDir

_RUNS_FILE = re.compile(r"prepull-([0-9]{1,10})\.json")
_USE_FILE = re.compile(r"image-use-([0-9]{1,10})\.json")
# Launches of one image recorded at most this often by one process (seconds): a lab of 60
# starting at once writes the file once, not 60 times.
_USE_THROTTLE = 60.0
# References kept in one process's use record (the most recent): the file stays small.
_USE_KEEP = 500
# Earlier contents of one reference kept in its use record (a tag moved on this host: what it
# named before, which a notebook pinned to it may run again while the engine has it).
_EARLIER_KEEP = 8
# An image id as the engine gives it: the only form an earlier content is recorded in.
_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")
# Bytes read of one record file: 500 references with their image ids fit many times over.
_MAX_RECORD = 1 << 20


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
    users: quota.py and admin_actions_view.py believe the same); missing, malformed and foreign
    files are skipped."""
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


class HostRecords:
    """This server's record files in the host state directory (its user's), and the records of
    every server of the host."""

    def __init__(self, state: Callable[[], StateDir], log: logging.Logger) -> None:
        self._state = state
        self.log = log
        self.uid = os.geteuid()
        # (reference, image id) -> when this process last wrote that use
        self._recorded: dict[tuple[str, str], float] = {}

    # ------------------------------------------------------------------ this server's files

    def _own_name(self, kind: str) -> str:
        return f"{kind}-{self.uid}.json"

    def read_own(self, state: StateDir, kind: str) -> dict[str, Any]:
        for uid, data in _trusted_files(state, _RUNS_FILE if kind == "prepull" else _USE_FILE):
            if uid == self.uid:
                return dict(data)
        return {}

    def write_own(self, state: StateDir, kind: str, data: dict[str, Any]) -> None:
        write_atomic(state.fd, self._own_name(kind), json.dumps(data).encode(), 0o644)

    # ------------------------------------------------------------------ scheduled runs

    def save_run(self, key: str, run: Run, current: set[str]) -> None:
        """Record ``run`` of the entry ``key``; ``current``: the keys of the schedule's entries."""
        state = self._state()
        with state.write_lock:
            data = self.read_own(state, "prepull")
            runs = _dict(data.get("runs"))
            # Entries no longer scheduled are forgotten: the file holds the schedule's runs only.
            runs = {k: v for k, v in runs.items() if k in current}
            runs[key] = run.to_file()
            data["runs"] = runs
            try:
                self.write_own(state, "prepull", data)
            except OSError as e:
                self.log.warning(
                    "Pre-pulls: the run of %s cannot be recorded in %s (%s); a restart may "
                    "pull it again.",
                    key,
                    state.path,
                    e.strerror,
                )

    def host_runs(self, active: Container[str]) -> dict[str, Run]:
        """Each entry's latest run by any server of this host. A run of this user's that this
        process does not follow (not in ``active``) was cut short by a restart: "interrupted"."""
        latest: dict[str, Run] = {}
        for uid, data in _trusted_files(self._state(), _RUNS_FILE):
            runs = data.get("runs")
            if not isinstance(runs, dict):
                continue
            for key, raw in runs.items():
                run = Run.from_file(raw, uid)
                if run is None:
                    continue
                if run.state == "pulling" and uid == self.uid and key not in active:
                    run.state = "interrupted"
                    run.message = run.message or "The server stopped before the pull ended."
                if key not in latest or run.started > latest[key].started:
                    latest[key] = run
        return latest

    # ------------------------------------------------------------------ launches

    def record_use(self, ref: str, image_id: str, now: float, *, tagged: bool = True) -> None:
        """PrePuller.record_use, at ``now``. ``tagged``: ``image_id`` is what ``ref`` names now
        (not a notebook's pin): when it is other content than the record's, the record's goes
        to the reference's earlier contents (:meth:`named_before`)."""
        try:
            ref = normalize_reference(ref)
        except BadReference:
            return
        if now - self._recorded.get((ref, image_id), float("-inf")) < _USE_THROTTLE:
            return
        self._recorded[(ref, image_id)] = now
        state = self._state()
        with state.write_lock:
            data = self.read_own(state, "image-use")
            images = _dict(data.get("images"))
            before = _dict(images.get(ref))
            earlier = [i for i in _earlier(before) if i != image_id]
            last = before.get("image_id")
            if not tagged:  # a pin's content: the reference still names what it did
                image_id = last if isinstance(last, str) and last else image_id
            elif isinstance(last, str) and _IMAGE_ID.fullmatch(last) and last != image_id:
                earlier = [last, *[i for i in earlier if i != last]]
            images[ref] = {
                "image_id": image_id,
                "used": now,
                **({"earlier": earlier[:_EARLIER_KEEP]} if earlier else {}),
            }
            if len(images) > _USE_KEEP:
                newest = sorted(images.items(), key=lambda kv: _used(kv[1]) or 0.0, reverse=True)
                images = dict(newest[:_USE_KEEP])
            try:
                self.write_own(state, "image-use", {"images": images})
            except OSError as e:
                self.log.warning(
                    "The use of %s cannot be recorded in %s (%s): pruning may think it unused.",
                    ref,
                    state.path,
                    e.strerror,
                )

    def named_before(self, ref: str, image_id: str) -> bool:
        """Whether this server's own record says ``ref`` named the content ``image_id`` (a whole
        image id) when one of its kernels started on it: now or before the tag moved. Only
        this server's own file is believed (a kernel service's is the service's: no user
        writes it). Blocking (a file)."""
        if not _IMAGE_ID.fullmatch(image_id):
            return False
        try:
            ref = normalize_reference(ref)
        except BadReference:
            return False
        state = self._state()
        with state.write_lock:
            data = self.read_own(state, "image-use")
        found = _dict(_dict(data.get("images")).get(ref))
        return image_id == found.get("image_id") or image_id in _earlier(found)

    def host_uses(self) -> tuple[dict[str, float], dict[str, float]]:
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

    def first_seen(self, state: StateDir) -> dict[str, Any]:
        """When this server's pruner first saw each image id (as recorded; unchecked values)."""
        with state.write_lock:
            own = self.read_own(state, "prepull")
        return _dict(own.get("first_seen"))

    def save_prune(
        self, state: StateDir, report: dict[str, Any], first_seen: dict[str, float] | None
    ) -> None:
        with state.write_lock:
            data = self.read_own(state, "prepull")
            data["prune"] = report
            if first_seen is not None:
                data["first_seen"] = first_seen
            try:
                self.write_own(state, "prepull", data)
            except OSError as e:
                self.log.warning("Pruning cannot be recorded in %s (%s).", state.path, e.strerror)

    def last_prune(self) -> float | None:
        times = []
        for _uid, data in _trusted_files(self._state(), _RUNS_FILE):
            prune = data.get("prune")
            if isinstance(prune, dict) and isinstance(prune.get("ran"), (int, float)):
                times.append(float(prune["ran"]))
        return max(times) if times else None

    def prune_record(self) -> dict[str, Any]:
        latest: dict[str, Any] = {}
        for _uid, data in _trusted_files(self._state(), _RUNS_FILE):
            prune = data.get("prune")
            ran = prune.get("ran") if isinstance(prune, dict) else None
            if isinstance(ran, (int, float)) and (not latest or ran > latest["ran"]):
                latest = prune
        return latest


def _earlier(record: dict[str, Any]) -> list[str]:
    """A use record's earlier contents of its reference (image ids; anything else dropped)."""
    earlier = record.get("earlier")
    if not isinstance(earlier, list):
        return []
    return [i for i in earlier if isinstance(i, str) and _IMAGE_ID.fullmatch(i)]


def _dict(value: Any) -> dict[str, Any]:
    """``value`` when a record's JSON gave an object there, else an empty one."""
    return dict(value) if isinstance(value, dict) else {}


def _used(raw: Any) -> float | None:
    used = raw.get("used") if isinstance(raw, dict) else None
    return float(used) if isinstance(used, (int, float)) else None
