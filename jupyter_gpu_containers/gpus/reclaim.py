"""Idle GPUs given back (issue 17): the admin's policy (:class:`GPUReclaim`) and its state machine.

A kernel that holds GPUs but shows no GPU activity for ``idle_minutes`` is *warned* (its status
in the kernel list and its own view, a line in the server log); if it stays idle for
``grace_minutes`` more it *loses its GPUs*: it is shut down, or restarted without GPUs, as the
administrator chose. Any activity, at any point before the release, makes it *active* again and
starts the idle time afresh.

**Activity**, judged on each sample of the kernel's GPU use (gpu_usage.py: NVML's processes on
its GPUs, mapped to its container), is

- an SM utilisation of the kernel's processes above ``utilization_threshold`` percent (averaged
  over its GPUs), or
- its GPU memory changing by at least ``memory_change_mib`` MiB since the previous sample
  (allocating or freeing tensors, loading a model), or
- a sample whose utilisation NVML cannot give (MIG instances, drivers without per-process
  samples): what cannot be measured is never judged idle.

Memory that stays allocated but unused (a model loaded and left there) is not activity: it is
exactly what a GPU left open over lunch looks like.

**A word back.** A warned kernel's user may *keep* its GPUs for ``keep_min_minutes`` to
``keep_max_minutes`` (``keep``): the release moves to the keep's end, and a kernel still idle
then loses its GPUs at once, with no second grace period. A kernel may be kept
``keep_max_times`` times while it stays idle; its next GPU activity clears the warning and the
count. An administrator sees each kept kernel (its ``kept_until`` and ``keeps``).

This module is pure: observations (samples, what a kernel holds) and the time come in,
decisions (warn, release) go out, and what each kernel's state is can be read back. It does no
I/O and reads no clock: the server's driver (reclaimer.py) samples, acts, and tells it what
happened. It knows no kernel manager and no HTTP, and is separate from jupyter_server's own idle
culling (``MappingKernelManager.cull_idle_timeout``), which knows nothing of GPUs and works as
before.

The idle time lives in this process's memory: a server started again gives every kernel a fresh
idle period (it cannot know what happened while it was down), so a restart never reclaims early.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from traitlets import Bool, Enum, Float, Int, TraitError, validate
from traitlets.config import LoggingConfigurable

from ..base.errors import KeepRefused, ValueRefused
from ..base.records import iso_time
from ..host.identity import KernelUser
from .gpu_usage import UsageSample

MiB = 1024**2
SHUTDOWN = "shutdown"
RESTART_WITHOUT_GPUS = "restart-without-gpus"
ACTIONS = (SHUTDOWN, RESTART_WITHOUT_GPUS)
# How long the record of a kernel whose GPUs were reclaimed is kept once the kernel is gone (a
# shut-down kernel: what its user's panel and the admin view say about it).
KEEP_RECLAIMED_SECONDS = 3600.0


@dataclass(frozen=True)
class Observation:
    """One kernel that holds GPUs, as the driver saw it at a check."""

    kernel_id: str
    gpus: tuple[str, ...]  # UUIDs of the GPUs it holds now (never empty)
    samples: Sequence[UsageSample]  # its GPU use, oldest first (the sampler's history)
    held_since: float = 0.0  # unix time it holds these GPUs (0: not known)
    owner: KernelUser | None = None  # a kernel service's user; None: the server's own user
    user: str = ""  # the user's name, for the log and the admin view
    notebook: str = ""  # its notebook, relative to the workspace ("" when not known)


@dataclass(frozen=True)
class Decision:
    """What the driver must do (``release``), or say (``warn``, ``cleared``), for one kernel."""

    kind: Literal["warn", "release", "cleared"]
    kernel_id: str
    gpus: tuple[str, ...]
    idle_seconds: float  # how long it has shown no GPU activity
    release_at: float | None  # unix time its GPUs go, once warned
    sentence: str  # for the server log (and, for a release, for the user)


@dataclass
class KernelReclaim:
    """One kernel's reclaim state (unix times)."""

    kernel_id: str
    gpus: tuple[str, ...]
    idle_since: float  # when its last GPU activity was seen (or it began to be watched)
    owner: KernelUser | None = None
    user: str = ""
    notebook: str = ""
    state: Literal["active", "idle", "warned", "reclaimed"] = "active"
    warned_at: float | None = None
    release_at: float | None = None
    releasing: bool = False  # a release was decided and the driver is carrying it out
    last_sample_at: float = 0.0
    last_memory: int | None = None
    reclaimed_at: float | None = None
    action: str = ""  # the action taken, once reclaimed
    message: str = ""  # the warning or the reclaim, in a sentence (for the user)
    gone_at: float | None = None  # when the kernel stopped being observed, once reclaimed
    keeps: int = 0  # times its user kept its GPUs since its last activity
    kept_until: float | None = None  # the end of its user's latest keep, while it lasts

    def to_json(self, action: str, keep: dict[str, Any] | None = None) -> dict[str, Any]:
        """As the REST API gives it (``reclaim`` of a kernel row, the admin view); ``keep``:
        what its user may still ask for (None: nothing)."""
        return {
            "kernel_id": self.kernel_id,
            "state": self.state,
            "idle_since": iso_time(self.idle_since),
            "release_at": iso_time(self.release_at),
            "reclaimed_at": iso_time(self.reclaimed_at),
            "action": self.action or action,
            "message": self.message,
            "gpus": list(self.gpus),
            "user": self.user,
            "notebook": self.notebook,
            "kept_until": iso_time(self.kept_until),
            "keeps": self.keeps,
            "keep": keep,
        }


