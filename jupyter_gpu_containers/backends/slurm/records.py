"""What the Slurm backend knows of each job it submitted for a kernel, kept by the backend itself:
the job's id, its user, the container's labels and name, the image, the kernel's private
directory and the job's output file.

A job's own marks (its name, its comment) are no record: its user can change them (``scontrol
update``), and a label read from them would let a student claim another kernel's GPUs or have the
service remove another user's directory. The records are files of this process's account in a
directory of its own (0700, checked, never adopted from another account), one JSON file per job,
written atomically and read without following a link: a record outlives a service killed with
SIGKILL, so that the next one finds its kernels' jobs again. Blocking: the backend's threads.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from dataclasses import asdict, dataclass
from typing import Any

from ...base.errors import ContainerKernelError
from ...base.records import ContainerRecord
from ...base.safefiles import private_dir, read_json_nofollow, write_json_atomic

_NAME = re.compile(r"job-([0-9]+)\.json")
_CONTAINER_ID = re.compile(r"([0-9]+)(?:\.([1-9][0-9]{0,5}))?")


def container_id_of(job_id: str, generation: int) -> str:
    return job_id if generation == 0 else f"{job_id}.{generation}"


def job_of(container_id: str) -> tuple[str, int]:
    """A kernel's container id as its job's id and the generation ("41.2": job 41, its third
    container); ("", 0) for anything else."""
    match = _CONTAINER_ID.fullmatch(container_id)
    if match is None:
        return "", 0
    return match.group(1), int(match.group(2) or 0)


@dataclass(frozen=True)
class JobRecord:
    """A kernel's job, as the backend submitted it."""

    job_id: str
    name: str  # the container's name (ContainerSpec.name)
    image: str
    labels: dict[str, str]
    user: str
    uid: int
    gid: int
    private_dir: str  # the kernel's private directory on the shared file system
    output: str  # the job's output file: what its container printed
    created: float
    # Which of the job's containers runs the kernel now: each restart in the job's allocation
    # is the next (script.py); 0 until the first.
    generation: int = 0
    # What the job is (kernels.KernelJob.digest): a restart whose job would be the same may
    # run in this one's allocation. "": never (a record from before generations).
    digest: str = ""

    @property
    def container_id(self) -> str:
        """The kernel's container id now: the job's id, then its generation after a restart in
        the allocation ("41", then "41.1", "41.2")."""
        return container_id_of(self.job_id, self.generation)

    def matches(self, selector: dict[str, str | None]) -> bool:
        """Whether the labels meet ``selector`` (a value of None: the label is present)."""
        return all(
            key in self.labels and (value is None or self.labels[key] == value)
            for key, value in selector.items()
        )

    def as_container(self, status: str) -> ContainerRecord:
        return ContainerRecord(
            id=self.container_id,
            name=self.name,
            image=self.image,
            labels=dict(self.labels),
            status=status,
            created=self.created,
        )


def _record_from(value: Any) -> JobRecord | None:
    if not isinstance(value, dict):
        return None
    try:
        labels = value["labels"]
        if not isinstance(labels, dict):
            return None
        return JobRecord(
            job_id=str(value["job_id"]),
            name=str(value["name"]),
            image=str(value["image"]),
            labels={str(k): str(v) for k, v in labels.items()},
            user=str(value["user"]),
            uid=int(value["uid"]),
            gid=int(value["gid"]),
            private_dir=str(value["private_dir"]),
            output=str(value["output"]),
            created=float(value["created"]),
            generation=int(value.get("generation", 0)),
            digest=str(value.get("digest", "")),
        )
    except (KeyError, TypeError, ValueError):
        return None


class JobRecords:
    """The records, in ``directory`` (made 0700 for this process's account if missing; refused
    in a sentence when another account made it or it is open to others)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._cache: dict[str, JobRecord] | None = None

    def _dir(self) -> str:
        return private_dir(self.directory, what="directory of the Slurm backend's job records")

    def _load(self) -> dict[str, JobRecord]:
        if self._cache is None:
            found: dict[str, JobRecord] = {}
            directory = self._dir()
            for name in os.listdir(directory):
                match = _NAME.fullmatch(name)
                if not match:
                    continue
                try:
                    record = _record_from(read_json_nofollow(os.path.join(directory, name)))
                except (OSError, ValueError):
                    record = None
                if record is not None and record.job_id == match.group(1):
                    found[record.job_id] = record
            self._cache = found
        return self._cache

    def save(self, record: JobRecord) -> None:
        if not record.job_id.isdigit():
            raise ContainerKernelError(f"{record.job_id!r} is no Slurm job id.")
        with self._lock:
            write_json_atomic(self._dir(), f"job-{record.job_id}.json", asdict(record))
            self._load()[record.job_id] = record

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._load().get(job_id)

    def all(self) -> list[JobRecord]:
        with self._lock:
            return sorted(self._load().values(), key=lambda r: r.created)

    def drop(self, job_id: str) -> None:
        if not job_id.isdigit():
            return
        with self._lock:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self._dir(), f"job-{job_id}.json"))
            self._load().pop(job_id, None)
