"""Unit tests of the pure parts: names, display names, framework detection, path policy, exit
diagnosis, owner liveness. No engine needed."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.base.errors import MountRefused
from jupyter_gpu_containers.host.hoststate import flock_held, open_state_dir
from jupyter_gpu_containers.images.catalog import (
    framework_from_reference,
    framework_of,
    is_gpu_build,
)
from jupyter_gpu_containers.kernel.kernelspecs import kernel_name_for, normalize_reference
from jupyter_gpu_containers.policy.checks import (
    check_mount_source,
    container_path_for,
    inside,
    normalize_ulimits,
)
from jupyter_gpu_containers.policy.command import (
    diagnose_exit,
    entrypoint_is_interpreter,
    kernel_command,
)


def test_kernel_names_are_stable_valid_and_distinct() -> None:
    name = kernel_name_for("nvcr.io/nvidia/pytorch:24.05-py3")
    assert name == kernel_name_for("nvcr.io/nvidia/pytorch:24.05-py3")
    assert name.startswith("gpuc-nvcr.io-nvidia-pytorch-24.05-py3-")
    assert all(c.isalnum() or c in "._-" for c in name) and name == name.lower()
    # References that slug alike still get different names.
    assert kernel_name_for("a/b:c") != kernel_name_for("a-b:c")
    assert kernel_name_for("img:Tag") != kernel_name_for("img:tag")
    # An untagged reference means :latest, as in docker.
    assert kernel_name_for("ubuntu") == kernel_name_for("ubuntu:latest")
    assert normalize_reference("localhost:5000/x") == "localhost:5000/x:latest"
    assert normalize_reference("x@sha256:abc") == "x@sha256:abc"


def test_framework_from_ngc_environment() -> None:
    env = {
        "NVIDIA_PRODUCT_NAME": "PyTorch",
        "NVIDIA_PYTORCH_VERSION": "24.05",
        "PYTORCH_VERSION": "2.4.0a0",
        "CUDA_VERSION": "12.4.1",
    }
    fw = framework_of("nvcr.io/nvidia/pytorch:24.05-py3", env, {})
    assert fw is not None and (fw.name, fw.version, fw.release) == ("PyTorch", "2.4.0a0", "24.05")
    assert fw.label() == "PyTorch 24.05"
    assert is_gpu_build("nvcr.io/nvidia/pytorch:24.05-py3", env)


def test_framework_from_tags_and_plain_env() -> None:
    fw = framework_from_reference("openpai/standard:python_3.6-pytorch_1.4.0-gpu")
    assert fw is not None and (fw.name, fw.version) == ("PyTorch", "1.4.0")
    assert is_gpu_build("openpai/standard:python_3.6-pytorch_1.4.0-gpu", {})
    assert not is_gpu_build("tensorflow/tensorflow:2.15.0", {})
    fw = framework_of("tensorflow/tensorflow:2.15.0", {"TENSORFLOW_VERSION": "2.15.0"}, {})
    assert fw is not None and fw.label() == "TensorFlow 2.15.0"
    assert framework_of("debian:bookworm", {}, {}) is None


def test_inside_compares_real_paths_not_prefixes(tmp_path: Path) -> None:
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice2").mkdir()
    (tmp_path / "alice" / "link-out").symlink_to(tmp_path / "alice2")
    assert inside(str(tmp_path / "alice" / "x"), str(tmp_path / "alice"))
    assert inside(str(tmp_path / "alice"), str(tmp_path / "alice"))
    assert not inside(str(tmp_path / "alice2"), str(tmp_path / "alice"))
    assert not inside(str(tmp_path / "alice" / ".." / "alice2"), str(tmp_path / "alice"))
    assert not inside(str(tmp_path / "alice" / "link-out"), str(tmp_path / "alice"))


@pytest.mark.parametrize("source", ["relative/path", "", "/tmp/\0nul"])
def test_mount_sources_must_be_absolute_and_clean(source: str, tmp_path: Path) -> None:
    with pytest.raises(MountRefused):
        check_mount_source(source, [str(tmp_path)])


def test_mount_sources_must_lie_in_an_allowed_root(tmp_path: Path) -> None:
    (tmp_path / "public" / "datasets").mkdir(parents=True)
    ok = check_mount_source(str(tmp_path / "public" / "datasets"), [str(tmp_path / "public")])
    assert ok == os.path.realpath(tmp_path / "public" / "datasets")
    with pytest.raises(MountRefused, match="outside the directories allowed"):
        check_mount_source("/etc", [str(tmp_path / "public")])
    with pytest.raises(MountRefused, match="none configured"):
        check_mount_source("/etc", [])


def test_container_paths_follow_the_workspace(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert (
        container_path_for(str(tmp_path / "a" / "b"), str(tmp_path), "/workspace")
        == "/workspace/a/b"
    )
    assert container_path_for(str(tmp_path), str(tmp_path), "/workspace") == "/workspace"
    assert container_path_for("/elsewhere", str(tmp_path), "/workspace") == "/workspace"


def test_kernel_command_and_entrypoints() -> None:
    cmd = kernel_command([], "/run/jupyter-kernel/kernel.json")
    assert cmd[:2] == ["sh", "-c"] and cmd[-1] == "/run/jupyter-kernel/kernel.json"
    assert kernel_command(["R", "--connection={connection_file}"], "/k.json") == [
        "R",
        "--connection=/k.json",
    ]
    assert entrypoint_is_interpreter(["/usr/bin/python3"])
    assert not entrypoint_is_interpreter(["/opt/nvidia/nvidia_entrypoint.sh"])
    assert not entrypoint_is_interpreter([])
    assert normalize_ulimits({"memlock": -1, "stack": [1, 2]}) == {
        "memlock": (-1, -1),
        "stack": (1, 2),
    }


def test_exit_diagnosis() -> None:
    sentence, image_fault = diagnose_exit(
        "img", 1, False, "/usr/bin/python3: No module named ipykernel_launcher"
    )
    assert image_fault and "has Python but not ipykernel" in sentence
    sentence, image_fault = diagnose_exit(
        "img", 127, False, "jupyter-gpu-containers: no Python interpreter in this image"
    )
    assert image_fault and "no Python interpreter" in sentence
    sentence, image_fault = diagnose_exit("img", 137, True, "")
    assert not image_fault and "out of memory" in sentence
    sentence, _ = diagnose_exit("img", 2, False, "boom")
    assert "exited at start with code 2" in sentence and sentence.endswith("boom")


def test_owner_process_token_round_trips() -> None:
    me = L.OwnerProcess.current()
    assert L.OwnerProcess.parse(me.token()) == me
    assert L.OwnerProcess.parse("garbage") is None


def test_liveness_tells_live_servers_from_dead_ones(tmp_path: Path) -> None:
    state = open_state_dir(str(tmp_path / "state"))
    assert not state.is_alive("never-started")
    assert state.claim("me")
    assert state.is_alive("me") and state.is_alive("me", os.geteuid())
    # Another process holding an id: alive while it lives (read from /proc/locks, as another
    # user would have to), dead after kill -9.
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_CLAIM, str(tmp_path / "state")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "claimed"
    held = os.stat(tmp_path / "state" / "server-other.lock")
    assert flock_held(held) is True
    assert stat.S_IMODE(held.st_mode) == 0o600
    assert state.is_alive("other") and state.is_alive("other", os.geteuid())
    assert not state.is_alive("other", os.geteuid() + 1)  # a file of another owner proves nothing
    assert state.claim_or_fallback("other") == f"other.{os.getpid()}"
    holder.kill()
    holder.wait()
    holder.stdout.close()
    assert flock_held(held) is False
    assert not state.is_alive("other")


HOLD_CLAIM = """
import sys, time
from jupyter_gpu_containers.host.hoststate import open_state_dir
assert open_state_dir(sys.argv[1]).claim("other")
print("claimed", flush=True)
time.sleep(60)
"""


def test_server_id_is_stable_per_user_and_workspace(tmp_path: Path) -> None:
    assert L.default_server_id(1000, str(tmp_path)) == L.default_server_id(
        1000, str(tmp_path) + "/"
    )
    assert L.default_server_id(1000, str(tmp_path)) != L.default_server_id(1001, str(tmp_path))


def test_recovery_never_removes_a_container_whose_creator_still_runs(tmp_path: Path) -> None:
    """A live server registered in another state dir is still alive: its kernels stay. One whose
    creator is gone (same pid, another start time) is removed."""
    from jupyter_gpu_containers.backends.docker.engine import ContainerRecord
    from jupyter_gpu_containers.base import labels as L
    from jupyter_gpu_containers.placement.host import left_behind_on_host as decide

    me = L.OwnerProcess.current()
    parent = os.getppid()
    live = L.OwnerProcess(me.host, me.boot, parent, L._process_start_time(parent) or "?")
    dead = L.OwnerProcess(me.host, me.boot, parent, "another-start")

    def record(owner: L.OwnerProcess, status: str = "running") -> ContainerRecord:
        labels = {
            L.OWNER_PROCESS: owner.token(),
            L.SERVER_ID: "elsewhere-registered",
            L.UID: str(os.geteuid()),
        }
        return ContainerRecord("c", "n", "img", labels, status)

    state = open_state_dir(str(tmp_path / "state"))
    assert decide(record(live), "mine", state, me, str(tmp_path)) == "leave"
    assert decide(record(dead), "mine", state, me, str(tmp_path)) == "remove"
    # Made by a server of another state directory: its creator is dead, but a server that
    # reattached it may live, registered there alone. Of this one: judged here.
    other = open_state_dir(str(tmp_path / "other-state"))
    assert other.identity and other.identity != state.identity
    elsewhere = record(dead)
    elsewhere.labels[L.STATE_DIR] = other.identity
    assert decide(elsewhere, "mine", state, me, str(tmp_path)) == "leave"
    elsewhere.labels[L.STATE_DIR] = state.identity
    assert decide(elsewhere, "mine", state, me, str(tmp_path)) == "remove"
    # Of an earlier boot (the state directory in /run made anew since, so another identity):
    # stopped, nobody reattached it and its servers are gone, so it goes; still running (a
    # restart policy), a server of this boot may have reattached it, so it stays.
    rebooted = L.OwnerProcess(me.host, "an-earlier-boot", parent, "some-start")
    before_reboot = record(rebooted)
    before_reboot.labels[L.STATE_DIR] = other.identity
    assert decide(before_reboot, "mine", state, me, str(tmp_path)) == "leave"
    stopped = record(rebooted, "exited")
    stopped.labels[L.STATE_DIR] = other.identity
    assert decide(stopped, "mine", state, me, str(tmp_path)) == "remove"


def test_a_pulls_progress_reads_the_same_however_its_bytes_are_cut() -> None:
    """The engine's progress is JSON messages on a stream; TCP cuts it anywhere, inside a
    message and inside a character (a layer's or an error's text may be any UTF-8)."""
    import json

    from jupyter_gpu_containers.backends.docker import pulls
    from jupyter_gpu_containers.base.errors import PullFailed

    messages = [
        {"status": "Pulling from lab/ünïcode", "id": "latest"},
        {"status": "Downloading", "id": "a1", "progressDetail": {"current": 5, "total": 9}},
        {"error": "manifest für ‘x’ nicht gefunden — 见"},
    ]
    stream = "\r\n".join(json.dumps(m, ensure_ascii=False) for m in messages).encode()
    whole = list(pulls.progress_messages([stream], "lab/x"))
    assert whole == messages
    for cut in range(1, len(stream)):
        assert list(pulls.progress_messages([stream[:cut], stream[cut:]], "lab/x")) == messages
    byte_by_byte = [stream[i : i + 1] for i in range(len(stream))]
    assert list(pulls.progress_messages(byte_by_byte, "lab/x")) == messages
    # A stream that never ends a message is not the engine's: refused, not kept growing.
    endless = (b'{"status": "' + b"x" * 65536 for _ in range(64))
    with pytest.raises(PullFailed, match="not its progress"):
        list(pulls.progress_messages(endless, "lab/x"))


def test_a_pull_names_the_engine_address_it_cannot_speak_to() -> None:
    from jupyter_gpu_containers.backends.docker import pulls

    connection = pulls._connection("tcp://127.0.0.1:2375", 5.0)
    assert (connection.host, connection.port) == ("127.0.0.1", 2375)
    assert pulls._connection("tcp://engine.example", 5.0).port == 2375
    assert isinstance(pulls._connection("unix:///run/docker.sock", 5.0), pulls._UnixConnection)
    for url in ("ssh://me@engine.example", "https://engine.example:2376", "tcp://"):
        with pytest.raises(ValueError, match="unix:// or plain tcp://"):
            pulls._connection(url, 5.0)
