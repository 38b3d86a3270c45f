"""The Docker backend (backend.py's interface): the one module that talks to the Docker engine.

Everything here is a thin, typed wrapper around docker-py's low-level ``APIClient``. Every public
coroutine runs its docker-py call on a small thread pool, so a slow or wedged daemon never blocks
the Jupyter server's event loop (the kernel restarter polls every few seconds, and the REST API
must keep answering). docker-py errors are translated here, once, into the sentences of
:mod:`jupyter_gpu_containers.base.errors`; no other module imports docker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import docker
import docker.auth
import docker.constants
import docker.errors
import docker.transport.unixconn as unixconn
import docker.types
import requests.exceptions
from traitlets import Float, Int, Unicode, default
from traitlets.config import LoggingConfigurable

from ...base.errors import (
    ContainerKernelError,
    EngineRefused,
    EngineUnavailable,
    ImageMissing,
    PullFailed,
    RegistryAuthFailed,
)
from ...base.records import (
    ContainerRecord,
    ContainerSpec,
    ContainerState,
    ImageDiskUse,
    ImageRecord,
    ImagesDiskUse,
    OneshotResult,
)
from ..backend import ContainerDetails, LogLine, MountInfo

T = TypeVar("T")

DEFAULT_SOCKET = "unix:///var/run/docker.sock"


class Engine(LoggingConfigurable):
    """Handle on one Docker engine: the server's (services.py), shared by its provisioners,
    kernel specs, probe, pulls and handlers; one connection pool and one thread pool."""

    docker_url = Unicode(
        "",
        config=True,
        help="""Where the Docker engine listens, e.g. unix:///var/run/docker.sock or
        tcp://127.0.0.1:2375. Empty means what the docker CLI would use: DOCKER_HOST when set,
        else the default local socket.""",
    )

    api_timeout = Float(
        60.0,
        config=True,
        help="""Seconds to wait for one Docker API call before giving up. Container creation and
        removal on a loaded host can take several seconds; image pulls are not bound by this.""",
    )

    max_workers = Int(
        8,
        config=True,
        help="""Threads that run Docker API calls off the event loop. Bounds how many engine
        calls this server has in flight at once.""",
    )

    removal_retry_interval = Float(
        2.0,
        config=True,
        help="""Seconds between attempts to remove kernel containers whose removal failed
        because the engine could not be reached (see Engine.remove_or_defer).""",
    )

    resolved_url = Unicode(help="The engine address actually used (for error sentences).")

    @default("resolved_url")
    def _default_resolved_url(self) -> str:
        return self.docker_url or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._client: docker.APIClient | None = None
        self._client_lock = threading.Lock()
        self._executor_instance: ThreadPoolExecutor | None = None
        # Image id -> inspected record. An id names immutable content, so one inspect per image
        # is enough however often the list is refreshed; only its tags are re-read.
        self._inspected: dict[str, ImageRecord] = {}
        # The image watcher's thread and the engine's pool list images at the same time.
        self._inspected_lock = threading.Lock()
        # The event streams image watchers wait on (wake_watchers closes them).
        self._watch_streams: set[Any] = set()
        self._watch_lock = threading.Lock()
        # Containers to remove once the engine answers again (remove_or_defer), and the thread
        # that keeps trying meanwhile.
        self._deferred: set[str] = set()
        self._deferred_lock = threading.Lock()
        self._retrier: threading.Thread | None = None
        # Set by close: the retrier's wait ends, and it stops.
        self._closing = threading.Event()

    @property
    def _executor(self) -> ThreadPoolExecutor:
        with self._client_lock:
            if self._executor_instance is None:
                self._executor_instance = ThreadPoolExecutor(
                    max_workers=self.max_workers, thread_name_prefix="gpu-containers-engine"
                )
            return self._executor_instance

    # ------------------------------------------------------------------ plumbing

    def _connect(self) -> docker.APIClient:
        with self._client_lock:
            if self._client is None:
                self._check_unix_socket()
                # Ask the engine's API version with a probe client that we close on failure
                # (version="auto" would leak the probe's socket when the engine is not there).
                probe = docker.APIClient(
                    base_url=self.resolved_url,
                    version=docker.constants.MINIMUM_DOCKER_API_VERSION,
                    timeout=min(self.api_timeout, 10.0),
                )
                close_sockets_of_failed_connects(probe, self.resolved_url)
                try:
                    api_version = str(probe.version(api_version=False)["ApiVersion"])
                except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
                    raise self._unavailable(e) from e
                finally:
                    probe.close()
                client = docker.APIClient(
                    base_url=self.resolved_url, version=api_version, timeout=self.api_timeout
                )
                # docker-py leaks the socket of a failed unix connect: once the engine goes away,
                # every call until it is back (restarter polls, the image watcher) would leak one.
                close_sockets_of_failed_connects(client, self.resolved_url)
                self._client = client
            return self._client

    def _check_unix_socket(self) -> None:
        """Fail fast, with the OS's reason, when a unix:// engine socket cannot be connected.

        docker-py leaks the socket of a failed unix connect; checking here first keeps that from
        happening on every call while the engine is down.
        """
        if not self.resolved_url.startswith(("unix://", "http+unix://")):
            return
        path = self.resolved_url.split("://", 1)[1]
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(min(self.api_timeout, 5.0))
            probe.connect(path)
        except OSError as e:
            raise self._unavailable(e) from e
        finally:
            probe.close()

    def _unavailable(self, e: BaseException) -> EngineUnavailable:
        detail = str(e)
        hint = "Start it (for example `sudo systemctl start docker`) or set Engine.docker_url."
        if isinstance(e, PermissionError) or "Permission denied" in detail:
            hint = (
                "This server's user may not use that socket: add it to the `docker` group, "
                "or set Engine.docker_url."
            )
        return EngineUnavailable(
            f"The Docker engine is not reachable at {self.resolved_url}. {hint}"
            f" (engine said: {_short(detail)})"
        )

    def call(self, fn: Callable[[docker.APIClient], T]) -> T:
        """Run ``fn(client)`` here, in the calling thread, translating transport failures."""
        client = self._connect()
        try:
            return fn(client)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
            raise self._unavailable(e) from e

    async def run(self, fn: Callable[[docker.APIClient], T]) -> T:
        """Run ``fn(client)`` on the engine thread pool: the only way async code reaches Docker."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self.call, fn))

    def close(self) -> None:
        self.wake_watchers()
        self._closing.set()  # the removal retrier stops (what it had left stays labelled)
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            if self._executor_instance is not None:
                self._executor_instance.shutdown(wait=False, cancel_futures=True)
                self._executor_instance = None

    # ------------------------------------------------------------------ engine

    async def version(self) -> str:
        info = await self.run(lambda c: c.version())
        return str(info.get("Version", "unknown"))

    async def runtimes(self) -> list[str]:
        """Names of the container runtimes the engine offers (e.g. runc, nvidia)."""
        info = await self.run(lambda c: c.info())
        return sorted((info.get("Runtimes") or {}).keys())

    # ------------------------------------------------------------------ images

    def list_images_sync(self) -> list[ImageRecord]:
        """Every tagged local image, inspected. Blocking: call from a worker thread only."""
        summaries = self.call(lambda c: c.images())
        records = []
        for summary in summaries:
            tags = tuple(t for t in (summary.get("RepoTags") or []) if t and t != "<none>:<none>")
            if not tags:
                continue
            with self._inspected_lock:
                cached = self._inspected.get(summary["Id"])
            try:
                record = cached or self.inspect_image_sync(summary["Id"])
            except ImageMissing:
                continue  # removed between list and inspect
            with self._inspected_lock:
                self._inspected[record.id] = record
            records.append(dataclasses.replace(record, tags=tags))
        live = {summary["Id"] for summary in summaries}
        with self._inspected_lock:
            for gone in set(self._inspected) - live:
                del self._inspected[gone]
        return records

    async def list_images(self) -> list[ImageRecord]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.list_images_sync)

    def inspect_image_sync(self, ref: str) -> ImageRecord:
        try:
            data = self.call(lambda c: c.inspect_image(ref))
        except docker.errors.ImageNotFound as e:
            raise _image_missing(ref, then_start=True) from e
        config = data.get("Config") or {}
        env = dict(item.split("=", 1) for item in (config.get("Env") or []) if "=" in item)
        return ImageRecord(
            id=data["Id"],
            tags=tuple(data.get("RepoTags") or ()),
            labels=dict(config.get("Labels") or {}),
            env=env,
            entrypoint=tuple(config.get("Entrypoint") or ()),
            user=config.get("User") or "",
            created=data.get("Created", ""),
            size=int(data.get("Size") or 0),
            repo_digests=tuple(data.get("RepoDigests") or ()),
        )

    async def inspect_image(self, ref: str) -> ImageRecord:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(self.inspect_image_sync, ref)
        )

    def watch_images(self, on_change: Callable[[], None], stop: threading.Event) -> None:
        """Call ``on_change`` whenever an image is pulled, built, tagged or removed.

        Blocks on the engine's event stream until ``stop`` is set and :meth:`wake_watchers` is
        called (which closes the stream the thread waits on); meant for a thread of its own.
        Reconnects after engine restarts, with a short back-off.
        """
        while not stop.is_set():
            stream = None
            try:
                stream = self.call(lambda c: c.events(decode=True, filters={"type": "image"}))
                with self._watch_lock:
                    self._watch_streams.add(stream)
                if stop.is_set():
                    break
                on_change()  # we may have missed changes while (re)connecting
                for _event in stream:
                    if stop.is_set():
                        break
                    on_change()
            except Exception:
                # An engine that went away: wait, then try again. Errors surface to users through
                # the calls they make, not from this background watcher.
                stop.wait(2.0)
            finally:
                if stream is not None:
                    with self._watch_lock:
                        self._watch_streams.discard(stream)
                    with contextlib.suppress(Exception):
                        stream.close()

    def wake_watchers(self) -> None:
        """Close the event streams watch_images threads wait on (from any thread): those whose
        ``stop`` is set end at once; the others reconnect."""
        with self._watch_lock:
            streams = list(self._watch_streams)
        for stream in streams:
            with contextlib.suppress(Exception):
                stream.close()

    # ------------------------------------------------------------------ pulls

    def open_pull(
        self, ref: str, tag: str, auth_config: dict[str, str] | None, *, registry: str, who: str
    ) -> PullStream:
        """Ask the engine to pull ``ref`` (repository) at ``tag`` (a tag or a digest); returns
        the progress stream. Blocking: a pull's own thread calls this.

        ``registry`` and ``who`` (the username, or "") only shape error sentences. Without
        ``auth_config`` no credentials are sent, not even the server user's docker CLI login:
        which credentials a pull uses is this server's configuration, nothing else.
        """
        client = self._connect()
        headers = {}
        if auth_config is not None:
            headers["X-Registry-Auth"] = docker.auth.encode_header(auth_config)
        try:
            # docker-py's pull() hides the HTTP response inside its generator; the response is
            # what a cancel must close, so the same request is made here one level down.
            response = start_pull(client, ref, tag, headers)
        except docker.errors.APIError as e:
            raise pull_error(ref, registry, who, e.explanation or str(e)) from e
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
            raise self._unavailable(e) from e
        return PullStream(client, response, ref, registry, who)

    def untag_sync(self, ref: str) -> None:
        """Remove one tag (and the image, when it was its last tag and nothing uses it)."""

        def untag(c: docker.APIClient) -> None:
            try:
                c.remove_image(ref, noprune=False)
            except docker.errors.APIError as e:
                if e.status_code not in (404, 409):
                    raise

        self.call(untag)

    def image_disk_use_sync(self) -> ImagesDiskUse:
        """Every local image's size, shared size and container count (``docker system df``),
        the images only where the engine can leave the rest out (API 1.42). Blocking: a worker
        thread. docker-py's df() has no such parameter; its client is a requests session, so
        the same request is made through its public ``get``."""

        def df(c: docker.APIClient) -> dict[str, Any]:
            response = c.get(
                f"{c.base_url}/v{c.api_version}/system/df",
                params={"type": "image"},
                timeout=self.api_timeout,
            )
            if response.status_code != 200:
                raise ContainerKernelError(
                    f"The Docker engine did not report its disk use "
                    f"({response.status_code}: {_short(response.text)}).",
                    status=502,
                )
            found: dict[str, Any] = response.json()
            return found

        data = self.call(df)
        images = tuple(
            ImageDiskUse(
                id=str(item.get("Id", "")),
                tags=tuple(t for t in (item.get("RepoTags") or []) if t and t != "<none>:<none>"),
                repo_digests=tuple(
                    d for d in (item.get("RepoDigests") or []) if d and d != "<none>@<none>"
                ),
                size=int(item.get("Size") or 0),
                shared_size=int(item.get("SharedSize", -1)),
                containers=int(item.get("Containers", -1)),
            )
            for item in data.get("Images") or []
        )
        return ImagesDiskUse(images, int(data.get("LayersSize") or 0))

    # ------------------------------------------------------------------ containers

    async def create(self, spec: ContainerSpec) -> str:
        """Create one container (not started); returns its id."""
        return await self.run(functools.partial(_create, spec=spec))

    async def start(self, container_id: str, image: str) -> None:
        """Start a created container. On a refused start, removes it and says why."""
        await self.run(functools.partial(_start, container_id=container_id, image=image))

    async def state(self, container_id: str) -> ContainerState | None:
        """The container's state, or None when the engine no longer knows it."""

        def inspect(c: docker.APIClient) -> ContainerState | None:
            try:
                s = c.inspect_container(container_id)["State"]
            except docker.errors.NotFound:
                return None
            return ContainerState(
                status=s.get("Status", ""),
                running=bool(s.get("Running")),
                exit_code=int(s.get("ExitCode") or 0),
                oom_killed=bool(s.get("OOMKilled")),
                error=s.get("Error") or "",
            )

        return await self.run(inspect)

    async def kill(self, container_id: str, signum: int) -> None:
        def kill(c: docker.APIClient) -> None:
            try:
                c.kill(container_id, signal=int(signum))
            except docker.errors.APIError as e:
                # 404: already gone; 409: not running. Either way there is nothing to signal.
                if e.status_code not in (404, 409):
                    raise

        await self.run(kill)

    # Kernels' ports are published on the host's loopback; the host ledger books GPUs.
    connection_on_pod_ip = False
    schedules_gpus = False
    signals_reach_kernels = True
    tags_resolve_per_node = False
    cluster = None

    async def address(self, container_id: str) -> str:
        """Where a kernel's published ports are: this host's loopback."""
        return "127.0.0.1"

    async def connection_info(self, container_id: str) -> dict[str, Any]:
        raise EngineRefused(
            "A Docker kernel's connection file is in its private directory, not the engine's."
        )

    # Told of each container this engine removes (its record as listed just before, and when),
    # on the removing thread: quota.py remembers a GPU container's end from it, whichever path
    # removed it. None: nobody is told.
    on_removed: Callable[[ContainerRecord, float], None] | None = None

    async def remove(self, container_id: str) -> None:
        """Force-remove; tolerant of a container that is gone or already being removed."""
        await self.run(functools.partial(self._remove_and_tell, container_id=container_id))

    def _remove_and_tell(self, c: docker.APIClient, *, container_id: str) -> None:
        """Remove a container, then tell on_removed, when it was this call that removed it (a
        container gone already, or being removed by another call, is told of by that one)."""
        listener = self.on_removed
        listed = []
        if listener is not None:
            rows = c.containers(all=True, filters={"id": container_id})
            listed = [_container_record(r) for r in rows if r.get("Id", "") == container_id]
        if _remove(c, container_id=container_id) and listed and listener is not None:
            try:
                listener(listed[0], time.time())
            except Exception as e:  # the removal stands whatever its bookkeeping does
                self.log.warning("After removing container %s: %s", container_id[:12], e)

    async def remove_or_defer(self, container_id: str) -> bool:
        """Remove now; or, when the engine cannot be reached, as soon as it can (a thread retries
        every ``removal_retry_interval`` seconds). False when deferred.

        A kernel container's labels are its GPU booking: one that outlives its kernel because
        the engine was away at that moment (a launch whose start was cut off, a shutdown during
        an outage) must go once the engine is back, not when this server exits.
        """
        try:
            await self.remove(container_id)
            return True
        except EngineUnavailable as e:
            self.log.warning(
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
        """Remove at once what remove_or_defer left for later. The GPU launch path calls this
        before it reads the ledger, so that a booking left by an outage that just ended never
        refuses a launch. Raises EngineUnavailable while the engine is still away."""
        if self._deferred:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._drain_deferred)

    def _drain_deferred(self) -> None:
        """Remove the deferred containers (blocking); EngineUnavailable stops at the first one
        the engine could not be asked about, leaving it and the rest for later."""
        with self._deferred_lock:
            pending = list(self._deferred)
        for container_id in pending:
            try:
                self.call(functools.partial(self._remove_and_tell, container_id=container_id))
            except EngineUnavailable:
                raise
            except Exception as e:  # the engine answered but refused: retrying won't help
                self.log.warning("Could not remove container %s: %s", container_id[:12], e)
            with self._deferred_lock:
                self._deferred.discard(container_id)

    def _retry_removals(self) -> None:
        while True:
            closing = self._closing.wait(self.removal_retry_interval)
            with self._deferred_lock:
                if closing or not self._deferred:
                    # Closed: the next server's recovery removes what is left (their labels
                    # name no live owner).
                    self._retrier = None
                    return
            with contextlib.suppress(EngineUnavailable):  # still away: try again later
                self._drain_deferred()

    async def logs_tail(self, container_id: str, lines: int = 20) -> str:
        def logs(c: docker.APIClient) -> str:
            try:
                raw = c.logs(container_id, stdout=True, stderr=True, tail=lines)
            except docker.errors.NotFound:
                return ""
            return raw.decode("utf-8", "replace").strip()

        return await self.run(logs)

    async def details(self, container_id: str) -> ContainerDetails | None:
        """What ``docker inspect`` says of a container, or None when the engine no longer knows
        it."""

        def inspect(c: docker.APIClient) -> ContainerDetails | None:
            try:
                return container_details(c.inspect_container(container_id))
            except docker.errors.NotFound:
                return None

        return await self.run(inspect)

    def open_logs_sync(self, container_id: str, tail: int, follow: bool) -> FollowedLog | None:
        """The container's last ``tail`` lines, then (``follow``) each new line until the
        container stops or the stream is closed; None when the engine does not know the
        container. Blocking, and for as long as the container runs when following: a thread of
        the caller's own, not the engine's pool (a few open views would fill it)."""

        def open_stream(c: docker.APIClient) -> Any:
            try:
                # A streamed response has no read timeout (docker-py disables it on the
                # socket): a quiet kernel keeps its stream open, and close() ends it.
                return c.logs(
                    container_id,
                    stdout=True,
                    stderr=True,
                    stream=True,
                    follow=follow,
                    tail=max(0, int(tail)),
                    timestamps=True,
                )
            except docker.errors.NotFound:
                return None

        stream = self.call(open_stream)
        return None if stream is None else FollowedLog(stream)

    def list_containers_sync(self, labels: dict[str, str | None]) -> list[ContainerRecord]:
        """Containers (running or not) carrying all of ``labels`` (value None: any value)."""
        filters = [k if v is None else f"{k}={v}" for k, v in labels.items()]
        rows = self.call(lambda c: c.containers(all=True, filters={"label": filters}))
        return [_container_record(row) for row in rows]

    async def list_containers(self, labels: dict[str, str | None]) -> list[ContainerRecord]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(self.list_containers_sync, labels)
        )

    # ------------------------------------------------------------------ one-shot containers

    def run_oneshot_sync(
        self,
        image: str,
        command: list[str],
        *,
        labels: dict[str, str],
        timeout: float,
        entrypoint: list[str] | None = None,
        user: str | None = None,
        cap_add: list[str] | None = None,
        no_new_privileges: bool = True,
        environment: dict[str, str] | None = None,
    ) -> OneshotResult:
        """Run ``command`` in a throw-away container of ``image`` and return what it printed.

        Blocking, and for as long as ``timeout`` seconds: call from a worker thread only (not the
        engine's pool, which a few slow images would otherwise fill). The container only looks
        at its image: no network, no mounts, small memory and process limits. It is removed
        whatever happens; one still running after ``timeout`` is killed first, and the result
        says ``timed_out``. ``entrypoint``: None keeps the image's ENTRYPOINT, [] clears it;
        ``user``: None runs as the image's USER. Hardened like kernels: no capabilities but
        ``cap_add``, and no-new-privileges unless ``no_new_privileges`` is False.
        ``environment``: added to the image's.
        """

        def run(c: docker.APIClient) -> OneshotResult:
            host_config = c.create_host_config(
                network_mode="none",
                init=True,  # reaps whatever an entrypoint forks, and forwards our kill
                mem_limit="512m",
                pids_limit=128,
                # Reading the output back needs a driver the engine can read from, whatever the
                # daemon's default (syslog, none, ...) is.
                log_config=docker.types.LogConfig(type="json-file", config={"max-size": "1m"}),
                **hardening_options(cap_add or [], no_new_privileges),
            )
            try:
                created = c.create_container(
                    image=image,
                    command=command,
                    labels=labels,
                    user=user,
                    entrypoint=[""] if entrypoint == [] else entrypoint,
                    environment=environment or None,
                    host_config=host_config,
                )
            except docker.errors.ImageNotFound as e:
                raise _image_missing(image) from e
            except docker.errors.APIError as e:
                raise EngineRefused(
                    f"The Docker engine refused to create a one-shot container for {image}: "
                    f"{_short(e.explanation or str(e))}"
                ) from e
            container_id = str(created["Id"])
            try:
                try:
                    c.start(container_id)
                    started = time.monotonic()
                    exit_code, timed_out = -1, False
                    try:
                        status = c.wait(container_id, timeout=timeout)
                        exit_code = int(status.get("StatusCode", -1))
                    except (requests.exceptions.Timeout, requests.exceptions.ConnectionError):
                        # Over a unix socket docker-py reports the wait's read timeout as a
                        # ConnectionError; one that came early is the engine's trouble, not ours.
                        if time.monotonic() - started < timeout:
                            raise
                        timed_out = True
                        with contextlib.suppress(docker.errors.APIError):  # 409: it just ended
                            c.kill(container_id)
                    # Separate streams: callers parse stdout, which entrypoints also print to.
                    stdout = c.logs(container_id, stdout=True, stderr=False, tail=500)
                    stderr = c.logs(container_id, stdout=False, stderr=True, tail=500)
                except docker.errors.APIError as e:
                    raise EngineRefused(
                        f"The Docker engine refused to run a one-shot container for {image}: "
                        f"{_short(e.explanation or str(e))}"
                    ) from e
                return OneshotResult(
                    exit_code=exit_code,
                    stdout=stdout.decode("utf-8", "replace"),
                    stderr=stderr.decode("utf-8", "replace"),
                    timed_out=timed_out,
                    image_id=self._oneshot_image_id(c, container_id, image),
                )
            finally:
                try:
                    c.remove_container(container_id, force=True, v=True)
                except docker.errors.APIError as e:
                    if e.status_code not in (404, 409):  # gone, or already being removed
                        self.log.warning(
                            "Could not remove one-shot container %s: %s", container_id[:12], e
                        )
                except requests.exceptions.RequestException as e:
                    # The engine went away: nothing to remove it with. Its labels tell it apart.
                    self.log.warning(
                        "Could not remove one-shot container %s: %s", container_id[:12], e
                    )

        return self.call(run)

    def _oneshot_image_id(self, c: docker.APIClient, container_id: str, image: str) -> str:
        """The id of the image a one-shot container ran: ``image`` itself when it is an id
        (the probe runs by id), else the container's Image field ("" if it cannot be read)."""
        if image.startswith("sha256:") and len(image) == 71:
            return image
        try:
            return str(c.inspect_container(container_id).get("Image") or "")
        except (docker.errors.APIError, requests.exceptions.RequestException):
            return ""


