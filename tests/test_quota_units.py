"""GPU-hour quotas without an engine: the accounting math, the periods, the usage files and who
may write them (quota.py). The engine-backed paths are in test_quota.py."""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hostusers import ALICE, BOB, needs_accounts, uid_of

from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.base.records import ContainerRecord
from jupyter_gpu_containers.gpus.quota import (
    GPUQuota,
    RecordedUse,
    Span,
    Usage,
    append_records,
    gpu_hours,
    period_bounds,
    prune,
    read_spans,
)
from jupyter_gpu_containers.host.hoststate import StateDir

HOUR = 3600.0
CONTAINER = "ab" * 32


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateDir]:
    """A state directory as setup-host makes one (sticky, group-writable), open as a StateDir."""
    path = tmp_path / "state"
    path.mkdir()
    os.chmod(path, 0o1777 if os.getuid() == 0 else 0o700)
    opened = StateDir(str(path), os.open(path, os.O_RDONLY | os.O_DIRECTORY))
    yield opened
    opened.close()


def span(start: float, end: float, gpus: int = 1, container: str = CONTAINER) -> Span:
    return Span(container, "k", start, end, gpus)


def test_gpu_hours_counts_only_the_period_and_each_gpu() -> None:
    since, now = 10 * HOUR, 20 * HOUR
    spans = [
        span(0, 5 * HOUR),  # ended before the period: nothing
        span(8 * HOUR, 12 * HOUR, gpus=2),  # 2 of its 4 hours fall in the period, on 2 GPUs
        span(15 * HOUR, 16.5 * HOUR),  # 1.5 hours
        span(19 * HOUR, 30 * HOUR),  # a running one counts up to now only
    ]
    assert gpu_hours(spans, since, now) == pytest.approx(4 + 1.5 + 1)
    assert gpu_hours([], since, now) == 0


def test_periods_start_at_local_midnight_and_monday() -> None:
    wednesday = datetime(2025, 6, 4, 15, 30).astimezone()
    start, end = period_bounds("day", wednesday)
    assert (start.date(), start.hour, start.minute) == (wednesday.date(), 0, 0)
    assert end.date() == wednesday.date() + timedelta(days=1)
    start, end = period_bounds("week", wednesday)
    assert start.weekday() == 0 and start.hour == 0 and start.date().day == 2
    assert end.weekday() == 0 and (end.date() - start.date()).days == 7
    # A Monday at midnight is the first instant of its own week.
    again, _ = period_bounds("week", start)
    assert again == start


def test_left_hours_is_the_smaller_of_user_and_group() -> None:
    resets = datetime.now(timezone.utc)
    alone = Usage(1, "a", "week", 10, 3.5, resets)
    assert (alone.enabled, alone.left_hours) == (True, pytest.approx(6.5))
    grouped = Usage(1, "a", "week", 10, 3.5, resets, "lab", 20, 18)
    assert grouped.left_hours == pytest.approx(2)
    group_only = Usage(1, "a", "day", 0, 3.5, resets, "lab", 20, 25)
    assert (group_only.enabled, group_only.left_hours) == (True, 0)
    off = Usage(1, "a", "week", 0, 3.5, resets)
    assert (off.enabled, off.left_hours) == (False, 0)
    answer = grouped.to_json()
    assert answer["group"] == "lab" and answer["group_used_hours"] == 18
    assert datetime.fromisoformat(answer["resets_at"]) == resets.replace(microsecond=0)
    assert alone.to_json()["group_limit_hours"] is None


