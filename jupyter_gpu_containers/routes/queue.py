"""``GET /gpu-containers/queue``, ``DELETE /gpu-containers/queue/<kernel id>`` and
``GET /gpu-containers/quota``: the GPU wait queue as the caller sees it, cancelling a waiting
start, and the caller's GPU-hours.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..base.safefiles import owner_name
from .base import GPUContainersHandler


class QueueHandler(GPUContainersHandler):
    """The host-wide GPU wait queue (gpuqueue.py) in fair order, then the starts that wait in
    the engine's own scheduler (a Slurm job pending: its ``scheduler``, Slurm's ``reason`` and
    ``estimate``): the caller's in full, others' as GPUVisibility allows (never their kernel
    ids)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        services = self.services
        state = await asyncio.to_thread(lambda: services.state)
        tickets = await services.queue.snapshot(state)
        waits = await services.placement.scheduler_waits()
        viewer, show, now = int(self.uid), services.visibility.show_other_users, time.time()
        listed = [t.to_json(viewer, show) for t in tickets]
        listed += [w.to_json(viewer, show, now) for w in waits]
        self.finish(
            json.dumps(
                {
                    "queue": listed,
                    "length": len(listed),
                    "wait_by_default": services.queue.wait_by_default,
                    "max_wait": services.queue.max_wait,
                }
            )
        )


class QuotaHandler(GPUContainersHandler):
    """The caller's GPU-hours this period (quota.py): used, the limit, what is left, when it
    resets, and the group's."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        user = self.kernel_user
        if user is not None:
            uid, name = user.uid, user.username
        else:
            uid = os.getuid()
            name = await asyncio.to_thread(owner_name, uid)
        usage = await self.services.quota.usage(uid, name)
        self.finish(json.dumps(usage.to_json()))


class QueuedStartHandler(GPUContainersHandler):
    """``DELETE``: cancel one of the caller's starts waiting for a GPU, in the GPU queue or in
    the engine's scheduler (its launch fails with 409 "GPU wait cancelled"). 404 for anyone
    else's, and for a start that no longer waits."""

    @web.authenticated
    @authorized
    async def delete(self, kernel_id: str) -> None:
        await self.require_permission("write", "kernels")
        queue = self.services.queue
        ticket = queue.waiting_ticket(kernel_id)
        if ticket is None or str(ticket.uid) != self.uid:
            placement = self.services.placement
            if await placement.cancel_scheduler_wait(kernel_id, int(self.uid)):
                self.set_status(204)
                self.finish()
                return
            raise web.HTTPError(404, f"No start of yours waits for a GPU as kernel {kernel_id}.")
        queue.cancel(kernel_id, "cancelled by its user")
        self.set_status(204)
        self.finish()
