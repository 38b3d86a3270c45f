"""Units of the image catalog: references, the allow-list, credentials, pull progress folding and
catalog rows. Pure code, no engine (the real-engine and real-registry tests are in
test_images.py and test_pulls.py)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from jupyter_gpu_containers.base.errors import ImageNotAllowed
from jupyter_gpu_containers.base.records import ImageRecord
from jupyter_gpu_containers.base.references import BadReference, parse_reference
from jupyter_gpu_containers.gpus.inventory import GPU, Inventory
from jupyter_gpu_containers.images.catalog import (
    DEFAULT_LISTED_IMAGES,
    CatalogInputs,
    ImageCatalog,
    catalog_rows,
    cuda_from_reference,
    describe_image,
    framework_from_reference,
    gpu_from_reference,
    listed_environment,
)
from jupyter_gpu_containers.images.credentials import Credential, RegistryCredentials, scrub
from jupyter_gpu_containers.images.probe import ProbeResult
from jupyter_gpu_containers.images.pulls import Pull
from jupyter_gpu_containers.kernel.kernelspecs import display_name_for, kernel_spec_dict
from jupyter_gpu_containers.policy.admin_policy import ContainerPolicy, check_image_allowed
from jupyter_gpu_containers.routes.cluster_view import _Node, _Pool, cluster_verdict, pool_verdict

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "name"),
    [
        ("ubuntu", "docker.io", "library/ubuntu", "latest", "ubuntu"),
        ("ubuntu:22.04", "docker.io", "library/ubuntu", "22.04", "ubuntu"),
        (
            "openpai/standard:python_3.6-pytorch_1.4.0-gpu",
            "docker.io",
            "openpai/standard",
            "python_3.6-pytorch_1.4.0-gpu",
            "openpai/standard",
        ),
        (
            "nvcr.io/nvidia/pytorch:24.05-py3",
            "nvcr.io",
            "nvidia/pytorch",
            "24.05-py3",
            "nvcr.io/nvidia/pytorch",
        ),
        ("127.0.0.1:5000/jgc/x:1", "127.0.0.1:5000", "jgc/x", "1", "127.0.0.1:5000/jgc/x"),
        ("localhost/x", "localhost", "x", "latest", "localhost/x"),
    ],
)
def test_references_read_like_the_engine(
    text: str, registry: str, repository: str, tag: str, name: str
) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.name) == (registry, repository, tag, name)
    assert ref.pull_tag == tag


def test_digest_references_pull_by_digest() -> None:
    ref = parse_reference(f"nvcr.io/nvidia/pytorch@{DIGEST}")
    assert ref.digest == DIGEST and ref.tag == "" and ref.pull_tag == DIGEST


@pytest.mark.parametrize("bad", ["", "UPPER/case", "a b", "x:", "x@sha256:short", "../etc"])
def test_bad_references_are_refused(bad: str) -> None:
    with pytest.raises(BadReference, match="not an image reference"):
        parse_reference(bad)


def test_allow_list_patterns_match_written_and_qualified_forms() -> None:
    policy = ContainerPolicy(allowed_images=["nvcr.io/nvidia/*", "docker.io/library/ubuntu:*"])
    check_image_allowed(policy, "nvcr.io/nvidia/pytorch:24.05-py3")
    check_image_allowed(policy, "ubuntu:22.04")  # docker.io/library/ubuntu:22.04
    with pytest.raises(ImageNotAllowed, match=r"not in this server's allow-list") as e:
        check_image_allowed(policy, "evil/miner:latest")
    assert e.value.status == 403


def test_pinned_digests_admit_only_the_pinned_image() -> None:
    policy = ContainerPolicy(pinned_digests={"nvcr.io/nvidia/pytorch:*": [DIGEST]})
    check_image_allowed(policy, "nvcr.io/nvidia/pytorch:24.05-py3", None)  # before a pull
    check_image_allowed(
        policy, "nvcr.io/nvidia/pytorch:24.05-py3", [f"nvcr.io/nvidia/pytorch@{DIGEST}"]
    )
    with pytest.raises(ImageNotAllowed, match=r"an administrator pinned it to sha256:abab") as e:
        check_image_allowed(policy, "nvcr.io/nvidia/pytorch:24.05-py3", [OTHER])
    assert e.value.setting == "ContainerPolicy.pinned_digests"
    check_image_allowed(policy, "ubuntu:22.04", [OTHER])  # no pin applies


def test_credentials_never_show_their_secret() -> None:
    store = RegistryCredentials(
        registry_auth={"nvcr.io": {"username": "$oauthtoken", "password": "admin-secret-1"}}
    )
    store.set_user("127.0.0.1:5000", "alice", "user-secret-2")
    cred = store.for_registry("127.0.0.1:5000")
    assert cred is not None and cred.auth_config() == {
        "username": "alice",
        "password": "user-secret-2",
    }
    assert "user-secret-2" not in repr(cred)
    listing = repr(store.listing())
    assert "secret" not in listing and "$oauthtoken" not in listing
    assert {row["registry"] for row in store.listing()} == {"nvcr.io", "127.0.0.1:5000"}
    assert store.forget_user("127.0.0.1:5000") and store.for_registry("127.0.0.1:5000") is None
    admin = store.for_registry("nvcr.io")
    assert admin is not None and admin.source == "admin"
    assert scrub("said admin-secret-1 twice admin-secret-1", [admin.password]) == (
        "said •••• twice ••••"
    )


def test_admin_password_file_is_read_at_pull_time(tmp_path: object) -> None:
    from pathlib import Path

    secret = Path(str(tmp_path)) / "key"
    secret.write_text("from-file\n")
    store = RegistryCredentials(
        registry_auth={"nvcr.io": {"username": "$oauthtoken", "password_file": str(secret)}}
    )
    cred = store.for_registry("nvcr.io")
    assert cred == Credential("nvcr.io", "$oauthtoken", "from-file", "admin")
    with pytest.raises(Exception, match="needs a password"):
        RegistryCredentials(registry_auth={"x.io": {"username": "u"}})


def test_pull_progress_folds_engine_messages() -> None:
    async def run() -> Pull:
        pull = Pull(id="p", image="127.0.0.1:5000/x:1", registry="127.0.0.1:5000")
        for event in [
            {"status": "Pulling from x", "id": "1"},
            {"status": "Already exists", "progressDetail": {}, "id": "base"},
            {"status": "Pulling fs layer", "progressDetail": {}, "id": "l1"},
            {"status": "Pulling fs layer", "progressDetail": {}, "id": "l2"},
            {"status": "Downloading", "progressDetail": {"current": 50, "total": 200}, "id": "l1"},
            {"status": "Downloading", "progressDetail": {"current": 10, "total": 100}, "id": "l2"},
        ]:
            pull.apply(event)
        return pull

    pull = asyncio.run(run())
    snap = pull.snapshot()
    assert snap["phase"] == "downloading"
    assert (snap["downloaded_bytes"], snap["total_bytes"]) == (60, 300)
    pull.apply({"status": "Download complete", "progressDetail": {}, "id": "l1"})
    pull.apply({"status": "Extracting", "progressDetail": {"current": 5, "total": 200}, "id": "l1"})
    snap = pull.snapshot()
    assert snap["phase"] == "extracting" and snap["downloaded_bytes"] == 210
    for layer in ("l1", "l2"):
        pull.apply({"status": "Pull complete", "progressDetail": {}, "id": layer})
    pull.apply({"status": f"Digest: {DIGEST}"})
    snap = pull.snapshot()
    assert snap["phase"] == "complete" and snap["digest"] == DIGEST
    assert snap["extracted_layers"] == 3 and snap["progress"] == 1.0


@pytest.mark.parametrize(
    ("ref", "cuda", "gpu"),
    [
        ("nvidia/cuda:12.2.2-cudnn8-runtime-ubuntu22.04", "12.2.2", True),
        ("quay.io/jupyter/pytorch-notebook:cuda12-latest", "12", True),
        ("pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime", "12.1", True),
        ("x/y:torch-cu118", "11.8", True),
        ("openpai/standard:python_3.6-pytorch_1.4.0-gpu", "", True),
        ("openpai/standard:python_3.6-pytorch_1.4.0-cpu", "", False),
        ("ubuntu:22.04", "", None),
    ],
)
def test_what_a_reference_says(ref: str, cuda: str, gpu: bool | None) -> None:
    assert cuda_from_reference(ref) == cuda
    assert gpu_from_reference(ref) is gpu


def test_openpai_tags_name_their_framework() -> None:
    fw = framework_from_reference("openpai/standard:python_3.6-tensorflow_1.15.0-gpu")
    assert fw is not None and (fw.name, fw.version) == ("TensorFlow", "1.15.0")


def test_default_list_covers_the_seed_families() -> None:
    refs = [entry["image"] for entry in ImageCatalog().listed()]
    for family in (
        "nvcr.io/nvidia/pytorch:",
        "nvcr.io/nvidia/tensorflow:",
        "tensorflow/tensorflow:",
        "quay.io/jupyter/",
        "openpai/standard:",
    ):
        assert any(ref.startswith(family) for ref in refs), family
    gpu = [e for e in DEFAULT_LISTED_IMAGES if "-gpu" in e["image"]]
    cpu = [e for e in DEFAULT_LISTED_IMAGES if e.get("gpu") is False]
    assert gpu and cpu
    # Admins extend the list without losing the defaults, and can replace it.
    assert len(ImageCatalog(extra_listed_images=["a/b:1"]).listed()) == len(refs) + 1
    assert [e["image"] for e in ImageCatalog(listed_images=["a/b"]).listed()] == ["a/b:latest"]


def _host(driver: str, cuda: str, brand: str = "tesla") -> Inventory:
    gpu = GPU(index="0", uuid="GPU-0", name="GPU", brand=brand, compute_capability="8.0")
    return Inventory("static", (gpu,), driver, cuda)


def _image(ref: str, env: dict[str, str], image_id: str = "sha256:" + "11" * 32) -> ImageRecord:
    return ImageRecord(
        id=image_id,
        tags=(ref,),
        labels={},
        env=env,
        entrypoint=(),
        user="",
        created="2026-11-22T00:00:00Z",
        size=123,
        repo_digests=(f"{ref.rsplit(':', 1)[0]}@{DIGEST}",),
    )


def test_catalog_rows_for_local_and_listed_images() -> None:
    ngc = _image(
        "nvcr.io/nvidia/pytorch:24.05-py3",
        {
            "CUDA_VERSION": "12.4.1.003",
            "CUDA_DRIVER_VERSION": "550.54.15",
            "NVIDIA_REQUIRE_CUDA": "cuda>=9.0",
            "NVIDIA_PRODUCT_NAME": "PyTorch",
            "NVIDIA_PYTORCH_VERSION": "24.05",
            "PYTORCH_VERSION": "2.4.0a0+07cecf4",
        },
    )
    probe = ProbeResult(
        image_id=ngc.id,
        ready=True,
        reason="",
        python="/usr/bin/python3",
        python_version="3.10.12",
        ipykernel_version="6.29.4",
        frameworks={"torch": "2.4.0a0+07cecf4"},
        probed_at=0.0,
        definitive=True,
    )
    inputs = CatalogInputs(
        images=[ngc],
        listed=ImageCatalog(
            listed_images=[
                "nvcr.io/nvidia/pytorch:24.05-py3",
                {
                    "image": "openpai/standard:python_3.6-pytorch_1.4.0-gpu",
                    "cuda": "10.1",
                    "driver": "418.39",
                    "description": "OpenPAI PyTorch",
                },
                "openpai/standard:python_3.6-pytorch_1.4.0-cpu",
            ]
        ).listed(),
        inventory=_host("535.104.05", "12.2", brand="geforce"),
        probes={ngc.id: probe},
        policy=ContainerPolicy(allowed_images=["nvcr.io/*", "openpai/*"]),
        kernel_names={"nvcr.io/nvidia/pytorch:24.05-py3": "gpuc-x"},
    )
    rows = {row["reference"]: row for row in catalog_rows(inputs)}
    assert len(rows) == 3
    local = rows["nvcr.io/nvidia/pytorch:24.05-py3"]
    assert local["pulled"] and local["listed"] and local["digest"] == DIGEST
    assert (local["framework"], local["framework_release"]) == ("PyTorch", "24.05")
    assert local["cuda_version"].startswith("12.4") and local["gpu"] is True
    assert local["kernel_ready"] is True and local["python_version"] == "3.10.12"
    assert local["kernel_name"] == "gpuc-x" and local["allowed"] is True
    # 12.4 on a 12.2 driver of a GeForce: minor-version compatibility at best.
    assert local["verdict"]["outcome"] in ("compat", "cannot-run")
    pai = rows["openpai/standard:python_3.6-pytorch_1.4.0-gpu"]
    assert not pai["pulled"] and pai["kernel_ready"] is None and pai["size"] is None
    assert pai["gpu"] and pai["cuda_version"] == "10.1" and pai["framework"] == "PyTorch"
    # 535 runs CUDA 10.1, which predates this GPU's Ampere (8.0): only PTX runs there.
    assert pai["verdict"]["outcome"] == "compat" and "PTX JIT" in pai["verdict"]["reason"]
    assert pai["description"] == "OpenPAI PyTorch"
    cpu = rows["openpai/standard:python_3.6-pytorch_1.4.0-cpu"]
    assert cpu["gpu"] is False and cpu["verdict"]["outcome"] == "cpu-only"
    assert listed_environment({"image": "x:1", "cuda": "12.2", "driver": "535.104.05"}) == {
        "CUDA_VERSION": "12.2",
        "CUDA_DRIVER_VERSION": "535.104.05",
    }


def test_catalog_marks_disallowed_images() -> None:
    inputs = CatalogInputs(
        images=[_image("evil/miner:latest", {})],
        listed=[],
        inventory=Inventory("none", reason="no driver"),
        probes={},
        policy=ContainerPolicy(allowed_images=["nvcr.io/*"]),
        kernel_names={},
    )
    (row,) = catalog_rows(inputs)
    assert row["allowed"] is False and "allow-list" in row["allowed_reason"]
    assert row["kernel_ready"] is None and "probe" in row["kernel_ready_reason"]


def _probed(frameworks: dict[str, str], python_version: str = "3.11.2") -> ProbeResult:
    return ProbeResult(
        image_id="sha256:" + "11" * 32,
        ready=True,
        reason="",
        python="/usr/bin/python3",
        python_version=python_version,
        ipykernel_version="6.29.4",
        frameworks=frameworks,
        probed_at=0.0,
        definitive=True,
    )


@pytest.mark.parametrize(
    ("ref", "env", "probe", "expected"),
    [
        # What the image says of itself wins (NGC's release), probe or not.
        (
            "nvcr.io/nvidia/pytorch:24.05-py3",
            {"NVIDIA_PRODUCT_NAME": "PyTorch", "NVIDIA_PYTORCH_VERSION": "24.05"},
            _probed({"torch": "2.4.0a0"}),
            "PyTorch 24.05",
        ),
        # A framework only the probe found, most specific first (torch before keras).
        ("me/train:1", {}, _probed({"torch": "2.3.1", "keras": "3.3.3"}), "PyTorch 2.3.1"),
        ("me/tf:1", {}, _probed({"tensorflow": "2.15.0"}), "TensorFlow 2.15.0"),
        # A tag that names the framework but no version: the probe's version completes it.
        ("me/pytorch:gpu", {}, _probed({"torch": "2.3.1"}), "PyTorch 2.3.1"),
        # No framework: the Python version the probe found.
        ("jgc/demo:bookworm", {}, _probed({}), "Python 3.11"),
        ("old/pai:py27", {}, _probed({}, python_version="2.7.18"), "Python 2.7"),
        # Not probed yet (or a probe without a version): what is known without one.
        ("jgc/demo:bookworm", {}, None, "Python 3"),
        ("jgc/demo:bookworm", {}, _probed({}, python_version=""), "Python 3"),
    ],
)
def test_display_names_carry_framework_or_python_version(
    ref: str, env: dict[str, str], probe: ProbeResult | None, expected: str
) -> None:
    assert display_name_for(ref, _image(ref, env), probe) == f"{expected} · {ref}"


def test_a_probe_answer_changes_the_display_name_only() -> None:
    ref = "me/train:1"
    before = kernel_spec_dict(ref, _image(ref, {}))
    after = kernel_spec_dict(ref, _image(ref, {}), probe=_probed({"torch": "2.3.1"}))
    assert (before["display_name"], after["display_name"]) == (
        f"Python 3 · {ref}",
        f"PyTorch 2.3.1 · {ref}",
    )
    assert after["metadata"]["gpu_containers"]["framework"] == "PyTorch"
    assert before["metadata"]["kernel_provisioner"] == after["metadata"]["kernel_provisioner"]


# One description of an image for the images list, its kernel spec and the cluster view: on
# Kubernetes (no engine reads the image's environment) the administrator's list entry decides
# exactly as the image's own environment does on Docker.

# An NGC-like image whose reference says nothing of CUDA or GPUs, listed as a CUDA 12.4 build.
HIDDEN_NGC = {"image": "registry.example.org/course/dl:24.05-py3", "gpu": True, "cuda": "12.4.1"}


def _listed_hidden() -> dict[str, Any]:
    (entry,) = ImageCatalog(listed_images=[HIDDEN_NGC]).listed()
    return entry


def test_a_listed_gpu_image_is_a_gpu_build_without_its_environment() -> None:
    entry = _listed_hidden()
    ref = entry["image"]
    described = describe_image(ref, {}, entry)
    assert (described.gpu, described.cuda) == (True, "12.4.1")
    # The same with no record at all (not pulled): the images list's two kinds of row agree.
    assert describe_image(ref, None, entry) == described
    # Its kernel spec asks for one GPU, as a pulled CUDA image's does on Docker.
    spec = kernel_spec_dict(ref, _image(ref, {}), listed=entry)
    assert spec["metadata"]["kernel_provisioner"]["config"]["gpus"] == 1
    assert spec["metadata"]["gpu_containers"]["gpu"] is True
    # Unlisted, the reference alone says nothing: a CPU build (what Kubernetes got before).
    assert describe_image(ref, {}, None).gpu is False
    assert (
        kernel_spec_dict(ref, _image(ref, {}))["metadata"]["kernel_provisioner"]["config"]["gpus"]
        == 0
    )


def test_the_images_list_and_the_cluster_view_agree_on_a_listed_image() -> None:
    entry = _listed_hidden()
    ref = entry["image"]
    host = _host("550.54.15", "12.4")
    # As the backend on Kubernetes lists it: the reference as its id, no environment.
    record = ImageRecord(
        id=ref, tags=(ref,), labels={}, env={}, entrypoint=(), user="", created="", size=0
    )
    inputs = CatalogInputs(
        images=[record],
        listed=[entry],
        inventory=host,
        probes={},
        policy=ContainerPolicy(),
        kernel_names={},
    )
    (row,) = catalog_rows(inputs)
    assert (row["gpu"], row["cuda_version"]) == (True, "12.4.1")
    assert row["verdict"]["outcome"] == "native", row["verdict"]
    pool = _Pool("NVIDIA-A100-SXM4-80GB", "550.54.15", "12.4", "8.0", None)
    pool.nodes.append(_Node("n0", True, {}, {"nvidia.com/gpu": 4}))
    assert pool_verdict(pool, entry).to_dict() == row["verdict"]
    # On a cluster the images list judges it against the node pools, as the cluster view does:
    # the best pool's verdict, the pools that fare worse named.
    old = _Pool("NVIDIA-H100-80GB-HBM3", "535.104.05", "12.2", "9.0", None)
    old.nodes.append(_Node("n1", True, {}, {"nvidia.com/gpu": 4}))
    on_cluster = dataclasses.replace(
        inputs, verdict_of=lambda described: cluster_verdict([pool, old], described)
    )
    (row,) = catalog_rows(on_cluster)
    assert row["verdict"]["outcome"] == "native", row["verdict"]
    assert "node pool NVIDIA-A100-SXM4-80GB, driver 550.54.15" in row["verdict"]["reason"]
    worse = pool_verdict(old, entry)
    assert worse.outcome != "native", worse
    assert f"; {worse.outcome} on node pool NVIDIA-H100-80GB-HBM3" in row["verdict"]["reason"]
    # No GPU pool at all: no GPUs, said of the cluster; a CPU build is one anywhere.
    assert cluster_verdict([], describe_image(ref, None, entry)).outcome == "no-gpus"
    cpu = describe_image("a/b:1", None, {"image": "a/b:1", "gpu": False})
    assert cluster_verdict([pool], cpu).outcome == "cpu-only"


@pytest.mark.parametrize(
    ("entry", "env", "gpu", "cuda"),
    [
        # The image's own CUDA stack wins over the list's (a pulled image, on Docker).
        ({"image": "a/b:1", "cuda": "11.8"}, {"CUDA_VERSION": "12.2.2"}, True, "12.2.2"),
        # The administrator's "gpu": false is a CPU build, whatever the image declares.
        ({"image": "a/b:1", "gpu": False}, {"CUDA_VERSION": "12.2.2"}, False, ""),
        # Listed without a word on CUDA: the reference speaks (its tag, NGC's registry).
        ({"image": "a/b:2.15-gpu"}, {}, True, ""),
        ({"image": "nvcr.io/nvidia/pytorch:24.05-py3"}, {}, True, ""),
        ({"image": "x/y:torch-cu118"}, {}, True, "11.8"),
        ({"image": "a/b:1-cpu"}, {}, False, ""),
        ({"image": "a/b:1"}, {}, False, ""),
        # "gpu": true without a CUDA version: a GPU build whose CUDA is unknown.
        ({"image": "a/b:1", "gpu": True}, {}, True, ""),
    ],
)
def test_what_describes_an_image(
    entry: dict[str, Any], env: dict[str, str], gpu: bool, cuda: str
) -> None:
    described = describe_image(entry["image"], env, entry)
    assert (described.gpu, described.cuda) == (gpu, cuda)
