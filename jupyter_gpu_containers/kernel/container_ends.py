"""How a kernel's containers ended, for its provisioner (provisioner.py): the sentence for a
container that ended while its kernel was starting, or was stopped because its kernel did not
answer in time (the launch's errors, with the log's last lines), the one report of a
running kernel's unexpected end (the server log, the kernel's ``reason``), and the record of
the last end (``last_end``: the kernel's own view, kernel_view.py), a restart's included.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from ..backends.backend import ContainerBackend
from ..base.errors import (
    ContainerExited,
    ContainerKernelError,
    ImageNotKernelReady,
    LaunchTimeout,
)
from ..base.records import ContainerSpec
from ..policy.command import diagnose_exit


class EndingKernel(Protocol):
    """What the record of ends reads of its provisioner, and ``last_end``, which it sets."""

    kernel_id: str
    parent: Any
    log: Any
    image: str
    mem_limit: str | None
    log_tail_lines: int
    launch_timeout: float
    container_id: str | None
    container_spec: ContainerSpec | None
    # How the kernel's last container ended (see ContainerEnds.record).
    last_end: dict[str, Any] | None

    @property
    def backend(self) -> ContainerBackend: ...


class ContainerEnds:
    """How one provisioner's kernel containers ended."""

    def __init__(self, kernel: EndingKernel) -> None:
        self.kernel = kernel
        # The container whose unexpected end was reported (see report_death).
        self.reported: str | None = None

    async def raise_for_exit(self, state: Any) -> None:
        """Why the container ended (or was removed, ``state`` None) while its kernel was
        starting, as the launch's error, with its log's last lines."""
        kernel = self.kernel
        tail = await kernel.backend.logs_tail(kernel.container_id or "", kernel.log_tail_lines)
        if state is None:
            raise ContainerExited(
                f"The kernel container for {kernel.image} was removed while the kernel was "
                "starting."
            )
        sentence, image_at_fault = diagnose_exit(
            kernel.image, state.exit_code, state.oom_killed, tail
        )
        raise (ImageNotKernelReady if image_at_fault else ContainerExited)(sentence)

    async def raise_for_timeout(self) -> None:
        """A kernel that did not answer within the launch timeout, as the launch's error, with
        its log's last lines: the launch is stopped and its container removed."""
        kernel = self.kernel
        tail = await kernel.backend.logs_tail(kernel.container_id or "", kernel.log_tail_lines)
        raise LaunchTimeout(
            f"The kernel in the container for {kernel.image} did not answer within "
            f"{kernel.launch_timeout:.0f} s, so the launch was stopped and the container "
            "removed. If this image is slow to start, ask an administrator to let kernels take "
            "longer to start." + (f"\nLast lines of its log:\n{tail}" if tail else ""),
            setting="ContainerProvisioner.launch_timeout",
        )

    async def report_death(self, container_id: str, state: Any) -> None:
        """Say once, in the server log and as the kernel's ``reason`` (GET /api/kernels/<id>),
        why a running kernel's container ended: the restarter only sees an exit code, and a
        kernel killed for memory would otherwise just "restart" with its state lost and no
        word why."""
        kernel = self.kernel
        if self.reported == container_id:
            return
        self.reported = container_id
        setting = ""  # the option that decided it, for the log
        if state.oom_killed:
            spec = kernel.container_spec
            mem_limit = spec.mem_limit if spec else kernel.mem_limit
            limit = f" of {mem_limit}" if mem_limit else ""
            sentence = (
                f"The kernel ran out of memory: its container ({kernel.image}) was OOM-killed at "
                f"its memory limit{limit} (exit code {state.exit_code}), and everything in the "
                "kernel's memory is lost. Use less memory, or ask an administrator for a larger "
                "memory limit."
            )
            setting = " (setting: ContainerProvisioner.mem_limit)"
        else:
            try:
                tail = await kernel.backend.logs_tail(container_id, kernel.log_tail_lines)
            except ContainerKernelError:
                tail = ""  # the engine went away meanwhile: the exit code is known all the same
            # The engine's own word on why, where it has one (a scheduler that ended the
            # kernel's job: its time limit, a preemption).
            why = f": {state.error.rstrip('.')}" if getattr(state, "error", "") else ""
            sentence = (
                f"The kernel's container ({kernel.image}) exited with code {state.exit_code}"
                f"{why}." + (f"\nLast lines of its log:\n{tail}" if tail else "")
            )
        self.record(container_id, state, sentence)
        kernel.log.warning("Kernel %s died: %s%s", kernel.kernel_id, sentence, setting)
        if kernel.parent is not None and hasattr(kernel.parent, "reason"):
            kernel.parent.reason = sentence

    def record(self, container_id: str, state: Any, sentence: str, routine: bool = False) -> None:
        """The kernel's ``last_end``: container id, exit code, OOM-killed, the sentence, when
        (unix time). ``routine``: the container ended because someone asked (a restart), not on
        its own."""
        oom = bool(state.oom_killed) if state is not None else False
        self.kernel.last_end = {
            "container_id": container_id,
            "exit_code": state.exit_code if state is not None else None,
            "oom_killed": oom,
            "reason": sentence,
            "at": time.time(),
            "routine": routine and not oom,
        }

    async def record_restart(self, container_id: str) -> None:
        """The end of a container stopped for a restart (one engine call: its exit code), unless
        its end was reported already (it died, and the restarter restarts it)."""
        if self.reported == container_id:
            return
        try:
            state = await self.kernel.backend.state(container_id)
        except ContainerKernelError:
            state = None
        code = f" with code {state.exit_code}" if state is not None else ""
        oom = " after it was OOM-killed" if state is not None and state.oom_killed else ""
        self.record(
            container_id,
            state,
            f"The kernel was restarted: its previous container ended{code}{oom}.",
            routine=True,
        )
