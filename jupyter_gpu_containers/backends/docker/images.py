"""Images on the Docker engine: the tagged images, each inspected once per image id; one image
inspected; the engine's image events watched; a tag removed; the images' disk use, kept while the
engine reports no change that could alter it. Blocking: worker threads (Engine runs them on its
pool for the event loop)."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import docker
import docker.errors

from ...base.errors import ContainerKernelError, ImageMissing
from ...base.records import ImageDiskUse, ImageRecord, ImagesDiskUse
from .client import EngineClient
from .event_window import EngineEvents
from .sentences import image_missing, short


class Images:
    """The engine's images, with the inspected records kept per image id and the event streams
    that watchers wait on."""

    def __init__(self, client: EngineClient, events: EngineEvents) -> None:
        self._client = client
        self._events = events
        # Image id -> inspected record. An id names immutable content, so one inspect per image
        # is enough however often the list is refreshed; only its names are re-read: its tags,
        # and its repository digests (a pull records one after the image and its tag exist: a
        # record inspected in between would lack it for good).
        self._inspected: dict[str, ImageRecord] = {}
        # The image watcher's thread and the engine's pool list images at the same time.
        self._inspected_lock = threading.Lock()
        # The event streams image watchers wait on (wake_watchers closes them).
        self._watch_streams: set[Any] = set()
        self._watch_lock = threading.Lock()
        # The last disk report, while the engine's events vouch for it; one report at a time
        # (callers at the same moment share it).
        self._disk_kept: _KeptDiskUse | None = None
        self._disk_lock = threading.Lock()
        self.disk_reports = 0  # reports taken (the tests and the benchmark read it)

    def list_sync(self) -> list[ImageRecord]:
        """Every tagged local image, inspected."""
        summaries = self._client.call(lambda c: c.images())
        records = []
        for summary in summaries:
            tags = tuple(t for t in (summary.get("RepoTags") or []) if t and t != "<none>:<none>")
            if not tags:
                continue
            with self._inspected_lock:
                cached = self._inspected.get(summary["Id"])
            try:
                record = cached or self.inspect_sync(summary["Id"])
            except ImageMissing:
                continue  # removed between list and inspect
            with self._inspected_lock:
                self._inspected[record.id] = record
            digests = tuple(
                d for d in (summary.get("RepoDigests") or []) if d and "<none>" not in d
            )
            records.append(dataclasses.replace(record, tags=tags, repo_digests=digests))
        live = {summary["Id"] for summary in summaries}
        with self._inspected_lock:
            for gone in set(self._inspected) - live:
                del self._inspected[gone]
        return records

    def inspect_sync(self, ref: str) -> ImageRecord:
        try:
            data = self._client.call(lambda c: c.inspect_image(ref))
        except docker.errors.ImageNotFound as e:
            raise image_missing(ref, then_start=True) from e
        config = data.get("Config") or {}
        env = dict(item.split("=", 1) for item in (config.get("Env") or []) if "=" in item)
        return ImageRecord(
            id=data["Id"],
            tags=tuple(data.get("RepoTags") or ()),
            labels=dict(config.get("Labels") or {}),
            env=env,
            entrypoint=tuple(config.get("Entrypoint") or ()),
            user=config.get("User") or "",
            created=data.get("Created", ""),
            size=int(data.get("Size") or 0),
            repo_digests=tuple(data.get("RepoDigests") or ()),
        )

    def watch(self, on_change: Callable[[], None], stop: threading.Event) -> None:
        """Engine.watch_images: call ``on_change`` on each image event until ``stop``."""
        while not stop.is_set():
            stream = None
            try:
                stream = self._client.call(
                    lambda c: c.events(decode=True, filters={"type": "image"})
                )
                with self._watch_lock:
                    self._watch_streams.add(stream)
                if stop.is_set():
                    break
                on_change()  # we may have missed changes while (re)connecting
                for _event in stream:
                    if stop.is_set():
                        break
                    on_change()
            except Exception:
                # An engine that went away: wait, then try again. Errors surface to users through
                # the calls they make, not from this background watcher.
                stop.wait(2.0)
            finally:
                if stream is not None:
                    with self._watch_lock:
                        self._watch_streams.discard(stream)
                    with contextlib.suppress(Exception):
                        stream.close()

    def wake_watchers(self) -> None:
        """Close the event streams watch() threads wait on (from any thread)."""
        with self._watch_lock:
            streams = list(self._watch_streams)
        for stream in streams:
            with contextlib.suppress(Exception):
                stream.close()

    def tag_sync(self, image_id: str, ref: str) -> None:
        """Engine.tag_sync."""
        repository, _, tag = ref.rpartition(":")
        self._client.call(lambda c: c.tag(image_id, repository, tag, force=True))

    def untag_sync(self, ref: str) -> None:
        """Remove one tag (and the image, when it was its last tag and nothing uses it)."""

        def untag(c: docker.APIClient) -> None:
            try:
                c.remove_image(ref, noprune=False)
            except docker.errors.APIError as e:
                if e.status_code not in (404, 409):
                    raise

        self._client.call(untag)

    def disk_use_sync(self) -> ImagesDiskUse:
        """Engine.image_disk_use_sync (``docker system df``, the images only), kept while the
        engine's events show no change that could alter it.

        The report has the engine size what it holds: before API 1.42 (Docker 23) it cannot
        leave containers out, and sizes every container's writable layer on disk (the catalog
        took 215 ms at 1,000 kernels, benchmarks section 12). What the report says of images
        (sizes, shared sizes, the layers' total, the containers on each) changes only when an
        image comes, goes or is tagged, or a container is created, removed or committed, and
        the engine logs each as an event: the window of its events since the report was taken
        (event_window.py) decides whether to take it again."""
        with self._disk_lock:
            try:
                return self._disk_use()
            except BaseException:
                self._disk_kept = None
                raise

    def _disk_use(self) -> ImagesDiskUse:
        now = time.time()
        kept = self._disk_kept
        if kept is not None:
            events = self._events.window(kept.fence, now, kept.epoch)
            if events is not None and not any(_changes_disk_use(e) for e in events):
                self._disk_kept = dataclasses.replace(kept, fence=now)
                return kept.use
        # Noted before the report: an engine restarted while it is taken shows as a later epoch.
        epoch = self._events.epoch()
        self.disk_reports += 1
        use = self._take_disk_use()
        self._disk_kept = (
            _KeptDiskUse(use=use, fence=now, epoch=epoch) if epoch is not None else None
        )
        return use

    def _take_disk_use(self) -> ImagesDiskUse:
        """The engine's disk report, asked for now."""

        def df(c: docker.APIClient) -> dict[str, Any]:
            response = c.get(
                f"{c.base_url}/v{c.api_version}/system/df",
                params={"type": "image"},
                timeout=self._client.settings.api_timeout,
            )
            if response.status_code != 200:
                raise ContainerKernelError(
                    f"The Docker engine did not report its disk use "
                    f"({response.status_code}: {short(response.text)}).",
                    status=502,
                )
            found: dict[str, Any] = response.json()
            return found

        data = self._client.call(df)
        images = tuple(
            ImageDiskUse(
                id=str(item.get("Id", "")),
                tags=tuple(t for t in (item.get("RepoTags") or []) if t and t != "<none>:<none>"),
                repo_digests=tuple(
                    d for d in (item.get("RepoDigests") or []) if d and d != "<none>@<none>"
                ),
                size=int(item.get("Size") or 0),
                shared_size=int(item.get("SharedSize", -1)),
                containers=int(item.get("Containers", -1)),
            )
            for item in data.get("Images") or []
        )
        return ImagesDiskUse(images, int(data.get("LayersSize") or 0))


# What changes the disk report: every image event (pull, tag, untag, delete, import, load), and
# a container created or removed (its image's count of containers) or committed (a new image).
_CONTAINER_ACTIONS_CHANGING_DISK_USE = frozenset(("create", "destroy", "commit"))


@dataclasses.dataclass(frozen=True)
class _KeptDiskUse:
    use: ImagesDiskUse
    fence: float  # the engine's time up to which no event changed it
    epoch: int  # the engine events' epoch when it was taken


def _changes_disk_use(event: dict[str, Any]) -> bool:
    kind = event.get("Type")
    action = str(event.get("Action") or event.get("status") or "")
    return kind == "image" or (
        kind == "container" and action.split(":", 1)[0] in _CONTAINER_ACTIONS_CHANGING_DISK_USE
    )
