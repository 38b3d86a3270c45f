"""The pre-pull schedule (``PrePuller.schedule``): each entry as the administrator wrote it, read
and refused in a sentence when it is not one, and when it falls due next (a daily local time, or
an interval in hours)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from ..base.references import BadReference, parse_reference

_AT = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


@dataclass(frozen=True)
class ScheduleEntry:
    """One line of the schedule: an image, and either a daily time or an interval."""

    image: str  # normalised reference
    at: tuple[int, int] | None = None  # local hour and minute, daily
    every: float | None = None  # hours

    @property
    def key(self) -> str:
        """What its runs are recorded under: a changed rule starts afresh."""
        rule = f"at={self.at[0]:02d}:{self.at[1]:02d}" if self.at else f"every={self.every:g}h"
        return f"{self.image} {rule}"

    def rule_json(self) -> dict[str, Any]:
        return {
            "at": f"{self.at[0]:02d}:{self.at[1]:02d}" if self.at else None,
            "every_hours": self.every,
        }

    def next_after(self, after: float) -> float:
        """The first time this entry is due after ``after`` (a run's start)."""
        if self.every is not None:
            return after + self.every * 3600.0
        assert self.at is not None
        return next_daily(after, *self.at)


def next_daily(after: float, hour: int, minute: int) -> float:
    """The first local ``hour:minute`` strictly after ``after`` (unix times). mktime normalises
    day 32 and daylight saving time changes."""
    local = time.localtime(after)
    for days in (0, 1, 2):
        when = time.mktime(
            (local.tm_year, local.tm_mon, local.tm_mday + days, hour, minute, 0, 0, 0, -1)
        )
        if when > after:
            return when
    raise AssertionError("unreachable: a day always has this time")  # pragma: no cover


def parse_entry(raw: Any) -> ScheduleEntry:
    """A schedule line from configuration; ValueError with a sentence when it is not one."""
    if not isinstance(raw, dict):
        raise ValueError(
            f'{raw!r} is not {{"image": …, "at": "HH:MM"}} or {{"image": …, "every": hours}}.'
        )
    unknown = set(raw) - {"image", "at", "every"}
    if unknown:
        raise ValueError(
            f'{sorted(unknown)} are not schedule keys: give image, and at ("HH:MM", daily, the '
            "host's local time) or every (hours)."
        )
    image = raw.get("image")
    if not isinstance(image, str) or not image.strip():
        raise ValueError(f"{raw!r} names no image to pull.")
    try:
        ref = parse_reference(image.strip()).written
    except (BadReference, ValueError) as e:
        raise ValueError(str(e)) from None
    at, every = raw.get("at"), raw.get("every")
    if (at is None) == (every is None):
        raise ValueError(f'{image}: give either at ("HH:MM") or every (hours), not both or none.')
    if at is not None:
        m = _AT.fullmatch(at) if isinstance(at, str) else None
        if m is None:
            raise ValueError(
                f'{image}: at must be a time of day as "HH:MM" (e.g. "02:00"), not {at!r}.'
            )
        return ScheduleEntry(ref, at=(int(m[1]), int(m[2])))
    if isinstance(every, bool) or not isinstance(every, (int, float)) or not every > 0:
        raise ValueError(f"{image}: every must be a number of hours above 0, not {every!r}.")
    return ScheduleEntry(ref, every=float(every))
