"""The server's driver of GPUReclaim (reclaim.py): idle GPUs given back.

Every ``GPUReclaim.check_interval`` seconds, on the event loop, it lists this server's container
kernels that hold GPUs (every user's, in a kernel service), hands their GPU use over the last
minutes (gpu_usage.py's history, sampled on the sampler's thread, which runs while any kernel
holds a GPU) to the state machine, and carries out what it decides:

- a warning: a line in the server log; the kernel's ``reclaim`` state (``GET
  /gpu-containers/kernels`` and the kernel's own view) says "warned", when its GPUs go, and why;
- a release: the kernel is shut down, or restarted without GPUs (as ``KernelRestartHandler``
  restarts a kernel under a new request, with an empty one), as the administrator chose. A
  restarted kernel's last end (its view, its log feed) and jupyter_server's ``reason`` of the
  kernel say that its GPUs were reclaimed and after how long; a shut-down kernel's record stays
  in ``GET /gpu-containers/kernels`` (``reclaimed``) for its user's panel to say it.

Started and stopped by the app (app.py), after recovery and before the kernels shut down. Off
unless ``GPUReclaim.enabled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import time
from typing import Any

from jupyter_server.utils import ensure_async

from ..gpus.allocator import GPURequest
from ..gpus.gpu_usage import UsageSample, unknown_reason
from ..gpus.reclaim import SHUTDOWN, Decision, GPUReclaim, Observation, duration_text, gpus_text
from ..kernel.launch_request import launching
from ..kernel.provisioner import ContainerProvisioner
from ..routes.kernel_view import container_kernels, launched_at, notebook_of
from ..services import Services
from .websocket import close_kernel_websockets


class Reclaimer:
    """Checks the server's GPU kernels for idleness at intervals, and gives idle GPUs back."""

    # How long the server's stop waits for a release under way (a restart) before cancelling it.
    stop_timeout = 30.0

    def __init__(self, services: Services, mkm: Any, log: logging.Logger) -> None:
        self.services = services
        self.mkm = mkm
        self.log = log
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._said_unmeasurable = False
        try:
            self._server_user = getpass.getuser()
        except Exception:  # no name for this uid (a container's anonymous user)
            self._server_user = ""

    @property
    def policy(self) -> GPUReclaim:
        return self.services.reclaim

    def start(self) -> bool:
        """Begin checking, if the administrator enabled GPUReclaim; whether it began."""
        if not self.policy.enabled or self._task is not None:
            return False
        policy = self.policy
        self.log.info(
            "jupyter_gpu_containers: GPUs idle for %s are reclaimed %s later (%s).",
            duration_text(policy.idle_minutes * 60),
            duration_text(policy.grace_minutes * 60),
            policy.action,
        )
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name="gpu-containers-reclaim")
        return True

    async def stop(self) -> None:
        """Stop checking; a release under way is let finish (up to ``stop_timeout``)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        try:
            await asyncio.wait_for(task, self.stop_timeout)
        except asyncio.TimeoutError:  # wait_for cancelled it
            self.log.warning("The GPU reclaim under way was cancelled: the server stops.")

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.policy.check_interval)
            if self._stop.is_set():
                return
            try:
                await self.check()
            except Exception as e:  # never let one failed check end the checking
                self.log.warning("Idle GPUs could not be checked: %s", e)

    # ------------------------------------------------------------------ one check

    async def check(self) -> list[Decision]:
        """One check: observe the GPU kernels, say the warnings, carry out the releases."""
        services = self.services
        inventory = await services.inventory.read()
        if inventory.source != "nvml":
            if not self._said_unmeasurable:
                self._said_unmeasurable = True
                self.log.warning(
                    "GPUReclaim is enabled, but no GPU is reclaimed: %s", unknown_reason(inventory)
                )
            return []
        self._said_unmeasurable = False
        observations = []
        for kernel_id, _km, provisioner in container_kernels(self.mkm, everyone=True):
            gpus = tuple(sorted(provisioner.gpu_uuids))
            if not gpus or not provisioner.container_id:
                continue  # no GPUs, or between the containers of a restart
            report = services.usage.report(kernel_id, gpus, inventory)
            samples = [
                UsageSample(s["at"], s["memory_used"], s["utilization"]) for s in report["samples"]
            ]
            owner = provisioner.owner
            observations.append(
                Observation(
                    kernel_id,
                    gpus,
                    samples,
                    held_since=report["since"] or launched_at(provisioner),
                    owner=owner,
                    user=owner.username if owner is not None else self._server_user,
                    notebook=notebook_of(provisioner),
                )
            )
        # A kernel without a sample for a few of the sampler's intervals is not judged.
        stale_after = 3 * max(0.1, services.usage.interval) + self.policy.check_interval
        decisions = self.policy.judge(observations, time.time(), stale_after)
        for decision in decisions:
            if decision.kind == "warn":
                self.log.warning("%s", decision.sentence)
            elif decision.kind == "cleared":
                self.log.info("%s", decision.sentence)
            else:
                await self._release(decision)
        return decisions

    async def _release(self, decision: Decision) -> None:
        """Give a kernel's GPUs back: shut it down, or restart it without GPUs."""
        kernel_id = decision.kernel_id
        found = {k: (km, p) for k, km, p in container_kernels(self.mkm, everyone=True)}
        if kernel_id not in found or tuple(sorted(found[kernel_id][1].gpu_uuids)) != decision.gpus:
            # Shut down or restarted meanwhile: the next check sees what it holds now.
            self.policy.not_released(kernel_id, time.time())
            return
        km, provisioner = found[kernel_id]
        action = self.policy.action
        sentence = decision.sentence
        # now=True: the container is stopped at once, not after the kernel's graceful shutdown
        # (up to its shutdown wait): the kernel's state is lost either way, and the GPUs are
        # meant for the next start within one check of the grace period's end.
        try:
            if action == SHUTDOWN:
                await ensure_async(self.mkm.shutdown_kernel(kernel_id, now=True))
            else:
                await restart_without_gpus(self.mkm, kernel_id, km, provisioner, sentence)
        except Exception as e:
            self.log.warning(
                "The GPUs of kernel %s could not be reclaimed (tried again in %s): %s",
                kernel_id,
                duration_text(self.policy.grace_minutes * 60),
                e,
            )
            self.policy.not_released(kernel_id, time.time())
            return
        self.policy.released(kernel_id, time.time(), action, sentence)
        self.log.warning(
            "Kernel %s: %s reclaimed after %s without GPU activity; the kernel was %s.",
            kernel_id,
            gpus_text(decision.gpus),
            duration_text(decision.idle_seconds),
            "shut down" if action == SHUTDOWN else "restarted without GPUs",
        )