class PullStream:
    """The engine's progress messages for one pull; :meth:`close` from any thread cancels it
    (the engine abandons a pull whose only client went away)."""

    def __init__(
        self, client: docker.APIClient, response: Any, ref: str, registry: str, who: str
    ) -> None:
        self._client = client
        self._response = response
        self._ref, self._registry, self._who = ref, registry, who
        self.closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            for item in stream_items(self._client, self._response):
                if "error" in item:
                    detail = item.get("errorDetail") or {}
                    raise pull_error(
                        self._ref, self._registry, self._who, detail.get("message") or item["error"]
                    )
                yield item
        except ContainerKernelError:
            raise
        except Exception as e:
            # After our own shutdown the reader fails in one of several ways (urllib3's
            # ProtocolError, OSError, even AttributeError): all of them mean "cancelled".
            if self.closed:
                return
            raise PullFailed(
                f"The pull of {self._ref} broke off: the engine connection ended "
                f"({_short(str(e), 200)})."
            ) from e

    def close(self) -> None:
        """Cancel: shut the socket down, which wakes a thread blocked reading it at once (the
        engine then logs "Not continuing with pull after error: context canceled" and keeps no
        partial layers). ``response.close()`` is not used: it blocks while a read is pending."""
        self.closed = True
        shutdown_response_socket(self._response)


