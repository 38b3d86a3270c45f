"""One active kernel service among replicas: a ``coordination.k8s.io`` Lease in the namespace.

Two (or more) replicas of the service run; the one holding the Lease is active, the others wait
as standbys. The active one renews the Lease every ``retry_period`` seconds; a standby takes it
over once it has seen the same record, unrenewed, for ``lease_duration`` seconds, and then
reattaches every kernel pod from the pods and their Secrets, as a restarted service does.

Never two active at once:

- Time is each replica's own monotonic clock, never the record's timestamps (no clock skew
  counts): a standby counts ``lease_duration`` from when *it* last saw the record change. It
  need not wait that long when the holder's process has provably ended: the holder names its
  pod, and the kubelet reports the container that ran it exited or replaced (a kill, a crash,
  an OOM kill). A paused or unreachable replica gives no such proof.
- The active one may act only while its last successful renewal, counted from before the call
  was sent, is younger than ``renew_deadline`` (shorter than ``lease_duration``). That is the
  fence (base/fence.py): every kernel action and every API call of the backend asks it first.
  A replica paused past its lease and resumed finds its fence shut before it can act, whatever
  work it had queued.
- A replica that lost the Lease exits at once, without touching a kernel (its kernels are the
  new active replica's now); the Deployment restarts it, and it comes back as a standby.
- Updates carry the record's resourceVersion: of two replicas that try at once, the API server
  accepts one.

The active replica takes the label ROLE = "active" off any other pod of the service when it takes
the Lease, and puts it on its own once it answers (its kernels reattached); the Service selects
that label: users' servers reach the active replica only, never one still starting, and the
standby can stay Ready, so that a rollout completes.

Why a thread: renewals must go on while the event loop is busy (a slow request, a long JSON
encode), and the lease's calls have a client and connections of their own, so that the backend's
busy pool never delays a renewal.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from kubernetes import client as kclient
from kubernetes.client.rest import ApiException
from traitlets import Bool, Float, Unicode, default, validate
from traitlets.config import LoggingConfigurable
from traitlets.traitlets import TraitError

from ...base import fence
from ...base import labels as L
from ...base.errors import ContainerKernelError
from .client import KubernetesClient, api_reason

# On the service's own pod: "active" while its process holds the Lease (the Service selects it).
ROLE = L.PREFIX + "service-role"
# The pods of the service (deploy/kubernetes/service.yaml's labels), among which one is active.
SERVICE_PODS = "app.kubernetes.io/component=kernel-service"
# Exit status of a replica that lost the Lease (the Deployment restarts it as a standby).
STOOD_DOWN = 3


def _micro_time(moment: datetime) -> str:
    # MicroTime, always with six digits (datetime.isoformat drops them at .000000).
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ActiveLease(LoggingConfigurable):
    """Which replica of the kernel service acts (ServiceApp.backend = "kubernetes")."""

    enabled = Bool(
        True,
        config=True,
        help="""Run as one of several replicas, of which only the one holding a Lease
        (coordination.k8s.io) acts: it serves users, starts, culls and reattaches kernels; the
        others wait and take over when its Lease lapses (its pod died, its node went away, its
        process stopped answering). True (default) is right for one replica too: a second one
        started by mistake (a rollout, a scale) then waits instead of acting beside it. False:
        no Lease (the service account then needs no rights on leases).""",
    )
    name = Unicode(
        "jupyter-gpu-containers",
        config=True,
        help="The Lease's name, in KubernetesBackend.namespace.",
    )
    lease_duration = Float(
        15.0,
        config=True,
        help="""Seconds a standby waits, from when it last saw the Lease renewed, before it
        takes over. The time from the active replica's death to a standby acting is at most
        this plus retry_period.""",
    )
    renew_deadline = Float(
        10.0,
        config=True,
        help="""Seconds the active replica keeps acting after its last successful renewal:
        past them (the API server unreachable, the process paused) it refuses every action and
        stands down. Shorter than lease_duration, so that it has stopped before a standby
        starts.""",
    )
    retry_period = Float(
        2.0,
        config=True,
        help="Seconds between renewals, and between a standby's looks at the Lease.",
    )
    identity = Unicode(
        config=True,
        help="""This replica's name in the Lease's holderIdentity. Default: its pod's name (else
        the host's) and its process id, unique among live replicas. A standby reads the pod it
        names to see whether the holder's process has ended.""",
    )
    pod_name = Unicode(
        config=True,
        help="""The service's own pod, which the active replica labels so that the Service
        routes to it (deploy/kubernetes/service.yaml sets POD_NAME from the pod's name). Default:
        $POD_NAME; empty outside a cluster, where nothing is labelled.""",
    )

    @default("identity")
    def _default_identity(self) -> str:
        return f"{self.pod_name or socket.gethostname()}_{os.getpid()}"

    @default("pod_name")
    def _default_pod_name(self) -> str:
        return os.environ.get("POD_NAME", "")

    @validate("lease_duration", "renew_deadline", "retry_period")
    def _positive(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not value > 0:
            raise TraitError(f"ActiveLease.{proposal['trait'].name} must be above 0, not {value}.")
        return value

    def __init__(self, backend: Any, exit: Callable[[int], None] = os._exit, **kwargs: Any):
        super().__init__(**kwargs)
        if not self.retry_period < self.renew_deadline < self.lease_duration:
            # A deadline as long as the lease would let a standby act while this one still
            # does: two active replicas.
            raise ContainerKernelError(
                "ActiveLease's settings must have retry_period < renew_deadline < "
                f"lease_duration; they are {self.retry_period:g}, {self.renew_deadline:g} and "
                f"{self.lease_duration:g} s."
            )
        # The service's backend (services.py takes it over from here): a standby keeps its
        # watch of the kernel pods and reads their Secrets ahead (KubernetesBackend.stand_by).
        self.backend = backend
        self._namespace = str(backend.namespace)
        # A call that hangs must not outlast the deadline it serves (KubernetesBackend.
        # api_timeout is for the kernels' calls, 30 s by default).
        self._timeout = min(float(backend.api_timeout), max(1.0, self.renew_deadline / 2))
        # A client and connections of its own (above).
        self._client = KubernetesClient(backend)
        self._exit = exit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._remove_check: Callable[[], None] | None = None
        # The record as last seen (holder, renewTime, resourceVersion) and when (monotonic).
        self._seen: tuple[str, Any, str] | None = None
        self._seen_at = 0.0
        # When the last renewal that succeeded was sent (monotonic); 0: never.
        self._renewed_at = 0.0
        # The holder another replica is, and the container it was seen running in.
        self._holder_container: tuple[tuple[str, str], tuple[str, int]] | None = None

    # ------------------------------------------------------------------ the record

    def _coordination(self) -> Any:
        return kclient.CoordinationV1Api(self._client.api_client())

    def _spec(self, *, acquired: datetime, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, math.ceil(self.lease_duration)),
            "acquireTime": _micro_time(acquired),
            "renewTime": _micro_time(datetime.now(timezone.utc)),
            "leaseTransitions": transitions,
        }

    def _observe(self, holder: str, renewed: Any, version: str) -> None:
        record = (holder, renewed, version)
        if record != self._seen:
            self._seen, self._seen_at = record, time.monotonic()

    def try_acquire_or_renew(self) -> tuple[bool, str]:
        """One look at the Lease, taking or renewing it when this replica may (blocking).
        Returns whether this replica holds it now, and who does."""
        sent = time.monotonic()
        api = self._coordination()
        try:
            lease = api.read_namespaced_lease(
                self.name, self._namespace, _request_timeout=self._timeout
            )
        except ApiException as e:
            if e.status != 404:
                raise
            now = datetime.now(timezone.utc)
            body = {
                "metadata": {
                    "name": self.name,
                    "labels": {"app.kubernetes.io/name": "jupyter-gpu-containers"},
                },
                "spec": self._spec(acquired=now, transitions=0),
            }
            try:
                made = api.create_namespaced_lease(
                    self._namespace, body, _request_timeout=self._timeout
                )
            except ApiException as e2:
                if e2.status == 409:  # another replica made it first
                    return False, ""
                raise
            self._observe(self.identity, made.spec.renew_time, made.metadata.resource_version)
            self._renewed_at = sent
            return True, self.identity
        spec = lease.spec
        holder = spec.holder_identity or ""
        self._observe(holder, spec.renew_time, lease.metadata.resource_version)
        duration = float(spec.lease_duration_seconds or self.lease_duration)
        if (
            holder
            and holder != self.identity
            and time.monotonic() < self._seen_at + duration
            and not self._holder_ended(holder)
        ):
            return False, holder
        transitions = int(spec.lease_transitions or 0)
        if holder == self.identity and spec.acquire_time is not None:
            acquired = spec.acquire_time
        else:
            acquired, transitions = datetime.now(timezone.utc), transitions + 1
        body = {
            "metadata": {
                "name": self.name,
                "resourceVersion": lease.metadata.resource_version,
                "labels": lease.metadata.labels or {},
            },
            "spec": self._spec(acquired=acquired, transitions=transitions),
        }
        try:
            updated = api.replace_namespaced_lease(
                self.name, self._namespace, body, _request_timeout=self._timeout
            )
        except ApiException as e:
            if e.status == 409:  # changed since read: another replica's update won
                return False, holder
            raise
        self._observe(self.identity, updated.spec.renew_time, updated.metadata.resource_version)
        self._renewed_at = sent
        return True, self.identity

    def _holder_ended(self, holder: str) -> bool:
        """Whether the process holding the Lease has provably ended: the container it was seen
        running in has exited or been replaced since (the kubelet says so once the runtime has
        seen the process end). Then its Lease need not lapse: a dead process acts no more. A
        paused or unreachable process is no such proof; the Lease's time decides then."""
        pod_name, sep, _pid = holder.rpartition("_")
        if not sep or not pod_name or pod_name == self.pod_name:
            return False
        try:
            pod = self._client.core().read_namespaced_pod(
                pod_name, self._namespace, _request_timeout=self._timeout
            )
        except ApiException:
            return False  # not a pod (a service outside the cluster), or gone: no proof
        statuses = (pod.status.container_statuses or []) if pod.status else []
        if len(statuses) != 1:
            return False
        status = statuses[0]
        running = status.state is not None and status.state.running is not None
        key = (holder, str(pod.metadata.uid))
        container = (str(status.container_id or ""), int(status.restart_count or 0))
        if self._holder_container is None or self._holder_container[0] != key:
            # The first look at this holder: the container it runs in, if it runs now.
            self._holder_container = (key, container) if running else None
            return False
        return not running or self._holder_container[1] != container

    # ------------------------------------------------------------------ the fence

    def holding(self) -> bool:
        """Whether this replica may act now: its last renewal is younger than renew_deadline."""
        return bool(self._renewed_at) and time.monotonic() - self._renewed_at < self.renew_deadline

    def refusal(self) -> str:
        if self.holding():
            return ""
        return (
            f"This replica of the kernel service no longer holds the lease "
            f"{self._namespace}/{self.name} (not renewed for {self.renew_deadline:g} s): "
            "another replica serves users now. Your server reconnects to it by itself; try "
            "again in a few seconds."
        )

    # ------------------------------------------------------------------ standby, then active

    def _stand_by(self) -> None:
        stand_by = getattr(self.backend, "stand_by", None)
        if stand_by is None:
            return
        try:
            stand_by()
        except Exception as e:  # a takeover then lists and reads what it needs, as a start does
            self.log.warning("The standby does not follow the kernel pods ahead: %s", e)

    def _act(self) -> None:
        act = getattr(self.backend, "act", None)
        if act is not None:
            act()

    def acquire(self, waiting: Callable[[str], None] | None = None) -> None:
        """Block until this replica holds the Lease (before the service starts anything), then
        keep it from a thread of its own and shut the fence for this process when it is lost.
        ``waiting(holder)`` is called once if another replica holds it first."""
        told = False
        # Not routed to before it answers: a container restarted in the pod that was active
        # finds the label its predecessor left.
        self.unlabel_own_pod()
        while True:
            try:
                held, holder = self.try_acquire_or_renew()
            except ApiException as e:
                held, holder = False, ""
                self.log.warning("The lease %s could not be read: %s", self.name, api_reason(e))
            except Exception as e:  # the API server unreachable: a standby keeps looking
                held, holder = False, ""
                self.log.warning("The lease %s could not be read: %s", self.name, e)
            if held:
                break
            if not told and holder:
                told = True
                self.log.info(
                    "Standby: the lease %s/%s is held by %s. This replica takes over once it "
                    "is not renewed for %g s (ActiveLease.lease_duration).",
                    self._namespace,
                    self.name,
                    holder,
                    self.lease_duration,
                )
                if waiting is not None:
                    waiting(holder)
                self._stand_by()
            time.sleep(self.retry_period)
        self.log.info(
            "Active: this replica (%s) holds the lease %s/%s.",
            self.identity,
            self._namespace,
            self.name,
        )
        self._act()
        self._remove_check = fence.guard(self.refusal)
        # Users' connections stop reaching the other replicas now; they reach this one once it
        # answers (serving).
        self._unlabel_other_pods()
        self._thread = threading.Thread(target=self._keep, name="gpu-containers-lease", daemon=True)
        self._thread.start()

    def _keep(self) -> None:
        while not self._stop.wait(self.retry_period):
            if not self.holding():
                self._lost(
                    f"it was not renewed for {self.renew_deadline:g} s (ActiveLease.renew_deadline)"
                )
                return
            try:
                held, holder = self.try_acquire_or_renew()
            except Exception as e:  # unreachable for a while: the deadline decides
                self.log.warning("The lease %s was not renewed: %s", self.name, e)
                continue
            if not held and not self._stop.is_set():
                self._lost(f"{holder or 'another replica'} holds it now")
                return

    def _lost(self, why: str) -> None:
        self.log.critical(
            "This replica lost the lease %s/%s: %s. It stands down, leaving every kernel to the "
            "replica that holds it, and exits (the Deployment starts it again as a standby).",
            self._namespace,
            self.name,
            why,
        )
        for handler in logging.getLogger().handlers + list(getattr(self.log, "handlers", [])):
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        self._exit(STOOD_DOWN)

    # ------------------------------------------------------------------ the Service's label

    def _unlabel_other_pods(self) -> None:
        """No other pod of the service keeps the active label (a dead or paused replica's)."""
        if not self.pod_name:
            return
        core = self._client.core()
        try:
            pods = core.list_namespaced_pod(
                self._namespace,
                label_selector=f"{SERVICE_PODS},{ROLE}=active",
                _request_timeout=self._timeout,
            ).items
            for pod in pods:
                if pod.metadata.name != self.pod_name:
                    core.patch_namespaced_pod(
                        pod.metadata.name,
                        self._namespace,
                        {"metadata": {"labels": {ROLE: None}}},
                        _request_timeout=self._timeout,
                    )
        except ApiException as e:
            # Users would keep reaching a replica that refuses them: the process ends, and a
            # replica (this one again, or another) tries anew.
            self._lost(f"the other replicas' pods could not be unlabelled: {api_reason(e)}")

    def serving(self) -> None:
        """The service answers now (its kernels reattached): its pod is labelled active, which
        the Service selects, so users' connections reach it (blocking)."""
        if not self.pod_name:
            self.log.info(
                "Not in a pod (ActiveLease.pod_name is empty): no pod is labelled as the "
                "active replica."
            )
            return
        try:
            self._client.core().patch_namespaced_pod(
                self.pod_name,
                self._namespace,
                {"metadata": {"labels": {ROLE: "active"}}},
                _request_timeout=self._timeout,
            )
        except ApiException as e:
            self._lost(f"its pod {self.pod_name} could not be labelled active: {api_reason(e)}")
            return
        self.log.info("This replica's pod %s is labelled active: users reach it.", self.pod_name)

    def unlabel_own_pod(self) -> None:
        """Until it serves, a replica's pod does not carry the active label."""
        if not self.pod_name:
            return
        try:
            self._client.core().patch_namespaced_pod(
                self.pod_name,
                self._namespace,
                {"metadata": {"labels": {ROLE: None}}},
                _request_timeout=self._timeout,
            )
        except ApiException as e:
            self.log.warning(
                "This replica's pod %s could not be unlabelled: %s", self.pod_name, api_reason(e)
            )

    # ------------------------------------------------------------------ a clean stop

    def release(self) -> None:
        """At a clean stop: give the Lease up, so that a standby takes over at its next look
        instead of after lease_duration."""
        self._stop.set()
        if self._remove_check is None or not self.holding():
            return
        try:
            api = self._coordination()
            lease = api.read_namespaced_lease(
                self.name, self._namespace, _request_timeout=self._timeout
            )
            if lease.spec.holder_identity != self.identity:
                return
            body = {
                "metadata": {
                    "name": self.name,
                    "resourceVersion": lease.metadata.resource_version,
                    "labels": lease.metadata.labels or {},
                },
                "spec": {
                    "holderIdentity": "",
                    "leaseDurationSeconds": 1,
                    "renewTime": _micro_time(datetime.now(timezone.utc)),
                    "leaseTransitions": int(lease.spec.lease_transitions or 0),
                },
            }
            api.replace_namespaced_lease(
                self.name, self._namespace, body, _request_timeout=self._timeout
            )
            self.log.info("Released the lease %s/%s.", self._namespace, self.name)
        except Exception as e:  # it lapses by itself
            self.log.warning("The lease %s was not released: %s", self.name, e)
        finally:
            self._renewed_at = 0.0  # acts no more
            self._client.close()
