"""Will an image's CUDA stack run on this host's driver and GPUs? A verdict with one line a user
reads.

Starting a GPU kernel from an image that cannot run here costs a pull, a container and a confusing
failure deep inside the framework ("CUDA driver version is insufficient", error 804, a PTX JIT
error). The facts that decide it are all known before the container starts: the image's
environment (``NVIDIA_REQUIRE_*``, ``CUDA_VERSION``, ``CUDA_DRIVER_VERSION``) and the host's
driver and GPUs (:class:`~jupyter_gpu_containers.gpus.inventory.Inventory`). This module turns
them into a :class:`Verdict` the catalog shows next to each image and the provisioner checks
before a launch.

Three checks are combined, because none alone tells:

* the GPU's architecture: a CUDA release builds code only for some compute capabilities (CUDA 13
  none below 7.5), so an image whose CUDA dropped the GPU cannot use it whatever the driver, and
  one whose CUDA predates the GPU runs there only through PTX JIT.
* the NVIDIA runtime's own gate: every ``NVIDIA_REQUIRE_*`` variable (the libnvidia-container
  constraint grammar) must hold, or the runtime refuses the container. Evaluated here exactly as
  the runtime does, per GPU, so the verdict can quote its words ("unsatisfied condition: ...").
* the image's real need: recent NGC images declare a permissive ``cuda>=9.0`` and rely on
  ``CUDA_VERSION``/``CUDA_DRIVER_VERSION`` and their entrypoint's driver check, so the toolkit
  version is compared with the driver too, allowing for NVIDIA's minor-version and forward
  compatibility (docs.nvidia.com/deploy/cuda-compatibility).

The module is pure (no Docker, no NVML, no I/O) so that every rule is tested against real
environment values in a table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..gpus.inventory import GPU, Inventory
from .cuda_requirements import (
    Condition,
    brand_specific,
    compare_versions,
    env_flag,
    image_cuda,
    is_version,
    parse_cuda,
    parse_requirement,
    requirement_texts,
    term_text,
)

NATIVE = "native"
COMPAT = "compat"
CANNOT_RUN = "cannot-run"
CPU_ONLY = "cpu-only"
NO_GPUS = "no-gpus"
UNKNOWN = "unknown"

# Best first: with several GPUs, the verdict is the best any of them gets (a kernel can be given
# the GPU that fits), and the GPUs that fare worse are named in the reason.
_RANK = {NATIVE: 0, COMPAT: 1, UNKNOWN: 2, CANNOT_RUN: 3}


@dataclass(frozen=True)
class Verdict:
    outcome: str  # NATIVE, COMPAT, CANNOT_RUN, CPU_ONLY, NO_GPUS or UNKNOWN
    reason: str  # one line, a sentence a user reads
    needed_driver: str = ""  # the driver that would run the image natively (for CANNOT_RUN)

    def to_dict(self) -> dict[str, str]:
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "needed_driver": self.needed_driver,
        }


# --------------------------------------------------------------------------- versions


# The minimum Linux x86_64 driver bundled with each CUDA toolkit, by (major, minor) and then by
# update level (the third part of CUDA_VERSION), from NVIDIA's CUDA release notes (Table 3).
# 9.x/10.x images count build numbers in that part (10.1.243), hence one entry each there.
_MIN_DRIVER: dict[tuple[int, int], tuple[tuple[int, str], ...]] = {
    (13, 1): ((0, "590.44.01"),),
    (13, 0): ((0, "580.65.06"), (1, "580.82.07"), (2, "580.95.05")),
    (12, 9): ((0, "575.51.03"), (1, "575.57.08")),
    (12, 8): ((0, "570.26"), (1, "570.124.06")),
    (12, 6): ((0, "560.28.03"), (1, "560.35.03"), (3, "560.35.05")),
    (12, 5): ((0, "555.42.02"), (1, "555.42.06")),
    (12, 4): ((0, "550.54.14"), (1, "550.54.15")),
    (12, 3): ((0, "545.23.06"), (1, "545.23.08")),
    (12, 2): ((0, "535.54.03"), (1, "535.86.09"), (2, "535.104.05")),
    (12, 1): ((0, "530.30.02"),),
    (12, 0): ((0, "525.60.13"), (1, "525.85.12")),
    (11, 8): ((0, "520.61.05"),),
    (11, 7): ((0, "515.43.04"), (1, "515.48.07")),
    (11, 6): ((0, "510.39.01"), (1, "510.47.03")),
    (11, 5): ((0, "495.29.05"),),
    (11, 4): ((0, "470.42.01"), (1, "470.57.02"), (3, "470.82.01")),
    (11, 3): ((0, "465.19.01"),),
    (11, 2): ((0, "460.27.03"),),
    (11, 1): ((0, "455.23"),),
    (11, 0): ((0, "450.51.05"),),
    (10, 2): ((0, "440.33"),),
    (10, 1): ((0, "418.39"),),
    (10, 0): ((0, "410.48"),),
    (9, 0): ((0, "384.81"),),
}

# Minor-version compatibility: within a CUDA major release, a driver of the same family runs newer
# toolkits (without PTX JIT of newer PTX). NVIDIA's "minimum required driver" per major release.
_FAMILY_MIN_DRIVER = {13: "580", 12: "525", 11: "450.80.02"}

# Forward compatibility (cuda-compat) supports only some driver branches. Images that say which
# (the nvidia/cuda brand terms) are taken at their word; for the others (NGC's cuda>=9.0) assume
# only the oldest branch the nvidia/cuda images of that major release still list.
_FORWARD_MIN_BRANCH = {13: 535}
_FORWARD_MIN_BRANCH_DEFAULT = 470

# NVML brands (as libnvidia-container names them) on which forward compatibility works: data-center
# boards ("nvidia" is what recent ones report) and vGPUs on them, which the nvidia/cuda images list.
_DATA_CENTER_BRANDS = frozenset(
    {"tesla", "nvidia", "grid", "vapps", "vpc", "vcs", "vws", "cloudgaming"}
)
# Only the NGC-ready RTX parts among these support it; NVML cannot tell which, so say so.
_RTX_BRANDS = frozenset({"nvidiartx", "quadrortx"})


def min_driver_for_cuda(cuda: str) -> str | None:
    """The minimum driver for a CUDA toolkit version: "12.2.2" -> "535.104.05", "12.2.0" and
    "12.2" -> "535.54.03". ``None`` when the version is not in NVIDIA's table."""
    parsed = parse_cuda(cuda)
    if parsed is None:
        return None
    major, minor, patch = parsed
    entries = _MIN_DRIVER.get((major, minor))
    if not entries:
        return None
    # The newest update level not above the image's (12.6.2 -> Update 1/2's driver).
    found = entries[0][1]
    for update, driver in entries:
        if update <= (patch or 0):
            found = driver
    return found


