"""The server's kernel manager: jupyter_server's, plus what this extension needs of it.

- **The core's errors become HTTP errors here**, for the stock kernels and sessions APIs: a
  provisioner raises plain exceptions with a sentence and a status (errors.py), and a start,
  restart, interrupt or shutdown that fails with one answers that status with that sentence,
  never "Unhandled error".
- **Adopting a running kernel** (recovery after a server restart) goes through :meth:`adopt`,
  the one place that touches jupyter_server's bookkeeping (_private.py lists how).
- A start that failed is forgotten at once: jupyter_client would keep it pending, and
  ``shutdown_all`` then fails on it before shutting the other kernels down.
- **A shutdown waits for a restart under way** (the restarter's, after the container died, or
  another request's): jupyter_client reads the kernel's ``ready`` future, which a restart has
  replaced with a pending one, and raised InvalidStateError: a 500 for the user's "Shut Down".
- **A kernel that was shut down is never restarted.** jupyter_client's asyncio restarter asks
  whether the kernel lives (here an engine request, which takes a while), and restarts it if
  not, without looking again whether a shutdown began meanwhile: a kernel whose container died
  just as its user shut it down came back, in a new container holding its GPUs, for nobody.

The app makes it the server's kernel manager class (app.py) unless the administrator configured
another one, or kernels live behind a gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.services.kernels.kernelmanager import (
    AsyncMappingKernelManager,
    ServerKernelManager,
)
from tornado import web
from traitlets import default

from . import _private
from .errors import ContainerKernelError
from .identity import KernelUser
from .services import services_for


class SentenceHTTPError(web.HTTPError):
    """An HTTP error whose ``str()`` is the bare sentence: the sessions API answers failed starts
    with ``str(e)``, and the log shows it."""

    def __init__(self, error: ContainerKernelError) -> None:
        # No format arguments: tornado then takes the sentence as literal text.
        super().__init__(error.status, error.sentence, reason=error.reason_phrase)
        self.sentence = error.sentence

    def __str__(self) -> str:
        return self.sentence


def as_http(error: ContainerKernelError) -> web.HTTPError:
    return SentenceHTTPError(error)


def finish_with_sentence(handler: web.RequestHandler, error: ContainerKernelError) -> None:
    """Answer a request with a core error: its status and reason, and JSON of its sentence
    (what every /gpu-containers/ error looks like, here or forwarded from a kernel service)."""
    handler.clear_header("Content-Type")
    handler.set_status(error.status, reason=error.reason_phrase)
    handler.set_header("Content-Type", "application/json")
    handler.finish(json.dumps({"message": error.sentence, "reason": error.reason_phrase}))


class ContainerKernelManager(ServerKernelManager):
    """One kernel's manager: jupyter_server's, except that once its kernel was shut down for
    good (not for a restart) nothing restarts it."""

    ended = False  # set by GPUContainersKernelManager when it shuts the kernel down

    async def restart_kernel(  # type: ignore[override]
        self, now: bool = False, newports: bool = False, **kw: Any
    ) -> None:
        if self.ended:
            self.log.info("Kernel %s was shut down: it is not restarted.", self.kernel_id)
            return
        await super().restart_kernel(now=now, newports=newports, **kw)


class GPUContainersKernelManager(AsyncMappingKernelManager):
    """jupyter_server's AsyncMappingKernelManager, translating this project's errors and able to
    adopt kernels that already run."""

    @default("kernel_manager_class")
    def _default_kernel_manager_class(self) -> str:
        return f"{ContainerKernelManager.__module__}.{ContainerKernelManager.__qualname__}"

    async def start_kernel(self, **kwargs: Any) -> str:  # type: ignore[override]
        try:
            return str(await super().start_kernel(**kwargs))
        except ContainerKernelError as e:
            raise as_http(e) from e
        finally:
            _private.forget_failed_starts(self)

    async def restart_kernel(self, kernel_id: str, now: bool = False) -> Any:  # type: ignore[override]
        try:
            return await super().restart_kernel(kernel_id, now=now)
        except ContainerKernelError as e:
            raise as_http(e) from e

    async def interrupt_kernel(self, kernel_id: str) -> None:  # type: ignore[override]
        try:
            await ensure_async(super().interrupt_kernel(kernel_id))
        except ContainerKernelError as e:
            raise as_http(e) from e

    async def shutdown_kernel(  # type: ignore[override]
        self, kernel_id: str, now: bool = False, restart: bool = False
    ) -> None:
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
        environment), as if this server had started it. ``spec``: its kernel spec, when the one
        its name gives is gone."""
        _private.prepare_adopted(km, launch_args, spec)
        km.ready.set_result(None)
        km.execution_state = "idle"
        km.reason = ""
        km.last_activity = datetime.now(timezone.utc)
        await _private.register_adopted(self, km, kernel_id)
