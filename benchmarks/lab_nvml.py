"""The tests' NVML double (tests/nvml_double.py) holding the lab's 8 GPUs (section 8, lab.py),
with per-process use that the benchmark drives: the kernel service reads its GPUs through this
module (GPUInventory.nvml_module = "benchmarks.lab_nvml"), along the same code path as real NVML,
and sees on each GPU the processes the benchmark says run there.

The benchmark writes a JSON file (its path in the service's environment, ``JGC_LAB_ACTIVITY``;
the number of GPUs is ``JGC_LAB_GPUS``, 8 unless said):
``{"<GPU uuid>": [[host pid, memory bytes, SM utilisation percent or null], ...]}``. A pid with a
utilisation is a student's kernel at work; one with null has memory allocated but ran nothing
lately (NVML then has no sample of it): a notebook left open over lunch. The file is read again
whenever it changed, at the start of each NVML pass (``nvmlDeviceGetCount``)."""

import json
import os

import nvml_double
from nvml_double import *  # noqa: F403 - the whole pynvml-like surface

# The names lab.py gives the service's environment.
ACTIVITY_ENV = "JGC_LAB_ACTIVITY"
GPU_COUNT = int(os.environ.get("JGC_LAB_GPUS") or 8)

nvml_double.BOX = nvml_double.Box(
    [
        nvml_double.Device(uuid=f"GPU-lab-{i}", name="NVIDIA A100-SXM4-80GB", used=0)
        for i in range(GPU_COUNT)
    ]
)
_read: tuple[int, int] = (0, 0)  # (mtime_ns, size) of the file last read


def _refresh() -> None:
    global _read
    path = os.environ.get(ACTIVITY_ENV, "")
    if not path:
        return
    try:
        info = os.stat(path)
        if (info.st_mtime_ns, info.st_size) == _read:
            return
        with open(path) as f:
            activity = json.load(f)
        _read = (info.st_mtime_ns, info.st_size)
    except (OSError, ValueError):
        return  # being replaced, or not written yet: the previous reading stands
    for device in nvml_double.BOX.devices:
        rows = activity.get(device.uuid, [])
        device.processes = [(int(pid), int(memory)) for pid, memory, _ in rows]
        device.process_util = {int(pid): int(util) for pid, _, util in rows if util is not None}
        device.used = sum(memory for _, memory in device.processes)
        device.util = max(device.process_util.values(), default=0)


def nvmlDeviceGetCount() -> int:
    _refresh()
    return nvml_double.nvmlDeviceGetCount()
