"""Administrators' actions on users' kernels (admin_view.py has who administers and the view):
``release`` restarts a kernel without GPUs, ``shutdown`` shuts it down, the user told why (the
kernel's last end, its pages closed, a notice kept for ``GPUAdmin.notice_hours``).

A kernel service acts on its users' kernels itself. In direct mode another user's kernel lives in
that user's server: the administrator's server writes the action into the host state directory
(``admin-action-<kernel id>-<action>-<admin uid>.json``), and the owner's server's
:class:`ActionWatcher` carries it out, trusting a record only from root, the state directory's
owner, or an account its own ``GPUAdmin.admin_users`` names, and only for the container it names
(so it is applied once, and never again after a restart). When the owner's server is gone,
nobody would carry it out: the administrator's server removes the container itself, which frees
its GPUs (a start still waiting for GPUs has its wait cancelled). Blocking work (the state
directory) runs on worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any

from jupyter_server.utils import ensure_async
from tornado import web

from ..base.errors import ContainerKernelError
from ..base.records import iso_time
from ..base.safefiles import owner_name, read_trusted, remove_own_files, write_atomic
from ..gpus.allocator import Ledger
from ..host.hoststate import StateDir
from ..kernel.provisioner import ContainerProvisioner
from ..server.reclaimer import restart_without_gpus
from ..server.websocket import close_kernel_websockets
from ..services import Services
from .admin_view import AdminActionRefused, GPUAdmin, admin_uids
from .kernel_view import KERNEL_ID

RELEASE = "release"


SHUTDOWN = "shutdown"


ACTIONS = (RELEASE, SHUTDOWN)


MAX_REASON = 500


_RECORD = re.compile(rf"admin-action-({KERNEL_ID})-(release|shutdown)-([0-9]{{1,10}})\.json")


_RECORD_LIMIT = 8192


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
