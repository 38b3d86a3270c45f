"""The Docker backend's connection to its engine: one docker-py ``APIClient`` (connected on first
use, at the engine's own API version, its unix socket checked first), the thread pool every engine
call of the event loop runs on, and transport failures translated into EngineUnavailable."""

from __future__ import annotations

import asyncio
import functools
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

import docker
import docker.constants
import docker.errors
import requests.exceptions

from ...base.errors import EngineUnavailable
from .private import close_sockets_of_failed_connects
from .sentences import unavailable

T = TypeVar("T")

DEFAULT_SOCKET = "unix:///var/run/docker.sock"


class ClientSettings(Protocol):
    """What the client reads of the Engine's configuration, each time it needs it."""

    @property
    def resolved_url(self) -> str: ...

    @property
    def api_timeout(self) -> float: ...

    @property
    def max_workers(self) -> int: ...


class EngineClient:
    """One connection pool and one thread pool to the Engine's Docker engine."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self._client: docker.APIClient | None = None
        self._client_lock = threading.Lock()
        self._executor_instance: ThreadPoolExecutor | None = None

    @property
    def executor(self) -> ThreadPoolExecutor:
        with self._client_lock:
            if self._executor_instance is None:
                self._executor_instance = ThreadPoolExecutor(
                    max_workers=self.settings.max_workers,
                    thread_name_prefix="gpu-containers-engine",
                )
            return self._executor_instance

    def connect(self) -> docker.APIClient:
        with self._client_lock:
            if self._client is None:
                url, timeout = self.settings.resolved_url, self.settings.api_timeout
                self._check_unix_socket()
                # Ask the engine's API version with a probe client that we close on failure
                # (version="auto" would leak the probe's socket when the engine is not there).
                probe = docker.APIClient(
                    base_url=url,
                    version=docker.constants.MINIMUM_DOCKER_API_VERSION,
                    timeout=min(timeout, 10.0),
                )
                close_sockets_of_failed_connects(probe, url)
                try:
                    api_version = str(probe.version(api_version=False)["ApiVersion"])
                except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
                    raise self.unavailable(e) from e
                finally:
                    probe.close()
                client = docker.APIClient(base_url=url, version=api_version, timeout=timeout)
                # docker-py leaks the socket of a failed unix connect: once the engine goes away,
                # every call until it is back (restarter polls, the image watcher) would leak one.
                close_sockets_of_failed_connects(client, url)
                self._client = client
            return self._client

    def _check_unix_socket(self) -> None:
        """Fail fast, with the OS's reason, when a unix:// engine socket cannot be connected.

        docker-py leaks the socket of a failed unix connect; checking here first keeps that from
        happening on every call while the engine is down.
        """
        url = self.settings.resolved_url
        if not url.startswith(("unix://", "http+unix://")):
            return
        path = url.split("://", 1)[1]
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(min(self.settings.api_timeout, 5.0))
            probe.connect(path)
        except OSError as e:
            raise self.unavailable(e) from e
        finally:
            probe.close()

    def unavailable(self, e: BaseException) -> EngineUnavailable:
        return unavailable(self.settings.resolved_url, e)

    def call(self, fn: Callable[[docker.APIClient], T]) -> T:
        """Run ``fn(client)`` here, in the calling thread, translating transport failures."""
        client = self.connect()
        try:
            return fn(client)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
            raise self.unavailable(e) from e

    async def run(self, fn: Callable[[docker.APIClient], T]) -> T:
        """Run ``fn(client)`` on the engine thread pool: the only way async code reaches Docker."""
        return await self.in_pool(functools.partial(self.call, fn))

    async def in_pool(self, fn: Callable[[], T]) -> T:
        """Run the blocking ``fn()`` on the engine thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, fn)

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            if self._executor_instance is not None:
                self._executor_instance.shutdown(wait=False, cancel_futures=True)
                self._executor_instance = None
