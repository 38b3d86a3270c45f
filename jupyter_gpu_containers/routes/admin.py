"""``/gpu-containers/admin``, ``/admin/kernels/<id>``, ``/admin/notices`` and ``/metrics``: the
admin view and actions (admin_view.py), the notices a user's kernels got, Prometheus
metrics.
"""

from __future__ import annotations

import json

from jupyter_server.auth.decorator import authorized
from prometheus_client import CONTENT_TYPE_LATEST as PROMETHEUS_CONTENT_TYPE
from tornado import web

from .admin_actions_view import act as admin_act
from .admin_actions_view import notices_for as admin_notices
from .admin_actions_view import parse_action as parse_admin_action
from .admin_desk_view import AdminDesk
from .admin_desk_view import desk_for as admin_desk_for
from .admin_view import NotAdmin, admin_view
from .admin_view import refusal as admin_refusal
from .base import ADMIN_AUTH_RESOURCE, GPUContainersHandler, json_object


class _AdminHandler(GPUContainersHandler):
    """The admin view's routes: authorized on this extension's resource as every route is, then
    the authorizer is asked about the admin resource too, and only an administrator (admin_view.py)
    is answered."""

    @property
    def desk(self) -> AdminDesk:
        return admin_desk_for(self.settings, self.services, self.serverapp)

    async def require_admin(self) -> str:
        """The administrator's name, or 403 with the sentence."""
        action = "read" if self.request.method == "GET" else "write"
        await self.require_permission(action, ADMIN_AUTH_RESOURCE)
        account = await self.desk.server_account()
        why = admin_refusal(
            self.desk.config, self.kernel_user, self.current_user, self.serverapp, account
        )
        if why:
            raise NotAdmin(why)
        user = self.kernel_user
        return user.username if user is not None else account


class AdminHandler(_AdminHandler):
    """Every GPU holder on the host, the queue, reclaim states and GPU-hour use (admin_view.py)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        await self.require_admin()
        inventory, ledger, engine_error = await self.gpu_state_or_reason()
        view = await admin_view(
            self.services, inventory, ledger, engine_error, self.kernel_manager, int(self.uid)
        )
        self.finish(json.dumps(view))


class AdminKernelHandler(_AdminHandler):
    """``POST {"action": "release" | "shutdown", "reason": "…"}`` on any user's kernel."""

    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        # The body first: a malformed one is a 400 for anyone, as on every route.
        action, reason = parse_admin_action(json_object(self))
        name = await self.require_admin()
        _inventory, ledger = await self.gpu_state()
        reply = await admin_act(
            self.services,
            self.desk.config,
            self.kernel_manager,
            ledger,
            kernel_id,
            action,
            reason,
            name,
            await self.desk.server_account(),
        )
        self.desk.metrics.collector.admin_actions[action] += 1
        self.set_status(200 if reply["state"] == "done" else 202)
        self.finish(json.dumps(reply))


class AdminNoticesHandler(_AdminHandler):
    """The caller's own notices: why an administrator released or shut down their kernels.
    Anyone's (their own only): no admin needed."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        notices = await admin_notices(self.services, self.desk.config, self.uid)
        self.finish(json.dumps({"notices": notices}))


class MetricsHandler(_AdminHandler):
    """Prometheus metrics of GPU sharing, for any authenticated, authorized caller of a user's
    own server, and for a kernel service's administrators only (its metrics are every user's
    together). A scrape sends a token: Prometheus' ``authorization`` or ``bearer_token``. Like
    every route here, never anonymous, whatever ServerApp.authenticate_prometheus says of the
    server's own /metrics. They name no user."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        if self.kernel_user is not None:
            await self.require_admin()
        body = await self.desk.metrics.render(self.services)
        self.finish(body, set_content_type=PROMETHEUS_CONTENT_TYPE)
