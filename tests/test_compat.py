"""compat.py against real image environments and real driver versions (no Docker, no GPU).

The image environments are those of published images: nvidia/cuda (the NVIDIA_REQUIRE_CUDA strings
of gitlab.com/nvidia/container-images/cuda dist/<version>/ubuntu22.04|24.04/base) and NGC
framework images (nvcr.io/nvidia/pytorch, tritonserver). The hosts are real driver releases with
the CUDA version each reports (nvidia-smi), on a data-center GPU (Tesla T4) and on a GeForce.
"""

from __future__ import annotations

import pytest

from jupyter_gpu_containers.gpus.inventory import (
    GPU,
    Inventory,
    nvml_failure_reason,
    static_inventory,
)
from jupyter_gpu_containers.images import compat
from jupyter_gpu_containers.images.compat import (
    CANNOT_RUN,
    COMPAT,
    CPU_ONLY,
    NATIVE,
    NO_GPUS,
    UNKNOWN,
    Verdict,
    min_driver_for_cuda,
    verdict,
)
from jupyter_gpu_containers.images.cuda_requirements import (
    Condition,
    compare_versions,
    image_cuda,
    parse_requirement,
)

# --------------------------------------------------------------------------- real images

# The nvidia/cuda images list, per supported driver branch, one forward-compatibility term per
# brand. Up to 12.4 the brand list (and its order) is OLD; from 12.6 it is NEW (GeForce and TITAN
# dropped, vGPU brands added).
OLD = ("tesla", "unknown", "nvidia", "nvidiartx", "geforce", "geforcertx", "quadro", "quadrortx")
OLD += ("titan", "titanrtx")
NEW = ("unknown", "grid", "tesla", "nvidia", "quadro", "quadrortx", "nvidiartx", "vapps", "vpc")
NEW += ("vcs", "vws", "cloudgaming")


def branches(brands: tuple[str, ...], *majors: int) -> str:
    return " ".join(
        f"brand={brand},driver>={major},driver<{major + 1}" for major in majors for brand in brands
    )


# Verbatim from dist/12.2.2/ubuntu2204/base/Dockerfile: proves `branches` writes them faithfully.
CUDA_12_2_2_VERBATIM = (
    "cuda>=12.2 brand=tesla,driver>=470,driver<471 brand=unknown,driver>=470,driver<471 "
    "brand=nvidia,driver>=470,driver<471 brand=nvidiartx,driver>=470,driver<471 "
    "brand=geforce,driver>=470,driver<471 brand=geforcertx,driver>=470,driver<471 "
    "brand=quadro,driver>=470,driver<471 brand=quadrortx,driver>=470,driver<471 "
    "brand=titan,driver>=470,driver<471 brand=titanrtx,driver>=470,driver<471 "
    "brand=tesla,driver>=525,driver<526 brand=unknown,driver>=525,driver<526 "
    "brand=nvidia,driver>=525,driver<526 brand=nvidiartx,driver>=525,driver<526 "
    "brand=geforce,driver>=525,driver<526 brand=geforcertx,driver>=525,driver<526 "
    "brand=quadro,driver>=525,driver<526 brand=quadrortx,driver>=525,driver<526 "
    "brand=titan,driver>=525,driver<526 brand=titanrtx,driver>=525,driver<526"
)

REQUIRE = {
    "11.8.0": "cuda>=11.8 brand=tesla,driver>=450,driver<451 " + branches(OLD, 470, 510, 515),
    "12.0.1": "cuda>=12.0 " + branches(OLD, 470),
    "12.2.2": "cuda>=12.2 " + branches(OLD, 470, 525),
    "12.4.1": "cuda>=12.4 " + branches(OLD, 470, 525, 535),
    "12.6.3": "cuda>=12.6 " + branches(NEW, 470, 535, 550),
    "12.8.1": "cuda>=12.8 " + branches(NEW, 470, 535, 550, 560, 565),
    "12.9.1": "cuda>=12.9 " + branches(NEW, 535, 550, 560, 565, 570),
    "13.0.2": "cuda>=13.0 " + branches(NEW, 535, 550, 565, 570, 575),
}


def nvidia_cuda(version: str, **extra: str) -> dict[str, str]:
    env = {
        "NVARCH": "x86_64",
        "NVIDIA_REQUIRE_CUDA": REQUIRE[version],
        "CUDA_VERSION": version,
        "NVIDIA_VISIBLE_DEVICES": "all",
        "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
    }
    return {**env, **extra}


def ngc(product: str, release: str, cuda: str, driver: str, **extra: str) -> dict[str, str]:
    env = {
        "NVIDIA_REQUIRE_CUDA": "cuda>=9.0",
        "NVIDIA_VISIBLE_DEVICES": "all",
        "NVIDIA_DRIVER_CAPABILITIES": "compute,utility,video",
        "NVIDIA_PRODUCT_NAME": product,
        "CUDA_VERSION": cuda,
        "CUDA_DRIVER_VERSION": driver,
        "NVIDIA_REQUIRE_JETPACK_HOST_MOUNTS": "",
        "_CUDA_COMPAT_PATH": "/usr/local/cuda/compat",
    }
    env[f"NVIDIA_{product.upper().replace(' ', '_')}_VERSION"] = release
    return {**env, **extra}


