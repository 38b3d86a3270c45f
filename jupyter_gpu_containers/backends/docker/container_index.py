"""The engine's managed containers as the GPU ledger reads them, kept between reads from the
engine's own events: a booking costs one short read of the events since the previous one instead
of a list of every managed container, whose cost grows with the kernels on the host (182 ms at
1,000 of them, measured; benchmarks/scale.py).

Each read asks the engine for its events from just before the previous read up to now (a window:
event_window.py), so what it answers is what the engine holds at the moment of the read, as a list
would be: a container that another server created before it released the host's allocation lock
is seen. Whenever the index cannot vouch for itself it lists again: the first read, a read that
failed, and a window event_window.py cannot vouch for (as many events as the engine keeps; an
engine restarted since the last list; an engine that is not local, listed at every read).
Blocking: the engine's pool runs reads for the event loop.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ...base import labels as L
from ...base.records import ContainerRecord
from . import containers
from .client import EngineClient
from .event_window import EngineEvents

# Records carry only what the events give: an event's attributes are the container's labels plus
# these two, which no label of ours is named.
NOT_LABELS = ("image", "name")


def _managed(event: dict[str, Any]) -> bool:
    attributes = (event.get("Actor") or {}).get("Attributes") or {}
    return bool(attributes.get(L.MANAGED) == "true")


class ContainerIndex:
    """The containers carrying the managed label, by id. Records made from events have the
    status "created" and the event's time as their creation time: the ledger reads only their
    labels and creation time."""

    def __init__(self, client: EngineClient, events: EngineEvents) -> None:
        self._client = client
        self._events = events
        self._lock = threading.Lock()  # one read at a time: each applies a window in order
        self._records: dict[str, ContainerRecord] | None = None
        self._fence = 0.0  # the engine's time up to which the records are whole
        self._epoch: int | None = None  # the engine events' epoch when the records were listed
        self.lists = 0  # full lists taken (the tests and the benchmark read it)

    @property
    def watching(self) -> bool:
        """Whether the engine's events are watched (the index keeps records only then)."""
        return self._events.watching

    def read(self) -> list[ContainerRecord]:
        """The managed containers as the engine has them now (blocking)."""
        with self._lock:
            try:
                return self._read()
            except BaseException:
                self._records = None
                raise

    def _read(self) -> list[ContainerRecord]:
        now = time.time()
        if self._records is None or self._epoch is None:
            return self._list(now)
        events = self._events.window(self._fence, now, self._epoch)
        if events is None:
            return self._list(now)
        for event in events:
            if event.get("Type") == "container" and _managed(event):
                self._apply(event)
        self._fence = now
        return list(self._records.values())

    def _list(self, now: float) -> list[ContainerRecord]:
        # Noted before the list: an engine restarted during it shows as a later epoch.
        epoch = self._events.epoch()
        self.lists += 1
        rows = self._client.call(lambda c: containers.listed(c, labels={L.MANAGED: "true"}))
        # Kept only while the engine's events are watched; else every read lists.
        self._records = {r.id: r for r in rows} if epoch is not None else None
        self._epoch = epoch
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
