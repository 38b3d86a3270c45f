"""Every long-lived event stream a server serves (a kernel's log, a pull's progress), counted per
user in one place: on a shared server (the kernel service) each holds a connection, a
coroutine, and for a log a reading thread and an engine connection of its own, so one user's
pages may have at most ``GPUContainersKernelManager.max_event_streams_per_user`` open, whatever
their kind. A user's own server (uid None) counts none: it is one user's.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from ..base.errors import ContainerKernelError


class TooManyStreams(ContainerKernelError):
    status = 429
    reason_phrase = "Too many requests"


class EventStreams:
    """The streams open now, per uid (on the event loop only)."""

    def __init__(self) -> None:
        self._open: Counter[int] = Counter()

    @contextlib.contextmanager
    def held(self, uid: int | None, limit: int) -> Iterator[None]:
        """Hold one of ``uid``'s places while the stream is open; 429 with a sentence when
        they have ``limit`` open already (0: no bound)."""
        if uid is None:
            yield
            return
        if limit > 0 and self._open[uid] >= limit:
            raise TooManyStreams(
                f"This stream was refused: your pages have {self._open[uid]} logs and progress "
                "streams open on this server, the most one user may. Close the kernel logs and "
                "progress views you no longer watch.",
                setting="GPUContainersKernelManager.max_event_streams_per_user",
            )
        self._open[uid] += 1
        try:
            yield
        finally:
            self._open[uid] -= 1
            if self._open[uid] <= 0:
                del self._open[uid]

    def open_for(self, uid: int) -> int:
        return self._open[uid]
