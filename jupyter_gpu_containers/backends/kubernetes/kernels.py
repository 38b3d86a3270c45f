"""The API calls on a kernel's pod and its Secrets, blocking (the backend runs them on the
client's pool), each failure in its sentence: create a pod with its Secrets, delete it, read its
connection file back, its log, and list the pods by label.
"""

from __future__ import annotations

import base64
import contextlib
import json
from dataclasses import dataclass
from typing import Any

from kubernetes.client.rest import ApiException

from ...base.errors import EngineRefused
from .client import api_reason, refused
from .objects import CONNECTION_FILE_NAME, CONTAINER_NAME, connection_secret_name, owned_by


@dataclass(frozen=True)
class KernelPodCalls:
    """The calls in ``namespace``, each waiting ``api_timeout`` seconds at most for an answer."""

    namespace: str
    api_timeout: float

    def create(self, core: Any, pod: dict[str, Any], secrets: list[dict[str, Any]]) -> str:
        """Create ``pod``, then ``secrets`` owned by it; returns the pod's name."""
        name = pod["metadata"]["name"]
        # The pod first, then its Secrets, created owned by it: they go with it whoever deletes
        # it (and however), and no Secret ever exists without its owner. The kubelet retries the
        # Secret volume's mount until the Secret is there: the container waits for it.
        try:
            created = core.create_namespaced_pod(
                self.namespace, pod, _request_timeout=self.api_timeout
            )
        except ApiException as e:
            if e.status == 409:
                raise EngineRefused(
                    f"A pod named {name} already exists in namespace {self.namespace}."
                ) from e
            raise refused(f"create the kernel's pod {name}", e) from e
        except BaseException:
            # No answer (a timeout, a dropped connection): the API may have made the pod all
            # the same, and without its Secret it would wait forever, holding its GPU request
            # and counting against its user's cap. Its name is ours alone: delete it, if there.
            with contextlib.suppress(Exception):
                self.delete(core, name, grace=0)
            raise
        try:
            for secret in secrets:
                core.create_namespaced_secret(
                    self.namespace,
                    owned_by(secret, name, created.metadata.uid),
                    _request_timeout=self.api_timeout,
                )
        except BaseException as e:
            # Without its Secret the pod would wait forever: it goes (and its Secrets with it).
            with contextlib.suppress(Exception):
                self.delete(core, name, grace=0)
            if isinstance(e, ApiException):
                raise refused(f"create the kernel's Secret for pod {name}", e) from e
            raise
        return str(name)

    def delete(self, core: Any, name: str, *, grace: int) -> bool:
        """Delete the pod ``name`` (False: it was gone already)."""
        try:
            core.delete_namespaced_pod(
                name,
                self.namespace,
                grace_period_seconds=grace,
                propagation_policy="Background",
                _request_timeout=self.api_timeout,
            )
        except ApiException as e:
            if e.status == 404:
                return False
            raise refused(f"delete pod {name}", e) from e
        return True

    def remove(self, core: Any, name: str, *, grace: int) -> tuple[bool, Any]:
        """Delete the pod ``name`` and its Secrets: (whether this deleted it, the pod as it was
        read first; None when it was gone)."""
        try:
            pod = core.read_namespaced_pod(name, self.namespace, _request_timeout=self.api_timeout)
        except ApiException as e:
            if e.status != 404:
                raise refused(f"read pod {name}", e) from e
            pod = None
        removed = self.delete(core, name, grace=grace)
        # Owned by the pod, the Secrets go with it; deleted here too, so that nothing waits on
        # the garbage collector.
        for suffix in ("connection", "pull"):
            with contextlib.suppress(ApiException):
                core.delete_namespaced_secret(
                    f"{name}-{suffix}", self.namespace, _request_timeout=self.api_timeout
                )
        return removed, pod

    def connection(self, core: Any, name: str, pod_uid: str = "") -> dict[str, Any]:
        """The kernel's connection file from its Secret, trusted only when the pod owns it (an
        owner reference with the pod's uid, written by this service when it made both).
        ``pod_uid``: the pod's uid as the watch saw it (a replica taking over reattaches every
        pod: one read fewer each); the pod is read only when the Secret's owner is not that."""
        secret_name = connection_secret_name(name)
        try:
            secret = self.read_connection_secret(core, name)
            if not pod_uid or not owns(secret, pod_uid):
                # (A watch can lag: a pod of that name made again since is asked of the API.)
                pod = core.read_namespaced_pod(
                    name, self.namespace, _request_timeout=self.api_timeout
                )
                pod_uid = pod.metadata.uid
        except ApiException as e:
            raise EngineRefused(
                f"The kernel pod {name}'s connection Secret cannot be read: {api_reason(e)}"
            ) from e
        if not owns(secret, pod_uid):
            raise EngineRefused(f"The Secret {secret_name} is not the kernel pod's own.")
        return connection_of(secret)

    def read_connection_secret(self, core: Any, name: str) -> Any:
        """The connection Secret of the pod ``name`` (ApiException when it cannot be read)."""
        return core.read_namespaced_secret(
            connection_secret_name(name), self.namespace, _request_timeout=self.api_timeout
        )

    def log_tail(self, core: Any, name: str, lines: int) -> str:
        """The last ``lines`` of the kernel's log ("" when it has none to show)."""
        try:
            return str(
                core.read_namespaced_pod_log(
                    name,
                    self.namespace,
                    container=CONTAINER_NAME,
                    tail_lines=lines,
                    _request_timeout=self.api_timeout,
                )
            )
        except ApiException:
            return ""  # not started, or gone: no log to show

    def open_log(self, core: Any, name: str, tail: int, follow: bool) -> Any:
        """The kernel's log as a stream with timestamps (None: no log yet, or no pod)."""
        try:
            return core.read_namespaced_pod_log(
                name,
                self.namespace,
                container=CONTAINER_NAME,
                tail_lines=tail,
                follow=follow,
                timestamps=True,
                _preload_content=False,
                _request_timeout=(self.api_timeout, None),
            )
        except ApiException as e:
            if e.status in (400, 404):
                return None
            raise refused(f"read the log of pod {name}", e) from e

    def listing(self, core: Any, selector: str) -> list[Any]:
        """The namespace's pods that ``selector`` selects."""
        try:
            found = core.list_namespaced_pod(
                self.namespace, label_selector=selector, _request_timeout=self.api_timeout
            )
        except ApiException as e:
            raise refused("list the kernel pods", e) from e
        return list(found.items)


def owns(secret: Any, pod_uid: str) -> bool:
    """Whether the pod of uid ``pod_uid`` owns ``secret`` (its owner reference, which this
    service wrote when it made both)."""
    owners = secret.metadata.owner_references or []
    return any(o.kind == "Pod" and o.uid == pod_uid for o in owners)


def connection_of(secret: Any) -> dict[str, Any]:
    """The connection file a kernel's Secret holds (EngineRefused when it holds none)."""
    name = secret.metadata.name
    try:
        content = json.loads(base64.b64decode((secret.data or {})[CONNECTION_FILE_NAME]))
    except (KeyError, ValueError) as e:
        raise EngineRefused(f"The Secret {name} holds no connection file.") from e
    if not isinstance(content, dict):
        raise EngineRefused(f"The Secret {name} is not a connection.")
    return content
