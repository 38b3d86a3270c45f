"""The image catalog over REST, and what it changes for kernels: readiness decides which images
are kernel specs, the allow-list and pinned digests refuse launches, and a GPU launch of an image
whose CUDA this driver cannot run is refused with the driver it needs. Real engine, real images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    CONDA_IMAGE,
    DEBIAN_IMAGE,
    NGC_IMAGE,
    NO_IPYKERNEL_IMAGE,
    assert_no_test_containers,
    install_spec,
    kernel_container,
    kernel_name,
)
from kernel_io import refusal, start_kernel, start_refusal

from jupyter_gpu_containers.base import labels as L

pytestmark = pytest.mark.usefixtures("docker_client")


async def catalog(jp_fetch: Any) -> dict[str, Any]:
    response = await jp_fetch("gpu-containers", "images", params={"wait": "1"})
    return json.loads(response.body)


async def specs(jp_fetch: Any) -> dict[str, Any]:
    return json.loads((await jp_fetch("api", "kernelspecs")).body)["kernelspecs"]


async def test_catalog_describes_local_and_listed_images(jp_fetch: Any) -> None:
    body = await catalog(jp_fetch)
    assert body["host"] == {
        "gpus": 4,
        "driver_version": "535.104.05",
        "cuda_driver_version": "12.2",
        "reason": "",
        "source": "static",
    }
    rows = {row["reference"]: row for row in body["images"]}

    ngc = rows[NGC_IMAGE]
    assert ngc["pulled"] and ngc["id"].startswith("sha256:") and ngc["size"] > 0
    assert ngc["created"] and ngc["digest"] == ""  # built here: no registry digest
    assert (ngc["framework"], ngc["framework_version"], ngc["framework_release"]) == (
        "PyTorch",
        "2.4.0a0",
        "24.05",
    )
    assert ngc["cuda_version"] == "12.2.2" and ngc["gpu"] is True
    assert ngc["verdict"]["outcome"] == "native", ngc["verdict"]
    assert ngc["kernel_ready"] is True and ngc["kernel_name"] == kernel_name(NGC_IMAGE)

    plain = rows[DEBIAN_IMAGE]
    assert plain["gpu"] is False and plain["verdict"]["outcome"] == "cpu-only"
    assert plain["kernel_ready"] is True and plain["python_version"].startswith("3.")
    assert plain["ipykernel_version"]

    conda = rows[CONDA_IMAGE]
    assert conda["kernel_ready"] is True and conda["python"].startswith("/opt/conda/")

    broken = rows[NO_IPYKERNEL_IMAGE]
    assert broken["kernel_ready"] is False and "ipykernel" in broken["kernel_ready_reason"]
    assert broken["kernel_name"] == ""

    # Listed, not pulled: what the reference and the list entry say, with a verdict.
    pai = rows["openpai/standard:python_3.6-pytorch_1.4.0-gpu"]
    assert not pai["pulled"] and pai["listed"] and pai["kernel_ready"] is None
    assert (pai["framework"], pai["framework_version"]) == ("PyTorch", "1.4.0")
    assert pai["cuda_version"] == "10.1" and pai["verdict"]["outcome"] == "native"
    ngc_2510 = rows["nvcr.io/nvidia/pytorch:25.10-py3"]
    assert ngc_2510["verdict"]["outcome"] == "compat"  # CUDA 13 on a 535 Tesla: forward compat
    assert "forward" in ngc_2510["verdict"]["reason"]
    assert rows["openpai/standard:python_3.6-pytorch_1.4.0-cpu"]["verdict"]["outcome"] == (
        "cpu-only"
    )


async def test_images_that_cannot_run_a_kernel_are_not_kernel_specs(jp_fetch: Any) -> None:
    await catalog(jp_fetch)  # probes every local image, as the image watcher would
    names = await specs(jp_fetch)
    for ready in (DEBIAN_IMAGE, NGC_IMAGE, CONDA_IMAGE):
        assert kernel_name(ready) in names
    assert kernel_name(NO_IPYKERNEL_IMAGE) not in names


async def test_a_launch_of_an_image_known_not_ready_fails_at_once(
    jp_fetch: Any, jp_data_dir: Path, docker_client: Any
) -> None:
    await catalog(jp_fetch)
    name = install_spec(jp_data_dir, "broken", NO_IPYKERNEL_IMAGE)
    code, message = await start_refusal(jp_fetch, name)
    assert code == 422
    assert f"The image {NO_IPYKERNEL_IMAGE} cannot run a kernel" in message
    assert "ipykernel" in message
    assert_no_test_containers(docker_client)


@pytest.mark.server_config(lambda tmp_path: {"ContainerPolicy": {"allowed_images": ["nvcr.io/*"]}})
async def test_allow_list_refuses_a_launch(
    jp_fetch: Any, jp_data_dir: Path, docker_client: Any
) -> None:
    assert kernel_name(DEBIAN_IMAGE) not in await specs(jp_fetch)
    rows = {r["reference"]: r for r in (await catalog(jp_fetch))["images"]}
    assert rows[DEBIAN_IMAGE]["allowed"] is False
    assert rows["nvcr.io/nvidia/pytorch:24.05-py3"]["allowed"] is True
    name = install_spec(jp_data_dir, "not-allowed", DEBIAN_IMAGE)  # a spec on disk: still refused
    code, message = await start_refusal(jp_fetch, name)
    assert code == 403
    assert f"The image {DEBIAN_IMAGE} is not in this server's allow-list" in message
    assert_no_test_containers(docker_client)


@pytest.mark.server_config(
    lambda tmp_path: {
        "ContainerPolicy": {"pinned_digests": {"jgc/debian-ipykernel:*": ["sha256:" + "0" * 64]}}
    }
)
async def test_a_pinned_digest_refuses_another_image(jp_fetch: Any, docker_client: Any) -> None:
    code, message = await start_refusal(jp_fetch, kernel_name(DEBIAN_IMAGE))
    assert code == 403
    assert "but an administrator pinned it to sha256:" in message
    assert docker_client.images.get(DEBIAN_IMAGE).id in message
    assert_no_test_containers(docker_client)


# GeForce boards: no forward compatibility (on a data-center board, 470 runs the NGC image's
# CUDA 12.2 through its cuda-compat libraries, which test_compat.py covers).
OLD_DRIVER = {
    "GPUInventory": {
        "static_gpus": [
            {"index": i, "uuid": f"GPU-test-{i}", "name": "GeForce RTX 3090", "brand": "geforce"}
            for i in range(4)
        ],
        "static_driver_version": "470.82.01",
        "static_cuda_version": "11.4",
    }
}


@pytest.mark.server_config(lambda tmp_path: OLD_DRIVER)
async def test_gpu_launch_of_an_image_this_driver_cannot_run_is_refused(
    jp_fetch: Any, jp_data_dir: Path, docker_client: Any
) -> None:
    rows = {r["reference"]: r for r in (await catalog(jp_fetch))["images"]}
    verdict = rows[NGC_IMAGE]["verdict"]
    assert verdict["outcome"] == "cannot-run" and verdict["needed_driver"] == "535.104.05"
    code, message = await start_refusal(jp_fetch, kernel_name(NGC_IMAGE))  # GPU image: 1 GPU
    assert code == 409
    assert "needs driver ≥ 535.104.05" in message and "470.82.01" in message
    assert "ask an administrator to let kernels start on images this check refuses" in message
    assert_no_test_containers(docker_client)

    # Its CPU code still runs: the same image without GPUs starts.
    cpu = install_spec(jp_data_dir, "ngc-cpu", NGC_IMAGE, gpus=0)
    kernel_id = await start_kernel(jp_fetch, cpu)
    assert kernel_container(docker_client, kernel_id).labels[L.GPUS] == ""
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")


@pytest.mark.server_config(
    lambda tmp_path: {**OLD_DRIVER, "ContainerPolicy": {"allow_incompatible_images": True}}
)
async def test_admin_may_allow_incompatible_images(jp_fetch: Any, docker_client: Any) -> None:
    kernel_id = await start_kernel(jp_fetch, kernel_name(NGC_IMAGE))
    assert kernel_container(docker_client, kernel_id).labels[L.GPUS].startswith("GPU-test-")
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")


def static_host(name: str, compute_capability: str, driver: str, cuda: str) -> dict[str, Any]:
    gpus = [
        {
            "index": i,
            "uuid": f"GPU-test-{i}",
            "name": name,
            "brand": "tesla",
            "compute_capability": compute_capability,
        }
        for i in range(2)
    ]
    return {
        "GPUInventory": {
            "static_gpus": gpus,
            "static_driver_version": driver,
            "static_cuda_version": cuda,
        }
    }


# Kepler boards on their last driver branch. The driver would run the NGC image's CUDA 12.2 through
# forward compatibility, but CUDA 12 has no code for compute capability 3.x.
KEPLER_REFUSAL = (
    "CUDA 12.2 does not support compute capability 3.7 (Tesla K80): it needs 5.0 or newer; "
    "images with CUDA 11.x support this GPU"
)


@pytest.mark.server_config(lambda tmp_path: static_host("Tesla K80", "3.7", "470.82.01", "11.4"))
async def test_gpu_launch_on_a_gpu_the_image_has_no_code_for_is_refused(
    jp_fetch: Any, docker_client: Any
) -> None:
    rows = {r["reference"]: r for r in (await catalog(jp_fetch))["images"]}
    assert rows[NGC_IMAGE]["verdict"] == {
        "outcome": "cannot-run",
        "reason": KEPLER_REFUSAL,
        "needed_driver": "",
    }
    code, message = await start_refusal(jp_fetch, kernel_name(NGC_IMAGE))  # GPU image: 1 GPU
    assert code == 409
    assert f"The image {NGC_IMAGE} cannot use this host's GPUs: {KEPLER_REFUSAL}." in message
    assert "ask an administrator to let kernels start on images this check refuses" in message
    assert_no_test_containers(docker_client)


@pytest.mark.server_config(
    lambda tmp_path: static_host("Tesla V100-SXM2-32GB", "7.0", "535.104.05", "12.2")
)
async def test_the_catalog_says_cuda_13_cannot_use_a_v100(jp_fetch: Any) -> None:
    rows = {r["reference"]: r for r in (await catalog(jp_fetch))["images"]}
    # Listed, not pulled: CUDA 13.0 from the list entry (forward compatibility before).
    assert rows["nvcr.io/nvidia/pytorch:25.10-py3"]["verdict"] == {
        "outcome": "cannot-run",
        "reason": "CUDA 13.0 does not support compute capability 7.0 (Tesla V100-SXM2-32GB): it "
        "needs 7.5 or newer; images with CUDA 12.x support this GPU",
        "needed_driver": "",
    }
    assert rows[NGC_IMAGE]["verdict"]["outcome"] == "native"  # CUDA 12.2


NO_GPUS = {"GPUInventory": {"source": "static", "static_gpus": []}}


@pytest.mark.server_config(lambda tmp_path: NO_GPUS)
async def test_without_gpus_gpu_images_say_so_and_still_run_cpu_kernels(
    jp_fetch: Any, docker_client: Any
) -> None:
    rows = {r["reference"]: r for r in (await catalog(jp_fetch))["images"]}
    verdict = rows[NGC_IMAGE]["verdict"]
    assert verdict["outcome"] == "no-gpus" and "CPU" in verdict["reason"]
    assert rows[DEBIAN_IMAGE]["verdict"]["outcome"] == "cpu-only"

    # The spec's default (one GPU for a GPU image) gives way: the kernel starts on the CPU.
    kernel_id = await start_kernel(jp_fetch, kernel_name(NGC_IMAGE))
    assert kernel_container(docker_client, kernel_id).labels[L.GPUS] == ""
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")

    # Asking for a GPU explicitly still fails, saying why.
    body = {"path": "nb.ipynb", "gpus": 1, "kernel_name": kernel_name(NGC_IMAGE)}
    code, message = await refusal(
        jp_fetch("gpu-containers", "notebooks", "kernel", method="POST", body=json.dumps(body))
    )
    assert code == 409
    assert "list of this server's GPUs is empty" in message
    assert_no_test_containers(docker_client)