def duration_text(seconds: float) -> str:
    """A duration as a sentence says it: "45 seconds", "1 minute", "31 minutes"."""
    if seconds < 59.5:
        whole = max(0, round(seconds))
        return f"{whole} second{'s' if whole != 1 else ''}"
    minutes = round(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


class GPUReclaim(LoggingConfigurable):
    """The administrator's policy for GPUs held by idle kernels, and the state of each kernel
    under it (owned by services.Services; driven by the server, reclaimer.py)."""

    enabled = Bool(
        False,
        config=True,
        help="""Take GPUs back from kernels that hold them but do not use them: a kernel
        showing no GPU activity for idle_minutes is warned (in the GPU panel, its status and the
        server log), and after grace_minutes more it loses its GPUs (see action). Activity is
        read through NVML (per-process utilisation and memory); on a host whose GPUs are
        declared (GPUInventory.static_gpus) it cannot be measured, and nothing is reclaimed.
        Separate from jupyter_server's idle-kernel culling (MappingKernelManager.cull_*).""",
    )

    idle_minutes = Float(
        30.0,
        config=True,
        help="""Minutes without GPU activity after which a kernel holding GPUs is warned that
        they will be reclaimed.""",
    )

    grace_minutes = Float(
        10.0,
        config=True,
        help="""Minutes between the warning and the release of the GPUs; any GPU activity
        meanwhile cancels the warning.""",
    )

    action = Enum(
        list(ACTIONS),
        RESTART_WITHOUT_GPUS,
        config=True,
        help="""What happens to a kernel whose GPUs are reclaimed. "restart-without-gpus"
        (default): the kernel is restarted on the same image without GPUs (its notebook stays
        attached; what its memory held is lost), and can ask for GPUs again. "shutdown": the
        kernel is shut down. Either way the user is told why.""",
    )

    utilization_threshold = Int(
        5,
        config=True,
        help="""A sample of a kernel's GPU use counts as activity when the SM utilisation of
        its processes (percent, averaged over its GPUs) is above this.""",
    )

    memory_change_mib = Float(
        16.0,
        config=True,
        help="""A sample of a kernel's GPU use also counts as activity when the GPU memory of
        its processes changed by at least this many MiB since the previous sample. Memory that
        stays allocated but unused is not activity.""",
    )

    check_interval = Float(
        30.0,
        config=True,
        help="""Seconds between two checks of the kernels' GPU activity (the warning and the
        release happen at a check, so up to this late). The activity itself is sampled every
        GPUUsage.interval seconds.""",
    )

    keep_min_minutes = Float(
        15.0,
        config=True,
        help="""The shortest time, in minutes, a warned kernel's user may keep its GPUs for
        ("Keep it" in the warning). While kept they are not reclaimed; a kernel still idle when
        the keep ends loses them then, with no second grace period.""",
    )

    keep_max_minutes = Float(
        120.0,
        config=True,
        help="""The longest time, in minutes, a warned kernel's user may keep its GPUs for at
        once (below keep_min_minutes, it reads as keep_min_minutes).""",
    )

    keep_max_times = Int(
        2,
        config=True,
        help="""How many times a kernel's user may keep its GPUs while it stays idle (its next
        GPU activity starts the count afresh). 0: the warning offers no keep.""",
    )

    @validate("idle_minutes", "check_interval", "keep_min_minutes", "keep_max_minutes")
    def _positive(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not value > 0:
            name = proposal["trait"].name
            raise TraitError(f"GPUReclaim.{name} must be more than 0, not {value}.")
        return value

    @validate("grace_minutes", "memory_change_mib")
    def _not_negative(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not value >= 0:
            name = proposal["trait"].name
            raise TraitError(f"GPUReclaim.{name} cannot be negative ({value}).")
        return value

    @validate("keep_max_times")
    def _count(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if value < 0:
            raise TraitError(f"GPUReclaim.keep_max_times cannot be negative ({value}).")
        return value

    @validate("utilization_threshold")
    def _percent(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if not 0 <= value <= 100:
            raise TraitError(
                f"GPUReclaim.utilization_threshold is a percentage from 0 to 100, not {value}."
            )
        return value

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Read by request handlers on the event loop, written by the driver there too; the lock
        # is for readers on other threads (the admin view, benchmarks).
        self._lock = threading.Lock()
        self._kernels: dict[str, KernelReclaim] = {}
        self._warnings = 0
        self._reclaims = 0
        self._keeps = 0

    # ------------------------------------------------------------------ the state machine

    def judge(
        self, observations: Sequence[Observation], now: float, stale_after: float
    ) -> list[Decision]:
        """One check at unix time ``now``: each kernel that holds GPUs, with its samples.
        Kernels not observed hold no GPUs (any more): their tracking ends (a reclaimed one's
        record is kept a while). A kernel whose newest sample is older than ``stale_after``
        seconds (the sampler stalled, NVML failed) is neither warned nor released: there is no
        evidence that it is idle now."""
        decisions: list[Decision] = []
        with self._lock:
            for obs in observations:
                decision = self._judge_one(obs, now, stale_after)
                if decision is not None:
                    decisions.append(decision)
            seen = {obs.kernel_id for obs in observations}
            for kernel_id, kernel in list(self._kernels.items()):
                if kernel_id in seen:
                    continue
                if kernel.state != "reclaimed":
                    del self._kernels[kernel_id]  # it gave its GPUs up itself (or is gone)
                elif kernel.gone_at is None:
                    kernel.gone_at = now
                elif now - kernel.gone_at > KEEP_RECLAIMED_SECONDS:
                    del self._kernels[kernel_id]
        return decisions

    def _judge_one(self, obs: Observation, now: float, stale_after: float) -> Decision | None:
        kernel = self._kernels.get(obs.kernel_id)
        if kernel is None or kernel.state == "reclaimed" or kernel.gpus != obs.gpus:
            # Newly watched, or holding other GPUs than before (a restart under a new request):
            # idle from when it took them if the sampler watched it since, else from its first
            # sample (a server started beside a kernel that held its GPUs for hours).
            first = min((s.at for s in obs.samples if s.at >= obs.held_since), default=now)
            watched_since_held = obs.held_since > 0 and first - obs.held_since <= stale_after
            start = obs.held_since if watched_since_held else first
            start = min(start, now)
            # Samples from ``start`` on are read (the first one included).
            kernel = self._kernels[obs.kernel_id] = KernelReclaim(
                obs.kernel_id, obs.gpus, idle_since=start, last_sample_at=start - 1e-6
            )
        kernel.owner, kernel.user, kernel.notebook = obs.owner, obs.user, obs.notebook
        cleared = False
        for sample in obs.samples:
            if sample.at <= kernel.last_sample_at:
                continue
            if self._active(sample, kernel.last_memory):
                kernel.idle_since = max(kernel.idle_since, sample.at)
                if kernel.warned_at is not None and not kernel.releasing:
                    cleared = True
                    kernel.warned_at = kernel.release_at = kernel.kept_until = None
                    kernel.keeps = 0
            kernel.last_memory = sample.memory_used
            kernel.last_sample_at = max(kernel.last_sample_at, sample.at)
        idle = max(0.0, now - kernel.idle_since)
        fresh = now - kernel.last_sample_at <= stale_after
        if cleared:
            kernel.state, kernel.message = "active", ""
            return Decision(
                "cleared",
                kernel.kernel_id,
                kernel.gpus,
                idle,
                None,
                f"Kernel {kernel.kernel_id} uses its GPUs again: they are not reclaimed.",
            )
        if kernel.warned_at is None:
            kernel.state = "idle" if idle >= self.check_interval else "active"
            if idle < self.idle_minutes * 60 or not fresh:
                return None
            kernel.state, kernel.warned_at = "warned", now
            kernel.release_at = now + self.grace_minutes * 60
            self._warnings += 1
            unless = (
                f"unless it uses its GPUs, they are given back in "
                f"{duration_text(kernel.release_at - now)} ({self._then()})."
            )
            kernel.message = (
                f"This kernel has shown no GPU activity for {duration_text(idle)}: {unless}"
            )
            return Decision(
                "warn",
                kernel.kernel_id,
                kernel.gpus,
                idle,
                kernel.release_at,
                f"Kernel {kernel.kernel_id}{self._whose(kernel)} holds {gpus_text(kernel.gpus)} "
                f"and has shown no GPU activity for {duration_text(idle)}: {unless}",
            )
        assert kernel.release_at is not None
        if kernel.releasing or now < kernel.release_at or not fresh:
            return None
        kernel.releasing = True
        return Decision(
            "release",
            kernel.kernel_id,
            kernel.gpus,
            idle,
            kernel.release_at,
            self.reclaim_sentence(idle),
        )

    def _active(self, sample: UsageSample, previous_memory: int | None) -> bool:
        if sample.utilization is None or sample.utilization > self.utilization_threshold:
            return True
        return (
            previous_memory is not None
            and abs(sample.memory_used - previous_memory) >= self.memory_change_mib * MiB
        )

    def _then(self) -> str:
        if self.action == SHUTDOWN:
            return "the kernel is then shut down"
        return "the kernel is then restarted without GPUs, and what its memory holds is lost"

    @staticmethod
    def _whose(kernel: KernelReclaim) -> str:
        parts = [p for p in (kernel.user, kernel.notebook) if p]
        return f" ({', '.join(parts)})" if parts else ""

    def reclaim_sentence(self, idle: float) -> str:
        """What the user is told once a kernel's GPUs were reclaimed after ``idle`` seconds."""
        if self.action == SHUTDOWN:
            then = "the kernel was shut down. Start it again when you need it"
        else:
            then = (
                "the kernel was restarted without GPUs, and what its memory held is lost. Ask "
                "for GPUs again when you need them"
            )
        return (
            f"This kernel's GPUs were reclaimed after {duration_text(idle)} without GPU "
            f"activity: {then}."
        )

    # ------------------------------------------------------------------ the user's word back

    def keep_bounds(self) -> tuple[float, float]:
        """The shortest and longest keep, in minutes."""
        return self.keep_min_minutes, max(self.keep_min_minutes, self.keep_max_minutes)

    def keep(self, kernel_id: str, minutes: float, now: float) -> dict[str, Any]:
        """The kernel's user keeps its GPUs for ``minutes`` from ``now``: its release moves
        to then. Its new state as the REST API gives it. KeepRefused (409), or ValueRefused
        (400) for minutes out of the administrator's bounds, in a sentence."""
        with self._lock:
            kernel = self._kernels.get(kernel_id)
            if self.keep_max_times == 0:
                raise KeepRefused(
                    "The administrator does not let idle GPUs be kept: use them, or they are "
                    "given back as the warning says."
                )
            if kernel is None or kernel.state != "warned" or kernel.release_at is None:
                raise KeepRefused(
                    "This kernel's GPUs are not about to be reclaimed: there is nothing to keep."
                )
            if kernel.releasing:
                raise KeepRefused(
                    "This kernel's GPUs are being given back already: it is too late to keep them."
                )
            shortest, longest = self.keep_bounds()
            if not shortest <= minutes <= longest:  # NaN is refused too
                raise ValueRefused(
                    f"GPUs can be kept for {duration_text(shortest * 60)} to "
                    f"{duration_text(longest * 60)}, not {minutes:g} minutes."
                )
            if kernel.keeps >= self.keep_max_times:
                times = "once" if kernel.keeps == 1 else f"{kernel.keeps} times"
                raise KeepRefused(
                    f"This kernel's GPUs were kept {times} while idle, as often as the "
                    f"administrator allows: unless it uses them, they are given back in "
                    f"{duration_text(max(0.0, kernel.release_at - now))}."
                )
            kernel.keeps += 1
            kernel.kept_until = kernel.release_at = now + minutes * 60
            kernel.message = (
                f"Kept at your word for {duration_text(minutes * 60)}: unless this kernel uses "
                f"its GPUs, they are given back then ({self._then()})."
            )
            self._keeps += 1
            return kernel.to_json(self.action, self._keep_offer(kernel))

    def _keep_offer(self, kernel: KernelReclaim) -> dict[str, Any] | None:
        """What a warned kernel's user may still ask for (None: not warned, or no keeps)."""
        if self.keep_max_times == 0 or kernel.state != "warned" or kernel.releasing:
            return None
        shortest, longest = self.keep_bounds()
        return {
            "min_minutes": shortest,
            "max_minutes": longest,
            "times_left": max(0, self.keep_max_times - kernel.keeps),
        }

    # ------------------------------------------------------------------ what the driver did

    def released(self, kernel_id: str, now: float, action: str, sentence: str) -> None:
        """The driver gave the kernel's GPUs back (``action``): it is "reclaimed"."""
        with self._lock:
            kernel = self._kernels.get(kernel_id)
            if kernel is None:
                return
            kernel.state, kernel.reclaimed_at, kernel.action = "reclaimed", now, action
            kernel.message, kernel.releasing = sentence, False
            kernel.kept_until = None
            self._reclaims += 1

    def not_released(self, kernel_id: str, now: float) -> None:
        """The release failed (the driver logged why): try again after another grace period."""
        with self._lock:
            kernel = self._kernels.get(kernel_id)
            if kernel is not None and kernel.state != "reclaimed":
                kernel.releasing = False
                kernel.release_at = now + self.grace_minutes * 60

    # ------------------------------------------------------------------ reading

    def state_of(self, kernel_id: str) -> dict[str, Any] | None:
        """One kernel's reclaim state as the REST API gives it (None: not watched: reclaim is
        off, or the kernel holds no GPUs and none were reclaimed from it)."""
        with self._lock:
            kernel = self._kernels.get(kernel_id)
            if kernel is None:
                return None
            return kernel.to_json(self.action, self._keep_offer(kernel))

    def states(self) -> list[dict[str, Any]]:
        """Every watched kernel's reclaim state (the admin view, monitoring, benchmarks)."""
        with self._lock:
            return [k.to_json(self.action, self._keep_offer(k)) for k in self._kernels.values()]

    def shut_down_for(self, owner: KernelUser | None) -> list[dict[str, Any]]:
        """``owner``'s kernels (None: the server's own user's) shut down by a reclaim that
        are gone now, for their user's panel to say why."""
        with self._lock:
            return [
                k.to_json(self.action)
                for k in self._kernels.values()
                if k.state == "reclaimed" and k.action == SHUTDOWN and same_owner(k.owner, owner)
            ]

    def counters(self) -> dict[str, int]:
        """Totals since the server started, for metrics: warnings given, GPUs reclaimed, keeps
        of warned kernels' GPUs at their users' word."""
        with self._lock:
            return {"warnings": self._warnings, "reclaims": self._reclaims, "keeps": self._keeps}


def same_owner(a: KernelUser | None, b: KernelUser | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return (a.username, a.uid) == (b.username, b.uid)


def gpus_text(gpus: Sequence[str]) -> str:
    return f"GPU {gpus[0]}" if len(gpus) == 1 else f"{len(gpus)} GPUs ({', '.join(gpus)})"
