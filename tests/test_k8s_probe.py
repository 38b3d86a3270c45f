"""The readiness probe on Kubernetes, per image digest, on a real node (tests/k8s_node.py): the
probe of a listed image runs one short-lived pod, whose node says which content it ran
(containerStatus.imageID); the answer is kept under that digest (in memory and on disk), the
image's record and kernel spec carry it, and a second listing probes nothing. When the tag moves
to another image, a kernel pod that runs the new one tells the backend, the kernel specs are
listed again under the new digest, and the probe runs again for it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import DEBIAN_IMAGE
from k8s_cluster import TEST_IMAGE_LABEL, TEST_LABEL, TEST_RUN, ControlPlane, wait_for
from k8s_node import RealNode, containerd_image_name, node_backend
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from servers import wait_until
from service_process import KernelService, ServiceUser
from test_k8s_backend import service_kubeconfig  # noqa: F401 - a fixture

from jupyter_gpu_containers.backends.kubernetes.images import content_digest
from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.images.probe import KernelReadinessProbe
from jupyter_gpu_containers.kernel.kernelspecs import kernel_name_for, kernel_spec_dict

pytestmark = pytest.mark.timeout(600)


class ProbePods:
    """The readiness-probe pods made in a namespace from now on (they are deleted once they
    ran), seen by a watch as the cluster's admin, each with the imageID its node reported."""

    def __init__(self, control_plane: ControlPlane, namespace: str) -> None:
        self.core = client.CoreV1Api(control_plane.admin_client)
        self.namespace = namespace
        self.selector = f"{L.PROBE}=true"
        self._image_ids: dict[str, str] = {}  # pod name -> imageID ("" before its container ran)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        listed = self.core.list_namespaced_pod(namespace, label_selector=self.selector)
        self._version = listed.metadata.resource_version
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._version:  # the last version was too old (410): list again
                    listed = self.core.list_namespaced_pod(
                        self.namespace, label_selector=self.selector
                    )
                    for pod in listed.items:
                        self._record(pod)
                    self._version = listed.metadata.resource_version
                stream = watch.Watch().stream(
                    self.core.list_namespaced_pod,
                    self.namespace,
                    label_selector=self.selector,
                    resource_version=self._version,
                    timeout_seconds=2,
                )
                for event in stream:
                    if event["type"] == "ERROR":
                        self._version = ""
                        break
                    self._version = event["object"].metadata.resource_version or self._version
                    self._record(event["object"])
            except ApiException as e:
                if e.status == 410:
                    self._version = ""
                else:
                    self._stop.wait(0.5)  # the API went away for a moment: watch again

    def _record(self, pod: Any) -> None:
        statuses = (pod.status.container_statuses if pod.status else None) or []
        reported = next((s.image_id for s in statuses if s.image_id), "")
        with self._lock:
            known = self._image_ids.get(pod.metadata.name, "")
            self._image_ids[pod.metadata.name] = reported or known

    def image_ids(self) -> list[str]:
        """Each probe pod's imageID, in the order they were made."""
        with self._lock:
            return list(self._image_ids.values())

    def wait_for_count(self, count: int, timeout: float = 60) -> list[str]:
        wait_for(
            lambda: len(self.image_ids()) == count and all(self.image_ids()),
            timeout,
            f"not {count} probe pod(s) that ran: {self.image_ids()}",
        )
        return self.image_ids()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_a_listed_image_is_probed_by_one_pod_and_its_answer_kept_under_its_digest(
    control_plane: ControlPlane,
    real_node: RealNode,
    real_node_image: str,
    k8s_namespace: str,
    service_kubeconfig: str,  # noqa: F811
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    backend = node_backend(service_kubeconfig, k8s_namespace, real_node)
    backend.listed = lambda: [real_node_image]
    cache = tmp_path / "probes"
    probe = KernelReadinessProbe(
        backend=backend, extra_labels={TEST_LABEL: TEST_RUN}, cache_dir=str(cache)
    )
    pods = ProbePods(control_plane, k8s_namespace)
    try:
        (before,) = backend.list_images_sync()
        # No pod of it has run: there is no engine to ask, the reference is all there is.
        assert (before.id, before.tags) == (real_node_image, (real_node_image,))
        result = probe.probe_sync(before)
        assert result.ready, result.reason
        assert result.python_version.startswith("3.")
        (reported,) = pods.wait_for_count(1)
        # The node ran the image imported from Docker: containerd reports its config digest,
        # which is Docker's image id.
        digest = docker_client.images.get(DEBIAN_IMAGE).id
        assert content_digest(reported)[0] == digest
        assert result.image_id == digest
        # The image's record, and so its kernel spec, now carry the digest.
        (after,) = backend.list_images_sync()
        assert after.id == digest
        assert after.tags == (real_node_image,)
        assert after.repo_digests == ()  # imported, not pulled: the node gave no repo@sha256
        assert backend.inspect_image_sync(real_node_image).id == digest
        spec = kernel_spec_dict(real_node_image, after, probe=probe.cached(after.id))
        assert spec["metadata"]["gpu_containers"]["image_id"] == digest
        assert spec["display_name"].startswith("Python 3.")
        # A second listing finds the answer: no second probe pod.
        assert probe.cached(after.id) == result
        assert probe.probe_sync(after) == result
        assert asyncio.run(probe.probe(after)) == result
        # Never kept under the reference (a tag that moves would keep its old answer).
        assert probe.cached(real_node_image) is None
        # On disk under the digest: a restarted service's probe has it without a pod.
        assert (cache / f"sha256-{digest.split(':')[1]}.json").is_file()
        restarted = KernelReadinessProbe(
            backend=backend, extra_labels={TEST_LABEL: TEST_RUN}, cache_dir=str(cache)
        )
        assert restarted.cached(digest) == result
        assert len(pods.image_ids()) == 1
    finally:
        pods.close()
        probe.close()
        backend.close()


@pytest.fixture
def moving_tag(
    docker_client: docker.DockerClient, real_node: RealNode
) -> Iterator[tuple[str, list[str]]]:
    """A tag of the test's own, and the ids of the images it named: removed from Docker and
    from the node afterwards."""
    tag = f"jgc-test/probe-moving:{uuid.uuid4().hex[:12]}"
    ids: list[str] = []
    try:
        yield tag, ids
    finally:
        if ids:
            with contextlib.suppress(Exception):
                real_node.ctr("images", "rm", containerd_image_name(tag))
        for image_id in ids:
            remove_when_unused(docker_client, image_id)


def remove_when_unused(docker_client: docker.DockerClient, image_id: str) -> None:
    """Remove a Docker image this part built, once no container runs it. The other pytest
    session runs beside this one (scripts/test.sh), and its servers probe every kernel-ready
    image the engine has, this one included: Docker refuses to remove an image a running
    container uses (409, even forced), and a probe's container ends within its time limit
    (KernelReadinessProbe.timeout, 30 s by default)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            docker_client.images.remove(image_id, force=True)
            return
        except docker.errors.ImageNotFound:
            return
        except docker.errors.APIError as error:
            if error.status_code != 409 or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def build_and_import(
    docker_client: docker.DockerClient, node: RealNode, tag: str, ids: list[str], which: str
) -> tuple[str, str]:
    """A tiny image derived from the Debian test image (kernel-ready), tagged ``tag`` in Docker
    and on the node; (the node's name for it, its id)."""
    dockerfile = f"FROM {DEBIAN_IMAGE}\nLABEL org.jupyter.gpu-containers.test-moving={which}\n"
    image, _ = docker_client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()),
        tag=tag,
        rm=True,
        forcerm=True,
        labels={TEST_IMAGE_LABEL: TEST_RUN},  # a later run removes it if this one is killed
    )
    ids.append(str(image.id))
    return node.import_image(tag, again=True), str(image.id)


