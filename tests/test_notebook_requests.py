"""A notebook's GPU request travels with the notebook (its metadata), through what users do to
notebooks in JupyterLab: rename, copy, move, delete and create again, upload. And a request a
kernel cannot meet is refused through the stock kernels and sessions APIs with its 4xx status
and its sentence, never a 500, and never met with fewer GPUs in silence.

Real engine, a real server, static GPUs (conftest); files go through the stock contents API, as
JupyterLab's file browser sends them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    DEBIAN_IMAGE,
    NGC_IMAGE,
    STATIC_GPUS,
    kernel_container,
    kernel_name,
    write_notebook,
)
from tornado.httpclient import HTTPClientError

from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.gpus import notebook_requests
from jupyter_gpu_containers.gpus.allocator import GPURequest
from jupyter_gpu_containers.gpus.notebook_requests import (
    NotebookRequestError,
    api_path_of_session,
    metadata_with_request,
    read_notebook_request,
    request_in_metadata,
)

pytestmark = pytest.mark.usefixtures("docker_client")

TWO_GPUS = {"GPUInventory": {"static_gpus": STATIC_GPUS[:2]}}


async def open_session(jp_fetch: Any, path: str, image: str = NGC_IMAGE) -> Any:
    """Open the notebook's kernel as JupyterLab does (its kernel spec from the Launcher card)."""
    body = {
        "path": path,
        "type": "notebook",
        "name": path.split("/")[-1],
        "kernel": {"name": kernel_name(image)},
    }
    return json.loads(
        (await jp_fetch("api", "sessions", method="POST", body=json.dumps(body))).body
    )


async def close_session(jp_fetch: Any, session: Any) -> None:
    await jp_fetch("api", "sessions", session["id"], method="DELETE")


def gpus_of(docker_client: Any, session: Any) -> str:
    return str(kernel_container(docker_client, session["kernel"]["id"]).labels[L.GPUS])


async def contents(jp_fetch: Any, method: str, path: str, body: Any) -> Any:
    response = await jp_fetch(
        "api", "contents", *path.split("/"), method=method, body=json.dumps(body)
    )
    return json.loads(response.body)


@pytest.mark.server_config(lambda _: TWO_GPUS)
async def test_rename_copy_and_move_keep_the_request(
    jp_fetch: Any, jp_root_dir: Path, docker_client: Any
) -> None:
    write_notebook(jp_root_dir, "Untitled.ipynb", gpus=2)
    # Renamed, then opened: 2 GPUs, not the spec's 1.
    await jp_fetch(
        "api",
        "contents",
        "Untitled.ipynb",
        method="PATCH",
        body=json.dumps({"path": "train.ipynb"}),
    )
    session = await open_session(jp_fetch, "train.ipynb")
    assert gpus_of(docker_client, session) == "GPU-test-0,GPU-test-1"
    await close_session(jp_fetch, session)

    # Copied into a folder (the file browser's "Duplicate", then "Move"): the copy asks for 2.
    (jp_root_dir / "runs").mkdir()
    copy = await contents(jp_fetch, "POST", "runs", {"copy_from": "train.ipynb"})
    moved = f"runs/{copy['name'].replace('.ipynb', '')}-moved.ipynb"
    await jp_fetch(
        "api",
        "contents",
        *copy["path"].split("/"),
        method="PATCH",
        body=json.dumps({"path": moved}),
    )
    session = await open_session(jp_fetch, moved)
    assert gpus_of(docker_client, session) == "GPU-test-0,GPU-test-1"
    await close_session(jp_fetch, session)


