"""The GPU inventory: what GPUs this host has, read through NVML or declared by an admin.

NVML (nvidia-ml-py) is the only source of live facts: memory, utilisation, the processes on each
GPU. Hosts without a driver (CI, a laptop, a Binder) report zero GPUs *and the reason*, and CPU
kernels keep working. Admins can declare a static inventory instead, for hosts where NVML is not
usable from the server (and tests use one in place of real GPUs).

:func:`read_nvml` is pure over a pynvml-like module, so it is tested against a double at exactly
that boundary. NVML calls are blocking C calls: they run on a worker thread, and snapshots are
cached briefly so that many panels polling at once cost one NVML pass.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from traitlets import Dict, Enum, Float, List, TraitError, Unicode, validate
from traitlets.config import LoggingConfigurable

# NVML brand enum -> the brand names libnvidia-container's `brand=` constraints use.
_BRANDS = {
    "NVML_BRAND_QUADRO": "quadro",
    "NVML_BRAND_TESLA": "tesla",
    "NVML_BRAND_NVS": "nvs",
    "NVML_BRAND_GRID": "grid",
    "NVML_BRAND_GEFORCE": "geforce",
    "NVML_BRAND_TITAN": "titan",
    "NVML_BRAND_NVIDIA_VAPPS": "vapps",
    "NVML_BRAND_NVIDIA_VPC": "vpc",
    "NVML_BRAND_NVIDIA_VCS": "vcs",
    "NVML_BRAND_NVIDIA_VWS": "vws",
    "NVML_BRAND_NVIDIA_CLOUD_GAMING": "cloudgaming",
    "NVML_BRAND_QUADRO_RTX": "quadrortx",
    "NVML_BRAND_NVIDIA_RTX": "nvidiartx",
    "NVML_BRAND_NVIDIA": "nvidia",
    "NVML_BRAND_GEFORCE_RTX": "geforcertx",
    "NVML_BRAND_TITAN_RTX": "titanrtx",
}


@dataclass(frozen=True)
class GPUProcess:
    pid: int
    memory_used: int  # bytes; 0 when the driver does not say
    # Percent of the GPU's streaming multiprocessors the process used, averaged over NVML's
    # recent samples (the last PROCESS_UTIL_WINDOW seconds); None when the GPU does not say.
    sm_util: int | None = None


# How far back a reading looks for per-process utilisation samples (NVML keeps a short buffer
# of them, one every few hundred milliseconds while a process runs kernels).
PROCESS_UTIL_WINDOW = 5.0


@dataclass(frozen=True)
class GPU:
    """One allocatable device: a whole GPU, or a MIG instance (then ``parent_uuid`` is set)."""

    index: str  # "0", or "0/1" for MIG instance 1 of GPU 0
    uuid: str
    name: str
    brand: str = ""
    compute_capability: str = ""
    memory_total: int = 0  # bytes; 0 when unknown
    # Bytes; None when unknown (a static inventory, a board that does not say): not 0, which
    # would read as an empty GPU.
    memory_used: int | None = None
    utilization: int | None = None  # percent, None when unknown
    mig_enabled: bool = False
    mig_instances: tuple[GPU, ...] = ()
    parent_uuid: str = ""
    processes: tuple[GPUProcess, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "brand": self.brand,
            "compute_capability": self.compute_capability,
            "memory_total": self.memory_total,
            "memory_used": self.memory_used,
            "utilization": self.utilization,
            "mig_enabled": self.mig_enabled,
            "mig_instances": [m.to_dict() for m in self.mig_instances],
            "parent_uuid": self.parent_uuid,
        }


@dataclass(frozen=True)
class Inventory:
    source: str  # "nvml", "static" or "none"
    gpus: tuple[GPU, ...] = ()
    driver_version: str = ""
    cuda_driver_version: str = ""  # "12.2": the CUDA version this driver supports
    reason: str = ""  # why there are no GPUs, when there are none
    read_at: float = field(default_factory=time.time)
    # True when GPUs may be there but could not be read (NVML failed on a GPU host), as opposed
    # to a host without an NVIDIA driver or with an empty static inventory.
    failed: bool = False

    def allocatable(self) -> list[GPU]:
        """What kernels can be given: whole GPUs, except that a MIG-enabled GPU offers its
        instances instead of itself."""
        out: list[GPU] = []
        for gpu in self.gpus:
            out.extend(gpu.mig_instances if gpu.mig_enabled else (gpu,))
        return out

    def find(self, ident: str) -> GPU | None:
        """A device by index ("0", "0/1") or UUID ("GPU-…", "MIG-…")."""
        for gpu in self.allocatable():
            if ident in (gpu.index, gpu.uuid):
                return gpu
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cuda_version(code: int) -> str:
    """NVML's 12020 -> "12.2"."""
    return f"{code // 1000}.{(code % 1000) // 10}"


