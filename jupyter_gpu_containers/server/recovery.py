"""After a server restart (or a ``kill -9``): reattach to our live kernels, sweep the orphans.

Rebuilt from container labels alone (DESIGN decision 1). For each container carrying our label:

- same server id as this server (which has just started, so the previous holder of the id is
  dead), container running, private directory intact: reattach it as a running kernel (its id,
  notebook and GPUs unchanged); not running or directory gone: remove it;
- another server id that a live server holds (hoststate.py), or whose creating process still
  runs: not ours to touch;
- another server id, dead by both counts: remove the container. With a host state directory that
  cannot be used (hoststate.py), only this user's own containers are judged so: another user's
  server could be alive in a directory this one cannot see.

A label never names what to read or delete: the private directory a label names is used only if
it is one of this server's own (privatedirs.py).

A container started from another host (an engine reached over TCP) cannot be judged: left alone.

Warm-pool containers (label POOL, see warmpool.py) keep the pool's kernel id in their labels for
good; one handed over to a kernel has a claim record in its private directory, and is judged as
that kernel's container (its id, kernel spec, notebook and directory). One nobody claimed serves
no kernel: it is removed where a kernel's would be reattached, and like any orphan otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jupyter_client.kernelspec import KernelSpec, NoSuchKernel

from ..base import labels as L
from ..base.errors import ContainerKernelError, ValueRefused
from ..base.records import ContainerRecord
from ..base.safefiles import read_json_nofollow
from ..host.identity import UserDirectory
from ..host.privatedirs import (
    connection_root,
    own_private_dir,
    read_connection_file,
    remove_private_dir,
)
from ..images.environment import BadPin, check_pin
from ..kernel.kernelspecs import PROVISIONER_NAME, kernel_spec_dict
from ..kernel.provisioner import ContainerProvisioner
from ..kernel.warmpool import read_claim
from ..placement.placement import private_root_traversable
from ..policy.checks import check_kernel_id, check_labels, inside
from ..services import Services
from .kernelmanager import GPUContainersKernelManager
from .recovery_progress import RecoveryProgress


@dataclass
class RecoveryReport:
    reattached: list[str]
    removed: list[str]
    left_alone: list[str]
    # kernel id -> the notebook (API path) a reattached kernel served, as its labels say
    notebooks: dict[str, str] = dataclasses.field(default_factory=dict)


# How many kernels recovery handles at once. Each one's reads (its pod's Secret, its private
# directory, the account database) wait on the engine or a worker thread: one kernel at a time,
# those waits add up; a few at a time, they pass while another kernel is being adopted. (In the
# order of RecoveryProgress's queue: the kernels somebody asks about first.)
RECOVERY_CONCURRENCY = 8


# The collector's third threshold while recovery runs: never reached, so no full pass.
FULL_PASSES_DEFERRED = 1_000_000_000


@contextlib.contextmanager
def full_passes_deferred() -> Iterator[None]:
    """No full pass of the garbage collector inside; one on the way out. Recovery adopts kernels
    by the hundred, and each quarter of growth of the heap set off a full pass over all of it:
    eight passes in a takeover of 1,000 kernel pods, 1.1 s of its 8 s (benchmarks, section 15),
    every request waiting on each. The one pass at the end counts the heap as it is then: the
    next waits for another quarter of growth, not the first minutes of users' requests."""
    thresholds = gc.get_threshold()
    gc.set_threshold(thresholds[0], thresholds[1], FULL_PASSES_DEFERRED)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.collect()


async def restore_sessions(session_manager: Any, notebooks: dict[str, str], log: Any) -> int:
    """Give each reattached kernel its notebook's session again, as the dead server had it, so
    that the notebook reopened (JupyterLab looks its session up by path) joins its running
    kernel, with its state, instead of starting a second one beside it. A notebook that has a
    session already keeps it. Returns how many were restored."""
    restored = 0
    for kernel_id, path in notebooks.items():
        # create_session would start a kernel of that id if it were gone: only a running one.
        if kernel_id not in session_manager.kernel_manager:
            continue
        try:
            if await session_manager.session_exists(path=path):
                continue
            await session_manager.create_session(
                path=path, name=os.path.basename(path), type="notebook", kernel_id=kernel_id
            )
        except Exception as e:  # the kernel runs on all the same: its notebook starts another
            log.warning("The session of %s (kernel %s) was not restored: %s", path, kernel_id, e)
            continue
        log.info("Kernel %s serves %s again (its session is restored).", kernel_id, path)
        restored += 1
    return restored


