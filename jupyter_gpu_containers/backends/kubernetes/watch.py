"""A reflector of the namespace's pods that carry one label (or of the cluster's nodes): one
list, then one watch from its resourceVersion, resumed from the last version seen when a watch
ends, and listed again when the API answers 410 Gone. It keeps the objects by name, and wakes
whoever waits on its news: coroutines (a kernel's start, on the event loop) and threads (a
readiness probe's pod, on a worker thread) alike, so that no one polls the API per pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from kubernetes import watch as kwatch
from kubernetes.client.rest import ApiException

from .client import KubernetesClient, api_reason
from .pods import shortened

T = TypeVar("T")

# Without news, a waiter looks again this often: the watch may be down (the API went away) and a
# pod read straight from the API instead.
RECHECK_SECONDS = 5.0
# How long the cache may take to show what a list from the API just had (a watch's news lag by
# milliseconds; a pod deleted between the list and the look never shows, and then the caller
# lists from the API).
CATCH_UP = 2.0


class WaitTimedOut(TimeoutError):
    """A wait's time ran out (not a socket's: a read that timed out is the API's failure)."""


class ReflectorSettings(Protocol):
    namespace: str
    api_timeout: float


# What a reflector follows, given a CoreV1Api: the list call, which the watch streams too (the
# kubernetes client decodes a watch's objects as the type that method's documentation returns),
# and its positional arguments.
ListCall = Callable[[Any], tuple[Callable[..., Any], tuple[Any, ...]]]


def cluster_nodes(core: Any) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """The list call of the cluster's nodes, for a Reflector's ``list_call``."""
    return core.list_node, ()


