"""The Kubernetes API client: made once from the kubeconfig (or the pod's own service account),
a thread pool of its own that runs the calls off the event loop, and the API's failures as the
backend interface's errors.

Why the official synchronous client and one pool: k8s.py's docstring says.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import urllib3
from kubernetes import client as kclient
from kubernetes import config as kconfig
from kubernetes.client.rest import ApiException

from ...base import fence
from ...base.errors import EngineRefused, EngineUnavailable
from .pods import shortened

T = TypeVar("T")


class ClientSettings(Protocol):
    """What the client reads of the backend's traits, when it needs them (not once: a trait
    set after the backend was made counts, as it did when the backend made the client)."""

    kubeconfig: str
    context: str
    max_workers: int
    resolved_url: str


class KubernetesClient:
    """One API client and one thread pool, made when first needed, for every API call."""

    def __init__(self, settings: ClientSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        # Making the client reads the kubeconfig (and may run its credential plugin): under a
        # lock of its own, never the one the event loop takes (the watch's cache, the waiters).
        self._client_lock = threading.Lock()
        self._api_client: Any = None
        self._executor_instance: ThreadPoolExecutor | None = None

    @property
    def executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor_instance is None:
                self._executor_instance = ThreadPoolExecutor(
                    max_workers=self._settings.max_workers, thread_name_prefix="gpu-containers-k8s"
                )
            return self._executor_instance

    def api_client(self) -> Any:
        settings = self._settings
        with self._client_lock:
            if self._api_client is None:
                configuration = kclient.Configuration()
                try:
                    if settings.kubeconfig:
                        kconfig.load_kube_config(
                            config_file=settings.kubeconfig,
                            context=settings.context or None,
                            client_configuration=configuration,
                        )
                    else:
                        kconfig.load_incluster_config(client_configuration=configuration)
                except (kconfig.ConfigException, OSError) as e:
                    raise EngineUnavailable(
                        "The Kubernetes API cannot be reached: "
                        + (
                            f"the kubeconfig {settings.kubeconfig} cannot be used ({e})."
                            if settings.kubeconfig
                            else "this process runs outside a cluster, and no kubeconfig is "
                            "set for it: an administrator can set one."
                        ),
                        setting="KubernetesBackend.kubeconfig",
                    ) from e
                settings.resolved_url = configuration.host
                self._api_client = kclient.ApiClient(configuration)
            return self._api_client

    def core(self) -> Any:
        return kclient.CoreV1Api(self.api_client())

    def git_version(self) -> str:
        """The API server's version (blocking)."""
        return str(kclient.VersionApi(self.api_client()).get_code().git_version)

    def unavailable(self, e: BaseException) -> EngineUnavailable:
        return EngineUnavailable(
            f"The Kubernetes API at {self._settings.resolved_url} did not answer: "
            f"{shortened(str(e))}"
        )

    def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(core_v1_api)`` here (a worker thread), translating transport failures.
        Nothing is sent once this process may no longer act (a replica that lost its lease:
        base/fence.py)."""
        fence.check()
        core = self.core()
        try:
            return fn(core)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise self.unavailable(e) from e

    async def run(self, fn: Callable[[Any], T]) -> T:
        """``call(fn)`` on the pool."""
        return await self.in_pool(functools.partial(self.call, fn))

    async def in_pool(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, fn)

    def close(self) -> None:
        with self._lock:
            if self._executor_instance is not None:
                self._executor_instance.shutdown(wait=False, cancel_futures=True)
                self._executor_instance = None
        with self._client_lock:
            if self._api_client is not None:
                self._api_client.close()
                self._api_client = None


def refused(what: str, e: ApiException) -> EngineRefused:
    return EngineRefused(f"The Kubernetes API refused to {what}: {api_reason(e)}")


def api_reason(e: ApiException) -> str:
    try:
        body = json.loads(e.body or "{}")
        message = body.get("message") or e.reason
    except (ValueError, TypeError):
        message = e.reason
    return shortened(f"{message} (HTTP {e.status})")
