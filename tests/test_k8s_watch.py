"""The pod watch as a reflector (backends/kubernetes/watch.py), against a fake API: it lists, then
watches from the list's version, lists again on 410, and wakes its waiters (threads and
coroutines) on its news rather than their polling. No cluster."""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from jupyter_gpu_containers.backends.kubernetes import watch as watch_module
from jupyter_gpu_containers.backends.kubernetes.pods import pod_state
from jupyter_gpu_containers.backends.kubernetes.watch import Reflector, WaitTimedOut
from jupyter_gpu_containers.base.errors import EngineUnavailable

pytestmark = pytest.mark.timeout(60)


def pod(name: str, version: str, ended: bool = False, uid: str = "") -> Any:
    state = SimpleNamespace(
        terminated=SimpleNamespace(exit_code=3, reason="Error", message="") if ended else None,
        running=None,
        waiting=None,
    )
    return SimpleNamespace(
        metadata=SimpleNamespace(name=name, resource_version=version, uid=uid or f"uid-{name}"),
        spec=SimpleNamespace(node_name="n1", containers=[]),
        status=SimpleNamespace(
            phase="Running",
            container_statuses=[SimpleNamespace(name="kernel", state=state, image_id="")],
        ),
    )


class FakeAPI:
    """list_namespaced_pod answers the pods given; each watch streams the events put on
    ``events`` (a None ends that watch, as the server's timeout does)."""

    def __init__(self, pods: list[Any]) -> None:
        self.pods = pods
        self.lists: list[str] = []
        self.watches: list[str] = []
        self.reads: list[str] = []
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()

    # the client
    def core(self) -> FakeAPI:
        return self

    def call(self, fn: Any) -> Any:
        return fn(self)

    async def run(self, fn: Any) -> Any:
        return fn(self)

    # the API
    def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> Any:
        if kwargs.get("_preload_content") is False:  # the names and uids only (JSON)
            self.lists.append("undecoded")
            items = [
                {"metadata": {"name": p.metadata.name, "uid": p.metadata.uid}} for p in self.pods
            ]
            return SimpleNamespace(data=json.dumps({"items": items}).encode())
        self.lists.append(kwargs["label_selector"])
        return SimpleNamespace(
            items=list(self.pods), metadata=SimpleNamespace(resource_version=str(len(self.lists)))
        )

    def read(self, core: Any, name: str) -> Any:
        self.reads.append(name)
        return next((p for p in self.pods if p.metadata.name == name), None)


class FakeWatch:
    def __init__(self, api: FakeAPI) -> None:
        self.api = api
        self.stopped = threading.Event()

    def stream(self, fn: Any, namespace: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.api.watches.append(kwargs["resource_version"])
        while not self.stopped.is_set():
            try:
                event = self.api.events.get(timeout=0.05)
            except queue.Empty:
                continue
            if event is None:
                return
            yield event

    def stop(self) -> None:
        self.stopped.set()


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeAPI:
    fake = FakeAPI([pod("a", "1")])
    monkeypatch.setattr(
        watch_module, "kwatch", SimpleNamespace(Watch=lambda: FakeWatch(fake)), raising=True
    )
    return fake


def reflector(api: FakeAPI, **kwargs: Any) -> Reflector:
    return Reflector(
        api,  # type: ignore[arg-type]
        SimpleNamespace(namespace="ns", api_timeout=5.0),
        selector="probe=true",
        read=api.read,
        log=logging.getLogger("test"),
        what="test pods",
        thread_name="test-watch",
        **kwargs,
    )


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.01)