def read_nvml(nvml: ModuleType | Any) -> Inventory:
    """Read the inventory through a pynvml-like module (already initialised)."""
    driver = _text(nvml.nvmlSystemGetDriverVersion())
    cuda = _cuda_version(int(nvml.nvmlSystemGetCudaDriverVersion()))
    brands = {getattr(nvml, const): name for const, name in _BRANDS.items() if hasattr(nvml, const)}
    gpus = []
    for i in range(int(nvml.nvmlDeviceGetCount())):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        gpus.append(_read_device(nvml, handle, str(i), brands, parent=None))
    reason = "" if gpus else "The NVIDIA driver is loaded but reports no GPUs."
    return Inventory("nvml", tuple(gpus), driver, cuda, reason)


def _optional(call: Any, *args: Any) -> Any:
    """NVML answers NOT_SUPPORTED for many queries on some boards (utilisation on MIG, …)."""
    try:
        return call(*args)
    except Exception:
        return None


def _read_device(
    nvml: Any, handle: Any, index: str, brands: dict[Any, str], parent: GPU | None
) -> GPU:
    inherited_cc = parent.compute_capability if parent else ""
    memory = _memory_info(nvml, handle)
    util = _optional(nvml.nvmlDeviceGetUtilizationRates, handle)
    cc = _optional(nvml.nvmlDeviceGetCudaComputeCapability, handle)
    running = _optional(nvml.nvmlDeviceGetComputeRunningProcesses, handle) or []
    sm: dict[int, int] | None = _process_utilization(nvml, handle) if running else {}
    processes = tuple(
        GPUProcess(
            int(p.pid), int(p.usedGpuMemory or 0), None if sm is None else sm.get(int(p.pid), 0)
        )
        for p in running
    )
    gpu = GPU(
        index=index,
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        name=_text(nvml.nvmlDeviceGetName(handle)),
        brand=parent.brand
        if parent
        else brands.get(_optional(nvml.nvmlDeviceGetBrand, handle), ""),
        compute_capability=f"{cc[0]}.{cc[1]}" if cc else inherited_cc,
        memory_total=int(memory.total) if memory else 0,
        memory_used=int(memory.used) if memory else None,
        utilization=int(util.gpu) if util else None,
        parent_uuid=parent.uuid if parent else "",
        processes=processes,
    )
    if parent is not None:
        return gpu
    mig = _optional(nvml.nvmlDeviceGetMigMode, handle)
    if not mig or int(mig[0]) != int(getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1)):
        return gpu
    instances = []
    for j in range(int(_optional(nvml.nvmlDeviceGetMaxMigDeviceCount, handle) or 0)):
        mig_handle = _optional(nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, j)
        if mig_handle is not None:
            instances.append(_read_device(nvml, mig_handle, f"{index}/{j}", brands, parent=gpu))
    return GPU(**{**gpu.__dict__, "mig_enabled": True, "mig_instances": tuple(instances)})


def _memory_info(nvml: Any, handle: Any) -> Any:
    """Total and used memory as nvidia-smi counts them, None when the board does not say.

    NVML's first memory query counts what the driver reserves for itself as used (480 MiB on an
    H100 with driver 580), so an idle GPU would read as partly used; its v2 query (drivers from
    510, nvidia-ml-py from 11.515) reports that reservation apart, as nvidia-smi does. Older
    drivers and bindings only have the first one."""
    version = getattr(nvml, "nvmlMemory_v2", None)
    if version is not None:
        try:
            return nvml.nvmlDeviceGetMemoryInfo(handle, version)
        except Exception:
            pass  # FUNCTION_NOT_FOUND (driver before 510), NOT_SUPPORTED: the first query
    return _optional(nvml.nvmlDeviceGetMemoryInfo, handle)


