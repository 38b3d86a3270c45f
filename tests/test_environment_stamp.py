"""A notebook says what it ran on, and reopens on it (issue 31, item 1): the environment stamp
of each kernel start (images/environment.py), a tag moved under the notebook, and the recorded
content run again through the notebook's pin.

Real engine, a real registry (the tests' htpasswd one) whose tag is pushed twice, a real server;
the notebook's file is written as the panel saves it."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import (
    DEBIAN_IMAGE,
    kernel_container,
    kernel_name,
    write_notebook,
)
from hostusers import ALICE, UserHome, ids_of
from moved_tags import marker_of
from registry import PrivateRegistry
from tornado.httpclient import HTTPClientError

from jupyter_gpu_containers.base.errors import ValueRefused
from jupyter_gpu_containers.base.records import ImageRecord
from jupyter_gpu_containers.gpus.inventory import GPU, Inventory
from jupyter_gpu_containers.images.environment import (
    BadPin,
    check_pin,
    environment_stamp,
    moved_tag,
    names_an_image,
    pin_in_metadata,
    pinnable,
    stamp_in_metadata,
)
from jupyter_gpu_containers.kernel.launch_request import IMAGE_DIGEST_ENV, LaunchRequest

pytestmark = pytest.mark.usefixtures("docker_client")

DIGEST = "sha256:" + "ab" * 32


# ---------------------------------------------------------------------------- pure parts


def test_a_pin_is_a_digest_of_the_kernels_own_repository() -> None:
    ref = "nvcr.io/nvidia/pytorch:24.05-py3"
    assert check_pin("", ref) == ""
    assert check_pin(f"nvcr.io/nvidia/pytorch@{DIGEST}", ref) == f"nvcr.io/nvidia/pytorch@{DIGEST}"
    # Docker Hub's spellings are one repository.
    assert check_pin(f"docker.io/library/python@{DIGEST}", "python:3.12") == f"python@{DIGEST}"
    # Another image's pin (the notebook switched images since) is not this kernel's: never
    # run, the kernel spec's tag runs.
    assert check_pin(f"nvcr.io/nvidia/tensorflow@{DIGEST}", ref) == ""
    assert check_pin(f"evil.example/nvidia/pytorch@{DIGEST}", ref) == ""
    refused = [
        DIGEST,  # an image id: it names no repository
        "nvcr.io/nvidia/pytorch:24.06-py3",  # a tag, not content
        "nvcr.io/nvidia/pytorch@sha256:1234",  # not a whole digest
        "not a reference",
    ]
    for pin in refused:
        with pytest.raises(BadPin) as info:
            check_pin(pin, ref)
        assert info.value.sentence.endswith("toolbar."), pin
        assert isinstance(info.value, ValueRefused)


def test_the_stamp_records_content_versions_and_verdict_and_nothing_of_the_host() -> None:
    image = ImageRecord(
        id="sha256:" + "11" * 32,
        tags=("nvcr.io/nvidia/pytorch:24.05-py3",),
        labels={},
        env={
            "NVIDIA_PRODUCT_NAME": "PyTorch",
            "NVIDIA_PYTORCH_VERSION": "24.05",
            "PYTORCH_VERSION": "2.4.0a0",
            "CUDA_VERSION": "12.4.1",
            "NVIDIA_REQUIRE_CUDA": "cuda>=12.4",
        },
        entrypoint=(),
        user="",
        created="",
        size=1,
        repo_digests=("other.example/x@" + DIGEST, f"nvcr.io/nvidia/pytorch@{DIGEST}"),
    )
    gpu = GPU(
        index="1",
        uuid="GPU-secret-of-the-host",
        name="NVIDIA H100 80GB HBM3",
        memory_total=80 * 2**30,
        compute_capability="9.0",
    )
    inventory = Inventory("static", (gpu,), "550.54.15", "12.4")
    stamp = environment_stamp(
        image.tags[0], image, None, None, inventory, ["GPU-secret-of-the-host"]
    )
    assert stamp["image"] == image.tags[0]
    assert stamp["digest"] == f"nvcr.io/nvidia/pytorch@{DIGEST}"
    assert (stamp["framework"], stamp["framework_version"]) == ("PyTorch", "24.05")
    assert stamp["cuda_version"] == "12.4.1"
    assert stamp["gpus"] == ["NVIDIA H100 80GB HBM3"] and stamp["driver_version"] == "550.54.15"
    assert stamp["verdict"]["outcome"] == "native", stamp
    assert "GPU-secret" not in json.dumps(stamp)
    # A CPU kernel has no verdict and names no GPU or driver.
    cpu = environment_stamp(image.tags[0], image, None, None, inventory, [])
    assert (cpu["gpus"], cpu["driver_version"], cpu["verdict"]) == ([], "", None)
    # Image metadata is hostile: its texts are bounded.
    long = ImageRecord(**{**image.__dict__, "env": {"PYTORCH_VERSION": "9" * 10_000}})
    assert (
        len(environment_stamp("x/pytorch:1", long, None, None, inventory, [])["framework_version"])
        <= 200
    )


def test_reading_stamps_and_pins_from_metadata() -> None:
    stamp = {"image": "a/b:1", "digest": f"a/b@{DIGEST}"}
    read = stamp_in_metadata({"gpu_containers": {"environment": {**stamp, "path": "/home/x"}}})
    assert read is not None and (read["image"], read["digest"]) == (stamp["image"], stamp["digest"])
    # In the stamp's own shape: what a hand edit added is left out, what it lacks is empty.
    assert "path" not in read and (read["gpus"], read["verdict"], read["cuda_version"]) == (
        [],
        None,
        "",
    )
    for broken in (None, [], {"gpu_containers": 3}, {"gpu_containers": {"environment": "x"}}):
        assert stamp_in_metadata(broken) is None
    assert (
        stamp_in_metadata({"gpu_containers": {"environment": {"image": 1, "digest": ""}}}) is None
    )
    assert pin_in_metadata({"gpu_containers": {"image_digest": f"a/b@{DIGEST}"}}) == f"a/b@{DIGEST}"
    assert pin_in_metadata({"gpu_containers": {"image_digest": 5}}) == ""
    assert pinnable(stamp) and not pinnable({"image": "a/b:1", "digest": DIGEST})
    assert names_an_image(f"a/b@{DIGEST}") and names_an_image(DIGEST) and names_an_image("a:1")
    assert not names_an_image("../../x y") and not names_an_image("")
    assert moved_tag(stamp, f"a/b@sha256:{'cd' * 32}")
    assert not moved_tag(stamp, f"a/b@{DIGEST}") and not moved_tag(stamp, "")


def test_the_pin_crosses_to_a_kernel_service_in_the_starts_environment() -> None:
    sent = LaunchRequest(image_digest=f"a/b@{DIGEST}").environment()
    assert sent == {IMAGE_DIGEST_ENV: f"a/b@{DIGEST}"}
    assert LaunchRequest.from_environment(sent).image_digest == f"a/b@{DIGEST}"
    assert LaunchRequest.from_environment({}).image_digest == ""
    with pytest.raises(ValueRefused):
        LaunchRequest.from_environment({IMAGE_DIGEST_ENV: "x" * 600})


# ---------------------------------------------------------------------------- a moved tag


async def wait_for_spec(jp_fetch: Any, name: str) -> None:
    """Until the server's image watcher has made the pulled image's kernel spec."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        specs = json.loads((await jp_fetch("api", "kernelspecs")).body)["kernelspecs"]
        if name in specs:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"no kernel spec {name} after a minute")


