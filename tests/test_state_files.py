"""The helpers the host state directory's records share (safefiles.py, hoststate.py, records.py),
and the pre-pull claim built on them: real files, real links and FIFOs, real flocks."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_gpu_containers.base.records import iso_time
from jupyter_gpu_containers.base.safefiles import (
    PathRefused,
    account_uid,
    owner_name,
    private_dir,
    read_trusted,
    remove_own_files,
)
from jupyter_gpu_containers.host.hoststate import StateDir
from jupyter_gpu_containers.images.prepull import PrePuller
from jupyter_gpu_containers.images.prepull_records import HostRecords, Run
from jupyter_gpu_containers.images.prepull_schedule import parse_entry
from jupyter_gpu_containers.services import services_for

ME = os.geteuid()


@pytest.fixture
def dir_fd(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


def test_iso_time_is_utc_to_the_second() -> None:
    assert iso_time(0.0) == "1970-01-01T00:00:00+00:00"
    assert iso_time(1700000000.75) == "2023-11-14T22:13:20+00:00"
    assert iso_time(None) is None


def test_account_lookups_answer_both_ways() -> None:
    name = owner_name(ME)
    assert account_uid(name) == ME
    assert account_uid("no-such-account-jgc") is None
    assert owner_name(2_000_000_123) == "uid 2000000123"


def test_read_trusted_reads_only_a_plain_file_of_a_trusted_owner(
    tmp_path: Path, dir_fd: int
) -> None:
    (tmp_path / "good.json").write_bytes(b'{"a": 1}' + b" " * 100)
    data, info = read_trusted(dir_fd, "good.json", {ME}, 8)
    assert data == b'{"a": 1}' and info.st_uid == ME  # at most ``limit`` bytes

    # Someone else's: refused, whatever it says.
    with pytest.raises(OSError, match="not a trusted file"):
        read_trusted(dir_fd, "good.json", {ME + 1}, 1024)
    # A symlink to a trusted file, a hard link to one, a FIFO, a directory, nothing.
    (tmp_path / "link.json").symlink_to(tmp_path / "good.json")
    os.link(tmp_path / "good.json", tmp_path / "hard.json")
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "dir.json").mkdir()
    started = time.monotonic()
    for name in ("hard.json", "fifo.json", "dir.json"):
        with pytest.raises(OSError, match="not a trusted file"):
            read_trusted(dir_fd, name, {ME}, 1024)
    assert time.monotonic() - started < 5  # a FIFO never blocks the reader
    with pytest.raises(OSError, match="symbolic links"):
        read_trusted(dir_fd, "link.json", {ME}, 1024)
    with pytest.raises(FileNotFoundError):
        read_trusted(dir_fd, "missing.json", {ME}, 1024)


def test_remove_own_files_removes_only_matching_stale_own_plain_files(
    tmp_path: Path, dir_fd: int
) -> None:
    pattern = re.compile(r"note-([0-9]+)\.json")
    for day in (1, 2, 3):
        (tmp_path / f"note-{day}.json").write_text("{}")
    (tmp_path / "other-1.json").write_text("{}")
    (tmp_path / "note-0.json").symlink_to(tmp_path / "other-1.json")
    (tmp_path / "note-9.json").mkdir()

    removed = remove_own_files(dir_fd, pattern, lambda m, _info: int(m[1]) < 3)
    assert removed == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "note-0.json",  # a symlink: not a file of one's own to judge
        "note-3.json",  # not stale
        "note-9.json",  # a directory
        "other-1.json",  # another pattern
    ]
    # The judge sees the file's own lstat: here, its age.
    old = time.time() - 3600
    os.utime(tmp_path / "note-3.json", (old, old))
    assert remove_own_files(dir_fd, pattern, lambda _m, info: info.st_mtime < time.time() - 60)
    assert not (tmp_path / "note-3.json").exists()


def test_alive_servers_reads_the_locks_once_for_many(tmp_path: Path, dir_fd: int) -> None:
    state = StateDir(str(tmp_path), os.dup(dir_fd))
    try:
        assert state.claim("alive-one")
        # A lock file whose holder is gone: a server that died.
        fd = os.open(tmp_path / "server-dead-one.lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.close(fd)
        found = state.alive_servers(
            [("alive-one", None), ("alive-one", str(ME)), ("dead-one", None), ("never", None)]
        )
        assert found == {
            ("alive-one", None): True,
            ("alive-one", str(ME)): True,
            ("dead-one", None): False,
            ("never", None): False,
        }
        assert state.service_uids() == {0, os.fstat(dir_fd).st_uid}
    finally:
        state.close()


async def test_a_due_pre_pull_is_claimed_by_one_server_of_the_host(jp_serverapp: Any) -> None:
    """Two servers of the host (two PrePullers on the same state directory) find the same entry
    due: one claims it, the other leaves it; the next run, or a claim left too long, is
    claimable again."""
    services = services_for(jp_serverapp)
    assert services is not None
    schedule = [{"image": "jgc/claimed:1", "at": "03:00"}]

    def server() -> PrePuller:
        made = PrePuller(
            parent=jp_serverapp,
            backend=services.backend,
            pulls=services.pulls,
            policy=services.policy,
            listed=services.listed_images,
            state=lambda: services.state,
        )
        made.schedule = schedule
        made.clock = lambda: now
        return made

    now = time.time()
    first, second = server(), server()
    entry = parse_entry(schedule[0])
    assert first._claim(entry, None) is True
    assert second._claim(entry, None) is False
    assert first._claim(entry, None) is False  # once, whoever asks
    claims = [n for n in os.listdir(services.state.path) if n.startswith("prepull-claim-")]
    assert len(claims) == 1
    # The run after another run is another claim.
    ran = Run(started=now)
    assert second._claim(entry, ran) is True
    assert first._claim(entry, ran) is False
    # A claim whose server never recorded its run counts for retry_after minutes only.
    now += first.retry_after * 60.0
    assert first._claim(entry, None) is True
    # Old claims are their owner's to remove.
    old = time.time() - 3 * 86400
    for name in claims:
        os.utime(name, (old, old), dir_fd=services.state.fd)
    now += first.retry_after * 60.0
    assert second._claim(entry, None) is True
    left = [n for n in os.listdir(services.state.path) if n.startswith("prepull-claim-")]
    assert not set(claims) & set(left)


def test_a_traversable_private_root_is_0711_and_refused_when_more_open(tmp_path: Path) -> None:
    """The root of kernels' private directories on Slurm: each job's user must reach their own
    directory by its unguessable name, and list none."""
    made = tmp_path / "kernels"
    assert private_dir(str(made), what="root", traversable=True) == str(made)
    assert made.stat().st_mode & 0o777 == 0o711
    earlier = tmp_path / "earlier"
    earlier.mkdir(mode=0o700)  # a root a Docker server made before: ours, opened up
    private_dir(str(earlier), what="root", traversable=True)
    assert earlier.stat().st_mode & 0o777 == 0o711
    opened = tmp_path / "opened"
    opened.mkdir()
    opened.chmod(0o755)  # listable by every account: refused, never narrowed
    with pytest.raises(PathRefused, match=r"its mode is .*, not 0711"):
        private_dir(str(opened), what="root", traversable=True)
    assert opened.stat().st_mode & 0o777 == 0o755
    # Not traversable, a 0711 root is refused as any other open one.
    with pytest.raises(PathRefused, match=r"not 0700"):
        private_dir(str(made), what="root")


def test_a_references_earlier_contents_are_kept_and_only_its_own(
    tmp_path: Path, dir_fd: int
) -> None:
    """The use record keeps what a tag named before it moved (what a notebook may pin to:
    admission.py), bounded, as image ids only; a pin's content is not a tag's."""
    state = StateDir(str(tmp_path), os.dup(dir_fd))
    try:
        records = HostRecords(lambda: state, logging.getLogger("test"))
        ids = [f"sha256:{i:064x}" for i in range(12)]
        records.record_use("jgc/course:1", ids[0], 100.0)
        records.record_use("jgc/course:1", ids[1], 101.0)  # moved: at once, not throttled
        assert records.named_before("jgc/course:1", ids[0])
        assert records.named_before("jgc/course:1", ids[1])  # and what it names now
        assert not records.named_before("jgc/other:1", ids[0])  # another tag's: never
        assert not records.named_before("jgc/course:1", ids[2])
        assert not records.named_before("jgc/course:1", ids[0][:20])  # whole ids only

        # A notebook's pin running (the earlier content) does not move what the tag names.
        records.record_use("jgc/course:1", ids[0], 200.0, tagged=False)
        data = json.loads((tmp_path / f"image-use-{os.geteuid()}.json").read_text())
        assert data["images"]["jgc/course:1"]["image_id"] == ids[1]

        # Bounded: the eight latest earlier contents.
        for n, image_id in enumerate(ids[2:], start=300):
            records.record_use("jgc/course:1", image_id, float(n))
        assert records.named_before("jgc/course:1", ids[-1])
        assert all(records.named_before("jgc/course:1", i) for i in ids[-9:])
        assert not records.named_before("jgc/course:1", ids[0])
    finally:
        state.close()
