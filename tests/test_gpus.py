"""The GPU inventory over the NVML double (no GPUs on these machines), and the static one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nvml_double
import pytest
from traitlets import TraitError

from jupyter_gpu_containers.gpus.inventory import (
    GPUInventory,
    container_of_pid,
    read_nvml,
    static_gpu_problems,
)


@pytest.fixture
def box() -> nvml_double.Box:
    nvml_double.BOX = nvml_double.eight_a100()
    return nvml_double.BOX


def test_eight_gpu_box(box: nvml_double.Box) -> None:
    box.devices[3].processes = [(4242, 3 * nvml_double.GiB)]
    inv = read_nvml(nvml_double)
    assert (inv.source, inv.driver_version, inv.cuda_driver_version) == (
        "nvml",
        "535.104.05",
        "12.2",
    )
    assert [g.index for g in inv.gpus] == [str(i) for i in range(8)]
    gpu = inv.gpus[3]
    assert (gpu.uuid, gpu.name, gpu.brand, gpu.compute_capability) == (
        "GPU-a100-0003",
        "NVIDIA A100-SXM4-80GB",
        "tesla",
        "8.0",
    )
    assert (gpu.memory_total, gpu.memory_used, gpu.utilization) == (80 * 2**30, 4 * 2**30, 30)
    assert gpu.processes[0].pid == 4242
    assert len(inv.allocatable()) == 8


def test_mig_instances_are_allocatable_by_uuid() -> None:
    nvml_double.BOX = nvml_double.eight_a100(mig_on=1)
    inv = read_nvml(nvml_double)
    parent = inv.gpus[1]
    assert parent.mig_enabled and parent.utilization is None
    assert [m.uuid for m in parent.mig_instances] == ["MIG-a100-1-0", "MIG-a100-1-1"]
    instance = inv.find("MIG-a100-1-1")
    assert instance is not None
    assert (instance.index, instance.parent_uuid, instance.compute_capability) == (
        "1/1",
        "GPU-a100-0001",
        "8.0",
    )
    # The MIG-enabled GPU offers its two instances instead of itself: 7 + 2.
    assert len(inv.allocatable()) == 9
    assert inv.find("GPU-a100-0001") is None


def test_driver_with_no_gpus() -> None:
    nvml_double.BOX = nvml_double.Box(devices=[])
    inv = read_nvml(nvml_double)
    assert inv.gpus == () and "reports no GPUs" in inv.reason


@pytest.mark.parametrize(
    ("error", "says", "failed"),
    [
        ("NVML Shared Library Not Found", "No NVIDIA driver library", False),
        ("Driver Not Loaded", "driver is not loaded", False),
        ("Unknown Error", "NVML could not be read (Unknown Error)", True),
    ],
)
def test_no_driver_reports_zero_gpus_with_the_reason(error: str, says: str, failed: bool) -> None:
    nvml_double.BOX = nvml_double.Box(devices=[], init_error=error)
    inv = GPUInventory(nvml_module="nvml_double", cache_seconds=0).read_sync()
    assert inv.source == "none" and inv.gpus == ()
    assert says in inv.reason and "CPU kernels still work" in inv.reason
    # A host without a driver has no GPUs; a driver that errors may still have some.
    assert inv.failed is failed


def test_real_pynvml_on_this_machine_never_raises() -> None:
    inv = GPUInventory(cache_seconds=0).read_sync()
    # CI has no driver: zero GPUs and a reason. A GPU host: GPUs and no reason.
    assert bool(inv.gpus) != bool(inv.reason)


def test_recovers_when_the_driver_appears(box: nvml_double.Box) -> None:
    box.init_error = "Driver Not Loaded"
    inventory = GPUInventory(nvml_module="nvml_double", cache_seconds=0)
    assert inventory.read_sync().gpus == ()
    box.init_error = ""
    assert len(inventory.read_sync().gpus) == 8


def test_static_inventory_wins_in_auto_mode(box: nvml_double.Box) -> None:
    inventory = GPUInventory(
        nvml_module="nvml_double",
        static_gpus=[{"uuid": "GPU-s0", "name": "Tesla V100", "brand": "Tesla"}, {"name": "T4"}],
        static_driver_version="470.82.01",
    )
    inv = inventory.read_sync()
    assert inv.source == "static" and inv.driver_version == "470.82.01"
    assert [(g.index, g.uuid, g.brand) for g in inv.gpus] == [
        ("0", "GPU-s0", "tesla"),
        ("1", "GPU-static-1", ""),
    ]
    assert "empty" in GPUInventory(source="static").read_sync().reason


def test_memory_in_use_is_unknown_not_zero(box: nvml_double.Box) -> None:
    """A static inventory, and a board that does not answer the memory query, report the memory
    in use as unknown (None, null in the API), never as 0: 0 reads as an empty GPU."""
    static = GPUInventory(
        static_gpus=[{"name": "Tesla V100-SXM2-32GB", "memory_total": 32 * 2**30}]
    ).read_sync()
    assert static.gpus[0].to_dict()["memory_used"] is None
    assert static.gpus[0].to_dict()["memory_total"] == 32 * 2**30

    def no_memory_info(device: nvml_double.Device, version: int | None = None) -> None:
        raise nvml_double.NVMLError("Not Supported")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nvml_double, "nvmlDeviceGetMemoryInfo", no_memory_info)
        gpu = read_nvml(nvml_double).gpus[0]
    assert (gpu.memory_used, gpu.memory_total) == (None, 0)
    # A board that answers: its numbers.
    assert read_nvml(nvml_double).gpus[0].memory_used == 1 * nvml_double.GiB


def test_memory_used_leaves_out_what_the_driver_reserves() -> None:
    """Seen on an H100 (driver 580, docs/real-gpu-check.md): NVML's first memory query counts the
    480 MiB the driver reserves as used, so an idle GPU read as 480 MiB used where nvidia-smi
    says 0 MiB. The v2 query reports the reservation apart, as nvidia-smi does."""
    nvml_double.BOX = box = nvml_double.h100()
    gpu = read_nvml(nvml_double).gpus[0]
    assert (gpu.memory_used, gpu.memory_total) == (0, 85520809984)
    assert (gpu.name, gpu.brand, gpu.compute_capability) == (
        "NVIDIA H100 80GB HBM3",
        "nvidia",
        "9.0",
    )
    box.devices[0].used = 9774825472  # a PyTorch process holding 9322 MiB
    box.devices[0].processes = [(491, 9774825472)]
    gpu = read_nvml(nvml_double).gpus[0]
    assert gpu.memory_used == sum(p.memory_used for p in gpu.processes) == 9774825472


def test_memory_from_drivers_and_bindings_without_the_v2_query() -> None:
    """A driver before 510 (no nvmlDeviceGetMemoryInfo_v2) or an nvidia-ml-py before 11.515
    (no nvmlMemory_v2): the first query's answer, reservation included, rather than none."""
    nvml_double.BOX = box = nvml_double.h100()
    box.memory_v2 = False
    assert read_nvml(nvml_double).gpus[0].memory_used == 503316480
    box.memory_v2 = True
    with pytest.MonkeyPatch.context() as patch:
        patch.delattr(nvml_double, "nvmlMemory_v2")
        assert read_nvml(nvml_double).gpus[0].memory_used == 503316480


