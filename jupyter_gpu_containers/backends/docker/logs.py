"""A container's log on the Docker engine: its last lines as text (what error sentences quote),
and its stream read line by line (``docker logs --timestamps``), followed until the container
stops or the reader closes it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors

from ..backend import LogLine
from ..docker_formats import log_line


def tail(c: docker.APIClient, *, container_id: str, lines: int) -> str:
    """The container's last ``lines`` lines, both streams ("" when the engine does not know it)."""
    try:
        raw = c.logs(container_id, stdout=True, stderr=True, tail=lines)
    except docker.errors.NotFound:
        return ""
    return raw.decode("utf-8", "replace").strip()


def open_stream(c: docker.APIClient, *, container_id: str, tail: int, follow: bool) -> Any:
    """The engine's log stream of the container (None when the engine does not know it)."""
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
