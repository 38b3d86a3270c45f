"""A container's log on Podman: its last lines as text (what error sentences quote), and its
stream read line by line (``podman logs --timestamps``), followed until the container stops or
the reader closes it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

from ..backend import LogLine
from ..docker_formats import log_line
from .cli import PodmanCLI, PodmanFailed, end_process


def tail(cli: PodmanCLI, *, container_id: str, lines: int) -> str:
    """The container's last ``lines`` lines, both streams ("" when Podman does not know it)."""
    try:
        return cli.run(
            ["logs", "--tail", str(max(0, int(lines))), container_id], what="read a kernel's log"
        ).strip()
    except PodmanFailed as e:
        if e.not_found:
            return ""
        raise


class FollowedLog:
    """A container's log as lines (backend.LogStream), from a ``podman logs`` process;
    :meth:`close` from any thread ends the iteration (the process is ended)."""

    # A line longer than this (a notebook printing without a line break) is cut into pieces.
    max_line = 64 * 1024

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process
        self.closed = False

    def __iter__(self) -> Iterator[LogLine]:
        stream = self._process.stdout
        assert stream is not None
        try:
            while True:
                raw = stream.readline(self.max_line)
                if not raw:
                    break
                yield log_line(raw.rstrip(b"\n"))
        except (OSError, ValueError):
            pass  # closed under us: the log ends
        finally:
            end_process(self._process)

    def close(self) -> None:
        self.closed = True
        end_process(self._process)


def open_stream(
    cli: PodmanCLI, *, container_id: str, tail: int, follow: bool
) -> FollowedLog | None:
    """The container's log as a stream (None when Podman does not know the container).
    ``podman logs`` writes the container's stderr to its own stderr: both are read as one pipe,
    as the kernel's view shows them (a kernel says most on stderr)."""
    from .containers import inspect  # the container must exist: podman logs would just fail

    if inspect(cli, container_id) is None:
        return None
    args = ["logs", "--timestamps", "--tail", str(max(0, int(tail)))]
    if follow:
        args.append("--follow")
    return FollowedLog(cli.popen([*args, container_id], merge_stderr=True))
