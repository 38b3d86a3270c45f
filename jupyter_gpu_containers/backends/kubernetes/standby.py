"""What a standby replica reads ahead while it waits for the Lease (lease.py): each kernel pod's
connection Secret, once, as the backend's pod watch shows the pod. A replica that takes over then
reattaches every kernel without a read of its Secret (a thousand reads, one per pod, were a sixth
of a takeover's time at 1,000 kernel pods: benchmarks, section 15).

A Secret read ahead is used only for the pod that owns it (the pod's uid, as the watch shows it
at the takeover, in the Secret's owner reference): a pod made again under the same name since, or
a Secret read before it had an owner, is read again then (kernels.py, connection).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from .pods import shortened

# One pod's Secret, by the pod's name (ApiException or a transport error when it cannot be read).
ReadSecret = Callable[[str], Any]
# A Secret not there yet (the pod is made first) is asked for again this many seconds later, once.
RETRY_SECONDS = 2.0


class SecretsReadAhead:
    """The kernel pods' connection Secrets, read one at a time on a thread of their own while
    ``reading`` (a standby), kept by pod name with the pod's uid, until ``take``n (once) or the
    pod is gone."""

    def __init__(self, read: ReadSecret, log: logging.Logger | logging.LoggerAdapter[Any]):
        self._read = read
        self._log = log
        self._lock = threading.Lock()
        self._secrets: dict[str, tuple[str, Any]] = {}  # pod name -> (pod uid, Secret)
        # The pods whose Secret waits for a read (or is being read): pod name -> pod uid. A pod
        # gone meanwhile leaves it, so a read that ends after it keeps nothing.
        self._queued: dict[str, str] = {}
        # (pod name, pod uid, whether this is the second try); None ends the thread.
        self._queue: queue.SimpleQueue[tuple[str, str, bool] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._reading = False

    def start(self) -> None:
        """Read the Secret of every pod seen from now on (and of those seen before, as the
        watch shows them again: ``pod_seen``)."""
        with self._lock:
            self._reading = True
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="gpu-containers-k8s-standby-secrets", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        """No more reads (the replica acts now: it made the Secrets of the pods it starts).
        What was read stays for ``take``."""
        with self._lock:
            self._reading = False
            self._queued.clear()
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)

    def clear(self) -> None:
        self.stop()
        with self._lock:
            self._secrets.clear()

    def pod_seen(self, pod: Any) -> None:
        """The watch shows ``pod`` (listed or changed): its Secret is read unless it was, for
        this pod (the same uid). On the watch's thread: it only queues the read."""
        name, uid = pod.metadata.name, pod.metadata.uid or ""
        with self._lock:
            if not self._reading or not uid:
                return
            kept = self._secrets.get(name)
            if (kept is not None and kept[0] == uid) or self._queued.get(name) == uid:
                return
            self._queued[name] = uid
        self._queue.put((name, uid, False))

    def pod_gone(self, name: str) -> None:
        """The watch shows ``name`` deleted: its Secret is forgotten, and a read of it queued or
        under way keeps nothing (kernels come and go all day while a standby waits)."""
        with self._lock:
            self._secrets.pop(name, None)
            self._queued.pop(name, None)

    def take(self, name: str, uid: str) -> Any:
        """The Secret read ahead for the pod ``name`` of uid ``uid`` (None: none was), given
        once: a second reattach of that pod reads it again."""
        with self._lock:
            kept = self._secrets.pop(name, None)
        return kept[1] if kept is not None and kept[0] == uid else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._secrets)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            name, uid, again = item
            with self._lock:
                if not self._reading or self._queued.get(name) != uid:
                    continue
            try:
                secret = self._read(name)
            except Exception as e:
                self._log.debug(
                    "The Secret of pod %s was not read ahead: %s", name, shortened(str(e))
                )
                secret = None
            with self._lock:
                wanted = self._reading and self._queued.get(name) == uid
                if secret is not None and wanted:
                    self._secrets[name] = (uid, secret)
                if secret is not None or again or not wanted:
                    if self._queued.get(name) == uid:
                        del self._queued[name]
                    continue
            # Not there yet (a pod is made before its Secret), or the API away: once more,
            # later (the pod's next change, as it starts, asks again too; and the takeover
            # reads whatever is missing).
            timer = threading.Timer(RETRY_SECONDS, self._queue.put, ((name, uid, True),))
            timer.daemon = True
            timer.start()