async def start(jp_fetch: Any, path: str, ref: str) -> Any:
    body = {"path": path, "type": "notebook", "name": path, "kernel": {"name": kernel_name(ref)}}
    reply = await jp_fetch("api", "sessions", method="POST", body=json.dumps(body))
    return json.loads(reply.body)


async def notebook_view(jp_fetch: Any, path: str) -> Any:
    reply = await jp_fetch("gpu-containers", "notebooks", "kernel", params={"path": path})
    return json.loads(reply.body)


async def test_a_moved_tag_is_noticed_and_the_recorded_content_runs_again(
    jp_fetch: Any,
    jp_root_dir: Path,
    docker_client: docker.DockerClient,
    private_registry: PrivateRegistry,
    moving_tag: dict[str, Any],
) -> None:
    ref = moving_tag["ref"]
    await wait_for_spec(jp_fetch, kernel_name(ref))
    write_notebook(jp_root_dir, "course.ipynb")

    # The first start: the stamp names the content the tag gave, and nothing of the host.
    session = await start(jp_fetch, "course.ipynb", ref)
    view = await notebook_view(jp_fetch, "course.ipynb")
    stamp = view["kernel"]["environment"]
    assert stamp["image"] == ref and stamp["digest"] == moving_tag["first_digest"]
    assert stamp["python_version"].startswith("3.")
    assert view["kernel"]["pinned"] == "" and view["stamp"] is None  # nothing saved yet
    assert str(jp_root_dir) not in json.dumps(stamp)
    assert marker_of(docker_client, session["kernel"]["id"]) == moving_tag["first"]
    await jp_fetch("api", "sessions", session["id"], method="DELETE")
    # The panel saves it in the notebook.
    write_notebook(jp_root_dir, "course.ipynb", gpu_containers={"environment": stamp})
    view = await notebook_view(jp_fetch, "course.ipynb")
    assert view["stamp"]["moved"] is False and view["stamp"]["recorded_present"] is True

    # Next term the tag is pushed again, and pulled here.
    private_registry.push(moving_tag["second_local"], moving_tag["name"])
    docker_client.images.pull(ref, auth_config=private_registry.auth_config)
    view = await notebook_view(jp_fetch, "course.ipynb")
    check = view["stamp"]
    assert check["moved"] is True and check["compared"] is True, check
    assert check["tag_digest"] != moving_tag["first_digest"]
    assert check["recorded_present"] is True and check["pinnable"] is True

    # The recorded content gone from this host (pruned, say): the panel pulls it by its digest,
    # with the reader's login, and then it is here again.
    docker_client.images.remove(moving_tag["first_id"], force=True)
    view = await notebook_view(jp_fetch, "course.ipynb")
    assert view["stamp"]["recorded_present"] is False and view["stamp"]["moved"] is True
    body = {"image": stamp["digest"], "auth": private_registry.auth_config}
    reply = await jp_fetch("gpu-containers", "pulls", method="POST", body=json.dumps(body))
    pull = json.loads(reply.body)
    deadline = time.monotonic() + 120
    while pull["state"] not in ("done", "error", "cancelled") and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        pull = json.loads((await jp_fetch("gpu-containers", "pulls", pull["id"])).body)
    assert pull["state"] == "done", pull
    assert (await notebook_view(jp_fetch, "course.ipynb"))["stamp"]["recorded_present"] is True

    # The reader keeps the recorded content: the notebook pins it, and its kernel runs it.
    pinned = {"environment": stamp, "image_digest": stamp["digest"]}
    write_notebook(jp_root_dir, "course.ipynb", gpu_containers=pinned)
    session = await start(jp_fetch, "course.ipynb", ref)
    kernel_id = session["kernel"]["id"]
    assert marker_of(docker_client, kernel_id) == moving_tag["first"]
    assert kernel_container(docker_client, kernel_id).image.id == moving_tag["first_id"]
    view = await notebook_view(jp_fetch, "course.ipynb")
    assert view["kernel"]["pinned"] == stamp["digest"]
    assert view["kernel"]["environment"]["digest"] == stamp["digest"]
    details = json.loads((await jp_fetch("gpu-containers", "kernels", kernel_id)).body)
    assert details["image"]["pinned"] == stamp["digest"]
    assert details["environment"]["digest"] == stamp["digest"]
    # A restart keeps the content the kernel runs, as it keeps its GPUs.
    await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="{}")
    assert marker_of(docker_client, kernel_id) == moving_tag["first"]
    await jp_fetch("api", "sessions", session["id"], method="DELETE")

    # Or the tag's new content: the pin removed, the next start runs what the tag names now.
    write_notebook(jp_root_dir, "course.ipynb", gpu_containers={"environment": stamp})
    session = await start(jp_fetch, "course.ipynb", ref)
    assert marker_of(docker_client, session["kernel"]["id"]) == moving_tag["second"]
    view = await notebook_view(jp_fetch, "course.ipynb")
    assert view["kernel"]["environment"]["digest"] == check["tag_digest"]
    await jp_fetch("api", "sessions", session["id"], method="DELETE")

    # A pin of another repository (an image the notebook ran before a switch) is not this
    # kernel's: never run, whatever it names; the tag runs.
    other = f"{DEBIAN_IMAGE.split(':')[0]}@sha256:{'ef' * 32}"
    write_notebook(jp_root_dir, "course.ipynb", gpu_containers={"image_digest": other})
    session = await start(jp_fetch, "course.ipynb", ref)
    assert marker_of(docker_client, session["kernel"]["id"]) == moving_tag["second"]
    assert (await notebook_view(jp_fetch, "course.ipynb"))["kernel"]["pinned"] == ""
    await jp_fetch("api", "sessions", session["id"], method="DELETE")
    # A pin that is no digest is refused in a sentence, and starts nothing.
    write_notebook(jp_root_dir, "course.ipynb", gpu_containers={"image_digest": "latest"})
    with pytest.raises(HTTPClientError) as info:
        await start(jp_fetch, "course.ipynb", ref)
    assert info.value.code == 400 and info.value.response is not None
    message = json.loads(info.value.response.body)["message"]
    assert "which is not an image digest" in message, message
    assert json.loads((await jp_fetch("api", "kernels")).body) == []


