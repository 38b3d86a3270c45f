"""Images in the user's Podman storage: the tagged images, each inspected once per image id; one
image inspected; Podman's image events watched; a tag removed; the images' disk use. Blocking:
worker threads (the engine runs them on its pool for the event loop).

Podman names a local image ``localhost/<name>`` and a Docker Hub one ``docker.io/library/<name>``;
both are shown and kept as Docker names them (``<name>``), so that a kernel spec, a notebook's
kernel name and a listed image mean the same image on either engine. Podman resolves such a short
name against its local storage first."""

from __future__ import annotations

import dataclasses
import subprocess
import threading
from collections.abc import Callable

from ...base.errors import ImageMissing
from ...base.records import ImageDiskUse, ImageRecord, ImagesDiskUse
from ..docker_formats import as_image_id as image_id
from .cli import PodmanCLI, PodmanFailed, end_process
from .containers import image_missing

_PREFIXES = ("localhost/", "docker.io/library/", "docker.io/")


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
                record = cached or self.inspect_sync(found)
            except ImageMissing:
                continue  # removed between list and inspect
            with self._inspected_lock:
                self._inspected[record.id] = record
            records.append(dataclasses.replace(record, tags=tags))
        live = {image_id(summary.get("Id")) for summary in summaries}
        with self._inspected_lock:
            for gone in set(self._inspected) - live:
                del self._inspected[gone]
        return records

    def inspect_sync(self, ref: str) -> ImageRecord:
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
            repo_digests=tuple(
                docker_name(d)
                for d in (data.get("RepoDigests") or ())
                if not d.startswith("localhost/")
            ),
        )

    def watch(self, on_change: Callable[[], None], stop: threading.Event) -> None:
        """Engine.watch_images: call ``on_change`` on each image event until ``stop``."""
        while not stop.is_set():
            process = None
            try:
                process = self._cli.popen(["events", "--format", "json", "--filter", "type=image"])
                with self._watch_lock:
                    self._watchers.add(process)
                if stop.is_set():
                    break
                on_change()  # changes may have been missed while (re)starting
                assert process.stdout is not None
                for _line in process.stdout:
                    if stop.is_set():
                        break
                    on_change()
                stop.wait(2.0)  # the events command ended by itself: start it again, later
            except Exception:
                # Errors reach users through the calls they make, not from this watcher.
                stop.wait(2.0)
            finally:
                if process is not None:
                    with self._watch_lock:
                        self._watchers.discard(process)
                    end_process(process)

    def wake_watchers(self) -> None:
        """End the event processes watch() threads read (from any thread)."""
        with self._watch_lock:
            processes = list(self._watchers)
        for process in processes:
            end_process(process)

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
