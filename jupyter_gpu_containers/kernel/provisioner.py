"""A jupyter_client kernel provisioner that runs each kernel in a container: the jupyter_client
contract (KernelProvisionerBase), and little else.

- ``pre_launch``: the checks that need nothing but the request, the kernel's private directory
  and both views of its connection (kernel_files.py), and the launch's facts (launchplan.py), all
  on a worker thread.
- ``launch_kernel``: admission of the image (admission.py), the kernel's GPU request
  (gpu_request.py), then the server's placement (placement/: the host's ledger, queue and
  warm pool, or a cluster's scheduler), called once, which plans, creates and starts the
  container; it returns once the kernel answers a ``kernel_info_request`` (handshake.py), the
  container ended (reported with its log tail), or the launch timeout passed.
- ``poll``/``wait``/``send_signal``/``terminate``/``kill``: through the backend (signals reach the
  kernel through the container's init; where they cannot, an interrupt is a message).
- ``cleanup``: remove the container; keep the private directory across a restart (same connection
  file, same ports), remove it on shutdown.

What a kernel keeps beside the contract is in helpers each provisioner owns: its files
(kernel_files.py), its GPU request across starts (gpu_request.py), how its containers ended
(container_ends.py), its last launch's phases (launch_phases.py); a first launch may take a warm
container instead of starting its own (warm_handover.py).

The shared objects (backend, placement, inventory, probe, policy, …) are the server's
(services.py); outside a server the provisioner makes its own, and closes them at shutdown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from typing import Any as AnyType

from jupyter_client.connect import KernelConnectionInfo

from ..backends.backend import ContainerBackend
from ..base.errors import (
    ContainerKernelError,
    EngineUnavailable,
)
from ..base.records import CONNECTION_FILE_NAME, KERNEL_DIR_IN_CONTAINER, ContainerSpec, ImageRecord
from ..gpus.allocator import Attachment
from ..gpus.notebook_requests import api_path_of_session, read_notebook_metadata
from ..host.identity import KernelUser
from ..images.catalog import describe_image
from ..images.environment import check_pin, pin_in_metadata
from ..placement.placement import Placed, PlacementStart
from ..policy.checks import check_kernel_id, check_network_mode, check_run_as
from ..policy.command import kernel_command, relayed_command
from ..policy.launchplan import KernelOptions, LaunchFacts, plan_container
from ..services import Services, services_for
from . import launch_request
from .admission import admit_image, admit_transport
from .container_ends import ContainerEnds
from .gpu_request import KernelGPURequest
from .handshake import ask_kernel, interrupt_kernel
from .kernel_files import KernelFiles
from .kernel_options import ContainerKernelOptions
from .launch_phases import LaunchPhases
from .warm_handover import start_from_pool


class ContainerProvisioner(ContainerKernelOptions):
    """Runs the kernel in a container of ``image``. Its options (kernel_options.py) can be set for
    all kernels in jupyter_server_config.py (``c.ContainerProvisioner.shm_size = "8g"``) and per
    kernel spec (``metadata.kernel_provisioner.config``, or
    ContainerKernelSpecManager.image_overrides)."""

    # ------------------------------------------------------------------ state

    container_id: str | None = None
    connection_dir: str | None = None
    # The GPUs (UUIDs) this kernel holds; a restart asks for exactly these again.
    gpu_uuids: tuple[str, ...] = ()
    # On restart the old container stays until the new one exists, so its GPUs stay booked.
    previous_container_id: str | None = None
    _dead_callback_registered = False
    # How the kernel's last container ended, for the kernel's own view (kernel_view.py):
    # container id, exit code, OOM-killed, the sentence, when (unix time). None: none ended yet.
    # Recorded by container_ends.py; the reclaimer and the admin desk record their own ends.
    last_end: dict[str, AnyType] | None = None
    # Set on the provisioners that fill the warm pool (app.py): the pool's id, written as the
    # container's POOL label. None for kernels.
    pool_id: str | None = None
    # What the last cold launch created: the container's spec and its image's id (the warm pool
    # compares a launch's own spec with those of its containers).
    container_spec: ContainerSpec | None = None
    container_image_id: str = ""
    # Whether the kernel launched once (or was reattached running). Only a kernel's first launch
    # may take a warm container (warm_handover.py): a restart keeps the kernel's connection
    # (key, sockets), and a warm container has its own.
    launched = False
    gpu_wait = 0.0  # seconds the last launch waited for its GPUs in the queue
    # Whose kernel this is in a kernel service (identity.py): set at the first launch from
    # its launch request, never changed after. None in direct mode: the server's own user.
    owner: KernelUser | None = None
    # What pre_launch found for the launch under way: the host's facts, the notebook's session
    # name, and the kernel spec's environment as jupyter_client substituted it.
    _facts: LaunchFacts | None = None
    _session = ""
    _notebook = ""  # its contents API path, "" when the kernel is not a notebook's
    # The digest of ``image``'s repository this kernel runs instead (its notebook's pin,
    # images/environment.py), read at its first launch and kept by its restarts, as its GPUs
    # are. "": the image's tag, as the engine resolves it now.
    pinned_image = ""
    _given_pin = ""  # a kernel service's: the pin its user's server read from the notebook
    _spec_env: dict[str, str]
    # Outside a server: the shared objects this provisioner made itself (closed at shutdown).
    _own_services: Services | None = None
    # Between a restart's shutdown request and its cleanup: a terminate() then is the restart's
    # (shutdown_requested).
    _restart_requested = False

    def __init__(self, **kwargs: AnyType) -> None:
        super().__init__(**kwargs)
        # The kernel's private directory, connection files and account files (kernel_files.py).
        self.files = KernelFiles(self)
        # How its containers ended, and the reports of it (container_ends.py).
        self.ends = ContainerEnds(self)
        # What GPUs it asks for across its starts and restarts (gpu_request.py).
        self.gpu_request = KernelGPURequest(self)
        # When each phase of its last launch ended (launch_phases.py).
        self.phases = LaunchPhases()

    @property
    def services(self) -> Services:
        """The server's shared objects (services.py), or this provisioner's own outside one."""
        found = services_for(self.parent)
        if found is not None:
            return found
        if self._own_services is None:
            self._own_services = Services(parent=self.parent)
        return self._own_services

    @property
    def backend(self) -> ContainerBackend:
        return self.services.backend

    @property
    def has_process(self) -> bool:
        return self.container_id is not None

    # ------------------------------------------------------------------ launch

    async def pre_launch(self, **kwargs: AnyType) -> dict[str, AnyType]:
        km = self.parent
        if km is None:
            raise ContainerKernelError("The container provisioner needs a kernel manager.")
        self.phases.begin()
        policy = self.services.policy
        # Before anything is written: the kernel id names the connection file and the private
        # directory, and a client may choose it (POST /api/kernels "kernel_id").
        check_kernel_id(self.kernel_id)
        # What the start was given beside the call, read once, here (launch_request.py).
        given = launch_request.given()
        if self.owner is None and not self.launched:
            self.owner = given.user
        uid, gid = self.kernel_ids()
        check_run_as(policy, self.run_as, uid, gid)
        check_network_mode(policy, self.network_mode)
        admit_transport(
            self.log,
            self.kernel_id,
            self.transport,
            self.network_mode,
            service_user=self.owner is not None,
            on_loopback=self.services.placement.reaches_kernels_on_loopback,
        )
        launch_env = kwargs.get("env") or {}
        self._session = launch_env.get("JPY_SESSION_NAME", "")
        server_root = getattr(getattr(km, "parent", None), "root_dir", None) or os.getcwd()
        # A service's kernel mounts its user's workspace; the user's own server read the
        # notebook's request and sent it with the start (service.py), so no file is read here.
        root_dir = self.owner.workspace if self.owner else server_root
        self._notebook = "" if self.owner else api_path_of_session(self._session, str(root_dir))
        self.gpu_request.take(given)
        self._given_pin = given.image_digest
        if not self.launched:  # (a restart keeps the image its kernel runs, as its GPUs)
            self.pinned_image = await self._notebook_pin()
        # Off the event loop: file system work, the user database, the host state directory.
        try:
            self._facts = await asyncio.to_thread(
                self.files.prepare,
                policy,
                str(root_dir),
                kwargs.get("cwd") or "",
                str(server_root),
                self._session,
            )
        except BaseException:  # a refused mount, say: nothing of this launch stays behind
            await asyncio.to_thread(self.files.remove)
            raise
        container_file = f"{KERNEL_DIR_IN_CONTAINER}/{CONNECTION_FILE_NAME}"
        command = kernel_command(self.kernel_cmd, container_file)
        if self.services.placement.kernel_chooses_ports:
            # On a node every account reaches: the kernel behind its channel relay, which
            # files.prepare wrote beside it (relay_files.py).
            command = relayed_command(command)
        kwargs = await super().pre_launch(cmd=command, **kwargs)
        # The kernel spec's env as jupyter_client substituted it (${VAR} templates), and nothing
        # else of this process's environment: the server's own never reaches a container.
        env = kwargs.get("env") or {}
        spec_env = self.kernel_spec.env if self.kernel_spec is not None else {}
        self._spec_env = {k: str(env.get(k, v)) for k, v in (spec_env or {}).items()}
        self.phases.stamp("prepare")
        return kwargs

    @property
    def launch_facts(self) -> LaunchFacts | None:
        """What the last launch found of the host (None before one)."""
        return self._facts

    def kernel_ids(self) -> tuple[int, int]:
        """The uid and gid this kernel's files and ledger entries belong to: its service user's,
        or the server's."""
        if self.owner is not None:
            return self.owner.uid, self.owner.gid
        return os.getuid(), os.getgid()

    @property
    def launch_stamps(self) -> dict[str, float] | None:
        """When each phase of the last launch ended (launch_phases.py); None before one."""
        return self.phases.stamps

    def launch_phases(self) -> dict[str, float]:
        """The last launch's phases and how long each took (LaunchPhases.durations)."""
        return self.phases.durations()

    async def launch_kernel(self, cmd: list[str], **kwargs: AnyType) -> KernelConnectionInfo:
        began = time.monotonic()
        try:
            # Inspect first: a missing image fails at once, and pulls never count against the
            # launch timeout (they happen, if at all, before this point).
            image = await admit_image(
                self.services,
                self.image,
                own_command=bool(self.kernel_cmd),
                uid=self.owner.uid if self.owner else None,
                run=self.pinned_image,
                named_by_user=False,  # the spec's: the listing's tag, or the administrator's
            )
            if self.run_as != "image":
                self._facts = await asyncio.to_thread(
                    self.files.with_account_files, image, self._facts
                )
            self.phases.stamp("image")
            steps = _LaunchSteps(self, image, cmd)
            start = await steps.start(began)
            placed = await self.services.placement.place(start, steps)
            if placed.from_warm_pool:
                return self.connection_info
            self.gpu_uuids, self.gpu_wait = placed.gpus, placed.waited
            if placed.address:  # the kernel's ports are on an address of its own (a pod's)
                self.connection_info["ip"] = placed.address
                if self.parent is not None:
                    self.parent.ip = placed.address
            if placed.ports:  # the ports the kernel chose where it runs (a job's node)
                self.connection_info.update(placed.ports)  # type: ignore[typeddict-item]
                if self.parent is not None:
                    for name, port in placed.ports.items():
                        setattr(self.parent, name, port)
            await self._remove_previous_container()
            await self._wait_until_ready(placed.counts_from)
            self.phases.stamp("ready")
        except BaseException as e:
            # A restart under a changed request that ended the way someone chose (its wait
            # cancelled) is brought back as it was (kernelmanager.py): its endpoints stay, so
            # the pages' connections reach the kernel again, with what they sent meanwhile.
            may_come_back = (
                isinstance(e, ContainerKernelError) and e.routine and self.gpu_request.changed
            )
            await self._discard_after_failed_launch(keep_endpoints=may_come_back)
            raise
        self.launched = True
        self.gpu_request.settle()
        self._log_ready(placed)
        return self.connection_info

    def _log_ready(self, placed: Placed) -> None:
        elapsed = self.phases.elapsed()
        if self.pool_id is not None:
            self.log.info(
                "Warm pool: container %s (image %s, %s) is ready after %.2f s (%s)",
                (self.container_id or "")[:12],
                self.image,
                self.transport,
                elapsed,
                self.phases.text(),
            )
        else:
            self.log.info(
                "Kernel %s answers from container %s (image %s, %s, GPUs: %s) after %.2f s (%s)",
                self.kernel_id,
                (self.container_id or "")[:12],
                self.image,
                self.transport,
                _gpus_held(placed),
                elapsed,
                self.phases.text(),
            )

    async def _wait_until_ready(self, started: float) -> None:
        """Until the kernel answers kernel_info, the container ends, or the timeout passes."""
        await ask_kernel(
            self.backend,
            self.connection_info,
            self.container_id or "",
            "kernel_info_request",
            {},
            started + self.launch_timeout,
            self.ends.raise_for_exit,
            self.ends.raise_for_timeout,
        )

    async def check_restart(self) -> None:
        """Refuse a restart that the image's admission would refuse, before the running kernel
        is stopped for it (kernelmanager.py): the kernel then keeps running, its state intact,
        instead of losing its container to a launch that cannot happen."""
        await admit_image(
            self.services,
            self.image,
            own_command=bool(self.kernel_cmd),
            uid=self.owner.uid if self.owner else None,
            run=self.pinned_image,
            named_by_user=False,  # the kernel spec's: the listing's tag, or the administrator's
        )

    async def _notebook_pin(self) -> str:
        """The digest this kernel's notebook pins its image to, checked (check_pin: BadPin with
        a sentence), or "": a kernel service's from its launch request, a server's own read
        from the notebook's saved metadata."""
        if self.owner is not None:
            pin = self._given_pin
        else:
            contents = getattr(self.services.parent, "contents_manager", None)
            pin = pin_in_metadata(await read_notebook_metadata(contents, self._notebook))
        return check_pin(pin, self.image)

    @property
    def run_image(self) -> str:
        """The reference this kernel's containers run: the pinned digest, else ``image``."""
        return self.pinned_image or self.image

    def options(self) -> KernelOptions:
        return dataclasses.replace(super().options(), pinned_image=self.pinned_image)

    def restore_previous_request(self) -> bool:
        """Go back to what the kernel asked for before a restart under another request, once
        that restart ended the way someone chose (its wait for a GPU cancelled): the next
        restart brings the kernel back as it was. False when there is nothing to go back to."""
        return self.gpu_request.restore()

    async def _remove_previous_container(self) -> None:
        if self.previous_container_id:
            await self.ends.record_restart(self.previous_container_id)
            await self.backend.remove(self.previous_container_id)
            self.previous_container_id = None
            self.services.queue.poke()  # it may have booked GPUs: starts waiting here look

    async def _discard_after_failed_launch(self, keep_endpoints: bool = False) -> None:
        """Remove what the failed launch left. ``keep_endpoints``: not the private directory
        and connection file (the kernel may come back on them; if it does not, its shutdown
        removes them)."""
        self.gpu_uuids = ()
        # An engine that went away mid-launch cannot remove the containers now: they are removed
        # once it answers again (their labels book GPUs until then), and the rest of the clean-up
        # (private directory, connection file) still happens here.
        for container_id in (self.previous_container_id, self.container_id):
            if container_id:
                try:
                    await self.backend.remove_or_defer(container_id)
                except ContainerKernelError as e:
                    self.log.warning("Could not remove the failed kernel container: %s", e)
        self.previous_container_id = self.container_id = None
        if not keep_endpoints:
            await asyncio.to_thread(self.files.remove)  # off the loop, as in pre_launch

    # ------------------------------------------------------------------ running kernel

    async def poll(self) -> int | None:
        if not self.container_id:
            return 0
        try:
            state = await self.backend.state(self.container_id)
        except EngineUnavailable as e:
            # Unknown is not dead: say nothing to the restarter until the engine answers again.
            self.log.warning("Cannot poll kernel %s: %s", self.kernel_id, e)
            return None
        if state is None:
            return -1  # removed behind our back (docker rm -f): the kernel is gone
        if not state.ended:
            return None
        if not getattr(self.parent, "shutting_down", False):
            await self.ends.report_death(self.container_id, state)
        return state.exit_code

    async def wait(self) -> int | None:
        while True:
            status = await self.poll()
            if status is not None:
                return status
            await asyncio.sleep(0.1)

    async def send_signal(self, signum: int) -> None:
        if not self.container_id:
            return
        if signum == signal.SIGINT and not self.backend.signals_reach_kernels:
            # The kernel is interrupted by message, on its control channel, as jupyter_client
            # does for interrupt_mode "message".
            await interrupt_kernel(self.backend, self.connection_info, self.container_id)
            return
        try:
            await self.backend.kill(self.container_id, signum)
        except EngineUnavailable as e:
            if not getattr(self.parent, "shutting_down", False):
                raise
            # A shutdown during an engine outage: the kernel was asked to stop over its own
            # channel, and cleanup() removes its container once the engine is back. Failing
            # here would leave the kernel half shut down, its notebook unable to close.
            self.log.warning("Cannot signal kernel %s while it shuts down: %s", self.kernel_id, e)

    async def shutdown_requested(self, restart: bool = False) -> None:
        await super().shutdown_requested(restart=restart)
        # jupyter_client (8.x) sends the SIGTERM of a kernel slow to leave after a shutdown
        # request without the request's restart flag (KernelManager._async_finish_shutdown):
        # on Slurm that ended the job whose allocation the restart was to run in.
        self._restart_requested = restart

    async def kill(self, restart: bool = False) -> None:
        if not await self._stopped_for_restart(restart or self._restart_requested):
            await self.send_signal(signal.SIGKILL)

    async def terminate(self, restart: bool = False) -> None:
        if not await self._stopped_for_restart(restart or self._restart_requested):
            await self.send_signal(signal.SIGTERM)

    async def _stopped_for_restart(self, restart: bool) -> bool:
        """For a restart, where the engine's allocation outlives the container (a Slurm job):
        the container stopped, the allocation kept for the restart's container
        (ContainerBackend.kept_allocations). False where nothing was done so."""
        kept = self.backend.kept_allocations
        if not restart or kept is None or not self.container_id:
            return False
        await kept.stop_for_restart(self.container_id)
        return True

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
        self._restart_requested = False  # the shutdown, for a restart or not, is over
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
                await self.backend.remove_or_defer(container_id)
        self.container_id = self.previous_container_id = None
        if self.gpu_uuids:
            self.services.queue.poke()  # GPUs were freed: starts waiting here look at once
        self.gpu_uuids = ()
        await asyncio.to_thread(self.files.remove_private_dir)  # off the loop, as in pre_launch
        own, self._own_services = self._own_services, None
        if own is not None:
            own.close()

    async def get_provisioner_info(self) -> dict[str, AnyType]:
        info = await super().get_provisioner_info()
        info.update(
            container_id=self.container_id,
            connection_dir=self.connection_dir,
            image=self.image,
            pinned_image=self.pinned_image,
            transport=self.transport,
        )
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, AnyType]) -> None:
        await super().load_provisioner_info(provisioner_info)
        self.container_id = provisioner_info.get("container_id")
        self.connection_dir = provisioner_info.get("connection_dir")
        # A running kernel's (reattached after a server restart): its next launch is a restart.
        self.launched = self.launched or self.container_id is not None
        self.image = provisioner_info.get("image") or self.image
        self.pinned_image = str(provisioner_info.get("pinned_image") or "")
        self.transport = provisioner_info.get("transport") or self.transport


