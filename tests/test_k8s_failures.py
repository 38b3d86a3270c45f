"""What a kernel pod's failures say, on a real node (tests/k8s_node.py): an image the node cannot
pull, a container that crashes, a kernel killed for memory; and a start that waits for room
(KubernetesBackend.unschedulable = "wait") and starts when a GPU frees. Each in the words the
Docker backend has for it."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from k8s_cluster import ControlPlane, wait_for
from k8s_node import RealNode, node_backend
from kubernetes import client
from test_k8s_backend import kernel_spec, service_kubeconfig  # noqa: F401 - a fixture

from jupyter_gpu_containers.backends.kubernetes.pods import SchedulingRefused
from jupyter_gpu_containers.base.errors import ImageMissing

pytestmark = pytest.mark.timeout(300)


def test_an_image_the_node_cannot_pull_is_said_so_and_the_pod_removed(
    control_plane: ControlPlane,
    real_node: RealNode,
    k8s_namespace: str,
    service_kubeconfig: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    backend = node_backend(service_kubeconfig, k8s_namespace, real_node)
    # A registry on a loopback port nothing listens on: the pull fails at once, offline.
    spec = dataclasses.replace(kernel_spec(tmp_path, name="pull"), image="127.0.0.1:9/jgc/absent:1")

    async def scenario() -> None:
        name = await backend.create(spec)
        with pytest.raises(ImageMissing) as missing:
            await backend.start(name, spec.image)
        sentence = str(missing.value)
        assert sentence.startswith(f"The node {real_node.name} could not pull the image")
        assert "127.0.0.1:9/jgc/absent:1" in sentence
        core = client.CoreV1Api(control_plane.admin_client)
        await asyncio.to_thread(
            wait_for,
            lambda: (
                name not in {p.metadata.name for p in core.list_namespaced_pod(k8s_namespace).items}
            ),
            60,
            f"the pod {name} was not removed",
        )

    try:
        asyncio.run(scenario())
    finally:
        backend.close()


def test_a_crash_and_an_oom_kill_end_the_pod_with_their_exit(
    control_plane: ControlPlane,
    real_node: RealNode,
    real_node_image: str,
    k8s_namespace: str,
    service_kubeconfig: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    backend = node_backend(service_kubeconfig, k8s_namespace, real_node)
    crash = dataclasses.replace(
        kernel_spec(tmp_path, name="crash"),
        image=real_node_image,
        command=["python3", "-c", "import sys; print('going down'); sys.exit(3)"],
        working_dir=None,
    )
    oom = dataclasses.replace(
        kernel_spec(tmp_path, name="oom"),
        image=real_node_image,
        command=["python3", "-c", "x = bytearray(400 * 2**20); print(len(x))"],
        working_dir=None,
        mem_limit="64m",
    )

    async def ended(name: str) -> object:
        for _ in range(600):
            state = await backend.state(name)
            if state is not None and state.ended:
                return state
            await asyncio.sleep(0.1)
        raise AssertionError(f"pod {name} did not end")

    async def scenario() -> None:
        crashed = await backend.create(crash)
        await backend.start(crashed, crash.image)
        state = await ended(crashed)
        assert (state.exit_code, state.oom_killed) == (3, False)  # type: ignore[attr-defined]
        assert "going down" in await backend.logs_tail(crashed)
        await backend.remove(crashed)
        killed = await backend.create(oom)
        await backend.start(killed, oom.image)
        state = await ended(killed)
        assert state.oom_killed is True, state  # type: ignore[attr-defined]
        assert state.exit_code == 137  # type: ignore[attr-defined]
        await backend.remove(killed)

    try:
        asyncio.run(scenario())
    finally:
        backend.close()


def test_a_start_that_may_wait_starts_when_a_gpu_frees(
    control_plane: ControlPlane,
    real_node: RealNode,
    real_node_image: str,
    k8s_namespace: str,
    service_kubeconfig: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The real node advertises 4 GPUs: four sleeping pods take them; a fifth, with the
    "refuse" policy, is refused with the scheduler's reason; with "wait", it starts once one of
    the four is deleted."""
    refusing = node_backend(service_kubeconfig, k8s_namespace, real_node)
    waiting = node_backend(service_kubeconfig, k8s_namespace, real_node, unschedulable="wait")

    def sleeper(i: int) -> object:
        return dataclasses.replace(
            kernel_spec(tmp_path, name=f"gpu{i}", gpus=1),
            image=real_node_image,
            command=["python3", "-c", "import time; time.sleep(600)"],
            working_dir=None,
        )

    async def scenario() -> None:
        holders = []
        for i in range(real_node.gpus):
            spec = sleeper(i)
            name = await refusing.create(spec)  # type: ignore[arg-type]
            await refusing.start(name, real_node_image)
            holders.append(name)
        refused = await refusing.create(sleeper(10))  # type: ignore[arg-type]
        with pytest.raises(SchedulingRefused, match=r"Insufficient nvidia\.com/gpu"):
            await refusing.start(refused, real_node_image)
        patient = await waiting.create(sleeper(11))  # type: ignore[arg-type]
        start = asyncio.ensure_future(waiting.start(patient, real_node_image))
        await asyncio.sleep(3)
        assert not start.done()
        await refusing.remove(holders.pop())
        await asyncio.wait_for(start, 120)
        state = await waiting.state(patient)
        assert state is not None and state.running
        for name in [*holders, patient]:
            await refusing.remove(name)

    try:
        asyncio.run(scenario())
    finally:
        refusing.close()
        waiting.close()
