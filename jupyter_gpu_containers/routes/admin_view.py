"""The administrator's view of a shared GPU host, their actions on users' kernels, and the
Prometheus metrics of GPU sharing (server layer; the REST handlers in admin.py are thin).

- **Who is an administrator.** In the kernel service (service.py): a user in
  ``ServiceApp.admin_users``, or one JupyterHub says is an admin (its user model's ``"admin":
  true``, hubauth.py). On a user's own server (direct mode): the server's account, when its name
  is in ``GPUAdmin.admin_users`` (empty by default: on a shared host every user runs a server,
  and none of them is an administrator unless named). Either way the server's authorizer must
  also allow the resource ``gpu_containers_admin``. Everyone else gets 403 with a sentence.
- **The view** (``GET /gpu-containers/admin``): every GPU holder on the host, from the
  host-wide ledger (container labels), with user, notebook, image, GPUs, since, seconds held and
  GPU activity; the host-wide wait queue; reclaim states; GPU-hour use.
- **Actions** (``POST /gpu-containers/admin/kernels/<id>``): ``release`` restarts the kernel
  without GPUs; ``shutdown`` shuts it down (a start still waiting for GPUs has its wait
  cancelled). The user is told why: the sentence becomes the kernel's last end (its own view),
  its pages are closed with it, and a notice stays in the host state directory for
  ``GPUAdmin.notice_hours`` (``GET /gpu-containers/admin/notices``, the user's own).

  A kernel service holds every user's kernels, so it acts on them itself. In direct mode another
  user's kernel lives in that user's server: the administrator's server writes the action into
  the host state directory (``admin-action-<kernel id>-<action>-<admin uid>.json``, owned by the
  administrator), and the owner's server, which looks every ``GPUAdmin.poll_interval`` seconds,
  carries it out as its own release or shutdown. A record counts only when its file belongs to
  root, the state directory's owner, or an account the owner's server's own
  ``GPUAdmin.admin_users`` names, and only for the container it names (so it is applied once,
  and never again after a restart). When the owner's server is gone, nobody would carry it out:
  the administrator's server removes the container itself, which frees its GPUs.
- **Metrics** (``GET /gpu-containers/metrics``): Prometheus text, read at each scrape from the
  ledger, the queue, the reclaimer and the quotas. They name GPUs, never users. On a kernel
  service they count every user together, so only its administrators read them (and Jupyter
  Server's own ``/metrics``, service_routes.py).

Blocking work (the state directory, /proc) runs on worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jupyter_server.utils import ensure_async
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from tornado import web
from traitlets import Float, List, Unicode, validate
from traitlets.config import LoggingConfigurable

from ..base.errors import ContainerKernelError
from ..base.records import iso_time
from ..base.safefiles import account_uid, owner_name, read_trusted, remove_own_files, write_atomic
from ..gpus.allocator import Ledger
from ..gpus.gpu_usage import WatchedKernel, usage_by_kernel
from ..gpus.inventory import Inventory
from ..host.hoststate import StateDir, service_uid
from ..host.identity import KernelUser
from ..kernel.provisioner import ContainerProvisioner
from ..server.reclaimer import restart_without_gpus
from ..server.websocket import close_kernel_websockets
from ..services import Services
from .kernel_view import KERNEL_ID

RELEASE = "release"
SHUTDOWN = "shutdown"
ACTIONS = (RELEASE, SHUTDOWN)
MAX_REASON = 500
_RECORD = re.compile(rf"admin-action-({KERNEL_ID})-(release|shutdown)-([0-9]{{1,10}})\.json")
_RECORD_LIMIT = 8192
# The wait-time histogram's buckets, in seconds: a lab's waits run from moments to an hour.
WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, float("inf"))


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


@dataclass(frozen=True)
class ActionRecord:
    """One admin action on a kernel, as the host state directory keeps it."""

    kernel_id: str
    container_id: str
    uid: str  # the kernel's owner (its container's label)
    user: str
    action: str
    reason: str
    by: str  # the administrator: the record file's owner, never what the file says
    at: float

    def sentence(self) -> str:
        return action_sentence(self.action, self.by, self.reason)

    def to_json(self) -> dict[str, Any]:
        return {
            "kernel_id": self.kernel_id,
            "user": self.user,
            "action": self.action,
            "reason": self.reason,
            "by": self.by,
            "at": iso_time(self.at),
            "message": self.sentence(),
        }


def action_sentence(action: str, by: str, reason: str) -> str:
    what = (
        "released this kernel's GPUs (it was restarted without GPUs, and everything in its "
        "memory is lost)"
        if action == RELEASE
        else "shut this kernel down"
    )
    why = f" The reason given: {reason}" if reason else " No reason was given."
    return f"An administrator ({by}) {what}.{why}"


def parse_action(body: dict[str, Any]) -> tuple[str, str]:
    action = body.get("action")
    if action not in ACTIONS:
        raise web.HTTPError(400, 'Give "action": "release" or "shutdown".')
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise web.HTTPError(400, '"reason" must be a sentence for the kernel\'s user.')
    # One line, printable: it is shown to the user, and closes their pages with it.
    reason = " ".join("".join(c if c.isprintable() else " " for c in reason).split())
    if len(reason) > MAX_REASON:
        raise web.HTTPError(400, f'"reason" must be at most {MAX_REASON} characters.')
    return str(action), reason


def record_name(kernel_id: str, action: str, admin_uid: int) -> str:
    return f"admin-action-{kernel_id}-{action}-{admin_uid}.json"


def write_record(state: StateDir, record: ActionRecord, admin_uid: int) -> None:
    """Keep ``record`` in the host state directory, owned by the administrator (mode 0644: the
    kernel's owner reads it). Blocking."""
    state.require_shared()
    data = {
        "kernel_id": record.kernel_id,
        "container_id": record.container_id,
        "uid": record.uid,
        "user": record.user,
        "action": record.action,
        "reason": record.reason,
        "by": record.by,
        "at": record.at,
    }
    name = record_name(record.kernel_id, record.action, admin_uid)
    with state.write_lock:
        try:
            write_atomic(state.fd, name, json.dumps(data).encode(), 0o644, None)
        except OSError as e:
            raise AdminActionRefused(
                f"The admin action cannot be recorded in {state.path} ({e.strerror}): the file "
                f"{name} there belongs to someone else. Remove it, then try again."
            ) from None


def read_records(state: StateDir, trusted: set[int], max_age: float) -> list[ActionRecord]:
    """The admin actions on the host that trusted accounts wrote in the last ``max_age``
    seconds. Anything else (another owner, a link, malformed, too big) is ignored. Blocking."""
    if not state.shared:
        return []
    try:
        names = os.listdir(state.fd)
    except OSError:
        return []
    now = time.time()
    found = []
    # Root and the directory's owner (a kernel service) act for the administrator their
    # request authenticated: their records' own "by" is believed; anyone else's is not.
    services = state.service_uids()
    for name in names:
        m = _RECORD.fullmatch(name)
        if not m or int(m[3]) not in trusted:
            continue
        try:
            # Owned by the account its name gives, which must be one this server believes.
            raw, info = read_trusted(state.fd, name, {int(m[3])}, _RECORD_LIMIT)
            data = json.loads(raw)
        except (OSError, ValueError):
            continue
        if (
            not isinstance(data, dict)
            or data.get("kernel_id") != m[1]
            or data.get("action") != m[2]
        ):
            continue
        action, at = data.get("action"), data.get("at")
        if action not in ACTIONS or not isinstance(at, (int, float)) or now - at > max_age:
            continue
        reason, by = data.get("reason"), data.get("by")
        if info.st_uid not in services or not isinstance(by, str) or not by:
            by = owner_name(info.st_uid)
        found.append(
            ActionRecord(
                kernel_id=m[1],
                container_id=str(data.get("container_id") or ""),
                uid=str(data.get("uid") or ""),
                user=str(data.get("user") or ""),
                action=str(action),
                reason=reason[:MAX_REASON] if isinstance(reason, str) else "",
                by=by[:64],
                at=float(at),
            )
        )
    return sorted(found, key=lambda r: r.at)


def prune_records(state: StateDir, max_age: float) -> None:
    """Remove this account's own records older than ``max_age`` seconds. Blocking."""
    if not state.shared:
        return
    me, now = str(os.geteuid()), time.time()
    remove_own_files(
        state.fd, _RECORD, lambda m, info: m[3] == me and now - info.st_mtime > max_age
    )


def local_kernel(mkm: Any, kernel_id: str) -> tuple[Any, ContainerProvisioner] | None:
    """Kernel ``kernel_id`` of this server's kernel manager, whoever's it is."""
    if mkm is None or kernel_id not in mkm.list_kernel_ids():
        return None
    km = mkm.get_kernel(kernel_id)
    provisioner = getattr(km, "provisioner", None)
    if not isinstance(provisioner, ContainerProvisioner) or provisioner.pool_id is not None:
        return None
    return km, provisioner


async def carry_out(
    services: Services, mkm: Any, record: ActionRecord, expect_container: bool = False
) -> bool:
    """Apply ``record`` to a kernel of this server (or a start waiting here); False when it is
    not here (or, with ``expect_container``, no longer runs the container the record names).

    A start waiting here for GPUs holds none: a shutdown cancels its wait (its launch fails
    with the sentence), a release is refused (AdminActionRefused), or, for a record
    (``expect_container``), left alone: that record named a container this start no longer
    runs."""
    sentence = record.sentence()
    queue = services.queue
    if record.kernel_id in queue.waiting_ids():
        if record.action == SHUTDOWN:
            return bool(queue.cancel(record.kernel_id, sentence))
        if expect_container:
            return False
        raise AdminActionRefused(
            "This kernel waits for GPUs and holds none yet: there is nothing to release. Shut "
            "it down to end its wait."
        )
    found = local_kernel(mkm, record.kernel_id)
    if found is None:
        return False
    km, provisioner = found
    if expect_container and provisioner.container_id != record.container_id:
        return False
    if record.action == RELEASE:
        if not provisioner.gpu_uuids:
            raise AdminActionRefused("This kernel holds no GPUs: there is nothing to release.")
        await restart_without_gpus(mkm, record.kernel_id, km, provisioner, sentence)
        return True
    _tell(km, provisioner, sentence)
    close_kernel_websockets(record.kernel_id, sentence)
    await ensure_async(mkm.shutdown_kernel(record.kernel_id))
    return True


def _tell(km: Any, provisioner: ContainerProvisioner, sentence: str) -> None:
    """Before a shutdown: the sentence becomes the end of the kernel's container (the record
    the kernels API keeps of a shut-down kernel) and jupyter_server's reason of the kernel."""
    provisioner.last_end = {
        "container_id": provisioner.container_id,
        "exit_code": None,
        "oom_killed": False,
        "reason": sentence,
        "at": time.time(),
        "routine": False,  # an administrator's act: the user must see it
    }
    if hasattr(km, "reason"):
        km.reason = sentence


async def act(
    services: Services,
    config: GPUAdmin,
    mkm: Any,
    ledger: Ledger,
    kernel_id: str,
    action: str,
    reason: str,
    admin_name: str,
    server_account: str,
) -> dict[str, Any]:
    """POST /gpu-containers/admin/kernels/<id>: release or shut down any user's kernel.
    ``{"state": "done"}`` when carried out here (or the container removed, its server being
    gone); ``{"state": "requested"}`` when the kernel's own server carries it out.
    ``server_account``: this server's account name (AdminDesk.server_account), the owner of
    its kernels in direct mode."""
    holding = next(
        (h for held in ledger.holdings.values() for h in held if h.kernel_id == kernel_id), None
    )
    found = local_kernel(mkm, kernel_id)
    waiting = kernel_id in services.queue.waiting_ids()
    if holding is None and found is None and not waiting:
        raise web.HTTPError(
            404, "No kernel on this host holds GPUs or waits for them under that id."
        )
    if found is not None:
        owner = found[1].owner
        uid = str(owner.uid if owner is not None else os.getuid())
        user = owner.username if owner is not None else server_account
        container_id = found[1].container_id or ""
    else:
        assert holding is not None or waiting
        uid = holding.uid if holding else ""
        user = holding.user if holding else ""
        container_id = holding.container_id if holding else ""
    record = ActionRecord(
        kernel_id, container_id, uid, user, action, reason, admin_name, time.time()
    )
    state = services.state
    if await carry_out(services, mkm, record):
        with contextlib.suppress(ContainerKernelError):
            await asyncio.to_thread(_keep_notice, state, record, config)
        return {"state": "done", **record.to_json()}
    if holding is None:
        raise web.HTTPError(
            409,
            "That start waits for GPUs in another server, and only that server can end its "
            "wait: ask its user, or shut the server down.",
        )
    await asyncio.to_thread(_keep_notice, state, record, config)
    if await asyncio.to_thread(state.is_alive, holding.server_id, holding.uid):
        return {"state": "requested", "server_id": holding.server_id, **record.to_json()}
    # Its server is gone: nothing will carry the action out, and the container books its GPUs
    # until someone removes it. Removing it frees them (a release and a shutdown alike).
    await services.backend.remove(holding.container_id)
    return {"state": "done", **record.to_json()}


def _keep_notice(state: StateDir, record: ActionRecord, config: GPUAdmin) -> None:
    write_record(state, record, os.geteuid())
    prune_records(state, config.notice_hours * 3600)


async def notices_for(services: Services, config: GPUAdmin, uid: str) -> list[dict[str, Any]]:
    """The admin actions on ``uid``'s kernels in the last GPUAdmin.notice_hours."""
    state = services.state
    trusted = await asyncio.to_thread(admin_uids, config, state, services.policy.state_dir_owner)
    records = await asyncio.to_thread(read_records, state, trusted, config.notice_hours * 3600)
    return [r.to_json() for r in records if r.uid == uid]


class ActionWatcher:
    """Direct mode: carries out the admin actions other servers recorded on this server's
    kernels (one look every GPUAdmin.poll_interval seconds)."""

    def __init__(self, services: Services, config: GPUAdmin, mkm: Any, log: Any) -> None:
        self.services, self.config, self.mkm, self.log = services, config, mkm, log
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.look()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # one bad look must not end the watch
                self.log.warning("jupyter_gpu_containers: admin actions not checked: %s", e)
            await asyncio.sleep(self.config.poll_interval)

    async def look(self) -> int:
        """Carry out the records that name one of this server's kernels; how many were."""
        state = self.services.state
        if not state.shared:
            return 0
        local = set(self.mkm.list_kernel_ids()) | self.services.queue.waiting_ids()
        if not local:
            return 0
        trusted = await asyncio.to_thread(
            admin_uids, self.config, state, self.services.policy.state_dir_owner
        )
        records = await asyncio.to_thread(
            read_records, state, trusted, self.config.notice_hours * 3600
        )
        done = 0
        for record in records:
            if record.kernel_id not in local:
                continue
            try:
                if await carry_out(self.services, self.mkm, record, expect_container=True):
                    done += 1
                    self.log.warning("Kernel %s: %s", record.kernel_id, record.sentence())
            except ContainerKernelError as e:
                self.log.warning("Kernel %s: admin action not carried out: %s", record.kernel_id, e)
        return done


# ---------------------------------------------------------------------------- metrics


class SharingCollector:
    """The metrics of GPU sharing, read at each scrape (a prometheus_client custom collector)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.inventory: Inventory | None = None
        self.ledger: Ledger | None = None
        self.tickets: list[Any] = []
        self.quota: dict[str, Any] | None = None  # GPUQuota.totals(), None when unreadable
        self.admin_actions: dict[str, int] = {RELEASE: 0, SHUTDOWN: 0}

    def collect(self) -> Iterable[Any]:
        inventory, ledger = self.inventory, self.ledger
        prefix = "jupyter_gpu_containers"
        if inventory is not None:
            gpus = inventory.allocatable()
            total = GaugeMetricFamily(f"{prefix}_gpus", "GPUs this host allocates to kernels.")
            total.add_metric([], len(gpus))
            yield total
            held = GaugeMetricFamily(f"{prefix}_gpus_held", "GPUs held by at least one kernel.")
            per_gpu = GaugeMetricFamily(
                f"{prefix}_gpu_kernels", "Kernels holding each GPU.", labels=["gpu", "uuid"]
            )
            holdings = ledger.holdings if ledger is not None else {}
            held.add_metric([], sum(1 for g in gpus if holdings.get(g.uuid)))
            for g in gpus:
                per_gpu.add_metric([str(g.index), g.uuid], len(holdings.get(g.uuid, [])))
            yield held
            yield per_gpu
            kernels = GaugeMetricFamily(f"{prefix}_kernels_holding_gpus", "Kernels holding GPUs.")
            kernels.add_metric(
                [], len({h.kernel_id for held_by in holdings.values() for h in held_by})
            )
            yield kernels
        now = time.time()
        length = GaugeMetricFamily(
            f"{prefix}_queue_length", "Starts waiting for GPUs on this host."
        )
        length.add_metric([], len(self.tickets))
        yield length
        oldest = GaugeMetricFamily(
            f"{prefix}_queue_oldest_wait_seconds", "How long the longest-waiting start has waited."
        )
        oldest.add_metric([], max((now - t.arrived for t in self.tickets), default=0.0))
        yield oldest
        outcomes = CounterMetricFamily(
            f"{prefix}_gpu_waits",
            "Waits for GPUs in this process, by how they ended.",
            labels=["outcome"],
        )
        for outcome, count in self.services.queue.counts.items():
            outcomes.add_metric([outcome], count)
        yield outcomes
        counters = self.services.reclaim.counters()
        reclaims = CounterMetricFamily(
            f"{prefix}_reclaims", "Kernels whose idle GPUs were reclaimed."
        )
        reclaims.add_metric([], counters.get("reclaims", 0))
        yield reclaims
        warnings = CounterMetricFamily(
            f"{prefix}_reclaim_warnings", "Warnings of an idle kernel about to lose its GPUs."
        )
        warnings.add_metric([], counters.get("warnings", 0))
        yield warnings
        actions = CounterMetricFamily(
            f"{prefix}_admin_actions", "Admin releases and shutdowns.", labels=["action"]
        )
        for action, count in self.admin_actions.items():
            actions.add_metric([action], count)
        yield actions
        if self.quota is not None:
            yield from self._quota_metrics(prefix, self.quota)

    @staticmethod
    def _quota_metrics(prefix: str, totals: dict[str, Any]) -> Iterable[Any]:
        period = str(totals["period"])
        used = GaugeMetricFamily(
            f"{prefix}_gpu_hours_used",
            "GPU-hours used on this host in the current quota period (GPUQuota.period), all "
            "users together.",
            labels=["period"],
        )
        used.add_metric([period], float(totals["used_hours"]))
        yield used
        groups = GaugeMetricFamily(
            f"{prefix}_group_gpu_hours_used",
            "GPU-hours used in the current quota period by each group of GPUQuota.user_groups.",
            labels=["period", "group"],
        )
        for group, hours in sorted(totals["groups"].items()):
            groups.add_metric([period, group], float(hours))
        yield groups
        used_up = GaugeMetricFamily(
            f"{prefix}_quota_users_used_up",
            "Users whose GPU-hour quota (their own or their group's) is used up now.",
        )
        used_up.add_metric([], int(totals["used_up"]))
        yield used_up


class SharingMetrics:
    """A registry of this server's own (not prometheus_client's global one, which the server's
    own /metrics serves): the collector above and the histogram of wait times."""

    def __init__(self, services: Services) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = SharingCollector(services)
        self.registry.register(self.collector)
        self.waits = Histogram(
            "jupyter_gpu_containers_gpu_wait_seconds",
            "Seconds a start waited until it was given its GPUs, in this process (cancelled, "
            "timed-out and failed waits are counted in jupyter_gpu_containers_gpu_waits).",
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self._seen_until = 0.0

    async def render(self, services: Services) -> bytes:
        """The metrics now, in Prometheus' text format."""
        collector = self.collector
        try:
            collector.inventory = await services.inventory.read()
            from ..gpus.allocator import current_ledger

            collector.ledger = await current_ledger(services.backend, services.state)
        except ContainerKernelError:
            collector.ledger = None  # no engine: holders unknown; the rest still answers
        queue = services.queue
        collector.tickets = await queue.snapshot(services.state)
        try:
            collector.quota = await services.quota.totals()
        except ContainerKernelError:
            collector.quota = None  # no engine: the live holdings are unknown
        # The queue keeps its last waits (ended, seconds, outcome): the granted ones not yet
        # counted go in now. A wait that ended otherwise never got GPUs: its length says
        # nothing of how long GPUs take to come, and the outcome counter has it.
        recent = list(queue.recent_waits)
        for ended, seconds, *outcome in recent:
            if ended > self._seen_until and outcome[:1] in ([], ["granted"]):
                self.waits.observe(seconds)
        if recent:
            self._seen_until = max(self._seen_until, max(wait[0] for wait in recent))
        return generate_latest(self.registry)


