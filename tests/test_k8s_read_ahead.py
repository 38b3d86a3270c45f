"""A standby's reads of the kernel pods' connection Secrets ahead of a takeover
(backends/kubernetes/standby.py), with the read given as a function: which pods are read, when,
how often, and for which pod a Secret read is given back. The same reads against a real cluster:
tests/test_k8s_backend.py (a standby's backend), tests/test_k8s_failover.py (a takeover)."""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from jupyter_gpu_containers.backends.kubernetes import standby as standby_module
from jupyter_gpu_containers.backends.kubernetes.standby import SecretsReadAhead

pytestmark = pytest.mark.timeout(60)


def pod(name: str, uid: str) -> Any:
    return SimpleNamespace(metadata=SimpleNamespace(name=name, uid=uid))


class Secrets:
    """The API's Secrets by pod name; each read is recorded, and a missing one raises."""

    def __init__(self) -> None:
        self.by_pod: dict[str, str] = {}
        self.reads: list[str] = []
        self.lock = threading.Lock()

    def read(self, name: str) -> Any:
        with self.lock:
            self.reads.append(name)
            if name not in self.by_pod:
                raise LookupError(f"no Secret for {name}")
            return self.by_pod[name]


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.01)


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> Secrets:
    monkeypatch.setattr(standby_module, "RETRY_SECONDS", 0.2)
    return Secrets()


def test_each_pod_is_read_once_and_given_once_for_its_own_uid(secrets: Secrets) -> None:
    ahead = SecretsReadAhead(secrets.read, logging.getLogger("test"))
    secrets.by_pod = {"a": "secret-a", "b": "secret-b"}
    ahead.pod_seen(pod("a", "1"))  # not reading yet (an active replica's watch): nothing
    assert secrets.reads == [] and len(ahead) == 0
    ahead.start()
    try:
        for _ in range(3):  # the watch shows a pod again and again as it changes
            ahead.pod_seen(pod("a", "1"))
            ahead.pod_seen(pod("b", "2"))
        wait_until(lambda: len(ahead) == 2)
        assert sorted(secrets.reads) == ["a", "b"]
        assert ahead.take("a", "other-uid") is None  # a pod made again under that name
        assert ahead.take("a", "1") is None  # given up above: read again at the takeover
        assert ahead.take("b", "2") == "secret-b"
        assert ahead.take("b", "2") is None  # once
        # A pod gone: its Secret goes too.
        secrets.by_pod["c"] = "secret-c"
        ahead.pod_seen(pod("c", "3"))
        wait_until(lambda: len(ahead) == 1)
        ahead.pod_gone("c")
        assert len(ahead) == 0
    finally:
        ahead.clear()


def test_a_secret_not_there_yet_is_asked_for_once_more_then_at_the_pods_next_change(
    secrets: Secrets,
) -> None:
    ahead = SecretsReadAhead(secrets.read, logging.getLogger("test"))
    ahead.start()
    try:
        ahead.pod_seen(pod("a", "1"))  # the pod is made before its Secret
        wait_until(lambda: secrets.reads == ["a", "a"])  # a second try, RETRY_SECONDS later
        time.sleep(0.5)
        assert secrets.reads == ["a", "a"] and len(ahead) == 0  # no third
        secrets.by_pod["a"] = "secret-a"
        ahead.pod_seen(pod("a", "1"))  # the pod changed as it started
        wait_until(lambda: len(ahead) == 1)
        assert secrets.reads == ["a", "a", "a"]
    finally:
        ahead.clear()


def test_once_the_replica_acts_nothing_more_is_read_and_what_was_read_stays(
    secrets: Secrets,
) -> None:
    ahead = SecretsReadAhead(secrets.read, logging.getLogger("test"))
    secrets.by_pod = {"a": "secret-a", "b": "secret-b"}
    ahead.start()
    try:
        ahead.pod_seen(pod("a", "1"))
        wait_until(lambda: len(ahead) == 1)
        ahead.stop()
        ahead.pod_seen(pod("b", "2"))
        time.sleep(0.3)
        assert secrets.reads == ["a"]
        assert ahead.take("a", "1") == "secret-a"
    finally:
        ahead.clear()


def test_a_pod_gone_while_its_secret_is_read_leaves_nothing(secrets: Secrets) -> None:
    """Kernels come and go all day while a standby waits: a read queued or under way when the
    watch shows the pod deleted keeps nothing (the Secret may still answer: its deletion by the
    garbage collector follows the pod's)."""
    reading, answer = threading.Event(), threading.Event()

    def slow_read(name: str) -> Any:
        reading.set()
        assert answer.wait(10)
        return secrets.read(name)

    ahead = SecretsReadAhead(slow_read, logging.getLogger("test"))
    secrets.by_pod = {"a": "secret-a", "b": "secret-b", "c": "secret-c"}
    ahead.start()
    try:
        ahead.pod_seen(pod("a", "1"))
        assert reading.wait(10)  # a's read is under way
        ahead.pod_seen(pod("b", "2"))  # b's waits behind it
        ahead.pod_gone("a")
        ahead.pod_gone("b")
        ahead.pod_seen(pod("c", "3"))
        answer.set()
        wait_until(lambda: len(ahead) == 1)  # c's read, the last queued, has ended
        assert secrets.reads == ["a", "c"]  # b's was not even made
        assert ahead.take("a", "1") is None and ahead.take("c", "3") == "secret-c"
        # The same name made again (a new uid) is read for the new pod.
        ahead.pod_seen(pod("a", "4"))
        wait_until(lambda: len(ahead) == 1)
        assert ahead.take("a", "4") == "secret-a"
    finally:
        ahead.clear()