def notebook_of(labels: dict[str, str], root_dir: str) -> str:
    """The notebook a kernel's labels name (an API path under ``root_dir``), or "" when they
    name none, or one that is not a notebook inside the workspace. Blocking (realpath)."""
    notebook = labels.get(L.NOTEBOOK, "")
    if not notebook.endswith(".ipynb") or notebook.startswith("/"):
        return ""
    root = os.path.realpath(root_dir)
    return notebook if inside(os.path.join(root, notebook), root) else ""


async def recover(
    services: Services,
    mkm: Any,
    mode: str,
    log: Any,
    directory: UserDirectory | None = None,
    progress: RecoveryProgress | None = None,
) -> RecoveryReport:
    """Reattach (mode "reattach") or remove (mode "sweep") what dead servers left behind.
    ``mkm``: the server's kernel manager; kernels are reattached only when it can adopt them
    (kernelmanager.py), else removed like any other. ``directory``: a kernel service's users
    (identity.py): each kernel comes back as its user's, or not at all. ``progress``: told what
    was listed and each record as it is judged, and takes the records somebody waits on first
    (recovery_progress.py); the caller finishes it."""
    engine = services.backend
    policy = services.policy
    server_id = await asyncio.to_thread(services.server_id, mkm.root_dir)
    state = services.state
    root = await asyncio.to_thread(
        connection_root,
        policy.connection_dir_root,
        private_root_traversable(services.placement),
    )
    if mode == "reattach" and not isinstance(mkm, GPUContainersKernelManager):
        log.warning(
            "Kernel containers of this server are not reattached: the server's kernel manager "
            "(%s) cannot adopt running kernels. They are removed instead.",
            type(mkm).__name__,
        )
        mode = "sweep"
    me = L.OwnerProcess.current()
    report = RecoveryReport([], [], [])
    newest: dict[str, tuple[float, str]] = {}  # notebook -> (created, kernel id)
    # Each kernel name's spec, looked up once: a lookup searches every kernel directory (1 ms),
    # and a replica taking over a cluster's namespace adopts a thousand kernels of a few specs.
    specs: dict[str, KernelSpec | None] = {}
    adopting: set[str] = set()  # kernel ids being reattached (by one record each)

    async def recover_one(record: ContainerRecord) -> None:
        claimed = None
        if L.POOL in record.labels:
            claimed = await asyncio.to_thread(as_claimed, record, mkm.root_dir, root)
            record = claimed or record
        if record.labels.get(L.KERNEL_ID) in mkm:
            return  # already ours in this process
        action = await asyncio.to_thread(
            services.placement.left_behind, record, server_id, state, me, root
        )
        if action == "reattach" and L.POOL in record.labels and claimed is None:
            action = "remove"  # a warm container of our previous process that no kernel took
        if action == "reattach" and mode == "reattach":
            kernel_id = record.labels.get(L.KERNEL_ID, "")
            if kernel_id in adopting or kernel_id in mkm:
                return  # another record of that kernel is being reattached
            adopting.add(kernel_id)
            try:
                # A pod's kernel listens on the pod's own address, not on this host's.
                address = await services.placement.address(record.id)
                info = await engine.connection_info(record.id) if address else None
                await _reattach(mkm, record, root, log, directory, address, info, specs)
                report.reattached.append(record.labels[L.KERNEL_ID])
                await _keep_gpus(services, record, log)
                if directory is None:  # a service's users' sessions are their servers'
                    notebook = await asyncio.to_thread(notebook_of, record.labels, mkm.root_dir)
                    # Two kernels of one notebook (the older one left running by a change of
                    # kernel): the newer one was the notebook's.
                    if notebook and newest.get(notebook, (-1.0, ""))[0] < record.created:
                        newest[notebook] = (record.created, record.labels[L.KERNEL_ID])
                return
            except Exception as e:  # a kernel we cannot adopt is removed, never left orphaned
                log.warning(
                    "Could not reattach kernel %s (container %s): %s; removing it.",
                    record.labels.get(L.KERNEL_ID),
                    record.id[:12],
                    e,
                )
            action = "remove"
        if action in ("remove", "reattach"):
            await engine.remove(record.id)
            await asyncio.to_thread(
                remove_private_dir, root, record.labels.get(L.CONNECTION_DIR, "")
            )
            # A dead server that shared our runtime directory (this very server, before a crash)
            # left the kernel's connection file there too.
            await asyncio.to_thread(
                _remove_connection_file, mkm.connection_dir, record.labels.get(L.KERNEL_ID, "")
            )
            report.removed.append(record.labels.get(L.KERNEL_ID, record.id))
        else:
            report.left_alone.append(record.labels.get(L.KERNEL_ID, record.id))

    failures: list[Exception] = []
    queue = RecoveryProgress() if progress is None else progress

    async def worker() -> None:
        while (record := queue.next()) is not None:
            try:
                await recover_one(record)
            except Exception as e:  # the others' work goes on; recovery fails at its end
                failures.append(e)
            finally:
                queue.judged(record)

    queue.listed(await engine.list_containers({L.MANAGED: "true"}))
    # Every record's work ends before recovery does, even when one's fails.
    await asyncio.gather(*(worker() for _ in range(RECOVERY_CONCURRENCY)))
    if failures:
        raise failures[0]
    report.notebooks = {kernel_id: notebook for notebook, (_, kernel_id) in newest.items()}
    # Readiness probes remove their container when they end; a server killed mid-probe cannot.
    for record in await engine.list_containers({L.PROBE: "true"}):
        owner = L.OwnerProcess.parse(record.labels.get(L.OWNER_PROCESS, ""))
        if owner is not None and not owner.is_alive():
            await engine.remove(record.id)
            report.removed.append(record.id)
    return report


