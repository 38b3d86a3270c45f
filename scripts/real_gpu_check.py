"""Check the GPU inventory against a real NVIDIA GPU and nvidia-smi (docs/real-gpu-check.md).

Run on a host with a GPU, the driver, nvidia-ml-py and PyTorch (no Docker needed), from the
repository's root: ``python3 scripts/real_gpu_check.py [--out DIR]``. A PyTorch process holds
memory on GPU 0 and runs matrix products while the inventory is read through real pynvml
(gpus.read_nvml), ``jupyter gpu-containers gpus --json`` runs, the per-kernel sampler
(gpu_usage.GPUUsage) samples the process, and compat.verdict judges a CUDA 12.9 and a CUDA 13.0
image on this driver; everything is compared with ``nvidia-smi``'s own answers. Prints one line
per check (PASS/FAIL/INFO) and exits with 1 if any check failed.

The sampler maps a process to a container through its cgroup, so without Docker the check puts
the PyTorch process in a cgroup named as Docker's cgroupfs driver names a container's (root and
a writable cgroup v2 hierarchy needed; skipped otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jupyter_gpu_containers.gpus.gpu_usage import GPUUsage, WatchedKernel
from jupyter_gpu_containers.gpus.inventory import GPUInventory, read_nvml
from jupyter_gpu_containers.images import compat

MiB = 1024**2
HOLD_GIB = 8

LOAD = f"""
import sys, time, torch
hold = torch.empty({HOLD_GIB} * 2**30, dtype=torch.uint8, device="cuda")
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
for _ in range(5):
    a @ b
torch.cuda.synchronize()
print("ready", flush=True)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    for _ in range(20):
        c = a @ b
    torch.cuda.synchronize()
