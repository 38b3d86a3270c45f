"""``/gpu-containers/pulls``: start or join a pull, read them, cancel one, follow its progress
as server-sent events; why a caller's pulls cannot succeed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web
from tornado.iostream import StreamClosedError

from ..base.errors import ImageNotAllowed, Refusal
from ..images.pulls import ACTIVE, PULLS_TURNED_OFF, Pull
from .base import GPUContainersHandler, json_object
from .registries import credential_from, registry_of_image


def service_pull_refusal(handler: GPUContainersHandler) -> Refusal:
    """Why a kernel service's user may not pull images (ServiceApp.pull_policy), none when they
    may, or on a user's own server (where ContainerPolicy alone decides)."""
    user = handler.kernel_user
    if user is None:
        return Refusal()
    serverapp = handler.serverapp
    policy = getattr(serverapp, "pull_policy", "nobody")
    admins = set(getattr(serverapp, "admin_users", ()))
    if user.username in admins:
        return Refusal()
    if policy == "nobody":
        return Refusal(
            "Images are pulled by the administrator on this host. Ask them for the image.",
            "ServiceApp.pull_policy",
        )
    if policy == "admins":
        return Refusal(
            "Only the administrators of this kernel service may pull images. Ask one of them "
            "for the image.",
            "ServiceApp.pull_policy",
        )
    # The default allow-list, "*", admits any image: on a shared host users may pull only
    # what the administrator named.
    if not [p for p in handler.services.policy.allowed_images if p != "*"]:
        return Refusal(
            "This kernel service lets users pull only the images its administrator allows, and "
            "it allows none yet. Ask the administrator for the image.",
            "ContainerPolicy.allowed_images",
        )
    return Refusal()


def pull_refusal(handler: GPUContainersHandler) -> Refusal:
    """Why no pull this user asks for can succeed here, none when some may (each image is
    still checked against ContainerPolicy's allow-list when pulled)."""
    if not handler.services.policy.allow_user_pulls:
        return PULLS_TURNED_OFF
    return service_pull_refusal(handler)


class PullsHandler(GPUContainersHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.finish(json.dumps({"pulls": self.services.pulls.listing(self.whose)}))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Body: {"image": "nvcr.io/nvidia/pytorch:24.05-py3", "auth": {"username": …,
        "password": …}?}. ``auth`` is used for this pull only and kept nowhere."""
        body = json_object(self)
        image = body.get("image")
        if not isinstance(image, str) or not image.strip():
            raise web.HTTPError(400, 'Give the image to pull, e.g. {"image": "ubuntu:24.04"}.')
        self._check_pull_policy(image)
        credential = None
        auth = body.get("auth")
        if auth is not None:
            credential = credential_from(auth, registry=registry_of_image(image))
        pull = await self.services.pulls.start(image, credential, self.whose, self.private_owner)
        self.set_status(202)
        self.set_header("Location", self.base_url.rstrip("/") + f"/gpu-containers/pulls/{pull.id}")
        self.finish(json.dumps(pull.snapshot()))

    def _check_pull_policy(self, image: str) -> None:
        """On a kernel service, who may pull is the administrator's choice
        (ServiceApp.pull_policy); on a user's own server, ContainerPolicy alone decides."""
        why = service_pull_refusal(self)
        if why:
            raise ImageNotAllowed(why.sentence, setting=why.setting)


class _OnePull(GPUContainersHandler):
    def _pull(self, pull_id: str) -> Any:
        pull = self.services.pulls.get(pull_id, self.whose)
        if pull is None:
            raise web.HTTPError(
                404,
                f"There is no pull {pull_id!r} (finished pulls are kept "
                "for a while, then forgotten).",
            )
        return pull


class PullHandler(_OnePull):
    @web.authenticated
    @authorized
    async def get(self, pull_id: str) -> None:
        self.finish(json.dumps(self._pull(pull_id).snapshot()))

    @web.authenticated
    @authorized
    async def delete(self, pull_id: str) -> None:
        pull = self._pull(pull_id)
        manager = self.services.pulls
        manager.cancel(pull)
        await manager.wait(pull)
        self.finish(json.dumps(pull.snapshot()))


class PullEventsHandler(_OnePull):
    """Server-sent events: one ``progress`` event per snapshot, then ``done``, ``error`` or
    ``cancelled`` with the final one. A comment line every ``keepalive`` seconds keeps proxies
    from closing a quiet stream (an extraction can be silent for a minute)."""

    keepalive = 15.0

    _queue: asyncio.Queue[dict[str, Any] | None] | None = None

    def on_connection_close(self) -> None:
        if self._queue is not None:  # the watcher went away: its place is free at once
            self._queue.put_nowait(None)

    @web.authenticated
    @authorized
    async def get(self, pull_id: str) -> None:
        pull = self._pull(pull_id)
        with self.event_stream():
            await self._watch(pull)

    async def _watch(self, pull: Pull) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")  # nginx: do not buffer the stream
        manager = self.services.pulls
        queue = self._queue = manager.subscribe(pull)
        try:
            while True:
                try:
                    snapshot = await asyncio.wait_for(queue.get(), self.keepalive)
                except asyncio.TimeoutError:  # not the builtin one before Python 3.11
                    self.write(": keepalive\n\n")
                    await self.flush()
                    continue
                if snapshot is None:
                    return  # the watcher went away; the pull goes on
                ended = snapshot["state"] not in ACTIVE
                event = snapshot["state"] if ended else "progress"
                self.write(f"event: {event}\ndata: {json.dumps(snapshot)}\n\n")
                await self.flush()
                if ended:
                    break
        except StreamClosedError:
            return  # the watcher went away; the pull goes on
        finally:
            self._queue = None
            manager.unsubscribe(pull, queue)
        self.finish()
