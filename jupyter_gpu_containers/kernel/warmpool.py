"""A warm pool: kernel containers started ahead of demand, handed to kernels that get no GPUs.

A cold kernel start is container create + start + ipykernel boot. The pool keeps ``size``
containers per image running, each made by the very code that makes a kernel's container
(ContainerProvisioner, through the image's kernel spec), and a launch that ends up with zero GPUs
takes one instead of starting its own: the handover is one silent execute request that moves the
kernel to the notebook's directory and session.

Why only CPU kernels, and only this server's: GPU visibility, bind mounts and the user are fixed
when a container is created. A pool container is made exactly as a zero-GPU kernel of this server
would be (same user, workspace, hardening, limits, options); a launch takes it only when its own
container spec would be the same but for what names the kernel (see :func:`spec_fingerprint`) and
the image's tag still names the image the container runs.

Labels cannot change after creation, so a handed-over container keeps the pool's kernel id in its
labels; the kernel it serves is named by a claim record in its private directory, which recovery
reads after a server restart (recovery.py). Pool containers nobody claimed are removed at server
stop, and by recovery when their server died.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fnmatch
import hashlib
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from traitlets import Float, Int, List, Unicode
from traitlets.config import LoggingConfigurable

from ..backends.backend import ContainerBackend
from ..base import labels as L
from ..base.errors import ContainerExited, ContainerKernelError, ImageNotKernelReady, LaunchTimeout
from ..base.records import KERNEL_DIR_IN_CONTAINER, ContainerSpec
from ..base.safefiles import read_json_nofollow, write_json_atomic
from ..gpus.allocator import GPURequest
from ..gpus.inventory import GPUInventory
from ..host.privatedirs import discard_private_dir
from .handshake import ask_kernel
from .kernelspecs import PROVISIONER_NAME, ContainerKernelSpecManager

# The claim record of a handed-over container, in its private directory.
CLAIM_FILE_NAME = "claim.json"

# Labels that name one kernel (or one pool container), not how its container is made.
_NAMING_LABELS = frozenset(
    {L.KERNEL_ID, L.KERNEL_NAME, L.NOTEBOOK, L.CWD, L.CONNECTION_DIR, L.POOL}
)

# After a failed start, an image is tried again this much later (doubling, up to the maximum).
_RETRY_AFTER = 60.0
_RETRY_AFTER_MAX = 900.0


@dataclass(frozen=True)
class PoolEntry:
    """One warm container, running its kernel, ready to be handed over."""

    pool_kernel_id: str
    ref: str
    kernel_name: str
    image_id: str
    fingerprint: str
    container_id: str
    connection_dir: str
    # The server's view of the kernel's connection (key, transport, address, ports).
    connection_info: KernelConnectionInfo
    # The pool kernel manager's connection file in the server's runtime directory.
    connection_file: str
    # The kernel's working directory in the container, where it started.
    working_dir: str


@dataclass(frozen=True)
class Target:
    ref: str
    kernel_name: str
    image_id: str


# Starts one warm container for a target, as the pool with this id, and describes it.
StartContainer = Callable[[Target, str], Awaitable[PoolEntry]]


def spec_fingerprint(spec: ContainerSpec) -> str:
    """What makes two kernel containers interchangeable: their whole ContainerSpec (image,
    command, user, environment, mounts, limits, hardening, network, runtime, labels…) except
    what names one kernel: container name, kernel id and name, notebook, working directory,
    JPY_SESSION_NAME, the private directory's host path (also in the paths of the files mounted
    from it: the kernel's account files, the same for the same user and image), and the published
    port numbers."""
    fields = dataclasses.asdict(spec)
    fields["name"] = fields["working_dir"] = None
    fields["labels"] = {k: v for k, v in spec.labels.items() if k not in _NAMING_LABELS}
    fields["environment"] = {k: v for k, v in spec.environment.items() if k != "JPY_SESSION_NAME"}
    private = next((m.source for m in spec.mounts if m.target == KERNEL_DIR_IN_CONTAINER), None)

    def source(path: str) -> str:
        if private is not None and (path == private or path.startswith(private + os.sep)):
            return path[len(private) :]
        return path

    fields["mounts"] = [[source(m.source), m.target, m.read_only] for m in spec.mounts]
    fields["port_bindings"] = sorted(address for address, _ in spec.port_bindings.values())
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# Runs in the warm kernel at handover. What a container started for this notebook has from its
# start, and a warm one must be given: the working directory (and PWD, which the kernel
# command's shell exported), IPython's directory history (_dh), JPY_SESSION_NAME, and
# __session__ where this ipykernel sets it from JPY_SESSION_NAME at start (recent ones do, older
# ones such as 6.17 do not). sys.path needs nothing: the kernel's start (command.KERNEL_BOOT)
# puts no directory there, and the "" IPython adds is the working directory wherever it is. Nothing
# is left in the user's namespace, and a silent request leaves no history and no execution count.
_HANDOVER = """\
def __jgc_hand_over(cwd, start, session):
    import os, sys
    shell = get_ipython()
    os.chdir(cwd)
    if os.environ.get("PWD") == start:
        os.environ["PWD"] = cwd
    history = getattr(getattr(shell, "history_manager", None), "dir_hist", None)
    if history:
        history[:] = [type(history[0])(cwd)]
    if not session:
        return
    os.environ["JPY_SESSION_NAME"] = session
    kernel = getattr(shell, "kernel", None)
    for cls in (*type(kernel).__mro__, *type(getattr(kernel, "parent", None)).__mro__):
        if cls.__module__.split(".")[0] != "ipykernel":
            continue
        path = getattr(sys.modules.get(cls.__module__), "__file__", None) or ""
        try:
            with open(path, encoding="utf-8") as f:
                if "JPY_SESSION_NAME" in f.read():
                    shell.user_ns["__session__"] = session
                    return
        except OSError:
            pass
