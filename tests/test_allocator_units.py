"""The allocator's choices, pure: no engine, a ledger and an inventory built by hand."""

from __future__ import annotations

from pathlib import Path

import nvml_double
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_gpu_containers.gpus.allocator import (
    GPUAllocator,
    GPUGone,
    GPURequest,
    Holding,
    InvalidGPURequest,
    Ledger,
    NoFreeGPU,
    OverUserCap,
    UnknownGPU,
    attachment,
    over_user_cap,
    resolve_attach_mode,
)
from jupyter_gpu_containers.gpus.gpuqueue import waiting_text
from jupyter_gpu_containers.gpus.inventory import read_nvml


def holding(kernel: str, uid: str = "1000", user: str = "alice") -> Holding:
    return Holding(kernel, f"c-{kernel}", user, uid, "nb.ipynb", "img", "srv", 0.0)


def ledger(**held: list[str]) -> Ledger:
    """ledger(k1=["GPU-a100-0000"]) -> kernel k1 holds that GPU."""
    out = Ledger()
    for kernel, uuids in held.items():
        for uuid in uuids:
            out.holdings.setdefault(uuid, []).append(holding(kernel))
    return out


def test_least_loaded_first() -> None:
    nvml_double.BOX = nvml_double.eight_a100()  # GPU i uses (i+1) GiB and is 10*i % busy
    inv = read_nvml(nvml_double)
    chosen = GPUAllocator().choose(inv, Ledger(), GPURequest(count=3), kernel_id="k", uid="1")
    assert [g.index for g in chosen] == ["0", "1", "2"]
    nvml_double.BOX.devices[0].used = 70 * nvml_double.GiB
    inv = read_nvml(nvml_double)
    chosen = GPUAllocator().choose(inv, Ledger(), GPURequest(count=1), kernel_id="k", uid="1")
    assert [g.index for g in chosen] == ["1"]


def test_shared_prefers_the_gpu_with_fewer_holders() -> None:
    nvml_double.BOX = nvml_double.Box(
        devices=[nvml_double.Device(uuid=f"GPU-{i}") for i in range(2)]
    )
    inv = read_nvml(nvml_double)
    allocator = GPUAllocator(policy="shared", max_kernels_per_gpu=2)
    chosen = allocator.choose(inv, ledger(a=["GPU-0"]), GPURequest(count=1), kernel_id="k", uid="1")
    assert [g.uuid for g in chosen] == ["GPU-1"]
    full = ledger(a=["GPU-0"], b=["GPU-0"], c=["GPU-1"], d=["GPU-1"])
    with pytest.raises(NoFreeGPU, match="1 requested, 0 free"):
        allocator.choose(inv, full, GPURequest(count=1), kernel_id="k", uid="1")


def test_the_per_user_cap_counts_this_inventorys_gpus() -> None:
    """The user's kernels on GPUs of this inventory count; a holding the engine's labels name
    on a device this inventory does not have (another server's declared GPUs on the same
    engine) does not."""
    nvml_double.BOX = nvml_double.Box(
        devices=[nvml_double.Device(uuid=f"GPU-{i}") for i in range(2)]
    )
    inv = read_nvml(nvml_double)
    allocator = GPUAllocator(max_gpus_per_user=1)
    elsewhere = ledger(a=["GPU-elsewhere-0"])
    chosen = allocator.choose(inv, elsewhere, GPURequest(count=1), kernel_id="k", uid="1000")
    assert [g.uuid for g in chosen] == ["GPU-0"]
    with pytest.raises(OverUserCap, match=r"over the limit of 1 GPU per user \(1 held"):
        allocator.choose(inv, ledger(a=["GPU-1"]), GPURequest(count=1), kernel_id="k", uid="1000")


def test_mig_instances_by_uuid_and_count() -> None:
    nvml_double.BOX = nvml_double.eight_a100(mig_on=0)
    inv = read_nvml(nvml_double)
    allocator = GPUAllocator()
    chosen = allocator.choose(
        inv, Ledger(), GPURequest(ids=("MIG-a100-0-1",)), kernel_id="k", uid="1"
    )
    assert [(g.index, g.parent_uuid) for g in chosen] == [("0/1", "GPU-a100-0000")]
    with pytest.raises(UnknownGPU, match="There is no GPU 'GPU-a100-0000'"):
        allocator.choose(inv, Ledger(), GPURequest(ids=("GPU-a100-0000",)), kernel_id="k", uid="1")


def test_a_kernel_keeps_its_own_gpus_and_a_vanished_gpu_is_named() -> None:
    nvml_double.BOX = nvml_double.eight_a100()
    inv = read_nvml(nvml_double)
    mine = ledger(k=["GPU-a100-0003"])
    again = GPUAllocator().choose(
        inv, mine, GPURequest(ids=("GPU-a100-0003",)), kernel_id="k", uid="1"
    )
    assert [g.uuid for g in again] == ["GPU-a100-0003"]
    gone = ledger(k=["GPU-a100-0009"])
    with pytest.raises(GPUGone, match="no longer on this host"):
        GPUAllocator().choose(inv, gone, GPURequest(ids=("GPU-a100-0009",)), kernel_id="k", uid="1")


