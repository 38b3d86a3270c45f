"""Two replicas of the kernel service on the cluster, one acting (ActiveLease: a
``coordination.k8s.io`` Lease, backends/kubernetes/lease.py), as deploy/kubernetes/service.yaml
runs them. Both are real service processes with the service account of rbac.yaml, against the
project's real control plane and node; the kernel is a real pod.

- The standby starts nothing: it answers its probes (``/api``) and refuses the rest with a
  sentence.
- The active replica paused (SIGSTOP: a frozen process, a node that stopped answering) past its
  lease: the standby takes the lease, reattaches the kernel's pod from the pod and its Secret
  (which it read while it waited), and the kernel's state is still there through it.
- The paused replica resumed (SIGCONT) with a shutdown of that kernel queued from before the
  pause: it acts on nothing (the fence, base/fence.py) and exits; the kernel is untouched. Two
  replicas never act at once.
- A clean stop gives the lease up: another replica takes over at its first look, not after
  the lease's duration.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hostusers import merged
from k8s_cluster import ControlPlane, service_account
from k8s_node import RealNode
from kernel_io import execute
from kubernetes import client
from servers import wait_until
from service_process import KernelService
from tornado.simple_httpclient import HTTPStreamClosedError

from jupyter_gpu_containers.backends.kubernetes.lease import STOOD_DOWN
from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.kernel.kernelspecs import kernel_name_for

REPO = Path(__file__).resolve().parent.parent
RBAC = REPO / "deploy" / "kubernetes" / "rbac.yaml"
LEASE = "jupyter-gpu-containers"  # ActiveLease.name's default

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def two_replicas(
    control_plane: ControlPlane,
    real_node: RealNode,
    real_node_image: str,
    k8s_namespace: str,
    tmp_path: Path,
) -> Iterator[tuple[KernelService, KernelService, str, str]]:
    """Two kernel services of one namespace, as the service account: the same configuration,
    the same users' tokens and workspaces, each with private directories of its own (a pod's
    emptyDirs). Neither is started."""
    username = os.environ.get("JGC_TEST_USER", "")
    if not username:
        pytest.fail("JGC_TEST_USER names no account (scripts/test.sh creates one)")
    with service_account(control_plane, k8s_namespace, RBAC, tmp_path) as kubeconfig:
        config = {
            # Users' kernels outlive a replica: the other one reattaches them.
            "ServiceApp": {"backend": "kubernetes", "keep_kernels_on_stop": True},
            "KubernetesBackend": {
                "kubeconfig": kubeconfig,
                "namespace": k8s_namespace,
                "node_selector": real_node.node_selector,
                "tolerations": [real_node.toleration],
                "workspace_volume": {"persistentVolumeClaim": {"claimName": "ws-{username}"}},
                "startup_timeout": 180,
            },
            "ImageCatalog": {"listed_images": [{"image": real_node_image}]},
            # One service: the id its kernel pods carry, the same in every replica (a Deployment's
            # pods have it from the same working directory).
            "ContainerPolicy": {"server_id": f"service-{k8s_namespace}"},
            # Shorter than the defaults (15, 10, 2): the pause below outlasts the lease sooner.
            # Still 6 s for a renewal to get through (1 s apart): a slow API server on a loaded
            # machine must not make the active replica stand down before the pause.
            "ActiveLease": {"lease_duration": 8.0, "renew_deadline": 6.0, "retry_period": 1.0},
        }
        replicas: list[KernelService] = []
        volume = ""
        try:
            first = KernelService(config)
            replicas.append(first)
            first.add_user(username)
            volume = control_plane.bind_claim(
                k8s_namespace, f"ws-{username}", first.home / "ws" / username
            )
            second = KernelService(
                merged(
                    config,
                    {
                        "ServiceTokens": {"tokens_file": str(first.tokens_file)},
                        "UserDirectory": first.config["UserDirectory"],
                    },
                )
            )
            replicas.append(second)
            second.users[username] = first.users[username]
            yield first, second, username, real_node_image
        finally:
            for replica in replicas:
                if replica.process is not None and replica.process.poll() is None:
                    os.kill(replica.process.pid, signal.SIGCONT)  # a failed test's paused one
                replica.close()
            if volume:  # never "": the client would delete every volume (a collection delete)
                control_plane.delete_volume(volume)


def kernel_pods(control_plane: ControlPlane, namespace: str) -> list[Any]:
    pods = (
        client.CoreV1Api(control_plane.admin_client)
        .list_namespaced_pod(namespace, label_selector=f"{L.MANAGED}=true")
        .items
    )
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def test_the_standby_takes_over_and_a_paused_active_replica_stands_down(
    control_plane: ControlPlane,
    k8s_namespace: str,
    two_replicas: tuple[KernelService, KernelService, str, str],
) -> None:
    first, second, username, image = two_replicas
    user = first.users[username]
    leases = client.CoordinationV1Api(control_plane.admin_client)

    def holder() -> str:
        return str(leases.read_namespaced_lease(LEASE, k8s_namespace).spec.holder_identity or "")

    async def run(service: KernelService, kernel_id: str, code: str) -> Any:
        ws = await service.websocket(user, kernel_id)
        try:
            return await execute(ws, code, timeout=60)
        finally:
            ws.close()

    async def scenario() -> None:
        first.start()
        assert first.process is not None
        assert "Active: this replica" in first.output()
        assert holder().endswith(f"_{first.process.pid}")

        # The second replica waits, starting nothing; its probe's path answers, nothing else.
        second.start(ready="Standby: the lease")
        assert second.process is not None
        code, body = await second.answer(None, "GET", "api")
        assert code == 200 and body["standby"] is True, (code, body)
        code, body = await second.answer(user, "GET", "api/kernels")
        assert code == 503 and "standby replica" in body["message"], (code, body)
        assert "Kernel containers at start" not in second.output()

        kernel_id = await first.start_kernel(user, kernel_name_for(image))
        assert (await run(first, kernel_id, "kept = 'still here'")).status == "ok"
        (pod,) = kernel_pods(control_plane, k8s_namespace)

        # The active replica stops answering, as a frozen process or node would.
        os.kill(first.process.pid, signal.SIGSTOP)
        try:
            # A client's shutdown of the kernel, sent to it while it is paused.
            queued = asyncio.ensure_future(first.answer(user, "DELETE", f"api/kernels/{kernel_id}"))

            async def took_over() -> bool:
                return "Kernel containers at start" in second.output()

            await wait_until(took_over, 180, "the standby to take over")
            assert "Active: this replica" in second.output()
            assert "reattached 1" in second.output(), second.output()
            # Its Secret read while the standby waited (KubernetesBackend.stand_by), not at
            # the takeover.
            assert "Secrets of 1 kernel pods were read while standing by" in second.output()
            assert holder().endswith(f"_{second.process.pid}")
            code, model = await second.answer(user, "GET", f"api/kernels/{kernel_id}")
            assert code == 200, (code, model)
            result = await run(second, kernel_id, "print(kept)")
            assert result.stdout.strip() == "still here", result
        finally:
            os.kill(first.process.pid, signal.SIGCONT)

        # Resumed, it acts on nothing: the queued shutdown is refused (or its process is gone
        # first), and it exits, leaving the kernel to the replica that holds the lease.
        try:
            code, body = await queued
        except (OSError, HTTPStreamClosedError):
            # Its process ended before it answered: the connection was reset, or closed before a
            # response began (which of the two depends on when the exit meets the request).
            code, body = 599, None
        assert code in (503, 599), (code, body)
        assert await asyncio.to_thread(first.process.wait, 60) == STOOD_DOWN, first.output()
        assert "lost the lease" in first.output(), first.output()
        (same,) = kernel_pods(control_plane, k8s_namespace)
        assert same.metadata.uid == pod.metadata.uid
        result = await run(second, kernel_id, "print(kept)")
        assert result.stdout.strip() == "still here", result

        # A clean stop gives the lease up, and the next replica acts at its first look.
        second.stop()
        assert "Released the lease" in second.output(), second.output()
        assert holder() == ""
        first.start()
        assert "Standby:" not in first.output(), first.output()
        assert "reattached 1" in first.output(), first.output()
        code, _ = await first.answer(user, "DELETE", f"api/kernels/{kernel_id}")
        assert code == 204

    asyncio.run(scenario())


def test_lease_settings_that_would_let_two_replicas_act_are_refused() -> None:
    from jupyter_gpu_containers.backends.kubernetes.k8s import KubernetesBackend
    from jupyter_gpu_containers.backends.kubernetes.lease import ActiveLease
    from jupyter_gpu_containers.base.errors import ContainerKernelError

    backend = KubernetesBackend()
    with pytest.raises(
        ContainerKernelError, match="retry_period < renew_deadline < lease_duration"
    ):
        ActiveLease(backend, renew_deadline=15.0, lease_duration=15.0)
    lease = ActiveLease(backend)
    assert (lease.lease_duration, lease.renew_deadline, lease.retry_period) == (15.0, 10.0, 2.0)
    # Never acted: the fence it would keep refuses, in a sentence.
    assert not lease.holding()
    assert "no longer holds the lease" in lease.refusal()


def test_the_fence_refuses_once_its_guard_says_so() -> None:
    from jupyter_gpu_containers.base import fence

    answer = [""]
    remove = fence.guard(lambda: answer[0])
    try:
        fence.check()  # may act
        answer[0] = "another replica acts now"
        with pytest.raises(fence.NotActive, match="another replica acts now") as refused:
            fence.check()
        assert refused.value.status == 503
        with pytest.raises(RuntimeError):
            fence.guard(lambda: "")  # one guard per process
    finally:
        remove()
    fence.check()


async def test_a_standby_answers_its_probes_and_refuses_the_rest() -> None:
    import logging

    from servers import free_port
    from tornado.httpclient import AsyncHTTPClient

    from jupyter_gpu_containers.service.standby import StandbyAnswers

    port = free_port()
    with StandbyAnswers("127.0.0.1", port, logging.getLogger("test")):
        http = AsyncHTTPClient()
        probe = await http.fetch(f"http://127.0.0.1:{port}/api", raise_error=False)
        assert probe.code == 200 and json.loads(probe.body)["standby"] is True
        other = await http.fetch(
            f"http://127.0.0.1:{port}/api/kernels", method="POST", body="{}", raise_error=False
        )
        assert other.code == 503
        assert "standby replica" in json.loads(other.body)["message"]
    # Gone once the replica acts: the service binds the same port.
    with socket.create_server(("127.0.0.1", port)):
        pass
