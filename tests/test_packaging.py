"""The installed package wires itself in: server extension enabled, labextension installed and
enabled, provisioner registered under jupyter_client's entry point group."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
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


SERVICE_FILES = Path(__file__).resolve().parent.parent / "share" / "jupyter-gpu-containers"
UNIT = SERVICE_FILES / "jupyter-gpu-containers.service"
SERVE_CONFIG = SERVICE_FILES / "serve_config.py"


def test_service_files_in_the_wheel() -> None:
    """The kernel service's systemd unit and example config are installed with the package, in
    <prefix>/share/jupyter-gpu-containers/ (hatchling's own selection of the wheel's shared data,
    without running a build), where the admin guide tells the administrator to copy them from."""
    wheel = pytest.importorskip("hatchling.builders.wheel")
    builder = wheel.WheelBuilder(str(SERVICE_FILES.parent.parent))
    shared = {
        f.distribution_path: f.path
        for f in builder.recurse_explicit_files(builder.config.shared_data)
    }
    for source in (UNIT, SERVE_CONFIG):
        target = f"share/jupyter-gpu-containers/{source.name}"
        assert target in shared, sorted(shared)
        assert Path(shared[target]).resolve() == source
    guide = (SERVICE_FILES.parent.parent / "docs" / "admin-guide.md").read_text()
    assert "share/jupyter-gpu-containers/jupyter-gpu-containers.service" in guide


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_service_unit_parses(tmp_path: Path) -> None:
    """systemd itself reads the unit without a complaint (systemd-analyze verify prints every
    unknown key or bad value, and still exits 0: its output must be empty). The ExecStart
    venv is the test's own, since verify checks that the command exists."""
    settings = _unit_settings()
    (exec_start,) = settings["ExecStart"]
    assert exec_start == (
        "/opt/jupyter-gpu-containers/bin/jupyter gpu-containers serve "
        "--config=/etc/jupyter-gpu-containers/serve_config.py"
    )
    # What the admin guide promises: restarts after a crash, and a writable host state
    # directory in an otherwise read-only system.
    assert settings["Restart"] == ["on-failure"]
    assert settings["ProtectSystem"] == ["strict"]
    assert "/run/jupyter-gpu-containers" in settings["ReadWritePaths"][0].split()
    assert settings["NoNewPrivileges"] == ["yes"]
    verify = shutil.which("systemd-analyze")
    if verify is None:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package has it)")
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace("/opt/jupyter-gpu-containers/bin/jupyter", JUPYTER))
    out = subprocess.run(
        [verify, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr


def test_example_serve_config_loads() -> None:
    """The example config is Python the Jupyter config loader runs, and every option it sets is
    a configurable trait of a class the kernel service reads, with a value that trait accepts
    (no "Config option … not recognized" at the service's start)."""
    from jupyter_server.services.kernels.kernelmanager import MappingKernelManager
    from traitlets import HasTraits
    from traitlets.config.loader import PyFileConfigLoader

    from jupyter_gpu_containers.gpus.allocator import GPUAllocator
    from jupyter_gpu_containers.gpus.inventory import GPUInventory
    from jupyter_gpu_containers.host.identity import UserDirectory
    from jupyter_gpu_containers.host.tokens import ServiceTokens
    from jupyter_gpu_containers.kernel.provisioner import ContainerProvisioner
    from jupyter_gpu_containers.policy.admin_policy import ContainerPolicy
    from jupyter_gpu_containers.service.hubauth import HubIdentity
    from jupyter_gpu_containers.service.service import ServiceApp, ServiceIdentityProvider

    config = PyFileConfigLoader(SERVE_CONFIG.name, path=str(SERVICE_FILES)).load_config()
    classes = {
        cls.__name__: cls
        for cls in (
            ServiceApp,
            ServiceIdentityProvider,
            HubIdentity,
            ServiceTokens,
            UserDirectory,
            ContainerPolicy,
            ContainerProvisioner,
            GPUAllocator,
            GPUInventory,
            MappingKernelManager,
        )
    }
    # ServerApp's options are ServiceApp's (its subclass reads c.ServerApp.*).
    classes["ServerApp"] = ServiceApp
    assert set(config) <= set(classes), sorted(set(config) - set(classes))
    checked = 0
    for section, values in config.items():
        traits = classes[section].class_traits(config=True)
        for name, value in values.items():
            assert name in traits, f"c.{section}.{name} is not an option of {section}"
            traits[name].validate(HasTraits(), value)  # raises TraitError on a bad value
            checked += 1
    assert checked >= 20
    # The values the unit and the guide rely on.
    assert config.ServerApp.ip == "127.0.0.1" and config.ServerApp.port == 8890
    assert config.ServiceTokens.tokens_file == "/etc/jupyter-gpu-containers/tokens"
