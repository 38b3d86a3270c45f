"""Whether this process may still act on kernels: the fence of a replicated kernel service.

Where two replicas of the kernel service share one engine (Kubernetes: one active, one standby,
behind a lease), a replica that stopped for a while (paused, frozen, starved of CPU) may wake up
after the other took over, with work queued that it would do at once: a cull whose time came, a
shutdown a client sent before the pause. What holds the right to act sets itself as the
process's guard here; every action on a kernel and every call that changes the engine's state
asks first, and a guard that answers with a sentence refuses it. A process with no guard (one
service per host, a user's own server) is never refused.

Process-wide on purpose, and no registry: the right to act belongs to the process, whichever
object acts, and a process holds one lease at most.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import ContainerKernelError


class NotActive(ContainerKernelError):
    """This process no longer holds the right to act on kernels (another replica does)."""

    status = 503
    reason_phrase = "Standing down"


# What answers "" while this process may act, else the sentence that says why it may not: one
# per process (a process holds one lease at most), None where nothing guards it. Set and read
# whole (no lock needed).
_guard: Callable[[], str] | None = None


def guard(check: Callable[[], str]) -> Callable[[], None]:
    """Make ``check`` this process's guard; returns what removes it."""
    global _guard
    if _guard is not None and _guard is not check:
        raise RuntimeError("This process's actions are guarded already (one lease at a time).")
    _guard = check

    def remove() -> None:
        global _guard
        if _guard is check:
            _guard = None

    return remove


def refusal() -> str:
    """ "" when this process may act, else why not."""
    check = _guard
    return check() if check is not None else ""


def check() -> None:
    """Raise :class:`NotActive` unless this process may act."""
    sentence = refusal()
    if sentence:
        raise NotActive(sentence)
