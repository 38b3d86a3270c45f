"""A double of pynvml at its boundary: the same function names, realistic answers.

Tests set BOX to one of the boxes below (or their own) before the code under test imports this
module in place of pynvml (GPUInventory.nvml_module = "nvml_double").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

NVML_BRAND_TESLA = 2
NVML_BRAND_GEFORCE = 5
NVML_BRAND_NVIDIA = 14  # data-center boards from Hopper on (an H100 answers this, not TESLA)
NVML_DEVICE_MIG_ENABLE = 1
nvmlMemory_v2 = 0x02000028  # sizeof(nvmlMemory_v2_t) | 2 << 24, as nvidia-ml-py defines it
GiB = 1024**3


class NVMLError(Exception):
    pass


@dataclass
class Device:
    uuid: str
    name: str = "NVIDIA A100-SXM4-80GB"
    brand: int = NVML_BRAND_TESLA
    cc: tuple[int, int] = (8, 0)
    total: int = 80 * GiB
    used: int = 1 * GiB  # as nvidia-smi counts it: what processes allocated
    # What the driver keeps for itself (480 MiB on an H100 with driver 580): NVML's first memory
    # query counts it as used, its v2 query reports it apart.
    reserved: int = 0
    util: int = 0
    processes: list[tuple[int, int]] = field(default_factory=list)
    # pid -> SM utilisation (percent) in NVML's recent per-process samples; a pid on the GPU but
    # not here ran no kernel lately (NVML then has no sample of it).
    process_util: dict[int, int] = field(default_factory=dict)
    mig: list[Device] | None = None


@dataclass
class Box:
    devices: list[Device]
    driver: str = "535.104.05"
    cuda: int = 12020
    init_error: str = ""
    lost: bool = False  # NVML fails mid-run (a GPU fell off the bus, the driver was reset)
    memory_v2: bool = True  # False: a driver before 510, without nvmlDeviceGetMemoryInfo_v2


def eight_a100(mig_on: int | None = None) -> Box:
    devices = [Device(uuid=f"GPU-a100-{i:04d}", util=10 * i, used=(i + 1) * GiB) for i in range(8)]
    if mig_on is not None:
        devices[mig_on].mig = [
            Device(
                uuid=f"MIG-a100-{mig_on}-{j}",
                name="NVIDIA A100-SXM4-80GB MIG 3g.40gb",
                total=40 * GiB,
                used=0,
                cc=(0, 0),
            )
            for j in range(2)
        ]
    return Box(devices)


def h100() -> Box:
    """The H100 of docs/real-gpu-check.md, idle, as NVML answered there (driver 580.159.04)."""
    device = Device(
        uuid="GPU-b30a8d26-120d-6709-edab-20f3e60abfd5",
        name="NVIDIA H100 80GB HBM3",
        brand=NVML_BRAND_NVIDIA,
        cc=(9, 0),
        total=85520809984,
        used=0,
        reserved=503316480,
    )
    return Box([device], driver="580.159.04", cuda=13000)


BOX = eight_a100()


def nvmlInit() -> None:
    if BOX.init_error:
        raise NVMLError(BOX.init_error)


def nvmlSystemGetDriverVersion() -> str:
    return BOX.driver


def nvmlSystemGetCudaDriverVersion() -> int:
    return BOX.cuda


def nvmlDeviceGetCount() -> int:
    if BOX.lost:
        raise NVMLError("GPU is lost")
    return len(BOX.devices)


def nvmlDeviceGetHandleByIndex(i: int) -> Device:
    return BOX.devices[i]


def nvmlDeviceGetUUID(d: Device) -> str:
    return d.uuid


def nvmlDeviceGetName(d: Device) -> bytes:
    return d.name.encode()  # older bindings return bytes


def nvmlDeviceGetBrand(d: Device) -> int:
    return d.brand


def nvmlDeviceGetCudaComputeCapability(d: Device) -> tuple[int, int]:
    if d.cc == (0, 0):
        raise NVMLError("Not Supported")
    return d.cc


def nvmlDeviceGetMemoryInfo(d: Device, version: int | None = None) -> Any:
    """As nvidia-ml-py: the first query without ``version``, v2 with ``nvmlMemory_v2``."""
    free = d.total - d.used - d.reserved
    if not version:
        return SimpleNamespace(total=d.total, used=d.used + d.reserved, free=free)
    if not BOX.memory_v2:
        raise NVMLError("Function Not Found")
    if version != nvmlMemory_v2:
        raise NVMLError("Argument Version Mismatch")
    return SimpleNamespace(
        version=version, total=d.total, reserved=d.reserved, free=free, used=d.used
    )


def nvmlDeviceGetUtilizationRates(d: Device) -> Any:
    if d.mig is not None or d.uuid.startswith("MIG-"):
        raise NVMLError("Not Supported")  # as real MIG setups answer
    return SimpleNamespace(gpu=d.util, memory=0)


def nvmlDeviceGetComputeRunningProcesses(d: Device) -> list[Any]:
    return [SimpleNamespace(pid=pid, usedGpuMemory=mem) for pid, mem in d.processes]


def nvmlDeviceGetProcessUtilization(d: Device, last_seen_us: int) -> list[Any]:
    """As NVML: the samples newer than ``last_seen_us`` (µs since the epoch), NOT_FOUND when
    there are none, NOT_SUPPORTED on MIG."""
    if d.mig is not None or d.uuid.startswith("MIG-"):
        raise NVMLError("Not Supported")
    now = int(time.time() * 1_000_000)
    samples = [
        SimpleNamespace(pid=pid, timeStamp=now, smUtil=util, memUtil=0, encUtil=0, decUtil=0)
        for pid, util in d.process_util.items()
        if now > last_seen_us
    ]
    if not samples:
        raise NVMLError("Not Found")
    return samples


def nvmlDeviceGetMigMode(d: Device) -> tuple[int, int]:
    if d.mig is None:
        return (0, 0)
    return (NVML_DEVICE_MIG_ENABLE, NVML_DEVICE_MIG_ENABLE)


def nvmlDeviceGetMaxMigDeviceCount(d: Device) -> int:
    return 7 if d.mig is not None else 0


def nvmlDeviceGetMigDeviceHandleByIndex(d: Device, j: int) -> Device:
    if d.mig is None or j >= len(d.mig):
        raise NVMLError("Not Found")
    return d.mig[j]
