"""Who administers a shared GPU host, and the administrator's view of it (the REST handlers in
admin.py are thin).

- **Who is an administrator.** In the kernel service (service.py): a user in
  ``ServiceApp.admin_users``, or one JupyterHub says is an admin (its user model's ``"admin":
  true``, hubauth.py). On a user's own server (direct mode): the server's account, when its name
  is in ``GPUAdmin.admin_users`` (empty by default: on a shared host every user runs a server,
  and none of them is an administrator unless named). Either way the server's authorizer must
  also allow the resource ``gpu_containers_admin``. Everyone else gets 403 with a sentence.
- **The view** (``GET /gpu-containers/admin``): every GPU holder on the host, from the
  host-wide ledger (container labels), with user, notebook, image, GPUs, since, seconds held and
  GPU activity; the host-wide wait queue; reclaim states; GPU-hour use.
- **Actions** (``POST /gpu-containers/admin/kernels/<id>``, release or shutdown, the user told
  why) are admin_actions_view.py's; the **metrics** (``GET /gpu-containers/metrics``)
  metrics_view.py's; what a server keeps for both, admin_desk_view.py's.

Blocking work (the state directory, /proc) runs on worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from traitlets import Float, List, Unicode, validate
from traitlets.config import LoggingConfigurable

from ..base.errors import ContainerKernelError
from ..base.records import iso_time
from ..base.safefiles import account_uid
from ..gpus.allocator import Ledger
from ..gpus.gpu_usage import WatchedKernel, usage_by_kernel
from ..gpus.inventory import Inventory
from ..host.hoststate import StateDir, service_uid
from ..host.identity import KernelUser
from ..services import Services


class AdminActionRefused(ContainerKernelError):
    status = 409
    reason_phrase = "Admin action refused"


class NotAdmin(ContainerKernelError):
    status = 403
    reason_phrase = "Administrators only"


class GPUAdmin(LoggingConfigurable):
    """Who administers GPU sharing on a user's own server, and how admin actions reach kernels
    that live in other users' servers."""

    admin_users = List(
        Unicode(),
        config=True,
        help="""Direct mode (each user runs their own server): the accounts whose servers show
        the admin view (GET /gpu-containers/admin) and may release or shut down any user's
        kernel. Also the accounts whose admin actions every server carries out on its own
        kernels, so set it host-wide (/etc/jupyter). Empty (default): no server is an
        administrator's. A kernel service uses ServiceApp.admin_users and JupyterHub's admins
        instead.""",
    )

    notice_hours = Float(
        24.0,
        config=True,
        help="""How long a user is shown why an administrator released or shut down their
        kernel (GET /gpu-containers/admin/notices), in hours. Older notices are removed.""",
    )

    poll_interval = Float(
        5.0,
        config=True,
        help="""Direct mode: seconds between two looks of a server for admin actions on its
        kernels in the host state directory (between 1 and 300).""",
    )

    @validate("poll_interval")
    def _valid_poll_interval(self, proposal: Any) -> float:
        return min(300.0, max(1.0, float(proposal["value"])))

    @validate("notice_hours")
    def _valid_notice_hours(self, proposal: Any) -> float:
        return max(0.0, float(proposal["value"]))


# ---------------------------------------------------------------------------- who is an admin


def refusal(
    config: GPUAdmin,
    kernel_user: KernelUser | None,
    current_user: Any,
    serverapp: Any,
    server_account: str,
) -> str:
    """Why the person asking is no administrator here, "" when they are one. ``kernel_user``:
    the kernel service's user (None: a user's own server, whose account is
    ``server_account``, AdminDesk.server_account)."""
    if kernel_user is not None:
        return service_admin_refusal(kernel_user, current_user, serverapp)
    me = server_account
    if me in config.admin_users:
        return ""
    return (
        f"This server's account, {me}, is not an administrator of GPU sharing on this host: the "
        "admin view and admin actions are for the accounts GPUAdmin.admin_users names."
    )


def service_admin_refusal(kernel_user: KernelUser, current_user: Any, serverapp: Any) -> str:
    """Why a kernel service's user is none of its administrators (ServiceApp.admin_users, or
    JupyterHub's admins), "" when they are one."""
    admins = set(getattr(serverapp, "admin_users", ()) or ())
    if kernel_user.username in admins or getattr(current_user, "hub_admin", False) is True:
        return ""
    return (
        f"{kernel_user.username} is not an administrator of this kernel service: the admin "
        "view, admin actions and the service's metrics are for ServiceApp.admin_users and "
        "JupyterHub's admins."
    )