def as_claimed(record: ContainerRecord, root_dir: str, private_root: str) -> ContainerRecord | None:
    """A handed-over warm container as the record of the kernel that claimed it: its labels with
    the claim record's kernel id, kernel spec, notebook and directory. None when its private
    directory is not one of this server's, when it has no claim record, or one that could not
    have been written by a handover (an id that is not a kernel id, a notebook or directory
    outside the workspace). Blocking: a worker thread."""
    private = own_private_dir(private_root, record.labels.get(L.CONNECTION_DIR, ""))
    claim = read_claim(private) if private else None
    if claim is None:
        return None
    root = os.path.realpath(root_dir)
    notebook, cwd = claim.get("notebook", ""), claim.get("cwd", "")
    try:
        check_kernel_id(claim.get("kernel_id"))
        overlay = check_labels(
            {
                L.KERNEL_ID: claim["kernel_id"],
                L.KERNEL_NAME: claim.get("kernel_name", ""),
                L.NOTEBOOK: notebook,
                L.CWD: cwd,
            }
        )
    except ValueRefused:
        return None
    if notebook and (notebook.startswith("/") or not inside(os.path.join(root, notebook), root)):
        return None
    if cwd and not inside(cwd, root):
        return None
    return dataclasses.replace(record, labels={**record.labels, **overlay})


def _channel_keys(service_file: str) -> dict[str, Any]:
    """The signing key and the CurveZMQ keypair of a relayed kernel (a Slurm job's), from the
    connection file this server wrote for it (its own directory; never the kernel's private
    directory, which the kernel's user writes). Blocking: a worker thread."""
    try:
        found = read_json_nofollow(service_file)
    except (OSError, ValueError):
        found = None
    names = ("key", "signature_scheme", "curve_publickey", "curve_secretkey")
    if not isinstance(found, dict) or not all(isinstance(found.get(n), str) for n in names):
        raise ValueRefused("this server's connection file for it, with its keys, is gone")
    return {name: found[name] for name in names}


def _remove_connection_file(connection_dir: str, kernel_id: str) -> None:
    """Remove ``kernel-<id>.json`` from this server's connection directory. The id comes from a
    label: only what may be a kernel id (check_kernel_id, as at launch) names a file."""
    try:
        check_kernel_id(kernel_id)
    except ValueRefused:
        return
    if connection_dir:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(connection_dir, f"kernel-{kernel_id}.json"))


def _restart_args(labels: dict[str, str], workspace: str) -> dict[str, Any]:
    """What a reattached kernel's restart re-uses: its notebook's directory and session name,
    as its labels say, when they lie inside the workspace. Blocking (realpath): a worker
    thread."""
    notebook = labels.get(L.NOTEBOOK, "")
    session = os.path.join(workspace, notebook) if notebook else ""
    env = {"JPY_SESSION_NAME": session} if session and inside(session, workspace) else {}
    cwd = labels.get(L.CWD, "")
    return {"cwd": cwd if cwd and inside(cwd, workspace) else workspace, "env": env}


async def _keep_gpus(services: Services, record: ContainerRecord, log: Any) -> None:
    """A reattached kernel keeps its GPUs in the ledger: a kernel from before holder records
    gets its record now (GPUAllocator.adopt_holding). Not fatal: the kernel runs either way."""
    try:
        recorded = await services.allocator.adopt_holding(
            state=services.state, backend=services.backend, record=record
        )
    except (ContainerKernelError, OSError) as e:
        log.warning(
            "Kernel %s keeps running, but its GPUs could not be recorded as its (%s): another "
            "kernel may be given them until it ends.",
            record.labels.get(L.KERNEL_ID),
            e,
        )
        return
    if recorded:
        log.info(
            "Kernel %s was started before GPU holder records: its GPUs (%s) are recorded now.",
            record.labels.get(L.KERNEL_ID),
            ", ".join(recorded),
        )


