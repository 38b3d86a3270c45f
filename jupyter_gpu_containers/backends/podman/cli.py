"""The Podman backend's connection to its engine: the ``podman`` command itself, run as the server's
user (rootless: there is no daemon, and no socket a service must keep open), on a thread pool of
its own so that the event loop never waits for it; its JSON read; its failures said in sentences.

Why the command and not a REST client: Podman 4.3's Docker-compatible API (docker-py) cannot name
CDI devices (it appends cgroup permissions to the name, or takes it for a path) and docker-py
refuses ``--userns=keep-id``; its own REST API needs ``podman system service`` running for each
user, a process this server would have to start, watch and stop. The command needs neither, costs
about 0.1 s a call, and is what a Slurm job step runs on a compute node, where no socket of this
server reaches.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from ...base.errors import ContainerKernelError, EngineRefused, EngineUnavailable
from ..docker_formats import short

T = TypeVar("T")


class CLISettings(Protocol):
    """What the client reads of the engine's configuration, each time it needs it."""

    @property
    def podman_command(self) -> list[str]: ...

    @property
    def api_timeout(self) -> float: ...

    @property
    def max_workers(self) -> int: ...


class PodmanFailed(ContainerKernelError):
    """``podman`` ran and said no; ``said`` is its last words (stderr, without "Error: ")."""

    status = 502
    reason_phrase = "Podman refused"

    def __init__(self, sentence: str, said: str) -> None:
        super().__init__(sentence)
        self.said = said

    @property
    def not_found(self) -> bool:
        low = self.said.lower()
        return "no such container" in low or "no container with name or id" in low

    @property
    def image_not_known(self) -> bool:
        low = self.said.lower()
        return "image not known" in low or "no such image" in low


def last_words(stderr: str) -> str:
    """What podman said last (its error line, "Error: " taken off; warnings about mounts that
    every rootless call prints are not its answer)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    chosen = errors[-1] if errors else (lines[-1] if lines else "")
    return chosen.removeprefix("Error:").strip()


def end_process(process: subprocess.Popen[bytes]) -> None:
    """End a podman process this backend started (a followed log, events, a pull), and close its
    pipes; harmless when it has ended already."""
    with contextlib.suppress(Exception):
        process.kill()
    with contextlib.suppress(Exception):
        process.wait(timeout=5)
    for stream in (process.stdout, process.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.close()


class PodmanCLI:
    """The ``podman`` command, as the server's user, and the thread pool its calls run on."""

    def __init__(self, settings: CLISettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._executor_instance: ThreadPoolExecutor | None = None

    @property
    def command(self) -> list[str]:
        return list(self.settings.podman_command) or ["podman"]

    @property
    def executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor_instance is None:
                self._executor_instance = ThreadPoolExecutor(
                    max_workers=self.settings.max_workers,
                    thread_name_prefix="gpu-containers-podman",
                )
            return self._executor_instance

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The server's environment and ``extra``; never a terminal (podman then draws no
        progress bars)."""
        env = dict(os.environ)
        env.pop("TERM", None)
        env.update(extra or {})
        return env

    def unavailable(self, e: BaseException) -> EngineUnavailable:
        return EngineUnavailable(
            f"Podman cannot be run here ({' '.join(self.command)}): {short(str(e))}. Install it "
            "(`sudo apt install podman uidmap`), or ask an administrator to point this server "
            "at the podman command; `jupyter gpu-containers doctor` says what else rootless "
            "Podman needs.",
            setting="PodmanEngine.podman_command",
        )

    def run(
        self,
        args: list[str],
        *,
        timeout: float | None = None,
        what: str = "",
        stdin: bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> str:
        """``podman args…`` here, in the calling thread: its stdout. PodmanFailed when it exits
        with an error (``what`` names the action in the sentence); EngineUnavailable when it
        cannot be run or does not answer within ``timeout`` (api_timeout by default). ``env``:
        added to podman's environment (values a container takes by name stay off its command
        line, which every local account can read in /proc)."""
        return self.run_both(args, timeout=timeout, what=what, stdin=stdin, env=env)[0]

    def run_both(
        self,
        args: list[str],
        *,
        timeout: float | None = None,
        what: str = "",
        stdin: bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> tuple[str, str]:
        """What :meth:`run` does, and what podman printed on stderr too."""
        limit = self.settings.api_timeout if timeout is None else timeout
        try:
            done = subprocess.run(
                [*self.command, *args],
                input=stdin,
                capture_output=True,
                timeout=limit,
                env=self.environment(env),
                check=False,
            )
        except FileNotFoundError as e:
            raise self.unavailable(e) from e
        except subprocess.TimeoutExpired as e:
            raise EngineUnavailable(
                f"Podman did not answer within {limit:.0f} s ({' '.join(args[:2])}): the host may "
                "be overloaded, or its storage locked by another podman command. Try again in a "
                "while.",
                setting="PodmanEngine.api_timeout",
            ) from e
        stderr = done.stderr.decode("utf-8", "replace")
        if done.returncode != 0:
            said = last_words(stderr)
            raise PodmanFailed(
                f"Podman refused to {what or ' '.join(args[:2])}: {short(said)}", said
            )
        return done.stdout.decode("utf-8", "replace"), stderr

    def json(self, args: list[str], *, what: str = "", timeout: float | None = None) -> Any:
        out = self.run(args, what=what, timeout=timeout)
        try:
            return json.loads(out) if out.strip() else None
        except ValueError as e:
            raise EngineRefused(
                f"Podman's answer to `podman {' '.join(args[:2])}` was not JSON: {short(out, 200)}"
            ) from e

    def popen(
        self, args: list[str], *, merge_stderr: bool = False, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """``podman args…`` running, its stdout a pipe to read (a log followed, events, a pull's
        progress), with its stderr (``merge_stderr``) or on a pipe of its own; the caller ends
        it."""
        try:
            return subprocess.Popen(
                [*self.command, *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                env=self.environment(env),
                start_new_session=True,  # a signal to this server's group does not end it
            )
        except FileNotFoundError as e:
            raise self.unavailable(e) from e

    async def in_pool(self, fn: Callable[[], T]) -> T:
        """Run the blocking ``fn()`` on the thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, fn)

    async def run_async(self, args: list[str], *, what: str = "") -> str:
        return await self.in_pool(functools.partial(self.run, args, what=what))

    async def json_async(self, args: list[str], *, what: str = "") -> Any:
        return await self.in_pool(functools.partial(self.json, args, what=what))

    def close(self) -> None:
        with self._lock:
            if self._executor_instance is not None:
                self._executor_instance.shutdown(wait=False, cancel_futures=True)
                self._executor_instance = None
