"""A jupyter_client kernel provisioner that runs each kernel in a Docker container.

Lifecycle (jupyter_client's KernelProvisionerBase contract):

- ``pre_launch``: a private 0700 directory for the kernel, its connection info (host view for the
  server, container view written into the directory), and the container command.
- ``launch_kernel``: one create-and-start call, then wait until the kernel answers a
  ``kernel_info_request``, the container ends (reported with its log tail), or the launch timeout
  passes. Launch returns only with a kernel that answers, so a broken image fails in seconds with
  its reason instead of sitting in "starting" while the restarter retries it.
- ``poll``/``wait``/``send_signal``/``terminate``/``kill``: through the engine (signals reach the
  kernel through the container's init).
- ``cleanup``: remove the container; keep the private directory across a restart (same connection
  file, same ports), remove it on shutdown.

A first launch that gets no GPUs may instead be handed a warm container from the server's pool
(warmpool.py) that was made exactly as this launch would make its own; anything amiss with it
and the launch starts its own container as above.

All Docker calls go through :class:`~.engine.Engine`, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any as AnyType

import zmq
import zmq.asyncio
from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning import KernelProvisionerBase
from jupyter_client.session import Session
from traitlets import Any, Dict, Enum, Float, Int, List, Unicode

from . import compat, privateimages
from . import labels as L
from .allocator import (
    GPUAllocator,
    GPURequest,
    GPUVisibility,
    attachment,
    current_ledger,
    resolve_attach_mode,
)
from .catalog import ImageCatalog
from .engine import ContainerSpec, Engine, ImageRecord, Mount, engine_for
from .errors import (
    ContainerExited,
    ContainerKernelError,
    EngineUnavailable,
    ImageIncompatible,
    ImageNotAllowed,
    ImageNotKernelReady,
    LaunchTimeout,
    ValueRefused,
)
from .gpus import GPU, Inventory, shared_inventory
from .launchplan import (
    KERNEL_DIR_IN_CONTAINER,
    RESERVED_ENV,
    ContainerPolicy,
    check_environment,
    check_extra_mount,
    check_image_allowed,
    check_kernel_id,
    check_labels,
    check_network_mode,
    check_run_as,
    container_path_for,
    diagnose_exit,
    effective_server_id,
    entrypoint_is_interpreter,
    kernel_command,
    kernel_limits,
    kernel_user,
    numeric_user,
    state_dir_for,
)
from .notebook_requests import NotebookRequests
from .privatedirs import (
    CONNECTION_FILE_NAME,
    connection_root,
    make_private_dir,
    remove_stale_sockets,
    write_connection_file,
)
from .probe import ProbeResult, readiness_probe
from .warmpool import (
    PoolEntry,
    handover_code,
    spec_fingerprint,
    warm_pool_for,
    write_claim,
)

# Where NVIDIA's CDI specs live when CDI is set up (nvidia-ctk cdi generate).
CDI_SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")


class ContainerProvisioner(KernelProvisionerBase):
    """Runs the kernel in a container of ``image``. Options below can be set for all kernels in
    jupyter_server_config.py (``c.ContainerProvisioner.shm_size = "8g"``) and per kernel spec
    (``metadata.kernel_provisioner.config``, or ContainerKernelSpecManager.image_overrides)."""

    image = Unicode(config=True, help="The image reference the kernel runs in.")

    transport = Enum(
        ["ipc", "tcp"],
        "ipc",
        config=True,
        help="""How the server reaches the kernel. "ipc": ZMQ Unix sockets in the kernel's private
        directory, mounted into the container: no ports at all, and works with
        network_mode "none". "tcp": ZMQ over TCP, published on 127.0.0.1 only (never on
        0.0.0.0). ipc is the default: it was measured at least as fast as tcp on these hosts (see
        the README) and exposes nothing.""",
    )

    network_mode = Unicode(
        "bridge",
        config=True,
        help="""The container's network: "bridge" (Docker's default; outbound network for pip
        and datasets), "none" (no network; needs transport "ipc"), or, where the administrator
        lists it in ContainerPolicy.allowed_network_modes, "host" or a named network.""",
    )

    workspace_mount_path = Unicode(
        "/workspace",
        config=True,
        help="""Where the server's root_dir is mounted (read-write) inside the container. The
        kernel's working directory is the notebook's directory under it.""",
    )

    run_as = Unicode(
        "server",
        config=True,
        help="""Which user the kernel runs as. "server" (default): the Jupyter server's own
        uid:gid, so files written to the workspace belong to the user. "image": the image's
        USER. Or an explicit numeric "uid:gid" ("uid" alone means "uid:uid"). Anything but
        "server" must be listed in ContainerPolicy.allowed_run_as. A kernel that would run as
        root (uid 0 or gid 0) is refused unless ContainerPolicy.allow_root is set.""",
    )

    home_path = Unicode(
        "/home/jupyter",
        config=True,
        help="""A writable HOME for kernels that run as the server's user (whose uid the image
        usually does not know): a tmpfs mounted here, and HOME, USER and LOGNAME set to match.
        Ignored when run_as is "image".""",
    )

    shm_size = Unicode(
        "1g",
        allow_none=True,
        config=True,
        help="""Size of /dev/shm. Docker's default (64m) breaks PyTorch DataLoader workers and
        NCCL; NVIDIA recommends at least 1g for its framework images. None: Docker's default.
        At most ContainerPolicy.max_shm_size.""",
    )

    ulimits = Dict(
        config=True,
        help="""Resource limits, name -> value or [soft, hard], e.g. {"memlock": -1,
        "stack": 67108864} as NVIDIA recommends for NGC images; only those
        ContainerPolicy.allowed_ulimits names, up to its values. An engine that refuses one
        (memlock=-1 in unprivileged environments) fails the launch with the engine's reason.""",
    )

    environment = Dict(
        config=True,
        help="""Extra environment variables for the kernel. The server's own environment is
        never passed into containers, only these, the kernel spec's env, and JPY_SESSION_NAME.
        Names must be portable ([A-Za-z_][A-Za-z0-9_]*), values text without NUL of at most
        ContainerPolicy.max_env_value_bytes; NVIDIA_VISIBLE_DEVICES is the GPU allocator's.""",
    )

    runtime = Unicode(
        None,
        allow_none=True,
        config=True,
        help="""The container runtime, e.g. "nvidia" for the NVIDIA runtime: one of
        ContainerPolicy.allowed_runtimes. None: the engine's default.""",
    )

    mem_limit = Unicode(
        None,
        allow_none=True,
        config=True,
        help="""Memory limit, e.g. "16g". None: ContainerPolicy.max_mem_limit (unlimited when that
        is None too). More than max_mem_limit is refused.""",
    )

    pids_limit = Int(
        4096,
        allow_none=True,
        config=True,
        help="""Maximum processes and threads in the container, so that a fork bomb in a notebook
        stops there instead of exhausting the host. Threads count: raise it for many DataLoader
        workers on hosts with many cores. None, or more than ContainerPolicy.max_pids_limit:
        that ceiling.""",
    )

    extra_labels = Dict(
        config=True,
        help="""Extra container labels. The project's own labels (org.jupyter.gpu-containers.*)
        cannot be overridden.""",
    )

    extra_mounts = List(
        Dict(),
        config=True,
        help="""Extra bind mounts: [{"source": "/raid/public/my_datasets", "target":
        "/root/dataset", "read_only": true}]. Read-only unless "read_only" is false, which only
        sources inside ContainerPolicy.writable_mount_roots may be. Each source is resolved with
        realpath and must exist and lie inside ContainerPolicy.allowed_mount_roots (or the
        workspace); each target must be a normalised absolute path that hides neither the
        workspace nor the kernel's private directory.""",
    )

    launch_timeout = Float(
        60.0,
        config=True,
        help="""Seconds from container creation until the kernel must answer. Image pulls are
        never counted: an image that is not on the host fails at once.""",
    )

    kernel_cmd = List(
        Unicode(),
        config=True,
        help="""The command run in the container (after the image's ENTRYPOINT), with
        {connection_file} replaced by the connection file's path in the container. Empty
        (default): find python3/python in the image and run ipykernel.""",
    )

    gpus = Any(
        None,
        allow_none=True,
        config=True,
        help="""The GPUs a kernel gets when its notebook asks for nothing else: a count (kernel
        specs of GPU images default to 1, CPU images to 0) or a list of GPU indexes/UUIDs. A
        notebook's own request (the /gpu-containers/notebooks endpoint) takes precedence.""",
    )

    log_tail_lines = Int(
        20, config=True, help="How many lines of the container's log a launch error quotes."
    )

    # ------------------------------------------------------------------ state

    container_id: str | None = None
    connection_dir: str | None = None
    # The GPUs (UUIDs) this kernel holds; a restart asks for exactly these again.
    gpu_uuids: tuple[str, ...] = ()
    # On restart the old container stays until the new one exists, so its GPUs stay booked.
    previous_container_id: str | None = None
    # The GPU request of this kernel's starts, resolved once (see _gpu_request).
    _requested: GPURequest | None = None
    # Whether that request is only the kernel spec's default (nobody asked for GPUs).
    _request_is_default = False
    _dead_callback_registered = False
    # When each phase of the last launch ended (time.monotonic(), in order, from "pre_launch",
    # its start): the server log reports the durations, benchmarks/ reads the stamps.
    launch_stamps: dict[str, float]
    # The container whose unexpected end was reported (see _report_death).
    _death_reported: str | None = None
    # Set on the provisioners that fill the warm pool (warmpool.py): the pool's id, written as
    # the container's POOL label. None for kernels.
    pool_id: str | None = None
    # What the last cold launch created: the container's spec and its image's id (the warm pool
    # compares a launch's own spec with those of its containers).
    container_spec: ContainerSpec | None = None
    container_image_id: str = ""
    # Only a kernel's first launch may take a warm container: a restart keeps the kernel's
    # connection (key, sockets), and a warm container has its own.
    _launched = False

    _engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = engine_for(self.parent)
        return self._engine

    @property
    def has_process(self) -> bool:
        return self.container_id is not None

    # ------------------------------------------------------------------ launch

    async def pre_launch(self, **kwargs: AnyType) -> dict[str, AnyType]:
        km = self.parent
        if km is None:
            raise ContainerKernelError("The container provisioner needs a kernel manager.")
        self.launch_stamps = {"pre_launch": time.monotonic()}
        policy = ContainerPolicy(parent=km)
        try:
            # Before anything is written: the kernel id names the connection file and the
            # private directory, and a client may choose it (POST /api/kernels "kernel_id").
            check_kernel_id(self.kernel_id)
            check_run_as(policy, self.run_as, os.getuid(), os.getgid())
            check_network_mode(policy, self.network_mode)
            if self.transport == "tcp" and self.network_mode == "none":
                raise ContainerKernelError(
                    "The tcp transport needs a network, but network_mode is 'none'. Use the ipc "
                    "transport (the default) for kernels without a network."
                )
        except ContainerKernelError:
            self._forget_pending()
            raise
        env = kwargs.get("env") or {}
        # Off the event loop: on a host busy creating containers, a file system operation can
        # wait tens of ms for the disk (tests/test_faults.py samples the loop's stalls).
        await asyncio.to_thread(self._prepare_files, policy, env.get("JPY_SESSION_NAME", ""))

        container_file = f"{KERNEL_DIR_IN_CONTAINER}/{CONNECTION_FILE_NAME}"
        kwargs = await super().pre_launch(
            cmd=kernel_command(self.kernel_cmd, container_file), **kwargs
        )
        kwargs["policy"] = policy
        self._stamp("prepare")
        return kwargs

    def _stamp(self, phase: str) -> None:
        stamps = getattr(self, "launch_stamps", None)
        if stamps is None:  # a launch without pre_launch (only tests do that)
            stamps = self.launch_stamps = {"pre_launch": time.monotonic()}
        stamps[phase] = time.monotonic()

    def launch_phases(self) -> dict[str, float]:
        """The last launch's phases and how long each took, in seconds, in launch order:
        prepare (checks, private directory, connection files), image (inspect, policy, probe
        cache), gpus (request, inventory, allocation under the host lock), create, start,
        ready (until the kernel answered kernel_info).

        A launch served by the warm pool: prepare, image, handover (GPU request, this launch's
        container spec, a matching warm container taken), ready (its kernel answered the
        handover request; claim record written). One whose warm container failed the handover
        has a "pool" phase (the failed attempt) before the cold path's gpus, create, start and
        ready."""
        stamps = list(getattr(self, "launch_stamps", {}).items())
        return {name: at - stamps[i][1] for i, (name, at) in enumerate(stamps[1:])}

    def _prepare_files(self, policy: ContainerPolicy, session: str) -> None:
        """The private directory and both views of the connection (blocking: a worker thread)."""
        km = self.parent
        assert km is not None  # pre_launch checked
        if self.connection_dir is None:
            root = connection_root(policy.connection_dir_root)
            self.connection_dir = make_private_dir(root, self.kernel_id, numeric_user(self.run_as))
        else:
            remove_stale_sockets(self.connection_dir)

        # The host's view of the connection, held by the kernel manager.
        if self.transport == "ipc":
            km.transport = "ipc"
            km.ip = os.path.join(self.connection_dir, "kernel-ipc")
        else:
            km.transport = "tcp"
            km.ip = "127.0.0.1"
        km.write_connection_file(jupyter_session=session)
        self.connection_info = km.get_connection_info()
        self._write_container_connection_file()

    async def launch_kernel(self, cmd: list[str], **kwargs: AnyType) -> KernelConnectionInfo:
        policy: ContainerPolicy = kwargs.pop("policy", None) or ContainerPolicy(parent=self.parent)
        started = time.monotonic()
        try:
            # Inspect first: a missing image fails at once, and pulls never count against the
            # launch timeout (they happen, if at all, before this point).
            image = await self.engine.inspect_image(self.image)
            check_image_allowed(policy, self.image, (*image.repo_digests, image.id))
            await self._refuse_if_private_to_another(image, policy)
            # The probe's cache may be read from disk: off the event loop.
            known = await asyncio.to_thread(readiness_probe(self.parent).cached, image.id)
            self._refuse_if_known_not_ready(known)
            self._stamp("image")
            request = await self._gpu_request(kwargs)
            if request.wants_gpus:
                inventory = await shared_inventory(self.parent).read()
                if (
                    not inventory.allocatable()
                    and not inventory.failed
                    and self._request_is_default
                ):
                    # Only the spec's default asked (GPU images default to one GPU): on a host
                    # without GPUs the image's CPU code still runs. An explicit request, or a
                    # GPU host whose NVML fails, still fails with the reason.
                    self.log.warning(
                        "Kernel %s (%s) starts without GPUs: %s",
                        self.kernel_id,
                        self.image,
                        inventory.reason or "this host has none.",
                    )
                    request = GPURequest.parse(0)
            if not request.wants_gpus and await self._start_from_pool(image, cmd, kwargs, policy):
                return self.connection_info
            if request.wants_gpus:
                allocator = GPUAllocator(parent=self.parent)
                self._refuse_if_incompatible(image, inventory, policy)
                mode = resolve_attach_mode(
                    allocator.attach_mode, await self.engine.runtimes(), CDI_SPEC_DIRS
                )
                state = state_dir_for(policy)
                async with state.allocation_lock(allocator.lock_timeout, self._say_waiting):
                    # Containers an outage kept this server from removing book GPUs: go first.
                    await self.engine.remove_deferred()
                    ledger = await current_ledger(self.engine, state)
                    chosen = allocator.choose(
                        inventory,
                        ledger,
                        request,
                        kernel_id=self.kernel_id,
                        uid=str(os.getuid()),
                        show_others=GPUVisibility(parent=self.parent).show_other_users,
                    )
                    for gpu in chosen:  # containers of dead servers still sitting on them
                        for garbage in ledger.garbage.get(gpu.uuid, []):
                            await self.engine.remove(garbage)
                    spec = self._container_spec(image, cmd, kwargs, policy, chosen, mode)
                    self._stamp("gpus")
                    self.container_spec, self.container_image_id = spec, image.id
                    self.container_id = await self.engine.create(spec)
            else:
                chosen = []
                spec = self._container_spec(image, cmd, kwargs, policy, [], "runtime")
                self._stamp("gpus")
                self.container_spec, self.container_image_id = spec, image.id
                self.container_id = await self.engine.create(spec)
            self._stamp("create")
            self.gpu_uuids = tuple(g.uuid for g in chosen)
            await self.engine.start(self.container_id, self.image)
            self._stamp("start")
            await self._remove_previous_container()
            await self._wait_until_ready(started)
            self._stamp("ready")
        except BaseException:
            await self._discard_after_failed_launch()
            raise
        self._launched = True
        if self.pool_id is not None:
            self.log.info(
                "Warm pool: container %s (image %s, %s) is ready after %.2f s (%s)",
                (self.container_id or "")[:12],
                self.image,
                self.transport,
                time.monotonic() - self.launch_stamps["pre_launch"],
                self._phases_text(),
            )
            return self.connection_info
        self.log.info(
            "Kernel %s answers from container %s (image %s, %s, GPUs: %s) after %.2f s (%s)",
            self.kernel_id,
            (self.container_id or "")[:12],
            self.image,
            self.transport,
            ",".join(g.uuid for g in chosen) or "none",
            time.monotonic() - self.launch_stamps["pre_launch"],
            self._phases_text(),
        )
        return self.connection_info

    def _say_waiting(self) -> None:
        self.log.info(
            "Kernel %s waits for the host-wide GPU allocation lock: another launch holds it.",
            self.kernel_id,
        )

    def _phases_text(self) -> str:
        return ", ".join(f"{name} {seconds:.3f}" for name, seconds in self.launch_phases().items())

    # ------------------------------------------------------------------ warm pool

    async def _start_from_pool(
        self,
        image: ImageRecord,
        cmd: list[str],
        kwargs: dict[str, AnyType],
        policy: ContainerPolicy,
    ) -> bool:
        """Give this launch a warm container of the server's pool, if one was made exactly as
        this launch would make its own (same image id, same container spec but for what names
        the kernel). False when the launch must start its own container: no such container, or
        the one taken failed the handover (it is discarded; the user's launch never fails
        because of the pool)."""
        if self.pool_id is not None or self._launched or self.previous_container_id:
            return False
        if self.connection_info.get("curve_publickey"):
            return False  # an encrypted connection (CurveZMQ): warm kernels have none
        pool = warm_pool_for(self.parent)
        if pool is None or not pool.has_ready(self.image):
            return False
        try:
            # What this launch would create: a warm container must have been made the same way.
            spec = self._container_spec(image, cmd, kwargs, policy, [], "runtime")
        except ContainerKernelError:
            return False  # the cold path refuses the launch with the same sentence
        entry = pool.take(self.image, image.id, spec_fingerprint(spec))
        if entry is None:
            return False
        self._stamp("handover")
        try:
            await self._hand_over(entry, spec, pool.handover_timeout)
        except Exception as e:
            self.log.warning(
                "Kernel %s starts in a new container: the warm container %s (%s) failed the "
                "handover, and is removed: %s",
                self.kernel_id,
                entry.container_id[:12],
                self.image,
                e,
            )
            pool.discard(entry)
            # The failed attempt is a phase of its own; the cold path's phases follow it.
            self.launch_stamps.pop("handover", None)
            self._stamp("pool")
            return False
        except BaseException:  # cancelled: the container was never this kernel's
            pool.discard(entry)
            raise
        self.connection_dir = entry.connection_dir
        self.connection_info = entry.connection_info.copy()
        self.container_id = entry.container_id
        self.container_spec, self.container_image_id = None, entry.image_id
        self.gpu_uuids = ()
        self._launched = True
        pool.handed_over(entry)
        self._stamp("ready")
        self.log.info(
            "Kernel %s answers from container %s (image %s, %s, GPUs: none, from the warm pool) "
            "after %.3f s (%s)",
            self.kernel_id,
            entry.container_id[:12],
            self.image,
            self.transport,
            time.monotonic() - self.launch_stamps["pre_launch"],
            self._phases_text(),
        )
        return True

    async def _hand_over(self, entry: PoolEntry, spec: ContainerSpec, timeout: float) -> None:
        """Make the warm kernel this launch's: move it to the notebook's directory and session
        (what the container would have had from its start), and write the claim record that
        names the kernel it now serves (its labels name the pool's kernel for good)."""
        code = handover_code(
            cwd=spec.working_dir or self.workspace_mount_path,
            start=entry.working_dir,
            session=spec.environment.get("JPY_SESSION_NAME", ""),
        )
        reply = await self._execute_silently(entry, code, timeout)
        if reply.get("status") != "ok":
            raise ContainerKernelError(
                f"its kernel answered {reply.get('ename', 'an error')}: {reply.get('evalue', '')}"
            )
        record = {
            "kernel_id": self.kernel_id,
            "kernel_name": spec.labels.get(L.KERNEL_NAME, ""),
            "notebook": spec.labels.get(L.NOTEBOOK, ""),
            "cwd": spec.labels.get(L.CWD, ""),
            "claimed_at": datetime.now(timezone.utc).isoformat(),
        }
        # Off the event loop, like every file operation of a launch.
        await asyncio.to_thread(self._claim, entry, record)

    def _claim(self, entry: PoolEntry, record: dict[str, str]) -> None:
        write_claim(entry.connection_dir, record)
        # What pre_launch prepared for a container of this kernel's own is not needed now.
        if self.connection_dir and self.connection_dir != entry.connection_dir:
            shutil.rmtree(self.connection_dir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.connection_file)

    async def _execute_silently(
        self, entry: PoolEntry, code: str, timeout: float
    ) -> dict[str, AnyType]:
        """Run ``code`` in the warm kernel as a silent execute_request (no history, no
        execution count, no output to anyone) and return its execute_reply's content. The reply
        is also the liveness check: a container that ended, or a kernel that does not answer
        within ``timeout`` seconds, fails the handover."""
        content = {
            "code": code,
            "silent": True,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": False,
        }

        async def ended(_state: AnyType) -> None:
            raise ContainerExited("its container is no longer running")

        async def late() -> None:
            raise LaunchTimeout(f"its kernel did not answer within {timeout:.1f} s")

        return await self._ask_kernel(
            entry.connection_info,
            entry.container_id,
            "execute_request",
            content,
            time.monotonic() + timeout,
            ended,
            late,
        )

    async def _refuse_if_private_to_another(
        self, image: ImageRecord, policy: ContainerPolicy
    ) -> None:
        """Another user pulled this image with their own registry login: not this user's to run
        (privateimages.py), unless an administrator lists it."""
        listed = [entry["image"] for entry in ImageCatalog(parent=self.parent).listed()]
        state = state_dir_for(policy)
        if not await asyncio.to_thread(privateimages.visible, [image], state, listed):
            raise ImageNotAllowed(
                f"The image {self.image} was pulled by another user with their own registry "
                "login, so it is theirs. Pull it with yours (the GPU Containers panel asks for "
                "it), or ask an administrator to list it for everyone."
            )

    def _refuse_if_known_not_ready(self, found: ProbeResult | None) -> None:
        """An image the readiness probe already found without Python or ipykernel fails at
        once, with the probe's reason, instead of after a container start."""
        if self.kernel_cmd:
            return  # an admin's own command may not need ipykernel at all
        if found is not None and found.definitive and not found.ready:
            raise ImageNotKernelReady(f"The image {self.image} cannot run a kernel: {found.reason}")

    def _refuse_if_incompatible(
        self, image: ImageRecord, inventory: Inventory, policy: ContainerPolicy
    ) -> None:
        """A kernel that asks for GPUs gets none of use from an image whose CUDA stack this
        driver cannot run: refuse with the driver it needs (CPU kernels of GPU images still run).
        """
        verdict = compat.verdict(image.env, inventory)
        if verdict.outcome != compat.CANNOT_RUN:
            if verdict.outcome == compat.COMPAT:
                self.log.warning(
                    "Kernel %s, image %s: %s", self.kernel_id, self.image, verdict.reason
                )
            return
        if policy.allow_incompatible_images:
            self.log.warning(
                "Kernel %s starts %s although %s (ContainerPolicy.allow_incompatible_images)",
                self.kernel_id,
                self.image,
                verdict.reason,
            )
            return
        raise ImageIncompatible(
            f"The image {self.image} cannot use this host's GPUs: {verdict.reason}. Choose an "
            "image built for an older CUDA, start the kernel without GPUs, or ask an "
            "administrator (ContainerPolicy.allow_incompatible_images)."
        )

    def change_request(self, request: GPURequest) -> None:
        """A new request for the next (re)start: the kernel's current GPUs are not kept."""
        self._requested = request
        self._request_is_default = False
        self.gpu_uuids = ()

    async def _gpu_request(self, kwargs: dict[str, AnyType]) -> GPURequest:
        """What this launch asks for. A restart keeps exactly the GPUs the kernel held; else the
        notebook's request, else the kernel spec's default."""
        if self.gpu_uuids:
            return GPURequest(ids=self.gpu_uuids)
        requested = self._requested
        if requested is None:
            notebook = (kwargs.get("env") or {}).get("JPY_SESSION_NAME", "")
            store = NotebookRequests(parent=self.parent)
            stored = await asyncio.to_thread(store.get, notebook) if notebook else None
            requested = GPURequest.parse(stored if stored is not None else self.gpus)
            self._requested = requested
            self._request_is_default = stored is None
        return requested

    def _container_spec(
        self,
        image: ImageRecord,
        cmd: list[str],
        kwargs: dict[str, AnyType],
        policy: ContainerPolicy,
        gpus: list[GPU],
        attach_mode: str,
    ) -> ContainerSpec:
        assert self.connection_dir is not None
        km = self.parent
        root = os.path.realpath(
            getattr(getattr(km, "parent", None), "root_dir", None)
            or kwargs.get("cwd")
            or os.getcwd()
        )
        host_cwd = kwargs.get("cwd") or root
        session_env = kwargs.get("env") or {}

        environment: dict[str, str] = {}
        if self.kernel_spec is not None:
            environment.update({k: str(v) for k, v in (self.kernel_spec.env or {}).items()})
        environment.update({k: str(v) for k, v in self.environment.items()})
        reserved = sorted(RESERVED_ENV & set(environment))
        if reserved:
            raise ValueRefused(
                f"The kernel's environment may not set {', '.join(reserved)}: the GPU allocator "
                "sets it to the GPUs the kernel booked. Remove it from the kernel spec's env or "
                "ContainerProvisioner.environment."
            )
        attached = attachment(attach_mode, gpus)
        environment.update(attached.environment)
        notebook = session_env.get("JPY_SESSION_NAME", "")
        if notebook:
            environment["JPY_SESSION_NAME"] = (
                container_path_for(notebook, root, self.workspace_mount_path)
                if os.path.isabs(notebook)
                else notebook
            )

        uid, gid = os.getuid(), os.getgid()
        username = _username(uid)
        tmpfs: dict[str, str] = {}
        user = kernel_user(self.run_as, uid, gid, image.user, policy.allow_root)
        # Sized: a tmpfs without one may take half the host's memory.
        scratch_options = f"rw,mode=1777,size={policy.tmpfs_size}"
        if self.run_as != "image":
            tmpfs[self.home_path] = scratch_options
            environment.setdefault("HOME", self.home_path)
            environment.setdefault("USER", username)
            environment.setdefault("LOGNAME", username)
        if policy.read_only_root_fs:
            for scratch in ("/tmp", "/var/tmp"):
                tmpfs.setdefault(scratch, scratch_options)
        environment = check_environment(environment, policy.max_env_value_bytes)
        # Kernel specs may lower the admin's ceilings, never lift them.
        limits = kernel_limits(
            policy,
            mem_limit=self.mem_limit,
            pids_limit=self.pids_limit,
            shm_size=self.shm_size,
            runtime=self.runtime,
            ulimits=self.ulimits,
        )

        mounts = [
            Mount(self.connection_dir, KERNEL_DIR_IN_CONTAINER, read_only=False),
            Mount(root, self.workspace_mount_path, read_only=False),
        ]
        allowed_roots = [root, *policy.allowed_mount_roots]
        for extra in self.extra_mounts:
            source, target, read_only = check_extra_mount(
                policy, extra, allowed_roots, self.workspace_mount_path
            )
            mounts.append(Mount(source, target, read_only=read_only))

        port_bindings: dict[int, tuple[str, int]] = {}
        if self.transport == "tcp" and self.network_mode not in ("host",):
            for name in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"):
                port = int(self.connection_info[name])
                port_bindings[port] = ("127.0.0.1", port)

        notebook_label = (
            os.path.relpath(notebook, root) if notebook and os.path.isabs(notebook) else notebook
        )
        container_labels = check_labels(
            {
                # A POOL label marks warm containers, which recovery treats apart: only the
                # pool sets it.
                **{str(k): str(v) for k, v in self.extra_labels.items() if str(k) != L.POOL},
                **({L.POOL: self.pool_id} if self.pool_id is not None else {}),
                L.MANAGED: "true",
                L.KERNEL_ID: self.kernel_id,
                L.KERNEL_NAME: getattr(km, "kernel_name", "") or "",
                L.SERVER_ID: effective_server_id(policy, root),
                L.OWNER_PROCESS: L.OwnerProcess.current().token(),
                L.USER: username,
                L.UID: str(uid),
                L.NOTEBOOK: notebook_label,
                L.CWD: host_cwd,
                L.IMAGE: self.image,
                L.CONNECTION_DIR: self.connection_dir,
                L.TRANSPORT: self.transport,
                L.GPUS: ",".join(g.uuid for g in gpus),
            }
        )
        return ContainerSpec(
            image=self.image,
            command=cmd,
            name=f"jupyter-kernel-{self.kernel_id[:8]}-{secrets.token_hex(3)}",
            labels=container_labels,
            environment=environment,
            user=user,
            # A warm container starts in its private directory, not the workspace: Python puts
            # the start directory first on sys.path while ipykernel loads, and a user's module in
            # the workspace (a queue.py, say) must not shadow one it imports. The handover moves
            # the kernel to the notebook's directory.
            working_dir=KERNEL_DIR_IN_CONTAINER
            if self.pool_id is not None
            else container_path_for(host_cwd, root, self.workspace_mount_path),
            mounts=mounts,
            tmpfs=tmpfs,
            shm_size=limits.shm_size,
            ulimits=limits.ulimits,
            runtime=attached.runtime or limits.runtime,
            device_requests=attached.device_requests,
            network_mode=self.network_mode,
            mem_limit=limits.mem_limit,
            pids_limit=limits.pids_limit,
            log_max_size=policy.log_max_size,
            log_max_files=policy.log_max_files,
            init=True,
            entrypoint=[] if entrypoint_is_interpreter(image.entrypoint) else None,
            port_bindings=port_bindings,
            cap_add=list(policy.cap_add),
            no_new_privileges=policy.no_new_privileges,
            read_only=policy.read_only_root_fs,
        )

    async def _wait_until_ready(self, started: float) -> None:
        """Until the kernel answers kernel_info, the container ends, or the timeout passes."""

        async def late() -> None:
            tail = await self.engine.logs_tail(self.container_id or "", self.log_tail_lines)
            raise LaunchTimeout(
                f"The kernel in the container for {self.image} did not answer within "
                f"{self.launch_timeout:.0f} s, so the launch was stopped and the container "
                "removed. If this image is slow to start, raise "
                "ContainerProvisioner.launch_timeout."
                + (f"\nLast lines of its log:\n{tail}" if tail else "")
            )

        await self._ask_kernel(
            self.connection_info,
            self.container_id or "",
            "kernel_info_request",
            {},
            started + self.launch_timeout,
            self._raise_for_exit,
            late,
        )

    async def _ask_kernel(
        self,
        info: KernelConnectionInfo,
        container_id: str,
        msg_type: str,
        content: dict[str, AnyType],
        deadline: float,
        on_end: Callable[[AnyType], Awaitable[None]],
        on_timeout: Callable[[], Awaitable[None]],
    ) -> dict[str, AnyType]:
        """One request on the kernel's shell channel, and its reply's content. While it waits,
        a container that ended (or was removed) calls ``on_end`` with its state, and a passed
        ``deadline`` (time.monotonic()) calls ``on_timeout``: both raise."""
        session = Session(key=info["key"], signature_scheme=info["signature_scheme"])
        socket = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        socket.linger = 0
        # A kernel binds its sockets a few hundred ms after its container starts, and ZMQ
        # retries a connection to a socket not bound yet every reconnect_ivl: 100 ms by default,
        # ~50 ms lost per launch on average (benchmarks/). Retry every 5 ms instead.
        socket.reconnect_ivl = 5
        try:
            socket.connect(_shell_url(info))
            request = session.msg(msg_type, content)
            await socket.send_multipart(session.serialize(request))
            while True:
                if await socket.poll(100):
                    _, parts = session.feed_identities(await socket.recv_multipart())
                    reply = session.deserialize(parts)
                    if reply["parent_header"].get("msg_id") == request["header"]["msg_id"]:
                        return dict(reply["content"])
                    continue
                state = await self.engine.state(container_id)
                if state is None or state.ended:
                    await on_end(state)
                if time.monotonic() > deadline:
                    await on_timeout()
        finally:
            socket.close(linger=0)

    async def _raise_for_exit(self, state: AnyType) -> None:
        tail = await self.engine.logs_tail(self.container_id or "", self.log_tail_lines)
        if state is None:
            raise ContainerExited(
                f"The kernel container for {self.image} was removed while the kernel was starting."
            )
        sentence, image_at_fault = diagnose_exit(
            self.image, state.exit_code, state.oom_killed, tail
        )
        raise (ImageNotKernelReady if image_at_fault else ContainerExited)(sentence)

    async def _remove_previous_container(self) -> None:
        if self.previous_container_id:
            await self.engine.remove(self.previous_container_id)
            self.previous_container_id = None

    async def _discard_after_failed_launch(self) -> None:
        self.gpu_uuids = ()
        # An engine that went away mid-launch cannot remove the containers now: they are removed
        # once it answers again (their labels book GPUs until then), and the rest of the clean-up
        # (private directory, connection file) still happens here.
        for container_id in (self.previous_container_id, self.container_id):
            if container_id:
                try:
                    await self.engine.remove_or_defer(container_id)
                except ContainerKernelError as e:
                    self.log.warning("Could not remove the failed kernel container: %s", e)
        self.previous_container_id = self.container_id = None
        await asyncio.to_thread(self._remove_files)  # off the loop, as in pre_launch
        self._forget_pending()

    def _remove_files(self) -> None:
        self._remove_connection_dir()
        if self.parent is not None:
            self.parent.cleanup_connection_file()

    def _forget_pending(self) -> None:
        """jupyter_client keeps a failed start in its multi-kernel manager's pending map, and
        shutdown_all then fails on that id (404) before shutting the other kernels down: a
        server with one failed launch would leave its other containers behind at exit."""
        if self.parent is not None:
            pending = getattr(getattr(self.parent, "parent", None), "_pending_kernels", None)
            if isinstance(pending, dict):
                pending.pop(self.kernel_id, None)

    # ------------------------------------------------------------------ running kernel

    async def poll(self) -> int | None:
        if not self.container_id:
            return 0
        try:
            state = await self.engine.state(self.container_id)
        except EngineUnavailable as e:
            # Unknown is not dead: say nothing to the restarter until the engine answers again.
            self.log.warning("Cannot poll kernel %s: %s", self.kernel_id, e)
            return None
        if state is None:
            return -1  # removed behind our back (docker rm -f): the kernel is gone
        if not state.ended:
            return None
        if not getattr(self.parent, "shutting_down", False):
            await self._report_death(self.container_id, state)
        return state.exit_code

    async def _report_death(self, container_id: str, state: AnyType) -> None:
        """Say once, in the server log and as the kernel's ``reason`` (GET /api/kernels/<id>),
        why a running kernel's container ended: the restarter only sees an exit code, and a
        kernel killed for memory would otherwise just "restart" with its state lost and no
        word why."""
        if self._death_reported == container_id:
            return
        self._death_reported = container_id
        if state.oom_killed:
            mem_limit = self.container_spec.mem_limit if self.container_spec else self.mem_limit
            limit = f" of {mem_limit}" if mem_limit else ""
            sentence = (
                f"The kernel ran out of memory: its container ({self.image}) was OOM-killed at "
                f"its memory limit{limit} (exit code {state.exit_code}), and everything in the "
                "kernel's memory is lost. Use less memory, or ask an administrator for a larger "
                "ContainerProvisioner.mem_limit."
            )
        else:
            try:
                tail = await self.engine.logs_tail(container_id, self.log_tail_lines)
            except ContainerKernelError:
                tail = ""  # the engine went away meanwhile: the exit code is known all the same
            sentence = (
                f"The kernel's container ({self.image}) exited with code {state.exit_code}."
                + (f"\nLast lines of its log:\n{tail}" if tail else "")
            )
        self.log.warning("Kernel %s died: %s", self.kernel_id, sentence)
        if self.parent is not None and hasattr(self.parent, "reason"):
            self.parent.reason = sentence

    async def wait(self) -> int | None:
        while True:
            status = await self.poll()
            if status is not None:
                return status
            await asyncio.sleep(0.1)

    async def send_signal(self, signum: int) -> None:
        if not self.container_id:
            return
        try:
            await self.engine.kill(self.container_id, signum)
        except EngineUnavailable as e:
            if not getattr(self.parent, "shutting_down", False):
                raise
            # A shutdown during an engine outage: the kernel was asked to stop over its own
            # channel, and cleanup() removes its container once the engine is back. Failing
            # here would leave the kernel half shut down, its notebook unable to close.
            self.log.warning("Cannot signal kernel %s while it shuts down: %s", self.kernel_id, e)

    async def kill(self, restart: bool = False) -> None:
        await self.send_signal(signal.SIGKILL)

    async def terminate(self, restart: bool = False) -> None:
        await self.send_signal(signal.SIGTERM)

    async def post_launch(self, **kwargs: AnyType) -> None:
        await super().post_launch(**kwargs)
        km = self.parent
        if km is not None and not self._dead_callback_registered:
            # jupyter_server drops a kernel whose restarts all failed without cleaning it up;
            # remove its container then, so its GPUs are released at once.
            km.add_restart_callback(self._on_kernel_dead, "dead")
            self._dead_callback_registered = True

    def _on_kernel_dead(self) -> None:
        # Keep a reference: the event loop holds tasks only weakly.
        self._dead_cleanup = asyncio.ensure_future(self.cleanup(restart=False))

    async def cleanup(self, restart: bool = False) -> None:
        if restart:
            # Keep the stopped container until the new one exists: it books the GPUs meanwhile.
            if self.container_id:
                await self._remove_previous_container()
                self.previous_container_id = self.container_id
                self.container_id = None
            return
        for container_id in (self.container_id, self.previous_container_id):
            if container_id:
                # During an outage: removed when the engine is back, so a shutdown still ends.
                await self.engine.remove_or_defer(container_id)
        self.container_id = self.previous_container_id = None
        self.gpu_uuids = ()
        await asyncio.to_thread(self._remove_connection_dir)  # off the loop, as in pre_launch

    async def get_provisioner_info(self) -> dict[str, AnyType]:
        info = await super().get_provisioner_info()
        info.update(
            container_id=self.container_id,
            connection_dir=self.connection_dir,
            image=self.image,
            transport=self.transport,
        )
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, AnyType]) -> None:
        await super().load_provisioner_info(provisioner_info)
        self.container_id = provisioner_info.get("container_id")
        self.connection_dir = provisioner_info.get("connection_dir")
        # A running kernel's (reattached after a server restart): its next launch is a restart.
        self._launched = self._launched or self.container_id is not None
        self.image = provisioner_info.get("image") or self.image
        self.transport = provisioner_info.get("transport") or self.transport

    # ------------------------------------------------------------------ private directory

    def _write_container_connection_file(self) -> None:
        assert self.connection_dir is not None
        info = dict(self.connection_info)
        if info["transport"] == "ipc":
            info["ip"] = f"{KERNEL_DIR_IN_CONTAINER}/kernel-ipc"
        elif self.network_mode != "host":
            info["ip"] = "0.0.0.0"  # inside the container's own network namespace only
        key = info.get("key", b"")
        info["key"] = key.decode() if isinstance(key, bytes) else key
        # The kernel's container can write this directory (a symlink in place of kernel.json,
        # say): replaced, never followed. An explicit run_as uid reads (and ipykernel rewrites)
        # the file with no capabilities, so owning it is its only way in.
        write_connection_file(self.connection_dir, info, numeric_user(self.run_as))

    def _remove_connection_dir(self) -> None:
        if self.connection_dir:
            shutil.rmtree(self.connection_dir, ignore_errors=True)
            self.connection_dir = None


def _shell_url(info: KernelConnectionInfo) -> str:
    if info["transport"] == "ipc":
        return f"ipc://{info['ip']}-{info['shell_port']}"
    return f"tcp://{info['ip']}:{info['shell_port']}"


def _username(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