# --------------------------------------------------------------------------- architectures

# A CUDA toolkit builds GPU code (and its libraries ship it) only for some compute capabilities;
# a framework built with it has nothing to run on the others, whatever the driver. Two tables,
# by the first CUDA release (major, minor) they hold for; a release takes the newest entry at or
# below it.
#
# The oldest compute capability each release supports. CUDA 9.0 dropped Fermi (2.x), leaving
# Kepler 3.0 the oldest. The later steps are those of NVIDIA's cuFFT "Deprecated Functionality"
# page (docs.nvidia.com/cuda/cufft/deprecated-functionality.html), which the toolkit's release
# notes state for the whole toolkit: CUDA 11.0 no longer supports SM30 (and 3.2; minimum SM35),
# 12.0 no longer supports SM35/SM37 (minimum SM50), 13.0 no longer supports Maxwell, Pascal and
# Volta (minimum Turing, 7.5; the CUDA 13.0 release notes, "Deprecated Architectures", and the
# features archive's "CUDA 13.0 supports all NVIDIA architectures from Turing through Grace
# Blackwell").
_ARCH_MIN: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = (
    ((9, 0), (3, 0)),
    ((11, 0), (3, 5)),
    ((12, 0), (5, 0)),
    ((13, 0), (7, 5)),
)