class Reflector:
    """The namespace's pods matching ``selector`` (or what ``list_call`` lists) as the watch last
    saw them, and their waiters.

    ``read(core, name)`` reads one object straight from the API (None: gone), for a caller that
    needs it before the watch has listed, or before the watch has shown a pod just created;
    ``on_pod`` is told of every object listed or changed (not deleted), and ``on_gone`` of the
    name of each one deleted (or missing from a list again), on the watch's thread;
    ``check_open`` raises when its owner is closed, before every look at the cache.
    """

    def __init__(
        self,
        client: KubernetesClient,
        settings: ReflectorSettings,
        *,
        selector: str,
        read: Callable[[Any, str], Any],
        log: logging.Logger | logging.LoggerAdapter[Any],
        what: str,
        thread_name: str,
        on_pod: Callable[[Any], None] | None = None,
        on_gone: Callable[[str], None] | None = None,
        check_open: Callable[[], None] | None = None,
        list_call: ListCall | None = None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._selector = selector
        self._list_call = list_call
        self._read = read
        self._log = log
        self._what = what
        self._thread_name = thread_name
        self._on_pod = on_pod
        self._on_gone = on_gone
        self._check_open = check_open
        self._lock = threading.Lock()
        self._pods: dict[str, Any] = {}
        self._synced = threading.Event()
        self._list_sent = -1.0  # when the cache's list was asked for (monotonic)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._stopped = False
        self._current_watch: Any = None
        # Who waits: coroutines by their loop and event, threads on the condition (each change
        # bumps its generation).
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._news = threading.Condition()
        self._generation = 0

    # ------------------------------------------------------------------ the watch

    def ensure_running(self) -> None:
        """Start the watch's thread unless it runs (or the reflector was stopped for good)."""
        if self._check_open is not None:
            self._check_open()
        with self._lock:
            if self._stopped:
                return
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._follow, name=self._thread_name, daemon=True
                )
                self._thread.start()

    def poke(self) -> None:
        """End the current watch: the thread watches again from the last version seen."""
        watch = self._current_watch
        if watch is not None:
            watch.stop()

    def stop(self) -> None:
        """For good: the thread ends, the cache counts as unlisted, every waiter looks again."""
        with self._lock:
            self._stopped = True
        self._stop.set()
        self._synced.clear()
        self.poke()
        self._notify()

    def _follow(self) -> None:
        """List the pods, then watch from the list's resourceVersion; resume from the last
        version seen when a watch ends; list again when that version is too old (410)."""
        version = ""
        while not self._stop.is_set():
            try:
                core = self._client.core()
                lister, args = self._lister(core)
                selected = {"label_selector": self._selector} if self._selector else {}
                if not version:
                    sent = time.monotonic()
                    listed = lister(*args, **selected, _request_timeout=self._settings.api_timeout)
                    with self._lock:
                        gone = set(self._pods)
                        self._pods = {p.metadata.name: p for p in listed.items}
                        gone -= set(self._pods)
                        self._list_sent = sent
                    version = listed.metadata.resource_version
                    self._synced.set()
                    self._notify()
                    for name in gone:
                        self._tell_gone(name)
                    for p in listed.items:
                        self._tell(p)
                w = kwatch.Watch()
                self._current_watch = w
                for event in w.stream(
                    lister,
                    *args,
                    **selected,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=240,
                    _request_timeout=300,
                ):
                    if self._stop.is_set():
                        break
                    kind, pod = event["type"], event["object"]
                    raw = event.get("raw_object") or {}
                    if kind == "BOOKMARK":
                        # A bookmark's object is left a dict: only its version counts.
                        version = raw.get("metadata", {}).get("resourceVersion") or version
                        continue
                    if kind == "ERROR":
                        if raw.get("code") == 410:
                            version = ""  # too old: list again
                            break
                        continue
                    version = pod.metadata.resource_version or version
                    with self._lock:
                        if kind == "DELETED":
                            self._pods.pop(pod.metadata.name, None)
                        else:
                            self._pods[pod.metadata.name] = pod
                    self._notify()
                    if kind != "DELETED":
                        self._tell(pod)
                    else:
                        self._tell_gone(pod.metadata.name)
            except ApiException as e:
                if e.status == 410:
                    version = ""
                    continue
                self._log.warning("The %s' watch failed, retrying: %s", self._what, api_reason(e))
                self._stop.wait(1.0)
            except Exception as e:  # the API went away: try again, from the same version
                if self._stop.is_set():
                    break
                self._log.warning(
                    "The %s' watch failed, retrying: %s", self._what, shortened(str(e))
                )
                self._stop.wait(1.0)

    def _lister(self, core: Any) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if self._list_call is not None:
            return self._list_call(core)
        return core.list_namespaced_pod, (self._settings.namespace,)

    def _tell(self, pod: Any) -> None:
        if self._on_pod is not None:
            self._on_pod(pod)

    def _tell_gone(self, name: str) -> None:
        if self._on_gone is not None:
            self._on_gone(name)

    def _notify(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(event.set)
        with self._news:
            self._generation += 1
            self._news.notify_all()

    # ------------------------------------------------------------------ the cache

    @property
    def synced(self) -> bool:
        """Whether the watch has listed (its cache answers)."""
        return self._synced.is_set()

    @property
    def generation(self) -> int:
        """A count that changes with every change the watch shows (a list, an event): what was
        made of the cache at one count is still right while the count is the same."""
        with self._news:
            return self._generation

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._pods)

    def listed(self) -> list[Any] | None:
        """Every pod followed, as the watch last saw them, once it has listed; None before (the
        caller lists from the API)."""
        self.ensure_running()
        if not self._synced.is_set():
            return None
        with self._lock:
            return list(self._pods.values())

    def listed_since(self, since: float, timeout: float) -> list[Any] | None:
        """Every object followed, as current as a list the API answers now: the watch's first
        list if it asked for it at ``since`` (monotonic) or later, waiting up to ``timeout``
        seconds for it; else the cache, checked against the names and uids the API lists now
        (one list of them, not decoded into objects: a small part of decoding them all),
        waiting up to CATCH_UP seconds for the watch to show any it lacks. So the list wanted
        while the watch starts, and the one wanted of a watch that ran before (a standby's,
        taking over), are not decoded a second time. None when the cache cannot answer so (no
        list came; the watch did not catch up): the caller lists from the API. Blocking: a
        worker thread."""
        self.ensure_running()
        self._synced.wait(timeout)
        with self._lock:
            if not self._synced.is_set():
                return None
            if self._list_sent >= since:
                return list(self._pods.values())
        selected = {"label_selector": self._selector} if self._selector else {}

        def undecoded(core: Any) -> Any:
            lister, args = self._lister(core)
            timeout = self._settings.api_timeout
            return lister(*args, **selected, _preload_content=False, _request_timeout=timeout)

        try:
            response = self._client.call(undecoded)
            wanted = {
                item["metadata"]["name"]: item["metadata"].get("uid", "")
                for item in json.loads(response.data).get("items", [])
            }
        except Exception:  # the caller's own list says why, in its sentence
            return None

        def current() -> list[Any] | None:
            with self._lock:
                found = [self._pods.get(name) for name in wanted]
            if all(
                pod is not None and pod.metadata.uid == uid
                for pod, uid in zip(found, wanted.values(), strict=True)
            ):
                return found
            return None

        return self._until(current, time.monotonic() + CATCH_UP)

    def pods_sync(self, core: Any, including: str) -> dict[str, Any]:
        """Every pod followed, by name, with ``including`` among them if it exists: the cache
        once the watch has listed and shown that pod, else one list straight from the API
        (blocking: a worker thread; ApiException when the API refuses). A pod a start read from
        the API before the watch had listed would otherwise be counted among none of them."""
        if self._synced.is_set():
            with self._lock:
                if including in self._pods:
                    return dict(self._pods)
        lister, args = self._lister(core)
        selected = {"label_selector": self._selector} if self._selector else {}
        listed = lister(*args, **selected, _request_timeout=self._settings.api_timeout)
        return {p.metadata.name: p for p in listed.items}

    def _cached(self, name: str, fresh: bool) -> tuple[bool, Any]:
        """(whether the cache answers, the pod in it): it does once the watch has listed,
        unless ``fresh`` and the pod is not in it yet."""
        if self._synced.is_set():
            with self._lock:
                found = self._pods.get(name)
            if found is not None or not fresh:
                return True, found
        return False, None

    async def pod(self, name: str, fresh: bool = False) -> Any:
        """The pod as the watch last saw it (None: gone); straight from the API until the watch
        has listed, and, with ``fresh``, when the watch has not shown it yet (a pod just created
        may reach the API before the watch brings it)."""
        self.ensure_running()
        answered, found = self._cached(name, fresh)
        if answered:
            return found
        return await self._client.run(lambda core: self._read(core, name))

    def pod_sync(self, core: Any, name: str, fresh: bool = False) -> Any:
        """:meth:`pod` on this thread, reading with ``core`` when the cache does not answer."""
        self.ensure_running()
        answered, found = self._cached(name, fresh)
        if answered:
            return found
        return self._read(core, name)

    # ------------------------------------------------------------------ waiting on the news

    async def wait_for(
        self, name: str, check: Callable[[Any], T | None], timeout: float, fresh: bool = False
    ) -> T:
        """Wait, on the watch's news, until ``check(pod)`` answers something other than None
        (WaitTimedOut after ``timeout`` seconds)."""
        self.ensure_running()
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        entry = (loop, event)
        with self._lock:
            self._waiters.add(entry)
        deadline = loop.time() + timeout
        try:
            while True:
                event.clear()
                answer = check(await self.pod(name, fresh))
                if answer is not None:
                    return answer
                left = deadline - loop.time()
                if left <= 0:
                    raise WaitTimedOut
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(event.wait(), min(left, RECHECK_SECONDS))
        finally:
            with self._lock:
                self._waiters.discard(entry)

    def wait_for_sync(
        self,
        core: Any,
        name: str,
        check: Callable[[Any], T | None],
        timeout: float,
        fresh: bool = False,
    ) -> T:
        """:meth:`wait_for` on this thread (a worker's), blocking it."""
        self.ensure_running()
        answer = self._until(
            lambda: check(self.pod_sync(core, name, fresh)), time.monotonic() + timeout
        )
        if answer is None:
            raise WaitTimedOut
        return answer

    def _until(self, look: Callable[[], T | None], deadline: float) -> T | None:
        """``look()`` until it answers something other than None, again at each change the
        watch shows (and at least every RECHECK_SECONDS), until ``deadline`` (monotonic): None
        then. Blocking this thread."""
        while True:
            with self._news:
                seen = self._generation
            answer = look()
            if answer is not None:
                return answer
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with self._news:
                if self._generation == seen:
                    self._news.wait(min(left, RECHECK_SECONDS))