async def test_a_tag_moved_on_this_host_rolls_back_to_content_the_server_kept(
    local_moving_tag: dict[str, Any],
    jp_fetch: Any,
    jp_root_dir: Path,
    docker_client: docker.DockerClient,
) -> None:
    """Issue 62, item 11: a course image built on the host (no registry digest) and built
    again under the same tag. The recorded content is offered while the engine has it, through
    the pin the server writes (its repository and image id: the student never types it), and
    runs only because the server's own record says the tag named it."""
    ref, first_id = local_moving_tag["ref"], local_moving_tag["first_id"]
    repository = ref.split(":")[0]
    await wait_for_spec(jp_fetch, kernel_name(ref))
    write_notebook(jp_root_dir, "course.ipynb")
    session = await start(jp_fetch, "course.ipynb", ref)
    stamp = (await notebook_view(jp_fetch, "course.ipynb"))["kernel"]["environment"]
    assert stamp["digest"] == first_id  # a local build: its id, no registry digest
    await jp_fetch("api", "sessions", session["id"], method="DELETE")
    write_notebook(jp_root_dir, "course.ipynb", gpu_containers={"environment": stamp})

    # The administrator builds the tag again here: the first content is left untagged.
    docker_client.images.get(local_moving_tag["second_local"]).tag(*ref.split(":"))
    check = (await notebook_view(jp_fetch, "course.ipynb"))["stamp"]
    assert check["moved"] is True and check["recorded_present"] is True, check
    assert check["pinnable"] is True and check["pin_reference"] == f"{repository}@{first_id}"

    # Kept: the notebook pins it as the panel does, and its kernel runs it, restarts included.
    pinned = {"environment": stamp, "image_digest": check["pin_reference"]}
    write_notebook(jp_root_dir, "course.ipynb", gpu_containers=pinned)
    session = await start(jp_fetch, "course.ipynb", ref)
    kernel_id = session["kernel"]["id"]
    assert marker_of(docker_client, kernel_id) == local_moving_tag["first"]
    assert kernel_container(docker_client, kernel_id).image.id == first_id
    view = await notebook_view(jp_fetch, "course.ipynb")
    assert view["kernel"]["pinned"] == check["pin_reference"]
    assert view["kernel"]["environment"]["digest"] == first_id
    await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="{}")
    assert marker_of(docker_client, kernel_id) == local_moving_tag["first"]
    await jp_fetch("api", "sessions", session["id"], method="DELETE")

    # A pin is a notebook's words: an id of this host the tag never named (another image,
    # present and runnable) is not here for this tag, and starts nothing.
    other_id = docker_client.images.get(DEBIAN_IMAGE).id
    forged = {"environment": stamp, "image_digest": f"{repository}@{other_id}"}
    write_notebook(jp_root_dir, "course.ipynb", gpu_containers=forged)
    with pytest.raises(HTTPClientError) as info:
        await start(jp_fetch, "course.ipynb", ref)
    assert info.value.code == 404, info.value
    assert json.loads((await jp_fetch("api", "kernels")).body) == []

    # Once the engine no longer has the content (removed, pruned), it is not offered.
    write_notebook(jp_root_dir, "course.ipynb", gpu_containers={"environment": stamp})
    docker_client.images.remove(first_id, force=True)
    check = (await notebook_view(jp_fetch, "course.ipynb"))["stamp"]
    assert check["recorded_present"] is False and check["pinnable"] is False, check
    assert check["pin_reference"] == ""