def _process_utilization(nvml: Any, handle: Any) -> dict[int, int] | None:
    """pid -> mean SM utilisation (percent) over NVML's samples of the last few seconds.

    NVML answers NOT_FOUND when no process ran a kernel in that window: every process on the
    GPU was idle, 0. None when the query is not supported (MIG instances, older boards)."""
    since = int((time.time() - PROCESS_UTIL_WINDOW) * 1_000_000)  # NVML: microseconds
    try:
        samples = nvml.nvmlDeviceGetProcessUtilization(handle, since)
    except Exception as e:
        return {} if "Not Found" in str(e) else None
    totals: dict[int, list[int]] = {}
    for sample in samples or []:
        totals.setdefault(int(sample.pid), []).append(int(sample.smUtil))
    return {pid: round(sum(v) / len(v)) for pid, v in totals.items()}


# A declared GPU's fields (GPUInventory.static_gpus), and what each must be.
STATIC_GPU_FIELDS = {
    "index": "a whole number (the GPU's index, as nvidia-smi numbers it)",
    "uuid": 'text (the GPU\'s UUID, as nvidia-smi -L gives it: "GPU-…")',
    "name": "text",
    "brand": 'text (e.g. "tesla", "geforce")',
    "compute_capability": 'text (e.g. "8.0", as nvidia-smi --query-gpu=compute_cap gives it)',
    "memory_total": "a whole number of bytes",
}


def static_gpu_problems(gpus: list[Any]) -> list[str]:
    """What is wrong with a declared inventory, a sentence each naming the entry; none when
    each entry is a GPU: only known fields, each of its kind, no index or UUID twice."""
    problems: list[str] = []
    indices: set[str] = set()
    uuids: set[str] = set()
    for n, gpu in enumerate(gpus):
        where = f"GPUInventory.static_gpus[{n}]"
        if not isinstance(gpu, dict):
            problems.append(f"{where} must be a GPU's fields in braces, not {gpu!r}.")
            continue
        unknown = sorted(str(k) for k in gpu if k not in STATIC_GPU_FIELDS)
        if unknown:
            problems.append(
                f"{where}: {unknown[0]!r} is not a field of a declared GPU (its fields: "
                f"{', '.join(STATIC_GPU_FIELDS)})."
            )
        for key, kind in STATIC_GPU_FIELDS.items():
            if key not in gpu:
                continue
            value = gpu[key]
            if key in ("index", "memory_total"):
                whole = isinstance(value, int) and not isinstance(value, bool) and value >= 0
                ok = whole or (key == "index" and isinstance(value, str) and value.isdigit())
            elif key == "compute_capability":  # 8.0 written as a number is still 8.0
                ok = isinstance(value, (str, int, float)) and not isinstance(value, bool)
            else:
                ok = isinstance(value, str) and value.strip() != ""
            if not ok:
                problems.append(f'{where}: "{key}" must be {kind}, not {value!r}.')
        index = str(gpu.get("index", n))
        if index in indices:
            problems.append(f"{where}: the index {index} is declared twice.")
        indices.add(index)
        uuid = gpu.get("uuid")
        if isinstance(uuid, str) and uuid:
            if uuid in uuids:
                problems.append(f"{where}: the UUID {uuid} is declared twice.")
            uuids.add(uuid)
    return problems


def static_inventory(gpus: list[dict[str, Any]], driver: str, cuda: str) -> Inventory:
    """The admin-declared inventory (no live memory or utilisation)."""
    devices = []
    for i, spec in enumerate(gpus):
        index = str(spec.get("index", i))
        devices.append(
            GPU(
                index=index,
                uuid=str(spec.get("uuid") or f"GPU-static-{index}"),
                name=str(spec.get("name", "GPU")),
                brand=str(spec.get("brand", "")).lower(),
                compute_capability=str(spec.get("compute_capability", "")),
                memory_total=int(spec.get("memory_total", 0)),
            )
        )
    reason = "" if devices else "The administrator's list of this server's GPUs is empty."
    return Inventory("static", tuple(devices), driver, cuda, reason)


def nvml_absent(error: BaseException) -> bool:
    """Whether NVML failed because this host has no NVIDIA driver (rather than a GPU fault)."""
    text = str(error)
    return (
        "Library Not Found" in text
        or "Driver Not Loaded" in text
        or isinstance(error, (ImportError, OSError))
    )