def test_records_round_trip_and_bad_lines_are_skipped(state: StateDir) -> None:
    uid, now = os.getuid(), time.time()
    ended = {"container": CONTAINER, "kernel_id": "k1", "start": now - HOUR, "gpus": 2}
    noted = {"container": "cd" * 32, "kernel_id": "k2", "start": now - 600, "gpus": 1}
    problem = append_records(
        state,
        uid,
        [
            {**ended, "seen": now - 1800},
            {**ended, "end": now - 60},
            {**noted, "seen": now - 300},
            {**noted, "seen": now - 100},
        ],
        now,
    )
    assert problem == ""
    name = f"gpu-usage-{uid}-{datetime.fromtimestamp(now, timezone.utc):%Y%m%d}.jsonl"
    with open(os.path.join(state.path, name), "ab") as f:
        f.write(b'{"container": "not hex", "start": 1, "end": 2, "gpus": 1}\n')
        f.write(b'{"container": "' + b"ef" * 32 + b'", "start": 1, "end": 2, "gpus": true}\n')
        f.write(b'{"container": "' + b"ef" * 32 + b'", "start": 5, "end": 2, "gpus": 1}\n')
        f.write(b'{"container": "' + b"ef" * 32 + b'", "start": 1, "end": 9e99, "gpus": 1}\n')
        f.write(b'{"container": "' + b"ab" * 32 + b'", "start": 0, "en')  # cut off by a crash
    assert oct(os.stat(os.path.join(state.path, name)).st_mode & 0o777) == "0o644"
    spans = read_spans(state, uid, now - 2 * HOUR, now)
    assert set(spans) == {CONTAINER, "cd" * 32}
    # The removal's end stands, whatever the notes said; a note-only span ends at its last note.
    assert spans[CONTAINER].end == pytest.approx(now - 60)
    assert spans[CONTAINER].gpus == 2
    assert spans["cd" * 32].end == pytest.approx(now - 100)
    assert gpu_hours(spans.values(), now - 2 * HOUR, now) == pytest.approx(
        2 * (HOUR - 60) / HOUR + 500 / HOUR
    )


@needs_accounts
def test_nobody_charges_hours_to_someone_else(state: StateDir) -> None:
    alice, bob, now = uid_of(ALICE), uid_of(BOB), time.time()
    line = {"container": CONTAINER, "kernel_id": "k", "start": now - 10 * HOUR, "gpus": 8}
    # Bob writes 80 GPU-hours into a file named for alice: not believed.
    name = f"gpu-usage-{alice}-{datetime.fromtimestamp(now, timezone.utc):%Y%m%d}.jsonl"
    path = os.path.join(state.path, name)
    with open(path, "w") as f:
        f.write(json.dumps({**line, "end": now}) + "\n")
    os.chown(path, bob, bob)
    assert read_spans(state, alice, now - 11 * HOUR, now) == {}
    # And his file squats the name: this server (root, trusted) does not write into it.
    problem = append_records(state, alice, [{**line, "end": now}], now)
    assert "is not this server's own file" in problem and BOB in problem
    assert os.stat(path).st_uid == bob and Path(path).read_text().count("\n") == 1
    # A symlink at the name is never followed, for reading or writing.
    os.unlink(path)
    target = Path(state.path).parent / "victim"
    target.write_text("untouched")
    os.symlink(target, path)
    assert read_spans(state, alice, now - 11 * HOUR, now) == {}
    assert append_records(state, alice, [{**line, "end": now}], now) != ""
    assert target.read_text() == "untouched"
    # The same records in a file of alice's own are hers.
    os.unlink(path)
    with open(path, "w") as f:
        f.write(json.dumps({**line, "end": now}) + "\n")
    os.chown(path, alice, alice)
    assert gpu_hours(read_spans(state, alice, now - 11 * HOUR, now).values(), 0, now) == (
        pytest.approx(80)
    )


def test_old_files_are_pruned_by_their_owner(state: StateDir) -> None:
    uid = os.getuid()
    today = datetime.now(timezone.utc).date()
    old, recent = today - timedelta(days=40), today - timedelta(days=3)
    for day in (old, recent):
        Path(state.path, f"gpu-usage-{uid}-{day:%Y%m%d}.jsonl").write_text("")
    Path(state.path, "unrelated.jsonl").write_text("")
    prune(state, today)
    assert sorted(os.listdir(state.path)) == [
        f"gpu-usage-{uid}-{recent:%Y%m%d}.jsonl",
        "unrelated.jsonl",
    ]


