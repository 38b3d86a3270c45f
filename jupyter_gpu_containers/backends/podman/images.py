"""Images in the user's Podman storage: the tagged images, each inspected once per image id; one
image inspected (a reference's answer kept while Podman's image events are watched and none
changed it); Podman's image events watched; a tag removed; the images' disk use. Blocking: worker
threads (the engine runs them on its pool for the event loop).

Podman names a local image ``localhost/<name>`` and a Docker Hub one ``docker.io/library/<name>``;
both are shown and kept as Docker names them (``<name>``), so that a kernel spec, a notebook's
kernel name and a listed image mean the same image on either engine. Podman resolves such a short
name against its local storage first."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import threading
import time
from collections.abc import Callable

from ...base.errors import ImageMissing
from ...base.records import ImageDiskUse, ImageRecord, ImagesDiskUse
from ..docker_formats import as_image_id as image_id
from .cli import PodmanCLI, PodmanFailed, end_process
from .containers import image_missing

_PREFIXES = ("localhost/", "docker.io/library/", "docker.io/")

# How long a reference's inspected record is kept at most, events or not: a tag moved by a tool
# that shares Podman's storage but writes no Podman events (buildah, skopeo) is seen that late.
KEPT_FOR = 60.0
# How many references' records are kept (the images kernels started from lately): each is
# inspected again after every "pull" event.
KEPT_AT_MOST = 8


def _repo_digests(listed: list[str] | None) -> tuple[str, ...]:
    """An image's repository digests as Docker names them (local ones, ``localhost/``, are no
    registry's)."""
    return tuple(docker_name(d) for d in listed or () if d and not d.startswith("localhost/"))


def docker_name(name: str) -> str:
    """``name`` as Docker shows it: without Podman's ``localhost/`` or Docker Hub's prefix."""
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