class FollowedLog:
    """A container's log as lines (backend.LogStream); :meth:`close` from any thread ends the
    iteration at once (the socket under the stream is shut down)."""

    # A line longer than this (a notebook printing without a line break) is cut into pieces of
    # this size, so that the reader's memory stays bounded.
    max_line = 64 * 1024

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.closed = False

    def __iter__(self) -> Iterator[LogLine]:
        pending = b""
        try:
            for chunk in self._stream:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    yield log_line(raw)
                while len(pending) > self.max_line:
                    yield log_line(pending[: self.max_line])
                    pending = pending[self.max_line :]
        except Exception:
            # After close() the reader fails in one of several ways (urllib3's ProtocolError,
            # OSError, AttributeError): all mean "closed". Otherwise the engine went away
            # mid-stream, which ends the log the same way: the caller asks the container's
            # state next, and says what it finds.
            pass
        if pending and not self.closed:
            yield log_line(pending)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):
            self._stream.close()


def log_line(raw: bytes) -> LogLine:
    """One line of ``docker logs --timestamps``: "<RFC 3339 time> <text>"."""
    text = raw.decode("utf-8", "replace").rstrip("\r")
    stamp, _, rest = text.partition(" ")
    if len(stamp) >= 20 and stamp[:4].isdigit() and "T" in stamp:
        return LogLine(stamp, rest)
    return LogLine("", text)