async def restart_without_gpus(
    mkm: Any, kernel_id: str, km: Any, provisioner: ContainerProvisioner, sentence: str
) -> None:
    """Give kernel ``kernel_id``'s GPUs back by restarting it without GPUs, and say why.

    The restart is immediate (``now=True``): the kernel's memory is lost either way, and the
    GPUs are meant for the next start at once, not after the kernel's graceful shutdown. Its
    pages' websockets are closed (they reconnect to the new kernel), and ``sentence`` becomes
    the reason of the previous container's end (the kernel's own view, its log feed) and
    jupyter_server's ``reason`` of the kernel. Used by the reclaimer and by an administrator's
    release (admin_actions_view.py)."""
    old_container = provisioner.container_id
    with launching(gpus=GPURequest(), restart_of=kernel_id):  # nothing: the kernel's GPUs go
        await ensure_async(mkm.restart_kernel(kernel_id, now=True))
    close_kernel_websockets(kernel_id, sentence)
    # The restart recorded how the previous container ended: say why it did. A restart that
    # recorded none (or the new container's) still gets the old container's end.
    end = dict(provisioner.last_end or {})
    if end.get("container_id") != old_container:
        end = {"container_id": old_container, "exit_code": None, "oom_killed": False}
    # Not routine: the user lost the GPUs they were using, and must see it.
    provisioner.last_end = {**end, "reason": sentence, "at": time.time(), "routine": False}
    if hasattr(km, "reason"):
        km.reason = sentence  # jupyter_server's GET /api/kernels/<id> "reason"
