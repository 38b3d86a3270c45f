"""A test-only Jupyter server extension that measures event-loop stalls inside the server process.

A coroutine sleeps 10 ms at a time and records how much later than asked it woke up: any callback
that blocks the loop (a synchronous Docker call, a file read, a lock wait) shows up as lag. The
worst lag, how many wake-ups were late by more than 100 ms, and the worst few with their time go
to the JSON file named by the environment variable JGC_LOOP_LAG_FILE, rewritten every half second
(the test reads it while the server runs, and after it stopped).

To find the code that blocked, as py-spy would (it is not available here), a sampling thread
records the loop thread's stack every 5 ms while the loop has not ticked for 50 ms; the most
frequent stacks go to the JSON file under "stalls" (a stack ending in ``select`` is a loop that
was idle but not scheduled: the machine's CPUs were busy, nothing blocked it). "max_blocked_lag"
counts only the stalls during which the loop thread was seen running code, or a collection over
100 ms ran: those the server caused.
JGC_LOOP_LAG_DEBUG=<seconds> (e.g. 0.03; "1" means 0.1) also turns on asyncio's debug mode, which
logs every callback slower than that, and samples from that threshold on.

Loaded through ``ServerApp.jpserver_extensions`` with tests/ on sys.path (see test_faults.py).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import threading
import time
import traceback
from collections import Counter
from typing import Any

INTERVAL = 0.01
STALL = 0.1
# Stacks are sampled during stalls longer than this (a thread waking every 5 ms: cheap).
SAMPLE_AFTER = 0.05


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "loop_lag"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    path = os.environ.get("JGC_LOOP_LAG_FILE", "")
    if not path:
        return
    # The server's loop exists (ServerApp.io_loop) but does not run yet: start once it does.
    serverapp.io_loop.add_callback(_start, serverapp, path)


def _start(serverapp: Any, path: str) -> None:
    loop = asyncio.get_running_loop()
    debug = os.environ.get("JGC_LOOP_LAG_DEBUG", "")
    threshold = SAMPLE_AFTER
    if debug not in ("", "0"):
        threshold = STALL if debug == "1" else float(debug)
        loop.set_debug(True)
        loop.slow_callback_duration = threshold
    sampler = _Sampler(threading.get_ident(), threshold)
    gc.callbacks.append(sampler.on_gc)
    # The loop holds tasks only weakly: keep a reference on the server app.
    serverapp._jgc_loop_lag = loop.create_task(_measure(path, sampler))


class _Sampler:
    """Samples the loop thread's stack while the loop has not ticked for ``threshold`` s."""

    def __init__(self, loop_thread: int, threshold: float) -> None:
        self.loop_thread = loop_thread
        self.threshold = threshold
        self.tick = time.monotonic()
        self.stacks: Counter[str] = Counter()
        threading.Thread(target=self._run, daemon=True, name="loop-lag-sampler").start()

    def _run(self) -> None:
        me = threading.get_ident()
        while not self.stopped:
            time.sleep(0.005)
            if time.monotonic() - self.tick < self.threshold + INTERVAL:
                continue
            frames = sys._current_frames()
            frame = frames.get(self.loop_thread)
            if frame is None:
                continue
            summary = traceback.extract_stack(frame)[-14:]
            if summary and not (summary[-1].filename.endswith("selectors.py")):
                self.busy = True  # the loop thread was running code: something blocked it
            lines = [f"{f.filename}:{f.lineno} {f.name}" for f in summary]
            # A loop thread shown in select() is idle, or waiting for the GIL: then another
            # thread of the server holds it. Name what the others were doing.
            for ident, other in frames.items():
                if ident not in (me, self.loop_thread):
                    top = traceback.extract_stack(other)[-3:]
                    lines.append("  [thread] " + " < ".join(f"{f.name}:{f.lineno}" for f in top))
            self.stacks["\n".join(lines)] += 1

    # Whether the loop thread was seen running code (not waiting in select) since the last tick,
    # or a collection long enough to stall it ran: then a stall is the server's own doing. A loop
    # thread seen only in select was idle or waiting for a CPU the machine did not have.
    busy = False
    stopped = False  # set to end the sampling thread (the server's runs until its process ends)

    def take_busy(self) -> bool:
        busy, self.busy = self.busy, False
        return busy

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        """Times each garbage collection: a full one holds the GIL, stalling every thread."""
        if phase == "start":
            self._gc_started = time.monotonic()
        else:
            pause = time.monotonic() - self._gc_started
            if pause > STALL:
                self.busy = True  # the sampler cannot run during it: say so here
            if pause > self.gc_max[0]:
                self.gc_max = (pause, int(info.get("generation", -1)))

    _gc_started = 0.0
    gc_max: tuple[float, int] = (0.0, -1)  # (seconds, generation)

    def top(self) -> list[tuple[int, str]]:
        return [(count, stack) for stack, count in self.stacks.most_common(15)]


async def _measure(path: str, sampler: _Sampler) -> None:
    worst: list[tuple[float, float]] = []  # (lag, wall time)
    stats = {"samples": 0, "max_lag": 0.0, "over_100ms": 0, "max_blocked_lag": 0.0}
    written = counted = time.monotonic()
    objects: list[tuple[float, int]] = []  # (time, objects the collector tracks): debug only
    debug = os.environ.get("JGC_LOOP_LAG_DEBUG", "") not in ("", "0")
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(INTERVAL)
        lag = loop.time() - before - INTERVAL
        sampler.tick = time.monotonic()
        blocked = sampler.take_busy()
        stats["samples"] += 1
        if lag > stats["max_lag"]:
            stats["max_lag"] = lag
        if blocked and lag > stats["max_blocked_lag"]:
            stats["max_blocked_lag"] = lag
        if lag > STALL:
            stats["over_100ms"] += 1
        worst = sorted([*worst, (lag, time.time())], reverse=True)[:10]
        if debug and time.monotonic() - counted > 10:
            counted = time.monotonic()
            objects.append((time.time(), len(gc.get_objects())))
        if time.monotonic() - written > 0.5:
            written = time.monotonic()
            tmp = f"{path}.tmp"
            report: dict[str, Any] = {
                **stats,
                "worst": worst,
                "stalls": sampler.top(),
                "gc_max": sampler.gc_max,
                "objects": objects,
            }
            with open(tmp, "w") as f:  # a few kilobytes to the page cache: no stall
                json.dump(report, f)
            os.replace(tmp, path)