# The first release that builds code for each architecture. Kepler (3.x), Maxwell (5.x) and
# Pascal (6.x) predate CUDA 9.0, the oldest release in these tables. From NVIDIA's release notes
# and features archive: 9.0 added Volta 7.0; 10.0 Turing 7.5 (and Xavier 7.2); 11.0 Ampere 8.0;
# 11.1 8.6; 11.4 Orin 8.7; 11.8 Ada 8.9 and Hopper 9.0; 12.8 Blackwell 10.0, 10.1 and 12.0;
# 12.9 10.3 and 12.1 ("adds compiler target support for SM architecture 10.3 ... and 12.1");
# 13.0 11.0 ("SM101 has been renumbered as SM110"). Only the first minor of each major decides
# a verdict (below), the others say what each release knows.
_ARCH_ADDED: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = (
    ((9, 0), (3, 0)),
    ((9, 0), (3, 2)),
    ((9, 0), (3, 5)),
    ((9, 0), (3, 7)),
    ((9, 0), (5, 0)),
    ((9, 0), (5, 2)),
    ((9, 0), (5, 3)),
    ((9, 0), (6, 0)),
    ((9, 0), (6, 1)),
    ((9, 0), (6, 2)),
    ((9, 0), (7, 0)),
    ((10, 0), (7, 2)),
    ((10, 0), (7, 5)),
    ((11, 0), (8, 0)),
    ((11, 1), (8, 6)),
    ((11, 4), (8, 7)),
    ((11, 8), (8, 9)),
    ((11, 8), (9, 0)),
    ((12, 8), (10, 0)),
    ((12, 8), (10, 1)),
    ((12, 8), (12, 0)),
    ((12, 9), (10, 3)),
    ((12, 9), (12, 1)),
    ((13, 0), (11, 0)),
)
# The newest release _ARCH_ADDED is complete for. A newer one may know architectures the table
# does not, so it is never said to predate one (its minimum is still the newest known: support
# is dropped, never restored).
_ARCH_TABLE_THROUGH = (13, 0)


def _cc(text: str) -> tuple[int, int]:
    """ "8.6" -> (8, 6); "9" -> (9, 0). ``text`` is a version (see _arch)."""
    parts = [int(p) for p in text.strip().split(".")]
    return parts[0], parts[1] if len(parts) > 1 else 0


def _cc_text(cc: tuple[int, int]) -> str:
    return f"{cc[0]}.{cc[1]}"


def arch_minimum(cuda: tuple[int, int]) -> tuple[int, int] | None:
    """The oldest compute capability CUDA ``(major, minor)`` supports; None before CUDA 9.0,
    which these tables do not cover."""
    found = None
    for release, cc in _ARCH_MIN:
        if release <= cuda:
            found = cc
    return found


def _last_cuda_major_for(cc: tuple[int, int]) -> int | None:
    """The newest CUDA major release that still supports ``cc`` (12 for a V100's 7.0); None when
    no release in the table does. Architectures are dropped only by major releases (x.0)."""
    if cc < _ARCH_MIN[0][1]:
        return None
    for release, minimum in _ARCH_MIN:
        if minimum > cc:
            return release[0] - 1
    return None


def _predates(cuda: tuple[int, int], cc: tuple[int, int]) -> bool:
    """Whether CUDA ``cuda`` is older than the architecture ``cc``: it has no code of that major
    at or below its minor. A cubin built for X.y runs on any X.z with z >= y (NVIDIA's Blackwell
    compatibility guide, "Application Compatibility"), so CUDA 11.0 runs on an 8.6 with its 8.0
    code, but nothing of CUDA 11.7 runs natively on a 9.0."""
    if cuda > _ARCH_TABLE_THROUGH or arch_minimum(cuda) is None:
        return False
    return not any(
        release <= cuda and known[0] == cc[0] and known[1] <= cc[1]
        for release, known in _ARCH_ADDED
    )


