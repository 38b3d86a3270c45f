"""The installed package wires itself in: server extension enabled, labextension installed and
enabled, provisioner registered under jupyter_client's entry point group."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from jupyter_client.provisioning import KernelProvisionerFactory

JUPYTER = str(Path(sys.executable).parent / "jupyter")
BINDER = Path(__file__).resolve().parent.parent / "binder"


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


def test_binder_files() -> None:
    """Binder's build (repo2docker) can use them: a conda-forge environment with Python 3.11,
    nodejs and pip, an executable bash postBuild, and a JSON server config (which
    test_no_engine.py starts a server with)."""
    environment = yaml.safe_load((BINDER / "environment.yml").read_text())
    assert environment["channels"][0] == "conda-forge"
    conda = [d for d in environment["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda
    assert {"nodejs", "pip"} <= {re.split(r"[=<>]", d)[0] for d in conda}
    post_build = BINDER / "postBuild"
    assert os.access(post_build, os.X_OK)
    assert post_build.read_text().startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(post_build)], check=True)
    assert "GPUInventory" in json.loads((BINDER / "jupyter_server_config.json").read_text())