def test_it_lists_then_watches_from_the_lists_version_and_lists_again_on_410(
    api: FakeAPI,
) -> None:
    seen: list[str] = []
    gone: list[str] = []
    watch = reflector(api, on_pod=lambda p: seen.append(p.metadata.name), on_gone=gone.append)
    try:
        watch.ensure_running()
        wait_until(lambda: api.watches == ["1"])
        assert api.lists == ["probe=true"] and watch.snapshot().keys() == {"a"}
        api.events.put({"type": "ADDED", "object": pod("b", "7"), "raw_object": {}})
        api.events.put({"type": "DELETED", "object": pod("a", "8"), "raw_object": {}})
        wait_until(lambda: watch.snapshot().keys() == {"b"})
        assert gone == ["a"]
        api.events.put(None)  # the server ends the watch: resumed from the last version
        wait_until(lambda: api.watches == ["1", "8"])
        bookmark = {"metadata": {"resourceVersion": "12"}}
        api.events.put({"type": "BOOKMARK", "object": bookmark, "raw_object": bookmark})
        api.events.put(None)
        wait_until(lambda: api.watches == ["1", "8", "12"])
        api.events.put({"type": "ERROR", "object": None, "raw_object": {"code": 410}})
        wait_until(lambda: len(api.lists) == 2 and api.watches[-1] == "2")
        assert gone == ["a", "b"]  # b is not in the new list: gone while the watch was away
        assert seen == ["a", "b", "a"]  # listed, added, listed again (a deletion: on_gone)
    finally:
        watch.stop()


def ended(found: Any) -> Any:
    state = pod_state(found)
    return state if state is not None and state.ended else None


