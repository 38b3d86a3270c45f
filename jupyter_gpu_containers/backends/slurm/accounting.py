"""GPU-hours from Slurm's accounting, pure: what ``sacct`` says a user's jobs held.

sacct's parsable text (``FORMAT``), not its ``--json``: Slurm 22.05's JSON ignores ``--user``
and names no user for a job whose user has no association, and its shape changes between
releases; the text has been the same for many. A job's GPUs are its ``AllocTRES`` entry of the
GPUs' GRES (``gres/gpu=2``; a typed GRES, ``gres/gpu:a100=2``, is listed beside the untyped
one and not counted twice); its time on them is from its start to its end (now, while it runs),
clipped to the period asked about. A job that never started held nothing. Every job of the
user counts, not only kernels': Slurm's limits (QOS, associations) count them all alike.
"""

from __future__ import annotations

import datetime

# What sacct says where the cluster keeps no accounting database.
DISABLED = "accounting storage is disabled"
# sacct's columns, in the order the parser reads them (--format), one job per line
# (--allocations), "|" between them (--parsable2).
FORMAT = "JobIDRaw,User,Start,End,AllocTRES"


def _when(text: str) -> float | None:
    """sacct's time (local, "2026-11-26T14:09:27") as unix time; None for "Unknown", "None"."""
    try:
        return datetime.datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        return None


def allocated_gpus(tres: str, gres_name: str) -> int:
    """The GPUs in an ``AllocTRES`` ("billing=1,cpu=1,gres/gpu=2,node=1"); 0 without."""
    for entry in tres.split(","):
        key, _, value = entry.partition("=")
        if key.strip() == f"gres/{gres_name}" and value.strip().isdigit():
            return int(value)
    return 0


def gpu_seconds(out: str, user: str, gres_name: str, since: float, until: float) -> float:
    """GPU-seconds ``user``'s jobs in sacct's answer (FORMAT) held between ``since`` and
    ``until`` (unix times). Lines of other users' jobs are not counted, whatever sacct
    returned."""
    total = 0.0
    for line in out.splitlines():
        fields = line.split("|")
        if len(fields) != 5 or fields[1] != user:
            continue
        gpus = allocated_gpus(fields[4], gres_name)
        start, end = _when(fields[2]), _when(fields[3])
        if gpus <= 0 or start is None:
            continue
        if end is None or end > until:  # it runs still
            end = until
        total += gpus * max(0.0, end - max(start, since))
    return total