def admin_uids(config: GPUAdmin, state: StateDir, owner: str) -> set[int]:
    """Whose admin-action records a server believes: root, the state directory's owner (a
    kernel service), and the accounts its own GPUAdmin.admin_users names. Blocking."""
    uids = {0}
    with contextlib.suppress(ContainerKernelError):
        found = service_uid(owner)
        if found is not None:
            uids.add(found)
    uids.update(uid for uid in map(account_uid, config.admin_users) if uid is not None)
    return uids


# ---------------------------------------------------------------------------- the view


def holders(inventory: Inventory, ledger: Ledger, now: float | None = None) -> list[dict[str, Any]]:
    """Every kernel that holds GPUs on the host, one entry each (the ledger's labels)."""
    now = time.time() if now is None else now
    by_kernel: dict[str, dict[str, Any]] = {}
    for uuid, held in ledger.holdings.items():
        gpu = inventory.find(uuid)
        for h in held:
            entry = by_kernel.setdefault(
                h.kernel_id,
                {
                    "kernel_id": h.kernel_id,
                    "container_id": h.container_id,
                    "user": h.user,
                    "uid": h.uid,
                    "notebook": h.notebook,
                    "image": h.image,
                    "server_id": h.server_id,
                    "since": iso_time(h.created) if h.created else None,
                    "held_seconds": round(max(0.0, now - h.created), 1) if h.created else None,
                    "gpus": [],
                },
            )
            entry["gpus"].append(
                {
                    "uuid": uuid,
                    "index": gpu.index if gpu else None,
                    "name": gpu.name if gpu else "",
                }
            )
    for entry in by_kernel.values():
        entry["gpus"].sort(key=lambda g: str(g["index"]))
    return sorted(by_kernel.values(), key=lambda e: (e["since"] or "", e["kernel_id"]))


def activity(inventory: Inventory, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """kernel id -> its GPU memory and utilisation now, from NVML's processes (blocking: /proc);
    nothing for a host whose GPUs are declared rather than read from the driver."""
    if inventory.source != "nvml":
        return {}
    watched = [
        WatchedKernel(r["kernel_id"], r["container_id"], tuple(g["uuid"] for g in r["gpus"]))
        for r in rows
    ]
    return {
        kid: {"memory_used": memory, "utilization": util}
        for kid, (memory, util) in usage_by_kernel(inventory, watched).items()
    }


async def admin_view(
    services: Services,
    inventory: Inventory,
    ledger: Ledger,
    engine_error: str,
    mkm: Any,
    viewer_uid: int,
) -> dict[str, Any]:
    """What GET /gpu-containers/admin answers: holders, queue, reclaim states, quotas.
    ``viewer_uid``: the administrator asking (whose tickets are "yours")."""
    rows = holders(inventory, ledger)
    used = await asyncio.to_thread(activity, inventory, rows)
    alive = await asyncio.to_thread(
        services.state.alive_servers, [(r["server_id"], r["uid"]) for r in rows]
    )
    local = set(mkm.list_kernel_ids()) if mkm is not None else set()
    reclaim = services.reclaim
    for row in rows:
        row["activity"] = used.get(row["kernel_id"])
        row["reclaim"] = reclaim.state_of(row["kernel_id"])
        row["here"] = row["kernel_id"] in local
        row["server_alive"] = row["here"] or alive[(row["server_id"], row["uid"])]
    return {
        "holders": rows,
        "gpus": [
            {
                "uuid": g.uuid,
                "index": g.index,
                "name": g.name,
                "holders": len(ledger.holdings.get(g.uuid, [])),
            }
            for g in inventory.allocatable()
        ],
        "queue": await queue_view(services, viewer_uid),
        "reclaim": reclaim.states(),
        "quotas": await quota_view(services),
        "engine_error": engine_error,
        "source": inventory.source,
    }


async def queue_view(services: Services, viewer_uid: int) -> dict[str, Any]:
    """The host-wide wait queue, every ticket in full (gpuqueue.py); ``yours`` is the
    administrator's own."""
    queue = services.queue
    tickets = await queue.snapshot(services.state)
    rows = []
    for ticket in tickets:
        row = ticket.to_json(viewer_uid, True)
        row.update(kernel_id=ticket.kernel_id, uid=ticket.uid, server_id=ticket.server_id)
        rows.append(row)
    return {
        "queue": rows,
        "length": len(rows),
        "wait_by_default": bool(queue.wait_by_default),
        "max_wait": float(queue.max_wait),
        "counts": dict(queue.counts),
    }


async def quota_view(services: Services) -> dict[str, Any]:
    """Every user's GPU-hour use in the current period, and the quota policy (quota.py)."""
    return await services.quota.all_usage()


# ---------------------------------------------------------------------------- actions


# ---------------------------------------------------------------------------- metrics
