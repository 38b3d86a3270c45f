"""The stock sessions and kernel-action routes, answering a refused launch with its own status.

jupyter_server's handlers turn every failure of a kernel start they make into a server error:
``POST /api/sessions`` (the Launcher, opening a notebook) answers 500, ``PATCH
/api/sessions/{id}`` (JupyterLab's "Change Kernel") 501, and ``POST /api/kernels/{id}/restart``
500 with "Exception restarting kernel", whatever the reason. So "no free GPU", "this image is not
allowed" or "this notebook asks for GPUs this host does not have", each the user's to fix, reached
JupyterLab as a server fault, and the server logged every request's headers as it does for one.

These subclasses keep the stock handlers' behaviour and answer the launch's own HTTP error
instead: the status and the sentence that the kernel manager made of a ContainerKernelError
(kernelmanager.py), and their log line names the option that decided it. Any other failure is
left as jupyter_server answers it. An extension's routes
come before the server's own, so registering the stock patterns here replaces them (app.py does,
only when this extension's kernel manager runs the kernels).
"""

from __future__ import annotations

from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.base.handlers import APIHandler
from jupyter_server.services.kernels.handlers import KernelActionHandler
from jupyter_server.services.sessions.handlers import SessionHandler, SessionRootHandler
from tornado import web

from .kernelmanager import SentenceHTTPError


def _refusal(error: BaseException) -> SentenceHTTPError | None:
    """The launch's own error, when ``error`` is one or was raised from one (the stock handlers
    raise their 500 ``from`` it). Only the explicit cause counts: an error merely raised while
    another was being handled is not that error's answer."""
    if isinstance(error, SentenceHTTPError):
        return error
    cause = error.__cause__
    return cause if isinstance(cause, SentenceHTTPError) else None


class _Refused(BaseException):
    """Carries a refused launch past the stock PATCH handler's ``except Exception``, which
    would answer 501 with the sentence quoted inside another."""

    def __init__(self, error: SentenceHTTPError) -> None:
        super().__init__(error.sentence)
        self.error = error


class _RefusalsPassThrough:
    """The server's session manager, except that a kernel start it makes for a session that is
    refused raises :class:`_Refused`."""

    def __init__(self, manager: Any) -> None:
        self._manager = manager

    def __getattr__(self, name: str) -> Any:
        return getattr(self._manager, name)

    async def start_kernel_for_session(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await self._manager.start_kernel_for_session(*args, **kwargs)
        except Exception as e:
            refusal = _refusal(e)
            if refusal is None:
                raise
            raise _Refused(refusal) from e


class SettingInLog(APIHandler):
    """A refused launch's log line names the option that decided it, for the administrator who
    reads the log (the answer, which jupyter_server writes, does not: errors.py)."""

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, SentenceHTTPError) and value.setting:
            self.log.warning(
                "%d %s: %s", value.status_code, self._request_summary(), value.log_text
            )
            return
        super().log_exception(typ, value, tb)


class SessionsHandler(SettingInLog, SessionRootHandler):
    """``POST /api/sessions``: a refused kernel start answers its own status."""

    async def post(self) -> None:
        try:
            await ensure_async(super().post())
        except web.HTTPError as e:
            refusal = _refusal(e) if e.status_code == 500 else None
            if refusal is None:
                raise
            raise refusal from None


class OneSessionHandler(SettingInLog, SessionHandler):
    """``PATCH /api/sessions/{id}`` (a change of kernel): a refused start answers its status."""

    @property
    def session_manager(self) -> Any:
        return _RefusalsPassThrough(super().session_manager)

    async def patch(self, session_id: str) -> None:
        try:
            await ensure_async(super().patch(session_id))
        except _Refused as refused:
            raise refused.error from None


class KernelActionsHandler(SettingInLog, KernelActionHandler):
    """``POST /api/kernels/{id}/restart``: a refused restart answers its status."""

    async def post(self, kernel_id: str, action: str) -> None:
        try:
            await ensure_async(super().post(kernel_id, action))
        except web.HTTPError as e:
            refusal = _refusal(e) if e.status_code == 500 else None
            if refusal is None:
                raise
            raise refusal from None


# The stock routes' own patterns (jupyter_server's services/*/handlers.py).
_UUID = r"(?P<{}>\w+-\w+-\w+-\w+-\w+)"


def stock_handlers() -> list[tuple[str, type[web.RequestHandler]]]:
    """The stock patterns these handlers take over (the server's base_url is added by the
    extension app)."""
    return [
        (r"/api/sessions", SessionsHandler),
        (rf"/api/sessions/{_UUID.format('session_id')}", OneSessionHandler),
        (
            rf"/api/kernels/{_UUID.format('kernel_id')}/(?P<action>restart|interrupt)",
            KernelActionsHandler,
        ),
    ]