# The key of the server's AdminDesk in the web application's settings (next to Services').
SETTINGS_KEY = "gpu_containers_admin"


class AdminDesk:
    """What one server keeps for administration: the configuration, the metrics, and (direct
    mode) the watcher that carries out admin actions on its kernels. Made by the app with the
    Services; a handler of a server that never ran the app's start makes one at first use."""

    def __init__(self, services: Services, parent: Any) -> None:
        self.config = GPUAdmin(parent=parent)
        self.metrics = SharingMetrics(services)
        self.watcher: ActionWatcher | None = None
        self._account: str | None = None

    async def server_account(self) -> str:
        """This server's account name (who administers in direct mode, and owns its kernels
        there): looked up once, on a worker thread (NSS may ask a directory service)."""
        if self._account is None:
            self._account = await asyncio.to_thread(owner_name, os.getuid())
        return self._account

    def start_watching(self, services: Services, mkm: Any, log: Any) -> None:
        if self.watcher is None:
            self.watcher = ActionWatcher(services, self.config, mkm, log)
            self.watcher.start()

    async def stop(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()
            self.watcher = None


def desk_for(settings: dict[str, Any], services: Services, parent: Any) -> AdminDesk:
    found = settings.get(SETTINGS_KEY)
    if not isinstance(found, AdminDesk):
        found = settings[SETTINGS_KEY] = AdminDesk(services, parent)
    return found