def _cuda_for_driver(driver: str) -> str:
    """The newest CUDA major.minor a driver supports, for inventories that give only a driver
    version (a static one without static_cuda_version). Conservative: GA minimums only."""
    best: tuple[int, int] | None = None
    for key, entries in _MIN_DRIVER.items():
        if compare_versions(driver, entries[0][1]) >= 0 and (best is None or key > best):
            best = key
    return f"{best[0]}.{best[1]}" if best else ""


# --------------------------------------------------------------------------- the constraint DSL


# --------------------------------------------------------------------------- the image


# --------------------------------------------------------------------------- the verdict


@dataclass(frozen=True)
class _Fit:
    """One GPU's verdict: ``short`` is what the reason says about it when other GPUs fare
    better."""

    outcome: str
    reason: str
    short: str
    needed: str = ""


@dataclass(frozen=True)
class _Host:
    driver: str
    cuda: str  # the CUDA version the driver supports
    static: bool = False  # a declared inventory (GPUInventory.static_gpus), not NVML


@dataclass(frozen=True)
class _Image:
    cuda: str  # as declared, "" when unknown
    major_minor: tuple[int, int] | None
    built_driver: str  # CUDA_DRIVER_VERSION, "" when absent or not a version
    ships_compat: bool  # NGC and nvidia/cuda images ship cuda-compat
    requirements: list[tuple[str, list[list[Condition]]]]
    enforced: bool  # False with NVIDIA_DISABLE_REQUIRE

    @property
    def mm(self) -> str:
        return f"{self.major_minor[0]}.{self.major_minor[1]}" if self.major_minor else "?"

    def needed_driver(self) -> str:
        return self.built_driver or (min_driver_for_cuda(self.cuda) or "")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def verdict(
    env: Mapping[str, str], inventory: Inventory, *, gpu_build: bool | None = None
) -> Verdict:
    """Whether the image with environment ``env`` runs its CUDA code on this host.

    ``gpu_build`` None decides from ``env`` (CUDA_VERSION or an NVIDIA_REQUIRE_* constraint make
    a GPU build); True marks a GPU build whose CUDA version may be unknown (a -gpu tag)."""
    texts = requirement_texts(env)
    cuda = image_cuda(env)
    if gpu_build is None:
        gpu_build = bool(cuda or texts)
    if not gpu_build:
        return Verdict(CPU_ONLY, "CPU build: runs on any host, without GPUs")

    gpus = inventory.allocatable()
    if not gpus:
        why = _one_line(inventory.reason).rstrip(".") or "none are listed"
        return Verdict(
            NO_GPUS,
            f"GPU build, but this host has no GPUs ({why}); CPU code in the image still runs",
        )

    driver = inventory.driver_version.strip()
    if not driver or not is_version(driver):
        return Verdict(
            UNKNOWN,
            "the host's NVIDIA driver version is unknown, so this image's CUDA "
            f"{cuda or 'stack'} cannot be checked: an administrator can declare the driver's "
            "version (and the CUDA version it supports)",
        )
    host_cuda = inventory.cuda_driver_version.strip() or _cuda_for_driver(driver)
    if not host_cuda or not is_version(host_cuda):
        return Verdict(
            UNKNOWN,
            f"the CUDA version that driver {driver} supports is unknown: an administrator can "
            "declare it",
        )
    host = _Host(driver, host_cuda, static=inventory.source == "static")

    enforced = not env_flag(env.get("NVIDIA_DISABLE_REQUIRE") or "")
    requirements: list[tuple[str, list[list[Condition]]]] = []
    for name, text in texts:
        try:
            requirements.append((name, parse_requirement(text)))
        except ValueError as e:
            if enforced:
                return Verdict(
                    CANNOT_RUN,
                    f"the NVIDIA runtime refuses the container: {name} is not a valid "
                    f"requirement ({e}); NVIDIA_DISABLE_REQUIRE=true skips the check",
                )

    parsed = parse_cuda(cuda)
    built = (env.get("CUDA_DRIVER_VERSION") or "").strip()
    image = _Image(
        cuda=cuda,
        major_minor=parsed[:2] if parsed else None,
        built_driver=built if is_version(built) else "",
        ships_compat=any(
            (env.get(k) or "").strip()
            for k in ("NVIDIA_PRODUCT_NAME", "CUDA_DRIVER_VERSION", "NV_CUDA_COMPAT_PACKAGE")
        ),
        requirements=requirements,
        enforced=enforced,
    )
    if image.major_minor is None and not (enforced and requirements):
        return Verdict(
            UNKNOWN,
            "GPU build whose CUDA version is unknown (no CUDA_VERSION or NVIDIA_REQUIRE_CUDA), "
            f"so it cannot be checked against driver {driver} (CUDA {host_cuda})",
        )

    fits = [(gpu, _fit(gpu, image, host)) for gpu in gpus]
    return _combine(fits)


