"""`jupyter gpu-containers gpus`: the inventory as the server would see it, over the NVML double
(no GPUs on these machines), without a driver, and from a static inventory in the server's own
configuration file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nvml_double
import pytest

from jupyter_gpu_containers.cli import GPUsApp

GiB = nvml_double.GiB
DOUBLE = "--GPUInventory.nvml_module=nvml_double"


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Jupyter configuration directory: nothing of this machine's configuration."""
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", "")
    (tmp_path / "config").mkdir()
    return tmp_path / "config"


def run_gpus(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """The subcommand in this process, so that the test sets the double's box."""
    app = GPUsApp()
    code = 0
    try:
        app.initialize(argv)
        app.start()
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().out


def test_prints_each_gpu_with_its_processes(
    config_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nvml_double.BOX = box = nvml_double.h100()
    box.devices[0].used = 9774825472
    box.devices[0].util = 99
    box.devices[0].processes = [(491, 9774825472)]
    box.devices[0].process_util = {491: 95}
    code, out = run_gpus([DOUBLE], capsys)
    assert code == 0
    assert out.splitlines() == [
        "Source: the NVIDIA driver (NVML)",
        "Driver: 580.159.04, CUDA 13.0",
        "GPU 0: NVIDIA H100 80GB HBM3 (nvidia)",
        "  uuid:               GPU-b30a8d26-120d-6709-edab-20f3e60abfd5",
        "  compute capability: 9.0",
        "  memory:             9.1 GiB used of 79.6 GiB",
        "  utilisation:        99 %",
        "  MIG:                off",
        "  processes:",
        "    pid 491: 9.1 GiB, SM 95 %",
    ]


def test_json_has_mig_instances_and_processes(
    config_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nvml_double.BOX = box = nvml_double.eight_a100(mig_on=1)
    instances = box.devices[1].mig
    assert instances is not None
    instances[0].processes = [(4242, 3 * GiB)]
    box.devices[3].processes = [(77, 2 * GiB), (78, GiB)]
    box.devices[3].process_util = {77: 60}
    code, out = run_gpus([DOUBLE, "--json"], capsys)
    assert code == 0
    listed = json.loads(out)
    assert (listed["source"], listed["driver_version"], listed["cuda_driver_version"]) == (
        "nvml",
        "535.104.05",
        "12.2",
    )
    assert (listed["reason"], listed["failed"]) == ("", False)
    assert [g["uuid"] for g in listed["gpus"]] == [f"GPU-a100-{i:04d}" for i in range(8)]
    gpu3 = listed["gpus"][3]
    assert (gpu3["memory_total"], gpu3["memory_used"], gpu3["utilization"]) == (
        80 * GiB,
        4 * GiB,
        30,
    )
    # Process 78 ran no kernel lately: 0 %, not unknown.
    assert gpu3["processes"] == [
        {"pid": 77, "memory_used": 2 * GiB, "sm_util": 60},
        {"pid": 78, "memory_used": GiB, "sm_util": 0},
    ]
    mig = listed["gpus"][1]
    assert (mig["mig_enabled"], mig["utilization"]) == (True, None)
    assert [m["index"] for m in mig["mig_instances"]] == ["1/0", "1/1"]
    # NVML gives no per-process utilisation on MIG: unknown, not 0.
    assert mig["mig_instances"][0]["processes"] == [
        {"pid": 4242, "memory_used": 3 * GiB, "sm_util": None}
    ]


def test_mig_instances_in_text(config_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nvml_double.BOX = nvml_double.eight_a100(mig_on=0)
    code, out = run_gpus([DOUBLE], capsys)
    assert code == 0
    lines = out.splitlines()
    first = lines.index("GPU 0: NVIDIA A100-SXM4-80GB (tesla)")
    assert lines[first + 1 : first + 16] == [
        "  uuid:               GPU-a100-0000",
        "  compute capability: 8.0",
        "  memory:             1.0 GiB used of 80.0 GiB",
        "  utilisation:        unknown",
        "  MIG:                on, 2 instance(s)",
        "  processes:          none",
        "  GPU 0/0: NVIDIA A100-SXM4-80GB MIG 3g.40gb (tesla)",
        "    uuid:               MIG-a100-0-0",
        "    compute capability: 8.0",
        "    memory:             0 B used of 40.0 GiB",
        "    utilisation:        unknown",
        "    processes:          none",
        "  GPU 0/1: NVIDIA A100-SXM4-80GB MIG 3g.40gb (tesla)",
        "    uuid:               MIG-a100-0-1",
        "    compute capability: 8.0",
    ]


@pytest.mark.parametrize(
    ("error", "says", "code"),
    [
        ("NVML Shared Library Not Found", "No NVIDIA driver library (libnvidia-ml.so)", 0),
        ("Driver Not Loaded", "The NVIDIA kernel driver is not loaded", 0),
        # A driver that fails: GPUs may be there, so an admin's script sees an error.
        ("Unknown Error", "NVML could not be read (Unknown Error)", 1),
    ],
)
def test_without_gpus_says_why(
    config_dir: Path, capsys: pytest.CaptureFixture[str], error: str, says: str, code: int
) -> None:
    nvml_double.BOX = nvml_double.Box(devices=[], init_error=error)
    got, out = run_gpus([DOUBLE], capsys)
    assert got == code
    lines = out.splitlines()
    assert lines[0] == "Source: none"
    assert lines[1].startswith(says) and lines[1].endswith("CPU kernels still work.")
    got, out = run_gpus([DOUBLE, "--json"], capsys)
    listed: dict[str, Any] = json.loads(out)
    assert (got, listed["source"], listed["gpus"], listed["failed"]) == (
        code,
        "none",
        [],
        bool(code),
    )
    assert listed["reason"] == lines[1]


def test_static_inventory_from_the_servers_config(tmp_path: Path) -> None:
    """The command reads jupyter_server_config, as the server does: an admin's static inventory
    there is what it prints (memory in use and utilisation unknown, not 0)."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(
        json.dumps(
            {
                "GPUInventory": {
                    "static_gpus": [
                        {
                            "uuid": "GPU-0b5d",
                            "name": "Tesla V100-SXM2-32GB",
                            "brand": "tesla",
                            "compute_capability": "7.0",
                            "memory_total": 32 * GiB,
                        },
                        {"name": "Tesla T4"},
                    ],
                    "static_driver_version": "535.104.05",
                    "static_cuda_version": "12.2",
                }
            }
        )
    )
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_CONFIG_PATH": ""}
    cmd = [sys.executable, "-m", "jupyter_gpu_containers.cli", "gpus"]
    out = subprocess.run([*cmd, "--json"], capture_output=True, text=True, env=env, check=True)
    listed = json.loads(out.stdout)
    assert (listed["source"], listed["driver_version"], listed["cuda_driver_version"]) == (
        "static",
        "535.104.05",
        "12.2",
    )
    assert [(g["index"], g["uuid"], g["compute_capability"]) for g in listed["gpus"]] == [
        ("0", "GPU-0b5d", "7.0"),
        ("1", "GPU-static-1", ""),
    ]
    assert (listed["gpus"][0]["memory_used"], listed["gpus"][0]["processes"]) == (None, [])
    text = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    assert text.splitlines()[:8] == [
        "Source: the static inventory (GPUInventory.static_gpus)",
        "Driver: 535.104.05, CUDA 12.2",
        "GPU 0: Tesla V100-SXM2-32GB (tesla)",
        "  uuid:               GPU-0b5d",
        "  compute capability: 7.0",
        "  memory:             unknown used of 32.0 GiB",
        "  utilisation:        unknown",
        "  MIG:                off",
    ]
    assert "  compute capability: unknown" in text.splitlines()
    # An empty static inventory says so.
    (config / "jupyter_server_config.json").write_text(
        json.dumps({"GPUInventory": {"source": "static"}})
    )
    text = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    assert text.splitlines()[1] == "The administrator's list of this server's GPUs is empty."