"""

# The NVIDIA_REQUIRE_CUDA of nvidia/cuda images (gitlab.com/nvidia/container-images/cuda,
# dist/<version>/ubuntu24.04/base): one term per supported driver branch and brand.
BRANDS = [
    "unknown",
    "grid",
    "tesla",
    "nvidia",
    "quadro",
    "quadrortx",
    "nvidiartx",
    "vapps",
    "vpc",
    "vcs",
    "vws",
    "cloudgaming",
]


def nvidia_cuda(version: str, majors: tuple[int, ...]) -> dict[str, str]:
    terms = " ".join(
        f"brand={brand},driver>={major},driver<{major + 1}" for major in majors for brand in BRANDS
    )
    major_minor = ".".join(version.split(".")[:2])
    return {"NVIDIA_REQUIRE_CUDA": f"cuda>={major_minor} {terms}", "CUDA_VERSION": version}


IMAGES = {
    "nvidia/cuda:12.9.1": nvidia_cuda("12.9.1", (535, 550, 560, 565, 570)),
    "nvidia/cuda:13.0.2": nvidia_cuda("13.0.2", (535, 550, 565, 570, 575)),
}

results: list[dict[str, Any]] = []


def check(name: str, ok: bool | None, detail: str) -> None:
    """ok None: information only (nothing to compare with)."""
    status = "INFO" if ok is None else "PASS" if ok else "FAIL"
    results.append({"check": name, "status": status, "detail": detail})
    print(f"{status:4}  {name}: {detail}", flush=True)


def smi(*args: str) -> list[list[str]]:
    out = subprocess.run(
        ["nvidia-smi", *args, "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [[cell.strip() for cell in line.split(",")] for line in out.splitlines() if line]


def docker_like_cgroup(pid: int) -> tuple[str, Path] | None:
    """Move ``pid`` into /sys/fs/cgroup/docker/<64 hex>, as Docker's cgroupfs driver does."""
    container = secrets.token_hex(32)
    path = Path("/sys/fs/cgroup/docker") / container
    try:
        path.mkdir(parents=True)
        (path / "cgroup.procs").write_text(str(pid))
    except OSError as e:
        check("cgroup for the sampler", None, f"cannot make a container-like cgroup: {e}")
        return None
    return container, path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="", help="Write outputs and results.json here.")
    parser.add_argument("--seconds", type=float, default=40.0, help="How long the load runs.")
    args = parser.parse_args()
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)

    import pynvml  # nvidia-ml-py

    load = subprocess.Popen(
        [sys.executable, "-c", LOAD, str(args.seconds)], stdout=subprocess.PIPE, text=True
    )
    cgroup = None
    try:
        assert load.stdout is not None
        if load.stdout.readline().strip() != "ready":
            check("load", False, "the PyTorch process did not start")
            return 1
        cgroup = docker_like_cgroup(load.pid)
        time.sleep(3)  # NVML keeps per-process samples of the last seconds

        pynvml.nvmlInit()
        started = time.monotonic()
        inventory = read_nvml(pynvml)
        check("read_nvml", True, f"{time.monotonic() - started:.3f} s for the whole inventory")
        gpu_rows = smi(
            "--query-gpu=index,name,uuid,compute_cap,memory.total,memory.used,memory.reserved,"
            "utilization.gpu,driver_version,mig.mode.current,pci.bus_id"
        )
        app_rows = smi("--query-compute-apps=pid,gpu_uuid,used_memory")
        header = subprocess.run(["nvidia-smi"], capture_output=True, text=True).stdout
        if out:
            (out / "nvidia-smi.txt").write_text(header)
        smi_cuda = re.search(r"CUDA Version:\s*([0-9.]+)", header)

        check("driver", inventory.driver_version == gpu_rows[0][8], inventory.driver_version)
        check(
            "CUDA driver version",
            smi_cuda is not None and inventory.cuda_driver_version == smi_cuda.group(1),
            f"NVML {inventory.cuda_driver_version}, nvidia-smi "
            f"{smi_cuda.group(1) if smi_cuda else '?'}",
        )
        check("GPU count", len(inventory.gpus) == len(gpu_rows), str(len(inventory.gpus)))
        for gpu, row in zip(inventory.gpus, gpu_rows):
            index, name, uuid, cc, total, used, reserved, util, _, mig, _bus = row
            check(f"GPU {index} name", gpu.name == name, gpu.name)
            check(f"GPU {index} uuid", gpu.uuid == uuid, gpu.uuid)
            check(f"GPU {index} brand", None, gpu.brand or "(none)")
            check(f"GPU {index} compute capability", gpu.compute_capability == cc, cc)
            check(
                f"GPU {index} memory total",
                gpu.memory_total // MiB == int(total),
                f"NVML {gpu.memory_total} B = {gpu.memory_total // MiB} MiB, nvidia-smi {total}"
                " MiB",
            )
            mine = gpu.memory_used
            check(
                f"GPU {index} memory used",
                mine is not None and abs(mine // MiB - int(used)) <= 64,
                f"NVML {mine} B = {(mine or 0) // MiB} MiB, nvidia-smi {used} MiB "
                f"(reserved {reserved} MiB)",
            )
            check(
                f"GPU {index} utilisation",
                gpu.utilization is not None and gpu.utilization > 0,
                f"NVML {gpu.utilization} %, nvidia-smi {util} % (a moment apart)",
            )
            check(
                f"GPU {index} MIG",
                gpu.mig_enabled == (mig == "Enabled"),
                f"mig_enabled={gpu.mig_enabled}, nvidia-smi {mig}",
            )
            apps = {int(r[0]): int(r[2]) for r in app_rows if r[1] == gpu.uuid}
            found = {p.pid: p for p in gpu.processes}
            check(
                f"GPU {index} processes",
                set(found) == set(apps),
                f"NVML {sorted(found)}, nvidia-smi {sorted(apps)}",
            )
            for pid, mib in apps.items():
                process = found.get(pid)
                check(
                    f"GPU {index} process {pid} memory",
                    process is not None and process.memory_used // MiB == mib,
                    f"NVML {process.memory_used if process else None} B, nvidia-smi {mib} MiB",
                )
            load_process = found.get(load.pid)
            check(
                f"GPU {index} load's SM utilisation",
                load_process is not None
                and (load_process.sm_util is None or load_process.sm_util > 0),
                f"sm_util={load_process.sm_util if load_process else '(not found)'}",
            )

        cli = subprocess.run(
            [sys.executable, "-m", "jupyter_gpu_containers.cli", "gpus", "--json"],
            capture_output=True,
            text=True,
        )
        text = subprocess.run(
            [sys.executable, "-m", "jupyter_gpu_containers.cli", "gpus"],
            capture_output=True,
            text=True,
        )
        print(text.stdout + text.stderr, flush=True)
        if out:
            (out / "gpus.json").write_text(cli.stdout + cli.stderr)
            (out / "gpus.txt").write_text(text.stdout + text.stderr)
        try:
            listed = json.loads(cli.stdout)
            pids = {p["pid"] for g in listed["gpus"] for p in g["processes"]}
            check(
                "jupyter gpu-containers gpus --json",
                cli.returncode == 0
                and listed["source"] == "nvml"
                and [g["uuid"] for g in listed["gpus"]] == [g.uuid for g in inventory.gpus]
                and load.pid in pids,
                f"rc {cli.returncode}, source {listed['source']}, load's pid listed: "
                f"{load.pid in pids}",
            )
        except (ValueError, KeyError) as e:
            check("jupyter gpu-containers gpus --json", False, f"{e}: {cli.stdout[-500:]}")
        check("jupyter gpu-containers gpus", text.returncode == 0, f"rc {text.returncode}")

        if cgroup is not None:
            container, _path = cgroup
            uuid = inventory.gpus[0].uuid
            usage = GPUUsage(GPUInventory(cache_seconds=0), interval=0.5)
            watched = [WatchedKernel("kernel-1", container, (uuid,), time.time())]
            usage.start(lambda: watched)
            usage.looked()
            time.sleep(3)
            usage.close()
            report = usage.report("kernel-1", (uuid,), usage.inventory.read_sync())
            samples = report["samples"]
            last = samples[-1] if samples else {}
            check(
                "gpu_usage sampler",
                bool(samples)
                and last["memory_used"] == found_memory(inventory, load.pid)
                and (last["utilization"] is None or last["utilization"] > 0)
                and report["memory_total"] == inventory.gpus[0].memory_total,
                f"{len(samples)} samples, last {last}, memory_total {report['memory_total']}",
            )

        for ref, env in IMAGES.items():
            result = compat.verdict(env, inventory)
            check(f"compat {ref}", result.outcome == compat.NATIVE, json.dumps(result.to_dict()))
    finally:
        load.kill()
        load.wait()
        if cgroup is not None:
            with contextlib.suppress(OSError):
                cgroup[1].rmdir()
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
    if out:
        (out / "results.json").write_text(json.dumps(results, indent=1))
    return 1 if any(r["status"] == "FAIL" for r in results) else 0


def found_memory(inventory: Any, pid: int) -> int | None:
    for gpu in inventory.allocatable():
        for process in gpu.processes:
            if process.pid == pid:
                return int(process.memory_used)
    return None


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
