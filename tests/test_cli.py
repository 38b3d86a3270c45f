"""`jupyter gpu-containers list` and `install-kernelspec`, and a static spec used by plain
jupyter_client (as VS Code or nbclient would) against the real engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    DEBIAN_IMAGE,
    NGC_IMAGE,
    NO_IPYKERNEL_IMAGE,
    TEST_LABEL,
    TEST_RUN,
    assert_no_test_containers,
    kernel_name,
)
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from traitlets.config import Config

pytestmark = pytest.mark.usefixtures("docker_client")
JUPYTER = [sys.executable, "-m", "jupyter_gpu_containers.cli"]


def test_list_shows_local_images() -> None:
    out = subprocess.run([*JUPYTER, "list", "--json"], capture_output=True, text=True, check=True)
    rows = {row["image"]: row for row in json.loads(out.stdout)}
    assert rows[NGC_IMAGE]["name"] == kernel_name(NGC_IMAGE)
    assert rows[NGC_IMAGE]["display_name"] == f"PyTorch 24.05 · {NGC_IMAGE}"
    # `list` waits for the readiness probes, whose answer names a plain image's Python.
    assert rows[DEBIAN_IMAGE]["display_name"] == f"Python 3.11 · {DEBIAN_IMAGE}"


def test_list_names_images_that_cannot_run_a_kernel() -> None:
    out = subprocess.run([*JUPYTER, "list"], capture_output=True, text=True, check=True)
    offered, _, refused = out.stdout.partition("Not offered, because they cannot run a kernel:")
    assert kernel_name(NGC_IMAGE) in offered
    assert NO_IPYKERNEL_IMAGE not in offered
    line = next(line for line in refused.splitlines() if NO_IPYKERNEL_IMAGE in line)
    assert "ipykernel" in line.split(": ", 1)[1]


def test_list_says_when_the_engine_is_unreachable(tmp_path: Path) -> None:
    out = subprocess.run(
        [*JUPYTER, "list", f"--Engine.docker_url=unix://{tmp_path}/none.sock"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    assert "The Docker engine is not reachable" in out.stderr
    assert "Traceback" not in out.stderr


async def test_static_kernelspec_runs_in_plain_jupyter_client(
    tmp_path: Path, docker_client: Any
) -> None:
    prefix = tmp_path / "prefix"
    out = subprocess.run(
        [
            *JUPYTER,
            "install-kernelspec",
            "--image",
            DEBIAN_IMAGE,
            "--name",
            "debian-box",
            f"--prefix={prefix}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Installed kernel spec debian-box" in out.stdout
    spec_file = prefix / "share" / "jupyter" / "kernels" / "debian-box" / "kernel.json"
    spec = json.loads(spec_file.read_text())
    assert spec["metadata"]["kernel_provisioner"]["config"]["image"] == DEBIAN_IMAGE
    # Label the test's container like every other; then use the spec exactly as a client would.
    spec["metadata"]["kernel_provisioner"]["config"]["extra_labels"] = {TEST_LABEL: TEST_RUN}
    spec_file.write_text(json.dumps(spec))

    ksm = KernelSpecManager(kernel_dirs=[str(prefix / "share" / "jupyter" / "kernels")])
    # As root (sessions, CI) the kernel runs as root too, which must be allowed explicitly.
    allow_root = Config({"ContainerPolicy": {"allow_root": os.getuid() == 0}})
    km = AsyncKernelManager(kernel_name="debian-box", kernel_spec_manager=ksm, config=allow_root)
    await km.start_kernel(cwd=str(tmp_path))
    client = km.client()
    client.start_channels()
    outputs: list[str] = []
    try:
        await client.wait_for_ready(timeout=30)
        reply = await client.execute_interactive(
            "import os; print(os.path.exists('/.dockerenv'), os.getcwd())",
            timeout=30,
            output_hook=lambda msg: outputs.append(msg["content"].get("text", "")),
        )
        assert reply["content"]["status"] == "ok"
    finally:
        client.stop_channels()
        await km.shutdown_kernel()
    assert "".join(outputs).split() == ["True", "/workspace"]
    assert_no_test_containers(docker_client)
