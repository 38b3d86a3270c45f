"""The Docker engine's past events over a window of time, read only where the window can be
vouched for whole: what the readers that keep something between reads (the GPU ledger's container
index, the images' disk report) ask before they trust what they kept.

A window is one bounded call: the engine's events from a time up to now (``until`` makes the call
return at once with the events the engine kept). It is whole unless it holds as many events as
the engine keeps in memory (older ones may have been dropped), or the engine restarted since the
reader took what it keeps (its events from before went with it). The restart is told by a stream
of the engine's container events that a thread holds open: the engine closes it as it stops, long
before a new engine answers, and each stream opened starts a new epoch. An engine reached other
than by its unix socket gives no windows: they are in the engine's clock, and only a local
engine's is this host's. Blocking: the engine's pool runs the readers.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from ...base import labels as L
from .client import EngineClient

# Seconds of events read again at each window: an event stamped just before a read can be
# published just after it. Readers apply events in order, and reading one twice is safe.
REPLAY = 2.0

# The events a Docker engine keeps for readers that come later, of every kind (moby's eventsLimit):
# a window holding as many may have lost its oldest.
RING = 256


def stamp(t: float) -> str:
    """A time as the engine's API reads one: seconds with a fraction, never an exponent."""
    return f"{t:.9f}"


class EngineEvents:
    """Windows of the engine's past events, and the watcher thread whose stream tells an engine
    restart."""

    def __init__(self, client: EngineClient, *, local: bool) -> None:
        self._client = client
        self._local = local
        self._lock = threading.Lock()
        self._watched = threading.Event()  # the watcher's stream is open
        self._epoch = 0  # streams opened so far; the current one's number while it is open
        self._watcher: threading.Thread | None = None
        self._stream: Any = None
        self._closed = threading.Event()

    @property
    def watching(self) -> bool:
        """Whether the watcher's stream is open (windows can be vouched for only then)."""
        return self._watched.is_set()

    def epoch(self) -> int | None:
        """The epoch a reader notes before it takes what it keeps: the current stream's number
        while one is open, else None (no window can be vouched for). The first call starts the
        watcher and gives it a moment to open its stream."""
        with self._lock:
            start = not self._closed.is_set() and self._watcher is None and self._local
            if start:
                self._watcher = threading.Thread(
                    target=self._watch_forever, name="gpu-containers-engine-events", daemon=True
                )
                self._watcher.start()
        if start:
            self._watched.wait(1.0)
        with self._lock:
            return self._epoch if self._watched.is_set() else None

    def window(self, since: float, until: float, epoch: int) -> list[dict[str, Any]] | None:
        """Every event the engine stamped from ``REPLAY`` seconds before ``since`` up to ``until``
        (times of this host's clock, which is the engine's), of every kind, in order; None when
        the window cannot be vouched for whole: the engine restarted since ``epoch`` was noted
        (or its stream is not open now), or the window holds as many events as the engine keeps
        (the engine drops its oldest of any kind, so only a window with fewer is known whole)."""
        if not self._current(epoch):
            return None
        events: list[dict[str, Any]] = self._client.call(
            lambda c: list(c.events(since=stamp(since - REPLAY), until=stamp(until), decode=True))
        )
        if len(events) >= RING or not self._current(epoch):
            return None
        return events

    def _current(self, epoch: int) -> bool:
        with self._lock:
            return self._watched.is_set() and self._epoch == epoch

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
                with self._lock:
                    if self._closed.is_set():
                        break
                    self._stream = stream
                    self._epoch += 1
                    self._watched.set()
                for _event in stream:
                    if self._closed.is_set():
                        break
            except Exception:
                pass  # an engine away: the readers' calls say so; this waits and tries again
            finally:
                with self._lock:
                    self._watched.clear()
                    self._stream = None
                if stream is not None:
                    with contextlib.suppress(Exception):
                        stream.close()
            self._closed.wait(1.0)

    def close(self) -> None:
        """Stop the watcher (from any thread): its stream is closed under it."""
        with self._lock:
            self._closed.set()
            stream = self._stream
            self._watched.clear()
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