def _brand(gpu: GPU) -> str:
    # NVML's "unknown" brand is what the nvidia/cuda images' brand=unknown terms match.
    return (gpu.brand or "unknown").lower()


def _arch(gpu: GPU) -> str | None:
    # A compute capability the inventory does not know counts as satisfied, like no GPU.
    cc = gpu.compute_capability.strip()
    return cc if is_version(cc) else None


def _fit(gpu: GPU, image: _Image, host: _Host) -> _Fit:
    """One GPU's verdict: its architecture first (no driver brings back one the image's CUDA
    dropped), then the runtime's gate and the driver."""
    arch = _arch(gpu)
    if image.major_minor is None:
        return _driver_fit(gpu, image, host)
    minimum = arch_minimum(image.major_minor)
    if minimum is None:  # older than CUDA 9.0: not in the tables
        return _driver_fit(gpu, image, host)
    if arch is None:
        return _arch_unknown(_driver_fit(gpu, image, host), image, minimum, host)
    cc = _cc(arch)
    name = f" ({gpu.name})" if gpu.name else ""
    if cc < minimum:
        last = _last_cuda_major_for(cc)
        alternative = f"; images with CUDA {last}.x support this GPU" if last else ""
        return _Fit(
            CANNOT_RUN,
            f"CUDA {image.mm} does not support compute capability {arch}{name}: it needs "
            f"{_cc_text(minimum)} or newer{alternative}",
            f"CUDA {image.mm} does not support compute capability {arch}",
        )
    fit = _driver_fit(gpu, image, host)
    if not _predates(image.major_minor, cc) or fit.outcome not in (NATIVE, COMPAT):
        return fit
    # A GPU newer than the image's CUDA: its code runs only as PTX, which the driver compiles for
    # this GPU at first use. Framework images ship PTX for their newest architecture for exactly
    # this (NGC's TORCH_CUDA_ARCH_LIST ends in "+PTX"; NVIDIA's compatibility guides ask for it),
    # so refusing would turn away images that run; but builds without PTX fail ("no kernel image
    # is available for execution on the device", as PyTorch 1.13's CUDA 11.7 wheels do on an
    # H100).
    # Hence compat, not native: it ranks below GPUs that run the image natively, and the launch
    # logs why.
    jit = (
        f"runs only through PTX JIT: CUDA {image.mm} predates compute capability {arch}{name}, "
        "so only GPU code the image ships as PTX runs, compiled by the driver at first use "
        '(without PTX: "no kernel image is available for execution on the device")'
    )
    short = f"PTX JIT only (CUDA {image.mm} predates compute capability {arch})"
    if fit.outcome == NATIVE:
        return _Fit(COMPAT, jit, short)
    # Compat already: only where a static inventory declares a driver older than the GPU (a
    # driver that runs a GPU supports the CUDA release that added it, newer than this image's).
    return _Fit(COMPAT, f"{fit.reason}; {jit}", f"{fit.short}; {short}")


def _arch_unknown(fit: _Fit, image: _Image, minimum: tuple[int, int], host: _Host) -> _Fit:
    """A GPU of unknown compute capability is not refused (as the runtime does without one), but
    a verdict that lets it through says what was not checked."""
    if fit.outcome not in (NATIVE, COMPAT):
        return fit
    hint = ": an administrator can declare the GPU's compute capability" if host.static else ""
    return _Fit(
        fit.outcome,
        f"{fit.reason}; compute capability not checked (unknown; CUDA {image.mm} needs "
        f"{_cc_text(minimum)} or newer){hint}",
        fit.short,
        fit.needed,
    )