@pytest.mark.server_config(lambda _: TWO_GPUS)
async def test_a_notebook_made_again_under_an_old_name_inherits_nothing(
    jp_fetch: Any, jp_root_dir: Path, docker_client: Any
) -> None:
    # A CPU notebook (its request: no GPU), opened, closed, deleted.
    write_notebook(jp_root_dir, "Untitled3.ipynb", gpus=0)
    session = await open_session(jp_fetch, "Untitled3.ipynb")
    assert gpus_of(docker_client, session) == ""
    await close_session(jp_fetch, session)
    await jp_fetch("api", "contents", "Untitled3.ipynb", method="DELETE")

    # The Launcher makes a new, empty Untitled3.ipynb on the GPU image: the spec's one GPU.
    created = await contents(jp_fetch, "POST", "", {"type": "notebook"})
    await jp_fetch(
        "api",
        "contents",
        created["path"],
        method="PATCH",
        body=json.dumps({"path": "Untitled3.ipynb"}),
    )
    session = await open_session(jp_fetch, "Untitled3.ipynb")
    assert gpus_of(docker_client, session) == "GPU-test-0"
    await close_session(jp_fetch, session)


@pytest.mark.server_config(lambda _: TWO_GPUS)
async def test_a_tag_moved_to_a_cpu_build_never_keeps_the_gpus_its_notebooks_saved(
    course_tag: str, jp_fetch: Any, jp_root_dir: Path, docker_client: Any
) -> None:
    """Issue 62, item 5: the notebook saved its request (1 GPU) while its tag named a GPU build;
    the tag then moved to a CPU build. Its kernel starts without GPUs (nothing in the image can
    use them, and another student may wait for them); a request given to a start stands."""
    write_notebook(jp_root_dir, "week1.ipynb", gpus=1)
    session = await open_session(jp_fetch, "week1.ipynb", course_tag)
    assert gpus_of(docker_client, session) == "GPU-test-0"
    await close_session(jp_fetch, session)

    repository, tag = course_tag.split(":")
    docker_client.images.get(DEBIAN_IMAGE).tag(repository, tag)  # moved: a CPU build
    session = await open_session(jp_fetch, "week1.ipynb", course_tag)
    assert gpus_of(docker_client, session) == ""
    # The GPU is free for others meanwhile: a second notebook gets both.
    write_notebook(jp_root_dir, "other.ipynb", gpus=2)
    other = await open_session(jp_fetch, "other.ipynb")
    assert gpus_of(docker_client, other) == "GPU-test-0,GPU-test-1"
    await close_session(jp_fetch, other)
    await close_session(jp_fetch, session)

    # A request given to the start itself (a choice made now) stands on a CPU build.
    started = await jp_fetch(
        "gpu-containers",
        "notebooks",
        "kernel",
        method="POST",
        body=json.dumps({"path": "week1.ipynb", "kernel_name": kernel_name(course_tag), "gpus": 1}),
    )
    kernel_id = json.loads(started.body)["session"]["kernel"]["id"]
    assert str(kernel_container(docker_client, kernel_id).labels[L.GPUS]) == "GPU-test-0"
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")


@pytest.mark.server_config(
    lambda _: {
        **TWO_GPUS,
        "ImageCatalog": {"listed_images": [{"image": DEBIAN_IMAGE, "gpu": True}]},
    }
)
async def test_the_administrators_word_makes_an_image_without_cuda_a_gpu_build(
    jp_fetch: Any, jp_root_dir: Path, docker_client: Any
) -> None:
    """A GPU image the detection misses (no CUDA variables: a framework that brings its own)
    keeps its notebooks' GPUs when the administrator's list entry says ``"gpu": true``."""
    write_notebook(jp_root_dir, "own-cuda.ipynb", gpus=1)
    session = await open_session(jp_fetch, "own-cuda.ipynb", DEBIAN_IMAGE)
    assert gpus_of(docker_client, session) == "GPU-test-0"
    await close_session(jp_fetch, session)