__jgc_hand_over({cwd!r}, {start!r}, {session!r})
del __jgc_hand_over
"""


def handover_code(cwd: str, start: str, session: str) -> str:
    """The code that makes a warm kernel (started in ``start``) look started for a notebook:
    working directory ``cwd``, session ``session`` ("" for none); paths as the container sees
    them."""
    return _HANDOVER.format(cwd=cwd, start=start, session=session)


def write_claim(connection_dir: str, record: dict[str, str]) -> None:
    """Write the claim record into a handed-over container's private directory (atomically:
    recovery never reads half a record; and never through a link the kernel planted there).
    Blocking: a worker thread."""
    write_json_atomic(connection_dir, CLAIM_FILE_NAME, record)


def read_claim(connection_dir: str) -> dict[str, str] | None:
    """The claim record in ``connection_dir`` (one of this server's private directories), or
    None when there is none or it is not a plain JSON object of strings. Blocking: a worker
    thread."""
    try:
        record = read_json_nofollow(os.path.join(connection_dir, CLAIM_FILE_NAME))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in record.items()
    ):
        return None
    return record


def _claim(entry: PoolEntry, record: dict[str, str]) -> None:
    """Write the claim record; the pool's own kernel manager's connection file is not needed
    any more (the kernel's is). Blocking: a worker thread."""
    write_claim(entry.connection_dir, record)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(entry.connection_file)


def _remove_entry_files(entry: PoolEntry) -> None:
    discard_private_dir(entry.connection_dir)  # its tmpfs too, when it has one
    with contextlib.suppress(FileNotFoundError):
        os.unlink(entry.connection_file)


class WarmPool(LoggingConfigurable):
    """Kernel containers kept running ahead of demand, for kernels that get no GPUs."""

    size = Int(
        0,
        config=True,
        help="""Warm kernel containers kept ready per image (0, the default: no warm pool). A
        kernel start of that image that gets no GPUs takes one and answers within milliseconds
        instead of starting a container (create, start, ipykernel boot); the pool then starts
        another in the background. Each warm container is a running, idle kernel (its memory, a
        few tens of MB for a plain ipykernel, more for images whose entrypoint starts services)
        of this server: its user, workspace and container options. CPU only: a kernel that gets
        GPUs, or whose kernel spec sets other container options, starts its own container.""",
    )

    images = List(
        Unicode(),
        ["*"],
        config=True,
        help="""Glob patterns of the image references to keep warm, matched against the images
        offered as kernels, e.g. ["jupyter/scipy-notebook:*", "jgc/*"]. Earlier patterns get
        their containers first when max_total is reached (then by reference). Images whose
        kernels get a GPU by default on this host (GPU builds, where there are GPUs) are
        skipped: their kernels never take a warm container. Default: every image offered as a
        kernel (up to max_total containers).""",
    )

    max_total = Int(
        4,
        config=True,
        help="""At most this many warm containers in all, over every image.""",
    )

    handover_timeout = Float(
        5.0,
        config=True,
        help="""Seconds a warm kernel has to answer its handover. One that does not (or whose
        container has ended) is removed, and the kernel starts in a new container.""",
    )

    check_interval = Float(
        30.0,
        config=True,
        help="""Seconds between checks that the warm containers still run and still hold the
        image their tag names (a pull or tag since replaces them). Each handover checks its own
        container anyway; this bounds how long a broken one holds its place.""",
    )

    def __init__(
        self,
        *,
        backend: ContainerBackend,
        inventory: GPUInventory,
        kernel_spec_manager: Any,
        start_container: StartContainer,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # The server's (services.py), and how a warm container is started: the app's factory,
        # which starts it as a kernel of that image without GPUs would be (app.py).
        self.backend = backend
        self._inventory = inventory
        self._ksm = kernel_spec_manager
        self._start_container = start_container
        # Written as the POOL label of this pool's containers: tells them from other servers'.
        self.pool_id = uuid.uuid4().hex
        self._ready: dict[str, list[PoolEntry]] = {}
        self._handed_over: set[str] = set()
        # ref -> (image id, not before, next delay) after a failed start of that image.
        self._retry: dict[str, tuple[str, float, float]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Future[None] | None = None
        self._removals: set[asyncio.Future[None]] = set()
        self._running = False
        self._last_problem = ""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> bool:
        """Start filling (in the background; call on the server's event loop). False when there
        is no pool to run (size 0, or kernel specs that are not images')."""
        if self._running or self.size <= 0:
            return False
        if not isinstance(self._ksm, ContainerKernelSpecManager):
            self.log.warning(
                "Warm pool: WarmPool.size is %d, but the server's kernel specs are not "
                "ContainerKernelSpecManager's, so no image is kept warm.",
                self.size,
            )
            return False
        self._running = True
        self._task = asyncio.ensure_future(self._fill_loop())
        self.log.info(
            "Warm pool: keeping %d container(s) per image ready for kernels without GPUs "
            "(images %s, at most %d in all).",
            self.size,
            ", ".join(self.images) or "none",
            self.max_total,
        )
        return True

    async def stop(self) -> None:
        """Stop filling and remove every warm container nobody claimed."""
        self._running = False
        task, self._task = self._task, None
        if task is not None:
            task.cancel()  # a start in progress removes its own container
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for entries in self._ready.values():
            for entry in entries:
                self.discard(entry)
        self._ready.clear()
        if self._removals:
            await asyncio.gather(*list(self._removals), return_exceptions=True)
        # Anything of this pool still there that no kernel holds (a start cut short).
        with contextlib.suppress(ContainerKernelError):
            for record in await self.backend.list_containers({L.POOL: self.pool_id}):
                if record.id not in self._handed_over:
                    await self.backend.remove_or_defer(record.id)

    # ------------------------------------------------------------------ handover

    def has_ready(self, ref: str) -> bool:
        return self._running and bool(self._ready.get(ref))

    def take(self, ref: str, image_id: str, fingerprint: str) -> PoolEntry | None:
        """A warm container of ``ref`` whose image is ``image_id`` (the tag's image now) and whose
        spec has ``fingerprint``; it is the caller's from now on (hand it over, or discard it).
        Containers of an image the tag no longer names are removed on the way."""
        entries = self._ready.get(ref) or []
        for entry in list(entries):
            if entry.image_id != image_id:
                entries.remove(entry)
                self.log.info(
                    "Warm pool: removing container %s: it runs image %s, but %s is now %s.",
                    entry.container_id[:12],
                    entry.image_id[:19],
                    ref,
                    image_id[:19],
                )
                self.discard(entry)
        for entry in entries:
            if entry.fingerprint == fingerprint:
                entries.remove(entry)
                return entry
        return None

    async def hand_over(self, entry: PoolEntry, spec: ContainerSpec, kernel_id: str) -> bool:
        """Make the warm kernel of ``entry`` the kernel ``kernel_id``, whose own container would
        be ``spec``: move it to the notebook's directory and session (what that container would
        have had from its start), and write the claim record that names the kernel it now serves
        (its labels name the pool's kernel for good). False when it fails: the container is
        then discarded, and the launch starts its own (the pool never fails a launch)."""
        code = handover_code(
            cwd=spec.working_dir or KERNEL_DIR_IN_CONTAINER,
            start=entry.working_dir,
            session=spec.environment.get("JPY_SESSION_NAME", ""),
        )
        record = {
            "kernel_id": kernel_id,
            "kernel_name": spec.labels.get(L.KERNEL_NAME, ""),
            "notebook": spec.labels.get(L.NOTEBOOK, ""),
            "cwd": spec.labels.get(L.CWD, ""),
            "claimed_at": datetime.now(timezone.utc).isoformat(),
        }
        try:
            reply = await self._execute_silently(entry, code)
            if reply.get("status") != "ok":
                raise ContainerKernelError(
                    f"its kernel answered {reply.get('ename', 'an error')}: "
                    f"{reply.get('evalue', '')}"
                )
            # Off the event loop, like every file operation of a launch.
            await asyncio.to_thread(_claim, entry, record)
        except Exception as e:
            self.log.warning(
                "Kernel %s starts in a new container: the warm container %s (%s) failed the "
                "handover, and is removed: %s",
                kernel_id,
                entry.container_id[:12],
                entry.ref,
                e,
            )
            self.discard(entry)
            return False
        except BaseException:  # cancelled: the container was never this kernel's
            self.discard(entry)
            raise
        self._handed_over.add(entry.container_id)
        self._wake.set()  # start its replacement
        return True

    async def _execute_silently(self, entry: PoolEntry, code: str) -> dict[str, Any]:
        """Run ``code`` in the warm kernel as a silent execute_request (no history, no execution
        count, no output to anyone) and return its execute_reply's content. The reply is also the
        liveness check: a container that ended, or a kernel that does not answer within
        handover_timeout, fails the handover."""
        content = {
            "code": code,
            "silent": True,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": False,
        }

        async def ended(_state: Any) -> None:
            raise ContainerExited("its container is no longer running")

        async def late() -> None:
            raise LaunchTimeout(f"its kernel did not answer within {self.handover_timeout:.1f} s")

        return await ask_kernel(
            self.backend,
            entry.connection_info,
            entry.container_id,
            "execute_request",
            content,
            time.monotonic() + self.handover_timeout,
            ended,
            late,
        )

    def discard(self, entry: PoolEntry) -> None:
        """Remove ``entry``'s container and files in the background, and start a replacement."""
        task = asyncio.ensure_future(self._remove(entry))
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)
        self._wake.set()

    async def _remove(self, entry: PoolEntry) -> None:
        try:
            await self.backend.remove_or_defer(entry.container_id)
        except ContainerKernelError as e:
            self.log.warning(
                "Warm pool: could not remove container %s: %s", entry.container_id[:12], e
            )
        await asyncio.to_thread(_remove_entry_files, entry)

    # ------------------------------------------------------------------ filling

    async def _fill_loop(self) -> None:
        while self._running:
            self._wake.clear()
            try:
                await self._fill()
                self._last_problem = ""
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the engine away, say: try again at the next check
                if str(e) != self._last_problem:
                    self.log.warning("Warm pool: %s", e)
                self._last_problem = str(e)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.check_interval)

    async def _fill(self) -> None:
        targets = await self._targets()
        await self._prune(targets)
        total = sum(len(entries) for entries in self._ready.values())
        for target in targets:
            entries = self._ready.setdefault(target.ref, [])
            while self._running and len(entries) < self.size and total < self.max_total:
                image_id, not_before, delay = self._retry.get(
                    target.ref, (target.image_id, 0.0, _RETRY_AFTER)
                )
                if image_id == target.image_id and time.monotonic() < not_before:
                    break
                try:
                    entry = await self._start_container(target, self.pool_id)
                except ContainerKernelError as e:
                    # An image that cannot run a kernel is tried again only once its tag names
                    # another image; other failures (the engine away, say) after a while.
                    wait = float("inf") if isinstance(e, ImageNotKernelReady) else delay
                    self._retry[target.ref] = (
                        target.image_id,
                        time.monotonic() + wait,
                        min(delay * 2, _RETRY_AFTER_MAX),
                    )
                    self.log.warning("Warm pool: no warm container for %s: %s", target.ref, e)
                    break
                self._retry.pop(target.ref, None)
                entries.append(entry)
                total += 1

    async def _targets(self) -> list[Target]:
        """The images to keep warm, in order of preference."""
        if self.size <= 0 or self.max_total <= 0 or not self.images:
            return []
        inventory = await self._inventory.read()
        gpus_by_default = bool(inventory.allocatable()) or inventory.failed
        # Kernel spec lookups read kernel spec directories: off the event loop.
        return await asyncio.to_thread(self._ranked_targets, gpus_by_default)

    def _ranked_targets(self, gpus_by_default: bool) -> list[Target]:
        ksm = self._ksm
        if not isinstance(ksm, ContainerKernelSpecManager):
            return []
        ranked = []
        for name, (ref, image) in ksm.image_entries().items():
            rank = next(
                (i for i, pattern in enumerate(self.images) if fnmatch.fnmatchcase(ref, pattern)),
                None,
            )
            if rank is None:
                continue
            try:
                provisioner = ksm.get_kernel_spec(name).metadata.get("kernel_provisioner", {})
                if provisioner.get("provisioner_name") != PROVISIONER_NAME:
                    continue
                default = GPURequest.parse(provisioner.get("config", {}).get("gpus"))
            except Exception:  # a spec gone since the listing, or one with a bad default
                continue
            if default.wants_gpus and gpus_by_default:
                continue  # its kernels get GPUs, so they never take a warm container
            ranked.append((rank, ref, name, image.id))
        return [Target(ref, name, image_id) for _, ref, name, image_id in sorted(ranked)]

    async def _prune(self, targets: list[Target]) -> None:
        """Remove warm containers that ended, run an image their tag no longer names, or belong
        to an image no longer kept warm."""
        wanted = {t.ref: t.image_id for t in targets}
        for ref in list(self._retry):
            if ref not in wanted:
                del self._retry[ref]
        if not any(self._ready.values()):
            return
        running = {
            record.id
            for record in await self.backend.list_containers({L.POOL: self.pool_id})
            if record.status == "running"
        }
        for ref, entries in self._ready.items():
            for entry in list(entries):
                if entry.container_id in running and wanted.get(ref) == entry.image_id:
                    continue
                entries.remove(entry)
                self.log.info(
                    "Warm pool: removing container %s of %s (%s).",
                    entry.container_id[:12],
                    ref,
                    "it no longer runs"
                    if entry.container_id not in running
                    else "its image changed"
                    if ref in wanted
                    else "the image is no longer kept warm",
                )
                self.discard(entry)