def container_details(data: dict[str, Any]) -> ContainerDetails:
    """The parts of ``docker inspect``'s answer that a kernel's view shows."""
    state = data.get("State") or {}
    config = data.get("Config") or {}
    host = data.get("HostConfig") or {}
    mounts = tuple(
        MountInfo(
            type=str(m.get("Type") or ""),
            source=str(m.get("Source") or ""),
            target=str(m.get("Destination") or ""),
            read_only=not m.get("RW", True),
        )
        for m in data.get("Mounts") or []
    )
    never = "0001-01-01T00:00:00Z"
    return ContainerDetails(
        id=str(data.get("Id") or ""),
        name=str(data.get("Name") or "").lstrip("/"),
        image_id=str(data.get("Image") or ""),
        image_ref=str(config.get("Image") or ""),
        labels=dict(config.get("Labels") or {}),
        status=str(state.get("Status") or ""),
        created=str(data.get("Created") or ""),
        started_at="" if state.get("StartedAt") in (None, never) else str(state["StartedAt"]),
        finished_at="" if state.get("FinishedAt") in (None, never) else str(state["FinishedAt"]),
        exit_code=int(state.get("ExitCode") or 0),
        oom_killed=bool(state.get("OOMKilled")),
        error=str(state.get("Error") or ""),
        mounts=mounts,
        tmpfs=tuple(sorted((host.get("Tmpfs") or {}).keys())),
    )