def _driver_fit(gpu: GPU, image: _Image, host: _Host) -> _Fit:
    brand = _brand(gpu)
    arch = _arch(gpu)

    # 1. The runtime's gate. A term that only a brand-specific alternative satisfies is the image
    # declaring forward compatibility for this GPU's driver branch (the nvidia/cuda images).
    declared: list[Condition] | None = None
    for name, terms in image.requirements:
        satisfied = [
            t
            for t in terms
            if all(c.holds(cuda=host.cuda, driver=host.driver, arch=arch, brand=brand) for c in t)
        ]
        if not satisfied:
            if image.enforced:
                return _refused(name, terms, gpu, image, host)
            continue
        if all(brand_specific(t) for t in satisfied) and declared is None:
            declared = satisfied[0]

    if image.major_minor is None:
        return _Fit(
            UNKNOWN,
            "the image's NVIDIA_REQUIRE_* conditions hold here, but its CUDA version is unknown "
            "(no CUDA_VERSION)",
            "its CUDA version is unknown",
        )

    # 2. The image's real need: its toolkit against the driver.
    major, _minor = image.major_minor
    needs_newer_cuda = compare_versions(host.cuda, image.mm) < 0
    older_than_built = bool(image.built_driver) and (
        compare_versions(host.driver, image.built_driver) < 0
    )
    if not needs_newer_cuda and not older_than_built:
        also = f" and driver {image.built_driver}" if image.built_driver else ""
        return _Fit(
            NATIVE,
            f"runs natively: driver {host.driver} supports CUDA {host.cuda}; the image needs "
            f"{image.mm}{also}",
            "runs natively",
        )

    forward_kind = (
        "data-center"
        if brand in _DATA_CENTER_BRANDS
        else "rtx"
        if brand in _RTX_BRANDS
        else "unknown"
        if brand == "unknown"
        else ""
    )
    if declared is not None and forward_kind in ("data-center", "rtx"):
        return _forward(term_text(declared), forward_kind, image, host)

    host_major = int(host.cuda.split(".")[0])
    family = _FAMILY_MIN_DRIVER.get(major)
    if host_major == major and family and compare_versions(host.driver, family) >= 0:
        if needs_newer_cuda:
            gap = f"is older than the image's CUDA {image.mm}"
        else:
            gap = f"is older than {image.built_driver}, the driver the image was built against"
        return _Fit(
            COMPAT,
            f"runs through CUDA minor-version compatibility: driver {host.driver} "
            f"(CUDA {host.cuda}) {gap}; PTX built for newer CUDA will not JIT "
            "(cudaErrorUnsupportedPtxVersion)",
            "minor-version compatibility only",
        )

    needed = image.needed_driver()
    if needed:
        head = f"needs driver ≥ {needed} for CUDA {image.mm}; this host has {host.driver}"
    else:
        head = (
            f"needs a driver that supports CUDA {image.mm}; this host has {host.driver} "
            f"(CUDA {host.cuda})"
        )
    floor = _FORWARD_MIN_BRANCH.get(major, _FORWARD_MIN_BRANCH_DEFAULT)
    branch_ok = declared is not None or int(host.driver.split(".")[0]) >= floor
    if image.ships_compat or declared is not None:
        if not branch_ok:
            return _Fit(
                CANNOT_RUN,
                f"{head}, older than forward compatibility supports for CUDA {major} "
                f"(driver {floor} or later)",
                f"driver {host.driver} is too old",
                needed,
            )
        if forward_kind in ("data-center", "rtx"):
            return _forward(f"brand={brand}", forward_kind, image, host)
        if forward_kind == "unknown":
            return _Fit(
                UNKNOWN,
                f"runs only through forward compatibility, which needs a data-center GPU, and "
                f"this GPU's brand is unknown (driver {host.driver} supports CUDA {host.cuda}, "
                f"the image needs {image.mm}); an administrator can declare the GPU's brand",
                "its brand is unknown (forward compatibility needs a data-center GPU)",
                needed,
            )
        return _Fit(
            CANNOT_RUN,
            f"{head}, and forward compatibility does not work on brand={brand} GPUs "
            "(cudaErrorCompatNotSupportedOnDevice)",
            f"forward compatibility does not work on brand={brand} GPUs",
            needed,
        )
    return _Fit(CANNOT_RUN, head, f"driver {host.driver} is too old", needed)