def test_a_removed_gpu_container_is_recorded_once_for_its_uid(state: StateDir) -> None:
    quota = GPUQuota(backend=None, state=lambda: state)  # type: ignore[arg-type]
    now, uid = time.time(), os.getuid()
    labels = {
        L.MANAGED: "true",
        L.GPUS: "GPU-test-0,GPU-test-1",
        L.UID: str(uid),
        L.KERNEL_ID: "kernel-1",
    }
    quota.record_removal(ContainerRecord(CONTAINER, "n", "i", labels, "exited", now - HOUR), now)
    # A CPU container, a probe, and a container with a uid that is no number: nothing.
    for other in (
        {**labels, L.GPUS: ""},
        {L.PROBE: "true", L.GPUS: "GPU-test-0", L.UID: str(uid)},
        {**labels, L.UID: "../1"},
    ):
        quota.record_removal(ContainerRecord("cd" * 32, "n", "i", other, "exited", now - 9), now)
    spans = read_spans(state, uid, now - 2 * HOUR, now + 1)
    assert list(spans) == [CONTAINER]
    assert spans[CONTAINER].gpus == 2
    assert spans[CONTAINER].kernel_id == "kernel-1"
    assert gpu_hours(spans.values(), now - 2 * HOUR, now) == pytest.approx(2)


@pytest.mark.parametrize("seed", range(6))
def test_the_kept_use_is_what_reading_every_file_whole_says(state: StateDir, seed: int) -> None:
    """RecordedUse reads only what was appended since its last check and keeps the sum: after
    any mix of lines (ends, notes, junk, a line cut off then completed, lines a moment ahead of
    the clock, a container recorded on two days), files replaced, shortened or removed, and
    running containers counted instead of their records, it says what reading every file whole
    says."""
    rng = random.Random(seed)
    uid, kept = os.getuid(), RecordedUse()
    start_time = time.time()
    since = start_time - 3 * 24 * HOUR
    containers = [f"{i:02x}" * 32 for i in range(10)]

    def file_of(when: float) -> Path:
        return (
            Path(state.path)
            / f"gpu-usage-{uid}-{datetime.fromtimestamp(when, timezone.utc):%Y%m%d}.jsonl"
        )

    for step in range(60):
        now = start_time + step * 7.0
        lines = []
        for _ in range(rng.randrange(4)):
            at = now - rng.uniform(0, 2 * 24 * HOUR) if rng.random() < 0.8 else now + 30
            record = {
                "container": rng.choice(containers),
                "kernel_id": "k",
                "start": at - rng.uniform(0, 4 * 24 * HOUR),
                "gpus": rng.randint(1, 3),
                rng.choice(["end", "seen"]): at,
            }
            lines.append(json.dumps(record).encode() + b"\n")
        if rng.random() < 0.2:
            lines.append(b'{"container": "not hex", "start": 1, "end": 2, "gpus": 1}\n')
        data = b"".join(lines)
        cut = rng.randrange(len(data) + 1) if data and rng.random() < 0.3 else len(data)
        path = file_of(now - rng.choice([0, 0, 24 * HOUR, 2 * 24 * HOUR]))
        with open(path, "ab") as f:
            f.write(data[:cut])  # the rest (a line cut off) comes at the next step's write
        if cut < len(data):
            with open(path, "ab") as f:
                if rng.random() < 0.5:
                    kept.standing(state, uid, since, now)  # read while the line is half written
                f.write(data[cut:])
        roll = rng.random()
        if roll < 0.05 and path.exists():
            replacement = path.with_suffix(".new")
            replacement.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
            replacement.replace(path)  # another inode
        elif roll < 0.08 and path.exists():
            with open(path, "r+b") as f:
                f.truncate(path.stat().st_size // 2)
        elif roll < 0.1:
            path.unlink(missing_ok=True)
        running = [
            Span(c, "k", now - rng.uniform(0, 24 * HOUR), now, 1, live=True)
            for c in rng.sample(containers, rng.randrange(3))
        ]
        hours, recorded = kept.standing(state, uid, since, now, running)
        spans = read_spans(state, uid, since, now)
        whole = {**spans, **{s.container: s for s in running}}
        assert hours == pytest.approx(gpu_hours(whole.values(), since, now), abs=1e-9), step
        assert recorded == {
            s.container: spans[s.container] for s in running if s.container in spans
        }


def test_a_new_period_reads_its_own_files_only(state: StateDir) -> None:
    uid, kept, now = os.getuid(), RecordedUse(), time.time()
    line = {"container": CONTAINER, "kernel_id": "k", "start": now - 2 * HOUR, "gpus": 1}
    assert append_records(state, uid, [{**line, "end": now - HOUR}], now) == ""
    assert kept.standing(state, uid, now - 3 * HOUR, now)[0] == pytest.approx(1.0)
    # The period starts after that session: none of it counts.
    assert kept.standing(state, uid, now - 0.5 * HOUR, now)[0] == 0
