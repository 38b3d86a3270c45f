"""The launch plan as a table: what a kernel's container gets (mounts, environment, user, labels,
limits, ports) from its request, the host's facts and the administrator's policy, and what is
refused. plan_container is pure: no engine, no files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.base.errors import (
    ContainerKernelError,
    KernelOptionRefused,
    MountRefused,
    ValueRefused,
)
from jupyter_gpu_containers.base.records import (
    KERNEL_DIR_IN_CONTAINER,
    ContainerSpec,
    ImageRecord,
    Mount,
)
from jupyter_gpu_containers.gpus.allocator import Attachment, attachment
from jupyter_gpu_containers.gpus.inventory import GPU
from jupyter_gpu_containers.policy.admin_policy import ContainerPolicy
from jupyter_gpu_containers.policy.launchplan import (
    KernelOptions,
    LaunchFacts,
    gather_facts,
    plan_container,
)

IMAGE = ImageRecord(
    id="sha256:" + "a" * 64,
    tags=("img:1",),
    labels={},
    env={},
    entrypoint=(),
    user="",
    created="",
    size=0,
)
FACTS = LaunchFacts(
    root="/home/alice/work",
    uid=1000,
    gid=1000,
    username="alice",
    server_id="1000-abc",
    owner="host/boot/42/7",
    host_cwd="/home/alice/work/nb",
    cwd="/workspace/nb",
    session="/workspace/nb/a.ipynb",
    notebook="nb/a.ipynb",
    extra_mounts=(("/data/sets", "/datasets", True),),
    connection_dir="/run/user/1000/jupyter-gpu-containers/k-abcdefgh",
    name="jupyter-kernel-k-0a0b0c",
)
PORTS = {"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}


def plan(
    options: dict[str, Any] | None = None,
    policy: dict[str, Any] | None = None,
    *,
    spec_env: dict[str, str] | None = None,
    gpus: list[GPU] | None = None,
    image: ImageRecord = IMAGE,
    facts: LaunchFacts = FACTS,
    pool_id: str | None = None,
) -> ContainerSpec:
    chosen = gpus or []
    return plan_container(
        kernel_id="k-1-2-3-4",
        kernel_name="gpuc-img",
        image=image,
        command=["python"],
        options=KernelOptions(image="img:1", **(options or {})),
        spec_env=spec_env or {},
        facts=facts,
        policy=ContainerPolicy(**(policy or {})),
        attached=attachment("runtime", chosen),
        gpus=tuple(g.uuid for g in chosen),
        ports=PORTS,
        pool_id=pool_id,
    )


def test_mounts_are_the_private_directory_the_workspace_and_the_checked_extras() -> None:
    spec = plan()
    assert spec.mounts == [
        Mount(FACTS.connection_dir, KERNEL_DIR_IN_CONTAINER, read_only=False),
        Mount(FACTS.root, "/workspace", read_only=False),
        Mount("/data/sets", "/datasets", read_only=True),
    ]
    assert spec.working_dir == "/workspace/nb"
    # A warm container starts in its private directory (the handover moves it).
    assert plan(pool_id="p1").working_dir == KERNEL_DIR_IN_CONTAINER


@pytest.mark.parametrize(
    ("options", "spec_env", "gpus", "expected"),
    [
        # The kernel spec's env, then the options', then what the launch sets.
        ({}, {"A": "spec"}, None, {"A": "spec", "NVIDIA_VISIBLE_DEVICES": "void"}),
        ({"environment": {"A": "admin"}}, {"A": "spec"}, None, {"A": "admin"}),
        ({}, {}, [GPU(index="0", uuid="GPU-x", name="T4")], {"NVIDIA_VISIBLE_DEVICES": "GPU-x"}),
        ({}, {}, None, {"JPY_SESSION_NAME": "/workspace/nb/a.ipynb", "HOME": "/home/jupyter"}),
        ({}, {"HOME": "/mine"}, None, {"HOME": "/mine", "USER": "alice", "LOGNAME": "alice"}),
    ],
)
def test_environment(
    options: dict[str, Any],
    spec_env: dict[str, str],
    gpus: list[GPU] | None,
    expected: dict[str, str],
) -> None:
    env = plan(options, spec_env=spec_env, gpus=gpus).environment
    assert {k: env.get(k) for k in expected} == expected


def test_the_image_user_gets_no_home_of_ours() -> None:
    spec = plan({"run_as": "image"}, {"allowed_run_as": ["image"], "allow_root": True})
    assert spec.user is None and "HOME" not in spec.environment and not spec.tmpfs


@pytest.mark.parametrize(
    ("options", "policy", "spec_env", "refusal", "says", "setting"),
    [
        ({}, {}, {"NVIDIA_VISIBLE_DEVICES": "all"}, ValueRefused, "may not set", ""),
        ({}, {}, {"BAD NAME": "x"}, ValueRefused, "cannot be an environment variable name", ""),
        ({"run_as": "0:0"}, {}, {}, KernelOptionRefused, "would run as root", "allow_root"),
        (
            {"shm_size": "8g"},
            {"max_shm_size": "1g"},
            {},
            KernelOptionRefused,
            "a /dev/shm of 8g, more than the 1g the administrator allows",
            "ContainerPolicy.max_shm_size",
        ),
        (
            {"mem_limit": "9g"},
            {"max_mem_limit": "8g"},
            {},
            KernelOptionRefused,
            "a memory limit of 9g, more than the 8g the administrator allows",
            "ContainerPolicy.max_mem_limit",
        ),
        (
            {"runtime": "kata"},
            {},
            {},
            KernelOptionRefused,
            "runtime 'kata' that this kernel is set to use is not allowed",
            "ContainerPolicy.allowed_runtimes",
        ),
        (
            {"ulimits": {"nofile": 9}},
            {},
            {},
            KernelOptionRefused,
            "resource limit 'nofile', which kernels on this server may not set",
            "ContainerPolicy.allowed_ulimits",
        ),
        (
            {"ulimits": {"stack": -1}},
            {},
            {},
            KernelOptionRefused,
            "above the 67108864",
            "ContainerPolicy.allowed_ulimits",
        ),
    ],
)
def test_refusals(
    options: dict[str, Any],
    policy: dict[str, Any],
    spec_env: dict[str, str],
    refusal: type[ContainerKernelError],
    says: str,
    setting: str,
) -> None:
    """Each refusal says what happened in plain words, and names the option that decided it
    apart (errors.py), never in its sentence."""
    with pytest.raises(refusal, match=says) as refused:
        plan(options, policy, spec_env=spec_env)
    assert setting in refused.value.setting
    assert "ContainerPolicy." not in refused.value.sentence


@pytest.mark.parametrize(
    ("options", "policy", "memory", "pids", "shm"),
    [
        ({}, {}, None, 4096, "1g"),
        ({"mem_limit": None, "pids_limit": None}, {}, None, 32768, "1g"),
        ({"mem_limit": None}, {"max_mem_limit": "8g"}, "8g", 4096, "1g"),
        ({"mem_limit": "2g", "pids_limit": 99}, {"max_mem_limit": "8g"}, "2g", 99, "1g"),
        ({"shm_size": None}, {"max_shm_size": "1g"}, None, 4096, None),
    ],
)
def test_limits_are_lowered_never_lifted(
    options: dict[str, Any], policy: dict[str, Any], memory: str | None, pids: int, shm: Any
) -> None:
    spec = plan(options, policy)
    assert (spec.mem_limit, spec.pids_limit, spec.shm_size) == (memory, pids, shm)
    assert spec.log_max_size == "10m" and spec.tmpfs == {"/home/jupyter": "rw,mode=1777,size=2g"}


def test_labels_name_the_kernel_and_cannot_be_overridden() -> None:
    spec = plan({"extra_labels": {L.KERNEL_ID: "forged", L.POOL: "forged", "team": "a"}})
    assert spec.labels[L.KERNEL_ID] == "k-1-2-3-4"
    assert L.POOL not in spec.labels and spec.labels["team"] == "a"
    assert spec.labels[L.NOTEBOOK] == "nb/a.ipynb" and spec.labels[L.UID] == "1000"
    assert plan(pool_id="p1").labels[L.POOL] == "p1"
    gpu = GPU(index="0", uuid="GPU-x", name="T4")
    booked = plan(gpus=[gpu])
    assert booked.labels[L.GPUS] == "GPU-x" and booked.gpus == ("GPU-x",)


def test_tcp_publishes_on_loopback_only() -> None:
    assert plan().port_bindings == {}
    tcp = plan({"transport": "tcp"})
    assert tcp.port_bindings == {p: ("127.0.0.1", p) for p in PORTS.values()}
    assert plan({"transport": "tcp", "network_mode": "host"}).port_bindings == {}


def test_an_interpreter_entrypoint_is_cleared_a_wrapper_kept() -> None:
    python = ImageRecord(**{**IMAGE.__dict__, "entrypoint": ("python3",)})
    wrapper = ImageRecord(**{**IMAGE.__dict__, "entrypoint": ("/opt/nvidia/entrypoint.sh",)})
    assert plan(image=python).entrypoint == [] and plan(image=wrapper).entrypoint is None


def test_gpus_attach_as_the_mode_says() -> None:
    gpu = GPU(index="0", uuid="GPU-x", name="T4")
    assert attachment("runtime", [gpu]) == Attachment(
        runtime="nvidia", environment={"NVIDIA_VISIBLE_DEVICES": "GPU-x"}
    )
    assert plan(gpus=[gpu]).runtime == "nvidia"


def test_gather_facts_resolves_the_host_side(tmp_path: Path) -> None:
    (tmp_path / "work" / "nb").mkdir(parents=True)
    (tmp_path / "sets").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "work")
    options = KernelOptions(
        image="img:1", extra_mounts=({"source": str(tmp_path / "sets"), "target": "/d"},)
    )
    policy = ContainerPolicy(allowed_mount_roots=[str(tmp_path / "sets")])
    facts = gather_facts(
        options,
        policy,
        kernel_id="abcdefgh-1-2-3-4",
        root_dir=str(tmp_path / "link"),
        cwd=str(tmp_path / "work" / "nb"),
        session=str(tmp_path / "work" / "nb" / "a.ipynb"),
        connection_dir="/c/k",
        server_id="sid",
    )
    assert facts.root == str(tmp_path / "work")  # resolved
    assert (facts.cwd, facts.session, facts.notebook) == (
        "/workspace/nb",
        "/workspace/nb/a.ipynb",
        "nb/a.ipynb",
    )
    assert facts.extra_mounts == ((str(tmp_path / "sets"), "/d", True),)
    assert facts.uid == os.getuid() and facts.name.startswith("jupyter-kernel-abcdefgh-")
    writable = KernelOptions(
        image="img:1",
        extra_mounts=({"source": str(tmp_path / "sets"), "target": "/d", "read_only": False},),
    )
    with pytest.raises(MountRefused, match="asks to be writable, but on this server") as refused:
        gather_facts(
            writable,
            policy,
            kernel_id="abcdefgh-1-2-3-4",
            root_dir=str(tmp_path / "work"),
            cwd="",
            session="",
            connection_dir="/c/k",
            server_id="sid",
        )
    assert refused.value.setting == "ContainerPolicy.writable_mount_roots"
