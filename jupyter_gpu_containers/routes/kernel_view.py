"""The kernel's own view: its container, image digest, mounts, GPUs, start phases and last end;
its container's log as a live tail; and its GPU use over the last minutes. The REST handlers
(kernels.py, thin) answer with what this module builds:

- ``GET /gpu-containers/kernels``: this server's container kernels, each with its GPUs, "since"
  and GPU-use history (gpu_usage.py).
- ``GET /gpu-containers/kernels/<kernel_id>``: one kernel's details.
- ``GET /gpu-containers/kernels/<kernel_id>/log?tail=N&follow=1``: its container's log as
  server-sent events, following new lines, and the kernel's next container after a restart,
  until the client goes away or the kernel is shut down.

Only the kernel's owner is answered: a kernel this server does not manage, one that is not a
container kernel, or one whose container's labels name another uid, are all the same 404, which
names nobody. The log is read on a thread of its own per stream (the engine's follow is a
blocking read), which ends when the client disconnects, the container stops, or the kernel goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from tornado import web

from ..backends.backend import ContainerBackend, ContainerDetails, LogLine, LogStream
from ..base import labels as L
from ..base.errors import ContainerKernelError, ImageMissing
from ..base.records import ImageRecord
from ..gpus.allocator import Ledger
from ..gpus.gpu_report import my_allocations
from ..gpus.gpu_usage import WatchedKernel
from ..gpus.inventory import Inventory
from ..host.identity import KernelUser
from ..images.environment import environment_stamp, image_digest
from ..kernel.provisioner import ContainerProvisioner
from ..services import Services

NOT_YOURS = "There is no such container kernel of yours on this server."
# What a kernel id in a route may be (check_kernel_id decides which ones a launch accepts).
KERNEL_ID = r"[0-9A-Za-z_.-]{1,255}"
DEFAULT_TAIL = 200
MAX_TAIL = 10_000


# ---------------------------------------------------------------------------- the server's kernels


def container_kernels(
    mkm: Any, user: KernelUser | None = None, *, everyone: bool = False
) -> list[tuple[str, Any, ContainerProvisioner]]:
    """(kernel id, kernel manager, provisioner) of each container kernel ``mkm`` manages (warm
    pool containers are not kernels) that is ``user``'s: a kernel service's user, or None for
    the server's own user (direct mode); every user's with ``everyone`` (reclaimer.py)."""
    found = []
    for kernel_id in list(mkm.list_kernel_ids()):
        try:
            km = mkm.get_kernel(kernel_id)
        except (KeyError, web.HTTPError):
            continue  # shut down meanwhile
        provisioner = getattr(km, "provisioner", None)
        if (
            isinstance(provisioner, ContainerProvisioner)
            and provisioner.pool_id is None
            and (everyone or same_user(provisioner.owner, user))
        ):
            found.append((str(kernel_id), km, provisioner))
    return found


def notebook_of(provisioner: ContainerProvisioner) -> str:
    """The notebook a kernel was started for, relative to its workspace, as its launch found it
    (a kernel service has no sessions of its own)."""
    facts = provisioner.launch_facts
    return facts.notebook if facts is not None else ""


def datasets_of(services: Services, provisioner: ContainerProvisioner) -> list[dict[str, Any]]:
    """The data a kernel sees beside its workspace, on every engine: its extra mounts (host
    paths: Docker, Podman, Slurm's shared file system), as its launch found them (none known for
    a kernel reattached after a restart of the server), and what the engine gives every kernel
    (Kubernetes' datasets)."""
    facts = provisioner.launch_facts
    found = [
        {
            "name": os.path.basename(source.rstrip("/")) or source,
            "target": target,
            "read_only": read_only,
            "source": source,
        }
        for source, target, read_only in (facts.extra_mounts if facts is not None else ())
    ]
    found += [
        {"name": d.name, "target": d.target, "read_only": d.read_only, "source": d.source}
        for d in services.backend.kernel_datasets
    ]
    return found


def launched_at(provisioner: ContainerProvisioner) -> float:
    """Unix time of the provisioner's last launch (0: none recorded, a reattached kernel)."""
    stamps = getattr(provisioner, "launch_stamps", None) or {}
    first = stamps.get("pre_launch")
    return wall_time(first) if first is not None else 0.0


def wall_time(monotonic: float) -> float:
    return time.time() - (time.monotonic() - monotonic)


def watched_kernels(mkm: Any) -> list[WatchedKernel]:
    """What the GPU-use sampler watches: the server's container kernels that have a container,
    every user's in a kernel service (GPUReclaim judges them all; each user reads only their
    own). Memory only: the sampler calls it on its own thread every few seconds."""
    return [
        WatchedKernel(kernel_id, p.container_id, tuple(p.gpu_uuids), launched_at(p))
        for kernel_id, _km, p in container_kernels(mkm, everyone=True)
        if p.container_id
    ]


def look_at_usage(services: Services, mkm: Any) -> None:
    """Someone looks at GPU use per kernel: sample for a while (the sampler is started here if
    the server's start did not, as in an embedding that never runs the extension's start)."""
    services.usage.start(lambda: watched_kernels(mkm))
    services.usage.looked()


def start_phases(provisioner: ContainerProvisioner) -> list[dict[str, Any]]:
    """The last launch's phases, in order: name, when it ended (unix time), how long it took."""
    stamps = getattr(provisioner, "launch_stamps", None) or {}
    durations = provisioner.launch_phases()
    return [
        {"name": name, "at": wall_time(at), "seconds": durations.get(name, 0.0)}
        for name, at in stamps.items()
        if name != "pre_launch"
    ]


def same_user(owner: KernelUser | None, user: KernelUser | None) -> bool:
    """Whether a kernel of ``owner`` (its provisioner's) is ``user``'s (None: the server's own
    user, in direct mode)."""
    if owner is None or user is None:
        return owner is None and user is None
    return owner.username == user.username and owner.uid == user.uid


def owned(details: ContainerDetails, uid: int) -> bool:
    """Whether a container's labels make it a kernel of ``uid``."""
    labels = details.labels
    return labels.get(L.MANAGED) == "true" and labels.get(L.UID) == str(uid)


def unix_time(rfc3339: str) -> float | None:
    """The engine's RFC 3339 times (nanoseconds, "Z" or an offset) as unix time; None when
    empty or not a time."""
    if not rfc3339:
        return None
    # datetime takes at most microseconds: cut the fraction, keep the zone after it.
    text = re.sub(r"(\.\d{6})\d+", r"\1", rfc3339.replace("Z", "+00:00"))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:  # the engine always gives a zone; never read one as local time
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


# ---------------------------------------------------------------------------- reading a log


class LogPump:
    """A container's log, read on a thread of its own into a bounded buffer that the event loop
    drains in batches. The thread ends when the log does (the container stopped, or the engine
    went away) or at :meth:`close` (the socket under the stream is shut down)."""

    # Lines kept while the client is slower than the kernel prints; older ones are dropped
    # (and counted), so that a notebook printing in a loop cannot grow the server's memory.
    max_buffered = 5_000

    def __init__(self, backend: ContainerBackend, container_id: str, tail: int, follow: bool):
        self._backend = backend
        self._container_id = container_id
        self._tail, self._follow = tail, follow
        self._lock = threading.Lock()
        self._lines: deque[LogLine] = deque()
        self._skipped = 0
        self._done = False
        self._closed = False
        self._notified = False
        self._stream: LogStream | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = asyncio.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.thread = threading.Thread(
            target=self._read, name=f"gpu-containers-log-{self._container_id[:12]}", daemon=True
        )
        self.thread.start()

    def _read(self) -> None:
        try:
            stream = self._backend.open_logs_sync(self._container_id, self._tail, self._follow)
            with self._lock:
                if self._closed and stream is not None:
                    stream.close()
                    stream = None
                self._stream = stream
            for line in stream or ():
                with self._lock:
                    if self._closed:
                        break
                    self._lines.append(line)
                    if len(self._lines) > self.max_buffered:
                        self._lines.popleft()
                        self._skipped += 1
                    notify = not self._notified
                    self._notified = True
                if notify:
                    self._wake()
        except Exception:  # the engine went away: the log ends here, the caller says why
            pass
        finally:
            with self._lock:
                self._done = True
            self._wake()

    def _wake(self) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the server's loop closed meanwhile
                loop.call_soon_threadsafe(self._ready.set)

    async def batch(self) -> tuple[list[LogLine], int, bool]:
        """The lines read since the last batch, how many were dropped, whether the log ended;
        waits for at least one of them."""
        await self._ready.wait()
        with self._lock:
            self._ready.clear()
            lines, self._lines = list(self._lines), deque()
            skipped, self._skipped = self._skipped, 0
            self._notified = False
            done = self._done and not self._lines
        return lines, skipped, done

    def close(self) -> None:
        """End the read at once (any thread); the thread ends with it."""
        with self._lock:
            self._closed = True
            stream = self._stream
        if stream is not None:
            stream.close()


# ---------------------------------------------------------------------------- the views


def find_kernel(
    mkm: Any, kernel_id: str, user: KernelUser | None = None
) -> tuple[Any, ContainerProvisioner]:
    """``user``'s container kernel ``kernel_id`` (None: the server's own user), or the 404 that
    names nobody."""
    if kernel_id not in mkm.list_kernel_ids():  # not get_kernel's own 404, which names it
        raise web.HTTPError(404, NOT_YOURS)
    km = mkm.get_kernel(kernel_id)
    provisioner = getattr(km, "provisioner", None)
    if not isinstance(provisioner, ContainerProvisioner) or provisioner.pool_id is not None:
        raise web.HTTPError(404, NOT_YOURS)
    if not same_user(provisioner.owner, user):
        raise web.HTTPError(404, NOT_YOURS)
    return km, provisioner


def kernel_alive(mkm: Any, kernel_id: str) -> bool:
    return kernel_id in mkm.list_kernel_ids()


async def current_container(
    backend: ContainerBackend, provisioner: ContainerProvisioner
) -> ContainerDetails | None:
    """The kernel's container now (None between the two containers of a restart); the 404
    that names nobody when its labels say it is not this user's."""
    container_id = provisioner.container_id
    if not container_id:
        return None
    details = await backend.details(container_id)
    if details is not None and not owned(details, provisioner.kernel_ids()[0]):
        raise web.HTTPError(404, NOT_YOURS)
    return details


def kernels_listing(
    services: Services,
    mkm: Any,
    inventory: Inventory,
    ledger: Ledger,
    notebooks: dict[str, str],
    user: KernelUser | None = None,
) -> list[dict[str, Any]]:
    """``user``'s container kernels (None: the server's own user): GPUs, since when, GPU use
    over the last minutes."""
    names = {g.uuid: g.name for g in inventory.allocatable()}
    uid = str(user.uid if user is not None else os.getuid())
    allocations = {a["kernel_id"]: a for a in my_allocations(inventory, ledger, uid)}
    kernels = []
    for kernel_id, km, provisioner in container_kernels(mkm, user):
        held = allocations.get(kernel_id)
        gpus = [{**g, "name": names.get(g["uuid"], "")} for g in held["gpus"]] if held else []
        usage = services.usage.report(kernel_id, tuple(g["uuid"] for g in gpus), inventory)
        if usage["since"] is None and held:
            usage["since"] = held["since"] or None
        kernels.append(
            {
                "kernel_id": kernel_id,
                "kernel_name": str(km.kernel_name),
                "image": provisioner.image,
                # The digest its notebook pins the image to (images/environment.py), or "".
                "pinned": provisioner.pinned_image,
                "notebook": notebooks.get(kernel_id, "") or notebook_of(provisioner),
                "execution_state": str(getattr(km, "execution_state", "unknown")),
                "container_id": provisioner.container_id,
                "gpus": gpus,
                "datasets": datasets_of(services, provisioner),
                "usage": usage,
                # Idle GPUs given back (reclaim.py): warned, when they go, or that they went.
                "reclaim": services.reclaim.state_of(kernel_id),
            }
        )
    kernels.sort(key=lambda k: (k["notebook"] or "~", k["kernel_id"]))
    return kernels


async def image_of(services: Services, details: ContainerDetails) -> ImageRecord | None:
    """The image a kernel's container runs, None when the engine no longer has it."""
    try:
        return await services.backend.inspect_image(details.image_id)
    except ImageMissing:
        return None


async def environment_of(
    services: Services,
    reference: str,
    image: ImageRecord,
    inventory: Inventory,
    gpu_ids: list[str],
) -> dict[str, Any]:
    """The environment stamp (images/environment.py) of a kernel of the kernel spec's
    ``reference`` whose container runs ``image`` on ``gpu_ids``."""
    probe = await asyncio.to_thread(services.probe.cached, image.id)  # (a file, maybe)
    listed = services.listed_entry(reference)
    return environment_stamp(reference, image, probe, listed, inventory, gpu_ids)


async def current_environment(
    services: Services, provisioner: ContainerProvisioner
) -> dict[str, Any] | None:
    """The environment stamp of a kernel's current container, None before it has one (or once
    its image is gone)."""
    details = await current_container(services.backend, provisioner)
    record = await image_of(services, details) if details is not None else None
    if details is None or record is None:
        return None
    uuids = [u for u in details.labels.get(L.GPUS, "").split(",") if u]
    inventory = await services.inventory.read()
    return await environment_of(services, provisioner.image, record, inventory, uuids)


async def kernel_details(
    services: Services, kernel_id: str, km: Any, provisioner: ContainerProvisioner, notebook: str
) -> dict[str, Any]:
    """One kernel's details: container, image digest, mounts, GPUs, start phases, last end, GPU
    use (404 when its container's labels say it is not this user's)."""
    details = await current_container(services.backend, provisioner)
    image: dict[str, Any] = {
        "reference": provisioner.image,
        "pinned": provisioner.pinned_image,
        "id": "",
        "digest": "",
        "repo_digests": [],
    }
    inventory = await services.inventory.read()
    uuids = [u for u in (details.labels.get(L.GPUS, "") if details else "").split(",") if u]
    stamp = None
    if details is not None:
        record = await image_of(services, details)
        repo_digests = record.repo_digests if record else ()
        image.update(
            id=details.image_id,
            digest=image_digest(provisioner.image, details.image_id, repo_digests),
            repo_digests=list(repo_digests),
        )
        if record is not None:
            stamp = await environment_of(services, provisioner.image, record, inventory, uuids)
    gpus = []
    for uuid in uuids:
        gpu = inventory.find(uuid)
        gpus.append(
            {
                "uuid": uuid,
                "index": gpu.index if gpu else None,
                "name": gpu.name if gpu else "",
                "memory_total": gpu.memory_total if gpu else None,
            }
        )
    usage = services.usage.report(kernel_id, tuple(uuids), inventory)
    if usage["since"] is None and uuids and details is not None:
        usage["since"] = unix_time(details.created)
    return {
        "kernel_id": kernel_id,
        "kernel_name": str(km.kernel_name),
        "notebook": notebook,
        "execution_state": str(getattr(km, "execution_state", "unknown")),
        "image": image,
        "environment": stamp,
        "container": container_json(details),
        "mounts": mounts_json(details, getattr(provisioner, "owner", None)),
        "tmpfs": list(details.tmpfs) if details else [],
        "gpus": gpus,
        "launched_at": launched_at(provisioner) or None,
        "phases": start_phases(provisioner),
        "last_end": provisioner.last_end,
        "usage": usage,
        "reclaim": services.reclaim.state_of(kernel_id),
    }


def mounts_json(details: ContainerDetails | None, owner: Any) -> list[dict[str, Any]]:
    """A kernel's mounts by their path in the container (the engine lists them in no set
    order). A kernel service's user sees where their own files come from (their workspace,
    a dataset), not the service's own paths on the host ("" instead)."""
    workspace = owner.workspace if isinstance(owner, KernelUser) else ""
    mounts = []
    for m in sorted(details.mounts if details else (), key=lambda m: m.target):
        source = m.source
        if workspace and m.type != "dataset" and not _below(source, workspace):
            source = ""
        mounts.append(
            {"type": m.type, "source": source, "target": m.target, "read_only": m.read_only}
        )
    return mounts


def _below(path: str, root: str) -> bool:
    """Whether ``path`` names ``root`` or a path below it, as written (the engine's own word on
    what it mounted: nothing is read)."""
    path, root = os.path.normpath(path), os.path.normpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def container_json(details: ContainerDetails | None) -> dict[str, Any] | None:
    if details is None:
        return None
    return {
        "id": details.id,
        "name": details.name,
        "status": details.status,
        "created": unix_time(details.created),
        "started_at": unix_time(details.started_at),
        "finished_at": unix_time(details.finished_at),
        "exit_code": details.exit_code,
        "oom_killed": details.oom_killed,
    }


def parse_tail(raw: str) -> int:
    if not raw.isdigit() or int(raw) > MAX_TAIL:
        raise web.HTTPError(400, f"tail must be a number of lines from 0 to {MAX_TAIL}.")
    return int(raw)


Send = Callable[[str], Awaitable[None]]


class LogFeed:
    """A kernel's log as server-sent events (openapi.yaml names them): a ``container`` event,
    then its log in ``lines`` events; when the container ends, ``ended`` with the reason, and
    (following) the next container of the kernel after a restart; ``shutdown`` when the kernel
    is gone. ``send`` writes and flushes (raising StreamClosedError once the viewer is gone);
    :meth:`close` (the viewer disconnected) ends it at once."""

    keepalive = 15.0
    # How often the feed looks for the kernel's next container after one ended (a restart).
    recheck = 0.5

    def __init__(
        self,
        backend: ContainerBackend,
        mkm: Any,
        kernel_id: str,
        provisioner: ContainerProvisioner,
        send: Send,
    ) -> None:
        self.backend, self.mkm = backend, mkm
        self.kernel_id, self.provisioner = kernel_id, provisioner
        self._send = send
        self.gone = asyncio.Event()
        self._pump: LogPump | None = None
        self._last_sent = time.monotonic()

    def close(self) -> None:
        self.gone.set()
        if self._pump is not None:
            self._pump.close()

    async def _event(self, name: str, data: Any) -> None:
        await self._write(f"event: {name}\ndata: {json.dumps(data)}\n\n")

    async def _write(self, text: str) -> None:
        await self._send(text)
        self._last_sent = time.monotonic()

    async def _current(self) -> ContainerDetails | None:
        """The kernel's container now; None while the engine cannot say (the feed asks again,
        and the viewer sees the log resume once it can)."""
        try:
            return await current_container(self.backend, self.provisioner)
        except ContainerKernelError:
            return None

    async def run(self, details: ContainerDetails | None, tail: int, follow: bool) -> None:
        try:
            await self._run(details, tail, follow)
        finally:
            if self._pump is not None:
                self._pump.close()

    async def _run(self, details: ContainerDetails | None, tail: int, follow: bool) -> None:
        shown: str | None = None  # the container whose log was streamed last
        while not self.gone.is_set():
            if details is None or details.id == shown:
                # Between two containers (a restart), or after the last one ended.
                if not kernel_alive(self.mkm, self.kernel_id):
                    await self._event("shutdown", {"reason": "The kernel was shut down."})
                    return
                if not follow and shown is not None:
                    return
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.gone.wait(), self.recheck)
                if time.monotonic() - self._last_sent > self.keepalive:
                    await self._write(": keepalive\n\n")  # a restart can take minutes
                if not self.gone.is_set():
                    details = await self._current()
                continue
            await self._event(
                "container",
                {
                    "container_id": details.id,
                    "started_at": unix_time(details.started_at),
                    "last_end": self.provisioner.last_end,
                },
            )
            # A later container of the kernel is new: all of its log.
            ended = await self._pump_log(details.id, tail if shown is None else MAX_TAIL, follow)
            shown = details.id
            if self.gone.is_set() or not follow:
                return
            if ended:
                await self._say_ended(details.id)
            details = await self._current()

    async def _pump_log(self, container_id: str, tail: int, follow: bool) -> bool:
        """Stream one container's log; True when the log ended (not the viewer)."""
        pump = self._pump = LogPump(self.backend, container_id, tail, follow)
        pump.start()
        try:
            while True:
                try:
                    lines, skipped, done = await asyncio.wait_for(pump.batch(), self.keepalive)
                except asyncio.TimeoutError:  # not the builtin one before Python 3.11
                    await self._write(": keepalive\n\n")
                    continue
                if lines or skipped:
                    await self._event(
                        "lines",
                        {
                            "container_id": container_id,
                            "lines": [{"time": x.time, "text": x.text} for x in lines],
                            "skipped": skipped,
                        },
                    )
                if done:
                    return not self.gone.is_set()
        finally:
            pump.close()
            self._pump = None

    async def _say_ended(self, container_id: str) -> None:
        """Why the container's log ended: its state, and the provisioner's sentence when it
        has one for it (its restarter looks every few seconds)."""
        try:
            state = await self.backend.details(container_id)
        except ContainerKernelError:
            state = None
        end = self.provisioner.last_end
        recorded = bool(end and end.get("container_id") == container_id)
        reason = end["reason"] if end and recorded else ""
        # News rather than trouble: an end someone asked for (the record of ends says so), a
        # container removed by a restart or a shutdown, a clean exit.
        routine = bool(end.get("routine")) if end and recorded else False
        if state is None:
            reason = reason or "The container was removed (the kernel was restarted or shut down)."
            routine = routine or not recorded
        elif not reason:
            reason = f"The container ended with code {state.exit_code}." + (
                " It was OOM-killed: the kernel ran out of memory." if state.oom_killed else ""
            )
            routine = state.exit_code == 0 and not state.oom_killed
        await self._event(
            "ended",
            {
                "container_id": container_id,
                "exit_code": state.exit_code if state else None,
                "oom_killed": state.oom_killed if state else False,
                "finished_at": unix_time(state.finished_at) if state else None,
                "reason": reason,
                "routine": routine,
            },
        )