def test_readings_are_cached(box: nvml_double.Box) -> None:
    inventory = GPUInventory(nvml_module="nvml_double", cache_seconds=60)
    first = inventory.read_sync()
    box.devices.pop()
    assert inventory.read_sync() is first


@pytest.mark.parametrize(
    "cgroup",
    [
        "12:memory:/docker/{cid}\n11:cpu:/docker/{cid}\n",  # cgroup v1
        "0::/system.slice/docker-{cid}.scope\n",  # cgroup v2, systemd driver
    ],
)
def test_container_of_pid(tmp_path: Path, cgroup: str) -> None:
    cid = "ab" * 32
    (tmp_path / "77").mkdir()
    (tmp_path / "77" / "cgroup").write_text(cgroup.format(cid=cid))
    assert container_of_pid(77, proc=str(tmp_path)) == cid
    assert container_of_pid(78, proc=str(tmp_path)) is None


def test_a_declared_inventory_of_gpus_is_accepted_as_declared() -> None:
    declared = [
        {
            "index": 0,
            "uuid": "GPU-0b5d",
            "name": "Tesla V100",
            "brand": "tesla",
            "compute_capability": "7.0",
            "memory_total": 32 * 2**30,
        },
        {"index": "1", "name": "Tesla T4", "compute_capability": 7.5},
        {"name": "declared by its place"},  # index 2
    ]
    inventory = GPUInventory(source="static", static_gpus=declared, cache_seconds=0)
    assert [g.index for g in inventory.read_sync().gpus] == ["0", "1", "2"]


@pytest.mark.parametrize(
    ("declared", "said"),
    [
        ([{"index": "zero"}], 'GPUInventory.static_gpus[0]: "index" must be a whole number'),
        ([{"index": -1}], 'GPUInventory.static_gpus[0]: "index" must be a whole number'),
        ([{"index": True}], 'GPUInventory.static_gpus[0]: "index" must be a whole number'),
        ([{}, {"memory_total": "40G"}], '[1]: "memory_total" must be a whole number of bytes'),
        ([{"uuid": 5}], 'GPUInventory.static_gpus[0]: "uuid" must be text'),
        ([{"name": ""}], 'GPUInventory.static_gpus[0]: "name" must be text'),
        ([{"idx": 0}], "GPUInventory.static_gpus[0]: 'idx' is not a field of a declared GPU"),
        ([{"index": 1}, {}], "GPUInventory.static_gpus[1]: the index 1 is declared twice."),
        (
            [{"uuid": "GPU-a"}, {"uuid": "GPU-a"}],
            "GPUInventory.static_gpus[1]: the UUID GPU-a is declared twice.",
        ),
    ],
)
def test_a_mistyped_declared_gpu_is_refused_in_a_sentence_naming_it(
    declared: list[Any], said: str
) -> None:
    with pytest.raises(TraitError) as refused:
        GPUInventory(source="static", static_gpus=declared)
    assert said in str(refused.value)


def test_an_entry_that_is_no_gpu_at_all_is_said() -> None:
    # (traitlets refuses it first in a configuration; the check says it to any other caller)
    assert static_gpu_problems([1]) == [
        "GPUInventory.static_gpus[0] must be a GPU's fields in braces, not 1."
    ]