IMAGES: dict[str, dict[str, str]] = {
    "nvidia/cuda:11.8.0": nvidia_cuda("11.8.0", NV_CUDA_COMPAT_PACKAGE="cuda-compat-11-8"),
    "nvidia/cuda:12.0.1": nvidia_cuda("12.0.1", NV_CUDA_COMPAT_PACKAGE="cuda-compat-12-0"),
    "nvidia/cuda:12.2.2": nvidia_cuda("12.2.2", NV_CUDA_COMPAT_PACKAGE="cuda-compat-12-2"),
    "nvidia/cuda:12.4.1": nvidia_cuda("12.4.1"),
    "nvidia/cuda:12.6.3": nvidia_cuda("12.6.3"),
    "nvidia/cuda:12.8.1": nvidia_cuda("12.8.1", NVIDIA_PRODUCT_NAME="CUDA"),
    "nvidia/cuda:12.9.1": nvidia_cuda("12.9.1"),
    "nvidia/cuda:13.0.2": nvidia_cuda("13.0.2"),
    # 11.4.1: a bare driver>=450 term, NVIDIA declaring 11.x minor-version compatibility.
    "nvidia/cuda:11.4.1": {
        "NVIDIA_REQUIRE_CUDA": "cuda>=11.4 brand=tesla,driver>=418,driver<419 "
        "brand=tesla,driver>=440,driver<441 driver>=450",
        "CUDA_VERSION": "11.4.1",
        "NV_CUDA_COMPAT_PACKAGE": "cuda-compat-11-4",
    },
    "nvidia/cuda:10.1": {
        "NVIDIA_REQUIRE_CUDA": "cuda>=10.1 brand=tesla,driver>=384,driver<385 "
        "brand=tesla,driver>=396,driver<397 brand=tesla,driver>=410,driver<411",
        "CUDA_VERSION": "10.1.243",
        "CUDA_PKG_VERSION": "10-1=10.1.243-1",
    },
    "nvidia/cuda:10.2": {
        "NVIDIA_REQUIRE_CUDA": "cuda>=10.2 brand=tesla,driver>=396,driver<397 "
        "brand=tesla,driver>=410,driver<411 brand=tesla,driver>=418,driver<419 "
        "brand=tesla,driver>=440,driver<441",
        "CUDA_VERSION": "10.2.89",
        "CUDA_PKG_VERSION": "10-2=10.2.89-1",
    },
    # A legacy image: CUDA_VERSION without NVIDIA_REQUIRE_CUDA gets an implicit cuda>=12.1.
    "legacy CUDA_VERSION=12.1.1": {"CUDA_VERSION": "12.1.1", "NVIDIA_VISIBLE_DEVICES": "all"},
    # lambda-stack's Dockerfile: a bare floor, no CUDA_VERSION.
    "lambda-stack (cuda>=12.8)": {
        "NVIDIA_VISIBLE_DEVICES": "all",
        "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
        "NVIDIA_REQUIRE_CUDA": "cuda>=12.8",
    },
    # The usual workaround for "unsatisfied condition": the runtime's check switched off.
    "nvidia/cuda:12.8.1 + NVIDIA_DISABLE_REQUIRE=1": nvidia_cuda(
        "12.8.1", NVIDIA_PRODUCT_NAME="CUDA", NVIDIA_DISABLE_REQUIRE="1"
    ),
    "nvcr.io/nvidia/pytorch:23.10-py3": ngc("PyTorch", "23.10", "12.2.2.009", "535.104.05"),
    "nvcr.io/nvidia/tritonserver:23.12-py3": ngc(
        "Triton Server", "23.12", "12.3.2.001", "545.23.08"
    ),
    "nvcr.io/nvidia/pytorch:24.05-py3": ngc("PyTorch", "24.05", "12.4.1.003", "550.54.15"),
    "nvcr.io/nvidia/pytorch:25.01-py3": ngc("PyTorch", "25.01", "12.8.0.038", "570.86.10"),
    "nvcr.io/nvidia/tritonserver:25.02-py3": ngc(
        "Triton Server", "25.02", "12.8.0.038", "570.86.10"
    ),
    "nvcr.io/nvidia/pytorch:25.10-py3": ngc("PyTorch", "25.10", "13.0.2.006", "580.95.05"),
    "vllm/vllm-openai:v0.23.0": {
        "NVARCH": "x86_64",
        "NVIDIA_REQUIRE_CUDA": REQUIRE["13.0.2"],
        "NV_CUDA_CUDART_VERSION": "13.0.96-1",
        "CUDA_VERSION": "13.0.2",
        "VLLM_ENABLE_CUDA_COMPATIBILITY": "0",
        "TORCH_CUDA_ARCH_LIST": "7.5 8.0 8.6 8.9 9.0 10.0 12.0+PTX",
    },
    "quay.io/jupyter/scipy-notebook": {
        "CONDA_DIR": "/opt/conda",
        "NB_USER": "jovyan",
        "PATH": "/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    },
}

# --------------------------------------------------------------------------- real hosts

DRIVERS = (
    ("470.82.01", "11.4"),
    ("525.85.12", "12.0"),
    ("535.104.05", "12.2"),
    ("550.54.15", "12.4"),
    ("570.133.20", "12.8"),
    ("580.95.05", "13.0"),
)
T4 = GPU("0", "GPU-t4-0", "Tesla T4", brand="tesla", compute_capability="7.5")
RTX3090 = GPU(
    "0", "GPU-3090-0", "NVIDIA GeForce RTX 3090", brand="geforce", compute_capability="8.6"
)
A100 = GPU("1", "GPU-a100-1", "NVIDIA A100-SXM4-80GB", brand="nvidia", compute_capability="8.0")
BOARDS = {"tesla": T4, "geforce": RTX3090}


def host(driver: str, cuda: str, *gpus: GPU) -> Inventory:
    return Inventory("static", tuple(gpus), driver, cuda)


# One row per image: the outcome on each driver of DRIVERS, on the Tesla and on the GeForce host.
# N native, C compat, X cannot-run, P cpu-only.
CODES = {"N": NATIVE, "C": COMPAT, "X": CANNOT_RUN, "P": CPU_ONLY}
EXPECTED: dict[str, dict[str, str]] = {
    "nvidia/cuda:11.8.0": {"tesla": "CNNNNN", "geforce": "CNNNNN"},
    "nvidia/cuda:12.0.1": {"tesla": "CNNNNN", "geforce": "XNNNNN"},
    "nvidia/cuda:12.2.2": {"tesla": "CCNNNN", "geforce": "XCNNNN"},
    "nvidia/cuda:12.4.1": {"tesla": "CCCNNN", "geforce": "XCCNNN"},
    "nvidia/cuda:12.6.3": {"tesla": "CXCCNN", "geforce": "XXXXNN"},
    "nvidia/cuda:12.8.1": {"tesla": "CXCCNN", "geforce": "XXXXNN"},
    "nvidia/cuda:12.9.1": {"tesla": "XXCCCN", "geforce": "XXXXXN"},
    "nvidia/cuda:13.0.2": {"tesla": "XXCCCN", "geforce": "XXXXXN"},
    "nvidia/cuda:11.4.1": {"tesla": "NNNNNN", "geforce": "NNNNNN"},
    # CUDA 10.x predates Ampere: on the RTX 3090 (8.6) only PTX runs, through the driver's JIT.
    "nvidia/cuda:10.1": {"tesla": "NNNNNN", "geforce": "CCCCCC"},
    "nvidia/cuda:10.2": {"tesla": "NNNNNN", "geforce": "CCCCCC"},
    "legacy CUDA_VERSION=12.1.1": {"tesla": "XXNNNN", "geforce": "XXNNNN"},
    "lambda-stack (cuda>=12.8)": {"tesla": "XXXXNN", "geforce": "XXXXNN"},
    "nvidia/cuda:12.8.1 + NVIDIA_DISABLE_REQUIRE=1": {"tesla": "CCCCNN", "geforce": "XCCCNN"},
    "nvcr.io/nvidia/pytorch:23.10-py3": {"tesla": "CCNNNN", "geforce": "XCNNNN"},
    "nvcr.io/nvidia/tritonserver:23.12-py3": {"tesla": "CCCNNN", "geforce": "XCCNNN"},
    "nvcr.io/nvidia/pytorch:24.05-py3": {"tesla": "CCCNNN", "geforce": "XCCNNN"},
    "nvcr.io/nvidia/pytorch:25.01-py3": {"tesla": "CCCCNN", "geforce": "XCCCNN"},
    "nvcr.io/nvidia/tritonserver:25.02-py3": {"tesla": "CCCCNN", "geforce": "XCCCNN"},
    "nvcr.io/nvidia/pytorch:25.10-py3": {"tesla": "XXCCCN", "geforce": "XXXXXN"},
    "vllm/vllm-openai:v0.23.0": {"tesla": "XXCCCN", "geforce": "XXXXXN"},
    "quay.io/jupyter/scipy-notebook": {"tesla": "PPPPPP", "geforce": "PPPPPP"},
}

# Spot checks of the reasons: (image, board, driver) -> fragments the reason contains.
REASONS: dict[tuple[str, str, str], tuple[str, ...]] = {
    ("nvidia/cuda:12.2.2", "tesla", "470.82.01"): (
        "runs only through forward compatibility (cuda-compat in the image; data-center GPUs "
        "only — brand=tesla,driver>=470,driver<471 on this host)",
        "driver 470.82.01 supports CUDA 11.4, the image needs 12.2",
    ),
    ("nvidia/cuda:12.2.2", "geforce", "470.82.01"): (
        "needs driver ≥ 535.104.05 for CUDA 12.2; this host has 470.82.01",
        "forward compatibility does not work on brand=geforce GPUs",
    ),
    ("nvidia/cuda:12.2.2", "geforce", "525.85.12"): (
        "runs through CUDA minor-version compatibility: driver 525.85.12 (CUDA 12.0) is older "
        "than the image's CUDA 12.2; PTX built for newer CUDA will not JIT "
        "(cudaErrorUnsupportedPtxVersion)",
    ),
    ("nvidia/cuda:10.1", "geforce", "580.95.05"): (
        "runs only through PTX JIT: CUDA 10.1 predates compute capability 8.6 "
        "(NVIDIA GeForce RTX 3090)",
    ),
    ("nvidia/cuda:10.2", "tesla", "470.82.01"): (
        "runs natively: driver 470.82.01 supports CUDA 11.4; the image needs 10.2",
    ),
    ("nvidia/cuda:12.2.2", "tesla", "535.104.05"): (
        "runs natively: driver 535.104.05 supports CUDA 12.2; the image needs 12.2",
    ),
    ("nvidia/cuda:11.8.0", "geforce", "470.82.01"): ("minor-version compatibility",),
    ("nvidia/cuda:12.6.3", "tesla", "525.85.12"): (
        "the NVIDIA runtime refuses the container (unsatisfied condition: cuda>=12.6)",
        "needs driver ≥ 560.35.05 for CUDA 12.6; this host has 525.85.12",
    ),
    ("nvidia/cuda:12.9.1", "tesla", "470.82.01"): ("unsatisfied condition: cuda>=12.9",),
    ("nvidia/cuda:12.9.1", "tesla", "570.133.20"): ("brand=tesla,driver>=570,driver<571",),
    ("nvidia/cuda:12.8.1", "geforce", "550.54.15"): ("unsatisfied condition: cuda>=12.8",),
    ("legacy CUDA_VERSION=12.1.1", "tesla", "525.85.12"): (
        "unsatisfied condition: cuda>=12.1",
        "unsatisfied condition: cuda>=12.1, implied by CUDA_VERSION)",
        "530.30.02",
    ),
    ("nvcr.io/nvidia/pytorch:23.10-py3", "tesla", "470.82.01"): (
        "data-center GPUs only — brand=tesla on this host",
    ),
    ("nvcr.io/nvidia/pytorch:23.10-py3", "geforce", "470.82.01"): (
        "needs driver ≥ 535.104.05 for CUDA 12.2; this host has 470.82.01",
    ),
    ("nvcr.io/nvidia/pytorch:24.05-py3", "tesla", "550.54.15"): (
        "runs natively: driver 550.54.15 supports CUDA 12.4; the image needs 12.4",
    ),
    ("nvcr.io/nvidia/pytorch:25.10-py3", "tesla", "470.82.01"): (
        "needs driver ≥ 580.95.05 for CUDA 13.0; this host has 470.82.01",
        "older than forward compatibility supports for CUDA 13",
    ),
    ("nvcr.io/nvidia/pytorch:25.10-py3", "tesla", "550.54.15"): ("forward compatibility",),
    ("quay.io/jupyter/scipy-notebook", "geforce", "580.95.05"): (
        "CPU build: runs on any host, without GPUs",
    ),
}

# The driver a CANNOT_RUN verdict names: CUDA_DRIVER_VERSION, else the table's minimum.
NEEDED = {
    ("nvidia/cuda:12.2.2", "geforce", "470.82.01"): "535.104.05",
    ("nvidia/cuda:12.9.1", "tesla", "470.82.01"): "575.57.08",
    ("nvidia/cuda:13.0.2", "geforce", "570.133.20"): "580.95.05",
    ("lambda-stack (cuda>=12.8)", "tesla", "550.54.15"): "570.26",
    ("nvcr.io/nvidia/pytorch:23.10-py3", "geforce", "470.82.01"): "535.104.05",
    ("nvcr.io/nvidia/pytorch:25.01-py3", "geforce", "470.82.01"): "570.86.10",
    ("nvcr.io/nvidia/pytorch:25.10-py3", "tesla", "525.85.12"): "580.95.05",
}

CELLS = [
    pytest.param(
        image, board, driver, cuda, CODES[EXPECTED[image][board][i]], id=f"{image}|{board}|{driver}"
    )
    for image in IMAGES
    for board in ("tesla", "geforce")
    for i, (driver, cuda) in enumerate(DRIVERS)
]


def test_the_table_is_complete() -> None:
    assert set(EXPECTED) == set(IMAGES)
    assert len(IMAGES) >= 20
    assert len(CELLS) == len(IMAGES) * len(DRIVERS) * 2
    assert REQUIRE["12.2.2"] == CUDA_12_2_2_VERBATIM


@pytest.mark.parametrize(("image", "board", "driver", "cuda", "outcome"), CELLS)
def test_outcome_table(image: str, board: str, driver: str, cuda: str, outcome: str) -> None:
    result = verdict(IMAGES[image], host(driver, cuda, BOARDS[board]))
    assert result.outcome == outcome, result.reason
    # One line a user reads: no newline, no trailing whitespace, and numbers named.
    assert result.reason
    assert "\n" not in result.reason
    assert result.reason == result.reason.strip()
    for fragment in REASONS.get((image, board, driver), ()):
        assert fragment in result.reason
    if (image, board, driver) in NEEDED:
        assert result.needed_driver == NEEDED[image, board, driver]
    if outcome == CANNOT_RUN:
        assert driver in result.reason
    else:
        assert result.needed_driver == ""


# --------------------------------------------------------------------------- the grammar


def test_parse_or_of_ands() -> None:
    terms = parse_requirement("cuda>=12.2 brand=Tesla,driver>=470,driver<471")
    assert terms == [
        [Condition("cuda", ">=", "12.2")],
        [
            Condition("brand", "=", "tesla"),
            Condition("driver", ">=", "470"),
            Condition("driver", "<", "471"),
        ],
    ]
    assert str(terms[1][2]) == "driver<471"
    # Runs of spaces separate terms too.
    assert len(parse_requirement("  cuda>=11.0   arch>=7.0  ")) == 2


@pytest.mark.parametrize(
    ("text", "op"),
    [
        ("cuda=12.2", "="),
        ("cuda!=12.2", "!="),
        ("cuda<12.2", "<"),
        ("cuda<=12.2", "<="),
        ("cuda>12.2", ">"),
        ("cuda>=12.2", ">="),
        ("brand!=geforce", "!="),
    ],
)
def test_parse_every_operator(text: str, op: str) -> None:
    assert parse_requirement(text)[0][0].op == op


@pytest.mark.parametrize(
    ("cond", "holds"),
    [
        ("cuda=12.2", True),
        ("cuda=12.2.0", True),
        ("cuda!=12.2", False),
        ("cuda<12.3", True),
        ("cuda<=12.2", True),
        ("cuda>12.2", False),
        ("cuda>=12.2", True),
        ("driver>=535.104.05", True),
        ("driver>535.104.05", False),
        ("driver<536", True),
        ("arch>=8.0", False),
        ("arch=7.5", True),
        ("brand=tesla", True),
        ("brand=TESLA", True),
        ("brand!=tesla", False),
        ("brand=geforce", False),
    ],
)
def test_condition_semantics(cond: str, holds: bool) -> None:
    (c,) = parse_requirement(cond)[0]
    assert c.holds(cuda="12.2", driver="535.104.05", arch="7.5", brand="Tesla") is holds


def test_arch_and_brand_hold_without_a_gpu() -> None:
    for text in ("arch>=9.0", "brand=tesla", "brand!=tesla"):
        (c,) = parse_requirement(text)[0]
        assert c.holds(cuda="12.2", driver="535.104.05", arch=None, brand=None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty requirement"),
        ("cuda>=12.2,,driver>=470", "empty condition"),
        ("cuda", "not PROPERTY OP VALUE"),
        (">=12.2", "not PROPERTY OP VALUE"),
        ("cuda>=", "is not a version"),
        ("cuda==12.2", "is not a version"),
        ("cuda>=12.6...", "is not a version"),
        ("cuda>=twelve", "is not a version"),
        ("memory>=16", "unknown property 'memory'"),
        ("brand>=tesla", "brand takes only = and !="),
        ("brand=te$la", "is not a brand name"),
    ],
)
def test_bad_grammar_raises(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_requirement(text)


# --------------------------------------------------------------------------- versions


@pytest.mark.parametrize(
    ("a", "b", "result"),
    [
        ("12.2", "12.2.0", 0),
        ("12.2.0.0", "12.2", 0),
        ("12", "12.0", 0),
        ("535.104.05", "535.54.03", 1),
        ("470.82.01", "471", -1),
        ("470.82.01", "470", 1),
        ("12.10", "12.9", 1),
        ("9.0", "12.2", -1),
        ("570.26", "570.124.06", -1),
    ],
)
def test_compare_versions(a: str, b: str, result: int) -> None:
    assert compare_versions(a, b) == result
    assert compare_versions(b, a) == -result


def test_compare_versions_rejects_non_versions() -> None:
    with pytest.raises(ValueError, match="not a version"):
        compare_versions("N/A", "535")


@pytest.mark.parametrize(
    ("cuda", "driver"),
    [
        ("12.2.2", "535.104.05"),
        ("12.2.0", "535.54.03"),
        ("12.2", "535.54.03"),
        ("12.2.1", "535.86.09"),
        ("12.2.2.009", "535.104.05"),
        ("12.4.1.003", "550.54.15"),
        ("12.6.2", "560.35.03"),
        ("12.6.3", "560.35.05"),
        ("12.8.0.038", "570.26"),
        ("12.8.1", "570.124.06"),
        ("12.9.1", "575.57.08"),
        ("13.0.2.006", "580.95.05"),
        ("13.1", "590.44.01"),
        ("11.4.2", "470.57.02"),
        ("11.4.4", "470.82.01"),
        ("11.8.0", "520.61.05"),
        ("10.0.130", "410.48"),
        ("10.1.243", "418.39"),
        ("10.2", "440.33"),
        ("9.0.176", "384.81"),
    ],
)
def test_min_driver_for_cuda(cuda: str, driver: str) -> None:
    assert min_driver_for_cuda(cuda) == driver


@pytest.mark.parametrize("cuda", ["", "latest", "12.7", "14.0", "8.0"])
def test_min_driver_for_unknown_cuda(cuda: str) -> None:
    assert min_driver_for_cuda(cuda) is None


def test_image_cuda() -> None:
    assert image_cuda(IMAGES["nvcr.io/nvidia/pytorch:25.10-py3"]) == "13.0.2.006"
    assert image_cuda(IMAGES["nvidia/cuda:12.2.2"]) == "12.2.2"
    assert image_cuda(IMAGES["lambda-stack (cuda>=12.8)"]) == "12.8"
    assert image_cuda(IMAGES["quay.io/jupyter/scipy-notebook"]) == ""
    assert image_cuda({"NVIDIA_REQUIRE_CUDA": "not a requirement"}) == ""


def test_verdict_to_dict() -> None:
    v = Verdict(CANNOT_RUN, "needs driver ≥ 535.104.05 for CUDA 12.2", "535.104.05")
    assert v.to_dict() == {
        "outcome": "cannot-run",
        "reason": "needs driver ≥ 535.104.05 for CUDA 12.2",
        "needed_driver": "535.104.05",
    }
    assert compat.NO_GPUS == "no-gpus"
    assert compat.UNKNOWN == "unknown"


# --------------------------------------------------------------------------- the env rules


def test_jetpack_requirements_are_not_constraints() -> None:
    env = {
        **IMAGES["nvidia/cuda:12.2.2"],
        # L4T images' CSV-mount switch: not in the constraint grammar, and never evaluated.
        "NVIDIA_REQUIRE_JETPACK": "csv-mounts=all",
        "NVIDIA_REQUIRE_JETPACK_HOST_MOUNTS": "",
    }
    assert verdict(env, host("535.104.05", "12.2", T4)).outcome == NATIVE


def test_every_nvidia_require_variable_is_anded() -> None:
    env = {**IMAGES["nvidia/cuda:12.2.2"], "NVIDIA_REQUIRE_DRIVER": "driver>=540"}
    result = verdict(env, host("535.104.05", "12.2", T4))
    assert result.outcome == CANNOT_RUN
    assert "unsatisfied condition: driver>=540, in NVIDIA_REQUIRE_DRIVER)" in result.reason
    assert result.needed_driver == "540"


@pytest.mark.parametrize("value", ["true", "1", "yes", "True"])
def test_disable_require_skips_the_runtime_check(value: str) -> None:
    # The runtime refuses 12.9.1 on a GeForce with driver 550 (no GeForce terms from 12.6 on);
    # with the check off, minor-version compatibility runs it.
    geforce_550 = host("550.54.15", "12.4", RTX3090)
    assert verdict(IMAGES["nvidia/cuda:12.9.1"], geforce_550).outcome == CANNOT_RUN
    env = {**IMAGES["nvidia/cuda:12.9.1"], "NVIDIA_DISABLE_REQUIRE": value}
    result = verdict(env, geforce_550)
    assert result.outcome == COMPAT
    assert "minor-version compatibility" in result.reason


def test_disable_require_false_keeps_the_check() -> None:
    env = {**IMAGES["nvidia/cuda:12.9.1"], "NVIDIA_DISABLE_REQUIRE": "false"}
    assert verdict(env, host("550.54.15", "12.4", RTX3090)).outcome == CANNOT_RUN


def test_disable_require_still_checks_the_toolkit() -> None:
    env = {**IMAGES["nvidia/cuda:12.9.1"], "NVIDIA_DISABLE_REQUIRE": "true"}
    result = verdict(env, host("470.82.01", "11.4", RTX3090))
    assert result.outcome == CANNOT_RUN
    assert result.needed_driver == "575.57.08"


def test_an_invalid_requirement_is_refused_unless_disabled() -> None:
    env = {"CUDA_VERSION": "12.2.2", "NVIDIA_REQUIRE_CUDA": "cuda>=12.2 brand>=tesla"}
    result = verdict(env, host("535.104.05", "12.2", T4))
    assert result.outcome == CANNOT_RUN
    assert "NVIDIA_REQUIRE_CUDA is not a valid requirement" in result.reason
    env["NVIDIA_DISABLE_REQUIRE"] = "true"
    assert verdict(env, host("535.104.05", "12.2", T4)).outcome == NATIVE


def test_ngc_minor_version_compat_names_the_build_driver() -> None:
    # Host CUDA 12.4 as the image, but an older 12.4 driver than the one it was built against.
    result = verdict(IMAGES["nvcr.io/nvidia/pytorch:24.05-py3"], host("550.54.14", "12.4", T4))
    assert result.outcome == COMPAT
    assert "older than 550.54.15, the driver the image was built against" in result.reason


# --------------------------------------------------------------------------- the host


def test_no_gpus() -> None:
    inventory = Inventory("none", reason=nvml_failure_reason(ImportError("no pynvml")))
    result = verdict(IMAGES["nvcr.io/nvidia/pytorch:25.01-py3"], inventory)
    assert result.outcome == NO_GPUS
    assert "this host has no GPUs" in result.reason
    assert "No NVIDIA driver library (libnvidia-ml.so)" in result.reason
    assert "CPU code in the image still runs" in result.reason
    # CPU builds do not care.
    assert verdict(IMAGES["quay.io/jupyter/scipy-notebook"], inventory).outcome == CPU_ONLY


def test_no_gpus_without_a_reason() -> None:
    result = verdict(IMAGES["nvidia/cuda:12.2.2"], Inventory("static"))
    assert result.outcome == NO_GPUS
    assert "none are listed" in result.reason


def test_unknown_driver_names_the_config() -> None:
    inventory = static_inventory([{"name": "Tesla T4", "brand": "Tesla"}], "", "")
    result = verdict(IMAGES["nvidia/cuda:12.4.1"], inventory)
    assert result.outcome == UNKNOWN
    assert "an administrator can declare the driver's version" in result.reason
    assert "the CUDA version it supports" in result.reason


def test_cuda_version_inferred_from_the_driver() -> None:
    # A static inventory with a driver version but no static_cuda_version (the test servers').
    inventory = static_inventory([{"name": "Tesla T4", "brand": "tesla"}], "535.104.05", "")
    result = verdict(IMAGES["nvidia/cuda:12.2.2"], inventory)
    assert result.outcome == NATIVE
    assert "driver 535.104.05 supports CUDA 12.2" in result.reason
    assert verdict(IMAGES["nvidia/cuda:12.4.1"], inventory).outcome == COMPAT


def test_driver_too_old_for_any_known_cuda() -> None:
    result = verdict(IMAGES["nvidia/cuda:12.2.2"], host("340.108", "", T4))
    assert result.outcome == UNKNOWN
    assert "supports is unknown: an administrator can declare it" in result.reason


def test_cpu_builds() -> None:
    t4 = host("535.104.05", "12.2", T4)
    assert verdict({}, t4) == Verdict(CPU_ONLY, "CPU build: runs on any host, without GPUs")
    assert verdict(IMAGES["nvidia/cuda:12.2.2"], t4, gpu_build=False).outcome == CPU_ONLY


def test_gpu_build_of_unknown_cuda() -> None:
    result = verdict({"PATH": "/usr/bin"}, host("535.104.05", "12.2", T4), gpu_build=True)
    assert result.outcome == UNKNOWN
    assert "CUDA version is unknown" in result.reason
    assert verdict({}, Inventory("none"), gpu_build=True).outcome == NO_GPUS


def test_arch_constraint_on_t4_and_a100() -> None:
    env = {**IMAGES["nvidia/cuda:12.4.1"], "NVIDIA_REQUIRE_ARCH": "arch>=8.0"}
    t4_only = verdict(env, host("550.54.15", "12.4", T4))
    assert t4_only.outcome == CANNOT_RUN
    assert "unsatisfied condition: arch>=8.0, in NVIDIA_REQUIRE_ARCH)" in t4_only.reason
    assert "compute capability 7.5" in t4_only.reason
    assert t4_only.needed_driver == ""
    assert verdict(env, host("550.54.15", "12.4", A100)).outcome == NATIVE
    # Mixed: runs (on the A100), and says the T4 does not fit.
    mixed = verdict(env, host("550.54.15", "12.4", T4, A100))
    assert mixed.outcome == NATIVE
    assert mixed.reason.startswith("runs natively: driver 550.54.15 supports CUDA 12.4")
    assert mixed.reason.endswith(
        "; not on GPU 0 (Tesla T4): unsatisfied condition: arch>=8.0 (compute capability 7.5)"
    )


def test_mixed_brands_forward_compat_only_on_the_data_center_gpu() -> None:
    geforce = GPU("1", "GPU-3090-1", "NVIDIA GeForce RTX 3090", brand="geforce")
    result = verdict(
        IMAGES["nvcr.io/nvidia/pytorch:23.10-py3"], host("470.82.01", "11.4", T4, geforce)
    )
    assert result.outcome == COMPAT
    assert "brand=tesla on this host" in result.reason
    assert "not on GPU 1 (NVIDIA GeForce RTX 3090)" in result.reason
    assert "forward compatibility does not work on brand=geforce GPUs" in result.reason


def test_several_gpus_that_fail_alike_are_named_together() -> None:
    env = {**IMAGES["nvidia/cuda:12.4.1"], "NVIDIA_REQUIRE_ARCH": "arch>=8.0"}
    t4s = [GPU(str(i), f"GPU-t4-{i}", "Tesla T4", "tesla", "7.5") for i in (0, 2)]
    a100 = GPU("1", "GPU-a100-1", "NVIDIA A100-SXM4-80GB", "nvidia", "8.0")
    result = verdict(env, host("550.54.15", "12.4", t4s[0], a100, t4s[1]))
    assert "not on GPUs 0, 2 (Tesla T4)" in result.reason


def test_forward_compat_on_nvidia_brand_and_rtx() -> None:
    ngc_2310 = IMAGES["nvcr.io/nvidia/pytorch:23.10-py3"]
    a100 = verdict(ngc_2310, host("470.82.01", "11.4", A100))
    assert a100.outcome == COMPAT
    assert "brand=nvidia on this host" in a100.reason
    rtx = GPU("0", "GPU-a6000", "NVIDIA RTX A6000", brand="nvidiartx", compute_capability="8.6")
    result = verdict(ngc_2310, host("470.82.01", "11.4", rtx))
    assert result.outcome == COMPAT
    assert "NGC-ready RTX parts only — brand=nvidiartx on this host" in result.reason


def test_forward_compat_on_an_unknown_brand_is_unknown() -> None:
    inventory = static_inventory([{"name": "GPU"}], "470.82.01", "11.4")
    result = verdict(IMAGES["nvidia/cuda:12.2.2"], inventory)
    assert result.outcome == UNKNOWN
    assert "an administrator can declare the GPU's brand" in result.reason


def test_mig_instances_are_evaluated() -> None:
    instances = tuple(
        GPU(
            f"0/{j}",
            f"MIG-{j}",
            "NVIDIA A100-SXM4-40GB MIG 1g.5gb",
            "nvidia",
            "8.0",
            parent_uuid="GPU-a",
        )
        for j in range(2)
    )
    a100 = GPU(
        "0",
        "GPU-a",
        "NVIDIA A100-SXM4-40GB",
        "nvidia",
        "8.0",
        mig_enabled=True,
        mig_instances=instances,
    )
    result = verdict(IMAGES["nvidia/cuda:12.9.1"], host("535.104.05", "12.2", a100))
    assert result.outcome == COMPAT
    assert "brand=nvidia,driver>=535,driver<536" in result.reason


# --------------------------------------------------------------------------- the architecture

# Real boards and the compute capability NVML reports for each.
V100 = GPU("0", "GPU-v100-0", "Tesla V100-SXM2-32GB", brand="tesla", compute_capability="7.0")
P100 = GPU("0", "GPU-p100-0", "Tesla P100-PCIE-16GB", brand="tesla", compute_capability="6.0")
K80 = GPU("0", "GPU-k80-0", "Tesla K80", brand="tesla", compute_capability="3.7")
H100 = GPU("0", "GPU-h100-0", "NVIDIA H100 80GB HBM3", brand="nvidia", compute_capability="9.0")
B200 = GPU("0", "GPU-b200-0", "NVIDIA B200", brand="nvidia", compute_capability="10.0")
RTX5090 = GPU(
    "0", "GPU-5090-0", "NVIDIA GeForce RTX 5090", brand="geforce", compute_capability="12.0"
)
GPU_BOARDS = {
    "V100": V100,
    "P100": P100,
    "K80": K80,
    "T4": T4,
    "A100": A100,
    "RTX3090": RTX3090,
    "H100": H100,
    "B200": B200,
    "RTX5090": RTX5090,
}
# A legacy image of CUDA 11.0, the first with Ampere (8.0) code and none for 8.6.
CUDA_11_0 = {"CUDA_VERSION": "11.0.3", "NVIDIA_VISIBLE_DEVICES": "all"}

V100_CUDA_13 = (
    "CUDA 13.0 does not support compute capability 7.0 (Tesla V100-SXM2-32GB): it needs 7.5 or "
    "newer; images with CUDA 12.x support this GPU"
)

# (image, board, driver, the CUDA it reports, outcome, fragments of the reason). N, C, X as above.
ARCH_CELLS = [
    # CUDA 13 dropped everything below Turing: refused on a V100 whatever the driver (on 535 it
    # was "Compat mode" through forward compatibility before the architecture counted).
    ("nvcr.io/nvidia/pytorch:25.10-py3", "V100", "580.95.05", "13.0", "X", (V100_CUDA_13,)),
    ("nvcr.io/nvidia/pytorch:25.10-py3", "V100", "535.104.05", "12.2", "X", (V100_CUDA_13,)),
    ("nvidia/cuda:13.0.2", "V100", "580.95.05", "13.0", "X", (V100_CUDA_13,)),
    (
        "vllm/vllm-openai:v0.23.0",
        "P100",
        "580.95.05",
        "13.0",
        "X",
        ("CUDA 13.0 does not support compute capability 6.0 (Tesla P100-PCIE-16GB)",),
    ),
    # ... and runs on Turing (the minimum itself), Ampere and Hopper.
    ("nvcr.io/nvidia/pytorch:25.10-py3", "T4", "580.95.05", "13.0", "N", ("runs natively",)),
    ("nvcr.io/nvidia/pytorch:25.10-py3", "A100", "580.95.05", "13.0", "N", ("runs natively",)),
    ("nvcr.io/nvidia/pytorch:25.10-py3", "H100", "580.95.05", "13.0", "N", ("runs natively",)),
    # CUDA 12 still supports Volta and Pascal.
    ("nvcr.io/nvidia/pytorch:23.10-py3", "V100", "535.104.05", "12.2", "N", ("runs natively",)),
    ("nvidia/cuda:12.9.1", "V100", "580.95.05", "13.0", "N", ("runs natively",)),
    ("nvidia/cuda:12.9.1", "P100", "580.95.05", "13.0", "N", ("runs natively",)),
    # CUDA 12 dropped Kepler 3.5/3.7 (the K80's 470 would otherwise run 12.2 through forward
    # compatibility); CUDA 11 still supports it.
    (
        "nvcr.io/nvidia/pytorch:23.10-py3",
        "K80",
        "470.82.01",
        "11.4",
        "X",
        (
            "CUDA 12.2 does not support compute capability 3.7 (Tesla K80): it needs 5.0 or "
            "newer; images with CUDA 11.x support this GPU",
        ),
    ),
    ("nvidia/cuda:11.8.0", "K80", "470.82.01", "11.4", "C", ("forward compatibility",)),
    ("nvidia/cuda:11.4.1", "K80", "470.82.01", "11.4", "N", ("runs natively",)),
    # A GPU newer than the image's CUDA runs only what the image ships as PTX.
    (
        "nvidia/cuda:10.2",
        "H100",
        "535.104.05",
        "12.2",
        "C",
        (
            "runs only through PTX JIT: CUDA 10.2 predates compute capability 9.0 "
            "(NVIDIA H100 80GB HBM3), so only GPU code the image ships as PTX runs, compiled by "
            'the driver at first use (without PTX: "no kernel image is available for execution '
            'on the device")',
        ),
    ),
    ("nvidia/cuda:11.4.1", "H100", "535.104.05", "12.2", "C", ("CUDA 11.4 predates",)),
    ("nvidia/cuda:11.8.0", "H100", "535.104.05", "12.2", "N", ("runs natively",)),
    ("nvidia/cuda:12.6.3", "B200", "570.133.20", "12.8", "C", ("CUDA 12.6 predates",)),
    ("nvidia/cuda:12.8.1", "B200", "570.133.20", "12.8", "N", ("runs natively",)),
    ("nvidia/cuda:12.6.3", "RTX5090", "570.133.20", "12.8", "C", ("compute capability 12.0",)),
    ("nvidia/cuda:12.8.1", "RTX5090", "570.133.20", "12.8", "N", ("runs natively",)),
    # Code for X.y runs on any X.z with z >= y: CUDA 11.0's Ampere 8.0 code runs on an 8.6.
    ("legacy CUDA_VERSION=11.0.3", "RTX3090", "470.82.01", "11.4", "N", ("runs natively",)),
    # Switching the runtime's check off brings no architecture back.
    (
        "nvidia/cuda:12.8.1 + NVIDIA_DISABLE_REQUIRE=1",
        "K80",
        "470.82.01",
        "11.4",
        "X",
        ("CUDA 12.8 does not support compute capability 3.7",),
    ),
]


@pytest.mark.parametrize(
    ("image", "board", "driver", "cuda", "code", "fragments"),
    [pytest.param(*cell, id=f"{cell[0]}|{cell[1]}|{cell[2]}") for cell in ARCH_CELLS],
)
def test_architecture_table(
    image: str, board: str, driver: str, cuda: str, code: str, fragments: tuple[str, ...]
) -> None:
    env = CUDA_11_0 if image == "legacy CUDA_VERSION=11.0.3" else IMAGES[image]
    result = verdict(env, host(driver, cuda, GPU_BOARDS[board]))
    assert result.outcome == CODES[code], result.reason
    assert "\n" not in result.reason and result.reason == result.reason.strip()
    for fragment in fragments:
        assert fragment in result.reason
    # No driver brings an architecture back: a refusal names none.
    assert result.needed_driver == ""
    if code != "X":
        assert "does not support compute capability" not in result.reason


def test_cuda_13_on_a_v100_is_refused_with_the_sentence() -> None:
    result = verdict(IMAGES["nvcr.io/nvidia/pytorch:25.10-py3"], host("580.95.05", "13.0", V100))
    assert result == Verdict(CANNOT_RUN, V100_CUDA_13, "")


def test_a_mixed_host_runs_on_the_gpu_that_fits_and_names_the_other() -> None:
    result = verdict(
        IMAGES["nvcr.io/nvidia/pytorch:25.10-py3"], host("580.95.05", "13.0", V100, A100)
    )
    assert result.outcome == NATIVE
    assert result.reason.endswith(
        "; not on GPU 0 (Tesla V100-SXM2-32GB): CUDA 13.0 does not support compute capability 7.0"
    )
    # A GPU newer than the image's CUDA fares worse than one it knows, and is named.
    h100 = GPU("1", "GPU-h100-1", "NVIDIA H100 80GB HBM3", "nvidia", "9.0")
    a100 = GPU("0", "GPU-a100-0", "NVIDIA A100-SXM4-80GB", "nvidia", "8.0")
    mixed = verdict(IMAGES["nvidia/cuda:11.4.1"], host("535.104.05", "12.2", a100, h100))
    assert mixed.outcome == NATIVE
    assert mixed.reason.endswith(
        "; unsure on GPU 1 (NVIDIA H100 80GB HBM3): PTX JIT only (CUDA 11.4 predates compute "
        "capability 9.0)"
    )


def test_an_unknown_compute_capability_is_not_refused_and_says_so() -> None:
    # A static inventory without compute_capability: the V100 is let through (as the runtime
    # lets an arch condition through without a GPU), and the verdict says what it did not check.
    declared = static_inventory(
        [{"name": "Tesla V100-SXM2-32GB", "brand": "tesla"}], "580.95.05", "13.0"
    )
    result = verdict(IMAGES["nvcr.io/nvidia/pytorch:25.10-py3"], declared)
    assert result.outcome == NATIVE
    assert result.reason.startswith("runs natively: driver 580.95.05 supports CUDA 13.0")
    assert result.reason.endswith(
        "; compute capability not checked (unknown; CUDA 13.0 needs 7.5 or newer): "
        "an administrator can declare the GPU's compute capability"
    )
    assert "does not support" not in result.reason
    # Declared, it counts.
    declared = static_inventory(
        [{"name": "Tesla V100-SXM2-32GB", "brand": "tesla", "compute_capability": "7.0"}],
        "580.95.05",
        "13.0",
    )
    assert verdict(IMAGES["nvcr.io/nvidia/pytorch:25.10-py3"], declared).reason == V100_CUDA_13
    # NVML that could not read it: no configuration to point at.
    nvml = Inventory("nvml", (GPU("0", "GPU-x", "Tesla V100-SXM2-32GB", "tesla"),), "580.95.05")
    result = verdict(IMAGES["nvcr.io/nvidia/pytorch:25.10-py3"], nvml)
    assert result.outcome == NATIVE
    assert result.reason.endswith("(unknown; CUDA 13.0 needs 7.5 or newer)")
    # Refusals for other reasons stay as they were.
    old = static_inventory([{"name": "GeForce", "brand": "geforce"}], "470.82.01", "11.4")
    refused = verdict(IMAGES["nvidia/cuda:12.2.2"], old)
    assert refused.outcome == CANNOT_RUN and "compute capability" not in refused.reason


@pytest.mark.parametrize("text", ["", "sm_70", "7.0a", "N/A", "٧.٠", "1" * 12])
def test_a_compute_capability_that_is_no_version_counts_as_unknown(text: str) -> None:
    gpu = GPU("0", "GPU-odd", "Tesla V100-SXM2-32GB", "tesla", text)
    result = verdict(IMAGES["nvcr.io/nvidia/pytorch:25.10-py3"], host("580.95.05", "13.0", gpu))
    assert result.outcome == NATIVE
    assert "compute capability not checked" in result.reason


def test_releases_outside_the_table() -> None:
    # Older than CUDA 9.0: not judged by architecture at all.
    cuda_8 = {"CUDA_VERSION": "8.0.61"}
    result = verdict(cuda_8, host("535.104.05", "12.2", H100))
    assert "compute capability" not in result.reason and "PTX JIT" not in result.reason
    # Newer than the table: the newest minimum still holds (support is dropped, never restored),
    # but no architecture is said to be unknown to it.
    cuda_14 = {"CUDA_VERSION": "14.0"}
    refused = verdict(cuda_14, host("600.10", "14.0", V100))
    assert refused.outcome == CANNOT_RUN
    assert "CUDA 14.0 does not support compute capability 7.0" in refused.reason
    assert "it needs 7.5 or newer; images with CUDA 12.x support this GPU" in refused.reason
    future_gpu = GPU("0", "GPU-next", "NVIDIA Next", "nvidia", "13.0")
    assert verdict(cuda_14, host("600.10", "14.0", future_gpu)).outcome == NATIVE
    # A GPU older than any release in the table supports: no release to suggest.
    fermi = GPU("0", "GPU-m2090", "Tesla M2090", "tesla", "2.0")
    old = verdict(IMAGES["nvidia/cuda:10.2"], host("390.157", "9.1", fermi))
    assert old.outcome == CANNOT_RUN
    assert old.reason == (
        "CUDA 10.2 does not support compute capability 2.0 (Tesla M2090): it needs 3.0 or newer"
    )


@pytest.mark.parametrize(
    ("cuda", "minimum"),
    [
        ((9, 0), (3, 0)),
        ((10, 2), (3, 0)),
        ((11, 0), (3, 5)),
        ((11, 8), (3, 5)),
        ((12, 0), (5, 0)),
        ((12, 9), (5, 0)),
        ((13, 0), (7, 5)),
        ((13, 1), (7, 5)),
        ((8, 0), None),
    ],
)
def test_arch_minimum(cuda: tuple[int, int], minimum: tuple[int, int] | None) -> None:
    assert compat.arch_minimum(cuda) == minimum
