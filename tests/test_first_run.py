"""A first run that feels finished: the demo's welcome notebook opens unmodified (its metadata is
what the server's spec and kernel report) and prints nothing stray; Launcher cards carry their
framework's logo; and a server can offer container kernels only, without the host's own
"Python 3 (ipykernel)". Real `jupyter server` processes and the real engine."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    DEBIAN_IMAGE,
    NGC_IMAGE,
    PROBE_CACHE,
    TEST_LABEL,
    TEST_RUN,
    install_spec,
    kernel_name,
)
from servers import Server, jupyter_env, write_server_config
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_gpu_containers.images.catalog import framework_from_reference
from jupyter_gpu_containers.kernel.kernelspecs import RESOURCES_DIR, resource_dir_for

pytestmark = pytest.mark.usefixtures("docker_client")

REPO = Path(__file__).resolve().parent.parent
WELCOME_SCRIPT = REPO / "scripts" / "welcome_notebook.py"
LOGOS = Path(RESOURCES_DIR)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A server home: config (the suite's labels, static GPUs, the shared probe cache), data,
    runtime, and a workspace."""
    for sub in ("config", "data", "runtime", "workspace"):
        (tmp_path / sub).mkdir()
    write_server_config(
        tmp_path,
        {
            "KernelReadinessProbe": {
                "extra_labels": {TEST_LABEL: TEST_RUN},
                "cache_dir": str(PROBE_CACHE),
            }
        },
    )
    return tmp_path


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def start(servers: list[Server], home: Path, *args: str) -> Server:
    servers.append(Server(home, home / "workspace", list(args)))
    return servers[-1]


async def kernelspecs(server: Server) -> dict[str, Any]:
    body = await server.call("GET", "api", "kernelspecs")
    specs: dict[str, Any] = body["kernelspecs"]
    return specs


# ---------------------------------------------------------------------- Launcher logos


@pytest.mark.parametrize(
    ("ref", "logo"),
    [
        ("nvcr.io/nvidia/pytorch:24.05-py3", "pytorch"),
        ("tensorflow/tensorflow:2.15.0-gpu-jupyter", "tensorflow"),
        ("ghcr.io/nvidia/jax:jax-2024-05-01", "jax"),
        ("nvcr.io/nvidia/rapidsai/base:24.04-cuda12.2-py3.11", "rapids"),
        ("rapidsai/notebooks:24.06-cuda12.2-py3.11", "rapids"),
        ("jupyter/scipy-notebook:latest", ""),
        ("example.org/rapidsish:1", ""),
        ("debian:bookworm", ""),
    ],
)
def test_a_frameworks_image_gets_its_logo(ref: str, logo: str) -> None:
    directory = Path(resource_dir_for(ref, framework_from_reference(ref)))
    assert directory == (LOGOS / logo if logo else LOGOS)
    assert (directory / "logo-svg.svg").is_file()


def test_every_logo_is_its_own_svg() -> None:
    logos = sorted(LOGOS.glob("**/logo-svg.svg"))
    assert len(logos) == 5  # generic, PyTorch, TensorFlow, JAX, RAPIDS
    contents = {path.read_bytes() for path in logos}
    assert len(contents) == 5
    for content in contents:
        assert content.startswith(b'<svg xmlns="http://www.w3.org/2000/svg"')


async def test_the_spec_of_a_pytorch_image_serves_the_pytorch_logo(
    home: Path, servers: list[Server]
) -> None:
    server = start(servers, home)
    specs = await kernelspecs(server)
    for ref, logo in ((NGC_IMAGE, LOGOS / "pytorch"), (DEBIAN_IMAGE, LOGOS)):
        resources = specs[kernel_name(ref)]["resources"]
        assert set(resources) == {"logo-svg"}, resources
        served = await server.fetch("GET", resources["logo-svg"].lstrip("/"))
        assert served.headers["Content-Type"] == "image/svg+xml"
        assert served.body == (logo / "logo-svg.svg").read_bytes(), ref


# ---------------------------------------------------------------------- container kernels only


def host_spec(home: Path) -> str:
    """A spec on disk that runs on the host, as a user or admin installs one."""
    target = home / "data" / "kernels" / "host-python"
    target.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Host Python",
        "language": "python",
    }
    (target / "kernel.json").write_text(json.dumps(spec))
    return "host-python"


async def test_host_kernels_are_offered_by_default(home: Path, servers: list[Server]) -> None:
    host = host_spec(home)
    specs = await kernelspecs(start(servers, home))
    assert {"python3", host, kernel_name(DEBIAN_IMAGE)} <= set(specs)


