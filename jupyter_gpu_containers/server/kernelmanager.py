"""The server's kernel manager: jupyter_server's, plus what this extension needs of it.

- **The core's errors become HTTP errors here**, for the stock kernels and sessions APIs: a
  provisioner raises plain exceptions with a sentence and a status (errors.py), and a start,
  restart, interrupt or shutdown that fails with one answers that status with that sentence,
  never "Unhandled error". The option that decided it (errors.py's ``setting``) stays out of
  that answer, which jupyter_server writes for anyone; the stock routes' log line names it
  (stock_routes.py). ``finish_with_sentence`` answers the extension's own routes, where an
  administrator also reads it.
- **Adopting a running kernel** (recovery after a server restart) goes through :meth:`adopt`,
  the one place that touches jupyter_server's bookkeeping (_private.py lists how).
- A start that failed is forgotten at once: jupyter_client would keep it pending, and
  ``shutdown_all`` then fails on it before shutting the other kernels down.
- **A shutdown waits for a restart under way** (the restarter's, after the container died, or
  another request's): jupyter_client reads the kernel's ``ready`` future, which a restart has
  replaced with a pending one, and raised InvalidStateError: a 500 for the user's "Shut Down".
- **Output buffered while no page is connected is bounded**, per kernel and per user: the oldest
  messages go first, and the page that reconnects is told how much was dropped (OfflineBuffer).
- **A restart answers once the kernel's websockets receive its output** (websocket.py).
- **A kernel that was shut down is never restarted.** jupyter_client's asyncio restarter asks
  whether the kernel lives (here an engine request, which takes a while), and restarts it if
  not, without looking again whether a shutdown began meanwhile: a kernel whose container died
  just as its user shut it down came back, in a new container holding its GPUs, for nobody.
  A restart looks again after its own engine requests, for the same reason.

The app makes it the server's kernel manager class (app.py) unless the administrator configured
another one, or kernels live behind a gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import json
import logging
import os
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import zmq.asyncio
from jupyter_core.utils import ensure_async
from jupyter_server.services.kernels.kernelmanager import (
    AsyncMappingKernelManager,
    ServerKernelManager,
)
from tornado import web
from traitlets import Integer, default

from .. import _private
from ..base import fence
from ..base.errors import ContainerKernelError
from ..base.words import counted
from ..host.identity import KernelUser
from ..kernel.launch_request import launching
from ..services import services_for
from .event_streams import EventStreams
from .waiting_sessions import StartsUnderWay
from .websocket import (
    HeldMessages,
    close_kernel_websockets,
    end_kernel_websockets,
    iopub_reattached,
)
from .zmq_context import raise_open_files_limit, size_context


class SentenceHTTPError(web.HTTPError):
    """An HTTP error whose ``str()`` is the bare sentence: the sessions API answers failed starts
    with ``str(e)``, and the log shows it. The option that decided it (``setting``) stays out of
    the answer: jupyter_server's handlers write it, and cannot ask whether the user is an
    administrator; the stock routes' handlers log it (stock_routes.py)."""

    def __init__(self, error: ContainerKernelError) -> None:
        # No format arguments: tornado then takes the sentence as literal text.
        super().__init__(error.status, error.sentence, reason=error.reason_phrase)
        self.sentence = error.sentence
        self.setting = error.setting
        self.log_text = error.log_text

    def __str__(self) -> str:
        return self.sentence


def as_http(error: ContainerKernelError) -> web.HTTPError:
    return SentenceHTTPError(error)


def finish_with_sentence(
    handler: web.RequestHandler, error: ContainerKernelError, *, admin: bool = False
) -> None:
    """Answer a request with a core error: its status and reason, and JSON of its sentence
    (what every /gpu-containers/ error looks like, here or forwarded from a kernel service).
    ``admin``: the request's user is an administrator, who also reads the option that decided
    it (``"setting"``); a user's sentence says what an administrator can change, never the
    option's name (errors.py)."""
    handler.clear_header("Content-Type")
    handler.set_status(error.status, reason=error.reason_phrase)
    handler.set_header("Content-Type", "application/json")
    answer = {"message": error.sentence, "reason": error.reason_phrase}
    if admin and error.setting:
        answer["setting"] = error.setting
    handler.finish(json.dumps(answer))