def nvml_failure_reason(error: BaseException) -> str:
    text = str(error)
    if "Library Not Found" in text or isinstance(error, (ImportError, OSError)):
        return (
            "No NVIDIA driver library (libnvidia-ml.so) on this host, so no GPUs are listed. "
            "CPU kernels still work."
        )
    if "Driver Not Loaded" in text:
        return (
            "The NVIDIA kernel driver is not loaded, so no GPUs are listed. CPU kernels still work."
        )
    return f"NVML could not be read ({text}); no GPUs are listed. CPU kernels still work."


class GPUInventory(LoggingConfigurable):
    """The host's GPUs, from NVML or from configuration."""

    source = Enum(
        ["auto", "nvml", "static"],
        "auto",
        config=True,
        help="""Where GPUs come from. "nvml": the NVIDIA driver, live. "static": static_gpus.
        "auto" (default): static_gpus when any are configured, else NVML.""",
    )

    static_gpus = List(
        Dict(),
        config=True,
        help="""A declared inventory for hosts where NVML cannot be read by the server, e.g.
        [{"index": 0, "uuid": "GPU-0b5…", "name": "Tesla V100-SXM2-32GB", "brand": "tesla",
        "compute_capability": "7.0", "memory_total": 34359738368}]. Memory and utilisation are
        then unknown. Give "compute_capability" (nvidia-smi --query-gpu=compute_cap): without it
        the compatibility verdicts cannot tell whether an image's CUDA supports the GPU (CUDA 13
        dropped compute capability below 7.5).""",
    )

    @validate("static_gpus")
    def _valid_static_gpus(self, proposal: Any) -> list[dict[str, Any]]:
        """Each declared GPU checked here, so that a mistyped one stops the server with a
        sentence naming it (server/start_failure.py) rather than show students a GPU that is
        not one, or fail a start later."""
        gpus: list[dict[str, Any]] = list(proposal["value"])
        for problem in static_gpu_problems(gpus):
            raise TraitError(problem)
        return gpus

    static_driver_version = Unicode(
        "", config=True, help="Driver version reported with static_gpus, e.g. 535.104.05."
    )
    static_cuda_version = Unicode(
        "", config=True, help="CUDA version the driver supports, reported with static_gpus."
    )

    cache_seconds = Float(
        2.0,
        config=True,
        help="""Reuse an NVML reading for this long: panels polling at once cost one NVML pass.""",
    )

    nvml_module = Unicode(
        "pynvml",
        help="The NVML binding to import (tests point this at a double).",
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.Lock()
        self._cached: Inventory | None = None
        self._nvml: Any = None

    def _use_static(self) -> bool:
        return self.source == "static" or (self.source == "auto" and bool(self.static_gpus))

    def read_sync(self) -> Inventory:
        """A fresh or recent reading. Blocking: call from a worker thread (or at start-up)."""
        with self._lock:
            if self._cached and time.time() - self._cached.read_at < self.cache_seconds:
                return self._cached
            if self._use_static():
                inventory = static_inventory(
                    list(self.static_gpus), self.static_driver_version, self.static_cuda_version
                )
            else:
                inventory = self._read_nvml()
            self._cached = inventory
            return inventory

    def _read_nvml(self) -> Inventory:
        try:
            if self._nvml is None:
                nvml = __import__(self.nvml_module, fromlist=["nvmlInit"])
                nvml.nvmlInit()
                self._nvml = nvml
            return read_nvml(self._nvml)
        except Exception as e:
            # Initialise again next time: the driver may come (or come back) later.
            self._nvml = None
            return Inventory("none", reason=nvml_failure_reason(e), failed=not nvml_absent(e))

    async def read(self) -> Inventory:
        return await asyncio.to_thread(self.read_sync)


_CONTAINER_IN_CGROUP = re.compile(r"(?:docker[-/]|/)([0-9a-f]{64})(?:\.scope)?\s*$", re.M)


def container_of_pid(pid: int, proc: str = "/proc") -> str | None:
    """The Docker container a host process runs in, from its cgroup (v1 and v2 layouts)."""
    try:
        with open(f"{proc}/{pid}/cgroup") as f:
            text = f.read()
    except OSError:
        return None
    match = _CONTAINER_IN_CGROUP.search(text)
    return match.group(1) if match else None
