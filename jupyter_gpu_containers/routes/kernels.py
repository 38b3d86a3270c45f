"""``/gpu-containers/kernels``: the caller's container kernels with their GPU use, one kernel's
own view, its restart, its idle GPUs kept at its user's word, and its log as server-sent events
(kernel_view.py); the owner only.
"""

from __future__ import annotations

import json
import time

from jupyter_server.auth.decorator import authorized
from jupyter_server.utils import ensure_async
from tornado import web
from tornado.iostream import StreamClosedError

from ..base.errors import ValueRefused
from ..gpus.allocator import GPURequest
from ..kernel.launch_request import launching
from ..server.websocket import close_kernel_websockets
from .base import GPUContainersHandler, json_object
from .kernel_view import (
    LogFeed,
    current_container,
    find_kernel,
    kernel_details,
    kernels_listing,
    look_at_usage,
    notebook_of,
    parse_tail,
)
from .notebooks import spec_request


class KernelsHandler(GPUContainersHandler):
    """This server's container kernels, with their GPU use over the last minutes."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        await self.require_permission("read", "kernels")
        look_at_usage(self.services, self.kernel_manager)
        inventory, ledger, engine_error = await self.gpu_state_or_reason()
        kernels = kernels_listing(
            self.services,
            self.kernel_manager,
            inventory,
            ledger,
            await self._notebooks(),
            self.kernel_user,
        )
        # The user's kernels shut down because their GPUs were reclaimed (reclaim.py), and why.
        reclaimed = self.services.reclaim.shut_down_for(self.kernel_user)
        self.finish(
            json.dumps({"kernels": kernels, "reclaimed": reclaimed, "engine_error": engine_error})
        )

    async def _notebooks(self) -> dict[str, str]:
        """kernel id -> its notebook's path, for the kernels that have a session."""
        sessions = await self.session_manager.list_sessions()
        return {
            str(s["kernel"]["id"]): str(s.get("path") or "") for s in sessions if s.get("kernel")
        }


class KernelHandler(KernelsHandler):
    """One of this server's container kernels, as its own view shows it (404 for any other)."""

    @web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        await self.require_permission("read", "kernels")
        km, provisioner = find_kernel(self.kernel_manager, kernel_id, self.kernel_user)
        look_at_usage(self.services, self.kernel_manager)
        notebook = (await self._notebooks()).get(kernel_id, "") or notebook_of(provisioner)
        reply = await kernel_details(self.services, kernel_id, km, provisioner, notebook)
        self.finish(json.dumps(reply))


class KernelRestartHandler(GPUContainersHandler):
    """``POST {"gpus": 2 | ["0", "GPU-…"] | null, "wait": true | false}``: restart one of the
    caller's container kernels under a new GPU request (null: its kernel spec's default).
    ``wait``: whether the restart may wait in the GPU queue for its GPUs (absent:
    ``GPUQueue.wait_by_default``); one that may not is refused with 409 and a sentence, before
    the kernel is touched, when the GPUs cannot be had now; the kernel's own GPUs count as
    free. A restart that waits is cancelled when its client goes away. A user's server behind a
    kernel service changes a notebook's GPUs this way (the stock restart keeps them)."""

    _waiting_restart = ""

    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        await self.require_permission("write", "kernels")
        # The body first: a malformed one is a 400 whatever the kernel id (as on every route).
        body = json_object(self)
        gpus = body.get("gpus")
        request = GPURequest.parse(gpus) if gpus is not None else None
        wait = body.get("wait")
        if wait is not None and not isinstance(wait, bool):
            raise ValueRefused("wait must be true or false.")
        km, _provisioner = find_kernel(self.kernel_manager, kernel_id, self.kernel_user)
        spec = km.kernel_spec
        if request is not None:
            effective = request
        else:
            effective = spec_request(spec) if spec is not None else GPURequest()
        may_wait = wait if wait is not None else self.services.queue.wait_by_default
        if effective.wants_gpus and not may_wait:
            await self.refuse_unless_free(effective, kernel_id)
        self._waiting_restart = kernel_id
        try:
            with launching(gpus=effective, restart_of=kernel_id, wait=wait):
                await ensure_async(self.kernel_manager.restart_kernel(kernel_id))
        finally:
            self._waiting_restart = ""
        close_kernel_websockets(kernel_id, "kernel restarted with other GPUs")
        self.finish(json.dumps({"kernel_id": kernel_id, "gpus": gpus}))

    def on_connection_close(self) -> None:
        super().on_connection_close()
        # A restart nobody waits for any more gives its place in the queue up.
        if self._waiting_restart:
            self.services.queue.cancel(self._waiting_restart, "the client went away")


class KernelKeepHandler(GPUContainersHandler):
    """``POST {"minutes": 30}``: the caller keeps the GPUs of one of their kernels that the
    idle-GPU policy warned (GPUReclaim.keep_*): its release moves to the keep's end. Its new
    reclaim state; 409 and a sentence when it cannot be kept now, 400 for minutes out of the
    administrator's bounds."""

    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        await self.require_permission("write", "kernels")
        minutes = json_object(self).get("minutes")
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)):
            raise ValueRefused('"minutes" is the number of minutes to keep the GPUs for.')
        find_kernel(self.kernel_manager, kernel_id, self.kernel_user)  # the owner's, or a 404
        state = self.services.reclaim.keep(kernel_id, float(minutes), time.time())
        whose = ", ".join(p for p in (state["user"], state["notebook"]) if p)
        self.log.info(
            "Kernel %s%s: its idle GPUs kept for %s minutes at its user's word (%d of %d); "
            "unless it uses them, they are given back then.",
            kernel_id,
            f" ({whose})" if whose else "",
            f"{float(minutes):g}",
            state["keeps"],
            self.services.reclaim.keep_max_times,
        )
        self.finish(json.dumps(state))


class KernelLogHandler(GPUContainersHandler):
    """A kernel's container log as server-sent events: ``?tail=N`` lines first (200 by
    default), then new ones as they come (``?follow=0``: the tail alone)."""

    _feed: LogFeed | None = None

    def on_connection_close(self) -> None:
        if self._feed is not None:
            self._feed.close()  # ends the log's reading thread at once

    @web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        await self.require_permission("read", "kernels")
        _km, provisioner = find_kernel(self.kernel_manager, kernel_id, self.kernel_user)
        tail = parse_tail(self.get_query_argument("tail", "200"))
        follow = self.get_query_argument("follow", "1") not in ("0", "false")
        backend = self.services.backend
        first = await current_container(backend, provisioner)  # a 404 before any event

        async def send(text: str) -> None:
            self.write(text)
            await self.flush()

        with self.event_stream():  # a reading thread and an engine connection: bounded per user
            self.set_header("Content-Type", "text/event-stream")
            self.set_header("Cache-Control", "no-cache")
            self.set_header("X-Accel-Buffering", "no")  # nginx: do not buffer the stream
            self._feed = LogFeed(backend, self.kernel_manager, kernel_id, provisioner, send)
            try:
                await self._feed.run(first, tail, follow)
            except StreamClosedError:
                return  # the viewer went away
            finally:
                self._feed.close()
        self.finish()
