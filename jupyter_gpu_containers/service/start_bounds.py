"""What a kernel service bounds per user, and in all, of the starts it makes: the start slots in
flight and those waiting for one (:class:`StartQueue`: each user a share, a quick "busy" beyond
it, never a timeout), and each user's kernels and their memory (:class:`UserKernels`), each
refused with a status and a sentence (:class:`StartRefused`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ..base.errors import ContainerKernelError
from ..gpus.gpuqueue import WhileWaiting
from ..host.identity import KernelUser
from ..policy.admin_policy import ContainerPolicy
from ..policy.checks import kernel_limits, parse_size


class StartRefused(ContainerKernelError):
    """A start the service refuses before it begins: too many at once, or too many kernels."""


class ServiceBusy(StartRefused):
    status = 503
    reason_phrase = "Kernel service busy"


class StartShareUsed(StartRefused):
    status = 429
    reason_phrase = "Too many starts of yours at once"


class KernelsPerUserReached(StartRefused):
    status = 409
    reason_phrase = "Kernel limit per user reached"


class MemoryPerUserReached(StartRefused):
    status = 409
    reason_phrase = "Memory limit per user reached"


class StartQueue:
    """Kernel starts in flight on the service, and those waiting for a slot: bounded, so that
    many users starting at once get answers (a start, or a quick "busy"), never timeouts; and
    shared, so that one user's starts cannot hold them all. A start holds its slot until its
    kernel answers or its launch times out, and a user decides how long that is (an image of
    hers whose kernel never answers, say): she may hold ``running_per_user`` slots and
    ``waiting_per_user`` places in the waiting room, and a start beyond that is answered at
    once with 429. A slot that comes free goes to the first start waiting whose user is under
    her share."""

    def __init__(
        self, running: int, waiting: int, running_per_user: int, waiting_per_user: int
    ) -> None:
        self.running, self.waiting = running, waiting
        self.running_per_user, self.waiting_per_user = running_per_user, waiting_per_user
        self._held: dict[str, int] = {}  # user -> slots held
        self._waiting: dict[str, int] = {}  # user -> starts in the waiting room
        # Starts waiting for a slot, in order; a start that gave its slot back while it waited
        # for a GPU (its launch request's while_waiting) comes back at the front.
        self._queue: list[tuple[str, asyncio.Future[None]]] = []

    def _may_take(self, user: str) -> bool:
        return (
            sum(self._held.values()) < self.running
            and self._held.get(user, 0) < self.running_per_user
        )

    def _take(self, user: str) -> None:
        self._held[user] = self._held.get(user, 0) + 1

    def _release(self, user: str) -> None:
        left = self._held.get(user, 0) - 1
        if left > 0:
            self._held[user] = left
        else:
            self._held.pop(user, None)
        for waiter in list(self._queue):  # the slot (and any other) to the first who may take it
            waiting_user, granted = waiter
            if granted.done():  # (cancelled: its start went away)
                self._queue.remove(waiter)
            elif self._may_take(waiting_user):
                self._queue.remove(waiter)
                self._take(waiting_user)
                granted.set_result(None)

    async def _acquire(self, user: str, *, first: bool) -> None:
        if self._may_take(user):
            # Whoever waits now is over their share (a freed slot would have gone to them), so
            # this start passes nobody.
            self._take(user)
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (user, granted)
        self._queue.insert(0, waiter) if first else self._queue.append(waiter)
        try:
            await granted
        except BaseException:
            if waiter in self._queue:
                self._queue.remove(waiter)
            if granted.done() and not granted.cancelled():
                self._release(user)  # given the slot, but gone before it could use it
            raise

    def _refusal(self, user: str) -> StartRefused | None:
        """Why a start of ``user`` that finds no slot may not wait for one; None if it may."""
        waiting = self._waiting.get(user, 0)
        if waiting >= self.waiting_per_user:
            return StartShareUsed(
                f"You have {self._held.get(user, 0)} kernel starts under way on the kernel "
                f"service and {waiting} more waiting, as many as one user may "
                f"({self.running_per_user} under way, {self.waiting_per_user} waiting). Try "
                "again once one of them has started or failed.",
                setting="ServiceApp.max_concurrent_starts_per_user, "
                "ServiceApp.max_queued_starts_per_user",
            )
        if sum(self._waiting.values()) >= self.waiting:
            return ServiceBusy(
                f"The kernel service is starting {sum(self._held.values())} kernels and "
                f"{sum(self._waiting.values())} more wait, as many as it takes. Try again in a "
                "few seconds.",
                setting="ServiceApp.max_queued_starts",
            )
        return None

    @contextlib.asynccontextmanager
    async def slot(self, user: str) -> AsyncIterator[WhileWaiting]:
        if not self._may_take(user):
            refusal = self._refusal(user)
            if refusal is not None:
                raise refusal
            self._waiting[user] = self._waiting.get(user, 0) + 1
            try:
                await self._acquire(user, first=False)
            finally:
                left = self._waiting[user] - 1
                if left > 0:
                    self._waiting[user] = left
                else:
                    del self._waiting[user]
        else:
            self._take(user)
        # A start that waits for a GPU gives its slot back meanwhile (what this yields goes to
        # the queue as the launch request's while_waiting): starts that can go ahead are not
        # held up by those that cannot.
        held = True

        @contextlib.asynccontextmanager
        async def given_back() -> AsyncIterator[None]:
            nonlocal held
            self._release(user)
            held = False
            try:
                yield
            finally:
                await self._acquire(user, first=True)  # (cancelled here: the slot is not held)
                held = True

        try:
            yield given_back
        finally:
            if held:
                self._release(user)


def _gib(size: int) -> str:
    return f"{round(size / 2**30, 2):g} GiB"


class UserKernels:
    """Each user's kernels on the service, those running and those starting: at most
    ``max_kernels``, and, when ``max_memory`` is set, memory limits that add up to no more than
    it. A start counts from before it waits for a slot until its kernel runs (then the kernel
    counts) or it fails; a restart replaces its kernel's container and counts nothing more. On
    the event loop only: the check and the count of a start happen with no await between, so
    starts at once each see the others."""

    def __init__(self, max_kernels: int, max_memory: str | None) -> None:
        self.max_kernels = max_kernels
        self.max_memory = (
            parse_size(max_memory, "ServiceApp.max_memory_per_user") if max_memory else None
        )
        # start id -> (user name, uid, its memory limit in bytes; None: none)
        self._starting: dict[str, tuple[str, int, int | None]] = {}

    @contextlib.contextmanager
    def starting(
        self, km: Any, user: KernelUser, start_id: str, spec: Any, config: Any, policy: Any
    ) -> Iterator[None]:
        memory = None
        if self.max_memory is not None:
            memory = memory_limit(policy, asked_memory_limit(spec, config))
        running = [kid for kid in km.list_kernel_ids() if owned_by(km, kid, user)]
        starting = [
            size
            for sid, (name, uid, size) in self._starting.items()
            if (name, uid) == (user.username, user.uid) and sid not in running
        ]
        if len(running) + len(starting) >= self.max_kernels:
            raise KernelsPerUserReached(
                f"You have {len(running) + len(starting)} kernels on the kernel service "
                f"(running or starting), as many as one user may have ({self.max_kernels}). "
                "Shut down a kernel you no longer need (JupyterLab's Running Terminals and "
                "Kernels panel), then try again.",
                setting="ServiceApp.max_kernels_per_user",
            )
        if self.max_memory is not None:
            if memory is None:
                raise MemoryPerUserReached(
                    "This kernel would have no memory limit, so it cannot count against the "
                    f"{_gib(self.max_memory)} of memory one user's kernels may have on the "
                    "kernel service. Choose a kernel with a memory limit, or ask the "
                    "administrator to give every kernel one.",
                    setting="ServiceApp.max_memory_per_user, ContainerPolicy.max_mem_limit",
                )
            used = sum(self._memory_of(km, kid, policy) for kid in running)
            used += sum(self.max_memory if size is None else size for size in starting)
            if used + memory > self.max_memory:
                raise MemoryPerUserReached(
                    f"This kernel may use up to {_gib(memory)} of memory, and your kernels on "
                    f"the kernel service (running or starting) may use {_gib(used)} of the "
                    f"{_gib(self.max_memory)} one user's kernels may have. Shut down a kernel "
                    "you no longer need, or choose a kernel with a smaller memory limit, then "
                    "try again.",
                    setting="ServiceApp.max_memory_per_user",
                )
        self._starting[start_id] = (user.username, user.uid, memory)
        try:
            yield
        finally:
            del self._starting[start_id]

    def _memory_of(self, km: Any, kernel_id: str, policy: Any) -> int:
        """A running kernel's memory limit in bytes; all of max_memory when it has none (one
        started before the administrator set a budget or a ceiling)."""
        assert self.max_memory is not None
        provisioner = getattr(km.get_kernel(kernel_id), "provisioner", None)
        made = getattr(provisioner, "container_spec", None)  # (None: a reattached kernel)
        asked = made.mem_limit if made is not None else getattr(provisioner, "mem_limit", None)
        try:
            size = memory_limit(policy, asked)
        except ContainerKernelError:  # more than today's ceiling: what it has
            size = parse_size(asked, "mem_limit")
        return self.max_memory if size is None else size


def asked_memory_limit(spec: Any, config: Any) -> Any:
    """The memory limit a start of kernel spec ``spec`` asks for, as its provisioner sees it:
    the spec's provisioner config's mem_limit where it names one (a spec's config overrides
    the administrator's), else ContainerProvisioner.mem_limit of the service's configuration."""
    metadata = getattr(spec, "metadata", None)
    provisioner = metadata.get("kernel_provisioner") if isinstance(metadata, dict) else None
    own = provisioner.get("config") if isinstance(provisioner, dict) else None
    if isinstance(own, dict) and "mem_limit" in own:
        return own["mem_limit"]
    if config is not None and "ContainerProvisioner" in config:
        return config.ContainerProvisioner.get("mem_limit")
    return None


def memory_limit(policy: ContainerPolicy, asked: Any) -> int | None:
    """The memory limit in bytes a kernel asking for ``asked`` gets (ContainerPolicy's ceiling
    applied, as checks.kernel_limits does at its launch); None: none. A refusal in a
    sentence for a limit above the ceiling or not a size."""
    limit = kernel_limits(
        policy, mem_limit=asked, pids_limit=None, shm_size=None, runtime=None, ulimits={}
    ).mem_limit
    return None if limit is None else parse_size(limit, "mem_limit")


def owned_by(km: Any, kernel_id: str, user: KernelUser) -> bool:
    owner = km.owner_of(kernel_id)
    return owner is not None and owner.username == user.username and owner.uid == user.uid
