"""One-shot pods (the readiness probe's): made, waited on through the probe pods' reflector until
their container ended (no polling of the API), their log read, and deleted whatever happens.
"""

from __future__ import annotations

import contextlib
from typing import Any

from kubernetes.client.rest import ApiException

from ...base.records import ContainerState, OneshotResult
from .client import KubernetesClient, refused
from .images import content_digest
from .learned import LearnedImages
from .objects import CONTAINER_NAME
from .pods import created_at, kernel_status, pod_state, waiting_failure
from .watch import Reflector, WaitTimedOut


def read_probe_pod(core: Any, name: str, *, namespace: str, api_timeout: float) -> Any:
    """A probe pod straight from the API. Its absence is no answer (a probe pod is deleted only
    once it ran): the API's 404 goes up, as any refusal."""
    return core.read_namespaced_pod(name, namespace, _request_timeout=api_timeout)


def run_oneshot(
    client: KubernetesClient,
    reflector: Reflector,
    learned: LearnedImages,
    pod: dict[str, Any],
    *,
    ref: str,
    namespace: str,
    api_timeout: float,
    timeout: float,
) -> OneshotResult:
    """Create ``pod`` (a probe_pod of the image ``ref`` names), wait up to ``timeout`` seconds for
    its container to end, and return its log and the content id its node ran (learned for
    ``ref`` too). The pod is deleted whatever happens."""
    name = pod["metadata"]["name"]
    image = pod["spec"]["containers"][0]["image"]
    last: Any = None  # the pod as last seen: what a probe that timed out tells

    def ended(found: Any) -> ContainerState | None:
        nonlocal last
        last = found
        failure = waiting_failure(found, image)
        if failure is not None:
            raise failure
        state = pod_state(found)
        return state if state is not None and state.ended else None

    def run(core: Any) -> OneshotResult:
        # The create inside the try whose finally deletes: a create that timed out may have
        # made the pod all the same.
        try:
            try:
                core.create_namespaced_pod(namespace, pod, _request_timeout=api_timeout)
            except ApiException as e:
                raise refused(f"create a readiness-probe pod for {image}", e) from e
            timed_out, exit_code = True, -1
            if timeout > 0:
                # Fresh: the pod just made may reach the API before the watch brings it.
                with contextlib.suppress(WaitTimedOut):
                    state = reflector.wait_for_sync(core, name, ended, timeout, fresh=True)
                    timed_out, exit_code = False, state.exit_code
            found = last
            ran = kernel_status(found) if found is not None else None
            ran_id = str(ran.image_id or "") if ran is not None else ""
            if ran_id:
                # The watchers are not told: they would list the new id before the probe
                # has kept its answer under it, and probe it a second time. The probe's
                # caller has the answer (and the kernel specs list again when it comes).
                learned.learn(ref, ran_id, created_at(found), tell_watchers=False)
            try:
                log = str(
                    core.read_namespaced_pod_log(
                        name,
                        namespace,
                        container=CONTAINER_NAME,
                        tail_lines=500,
                        _request_timeout=api_timeout,
                    )
                )
            except ApiException:
                log = ""
            return OneshotResult(
                exit_code=exit_code,
                stdout=log,
                stderr="",
                timed_out=timed_out,
                image_id=content_digest(ran_id)[0],
            )
        finally:
            # Whatever went wrong: gone already (404), or a deletion that did not answer,
            # must not hide why the probe ended.
            with contextlib.suppress(Exception):
                core.delete_namespaced_pod(
                    name, namespace, grace_period_seconds=0, _request_timeout=api_timeout
                )

    return client.call(run)
