"""SIGTERM stops the kernel service from its event loop (service.py, ServiceApp.init_signal).

A signal handler runs between two bytecodes of whatever the process was doing, a write to its
log stream included; a handler that writes to the same stream then fails ("reentrant call inside
<_io.BufferedWriter name='<stderr>'>"), and Jupyter Server's handler, which logs first, lost
the stop that way in a test run (the service went on, its kernels outlived it). That moment
cannot be chosen from outside the process; what can be shown is where the service's handler
runs: a real SIGTERM to this process, its log written on the event loop, and the stop scheduled
there. The service's stop itself (its kernels left or shut down) is the kernel service tests'
(test_service.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest
from tornado.ioloop import IOLoop

from jupyter_gpu_containers.service.service import ServiceApp


class Written(logging.Handler):
    """The lines written, each with whether it was written after the signal's own moment (a
    Python signal handler runs before the statement after the ``kill`` that sent it)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, bool]] = []
        self.signalling = False

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.getMessage(), not self.signalling))


async def test_sigterm_stops_the_service_from_its_loop_and_says_so_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = ServiceApp()
    stream = Written()
    log = logging.getLogger("test-service-signal")
    log.propagate = False
    log.addHandler(stream)
    app.log = log
    app.io_loop = IOLoop.current()
    stopped = asyncio.Event()
    # What ServerApp.stop schedules on the loop: the server's own stop (its clean-up).
    monkeypatch.setattr(app, "_stop", stopped.set)
    signals = (signal.SIGTERM, signal.SIGUSR1)  # what init_signal sets (no terminal here)
    previous = {s: signal.getsignal(s) for s in signals}
    try:
        app.init_signal()
        stream.signalling = True
        os.kill(os.getpid(), signal.SIGTERM)
        stream.signalling = False
        await asyncio.wait_for(stopped.wait(), 30)
    finally:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
        for s, before in previous.items():
            signal.signal(s, before)
        log.removeHandler(stream)
    assert stream.lines == [(f"Received signal {int(signal.SIGTERM)}, stopping.", True)]