def test_no_gpus_at_all_says_why() -> None:
    nvml_double.BOX = nvml_double.Box(devices=[])
    inv = read_nvml(nvml_double)
    with pytest.raises(NoFreeGPU, match="reports no GPUs"):
        GPUAllocator().choose(inv, Ledger(), GPURequest(count=1), kernel_id="k", uid="1")
    assert GPUAllocator().choose(inv, Ledger(), GPURequest(), kernel_id="k", uid="1") == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2, GPURequest(count=2)),
        ("2", GPURequest(count=2)),
        ("none", GPURequest()),
        (None, GPURequest()),
        ("0,GPU-x", GPURequest(ids=("0", "GPU-x"))),
        ([1, "MIG-y"], GPURequest(ids=("1", "MIG-y"))),
    ],
)
def test_requests_parse(value: object, expected: GPURequest) -> None:
    assert GPURequest.parse(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        -1,
        "-2",
        1.5,
        True,
        ["0", "0"],
        ["a b"],
        [""],
        {"n": 1},
        # Issue 26, finding 11: each of these escaped as another error (a 500) or passed.
        "--1",
        "\u00b2",
        "9" * 5000,
        pytest.param(10**5000, id="a-5001-digit-count"),
        pytest.param([10**5000], id="a-5001-digit-index"),
        [-1],
        ["\u00e9"],
        [[]],
        float("inf"),
    ],
)
def test_bad_requests_are_refused(value: object) -> None:
    with pytest.raises(InvalidGPURequest) as refused:
        GPURequest.parse(value)
    sentence = refused.value.sentence
    assert sentence.endswith(".") and len(sentence) < 200, sentence


# What a notebook's metadata or a start's env may carry: JSON, any shape, any size.
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**6000), max_value=10**6000)
    | st.floats()
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=20,
)


@given(value=JSON_VALUES | st.text(alphabet="0123456789-, GPUMIabcdef\u00b2\u0663", max_size=40))
@settings(max_examples=400, deadline=None, derandomize=True, database=None)
def test_any_value_parses_or_is_refused_with_a_sentence(value: object) -> None:
    """Whatever a client sends, a request or InvalidGPURequest (which the routes answer 400),
    never another error; a request read back from what it reports is the same request."""
    try:
        request = GPURequest.parse(value)
    except InvalidGPURequest as e:
        assert e.status == 400 and e.sentence.endswith("."), e.sentence
        assert len(e.sentence) < 200, e.sentence
        return
    assert 0 <= request.count <= 1024 and len(request.ids) <= 1024
    assert all(i.isascii() and 0 < len(i) <= 128 for i in request.ids), request
    assert GPURequest.parse(request.to_json()) == request


def test_attachments() -> None:
    nvml_double.BOX = nvml_double.eight_a100()
    gpus = read_nvml(nvml_double).gpus[:2]
    assert attachment("runtime", []).environment == {"NVIDIA_VISIBLE_DEVICES": "void"}
    runtime = attachment("runtime", list(gpus))
    assert runtime.runtime == "nvidia"
    assert runtime.environment == {"NVIDIA_VISIBLE_DEVICES": "GPU-a100-0000,GPU-a100-0001"}
    assert "CUDA_VISIBLE_DEVICES" not in runtime.environment
    assert attachment("device-requests", list(gpus)).device_requests[0]["driver"] == "nvidia"


def test_attach_mode_detection(tmp_path: Path) -> None:
    assert resolve_attach_mode("auto", ["runc", "nvidia"], []) == "runtime"
    assert resolve_attach_mode("auto", ["runc"], [str(tmp_path)]) == "device-requests"
    (tmp_path / "nvidia.yaml").write_text("cdiVersion: 0.5.0\n")
    assert resolve_attach_mode("auto", ["runc"], [str(tmp_path)]) == "cdi"
    assert resolve_attach_mode("device-requests", ["nvidia"], []) == "device-requests"


def test_a_refusal_over_the_cap_says_what_would_help() -> None:
    """Over the cap by itself, no kernel shut down helps: it says the limit ("your other kernels
    hold 0" told a student nothing); else it names what the other kernels hold."""
    assert str(over_user_cap(2, 0, 1)) == (
        "You asked for 2 GPUs, over the limit of 1 GPU per user. Ask for fewer GPUs."
    )
    assert str(over_user_cap(1, 1, 1)) == (
        "This would give you 2 GPUs, over the limit of 1 GPU per user (1 held by your other "
        "kernels). Shut one of them down, or ask for fewer GPUs."
    )
    assert "limit of 2 GPUs per user" in str(over_user_cap(1, 2, 2))
    assert waiting_text(1) == "1 start waits" and waiting_text(3) == "3 starts wait"
