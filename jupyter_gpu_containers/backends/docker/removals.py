"""Removing kernel containers on the Docker engine: each removal told to ``Engine.on_removed``
(quota.py's accounting), and the removals the engine could not be asked for kept until it answers
again, retried by a thread of their own (a kernel container's labels are its GPU booking)."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

import docker

from ...base.errors import EngineUnavailable
from ...base.records import ContainerRecord
from . import containers
from .client import EngineClient


class RemovalSettings(Protocol):
    """What removals read of the Engine, each time they need it."""

    @property
    def on_removed(self) -> Callable[[ContainerRecord, float], None] | None: ...

    @property
    def removal_retry_interval(self) -> float: ...

    @property
    def log(self) -> logging.Logger: ...


class Removals:
    """The Engine's container removals, and those deferred until the engine answers again."""

    def __init__(self, client: EngineClient, settings: RemovalSettings) -> None:
        self._client = client
        self._settings = settings
        # Containers to remove once the engine answers again (remove_or_defer), and the thread
        # that keeps trying meanwhile.
        self._deferred: set[str] = set()
        self._deferred_lock = threading.Lock()
        self._retrier: threading.Thread | None = None
        # Set by close: the retrier's wait ends, and it stops.
        self._closing = threading.Event()

    async def remove(self, container_id: str) -> None:
        await self._client.run(functools.partial(self.remove_and_tell, container_id=container_id))

    def remove_and_tell(self, c: docker.APIClient, *, container_id: str) -> None:
        """Remove a container, then tell on_removed, when it was this call that removed it (a
        container gone already, or being removed by another call, is told of by that one)."""
        listener = self._settings.on_removed
        listed = []
        if listener is not None:
            rows = c.containers(all=True, filters={"id": container_id})
            listed = [
                containers.container_record(r) for r in rows if r.get("Id", "") == container_id
            ]
        if containers.remove(c, container_id=container_id) and listed and listener is not None:
            try:
                listener(listed[0], time.time())
            except Exception as e:  # the removal stands whatever its bookkeeping does
                self._settings.log.warning("After removing container %s: %s", container_id[:12], e)

    async def remove_or_defer(self, container_id: str) -> bool:
        """Engine.remove_or_defer: remove now, or once the engine answers (False)."""
        try:
            await self.remove(container_id)
            return True
        except EngineUnavailable as e:
            self._settings.log.warning(
                "Container %s will be removed once the Docker engine answers again: %s",
                container_id[:12],
                e,
            )
        with self._deferred_lock:
            self._deferred.add(container_id)
            if self._retrier is None:
                self._retrier = threading.Thread(
                    target=self._retry_removals, name="gpu-containers-removals", daemon=True
                )
                self._retrier.start()
        return False

    async def remove_deferred(self) -> None:
        """Engine.remove_deferred: remove at once what remove_or_defer left for later."""
        if self._deferred:
            await self._client.in_pool(self._drain_deferred)

    def _drain_deferred(self) -> None:
        """Remove the deferred containers (blocking); EngineUnavailable stops at the first one
        the engine could not be asked about, leaving it and the rest for later."""
        with self._deferred_lock:
            pending = list(self._deferred)
        for container_id in pending:
            try:
                self._client.call(
                    functools.partial(self.remove_and_tell, container_id=container_id)
                )
            except EngineUnavailable:
                raise
            except Exception as e:  # the engine answered but refused: retrying won't help
                self._settings.log.warning(
                    "Could not remove container %s: %s", container_id[:12], e
                )
            with self._deferred_lock:
                self._deferred.discard(container_id)

    def _retry_removals(self) -> None:
        while True:
            closing = self._closing.wait(self._settings.removal_retry_interval)
            with self._deferred_lock:
                if closing or not self._deferred:
                    # Closed: the next server's recovery removes what is left (their labels
                    # name no live owner).
                    self._retrier = None
                    return
            with contextlib.suppress(EngineUnavailable):  # still away: try again later
                self._drain_deferred()

    def close(self) -> None:
        """The retrier stops (what it had left stays labelled)."""
        self._closing.set()
