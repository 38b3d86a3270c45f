"""A kernel pod's log, read line by line as the backend interface gives logs."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import urllib3

from ..backend import LogLine


class PodLog:
    """A pod's log, line by line (``timestamps=True``: each line starts with its time)."""

    def __init__(self, response: Any) -> None:
        self._response = response
        self._closed = False

    def __iter__(self) -> Iterator[LogLine]:
        pending = b""
        try:
            for chunk in self._response.stream(4096, decode_content=True):
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    yield _log_line(line)
            if pending:
                yield _log_line(pending)
        except (urllib3.exceptions.HTTPError, OSError, AttributeError):
            if not self._closed:
                raise

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):
            self._response.close()
        with contextlib.suppress(Exception):
            self._response.release_conn()


def _log_line(raw: bytes) -> LogLine:
    text = raw.decode("utf-8", "replace").rstrip("\r")
    stamp, sep, rest = text.partition(" ")
    if sep and re.match(r"^\d{4}-\d\d-\d\dT", stamp):
        return LogLine(time=stamp, text=rest)
    return LogLine(time="", text=text)
