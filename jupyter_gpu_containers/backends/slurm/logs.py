"""A kernel's log on Slurm: its job's output file (what the batch script and the container
printed, both streams), read from its end, and followed line by line while the job runs.

The file is written by the job, as its user, in the kernel's private directory: it is opened
without following a link and read only as a regular file of that user's with one link (never a
hard link to another account's file, whose end the kernel's view would show), in bounded pieces
(a notebook printing without a line break cannot make a line without end).
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterator

from ..backend import LogLine

# How much of the file's end a tail reads: enough for the lines error sentences quote.
TAIL_BYTES = 256 * 1024
MAX_LINE = 64 * 1024


def _open(path: str, owner: int) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != owner or info.st_nlink != 1:
        os.close(fd)
        return None
    return fd


def _last_lines(fd: int, lines: int) -> tuple[list[str], int]:
    """The file's last ``lines`` lines and where its end was."""
    end = os.fstat(fd).st_size
    start = max(0, end - TAIL_BYTES)
    data = os.pread(fd, end - start, start)
    text = data.decode("utf-8", errors="replace").splitlines()
    if start > 0 and text:
        text = text[1:]  # the first may be cut
    return (text[-lines:] if lines > 0 else []), start + len(data)


def tail(path: str, owner: int, lines: int) -> str:
    """The output's last ``lines`` lines ("" when there is none yet); ``owner``: the job's
    user, whose file it must be."""
    fd = _open(path, owner)
    if fd is None:
        return ""
    try:
        return "\n".join(_last_lines(fd, max(0, int(lines)))[0]).strip()
    finally:
        os.close(fd)


class FollowedOutput:
    """The output's last lines, then each new one while ``running()`` says the job runs
    (``follow``); ``close`` from any thread ends the iteration within ``interval`` s."""

    def __init__(
        self, fd: int, tail: int, follow: bool, running: Callable[[], bool], interval: float
    ) -> None:
        self._fd = fd
        self._tail = tail
        self._follow = follow
        self._running = running
        self._interval = interval
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._iterating = False
        self.closed = False

    def __iter__(self) -> Iterator[LogLine]:
        with self._lock:
            if self._fd < 0:
                return
            self._iterating = True
        try:
            lines, offset = _last_lines(self._fd, max(0, int(self._tail)))
            for text in lines:
                yield LogLine("", text)
            pending = b""
            while not self._closed.is_set():
                data = os.pread(self._fd, MAX_LINE, offset)
                if data:
                    offset += len(data)
                    pending += data
                    *complete, pending = pending.split(b"\n")
                    for raw in complete:
                        yield LogLine("", raw.decode("utf-8", errors="replace"))
                    if len(pending) >= MAX_LINE:
                        yield LogLine("", pending.decode("utf-8", errors="replace"))
                        pending = b""
                    continue
                if not self._follow or not self._running():
                    break
                self._closed.wait(self._interval)
            if pending and not self._closed.is_set():
                yield LogLine("", pending.decode("utf-8", errors="replace"))
        finally:
            self._close_fd()

    def _close_fd(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, -1
            self._iterating = False
        if fd >= 0:
            os.close(fd)

    def close(self) -> None:
        """End the stream: at once when it is not being read, else at the reader's next look
        (the reader closes the file, which it may be reading now)."""
        self.closed = True
        self._closed.set()
        with self._lock:
            fd = -1
            if not self._iterating:
                fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def open_output(
    path: str,
    owner: int,
    tail: int,
    follow: bool,
    running: Callable[[], bool],
    interval: float = 0.5,
) -> FollowedOutput | None:
    """The output as a stream, or None when the job has written none (yet)."""
    fd = _open(path, owner)
    if fd is None:
        return None
    return FollowedOutput(fd, tail, follow, running, interval)