def _gpus_held(placed: Placed) -> str:
    """The GPUs a placed kernel holds, for the log: the host ledger's UUIDs, or how many its
    cluster's scheduler gave it (a Slurm job's, a pod's: the scheduler knows which)."""
    if placed.gpus:
        return ",".join(placed.gpus)
    if placed.scheduled_gpus:
        return f"{placed.scheduled_gpus}, placed by {placed.scheduler or 'the scheduler'}"
    return "none"


class _LaunchSteps:
    """A launch as its placement sees it (placement.PlacementStart), and what it does for its
    placement (placement.LaunchSteps), on its provisioner."""

    def __init__(self, provisioner: ContainerProvisioner, image: ImageRecord, cmd: list[str]):
        self.provisioner, self.image, self.cmd = provisioner, image, cmd

    async def start(self, began: float) -> PlacementStart:
        """This launch, as its placement needs to know it."""
        p, image = self.provisioner, self.image
        request = await p.gpu_request.resolve(p._notebook)
        if request.wants_gpus and not p.gpu_uuids:
            gpu_build = describe_image(p.image, image.env, p.services.listed_entry(p.image)).gpu
            fitted = p.gpu_request.on_image(request, gpu_build)
            if fitted != request:
                p.log.info(
                    "Kernel %s starts without GPUs: its image %s is a CPU build now, and its "
                    "notebook's request (%s) was saved for a GPU build.",
                    p.kernel_id,
                    p.image,
                    request.describe(),
                )
                request = fitted
        facts = p._facts
        return PlacementStart(
            kernel_id=p.kernel_id,
            image_ref=p.run_image,
            image=image,
            request=request,
            request_is_default=p.gpu_request.is_default,
            keeps_gpus=bool(p.gpu_uuids),
            wait=p.gpu_request.wait,
            while_waiting=p.gpu_request.while_waiting,
            uid=p.kernel_ids()[0],
            user=facts.username if facts else "",
            notebook=facts.notebook if facts else "",
            server_id=facts.server_id if facts else "",
            gpu_resource=p.gpu_resource,
            began=began,
            launch_timeout=p.launch_timeout,
            previous_container=p.previous_container_id or "",
        )

    def plan(self, attached: Attachment, gpus: tuple[str, ...]) -> ContainerSpec:
        """This launch's container (launchplan.plan_container), remembered for the warm pool."""
        p, image = self.provisioner, self.image
        assert p._facts is not None  # pre_launch gathered them
        spec = plan_container(
            kernel_id=p.kernel_id,
            kernel_name=getattr(p.parent, "kernel_name", "") or "",
            image=image,
            command=self.cmd,
            options=p.options(),
            spec_env=getattr(p, "_spec_env", {}),
            facts=p._facts,
            policy=p.services.policy,
            attached=attached,
            gpus=gpus,
            ports={k: int(str(v)) for k, v in p.connection_info.items() if k.endswith("_port")},
            pool_id=p.pool_id,
        )
        if p.pinned_image and p.pinned_image.rsplit("@", 1)[-1] == image.id:
            # A pin to content a tag of this host named before it moved (admission.py): it has
            # no registry digest for the engine to resolve, so the engine runs it by its id,
            # the content admitted. (Its labels keep the pin, which recovery checks again.)
            spec.image = image.id
        p.container_spec, p.container_image_id = spec, image.id
        return spec

    def stamp(self, phase: str) -> None:
        self.provisioner.phases.stamp(phase)

    def created(self, container_id: str) -> None:
        self.provisioner.container_id = container_id

    async def before_waiting(self) -> None:
        # A restart under a new request that may wait: its stopped container would book the
        # old GPUs all the while (and two such restarts could wait for each other's). Its state
        # is gone anyway: it goes first.
        await self.provisioner._remove_previous_container()

    async def from_warm_pool(self, spec: ContainerSpec) -> bool:
        return await start_from_pool(self.provisioner, self.image, spec)
