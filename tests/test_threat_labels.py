"""Attacks through labels (issue 61, finding 7): a student's image that carries the project's
labels (``org.jupyter.gpu-containers.managed=true``, ``…gpus=GPU-…``), whose containers (the
readiness probe's, a kernel's) would carry them too; a container someone in the docker group
makes with a real kernel's labels; an image whose probe fails, probed again and again. Against
the real kernel service (root) and engine, the students real accounts outside the docker group,
two static GPUs.

The mechanisms under attack: base/labels.py's container_labels (every backend's one create sets
every key of the namespace), image_record_labels (such images refused at launch, probe, build
and pull), gpus/allocator.py's holder records (the ledger believes only the service's own), and
the readiness probe's backoff (images/probe.py). Extend this file with every new label the
service reads from a container.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from conftest import (
    DEBIAN_IMAGE,
    STATIC_GPUS,
    TEST_IMAGE_LABEL,
    TEST_LABEL,
    TEST_RUN,
    kernel_container,
    kernel_name,
)
from hostusers import BOB, MALLORY, needs_accounts, run_as
from registry import PrivateRegistry
from servers import wait_until
from service_process import KernelService, ServiceUser

from jupyter_gpu_containers.base import labels as L

pytestmark = [needs_accounts, pytest.mark.usefixtures("docker_client")]

USER_A = os.environ.get("JGC_TEST_STUDENT_A") or MALLORY
USER_B = os.environ.get("JGC_TEST_STUDENT_B") or BOB
CPU_SPEC = kernel_name(DEBIAN_IMAGE)
TWO_GPUS = STATIC_GPUS[:2]
BOTH = ",".join(str(g["uuid"]) for g in TWO_GPUS)

FORGED = f"jgc-test/forged-labels:{TEST_RUN}"
FUTURE = f"jgc-test/future-label:{TEST_RUN}"
FAILING = f"jgc-test/failing-probe:{TEST_RUN}"
IMAGES = {
    # What a student builds to make every GPU look taken.
    FORGED: f"FROM {DEBIAN_IMAGE}\n"
    f'LABEL {L.MANAGED}="true" {L.GPUS}="{BOTH}" {L.KERNEL_ID}="forged" {L.UID}="0"\n',
    # A key of the namespace no record uses (yet): admitted, never in force on a container.
    FUTURE: f'FROM {DEBIAN_IMAGE}\nLABEL {L.PREFIX}future-key="forged"\n',
    # A probe that fails each time without an answer about the image.
    FAILING: f'FROM {DEBIAN_IMAGE}\nENTRYPOINT ["sh", "-c", "exit 3", "--"]\n',
}


@pytest.fixture
def images(docker_client: docker.DockerClient) -> Iterator[None]:
    for ref, dockerfile in IMAGES.items():
        docker_client.images.build(
            fileobj=io.BytesIO(dockerfile.encode()),
            tag=ref,
            labels={TEST_IMAGE_LABEL: TEST_RUN},
            rm=True,
        )
    yield
    for ref in IMAGES:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            docker_client.images.remove(ref, force=True)


@pytest.fixture
def service(images: None) -> Iterator[tuple[KernelService, ServiceUser, ServiceUser]]:
    made = KernelService(
        {
            "ServiceApp": {"build_policy": "everyone"},
            "GPUInventory": {"static_gpus": TWO_GPUS},
            "ImageSaves": {"extra_labels": {TEST_IMAGE_LABEL: TEST_RUN}, "build_network": False},
            # Its probes are the test run's containers too (the leak check counts them).
            "KernelReadinessProbe": {"extra_labels": {TEST_LABEL: TEST_RUN}},
        }
    )
    try:
        a = made.add_user(USER_A)
        b = made.add_user(USER_B)
        made.start()
        yield made, a, b
    finally:
        made.close()


async def free_report(server: KernelService, user: ServiceUser) -> list[Any]:
    code, report = await server.answer(user, "GET", "gpu-containers/gpus")
    assert code == 200, report
    return [h for g in report["gpus"] for h in g["holders"]]


def probes_of(server: KernelService, ref: str) -> int:
    """How many readiness probes of ``ref`` the service ran (its log's line for each)."""
    return len(re.findall(rf"Readiness probe of {re.escape(ref)} took", server.output()))


async def test_an_image_with_the_projects_labels_is_refused_everywhere(
    service: tuple[KernelService, ServiceUser, ServiceUser],
) -> None:
    server, a, b = service
    # The catalog's probes of what a is offered, waited for: the forged image's never runs.
    code, _catalog = await server.answer(a, "GET", "gpu-containers/images?wait=1")
    assert code == 200

    async def not_offered() -> bool:
        specs = (await server.answer(a, "GET", "api/kernelspecs"))[1]["kernelspecs"]
        return kernel_name(FORGED) not in specs

    await wait_until(not_offered, 60, "the forged image's kernel spec to go")
    code, refused = await server.answer(a, "POST", "api/kernels", {"name": kernel_name(FORGED)})
    assert code in (403, 404), (code, refused)
    # As a build's base: refused before anything is built.
    run_as(
        a.name,
        "import os, sys\nd = os.path.join(sys.argv[1], 'on-forged')\nos.mkdir(d)\n"
        "open(os.path.join(d, 'Dockerfile'), 'w').write('FROM ' + sys.argv[2] + '\\n')\n",
        str(a.workspace),
        FORGED,
    )
    code, refused = await server.answer(
        a, "POST", "gpu-containers/builds", {"path": "on-forged/Dockerfile"}
    )
    assert code == 403 and "labels that only this service" in refused["message"], refused
    assert probes_of(server, FORGED) == 0, server.output()[-3000:]
    # Nothing of it holds a GPU: the other student sees both free, and gets both.
    assert await free_report(server, b) == []
    request = {"KERNEL_GPU_CONTAINERS_REQUEST": "2"}
    code, model = await server.answer(b, "POST", "api/kernels", {"name": CPU_SPEC, "env": request})
    assert code == 201, model


async def test_a_kernel_container_carries_no_key_of_the_namespace_from_its_image(
    service: tuple[KernelService, ServiceUser, ServiceUser], docker_client: docker.DockerClient
) -> None:
    server, a, _b = service

    async def offered() -> bool:
        specs = (await server.answer(a, "GET", "api/kernelspecs"))[1]["kernelspecs"]
        return kernel_name(FUTURE) in specs

    await wait_until(offered, 60, "the image's kernel spec")
    kernel_id = await server.start_kernel(a, kernel_name(FUTURE))
    labels = kernel_container(docker_client, kernel_id).labels
    assert labels[f"{L.PREFIX}future-key"] == "", labels
    assert labels[L.KERNEL_ID] == kernel_id and labels[L.MANAGED] == "true"


async def test_a_container_with_a_real_kernels_labels_books_nothing(
    service: tuple[KernelService, ServiceUser, ServiceUser], docker_client: docker.DockerClient
) -> None:
    """Someone in the docker group copies a live GPU kernel's labels (its server's, its live
    process's) onto containers of their own: one as it is, one claiming both GPUs. Neither
    is a booking the service made."""
    server, a, b = service
    kernel_id = await server.start_kernel(a, CPU_SPEC, {"KERNEL_GPU_CONTAINERS_REQUEST": "1"})
    real = dict(kernel_container(docker_client, kernel_id).labels)
    assert real[L.GPUS] and real[L.OWNER_PROCESS]
    forged = []
    try:
        for labels in (
            {**real, TEST_LABEL: TEST_RUN},
            {**real, TEST_LABEL: TEST_RUN, L.GPUS: BOTH, L.KERNEL_ID: str(uuid.uuid4())},
            {**real, TEST_LABEL: TEST_RUN, L.GPUS: BOTH, L.UID: "0", L.USER: "root"},
        ):
            forged.append(
                docker_client.containers.run(DEBIAN_IMAGE, "sleep 600", labels=labels, detach=True)
            )
        code, _ = await server.answer(a, "DELETE", f"api/kernels/{kernel_id}")
        assert code == 204
        assert await free_report(server, b) == []
        request = {"KERNEL_GPU_CONTAINERS_REQUEST": "2"}
        code, model = await server.answer(
            b, "POST", "api/kernels", {"name": CPU_SPEC, "env": request}
        )
        assert code == 201, model
        assert [h["mine"] for h in await free_report(server, b)] == [True, True]
    finally:
        for container in forged:
            container.remove(force=True)


async def test_a_failing_probe_is_not_run_again_on_every_request(
    service: tuple[KernelService, ServiceUser, ServiceUser],
) -> None:
    server, a, _b = service
    for _ in range(3):
        code, catalog = await server.answer(a, "GET", "gpu-containers/images?wait=1")
        assert code == 200, catalog
    rows = [r for r in catalog["images"] if r["reference"] == FAILING]
    assert rows and "exited with code 3" in json.dumps(rows[0]), rows
    assert probes_of(server, FAILING) == 1, server.output()[-3000:]


async def test_a_pull_of_an_image_with_the_projects_labels_is_refused_and_removed(
    images: None, private_registry: PrivateRegistry, docker_client: docker.DockerClient
) -> None:
    ref = private_registry.push(FORGED, f"forged-{uuid.uuid4().hex[:8]}:1")
    server = KernelService({"ContainerPolicy": {"allowed_images": ["*", ref]}})
    try:
        a = server.add_user(USER_A)
        server.start()
        login = {"username": private_registry.username, "password": private_registry.password}
        code, pull = await server.answer(
            a, "POST", "gpu-containers/pulls", {"image": ref, "auth": login}
        )
        assert code == 202, pull

        async def ended() -> Any:
            _code, now = await server.answer(a, "GET", f"gpu-containers/pulls/{pull['id']}")
            return now if now["state"] not in ("queued", "pulling") else None

        done = await wait_until(ended, 120, "the pull's end")
        assert done["state"] == "error" and "labels that only" in done["message"], done
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(ref)
    finally:
        server.close()
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            docker_client.images.remove(ref, force=True)