class Images:
    """The user's Podman images, with the inspected records kept per image id and the event
    processes that watchers wait on."""

    def __init__(self, cli: PodmanCLI) -> None:
        self._cli = cli
        # Image id -> inspected record: an id names immutable content, so one inspect per image.
        self._inspected: dict[str, ImageRecord] = {}
        self._inspected_lock = threading.Lock()
        self._watchers: set[subprocess.Popen[bytes]] = set()
        self._watch_lock = threading.Lock()
        # Reference -> its inspected record, trusted only while an events process watches and
        # nothing changed since it was read (every kernel start inspects its image: a podman
        # command, tens of milliseconds). Every image event, and every start and end of a
        # watcher, moves the generation on and empties it.
        self._by_ref: dict[str, tuple[float, ImageRecord]] = {}
        self._generation = 0

    def list_sync(self) -> list[ImageRecord]:
        """Every tagged image in the user's storage, inspected."""
        summaries = self._cli.json(["images", "--format", "json"], what="list its images") or []
        records = []
        for summary in summaries:
            tags = tuple(docker_name(n) for n in (summary.get("Names") or []) if n)
            if not tags:
                continue
            found = image_id(summary.get("Id"))
            with self._inspected_lock:
                cached = self._inspected.get(found)
            try:
                record = cached or self._inspect(found)
            except ImageMissing:
                continue  # removed between list and inspect
            with self._inspected_lock:
                self._inspected[record.id] = record
            # Re-read with the tags, as Docker's listing does (docker/images.py says why).
            digests = _repo_digests(summary.get("RepoDigests"))
            records.append(dataclasses.replace(record, tags=tags, repo_digests=digests))
        live = {image_id(summary.get("Id")) for summary in summaries}
        with self._inspected_lock:
            for gone in set(self._inspected) - live:
                del self._inspected[gone]
        return records

    def inspect_sync(self, ref: str) -> ImageRecord:
        now = time.monotonic()
        with self._watch_lock:
            generation = self._generation
            known = self._by_ref.get(ref) if self._watchers else None
        if known is not None and now - known[0] < KEPT_FOR:
            return known[1]
        record = self._inspect(ref)
        with self._watch_lock:
            if self._watchers and self._generation == generation:
                self._by_ref[ref] = (now, record)
                while len(self._by_ref) > KEPT_AT_MOST:
                    oldest = min(self._by_ref, key=lambda r: self._by_ref[r][0])
                    del self._by_ref[oldest]
        return record

    def _changed(self) -> None:
        """An image event, or a watcher that started or ended: no kept answer holds."""
        with self._watch_lock:
            self._generation += 1
            self._by_ref.clear()

    def _unchanged_by(self, line: bytes) -> bool:
        """Whether the image event ``line`` left every kept reference's image as it was, each
        inspected again (then the images are as they were listed). Podman 4 tells a "pull" of
        an image it has whenever it creates a container from it, every kernel start included;
        a pull may also move a tag. Any other event, or a pull of a reference not kept, changed
        something: nothing kept holds."""
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        with self._watch_lock:
            self._generation += 1
            generation, kept, self._by_ref = self._generation, self._by_ref, {}
        if not isinstance(event, dict) or event.get("Status") != "pull":
            return False
        if event.get("Name") not in kept:
            return False
        fresh = {}
        for ref, (_, record) in kept.items():
            read_at = time.monotonic()
            try:
                again = self._inspect(ref)
            except Exception:  # gone since (an image missing): that is a change
                return False
            if again != record:
                return False
            fresh[ref] = (read_at, again)
        with self._watch_lock:
            if self._watchers and self._generation == generation:
                self._by_ref.update(fresh)
        return True

    def _inspect(self, ref: str) -> ImageRecord:
        target = ref.removeprefix("sha256:") if ref.startswith("sha256:") else ref
        try:
            found = self._cli.json(["image", "inspect", target], what=f"inspect {ref}")
        except PodmanFailed as e:
            if e.image_not_known or "no such" in e.said.lower():
                raise image_missing(ref, then_start=True) from e
            raise
        if not found:
            raise image_missing(ref, then_start=True)
        data = found[0]
        config = data.get("Config") or {}
        env = dict(item.split("=", 1) for item in (config.get("Env") or []) if "=" in item)
        return ImageRecord(
            id=image_id(data.get("Id")),
            tags=tuple(docker_name(t) for t in (data.get("RepoTags") or ())),
            labels=dict(config.get("Labels") or data.get("Labels") or {}),
            env=env,
            entrypoint=tuple(config.get("Entrypoint") or ()),
            user=config.get("User") or "",
            created=str(data.get("Created") or ""),
            size=int(data.get("Size") or 0),
            repo_digests=_repo_digests(data.get("RepoDigests")),
        )

    def watch(self, on_change: Callable[[], None], stop: threading.Event) -> None:
        """Engine.watch_images: call ``on_change`` on each image event until ``stop``."""
        while not stop.is_set():
            process = None
            try:
                # From a second before it starts: an event between this call and the moment
                # podman listens is told all the same (kept answers rely on it).
                since = str(int(time.time()) - 1)
                process = self._cli.popen(
                    ["events", "--format", "json", "--filter", "type=image", "--since", since]
                )
                with self._watch_lock:
                    self._watchers.add(process)
                self._changed()
                if stop.is_set():
                    break
                on_change()  # changes may have been missed while (re)starting
                assert process.stdout is not None
                for line in process.stdout:
                    if stop.is_set():
                        break
                    if not self._unchanged_by(line):
                        on_change()
                stop.wait(2.0)  # the events command ended by itself: start it again, later
            except Exception:
                # Errors reach users through the calls they make, not from this watcher.
                stop.wait(2.0)
            finally:
                if process is not None:
                    with self._watch_lock:
                        self._watchers.discard(process)
                    self._changed()
                    end_process(process)

    def wake_watchers(self) -> None:
        """End the event processes watch() threads read (from any thread)."""
        with self._watch_lock:
            processes = list(self._watchers)
        for process in processes:
            end_process(process)

    def tag_sync(self, image_id: str, ref: str) -> None:
        """Engine.tag_sync."""
        self._cli.run(["tag", image_id, ref], what=f"name the image {ref}")

    def untag_sync(self, ref: str) -> None:
        """Remove one tag (and the image, when it was its last tag and nothing uses it)."""
        try:
            self._cli.run(["rmi", ref], what=f"remove the tag {ref}")
        except PodmanFailed as e:
            low = e.said.lower()
            if not (e.image_not_known or "in use" in low or "used by" in low):
                raise

    def disk_use_sync(self) -> ImagesDiskUse:
        """Engine.image_disk_use_sync: each image's size, shared size and containers, as
        ``podman images`` reports them; the layers' total counts a shared size once."""
        rows = self._cli.json(["images", "--all", "--format", "json"], what="list its images") or []
        images = tuple(
            ImageDiskUse(
                id=image_id(row.get("Id")),
                tags=tuple(docker_name(n) for n in (row.get("Names") or []) if n),
                repo_digests=tuple(
                    docker_name(d)
                    for d in (row.get("RepoDigests") or [])
                    if d and not d.startswith("localhost/")
                ),
                size=int(row.get("Size") or 0),
                shared_size=int(row.get("SharedSize", -1)),
                containers=int(row.get("Containers", -1)),
            )
            for row in rows
        )
        unique = sum(max(0, i.size - max(0, i.shared_size)) for i in images)
        shared = max((max(0, i.shared_size) for i in images), default=0)
        return ImagesDiskUse(images, unique + shared)