async def _reattach(
    mkm: GPUContainersKernelManager,
    record: ContainerRecord,
    root: str,
    log: Any,
    directory: UserDirectory | None = None,
    address: str = "",
    pod_info: dict[str, Any] | None = None,
    specs: dict[str, KernelSpec | None] | None = None,
) -> None:
    labels = record.labels
    owner = None
    workspace = mkm.root_dir
    if directory is not None:
        # A service's kernel: its user as the account database says now, and only if that is
        # the uid the kernel ran as (the label was written by this service, at the launch).
        owner = await asyncio.to_thread(directory.resolve, labels.get(L.USER, ""))
        if str(owner.uid) != labels.get(L.UID, ""):
            raise ValueRefused(
                f"its user {owner.username!r} is uid {owner.uid} now, not the kernel's"
            )
        workspace = owner.workspace
    kernel_id = check_kernel_id(labels[L.KERNEL_ID])
    kernel_name = labels.get(L.KERNEL_NAME, "")
    conn_dir = await asyncio.to_thread(own_private_dir, root, labels[L.CONNECTION_DIR])
    if pod_info is not None:
        # A pod's connection is its Secret's (the backend checked that the pod owns it): a
        # service in a new pod of its own has none of its predecessor's private directories.
        info = dict(pod_info)
        if "key" not in info:
            # A job's kernel: its relay wrote its ports back, nothing else (relay_files.py).
            # Its key and its channels' keypair are in the connection file this server wrote.
            service_file = os.path.join(mkm.connection_dir, f"kernel-{kernel_id}.json")
            info.update(await asyncio.to_thread(_channel_keys, service_file))
    elif conn_dir is None:
        raise ValueRefused("its private directory is not one of this server's")
    else:
        # Written by the kernel's own container as much as by us: read without following a
        # link, and only as far as it agrees with what this server wrote on the container.
        info = await asyncio.to_thread(read_connection_file, conn_dir)
    if info.get("transport") != labels.get(L.TRANSPORT, "ipc"):
        raise ValueRefused("its connection file does not match its container")
    # The file holds the container's view; the host's differs only in where it connects.
    if info["transport"] == "ipc":
        if conn_dir is None:
            raise ValueRefused("its ipc sockets are in no private directory of this server's")
        info["ip"] = os.path.join(conn_dir, "kernel-ipc")
    else:
        info["ip"] = address or "127.0.0.1"

    km = mkm.kernel_manager_factory(
        connection_file=os.path.join(mkm.connection_dir, f"kernel-{kernel_id}.json"),
        parent=mkm,
        log=mkm.log,
        kernel_name=kernel_name,
    )
    km.kernel_id = kernel_id
    km.load_connection_info(info)
    await asyncio.to_thread(km.write_connection_file)
    specs = {} if specs is None else specs
    if kernel_name not in specs:
        try:
            specs[kernel_name] = km.kernel_spec
        except NoSuchKernel:
            specs[kernel_name] = None
    found = specs[kernel_name]
    # The image's spec is gone (image untagged): rebuild it from the labels, so the kernel
    # still runs to its end and restarts on the same image.
    spec = found or KernelSpec(resource_dir="", **kernel_spec_dict(labels[L.IMAGE], None))
    config = dict(spec.metadata.get("kernel_provisioner", {}).get("config", {}))
    if spec.metadata.get("kernel_provisioner", {}).get("provisioner_name") != PROVISIONER_NAME:
        config = {"image": labels[L.IMAGE]}
    pinned = ""
    with contextlib.suppress(BadPin):  # (a label's word: only a digest of its own image's)
        pinned = check_pin(labels.get(L.IMAGE_PIN, ""), labels[L.IMAGE])
    provisioner = ContainerProvisioner(kernel_id=kernel_id, kernel_spec=spec, parent=km, **config)
    await provisioner.load_provisioner_info(
        {
            "kernel_id": kernel_id,
            "connection_info": km.get_connection_info(),
            "container_id": record.id,
            "connection_dir": conn_dir,
            "image": labels[L.IMAGE],
            "pinned_image": pinned,
            "transport": labels.get(L.TRANSPORT, "ipc"),
        }
    )
    provisioner.owner = owner
    # The GPUs it holds (its labels book them): a restart keeps them, and the GPU-use sampler
    # and GPUReclaim watch them, as for a kernel this process launched.
    provisioner.gpu_uuids = tuple(u for u in labels.get(L.GPUS, "").split(",") if u)
    km.provisioner = provisioner
    launch_args = await asyncio.to_thread(_restart_args, labels, workspace)
    await mkm.adopt(km, kernel_id, launch_args, spec)
    log.info(
        "Reattached kernel %s (%s) in container %s", kernel_id, labels[L.IMAGE], record.id[:12]
    )