def test_a_thread_waiting_is_woken_by_the_news_not_by_polling(
    api: FakeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No look of its own for an hour, nor a timeout: only the news ends the wait (else the
    # test's own time limit, pytestmark's, fails it).
    monkeypatch.setattr(watch_module, "RECHECK_SECONDS", 3600.0)
    watch = reflector(api)
    try:
        watch.ensure_running()
        wait_until(lambda: api.watches == ["1"])
        threading.Timer(
            0.3,
            lambda: api.events.put(
                {"type": "MODIFIED", "object": pod("a", "2", ended=True), "raw_object": {}}
            ),
        ).start()
        state = watch.wait_for_sync(api, "a", ended, timeout=3600, fresh=True)
        assert state.exit_code == 3
        assert api.reads == []  # the cache answered: the pod was listed
    finally:
        watch.stop()


def test_a_pod_the_watch_has_not_shown_yet_is_read_from_the_api(api: FakeAPI) -> None:
    watch = reflector(api)
    try:
        watch.ensure_running()
        wait_until(lambda: api.watches == ["1"])
        api.pods.append(pod("new", "3", ended=True))
        found = watch.pod_sync(api, "new", fresh=True)
        assert found.metadata.name == "new" and api.reads == ["new"]
        assert watch.pod_sync(api, "new") is None  # not fresh: the cache's word
    finally:
        watch.stop()


def test_every_pod_counts_one_the_watch_has_not_shown_yet(api: FakeAPI) -> None:
    """What a refused start's capacity sentence counts: the API's list until the watch has
    listed the pods and shown the one refused (a start may read its pod before the watch
    lists), then the cache."""
    watch = reflector(api)
    try:
        assert watch.pods_sync(api, "a").keys() == {"a"}  # no watch yet: the API
        assert len(api.lists) == 1
        watch.ensure_running()
        wait_until(lambda: api.watches == ["2"])
        api.pods.append(pod("new", "3"))  # created, not shown by the watch yet
        assert watch.pods_sync(api, "new").keys() == {"a", "new"}
        assert len(api.lists) == 3
        assert watch.pods_sync(api, "a").keys() == {"a"}  # shown: the cache's word
        assert len(api.lists) == 3
    finally:
        watch.stop()


def test_a_wait_times_out_in_its_own_exception(api: FakeAPI) -> None:
    watch = reflector(api)
    try:
        with pytest.raises(WaitTimedOut):
            watch.wait_for_sync(api, "a", lambda p: None, timeout=0.2)

        async def waiting() -> None:
            await watch.wait_for("a", lambda p: None, timeout=0.2)

        with pytest.raises(WaitTimedOut):
            asyncio.run(waiting())
    finally:
        watch.stop()


def test_a_coroutine_waiting_is_woken_by_the_news(
    api: FakeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch_module, "RECHECK_SECONDS", 3600.0)  # as for a thread, above
    watch = reflector(api)

    async def waiting() -> Any:
        watch.ensure_running()
        while api.watches != ["1"]:
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        loop.call_later(
            0.3,
            lambda: api.events.put(
                {"type": "MODIFIED", "object": pod("a", "2", ended=True), "raw_object": {}}
            ),
        )
        return await watch.wait_for("a", ended, timeout=3600, fresh=True)

    try:
        assert asyncio.run(waiting()).exit_code == 3
    finally:
        watch.stop()


def test_stopped_for_good(api: FakeAPI) -> None:
    closed = False

    def check_open() -> None:
        if closed:
            raise EngineUnavailable("closed")

    watch = reflector(api, check_open=check_open)
    watch.ensure_running()
    wait_until(lambda: api.watches == ["1"])
    closed = True
    watch.stop()
    with pytest.raises(EngineUnavailable):
        watch.ensure_running()
    closed = False
    watch.ensure_running()  # stopped: no thread again
    time.sleep(0.2)
    assert api.lists == ["probe=true"]
    assert watch.pod_sync(api, "a") is not None and api.reads == ["a"]  # unlisted: the API


def test_a_list_wanted_while_the_watch_starts_is_the_watchs_own(api: FakeAPI) -> None:
    """listed_since: the first list of a watch started from now is the caller's list (the API
    asked once, not twice); a cache listed before the time asked for is not, and the caller
    lists for itself."""
    watch = reflector(api)
    try:
        before = time.monotonic()
        pods = watch.listed_since(before, 5.0)
        assert pods is not None and [p.metadata.name for p in pods] == ["a"]
        assert api.lists == ["probe=true"]
    finally:
        watch.stop()


def test_a_list_wanted_of_a_watch_that_ran_before_is_its_cache_checked_against_the_api(
    api: FakeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """listed_since on a cache listed before the time asked for (a standby's watch, taking
    over): the cache, once it holds every pod the API lists now with the same uid (one list of
    names and uids, not decoded), waiting for the watch to show what it lacks; None when it does
    not show it in time (the caller lists for itself)."""
    # Waiting for a pod the watch shows soon: long enough for any delay of the thread that
    # shows it, on a machine as busy as it gets (it answers as soon as the pod is shown).
    monkeypatch.setattr(watch_module, "CATCH_UP", 30.0)
    watch = reflector(api)
    try:
        assert watch.listed_since(time.monotonic(), 5.0) is not None
        api.pods.append(pod("b", "2"))  # made just now: the watch has not shown it yet
        later = threading.Timer(
            0.1, api.events.put, ({"type": "ADDED", "object": pod("b", "2"), "raw_object": {}},)
        )
        later.start()
        pods = watch.listed_since(time.monotonic(), 5.0)
        later.join()
        assert pods is not None and sorted(p.metadata.name for p in pods) == ["a", "b"]
        assert api.lists == ["probe=true", "undecoded"]
        # The watch already saw a pod the API no longer lists: not among them.
        api.pods.remove(next(p for p in api.pods if p.metadata.name == "b"))
        pods = watch.listed_since(time.monotonic(), 5.0)
        assert pods is not None and [p.metadata.name for p in pods] == ["a"]
        # A pod made again under the same name (another uid), and one never shown: None, once
        # the wait for the watch to show them is over.
        monkeypatch.setattr(watch_module, "CATCH_UP", 0.5)
        api.pods[0] = pod("a", "3", uid="uid-a-again")
        assert watch.listed_since(time.monotonic(), 5.0) is None
        api.pods[0] = pod("a", "3")
        api.pods.append(pod("c", "4"))
        assert watch.listed_since(time.monotonic(), 5.0) is None
        assert api.lists == ["probe=true"] + ["undecoded"] * 4
    finally:
        watch.stop()