def test_the_stamp_survives_export(tmp_path: Path) -> None:
    """nbconvert's notebook export (as `jupyter nbconvert --to notebook`, and with
    `--clear-output`) keeps the stamp and the pin exactly, and nbformat validates them."""
    import nbformat
    from nbconvert import NotebookExporter
    from nbconvert.preprocessors import ClearOutputPreprocessor

    stamp = {
        "image": "nvcr.io/nvidia/pytorch:24.05-py3",
        "digest": f"nvcr.io/nvidia/pytorch@{DIGEST}",
        "framework": "PyTorch",
        "framework_version": "24.05",
        "cuda_version": "12.4.1",
        "python_version": "3.10.12",
        "gpus": ["NVIDIA H100 80GB HBM3"],
        "driver_version": "550.54.15",
        "verdict": {"outcome": "native", "reason": "runs natively"},
    }
    section = {"gpus": 1, "environment": stamp, "image_digest": stamp["digest"]}
    path = write_notebook(tmp_path, "nb.ipynb", gpu_containers=section)
    notebook = nbformat.read(str(path), as_version=4)
    nbformat.validate(notebook)
    for exporter in (NotebookExporter(), NotebookExporter(preprocessors=[ClearOutputPreprocessor])):
        body, _ = exporter.from_notebook_node(notebook)
        assert json.loads(body)["metadata"]["gpu_containers"] == section