def _forward(condition: str, kind: str, image: _Image, host: _Host) -> _Fit:
    if kind == "rtx":
        where = f"data-center GPUs and NGC-ready RTX parts only — {condition} on this host"
    else:
        where = f"data-center GPUs only — {condition} on this host"
    return _Fit(
        COMPAT,
        f"runs only through forward compatibility (cuda-compat in the image; {where}): driver "
        f"{host.driver} supports CUDA {host.cuda}, the image needs {image.mm}",
        "forward compatibility only",
    )


def _refused(name: str, terms: list[list[Condition]], gpu: GPU, image: _Image, host: _Host) -> _Fit:
    """The runtime refuses the container; quote its words (the first term's failing condition,
    which is what libnvidia-container reports) and say what would satisfy it."""
    brand, arch = _brand(gpu), _arch(gpu)
    failing = next(
        c
        for c in terms[0]
        if not c.holds(cuda=host.cuda, driver=host.driver, arch=arch, brand=brand)
    )
    if name == "NVIDIA_REQUIRE_CUDA":
        source = ""
    elif name == "CUDA_VERSION":
        source = ", implied by CUDA_VERSION"
    else:
        source = f", in {name}"
    quoted = f"the NVIDIA runtime refuses the container (unsatisfied condition: {failing}{source})"
    needed = ""
    if failing.prop == "cuda":
        needed = image.needed_driver() or min_driver_for_cuda(failing.value) or ""
        cuda = image.mm if image.major_minor else failing.value
        if needed:
            detail = f"needs driver ≥ {needed} for CUDA {cuda}; this host has {host.driver}"
        else:
            detail = f"driver {host.driver} supports only CUDA {host.cuda}"
        short = f"unsatisfied condition: {failing}"
    elif failing.prop == "driver":
        needed = failing.value if failing.op in (">=", ">", "=") else ""
        detail = f"this host has driver {host.driver}"
        short = f"unsatisfied condition: {failing}"
    elif failing.prop == "arch":
        detail = f"compute capability {arch}"
        short = f"unsatisfied condition: {failing} (compute capability {arch})"
    else:
        detail = f"brand={brand}"
        short = f"unsatisfied condition: {failing} (brand={brand})"
    return _Fit(CANNOT_RUN, f"{quoted}: {detail}", short, needed)


def _gpu_label(gpus: Sequence[GPU]) -> str:
    indices = ", ".join(g.index for g in gpus)
    names = ", ".join(dict.fromkeys(g.name for g in gpus if g.name))
    noun = "GPU" if len(gpus) == 1 else "GPUs"
    return f"{noun} {indices} ({names})" if names else f"{noun} {indices}"


def _combine(fits: Sequence[tuple[GPU, _Fit]]) -> Verdict:
    best = min(fits, key=lambda pair: _RANK[pair[1].outcome])[1]
    reason = best.reason
    # Name the GPUs that fare worse, grouped by what is wrong with them.
    worse: dict[tuple[str, str], list[GPU]] = {}
    for gpu, fit in fits:
        if _RANK[fit.outcome] > _RANK[best.outcome]:
            worse.setdefault((fit.outcome, fit.short), []).append(gpu)
    for (outcome, short), gpus in worse.items():
        verb = "not on" if outcome == CANNOT_RUN else "unsure on"
        reason += f"; {verb} {_gpu_label(gpus)}: {short}"
    needed = best.needed if best.outcome == CANNOT_RUN else ""
    return Verdict(best.outcome, _one_line(reason), needed)