_AUTH_MARKERS = (
    "unauthorized",
    "authentication required",
    "no basic auth credentials",
    "denied",
    "incorrect username or password",
    "401",
)


def pull_error(ref: str, registry: str, who: str, message: str) -> PullFailed | RegistryAuthFailed:
    """The sentence for a failed pull: an authorization failure names the registry and the user;
    anything else quotes the engine."""
    low = message.lower()
    said = _short(message, 300)
    if any(marker in low for marker in _AUTH_MARKERS):
        login = f"the login of {who!r}" if who else "a pull without credentials"
        hint = (
            "Check the username and password (or token) for this registry"
            if who
            else "Give credentials for this registry (your own, or ask an administrator to set "
            "RegistryCredentials.registry_auth)"
        )
        return RegistryAuthFailed(
            f"Authorization failed: the registry {registry} refused {login} for {ref}. "
            f"{hint}, then pull again. (registry said: {said})"
        )
    if "not found" in low or "manifest unknown" in low or "does not exist" in low:
        return PullFailed(
            f"The registry {registry} has no image {ref} (or this login may not see it). "
            f"Check the name and tag. (registry said: {said})"
        )
    if "connection refused" in low or "no such host" in low or "i/o timeout" in low:
        return PullFailed(
            f"The registry {registry} cannot be reached from the Docker engine, so {ref} cannot "
            f"be pulled. (engine said: {said})"
        )
    return PullFailed(f"The pull of {ref} from {registry} failed: {said}")