async def test_the_stock_option_does_not_hide_python3(home: Path, servers: list[Server]) -> None:
    """Why the project has an option of its own: ensure_native_kernel=False only stops
    jupyter_client adding python3 where no spec is installed, and ipykernel installs one in the
    environment's share/jupyter/kernels."""
    assert (Path(sys.prefix) / "share" / "jupyter" / "kernels" / "python3").is_dir()
    specs = await kernelspecs(
        start(servers, home, "--KernelSpecManager.ensure_native_kernel=False")
    )
    assert "python3" in specs


async def test_show_host_kernels_false_offers_container_kernels_only(
    home: Path, servers: list[Server]
) -> None:
    host = host_spec(home)
    on_disk = install_spec(home / "data", "container-on-disk", DEBIAN_IMAGE)
    server = start(servers, home, "--ContainerKernelSpecManager.show_host_kernels=False")
    specs = await kernelspecs(server)
    assert "python3" not in specs and host not in specs
    assert {on_disk, kernel_name(DEBIAN_IMAGE), kernel_name(NGC_IMAGE)} <= set(specs)

    # Nor started when asked for by name: a 404 with a sentence, from the kernels API and the
    # sessions API (a notebook whose metadata names python3), and nothing ran.
    for name in ("python3", host):
        code, body = await server.answer("POST", "api", "kernels", body={"name": name})
        assert code == 404, body
        assert f"The kernel spec {name} runs on the host" in body["message"]
    code, body = await server.answer(
        "POST",
        "api",
        "sessions",
        body={"path": "a.ipynb", "type": "notebook", "name": "", "kernel": {"name": "python3"}},
    )
    assert code == 404, body
    assert "runs on the host" in body["message"]
    assert await server.call("GET", "api", "kernels") == []


# ---------------------------------------------------------------------- the welcome notebook


def write_welcome(home: Path, image: str) -> str:
    """scripts/welcome_notebook.py as scripts/demo.sh runs it, in the server's environment."""
    env = jupyter_env(home)
    done = subprocess.run(
        [sys.executable, str(WELCOME_SCRIPT), str(home / "workspace"), f"--image={image}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == "", done.stderr  # the demo's output: no warnings, no kernel logs
    return done.stdout


async def kernel_info(server: Server, kernel_id: str) -> dict[str, Any]:
    ws = await websocket_connect(
        HTTPRequest(
            f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels",
            headers={"Authorization": f"token {server.token}"},
        )
    )
    try:
        msg_id = uuid.uuid4().hex
        request = {
            "header": {
                "msg_id": msg_id,
                "msg_type": "kernel_info_request",
                "username": "test",
                "session": uuid.uuid4().hex,
                "date": "",
                "version": "5.3",
            },
            "parent_header": {},
            "metadata": {},
            "content": {},
            "channel": "shell",
            "buffers": [],
        }
        await ws.write_message(json.dumps(request))
        while True:
            raw = await ws.read_message()
            assert raw is not None, "the kernel websocket closed"
            msg = json.loads(raw)
            if msg["msg_type"] == "kernel_info_reply" and msg["parent_header"]["msg_id"] == msg_id:
                content: dict[str, Any] = msg["content"]
                return content
    finally:
        ws.close()


async def test_the_welcome_notebook_is_what_the_server_and_kernel_say(
    home: Path, servers: list[Server]
) -> None:
    """JupyterLab rewrites metadata.kernelspec from the spec and metadata.language_info from the
    kernel as the notebook opens, and marks it modified when either differs; its one code cell
    shows no Out[1]."""
    assert "written" in write_welcome(home, DEBIAN_IMAGE)
    notebook = json.loads((home / "workspace" / "welcome.ipynb").read_text())
    server = start(servers, home)
    name = kernel_name(DEBIAN_IMAGE)
    spec = (await kernelspecs(server))[name]["spec"]
    assert notebook["metadata"]["kernelspec"] == {
        "name": name,
        "display_name": spec["display_name"],
        "language": spec["language"],
    }
    assert spec["display_name"].startswith("Python 3.")  # the probe's answer, as the server has it

    session = await server.open_notebook("welcome.ipynb", name)
    kernel_id = session["kernel"]["id"]
    info = await kernel_info(server, kernel_id)
    assert notebook["metadata"]["language_info"] == info["language_info"]

    (code,) = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    result = await server.execute(kernel_id, code["source"])
    assert result.status == "ok", result
    assert "container:" in result.stdout
    assert not [m for m in result.outputs if m["msg_type"] == "execute_result"]
    assert (home / "workspace" / "written-in-a-container.txt").read_text() == (
        "hello from the container\n"
    )
    await server.call("DELETE", "api", "sessions", session["id"])

    # A second run leaves the notebook alone (no kernel started, nothing rewritten).
    before = (home / "workspace" / "welcome.ipynb").stat().st_mtime_ns
    assert "written" not in write_welcome(home, DEBIAN_IMAGE)
    assert (home / "workspace" / "welcome.ipynb").stat().st_mtime_ns == before


def earlier_demo_notebook(image: str) -> dict[str, Any]:
    """welcome.ipynb as scripts/demo.sh wrote it before: a hand-written display name, no
    language_info, a last line that printed Out[1]: 25."""
    intro = (
        "# Kernels in containers\n\nThis notebook's kernel runs inside a container "
        f"of `{image}`. Its kernel spec name is stored in the notebook's metadata, so it "
        "reopens on the same image. The workspace is mounted at `/workspace`, and files you "
        "write there belong to you."
    )
    code = (
        "import os, socket, getpass\n"
        "print('container:', socket.gethostname())\n"
        "print('user:', os.getuid(), getpass.getuser(), '| cwd:', os.getcwd())\n"
        "open('written-in-a-container.txt', 'w').write('hello from the container\\n')"
    )
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {
                "name": kernel_name(image),
                "display_name": f"Python 3 · {image}",
                "language": "python",
            }
        },
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": intro, "id": "cell-0"},
            {
                "cell_type": "code",
                "metadata": {},
                "source": code,
                "id": "cell-1",
                "outputs": [],
                "execution_count": None,
            },
        ],
    }