@pytest.mark.skipif(not ALICE, reason="needs JGC_TEST_USER, an account in the docker group")
async def test_a_pinned_kernel_is_reattached_pinned_after_kill_9(
    docker_client: docker.DockerClient,
    private_registry: PrivateRegistry,
    moving_tag: dict[str, Any],
) -> None:
    """The container's image label names the digest a pinned kernel runs: a server started
    after `kill -9` of the first reattaches the kernel as the tag's, pinned, and its restart
    keeps the recorded content."""
    ref = moving_tag["ref"]
    private_registry.push(moving_tag["second_local"], moving_tag["name"])
    docker_client.images.pull(ref, auth_config=private_registry.auth_config)
    home = UserHome(ALICE, {})
    try:
        pinned = {"image_digest": moving_tag["first_digest"]}
        path = write_notebook(home.workspace, "pinned.ipynb", gpu_containers=pinned)
        os.chown(path, *ids_of(ALICE))
        first = home.start()
        session = await first.open_notebook("pinned.ipynb", kernel_name(ref))
        kernel_id = session["kernel"]["id"]
        assert marker_of(docker_client, kernel_id) == moving_tag["first"]
        first.kill9()

        second = home.start()
        [row] = (await second.call("GET", "gpu-containers", "kernels"))["kernels"]
        assert (row["kernel_id"], row["image"]) == (kernel_id, ref), second.output()
        assert row["pinned"] == moving_tag["first_digest"]
        await second.call("POST", "api", "kernels", kernel_id, "restart", body={})
        assert marker_of(docker_client, kernel_id) == moving_tag["first"]
        await second.call("DELETE", "api", "kernels", kernel_id)
    finally:
        home.close()