def hardening_options(cap_add: list[str], no_new_privileges: bool) -> dict[str, Any]:
    """create_host_config arguments shared by kernel and probe containers: every capability
    dropped but ``cap_add``, and no-new-privileges."""
    return {
        "cap_drop": ["ALL"],
        "cap_add": list(cap_add) or None,
        "security_opt": ["no-new-privileges"] if no_new_privileges else None,
    }


def _create(c: docker.APIClient, *, spec: ContainerSpec) -> str:
    host_config = c.create_host_config(
        # Structured mounts, not "source:target:mode" bind strings, which the engine splits on
        # ':' (a path holding one would be read as another mount); and the engine refuses a
        # missing source instead of creating it, as root, on the host.
        mounts=[
            docker.types.Mount(m.target, m.source, type="bind", read_only=m.read_only)
            for m in spec.mounts
        ]
        or None,
        tmpfs=spec.tmpfs or None,
        read_only=spec.read_only or None,
        **hardening_options(spec.cap_add, spec.no_new_privileges),
        shm_size=spec.shm_size,
        ulimits=[
            docker.types.Ulimit(name=name, soft=soft, hard=hard)
            for name, (soft, hard) in spec.ulimits.items()
        ]
        or None,
        runtime=spec.runtime,
        network_mode=spec.network_mode,
        mem_limit=spec.mem_limit,
        pids_limit=spec.pids_limit,
        init=spec.init,
        port_bindings={port: [addr] for port, addr in spec.port_bindings.items()} or None,
        device_requests=[docker.types.DeviceRequest(**d) for d in spec.device_requests] or None,
        # json-file whatever the daemon's default: rotated, and readable for the log tails that
        # error sentences quote.
        log_config=docker.types.LogConfig(
            type="json-file",
            config={"max-size": spec.log_max_size, "max-file": str(spec.log_max_files)},
        ),
    )
    try:
        created = c.create_container(
            image=spec.image,
            command=spec.command,
            name=spec.name,
            labels=spec.labels,
            environment=spec.environment,
            user=spec.user,
            working_dir=spec.working_dir,
            entrypoint=[""] if spec.entrypoint == [] else spec.entrypoint,
            host_config=host_config,
            ports=list(spec.port_bindings) or None,
        )
    except docker.errors.ImageNotFound as e:
        raise _image_missing(spec.image, then_start=True) from e
    except docker.errors.APIError as e:
        raise EngineRefused(
            f"The Docker engine refused to create the kernel container for {spec.image}: "
            f"{_short(e.explanation or str(e))}"
        ) from e
    return str(created["Id"])