def test_an_untouched_notebook_of_an_earlier_demo_is_rewritten(home: Path) -> None:
    path = home / "workspace" / "welcome.ipynb"
    path.write_text(json.dumps(earlier_demo_notebook(DEBIAN_IMAGE), indent=1))
    assert "updated" in write_welcome(home, DEBIAN_IMAGE)
    notebook = json.loads(path.read_text())
    assert notebook["metadata"]["kernelspec"]["display_name"].startswith("Python 3.")
    assert notebook["metadata"]["language_info"]["name"] == "python"
    assert "with open(" in notebook["cells"][1]["source"]


@pytest.mark.parametrize("change", ["ran and saved", "edited", "other metadata"])
def test_a_welcome_notebook_its_user_changed_is_left_alone(home: Path, change: str) -> None:
    notebook = earlier_demo_notebook(DEBIAN_IMAGE)
    if change == "ran and saved":
        notebook["cells"][1]["execution_count"] = 1
        notebook["cells"][1]["outputs"] = [
            {"output_type": "execute_result", "execution_count": 1, "data": {"text/plain": "25"}}
        ]
    elif change == "edited":
        notebook["cells"].append(
            {"cell_type": "markdown", "metadata": {}, "source": "My notes", "id": "mine"}
        )
    else:
        notebook["metadata"]["gpu_containers"] = {"gpus": 1}
    path = home / "workspace" / "welcome.ipynb"
    path.write_text(json.dumps(notebook))
    before = path.read_bytes()
    said = write_welcome(home, DEBIAN_IMAGE)
    assert "left as it is" in said and "remove it" in said
    assert path.read_bytes() == before
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".welcome-")]


def test_one_demo_after_the_other_installs_nothing_again(tmp_path: Path) -> None:
    """An environment the multi-user demo installed ([lab,hub]) serves the single-user demo's
    [lab] as it stands; one with fewer extras than asked for does not (scripts/common.sh)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    # The suite's own interpreter, which imports the package, as the environment's.
    (venv / "bin" / "python").symlink_to(sys.executable)
    labextension = venv / "share" / "jupyter" / "labextensions" / "jupyter-gpu-containers"
    labextension.mkdir(parents=True)
    (labextension / "package.json").write_text("{}")

    def serves(installed: str, extras: str) -> bool:
        script = (
            'source scripts/common.sh && install_inputs_hash "$1" >'
            ' "$venv/.jupyter-gpu-containers-install" && install_is_current "$2"'
        )
        run = subprocess.run(
            ["bash", "-c", script, "bash", installed, extras],
            cwd=REPO,
            env={"PATH": "/usr/bin:/bin", "JGC_VENV": str(venv)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode in (0, 1), run.stderr
        return run.returncode == 0

    assert serves("[lab,hub]", "[lab]")
    assert serves("[lab,hub]", "[lab,hub]")
    assert serves("[test]", "[lab]") and serves("[test]", "[lab,hub]")
    assert not serves("[lab]", "[lab,hub]")
    assert not serves("[lab,hub]", "[test]")
