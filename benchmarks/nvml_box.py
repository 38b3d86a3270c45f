"""The tests' NVML double (tests/nvml_double.py) holding 24 GPUs, so that 20 kernels started at
once can each get one. The benchmark's server reads its GPUs through it
(GPUInventory.nvml_module = "benchmarks.nvml_box"), along the same code path as real NVML."""

import nvml_double
from nvml_double import *  # noqa: F403 - the whole pynvml-like surface

GPU_COUNT = 24

nvml_double.BOX = nvml_double.Box(
    [nvml_double.Device(uuid=f"GPU-bench-{i:02d}", used=0) for i in range(GPU_COUNT)]
)