def _container_record(row: dict[str, Any]) -> ContainerRecord:
    """A row of the engine's container list as a record."""
    return ContainerRecord(
        id=row["Id"],
        name=(row.get("Names") or ["?"])[0].lstrip("/"),
        image=row.get("Image", ""),
        labels=dict(row.get("Labels") or {}),
        status=row.get("State", ""),
        created=float(row.get("Created") or 0),
    )


def _remove(c: docker.APIClient, *, container_id: str) -> bool:
    """Force-remove; False when the container was gone, or is being removed by another call."""
    try:
        c.remove_container(container_id, force=True, v=True)
    except docker.errors.APIError as e:
        if e.status_code not in (404, 409):  # gone, or already being removed
            raise
        return False
    return True


def _start(c: docker.APIClient, *, container_id: str, image: str) -> None:
    try:
        c.start(container_id)
    except docker.errors.APIError as e:
        with contextlib.suppress(docker.errors.APIError):
            c.remove_container(container_id, force=True, v=True)
        raise EngineRefused(
            f"The Docker engine refused to start the kernel container for {image}: "
            f"{_short(e.explanation or str(e))}. Check the container options configured for "
            "this image (ulimits, runtime, shm size, memory, GPUs)."
        ) from e


def _image_missing(image: str, then_start: bool = False) -> ImageMissing:
    then = ", then start the kernel again" if then_start else ""
    return ImageMissing(
        f"The image {image} is not on this host. Pull or build it first "
        f"(`docker pull {image}`){then}."
    )