class ContainerKernelManager(ServerKernelManager):
    """One kernel's manager: jupyter_server's, except that once its kernel was shut down for
    good (not for a restart) nothing restarts it."""

    ended = False  # set by GPUContainersKernelManager when it shuts the kernel down

    async def restart_kernel(  # type: ignore[override]
        self, now: bool = False, newports: bool = False, **kw: Any
    ) -> None:
        if self._shut_down_for_good():
            return
        # What would refuse the new launch (the image untagged, no longer allowed, another
        # user's private pull) refuses the restart while the kernel still runs: it keeps its
        # container and its state. A kernel that died (the restarter's restart) has no state to
        # keep: its restart goes on, and a refused launch removes what is left of it, GPUs too.
        check = getattr(self.provisioner, "check_restart", None)
        if check is not None and await self.is_alive():
            await check()
        # Those awaits were engine requests: a shutdown may have begun and ended meanwhile (the
        # restarter's restart of a removed container, and its user's Shut Down). From here to
        # jupyter_client's pending ``ready`` future, which a shutdown waits for, nothing awaits.
        if self._shut_down_for_good():
            return
        await super().restart_kernel(now=now, newports=newports, **kw)

    def _shut_down_for_good(self) -> bool:
        if self.ended:
            self.log.info("Kernel %s was shut down: it is not restarted.", self.kernel_id)
        return self.ended

    @property
    def lost_in_restart(self) -> bool:
        """Whether a restart stopped the kernel and its new launch failed: no container is left
        (the launch's clean-up removed the previous one and the private directory)."""
        ready = self.ready
        failed = ready.done() and not ready.cancelled() and ready.exception() is not None
        return failed and not getattr(self.provisioner, "has_process", True)


# What a buffered message costs beyond its bytes: the Python objects holding it (a tuple, a
# list, a bytes object per part), counted so that many small messages are bounded too.
MESSAGE_OVERHEAD = 512


def _size(msg_list: list[Any]) -> int:
    return MESSAGE_OVERHEAD + sum(len(part) for part in msg_list)


class OfflineBuffer:
    """One kernel's messages while no page is connected, in jupyter_server's form (a sequence
    of ``(channel, msg_list)`` that the reconnecting page's connection replays), at most
    ``limit`` bytes. Output (IOPub) goes first, the oldest first: the replies on the other
    channels are small, and a page waits for them (the kernel's IOPub backlog often arrives after
    the reply of the request that made it). Replayed, it begins with a notice of what was
    dropped, on IOPub (stderr, under the last dropped message's request), as the page's own
    output."""

    def __init__(self, owner: BufferLedger, kernel: Any, limit: int) -> None:
        self.owner, self.kernel, self.limit = owner, kernel, limit
        self.bytes = self.dropped = self.dropped_bytes = 0
        # (arrival number, channel, msg_list): output, and everything else.
        self._output: deque[tuple[int, str, list[Any]]] = deque()
        self._replies: deque[tuple[int, str, list[Any]]] = deque()
        self._arrivals = 0
        self._last_dropped: list[Any] | None = None
        self.attached = True  # counted in the owner's ledger until the page takes it

    def __len__(self) -> int:
        return len(self._output) + len(self._replies)

    def __bool__(self) -> bool:
        return bool(self.dropped) or len(self) > 0

    def add(self, channel: str, msg_list: list[Any]) -> None:
        size = _size(msg_list)
        if size > self.limit:
            self._count_dropped(msg_list, size)
            return
        while len(self) and self.bytes + size > self.limit:
            self.drop_oldest()
        if self.attached:
            self.owner.make_room(self, size)
        self._arrivals += 1
        queue = self._output if channel == "iopub" else self._replies
        queue.append((self._arrivals, channel, msg_list))
        self.bytes += size
        if self.attached:
            self.owner.total += size

    def drop_oldest(self) -> None:
        _arrival, _channel, msg_list = (self._output or self._replies).popleft()
        size = _size(msg_list)
        self.bytes -= size
        if self.attached:
            self.owner.total -= size
        self._count_dropped(msg_list, size)

    def _count_dropped(self, msg_list: list[Any], size: int) -> None:
        self.dropped += 1
        self.dropped_bytes += size
        self._last_dropped = msg_list

    def detach(self) -> None:
        """The buffer is replayed or discarded: its bytes leave the owner's ledger."""
        if self.attached:
            self.attached = False
            self.owner.total -= self.bytes
            self.owner.buffers.pop(id(self), None)

    def notice(self) -> list[Any] | None:
        """The message that tells the page what was dropped, signed as the kernel's."""
        if not self.dropped:
            return None
        session = self.kernel.session
        parent: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            _, parts = session.feed_identities(self._last_dropped or [])
            parent = session.unpack(parts[2])
        text = (
            f"[{counted(self.dropped, 'message')}, {self.dropped_bytes / 2**20:.1f} MiB of this "
            "kernel's output were dropped while no page was connected: the server keeps at most "
            f"{self.limit / 2**20:.1f} MiB of it per kernel ({self.owner.limit / 2**20:.1f} MiB "
            "per user), the newest. Write long output to a file to keep all of it.]\n"
        )
        msg = session.msg("stream", {"name": "stderr", "text": text}, parent=parent)
        return [b"kernel.iopub.stream", *session.serialize(msg)]

    def __iter__(self) -> Iterator[tuple[str, list[Any]]]:
        notice = self.notice()
        if notice is not None:
            yield ("iopub", notice)
        for _arrival, channel, msg_list in heapq.merge(
            self._output, self._replies, key=lambda entry: entry[0]
        ):
            yield (channel, msg_list)


