"""GPUs: the inventory (NVML or static), the ledger and its choice (allocator), the host-wide
wait queue, quotas, the idle-GPU policy, per-kernel use, holders for the API, notebooks'
GPU requests."""

from ..base.moved import forward

# Before the folders, gpus.py held what inventory.py in this folder holds: its names still
# resolve here, with a warning.
__getattr__ = forward(__name__, "inventory")