def _short(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ------------------------------------------------------------------ docker-py's private parts
# Listed, with why, in _private.py (the one list of this project's private uses).


def start_pull(client: docker.APIClient, ref: str, tag: str, headers: dict[str, str]) -> Any:
    """``POST /images/create`` as docker-py's pull() makes it, returning the streamed response
    (which pull() hides, and which a cancel must reach)."""
    response = client._post(
        client._url("/images/create"),
        params={"fromImage": ref, "tag": tag},
        headers=headers,
        stream=True,
        timeout=None,
    )
    client._raise_for_status(response)
    return response


def stream_items(client: docker.APIClient, response: Any) -> Iterator[dict[str, Any]]:
    """The decoded JSON messages of a streamed engine response (a pull's progress)."""
    yield from client._stream_helper(response, decode=True)


def shutdown_response_socket(response: Any) -> None:
    """Shut the socket under a streamed response down (from any thread)."""
    raw: Any = getattr(response, "raw", None)
    with contextlib.suppress(AttributeError, OSError):
        raw._fp.fp.raw._sock.shutdown(socket.SHUT_RDWR)


class _ClosingUnixConnection(unixconn.UnixHTTPConnection):
    """docker-py's unix connection, closing its socket when the connect fails."""

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.unix_socket)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class _ClosingUnixPool(unixconn.UnixHTTPConnectionPool):
    def _new_conn(self) -> _ClosingUnixConnection:
        return _ClosingUnixConnection(self.base_url, self.socket_path, self.timeout)


class _ClosingUnixAdapter(unixconn.UnixHTTPAdapter):
    def get_connection(self, url: Any, proxies: Any = None) -> _ClosingUnixPool:
        with self.pools.lock:
            pool = self.pools.get(url)
            if pool:
                return pool
            pool = _ClosingUnixPool(url, self.socket_path, self.timeout, maxsize=self.max_pool_size)
            self.pools[url] = pool
        return pool


def close_sockets_of_failed_connects(client: docker.APIClient, base_url: str) -> None:
    """Give ``client`` (a unix-socket client of this project's, no one else's) connections that
    close their socket when the connect fails."""
    if not base_url.startswith(("unix://", "http+unix://")):
        return
    socket_url = "http+unix://" + base_url.split("://", 1)[1]
    adapter = _ClosingUnixAdapter(socket_url, timeout=client.timeout)
    client._custom_adapter = adapter
    client.mount("http+docker://", adapter)
