"""The event-loop lag probe (tests/loop_lag.py) that test_faults.py relies on: a call that blocks
the loop is counted as blocked, so that test can fail."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import loop_lag


async def test_a_blocking_call_on_the_loop_counts_as_blocked(tmp_path: Path) -> None:
    path = str(tmp_path / "lag.json")
    sampler = loop_lag._Sampler(threading.get_ident(), loop_lag.SAMPLE_AFTER)
    task = asyncio.ensure_future(loop_lag._measure(path, sampler))
    try:
        await asyncio.sleep(0.6)  # idle: lag, if any, is not blocked
        time.sleep(0.25)  # a blocking call on the loop, as a synchronous Docker call would be
        await asyncio.sleep(0.6)  # the report is rewritten every half second
    finally:
        task.cancel()
        sampler.stopped = True
    report = json.loads(Path(path).read_text())
    assert report["max_blocked_lag"] >= 0.2, report
    assert report["over_100ms"] >= 1
    assert any("test_loop_lag.py" in stack for _, stack in report["stalls"])
