"""The engine's managed containers as the GPU ledger reads them, kept between reads from the
engine's own events: a booking costs one short read of the events since the previous one instead
of a list of every managed container, whose cost grows with the kernels on the host (182 ms at
1,000 of them, measured; benchmarks/scale.py).

Each read asks the engine for the container events from just before the previous read up to now
(``until`` makes that a bounded call that returns at once), so what it answers is what the engine
holds at the moment of the read, as a list would be: a container that another server created
before it released the host's allocation lock is seen. Whenever the index cannot vouch for itself
it lists again: the first read, a read that failed, a window with as many events as the engine
keeps in memory (older ones may have been dropped), and an engine that restarted since the last
read (its events from before went with it). That last one is told by a stream of the engine's
container events that a thread holds open: the engine closes it as it stops, long before a new
engine answers. An engine reached other than by its unix socket is listed at every read: the
event window is in the engine's clock, and only a local engine's is this host's. Blocking: the
engine's pool runs reads for the event loop.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from ...base import labels as L
from ...base.records import ContainerRecord
from . import containers
from .client import EngineClient

# Seconds of events read again at each read: an event stamped just before a read can be published
# just after it. Events are applied in order and each is idempotent, so reading one twice is safe.
REPLAY = 2.0

# The events a Docker engine keeps for readers that come later, of every kind (moby's eventsLimit):
# a window holding as many may have lost its oldest, and is read as a list instead.
RING = 256

# Records carry only what the events give: an event's attributes are the container's labels plus
# these two, which no label of ours is named.
NOT_LABELS = ("image", "name")


def _managed(event: dict[str, Any]) -> bool:
    attributes = (event.get("Actor") or {}).get("Attributes") or {}
    return bool(attributes.get(L.MANAGED) == "true")


def _stamp(t: float) -> str:
    """A time as the engine's API reads one: seconds with a fraction, never an exponent."""
    return f"{t:.9f}"


class ContainerIndex:
    """The containers carrying the managed label, by id. Records made from events have the
    status "created" and the event's time as their creation time: the ledger reads only their
    labels and creation time."""

    def __init__(self, client: EngineClient, *, local: bool) -> None:
        self._client = client
        self._local = local
        self._lock = threading.Lock()  # one read at a time: each applies a window in order
        self._records: dict[str, ContainerRecord] | None = None
        self._fence = 0.0  # the engine's time up to which the records are whole
        self.lists = 0  # full lists taken (the tests and the benchmark read it)
        self._watch_lock = threading.Lock()
        self._watched = threading.Event()  # the restart watcher's stream is open
        self._restarted = threading.Event()  # it closed since the last list
        self._watcher: threading.Thread | None = None
        self._stream: Any = None
        self._closed = threading.Event()

    @property
    def watching(self) -> bool:
        """Whether the restart watcher's stream is open (the index keeps records only then)."""
        return self._watched.is_set()

    def read(self) -> list[ContainerRecord]:
        """The managed containers as the engine has them now (blocking)."""
        with self._lock:
            try:
                return self._read()
            except BaseException:
                self._records = None
                raise

    def _read(self) -> list[ContainerRecord]:
        self._watch()
        now = time.time()
        if self._records is None or self._restarted.is_set() or not self._watched.is_set():
            return self._list(now)
        # Every event of the window, not only ours: the engine drops its oldest events of any
        # kind, and only a window holding fewer than it keeps is known to be whole.
        events = self._client.call(
            lambda c: list(
                c.events(since=_stamp(self._fence - REPLAY), until=_stamp(now), decode=True)
            )
        )
        if len(events) >= RING or self._restarted.is_set():
            return self._list(now)
        for event in events:
            if event.get("Type") == "container" and _managed(event):
                self._apply(event)
        self._fence = now
        return list(self._records.values())

    def _list(self, now: float) -> list[ContainerRecord]:
        self._restarted.clear()
        self.lists += 1
        rows = self._client.call(lambda c: containers.listed(c, labels={L.MANAGED: "true"}))
        # Kept only while the watcher vouches for the engine; else every read lists.
        self._records = {r.id: r for r in rows} if self._watched.is_set() else None
        self._fence = now
        return rows

    def _apply(self, event: dict[str, Any]) -> None:
        assert self._records is not None
        actor = event.get("Actor") or {}
        container_id = str(actor.get("ID") or event.get("id") or "")
        action = str(event.get("Action") or event.get("status") or "")
        if not container_id:
            return
        if action == "create":
            if container_id in self._records:
                return  # listed already, with its engine-given details
            attributes = dict(actor.get("Attributes") or {})
            self._records[container_id] = ContainerRecord(
                id=container_id,
                name=str(attributes.get("name", "")),
                image=str(attributes.get("image", "")),
                labels={k: str(v) for k, v in attributes.items() if k not in NOT_LABELS},
                status="created",
                created=float(event.get("time") or 0),
            )
        elif action == "destroy":
            self._records.pop(container_id, None)

    # ------------------------------------------------------------------ the restart watcher

    def _watch(self) -> None:
        """Start the watcher on the first read, and give it a moment to open its stream."""
        with self._watch_lock:
            if self._closed.is_set() or self._watcher is not None or not self._local:
                return
            self._watcher = threading.Thread(
                target=self._watch_forever, name="gpu-containers-container-index", daemon=True
            )
            self._watcher.start()
        self._watched.wait(1.0)

    def _watch_forever(self) -> None:
        while not self._closed.is_set():
            stream = None
            try:
                stream = self._client.call(
                    lambda c: c.events(
                        decode=True,
                        filters={"type": "container", "label": [f"{L.MANAGED}=true"]},
                    )
                )
                with self._watch_lock:
                    if self._closed.is_set():
                        break
                    self._stream = stream
                self._watched.set()
                for _event in stream:
                    if self._closed.is_set():
                        break
            except Exception:
                pass  # an engine away: the reads say so; this waits and tries again
            finally:
                self._watched.clear()
                self._restarted.set()
                with self._watch_lock:
                    self._stream = None
                if stream is not None:
                    with contextlib.suppress(Exception):
                        stream.close()
            self._closed.wait(1.0)

    def close(self) -> None:
        """Stop the watcher (from any thread): its stream is closed under it."""
        with self._watch_lock:
            self._closed.set()
            stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        self._watched.clear()
