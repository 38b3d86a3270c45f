"""The container primitives the service's own builder (images/builder.py) runs a build with, on
the Docker engine (backend.BuildSteps): a confined, idle container per stage, each RUN an exec in
it, tars put and got, the writable layer measured, one commit with the config the service
computed, and everything removed. The engine never receives a Dockerfile, and never builds.

A stage's container is confined as a kernel's is (containers.hardening_options: every
capability dropped, no-new-privileges), with a pids limit, a memory limit (swap included) and a
CPU limit, and no network, or, where the administrator lets builds reach one, a bridge network
this backend makes for builds only (inter-container traffic off; never the host's network, never
the kernels'). Its PID 1 is Docker's init (reaping what steps leave) running ``/bin/sh -c 'read
_'`` on a stdin nobody writes: a base without /bin/sh is refused in a sentence.

Calls that stream or take long (an exec's output, an archive put or got, a commit) use a client
of their own without a read timeout: a step may print nothing for minutes. Blocking: the
build's own threads.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import docker
import docker.errors
import docker.types
import requests.exceptions

from ...base import labels as L
from ...base.errors import ContainerKernelError, EngineRefused, ImageMissing
from ..backend import ImageConfig, StepLimits
from .client import EngineClient
from .containers import hardening_options, image_labels
from .private import close_exec_stream, close_sockets_of_failed_connects
from .sentences import short

# The network builds reach, where ImageSaves.build_network lets them: this backend's own.
BUILDS_NETWORK = "jupyter-gpu-containers-builds"
_ICC = "com.docker.network.bridge.enable_icc"
IDLE = ["/bin/sh", "-c", "read _"]


class DockerBuildSteps:
    """BuildSteps on one Docker engine (the Engine's client)."""

    def __init__(self, client: EngineClient) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._stream_api: docker.APIClient | None = None

    # ------------------------------------------------------------------ plumbing

    def _api(self) -> docker.APIClient:
        return self._client.connect()

    def _streams(self) -> docker.APIClient:
        """A client whose reads never time out, for the calls that stream or take long."""
        with self._lock:
            if self._stream_api is None:
                api = self._api()
                url = self._client.settings.resolved_url
                streams = docker.APIClient(base_url=url, version=api.api_version, timeout=None)
                close_sockets_of_failed_connects(streams, url)
                self._stream_api = streams
            return self._stream_api

    def close(self) -> None:
        with self._lock:
            if self._stream_api is not None:
                self._stream_api.close()
                self._stream_api = None

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except docker.errors.ImageNotFound as e:
            raise ImageMissing(f"The image of a build step is gone: {short(str(e), 200)}") from e
        except docker.errors.APIError as e:
            raise EngineRefused(
                f"The Docker engine refused to {what}: {short(e.explanation or str(e))}"
            ) from e
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
            raise self._client.unavailable(e) from e

    # ------------------------------------------------------------------ containers

    def _network(self, limits: StepLimits) -> str:
        if not limits.network:
            return "none"
        api = self._api()
        try:
            found = api.inspect_network(BUILDS_NETWORK)
        except docker.errors.NotFound:
            with contextlib.suppress(docker.errors.APIError):  # 409: made meanwhile
                api.create_network(
                    BUILDS_NETWORK,
                    driver="bridge",
                    options={_ICC: "false"},
                    labels={L.PREFIX + "builds-network": "true"},
                    check_duplicate=True,
                )
            found = api.inspect_network(BUILDS_NETWORK)
        options = found.get("Options") or {}
        if found.get("Driver") != "bridge" or options.get(_ICC) != "false":
            # Someone else's network of that name: builds must not join it.
            raise EngineRefused(
                f"The Docker network {BUILDS_NETWORK} is not the one this service makes for "
                "builds (a bridge with inter-container traffic off): remove it (docker network "
                "rm), and the next build makes it again."
            )
        return BUILDS_NETWORK

    def create_stage(self, image_id: str, *, labels: dict[str, str], limits: StepLimits) -> str:
        api = self._api()
        network = self._network(limits)
        host_config = api.create_host_config(
            network_mode=network,
            init=True,
            mem_limit=limits.memory or None,
            memswap_limit=limits.memory or None,
            nano_cpus=int(limits.cpus * 1e9) or None,
            pids_limit=limits.pids or None,
            log_config=docker.types.LogConfig(type="json-file", config={"max-size": "1m"}),
            **hardening_options([], True),
        )
        created = self._call(
            "create a build step's container",
            lambda: api.create_container(
                image=image_id,
                command=IDLE,
                entrypoint=[""],
                # The image's own user and workdir (each step says its own): the engine's
                # commit fills an empty one of the config from the container's.
                stdin_open=True,
                # The base's labels of this project's namespace emptied: a build's container is
                # never a kernel's or a GPU holder's record, whatever its base says.
                labels=L.container_labels(labels, image_labels(api, image_id)),
                host_config=host_config,
            ),
        )
        container = str(created["Id"])
        try:
            self._call("start a build step's container", lambda: api.start(container))
            state = api.inspect_container(container).get("State") or {}
            if not state.get("Running"):
                raise ContainerKernelError(
                    "A build runs its steps with the image's /bin/sh, which this base does not "
                    "start (it has none, or it exited at once): build on an image that has one.",
                    status=400,
                )
        except BaseException:
            self.remove_container(container)
            raise
        return container

    def create_source(self, image_id: str, *, labels: dict[str, str]) -> str:
        api = self._api()
        host_config = api.create_host_config(network_mode="none", **hardening_options([], True))
        created = self._call(
            "create a build's source container",
            lambda: api.create_container(
                image=image_id,
                # Never started: a command only because the engine wants one.
                command=["/never-started"],
                entrypoint=[""],
                labels=L.container_labels(labels, image_labels(api, image_id)),
                host_config=host_config,
            ),
        )
        return str(created["Id"])

    def image_config(self, image_id: str) -> ImageConfig:
        data = self._call("inspect a build's base", lambda: self._api().inspect_image(image_id))
        config = data.get("Config") or {}
        return ImageConfig(
            env=tuple(config.get("Env") or ()),
            cmd=tuple(config["Cmd"]) if config.get("Cmd") else None,
            entrypoint=tuple(config["Entrypoint"]) if config.get("Entrypoint") else None,
            workdir=str(config.get("WorkingDir") or ""),
            user=str(config.get("User") or ""),
            labels=dict(config.get("Labels") or {}),
            exposed_ports=tuple(config.get("ExposedPorts") or {}),
            volumes=tuple(config.get("Volumes") or {}),
            stop_signal=str(config.get("StopSignal") or ""),
            shell=tuple(config["Shell"]) if config.get("Shell") else None,
        )

    # ------------------------------------------------------------------ steps

    def exec_step(
        self,
        container: str,
        argv: list[str],
        *,
        user: str,
        workdir: str,
        env: list[str],
        on_line: Callable[[str], None],
        cancelled: threading.Event,
    ) -> int:
        api = self._api()
        created = self._call(
            "run a build step",
            lambda: api.exec_create(
                container,
                argv,
                stdout=True,
                stderr=True,
                user=user or "0",
                environment=env,
                workdir=workdir or "/",
            ),
        )
        exec_id = str(created["Id"])
        finished = threading.Event()

        def stop_on_cancel() -> None:
            # The engine has no way to end an exec: the step's container is killed instead
            # (the build is over: its containers are removed next).
            while not finished.is_set():
                if cancelled.wait(0.5) and not finished.is_set():
                    with contextlib.suppress(Exception):
                        api.kill(container)
                    return

        watcher = threading.Thread(target=stop_on_cancel, name="gpu-containers-build-cancel")
        watcher.daemon = True
        watcher.start()
        output: Any = None
        try:
            output = self._call(
                "run a build step", lambda: self._streams().exec_start(exec_id, stream=True)
            )
            pending = b""
            try:
                for chunk in output:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        on_line(line.decode("utf-8", "replace").rstrip("\r"))
                    if len(pending) > 1 << 16:  # a "line" that never ends: shown in parts
                        on_line(pending.decode("utf-8", "replace"))
                        pending = b""
            except (requests.exceptions.RequestException, OSError):
                if not cancelled.is_set():
                    raise
            if pending:
                on_line(pending.decode("utf-8", "replace"))
        finally:
            finished.set()
            if output is not None:
                close_exec_stream(output)  # the exec's own connection (a hijacked socket)
        if cancelled.is_set():
            return -1
        result = self._call("read a build step's status", lambda: api.exec_inspect(exec_id))
        code = result.get("ExitCode")
        return int(code) if code is not None else -1

    def put_archive(self, container: str, path: str, data: bytes | BinaryIO) -> None:
        ok = self._call(
            "copy files into a build step",
            lambda: self._streams().put_archive(container, path, data),
        )
        if not ok:
            raise EngineRefused("The Docker engine refused to copy files into a build step.")

    def get_archive(self, container: str, path: str) -> BinaryIO:
        try:
            chunks, _stat = self._streams().get_archive(container, path)
        except docker.errors.NotFound:
            raise ContainerKernelError(
                f"{path[:200]} is not in the stage or image a build copies from.", status=400
            ) from None
        except docker.errors.APIError as e:
            raise EngineRefused(
                f"The Docker engine refused to read {path[:200]} of a build step: "
                f"{short(e.explanation or str(e))}"
            ) from e
        return _ChunkReader(iter(chunks))  # type: ignore[return-value]

    def layer_size(self, container: str) -> int:
        # The list's size=1 is the public way to the writable layer's size (a du of it).
        rows = self._call(
            "measure a build step",
            lambda: self._streams().containers(all=True, filters={"id": container}, size=True),
        )
        return max((int(row.get("SizeRw") or 0) for row in rows), default=0)

    def commit(self, container: str, config: ImageConfig, labels: dict[str, str]) -> str:
        api = self._api()
        had = (api.inspect_container(container).get("Config") or {}).get("Labels") or {}
        # The engine merges the container's labels into the image's: one the image must not
        # carry is given an empty value here instead (the base's labels in this project's
        # namespace, which only the service writes).
        merged = {**{k: "" for k in had if k not in labels}, **labels}
        cmd = list(config.cmd) if config.cmd else None
        entrypoint = list(config.entrypoint) if config.entrypoint else None
        if cmd is None and entrypoint is None:
            # The engine would take the stage's idle command for an image with neither.
            cmd = list(config.shell or ("/bin/sh",))[:1]
        conf: dict[str, Any] = {
            "Env": list(config.env),
            "Cmd": cmd,
            "Entrypoint": entrypoint,
            "WorkingDir": config.workdir,
            "User": config.user,
            "Labels": merged,
            "ExposedPorts": {port: {} for port in config.exposed_ports} or None,
            "Volumes": {path: {} for path in config.volumes} or None,
            "StopSignal": config.stop_signal or None,
            "Shell": list(config.shell) if config.shell else None,
        }
        result = self._call(
            "commit a build's image",
            lambda: self._streams().commit(container, conf=conf, pause=True),
        )
        return str(result["Id"])

    def remove_container(self, container: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            try:
                self._api().remove_container(container, force=True, v=True)
            except docker.errors.APIError as e:
                if e.status_code not in (404, 409):  # gone, or being removed
                    raise EngineRefused(
                        f"The Docker engine could not remove a build step's container: "
                        f"{short(e.explanation or str(e))}"
                    ) from e

    def remove_image(self, image_id: str) -> None:
        try:
            self._api().remove_image(image_id, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            raise EngineRefused(
                f"The Docker engine could not remove a build's image: "
                f"{short(e.explanation or str(e))}"
            ) from e


class _ChunkReader(io.RawIOBase):
    """The engine's archive, a stream of chunks, as a file tarfile reads."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        # Read to the end: the engine's connection goes back to its pool only then (a tar
        # reader stops at the archive's end marker, before the padding after it).
        if not self.closed:
            with contextlib.suppress(Exception):
                for _chunk in self._chunks:
                    pass
        super().close()

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n
