"""The reclaim state machine (reclaim.py) on a fake clock: warned after the idle time, released
after the grace period, and any activity (utilisation, memory changing, utilisation unknown)
starting the idle time afresh. No engine, no server: samples in, decisions out."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from traitlets import TraitError

from jupyter_gpu_containers.base.errors import KeepRefused, ValueRefused
from jupyter_gpu_containers.gpus.gpu_usage import UsageSample
from jupyter_gpu_containers.gpus.reclaim import (
    KEEP_RECLAIMED_SECONDS,
    SHUTDOWN,
    GPUReclaim,
    MiB,
    Observation,
    duration_text,
)
from jupyter_gpu_containers.host.identity import KernelUser

T0 = 1_800_000_000.0  # a fixed unix time: the fake clock's start
GPU = ("GPU-nvml-0",)
ALICE = KernelUser("alice", 2001, 2001, "/home/alice")
BOB = KernelUser("bob", 2002, 2002, "/home/bob")


@dataclass
class Kernel:
    """A kernel holding GPUs, and the samples the sampler took of it (one every 5 s)."""

    kernel_id: str = "k1"
    gpus: tuple[str, ...] = GPU
    held_since: float = T0
    owner: KernelUser | None = None
    samples: list[UsageSample] = field(default_factory=list)

    def observation(self) -> Observation:
        return Observation(
            self.kernel_id,
            self.gpus,
            list(self.samples),
            held_since=self.held_since,
            owner=self.owner,
            user=self.owner.username if self.owner else "me",
            notebook="lab/nb.ipynb",
        )


class Clock:
    """The fake clock: the sampler samples every 5 s, the policy checks every 10 s."""

    def __init__(self, policy: GPUReclaim, *kernels: Kernel) -> None:
        self.policy, self.kernels, self.now = policy, list(kernels), T0

    def run(
        self, seconds: float, utilization: int | None = 0, memory: int = 2 * 1024 * MiB
    ) -> list[tuple[float, str, str]]:
        """Advance ``seconds``: every kernel samples ``utilization`` and ``memory``; the
        decisions made meanwhile, as (seconds since T0, kind, kernel id)."""
        decisions = []
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now += 5
            for kernel in self.kernels:
                kernel.samples.append(UsageSample(self.now, memory, utilization))
            if round(self.now - T0) % 10 == 0:
                for d in self.policy.judge(
                    [k.observation() for k in self.kernels], self.now, stale_after=30
                ):
                    decisions.append((self.now - T0, d.kind, d.kernel_id))
                    if d.kind == "release":  # the driver carries it out at once
                        self.policy.released(d.kernel_id, self.now, self.policy.action, d.sentence)
        return decisions


def policy(**traits: object) -> GPUReclaim:
    config = {
        "enabled": True,
        "idle_minutes": 1.0,
        "grace_minutes": 0.5,
        "check_interval": 10.0,
        "utilization_threshold": 5,
        "memory_change_mib": 16.0,
    }
    config.update(traits)
    return GPUReclaim(**config)


def test_an_idle_kernel_is_warned_then_its_gpus_are_released() -> None:
    reclaim = policy()
    kernel = Kernel()
    clock = Clock(reclaim, kernel)
    assert clock.run(50) == []
    assert reclaim.state_of("k1")["state"] == "idle"  # type: ignore[index]
    assert clock.run(10) == [(60, "warn", "k1")]
    warned = reclaim.state_of("k1")
    assert warned is not None and warned["state"] == "warned"
    assert warned["release_at"] is not None and warned["release_at"].endswith("+00:00")
    assert "no GPU activity for 1 minute" in warned["message"]
    assert "given back in 30 seconds" in warned["message"]
    assert "restarted without GPUs" in warned["message"]
    assert reclaim.counters() == {"warnings": 1, "reclaims": 0, "keeps": 0}
    # The grace period: released at the first check 30 s after the warning, not before.
    assert clock.run(20) == []
    assert clock.run(10) == [(90, "release", "k1")]
    done = reclaim.state_of("k1")
    assert done is not None and done["state"] == "reclaimed"
    assert done["action"] == "restart-without-gpus" and done["reclaimed_at"] is not None
    assert "GPUs were reclaimed after 2 minutes without GPU activity" in done["message"]
    assert reclaim.counters() == {"warnings": 1, "reclaims": 1, "keeps": 0}


def test_utilisation_above_the_threshold_keeps_a_kernel_active() -> None:
    reclaim = policy()
    clock = Clock(reclaim, Kernel())
    assert clock.run(600, utilization=6) == []
    assert reclaim.state_of("k1")["state"] == "active"  # type: ignore[index]
    # At the threshold is not above it: idle.
    assert clock.run(60, utilization=5)[0] == (660, "warn", "k1")


def test_activity_starts_the_idle_time_afresh() -> None:
    reclaim = policy()
    clock = Clock(reclaim, Kernel())
    assert clock.run(40) == []
    assert clock.run(5, utilization=80) == []  # at 45 s: activity
    assert clock.run(55) == []  # 100 s in, but idle only since 45 s
    assert clock.run(10) == [(110, "warn", "k1")]


def test_activity_during_the_grace_period_cancels_the_warning() -> None:
    reclaim = policy()
    clock = Clock(reclaim, Kernel())
    assert clock.run(60) == [(60, "warn", "k1")]
    assert clock.run(10, utilization=50) == [(70, "cleared", "k1")]
    state = reclaim.state_of("k1")
    assert state is not None and state["state"] == "active" and state["release_at"] is None
    assert state["message"] == ""
    # The idle time counts again from that activity: a new warning, no release meanwhile.
    assert clock.run(60) == [(130, "warn", "k1")]
    assert reclaim.counters() == {"warnings": 2, "reclaims": 0, "keeps": 0}


def test_a_warned_kernel_kept_at_its_users_word_loses_its_gpus_when_the_keep_ends_idle() -> None:
    reclaim = policy(keep_min_minutes=1, keep_max_minutes=3, keep_max_times=2)
    clock = Clock(reclaim, Kernel())
    assert clock.run(60) == [(60, "warn", "k1")]
    warned = reclaim.state_of("k1")
    assert warned is not None and warned["kept_until"] is None and warned["keeps"] == 0
    assert warned["keep"] == {"min_minutes": 1.0, "max_minutes": 3.0, "times_left": 2}
    kept = reclaim.keep("k1", 2, clock.now)
    assert kept["state"] == "warned" and kept["keeps"] == 1
    assert kept["kept_until"] == kept["release_at"]
    assert kept["keep"]["times_left"] == 1
    assert kept["message"].startswith("Kept at your word for 2 minutes: unless this kernel")
    assert reclaim.counters()["keeps"] == 1
    # Not at the grace period's end (90 s), but at the keep's (180 s), still idle: released
    # then, with no second grace period.
    assert clock.run(110) == []
    assert clock.run(10) == [(180, "release", "k1")]
    done = reclaim.state_of("k1")
    assert done is not None and done["state"] == "reclaimed" and done["kept_until"] is None
    assert done["keep"] is None and done["keeps"] == 1


def test_keeps_are_bounded_in_length_and_in_number_and_activity_clears_them() -> None:
    reclaim = policy(keep_min_minutes=1, keep_max_minutes=3, keep_max_times=2)
    clock = Clock(reclaim, Kernel())
    clock.run(60)
    for minutes, says in [(0.5, "0.5"), (4, "4"), (float("nan"), "nan")]:
        bounds = f"GPUs can be kept for 1 minute to 3 minutes, not {says} minutes"
        with pytest.raises(ValueRefused, match=bounds):
            reclaim.keep("k1", minutes, clock.now)
    assert reclaim.state_of("k1")["keeps"] == 0  # type: ignore[index]
    reclaim.keep("k1", 1, clock.now)
    reclaim.keep("k1", 3, clock.now)  # a second keep counts from now, not from the first's end
    with pytest.raises(KeepRefused, match="kept 2 times while idle, as often as the admin"):
        reclaim.keep("k1", 1, clock.now)
    state = reclaim.state_of("k1")
    assert state is not None and state["keep"]["times_left"] == 0 and state["keeps"] == 2
    # Its GPU in use again: the warning and the keeps are cleared; warned again later, its
    # user may keep it twice more.
    assert clock.run(10, utilization=60) == [(70, "cleared", "k1")]
    cleared = reclaim.state_of("k1")
    assert cleared is not None and cleared["kept_until"] is None and cleared["keeps"] == 0
    assert cleared["keep"] is None  # not warned: nothing to keep
    with pytest.raises(KeepRefused, match="not about to be reclaimed: there is nothing to keep"):
        reclaim.keep("k1", 1, clock.now)
    assert clock.run(60) == [(130, "warn", "k1")]
    assert reclaim.keep("k1", 1, clock.now)["keep"]["times_left"] == 1


def test_a_kernel_not_warned_or_not_watched_or_being_released_is_not_kept() -> None:
    reclaim = policy()
    with pytest.raises(KeepRefused, match="nothing to keep"):
        reclaim.keep("nobody", 15, T0)
    clock = Clock(reclaim, Kernel())
    clock.run(60)
    (decision,) = reclaim.judge([clock.kernels[0].observation()], clock.now + 30, 60)
    assert decision.kind == "release"  # the driver is carrying it out
    with pytest.raises(KeepRefused, match="being given back already: it is too late"):
        reclaim.keep("k1", 15, clock.now + 31)
    assert reclaim.state_of("k1")["keep"] is None  # type: ignore[index]


def test_without_keeps_the_warning_offers_none() -> None:
    reclaim = policy(keep_max_times=0)
    clock = Clock(reclaim, Kernel())
    clock.run(60)
    assert reclaim.state_of("k1")["keep"] is None  # type: ignore[index]
    with pytest.raises(KeepRefused, match="does not let idle GPUs be kept"):
        reclaim.keep("k1", 15, clock.now)


def test_a_longest_keep_below_the_shortest_reads_as_the_shortest() -> None:
    assert policy(keep_min_minutes=30, keep_max_minutes=10).keep_bounds() == (30.0, 30.0)


def test_memory_changing_is_activity_and_memory_held_still_is_not() -> None:
    reclaim = policy()
    clock = Clock(reclaim, Kernel())
    assert clock.run(30, memory=4096 * MiB) == []
    assert clock.run(5, memory=4096 * MiB + 20 * MiB) == []  # allocating: active at 35 s
    assert clock.run(5, memory=4096 * MiB + 30 * MiB) == []  # 10 MiB: below 16, not activity
    assert clock.run(50, memory=4096 * MiB + 30 * MiB) == []
    assert clock.run(10, memory=4096 * MiB + 30 * MiB) == [(100, "warn", "k1")]


def test_a_sample_without_utilisation_is_never_judged_idle() -> None:
    reclaim = policy()
    clock = Clock(reclaim, Kernel())
    assert clock.run(600, utilization=None) == []  # MIG: NVML has no per-process samples
    assert reclaim.state_of("k1")["state"] == "active"  # type: ignore[index]


def test_without_fresh_samples_nothing_is_warned_or_released() -> None:
    reclaim = policy()
    kernel = Kernel()
    clock = Clock(reclaim, kernel)
    clock.run(20)
    # The sampler stalls (NVML failing): the checks go on, the samples do not.
    decisions = [
        d for t in range(1, 30) for d in reclaim.judge([kernel.observation()], T0 + 20 + 10 * t, 30)
    ]
    assert decisions == []
    warned_while_stale = reclaim.state_of("k1")
    assert warned_while_stale is not None and warned_while_stale["state"] != "warned"


def test_a_kernel_holding_other_gpus_starts_afresh() -> None:
    reclaim = policy()
    kernel = Kernel()
    clock = Clock(reclaim, kernel)
    assert clock.run(60) == [(60, "warn", "k1")]
    # Restarted under another request: it holds another GPU since now.
    kernel.gpus, kernel.held_since, kernel.samples = ("GPU-nvml-1",), clock.now, []
    assert clock.run(50) == []
    assert reclaim.state_of("k1")["gpus"] == ["GPU-nvml-1"]  # type: ignore[index]
    assert clock.run(10) == [(120, "warn", "k1")]


def test_a_kernel_that_gave_its_gpus_up_is_forgotten() -> None:
    reclaim = policy()
    kernel = Kernel()
    clock = Clock(reclaim, kernel)
    clock.run(60)
    clock.kernels.clear()  # it released its GPUs itself (a switch to a CPU kernel, a shutdown)
    clock.run(10)
    assert reclaim.state_of("k1") is None
    assert reclaim.states() == []


def test_a_shut_down_kernels_record_is_its_owners_for_an_hour() -> None:
    reclaim = policy(action=SHUTDOWN)
    alices, bobs = Kernel("ka", owner=ALICE), Kernel("kb", owner=BOB, held_since=T0 + 40)
    clock = Clock(reclaim, alices)
    assert clock.run(40) == []
    clock.kernels.append(bobs)  # Bob's kernel takes a GPU 40 s in
    assert clock.run(50) == [(60, "warn", "ka"), (90, "release", "ka")]
    clock.kernels.remove(alices)  # shut down: it is no longer observed
    clock.run(10)
    (record,) = reclaim.shut_down_for(ALICE)
    assert record["kernel_id"] == "ka" and record["action"] == "shutdown"
    assert "the kernel was shut down" in record["message"]
    assert reclaim.shut_down_for(BOB) == [] and reclaim.shut_down_for(None) == []
    assert {s["kernel_id"]: s["state"] for s in reclaim.states()} == {
        "ka": "reclaimed",
        "kb": "warned",
    }
    clock.kernels.remove(bobs)
    reclaim.judge([], clock.now + KEEP_RECLAIMED_SECONDS + 20, 30)
    assert reclaim.shut_down_for(ALICE) == [] and reclaim.states() == []


def test_a_failed_release_is_tried_again_after_another_grace_period() -> None:
    reclaim = policy()
    kernel = Kernel()
    clock = Clock(reclaim, kernel)
    clock.run(60)
    decisions = reclaim.judge([kernel.observation()], T0 + 90, 30)
    assert [d.kind for d in decisions] == ["release"]
    # While the driver carries it out, no second release is decided.
    assert reclaim.judge([kernel.observation()], T0 + 91, 30) == []
    reclaim.not_released("k1", T0 + 92)
    state = reclaim.state_of("k1")
    assert state is not None and state["state"] == "warned"
    assert reclaim.judge([kernel.observation()], T0 + 100, 30) == []
    assert [d.kind for d in reclaim.judge([kernel.observation()], T0 + 122, 120)] == ["release"]
    assert reclaim.counters()["reclaims"] == 0


def test_a_kernel_held_for_long_is_judged_from_its_samples_only() -> None:
    """A server (re)started beside a kernel that held its GPU for hours: the idle time counts
    from the first sample, not from when the GPU was taken."""
    reclaim = policy()
    kernel = Kernel(held_since=T0 - 3 * 3600)
    clock = Clock(reclaim, kernel)
    assert clock.run(50) == []
    assert clock.run(20)[0][1] == "warn"


@pytest.mark.parametrize(
    ("trait", "value", "says"),
    [
        ("idle_minutes", 0, "GPUReclaim.idle_minutes must be more than 0"),
        ("check_interval", -1, "GPUReclaim.check_interval must be more than 0"),
        ("grace_minutes", -1, "GPUReclaim.grace_minutes cannot be negative"),
        ("memory_change_mib", -5, "GPUReclaim.memory_change_mib cannot be negative"),
        ("utilization_threshold", 101, "percentage from 0 to 100"),
        ("keep_min_minutes", 0, "GPUReclaim.keep_min_minutes must be more than 0"),
        ("keep_max_minutes", -1, "GPUReclaim.keep_max_minutes must be more than 0"),
        ("keep_max_times", -1, "GPUReclaim.keep_max_times cannot be negative"),
        ("action", "kill", "action"),
    ],
)
def test_bad_settings_are_refused_in_a_sentence(trait: str, value: object, says: str) -> None:
    with pytest.raises(TraitError, match=says):
        GPUReclaim(**{trait: value})


def test_reclaim_is_off_by_default_and_documented() -> None:
    reclaim = GPUReclaim()
    assert reclaim.enabled is False
    for name, trait in reclaim.traits(config=True).items():
        assert trait.help.strip(), name


def test_durations_read_as_a_sentence_says_them() -> None:
    assert [duration_text(s) for s in (0.4, 1, 45, 59.6, 60, 89, 1800)] == [
        "0 seconds",
        "1 second",
        "45 seconds",
        "1 minute",
        "1 minute",
        "1 minute",
        "30 minutes",
    ]
