"""When each phase of a kernel's last launch ended, for its provisioner (provisioner.py): the
stamps (time.monotonic(), in order, from "pre_launch", its start) and how long each phase took.
The server log reports the durations when the kernel answers; the kernel's own view
(kernel_view.py) and benchmarks/ read the stamps (the provisioner's ``launch_stamps``).
"""

from __future__ import annotations

import time


class LaunchPhases:
    """The phases of one provisioner's last launch."""

    def __init__(self) -> None:
        # None: no launch yet (a kernel reattached after a server restart, say).
        self.stamps: dict[str, float] | None = None

    def begin(self) -> None:
        """A launch starts (pre_launch): the stamps of the one before are dropped."""
        self.stamps = {"pre_launch": time.monotonic()}

    def stamp(self, phase: str) -> None:
        """``phase`` ended now."""
        if self.stamps is None:  # a launch without pre_launch (only tests do that)
            self.stamps = {"pre_launch": time.monotonic()}
        self.stamps[phase] = time.monotonic()

    def drop(self, phase: str) -> None:
        if self.stamps is not None:
            self.stamps.pop(phase, None)

    def elapsed(self) -> float:
        """Seconds since the launch began."""
        assert self.stamps is not None  # stamped before
        return time.monotonic() - self.stamps["pre_launch"]

    def durations(self) -> dict[str, float]:
        """The last launch's phases and how long each took, in seconds, in launch order:
        prepare (checks, private directory, connection files, facts), image (inspect, policy,
        probe cache), gpus (request, inventory, plan, allocation under the host lock), create,
        start, ready (until the kernel answered kernel_info).

        A launch served by the warm pool: prepare, image, handover (GPU request, this launch's
        plan, a matching warm container taken), ready (its kernel answered the handover request;
        claim record written). One whose warm container failed the handover has a "pool" phase
        (the failed attempt) before the cold path's gpus, create, start and ready."""
        stamps = list((self.stamps or {}).items())
        return {name: at - stamps[i][1] for i, (name, at) in enumerate(stamps[1:])}

    def text(self) -> str:
        """The durations as the server log reports them."""
        return ", ".join(f"{name} {seconds:.3f}" for name, seconds in self.durations().items())