class BufferLedger:
    """The offline buffers of one user's kernels: at most ``limit`` bytes in all. Room for a
    message is made in that user's fullest buffer."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self.buffers: dict[int, OfflineBuffer] = {}  # by id(): a deque is not hashable

    def make_room(self, buffer: OfflineBuffer, size: int) -> None:
        self.buffers[id(buffer)] = buffer
        while self.total + size > self.limit:
            fullest = max(
                (b for b in self.buffers.values() if len(b)), key=lambda b: b.bytes, default=None
            )
            if fullest is None:
                break
            fullest.drop_oldest()


def _may_act() -> None:
    """A replica of the kernel service that lost its lease acts on no kernel: another replica
    owns them now (base/fence.py)."""
    try:
        fence.check()
    except fence.NotActive as e:
        raise as_http(e) from None


class GPUContainersKernelManager(AsyncMappingKernelManager):
    """jupyter_server's AsyncMappingKernelManager, translating this project's errors and able to
    adopt kernels that already run."""

    max_kernel_sockets = Integer(
        0,
        min=0,
        config=True,
        help="""ZeroMQ sockets all of this server's kernels may hold at once, with their pages'
        connections (a few a kernel, four a connected page). 0: as many as the process's
        open-file limit allows, which the server raises toward its hard limit (at most 65,536)
        when its first kernel starts. libzmq's own default, 1023, stopped a kernel service with
        some 150 kernels and their pages open.""",
    )

    @default("context")
    def _context_default(self) -> zmq.asyncio.Context:
        context = super()._context_default()
        size_context(context, self.max_kernel_sockets or raise_open_files_limit())
        return context

    offline_buffer_limit = Integer(
        8 * 2**20,
        min=0,
        config=True,
        help="""Bytes of one kernel's messages kept while no page is connected to it (jupyter_server
        buffers them for the page that reconnects, with buffer_offline_messages): beyond it the
        oldest are dropped, and the page that reconnects is told how much. 0 keeps none.""",
    )

    offline_buffer_limit_per_user = Integer(
        32 * 2**20,
        min=0,
        config=True,
        help="""Bytes of messages kept for all of one user's kernels while no page is connected to
        them (each kernel's within offline_buffer_limit): beyond it the oldest of that user's
        fullest buffer are dropped. In direct mode all kernels are the server's user's.""",
    )

    held_messages_limit_per_user = Integer(
        16 * 2**20,
        min=0,
        config=True,
        help="""On a shared server (the kernel service): bytes of messages all of one user's pages
        may have held while their kernels (re)start (each page holds what it sends then until
        its kernel can answer it, at most 200 messages and 4 MiB a page). Beyond it a message
        is refused, and the page told so. 0: only each page's bound.""",
    )

    max_websockets_per_user = Integer(
        64,
        min=0,
        config=True,
        help="""On a shared server (the kernel service): kernel websockets one user's pages may
        have open at once, over all their kernels (each holds sockets to its kernel). Beyond
        it a connection is refused (HTTP 429) with a sentence. 0: no bound.""",
    )

    max_event_streams_per_user = Integer(
        8,
        min=0,
        config=True,
        help="""On a shared server (the kernel service): event streams one user's pages may have
        open at once, kernel logs and pull progress together (each holds a connection, and a
        log a reading thread and an engine connection). Beyond it a stream is refused (HTTP
        429) with a sentence. 0: no bound.""",
    )

    _buffer_ledgers: dict[Any, BufferLedger] | None = None
    _held_messages: HeldMessages | None = None
    _event_streams: EventStreams | None = None

    @property
    def event_streams(self) -> EventStreams:
        """The kernel logs and pull progress streams open now, per user (event_streams.py)."""
        if self._event_streams is None:
            self._event_streams = EventStreams()
        return self._event_streams

    @property
    def held_messages(self) -> HeldMessages:
        """What its pages' connections hold while a kernel restarts (websocket.py)."""
        if self._held_messages is None:
            self._held_messages = HeldMessages()
        return self._held_messages

    @default("kernel_manager_class")
    def _default_kernel_manager_class(self) -> str:
        return f"{ContainerKernelManager.__module__}.{ContainerKernelManager.__qualname__}"

    # Each kernel's endpoints as its pages' kept channels know them: (transport, ip, container).
    _endpoint_addresses: dict[str, tuple[str, str, str]] | None = None

    def _endpoint_address(self, kernel_id: str) -> tuple[str, str, str]:
        km = self.get_kernel(kernel_id)
        launched = getattr(getattr(km, "provisioner", None), "container_id", None)
        return (str(getattr(km, "transport", "")), str(getattr(km, "ip", "")), str(launched or ""))

    def ports_changed(self, kernel_id: str) -> bool:
        """Whether a page reconnecting to ``kernel_id`` needs new channels rather than those kept
        for it while it was away.

        jupyter_server compares port numbers only. An IPC kernel's endpoints are files in its
        private directory, which a launch after a failed one makes anew (a restart whose wait
        for a GPU was cancelled): same numbers, another path. And a restart that keeps the
        numbers and the path still puts another container behind them: the kept channels then
        reach it only through ZMQ's own reconnection, which jupyter_server's nudge checks for
        IOPub alone, never for the page's shell socket (a run lost a cell so, after a restart
        that waited for a GPU: no reply and no output in 45 s). So a reconnection after any
        launch gets channels made for the kernel now there, each checked by the nudge. While
        a launch is under way (no container yet) the one before counts."""
        changed = bool(super().ports_changed(kernel_id))
        if self._endpoint_addresses is None:
            self._endpoint_addresses = {}
        now = self._endpoint_address(kernel_id)
        before = self._endpoint_addresses.get(kernel_id, now)
        if not now[2]:
            now = (now[0], now[1], before[2])
        if before != now:
            changed = True
        self._endpoint_addresses[kernel_id] = now
        return changed

    def remove_kernel(self, kernel_id: str) -> Any:
        if self._endpoint_addresses is not None:
            self._endpoint_addresses.pop(kernel_id, None)
        return super().remove_kernel(kernel_id)

    # The starts under way (listed while they wait), and the ids clients chose for theirs.
    _under_way: StartsUnderWay | None = None
    _reserved_ids: set[str] | None = None

    async def start_kernel(self, **kwargs: Any) -> str:  # type: ignore[override]
        _may_act()
        # The id chosen here, before the start, so that a start that waits is listed under the
        # id it will have (list_kernels).
        kernel_id = str(kwargs.get("kernel_id") or "")
        fresh = not kernel_id or kernel_id not in self
        if self._under_way is None:
            self._under_way = StartsUnderWay()
        if fresh:
            kernel_id = kernel_id or self.new_kernel_id()
            kwargs["kernel_id"] = kernel_id
            name = str(kwargs.get("kernel_name") or self.default_kernel_name)
            self._under_way.begin(kernel_id, name)
        try:
            kernel_id = str(await super().start_kernel(**kwargs))
            if self._endpoint_addresses is None:
                self._endpoint_addresses = {}
            self._endpoint_addresses[kernel_id] = self._endpoint_address(kernel_id)
            return kernel_id
        except ContainerKernelError as e:
            raise as_http(e) from e
        finally:
            _private.forget_failed_starts(self)
            if fresh:
                self._under_way.end(kernel_id)

    def reserve_kernel_id(self, kernel_id: str) -> bool:
        """Hold ``kernel_id`` for a start a client chose it for (a user's server behind the
        kernel service, which lists the start under it while it waits); False when it is taken:
        a kernel's, a start's under way, or held already. Give it back with
        :meth:`release_kernel_id` once the start ended, whichever way."""
        taken = (
            kernel_id in self
            or kernel_id in (self._under_way or ())
            or kernel_id in (self._reserved_ids or ())
        )
        if taken:
            return False
        if self._reserved_ids is None:
            self._reserved_ids = set()
        self._reserved_ids.add(kernel_id)
        return True

    def release_kernel_id(self, kernel_id: str) -> None:
        if self._reserved_ids is not None:
            self._reserved_ids.discard(kernel_id)

    def _waiting_ids(self) -> set[str]:
        services = services_for(self)
        if services is None:
            return set()
        return services.queue.waiting_ids() | services.placement.scheduler_waiting_ids()

    def starts_under_way(self) -> dict[str, str]:
        """The starts under way to list (waiting_sessions.py), by kernel id, with their state
        (StartsUnderWay): waiting in the GPU queue or the engine's scheduler, or starting once
        they waited."""
        if not self._under_way:
            return {}
        return self._under_way.states(self._waiting_ids(), self)

    async def cancel_wait(self, kernel_id: str, why: str) -> None:
        """End the start of ``kernel_id`` that waits for a GPU, in the GPU queue or in the
        engine's scheduler (its launch fails with 409 "GPU wait cancelled"). A wait in the
        engine's scheduler is this server's user's own (a user's own server: the kernel
        service's user's starts are cancelled through its queue's route)."""
        services = services_for(self)
        if services is None:
            return
        if kernel_id in services.placement.scheduler_waiting_ids():
            await services.placement.cancel_scheduler_wait(kernel_id, os.getuid())
        else:
            services.queue.cancel(kernel_id, why)

    def list_kernels(self) -> list[dict[str, Any]]:
        """The running kernels, and the starts that wait for a GPU (or waited, and launch now),
        as the sessions API lists their sessions: JupyterLab takes a kernel missing from this
        list for ended, and drops a page's connection to it with the cells it holds."""
        kernels: list[dict[str, Any]] = list(super().list_kernels())
        if self._under_way:
            listed = {k.get("id") for k in kernels}
            for kernel_id, state in self.starts_under_way().items():
                if kernel_id not in listed:
                    kernels.append(self._under_way.model(kernel_id, state))
        return kernels

    def kernel_model(self, kernel_id: str) -> dict[str, Any]:
        if self._under_way and kernel_id in self._under_way and kernel_id not in self:
            state = self.starts_under_way().get(kernel_id)
            if state is not None:
                return self._under_way.model(kernel_id, state)
        model: dict[str, Any] = super().kernel_model(kernel_id)
        return model

    async def restart_kernel(self, kernel_id: str, now: bool = False) -> Any:  # type: ignore[override]
        _may_act()
        with self.held_messages.server_restart(kernel_id):
            return await self._restart_kernel(kernel_id, now)

    async def _restart_kernel(self, kernel_id: str, now: bool) -> Any:
        try:
            restarted = await super().restart_kernel(kernel_id, now=now)
        except ContainerKernelError as e:
            lost = self._lost_in_restart(kernel_id)
            if lost and e.routine and await self._restore_after_cancel(kernel_id, e):
                back = ContainerKernelError(
                    f"{e.sentence} The kernel restarted as it was before (what it held in "
                    "memory was lost with the restart).",
                    status=e.status,
                    setting=e.setting,
                )
                back.reason_phrase, back.routine = e.reason_phrase, True
                raise as_http(back) from e
            if lost:
                then = (
                    "choose the notebook's kernel again to start a new one."
                    if e.routine
                    else "start a new kernel once this is fixed."
                )
                ended = ContainerKernelError(
                    f"{e.sentence} The kernel had been stopped for the restart, so it was shut "
                    f"down: {then}",
                    status=e.status,
                    setting=e.setting,
                )
                ended.reason_phrase = e.reason_phrase
                ended.routine = e.routine
                await self._end_lost_kernel(kernel_id, ended)
                raise as_http(ended) from e
            raise as_http(e) from e
        # What a page sends once the restart answered must have its output delivered.
        await iopub_reattached(self.get_kernel(kernel_id), kernel_id, lambda: kernel_id in self)
        return restarted

    async def interrupt_kernel(self, kernel_id: str) -> None:  # type: ignore[override]
        _may_act()
        try:
            await ensure_async(super().interrupt_kernel(kernel_id))
        except ContainerKernelError as e:
            raise as_http(e) from e

    async def shutdown_kernel(  # type: ignore[override]
        self, kernel_id: str, now: bool = False, restart: bool = False
    ) -> None:
        _may_act()
        if kernel_id not in self:
            # A start that waits for a GPU is not a kernel yet: shutting it down cancels the wait
            # (its start then ends with 409 "GPU wait cancelled").
            services = services_for(self)
            if services is not None and services.queue.cancel(kernel_id, "it was shut down"):
                return
        if not restart:
            await self._restart_settled(kernel_id)
            self._mark_ended(kernel_id)
        try:
            await super().shutdown_kernel(kernel_id, now=now, restart=restart)
        except ContainerKernelError as e:
            raise as_http(e) from e

    def start_buffering(self, kernel_id: str, session_key: str, channels: dict[str, Any]) -> None:
        super().start_buffering(kernel_id, session_key, channels)
        info = _private.offline_buffer(self, kernel_id)
        if info is None:  # buffering is off (buffer_offline_messages)
            return
        # jupyter_server's own buffer is a list without a bound: a kernel printing all night
        # with its page closed would grow the server (the service of every user) until it is
        # killed. The same channels, a bounded buffer in its place.
        owner = self.owner_of(kernel_id)
        uid = owner.uid if owner is not None else None
        if self._buffer_ledgers is None:
            self._buffer_ledgers = {}
        ledger = self._buffer_ledgers.setdefault(
            uid, BufferLedger(self.offline_buffer_limit_per_user)
        )
        buffer = OfflineBuffer(
            ledger,
            self.get_kernel(kernel_id),
            min(self.offline_buffer_limit, self.offline_buffer_limit_per_user),
        )
        info["buffer"] = buffer
        for channel, stream in channels.items():
            stream.on_recv(functools.partial(buffer.add, channel))

    def get_buffer(self, kernel_id: str, session_key: str) -> Any:
        found = _private.offline_buffer(self, kernel_id)
        taken = super().get_buffer(kernel_id, session_key)
        if found is not None and isinstance(found.get("buffer"), OfflineBuffer):
            found["buffer"].detach()
        return taken

    def stop_buffering(self, kernel_id: str) -> None:
        found = _private.offline_buffer(self, kernel_id)
        super().stop_buffering(kernel_id)
        if found is not None and isinstance(found.get("buffer"), OfflineBuffer):
            found["buffer"].detach()

    async def _restore_after_cancel(self, kernel_id: str, cancelled: ContainerKernelError) -> bool:
        """A restart under new GPUs whose wait was cancelled: start the kernel again as it was
        before (same id, same session, so its pages stay attached), without waiting. False, and
        the kernel is left to end, when it had nothing to go back to or cannot start so now (its
        old GPUs taken meanwhile, say)."""
        restore = getattr(self.get_kernel(kernel_id).provisioner, "restore_previous_request", None)
        if restore is None or not restore():
            return False
        self.log.info("Kernel %s: %s It restarts as it was before.", kernel_id, cancelled.log_text)
        try:
            with launching(gpus=None, wait=False):
                await super().restart_kernel(kernel_id, now=True)
        except Exception as e:
            self.log.warning("Kernel %s could not restart as it was before: %s", kernel_id, e)
            return False
        # On the same endpoints (the failed launch kept them): the pages' connections reach it
        # again, and what they sent meanwhile is answered. As after any restart here, its
        # output reaches them before the answer, and they reconnect to learn its state.
        km = self.get_kernel(kernel_id)
        await iopub_reattached(km, kernel_id, lambda: kernel_id in self)
        close_kernel_websockets(kernel_id, "kernel restarted as it was before")
        return True

    def _lost_in_restart(self, kernel_id: str) -> bool:
        if kernel_id not in self:
            return False
        km = self.get_kernel(kernel_id)
        return isinstance(km, ContainerKernelManager) and km.lost_in_restart

    async def _end_lost_kernel(self, kernel_id: str, ended: ContainerKernelError) -> None:
        """A kernel whose restart failed after it was stopped has no container left: it leaves
        the list (its sessions with it) instead of staying "idle" with a websocket that answers
        500, and its pages are told it is dead, and why. A routine end (someone chose it: a wait
        cancelled) is news rather than a warning."""
        level = logging.INFO if ended.routine else logging.WARNING
        self.log.log(level, "Kernel %s ended: %s", kernel_id, ended.log_text)
        self._mark_ended(kernel_id)
        km = self.get_kernel(kernel_id)
        with contextlib.suppress(Exception):
            km.stop_restarter()
        end_kernel_websockets(kernel_id, ended.sentence)
        self.stop_watching_activity(kernel_id)
        self.stop_buffering(kernel_id)
        self.remove_kernel(kernel_id)
        # What the failed launch left (its files are removed already; a provisioner made
        # outside a server closes its own services).
        with contextlib.suppress(Exception):
            if km.provisioner is not None:
                await km.provisioner.cleanup(restart=False)

    def owner_of(self, kernel_id: str) -> KernelUser | None:
        """The kernel service user ``kernel_id`` belongs to (identity.py); None for an unknown
        kernel and for a direct-mode server's kernels (the server's own user's)."""
        if kernel_id not in self:
            return None
        owner = getattr(getattr(self.get_kernel(kernel_id), "provisioner", None), "owner", None)
        return owner if isinstance(owner, KernelUser) else None

    def _mark_ended(self, kernel_id: str) -> None:
        """From now on, a restart of ``kernel_id`` (the restarter's) does nothing. Set before
        the shutdown's first await, so a restart either began before (and was waited for) or
        finds the mark."""
        if kernel_id in self:
            km = self.get_kernel(kernel_id)
            if isinstance(km, ContainerKernelManager):  # an admin's own class: as it is
                km.ended = True

    async def _restart_settled(self, kernel_id: str) -> None:
        """Return once no start or restart of ``kernel_id`` is under way (however it ended).
        Every kernel in the map has started once (or was adopted, its future set), so a pending
        ``ready`` is always one a start or restart will settle."""
        while kernel_id in self:
            ready = self.get_kernel(kernel_id).ready
            if ready.done():
                return
            # A restart sets a new pending future; it may be a concurrent.futures one.
            waiter = ready if isinstance(ready, asyncio.Future) else asyncio.wrap_future(ready)
            await asyncio.wait([waiter])

    _after_shutdown_all: list[Callable[[], None]] | None = None

    def after_shutdown_all(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every kernel is shut down (the server's own clean-up): what the
        kernels' provisioners use (the backend, say) must outlive them."""
        if self._after_shutdown_all is None:
            self._after_shutdown_all = []
        self._after_shutdown_all.append(callback)

    def leave_all(self) -> None:
        """The server stops and leaves its kernels running, for its next start to reattach (a
        kernel service restarted): no kernel is shut down, and what waited for their shutdown
        is done now. Their restarters stop, so nothing restarts a kernel meanwhile."""
        for kernel_id in self.list_kernel_ids():
            self._mark_ended(kernel_id)
            with contextlib.suppress(Exception):
                self.get_kernel(kernel_id).stop_restarter()
        callbacks, self._after_shutdown_all = self._after_shutdown_all or [], None
        for callback in callbacks:
            callback()

    async def shutdown_all(self, now: bool = False) -> None:  # type: ignore[override]
        try:
            # jupyter_client's shutdown_all calls its own shutdown method, not ours.
            await asyncio.gather(*(self._restart_settled(k) for k in self.list_kernel_ids()))
            for kernel_id in self.list_kernel_ids():
                self._mark_ended(kernel_id)
            await ensure_async(super().shutdown_all(now=now))
        finally:
            callbacks, self._after_shutdown_all = self._after_shutdown_all or [], None
            for callback in callbacks:
                callback()

    async def adopt(
        self, km: Any, kernel_id: str, launch_args: dict[str, Any], spec: Any = None
    ) -> None:
        """Register ``km``, whose kernel already runs (its provisioner loaded), as the kernel
        ``kernel_id``: listed, culled, restartable (with ``launch_args``: its directory and
        environment), as if this server had started it. ``spec``: its kernel spec (the one its
        name gives, looked up once for many kernels, or one rebuilt when that is gone)."""
        _private.prepare_adopted(km, launch_args, spec)
        km.ready.set_result(None)
        km.execution_state = "idle"
        km.reason = ""
        km.last_activity = datetime.now(timezone.utc)
        await _private.register_adopted(self, km, kernel_id)