@pytest.fixture
def probe_service(
    control_plane: ControlPlane,
    k8s_namespace: str,
    service_kubeconfig: str,  # noqa: F811
    real_node: RealNode,
) -> Iterator[tuple[KernelService, ServiceUser]]:
    """A kernel service on the cluster (its readiness probes and kernels on the real node), with
    one user; its listed images are set by the test before it starts the service."""
    user = os.environ.get("JGC_TEST_USER", "")
    if not user:
        pytest.fail("JGC_TEST_USER names no account (scripts/test.sh creates one)")
    service = KernelService(
        {
            "ServiceApp": {"backend": "kubernetes"},
            "KubernetesBackend": {
                "kubeconfig": service_kubeconfig,
                "namespace": k8s_namespace,
                "node_selector": real_node.node_selector,
                "tolerations": [real_node.toleration],
                "startup_timeout": 180,
            },
            "KernelReadinessProbe": {"extra_labels": {TEST_LABEL: TEST_RUN}},
        }
    )
    try:
        yield service, service.add_user(user)
    finally:
        print("\n".join(service.output().splitlines()[-80:]))
        service.close()


def test_a_tag_that_moves_is_probed_again_under_its_new_digest(
    control_plane: ControlPlane,
    real_node: RealNode,
    k8s_namespace: str,
    docker_client: docker.DockerClient,
    moving_tag: tuple[str, list[str]],
    probe_service: tuple[KernelService, ServiceUser],
) -> None:
    tag, ids = moving_tag
    service, user = probe_service
    ref, first = build_and_import(docker_client, real_node, tag, ids, "first")
    name = kernel_name_for(ref)
    service.config["ImageCatalog"] = {"listed_images": [{"image": ref}]}
    service.config_file.write_text(json.dumps(service.config))
    pods = ProbePods(control_plane, k8s_namespace)
    probes = service.home / "data" / "gpu_containers" / "probes"

    async def spec_image_id() -> str:
        code, specs = await service.answer(user, "GET", "api/kernelspecs")
        assert code == 200, specs
        found: dict[str, Any] = specs["kernelspecs"].get(name) or {}
        return str(
            found.get("spec", {}).get("metadata", {}).get("gpu_containers", {}).get("image_id", "")
        )

    async def spec_says(image_id: str, timeout: float = 120) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        seen = await spec_image_id()
        while seen != image_id:
            assert asyncio.get_running_loop().time() < deadline, (
                f"the kernel spec of {ref} says image {seen!r}, not {image_id}"
            )
            await asyncio.sleep(0.5)
            seen = await spec_image_id()

    async def cache_files(*digests: str) -> None:
        wanted = sorted(f"sha256-{d[7:]}.json" for d in digests)

        async def kept() -> bool:
            return sorted(p.name for p in probes.iterdir()) == wanted if probes.is_dir() else False

        await wait_until(kept, 60, f"the probe's cache files {wanted}")

    async def scenario() -> None:
        # The service's first listing probes the image (one pod); its answer comes back under
        # the digest the node ran, and the kernel spec lists it.
        await spec_says(first)
        (reported,) = pods.wait_for_count(1)
        assert content_digest(reported)[0] == first
        # Kept on disk once the probe's answer is in (the spec shows the digest from the moment
        # the node reported it).
        await cache_files(first)
        # The tag moves, on the node too: a kernel started from the spec runs the new image.
        _, second = build_and_import(docker_client, real_node, tag, ids, "second")
        assert second != first
        assert len(pods.image_ids()) == 1  # nothing noticed it yet: no pod ran it
        kernel_id = await service.start_kernel(user, name)
        try:
            # Its pod told the backend: the spec is listed again under the new digest, and the
            # probe ran again for it (a second pod, which ran the new image).
            await spec_says(second)
            _, again = pods.wait_for_count(2)
            assert content_digest(again)[0] == second
            await cache_files(first, second)
            assert "is now " + second in service.output()
        finally:
            code, _ = await service.answer(user, "DELETE", f"api/kernels/{kernel_id}")
            assert code == 204

    try:
        service.start()
        asyncio.run(scenario())
    finally:
        pods.close()
        core = client.CoreV1Api(control_plane.admin_client)
        with contextlib.suppress(ApiException):
            wait_for(
                lambda: (
                    not core.list_namespaced_pod(
                        k8s_namespace, label_selector=f"{L.MANAGED}=true"
                    ).items
                ),
                60,
                "the kernel's pod was not deleted",
            )


