"""The installed package wires itself in: server extension enabled, labextension installed and
enabled, provisioner registered under jupyter_client's entry point group."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from jupyter_client.provisioning import KernelProvisionerFactory

JUPYTER = str(Path(sys.executable).parent / "jupyter")


def jupyter_says(*args: str) -> str:
    """The command's output with colour codes removed and whitespace collapsed."""
    out = subprocess.run([JUPYTER, *args], capture_output=True, text=True, check=True)
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr).split())


def test_provisioner_entry_point() -> None:
    factory = KernelProvisionerFactory.instance()
    assert factory._check_availability("gpu-containers-provisioner")


def test_server_extension_enabled_on_install() -> None:
    text = jupyter_says("server", "extension", "list")
    assert "jupyter_gpu_containers enabled" in text
    assert "jupyter_gpu_containers 0.1.0 OK" in text


def test_labextension_built_and_enabled() -> None:
    text = jupyter_says("labextension", "list")
    assert "jupyter-gpu-containers v0.1.0 enabled OK" in text