@pytest.mark.server_config(lambda _: TWO_GPUS)
async def test_an_uploaded_notebook_brings_its_request(
    jp_fetch: Any, jp_root_dir: Path, docker_client: Any
) -> None:
    """A colleague's notebook, uploaded as the file browser uploads it (PUT with the content)."""
    notebook = {
        "cells": [],
        "metadata": {"gpu_containers": {"gpus": 2}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    await contents(
        jp_fetch,
        "PUT",
        "shared.ipynb",
        {"type": "notebook", "format": "json", "content": notebook},
    )
    session = await open_session(jp_fetch, "shared.ipynb")
    assert gpus_of(docker_client, session) == "GPU-test-0,GPU-test-1"
    await close_session(jp_fetch, session)


@pytest.mark.server_config(lambda _: TWO_GPUS)
async def test_a_request_that_cannot_be_met_is_refused_with_its_status(
    jp_fetch: Any, jp_root_dir: Path, docker_client: Any
) -> None:
    """Through the stock APIs that JupyterLab's Launcher and notebooks use: 4xx and the whole
    sentence; no kernel and no container left; never fewer GPUs than asked for."""
    cases = [
        # More GPUs than the host has.
        ("big.ipynb", 3, 409, "GPU"),
        # GPUs of the machine the notebook was written on.
        ("elsewhere.ipynb", ["GPU-of-another-host"], 400, "GPU-of-another-host"),
    ]
    for path, gpus, status, says in cases:
        write_notebook(jp_root_dir, path, gpus=gpus)
        with pytest.raises(HTTPClientError) as info:
            await open_session(jp_fetch, path)
        assert info.value.code == status, (path, info.value)
        assert info.value.response is not None
        message = json.loads(info.value.response.body)["message"]
        assert says in message and message.endswith("."), message

    # Every GPU taken: a kernel whose spec asks for one is refused, not started without it.
    write_notebook(jp_root_dir, "both.ipynb", gpus=2)
    holder = await open_session(jp_fetch, "both.ipynb")
    write_notebook(jp_root_dir, "late.ipynb")
    starts = {
        "sessions": lambda: open_session(jp_fetch, "late.ipynb"),
        "kernels": lambda: jp_fetch(
            "api", "kernels", method="POST", body=json.dumps({"name": kernel_name(NGC_IMAGE)})
        ),
    }
    for api, start in starts.items():
        with pytest.raises(HTTPClientError) as info:
            await start()
        assert info.value.code == 409, (api, info.value)
        assert info.value.response is not None
        assert "free" in json.loads(info.value.response.body)["message"]
    kernels = json.loads((await jp_fetch("api", "kernels")).body)
    assert [k["id"] for k in kernels] == [holder["kernel"]["id"]]

    # JupyterLab's "Change Kernel" (PATCH the session) from a CPU kernel to the GPU image.
    body = {"path": "cpu.ipynb", "type": "notebook", "name": "cpu.ipynb"}
    body["kernel"] = {"name": kernel_name(DEBIAN_IMAGE)}
    cpu = json.loads((await jp_fetch("api", "sessions", method="POST", body=json.dumps(body))).body)
    change = json.dumps({"kernel": {"name": kernel_name(NGC_IMAGE)}})
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("api", "sessions", cpu["id"], method="PATCH", body=change)
    assert info.value.code == 409 and info.value.response is not None
    assert "free" in json.loads(info.value.response.body)["message"]
    await close_session(jp_fetch, cpu)
    await close_session(jp_fetch, holder)


async def test_a_malformed_request_in_the_file_is_refused_in_a_sentence(
    jp_fetch: Any, jp_root_dir: Path
) -> None:
    write_notebook(jp_root_dir, "odd.ipynb", gpus=1.5)
    with pytest.raises(HTTPClientError) as info:
        await open_session(jp_fetch, "odd.ipynb")
    assert info.value.code == 400 and info.value.response is not None
    message = json.loads(info.value.response.body)["message"]
    assert "odd.ipynb" in message and "GPU Containers panel" in message
    # The toolbar's state says so too, instead of failing.
    state = json.loads(
        (await jp_fetch("gpu-containers", "notebooks", "kernel", params={"path": "odd.ipynb"})).body
    )
    assert state["request"] is None and "odd.ipynb" in state["request_problem"]


def test_the_metadata_entry() -> None:
    assert request_in_metadata({}) is None
    assert request_in_metadata({"gpu_containers": {"image": "x"}}) is None
    assert request_in_metadata({"gpu_containers": {"gpus": 2}}) == GPURequest(count=2)
    assert request_in_metadata({"gpu_containers": {"gpus": ["0", "GPU-a"]}}) == GPURequest(
        ids=("0", "GPU-a")
    )
    assert request_in_metadata({"gpu_containers": {"gpus": 0}}) == GPURequest()
    for bad in ({"gpus": -1}, {"gpus": 1.5}, {"gpus": {"n": 1}}, [1]):
        with pytest.raises(NotebookRequestError, match="GPU Containers panel"):
            request_in_metadata({"gpu_containers": bad}, "a.ipynb")
    # Written and removed again, other entries untouched.
    written = metadata_with_request({"kernelspec": {"name": "k"}}, GPURequest(count=2))
    assert written == {"kernelspec": {"name": "k"}, "gpu_containers": {"gpus": 2}}
    assert metadata_with_request(written, None) == {"kernelspec": {"name": "k"}}


def test_the_notebook_of_a_session(tmp_path: Path) -> None:
    root = str(tmp_path)
    assert api_path_of_session(f"{root}/a/b.ipynb", root) == "a/b.ipynb"
    assert api_path_of_session(f"{root}/b.ipynb", root + "/") == "b.ipynb"
    # Consoles, kernels without a session, paths outside the root: no notebook.
    for name in ("", f"{root}/console-1", f"{root}/../x.ipynb", "/elsewhere/x.ipynb"):
        assert api_path_of_session(name, root) == ""


async def test_a_notebook_read_during_its_save_is_read_once_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """jupyter_server saves a notebook in place: a kernel that starts during the save reads an
    empty file, and must still start with the notebook's request, not the default; and the read
    must leave the save alone (jupyter_server's own read "recovers" a notebook being saved: it
    moved the file being written aside as .invalid, and a UI run lost its notebook so)."""
    from jupyter_server.services.contents.filemanager import AsyncFileContentsManager

    def saved(gpus: int) -> str:
        return json.dumps(
            {
                "cells": [],
                "metadata": {"gpu_containers": {"gpus": gpus}},
                "nbformat": 4,
                "nbformat_minor": 5,
            }
        )

    # Mid-save as jupyter_server's atomic writing leaves it: the copy from before the save
    # beside the file, the file itself truncated and not yet written.
    notebook = tmp_path / "mid-save.ipynb"
    notebook.write_text("")
    before_save = tmp_path / ".~mid-save.ipynb"
    before_save.write_text(saved(1))
    reads = []
    read_file = notebook_requests._read_metadata_file

    def save_ends_after_the_first_read(path: str) -> Any:
        reads.append(path)
        try:
            return read_file(path)
        finally:
            notebook.write_text(saved(2))  # the save ends

    monkeypatch.setattr(notebook_requests, "_read_metadata_file", save_ends_after_the_first_read)
    manager = AsyncFileContentsManager(root_dir=str(tmp_path))
    assert await read_notebook_request(manager, "mid-save.ipynb") == GPURequest(count=2)
    assert reads == [str(notebook)] * 2
    # Nothing moved: the save's own end removes its copy.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".~mid-save.ipynb", "mid-save.ipynb"]
    monkeypatch.undo()

    # A file that stays unreadable is read a few times, then says nothing; one not there, once;
    # a path the contents manager would not serve is not read.
    notebook.write_text("not a notebook")
    assert await read_notebook_request(manager, "mid-save.ipynb") is None
    assert await read_notebook_request(manager, "absent.ipynb") is None
    (tmp_path.parent / "outside.ipynb").write_text(saved(3))
    for refused in ("../outside.ipynb", ".~mid-save.ipynb", "a/../../outside.ipynb"):
        assert notebook_requests.notebook_file(manager, refused) is None, refused
        assert await read_notebook_request(manager, refused) is None
    assert notebook_requests.notebook_file(manager, "/mid-save.ipynb") == str(notebook)
    assert notebook_requests.notebook_file(object(), "mid-save.ipynb") is None