def test_a_pinned_tag_is_refused_on_a_cluster_even_once_a_node_ran_the_pinned_image(
    real_node_image: str,
    docker_client: docker.DockerClient,
    probe_service: tuple[KernelService, ServiceUser],
) -> None:
    """ContainerPolicy.pinned_digests on a cluster: what one node last ran says nothing about
    what the next pulls for the tag, so only a digest in the reference meets a pin, and the
    refusal says how to list it."""
    service, user = probe_service
    digest = docker_client.images.get(DEBIAN_IMAGE).id
    service.config["ImageCatalog"] = {"listed_images": [{"image": real_node_image}]}
    service.config["ContainerPolicy"]["pinned_digests"] = {real_node_image: digest}
    service.config_file.write_text(json.dumps(service.config))
    name = kernel_name_for(real_node_image)

    async def scenario() -> None:
        # The probe's pod ran exactly the pinned content: the backend lists the tag under it.
        deadline = asyncio.get_running_loop().time() + 120
        while True:
            code, specs = await service.answer(user, "GET", "api/kernelspecs")
            assert code == 200, specs
            found = specs["kernelspecs"].get(name) or {}
            meta = found.get("spec", {}).get("metadata", {}).get("gpu_containers", {})
            if meta.get("image_id") == digest:
                break
            assert asyncio.get_running_loop().time() < deadline, f"no probe of {name}: {found}"
            await asyncio.sleep(0.5)
        code, refusal = await service.answer(user, "POST", "api/kernels", {"name": name})
        assert code == 403, refusal
        message = refusal["message"]
        assert "on a cluster each node resolves a tag by itself" in message, message
        assert f"@{digest}" in message, message

    service.start()
    asyncio.run(scenario())
