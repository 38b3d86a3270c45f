"""The rootless Podman backend: what it asks of podman (pure), and kernels on a real account's own
rootless Podman, outside the docker group (tests/podman_user.py): hidden-style images, the readiness
probe's verdicts, pulls with their own login, the kernel's view and log, and another account's
reach. And a kernel service on root's Podman (users' kernels as them, one GPU ledger), refused on
rootless Podman. And the service's own builder's steps on Podman, rootless and root (issue 61,
findings 1, 5 and 6: confined like a kernel, an exact commit, nothing left; a student's build
through a Podman service runs in them, never in ``podman build``).

The lifecycle (files owned by the user, kill -9 and reattach, sweeps) runs on Podman in
test_server_process.py, parametrized by engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import jupyter_kernel_test
import podman_user
import pytest
import test_conformance
from conftest import (
    CONDA_IMAGE,
    DEBIAN_IMAGE,
    NGC_IMAGE,
    NO_IPYKERNEL_IMAGE,
    kernel_name,
    write_notebook,
)
from jupyter_client.utils import run_sync  # type: ignore[attr-defined]
from kernel_io import execute
from registry import PrivateRegistry
from servers import Server, wait_until, write_server_config
from stalling_registry import StallingRegistry
from tiny_wheel import tiny_wheel
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_gpu_containers.backends.podman import containers, images
from jupyter_gpu_containers.backends.podman.engine import PodmanEngine
from jupyter_gpu_containers.base.errors import EngineRefused, PathRefused, ValueRefused
from jupyter_gpu_containers.base.records import ContainerSpec, Mount
from jupyter_gpu_containers.host.packages_archive import SAVED_PACKAGES_DIR

# ------------------------------------------------------------------ what podman is asked (pure)


def spec(**changes: Any) -> ContainerSpec:
    fields: dict[str, Any] = {
        "image": "jgc/debian-ipykernel:bookworm",
        "command": ["python3", "-m", "ipykernel_launcher"],
        "name": "jupyter-kernel-x",
        "labels": {"org.jupyter.gpu-containers.managed": "true"},
        "environment": {"HOME": "/home/jupyter", "SECRET_TOKEN": "s3cret value"},
        "user": "1010:1010",
        "working_dir": "/workspace",
        "mounts": [Mount("/tmp/ws", "/workspace", read_only=False)],
        "tmpfs": {"/home/jupyter": "rw,size=2g"},
    }
    fields.update(changes)
    return ContainerSpec(**fields)


def test_a_kernel_container_is_the_users_hardened_and_its_environment_off_the_command_line() -> (
    None
):
    args = containers.create_args(
        spec(device_requests=[{"driver": "cdi", "device_ids": ["nvidia.com/gpu=GPU-a"]}]),
        network="slirp4netns",
        userns="keep-id",
        ulimits={"memlock": (65536, 65536)},
    )
    line = " ".join(args)
    assert args[:4] == ["create", "--pull", "never", "--name"]
    assert "--userns keep-id" in line and "--user 1010:1010" in line
    assert "--cap-drop ALL" in line and "--security-opt no-new-privileges" in line
    assert "--mount type=bind,source=/tmp/ws,destination=/workspace" in line
    assert "--device nvidia.com/gpu=GPU-a" in line
    assert "--ulimit memlock=65536:65536" in line
    assert "--network slirp4netns" in line
    # The environment comes on stdin: no value (a token, say) on a command line, which every
    # account can read in /proc.
    assert "--env-file /dev/stdin" in line and "s3cret" not in line
    assert containers.env_lines(spec().environment) == (
        b"HOME=/home/jupyter\nSECRET_TOKEN=s3cret value\n"
    )
    assert args[-4:] == ["jgc/debian-ipykernel:bookworm", "python3", "-m", "ipykernel_launcher"]


def test_what_podman_cannot_be_given_is_refused_in_a_sentence() -> None:
    with pytest.raises(ValueRefused, match="its value holds a line feed"):
        containers.env_lines({"A": "one\nB=two"})
    with pytest.raises(PathRefused, match=r"holds a ',' or '='"):
        containers.create_args(
            spec(mounts=[Mount("/tmp/a,b", "/w")]), network="none", userns="", ulimits={}
        )
    with pytest.raises(EngineRefused, match="nvidia-ctk cdi generate"):
        containers.create_args(
            spec(device_requests=[{"driver": "nvidia", "device_ids": ["GPU-a"]}]),
            network="none",
            userns="",
            ulimits={},
        )


def test_a_conmon_is_known_by_its_account_its_container_and_its_life() -> None:
    """What tells the engine a container still runs without asking Podman: a live process of
    this account whose command line names the container after ``-c``; not another container's,
    not one that ended (a zombie included), not a pid that is gone."""
    ours = "a" * 64
    alive = subprocess.Popen(["sh", "-c", "sleep 60", "-c", ours])
    other = subprocess.Popen(["sh", "-c", "sleep 60", "-c", "b" * 64])
    ended = subprocess.Popen(["sh", "-c", "exit 0", "-c", ours])
    try:
        assert containers.conmon_alive(alive.pid, ours)
        assert not containers.conmon_alive(other.pid, ours)
        deadline = time.monotonic() + 60
        while Path(f"/proc/{ended.pid}/stat").read_text().split(")")[-1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the shell did not end"
            time.sleep(0.05)
        assert not containers.conmon_alive(ended.pid, ours)  # ended, not waited for: a zombie
        ended.wait(30)
        assert not containers.conmon_alive(ended.pid, ours)
    finally:
        for process in (alive, other):
            process.kill()
            process.wait(30)
    assert not containers.conmon_alive(alive.pid, ours)


def test_images_keep_dockers_names_and_ids() -> None:
    assert images.docker_name("localhost/jgc/debian-ipykernel:bookworm") == (
        "jgc/debian-ipykernel:bookworm"
    )
    assert images.docker_name("docker.io/library/python:3.12") == "python:3.12"
    assert images.docker_name("docker.io/jupyter/scipy-notebook:x") == "jupyter/scipy-notebook:x"
    assert (
        images.docker_name("nvcr.io/nvidia/pytorch:24.05-py3") == "nvcr.io/nvidia/pytorch:24.05-py3"
    )
    assert images.docker_name("localhost:5000/a/b:1") == "localhost:5000/a/b:1"
    assert images.image_id("b1bd") == "sha256:b1bd" and images.image_id("sha256:b1") == "sha256:b1"


def test_ulimits_above_the_users_own_are_lowered_and_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Rootless Podman cannot raise a limit: a kernel spec's memlock=-1 (NGC's advice) would
    keep the container from starting."""
    monkeypatch.setattr(os, "geteuid", lambda: 1010)
    own = {resource.RLIMIT_MEMLOCK: (8192, 8192), resource.RLIMIT_STACK: (8388608, -1)}
    monkeypatch.setattr(resource, "getrlimit", lambda which: own[which])
    engine = PodmanEngine()
    asked = {"memlock": (-1, -1), "stack": (67108864, 67108864)}
    assert engine.allowed_ulimits(asked) == {"memlock": (8192, 8192), "stack": asked["stack"]}
    engine.allowed_ulimits(asked)
    said = [r.getMessage() for r in caplog.records if "memlock" in r.getMessage()]
    assert len(said) == 1 and "limits.conf" in said[0]


def test_podman_as_root_without_the_right_to_raise_limits_names_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Podman as root asks for 1048576 open files and as many processes by default; root
    without CAP_SYS_RESOURCE (in some containers and sandboxes, as here) cannot give them, and
    runc refused every container. Its own limits are named instead, processes bounded by the
    host's pid_max (what conmon passes on); root that may raise them asks for nothing."""
    from jupyter_gpu_containers.backends.podman import engine as podman_engine

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    own = {
        resource.RLIMIT_NOFILE: (1024, 20000),
        resource.RLIMIT_NPROC: (96365, 96365),
        resource.RLIMIT_STACK: (8388608, resource.RLIM_INFINITY),
    }
    monkeypatch.setattr(resource, "getrlimit", lambda which: own[which])
    monkeypatch.setattr(podman_engine, "_pid_max", lambda: 32768)
    monkeypatch.setattr(podman_engine, "_can_raise_limits", lambda: False)
    engine = PodmanEngine()
    assert engine.allowed_ulimits({}) == {"nofile": (20000, 20000), "nproc": (32768, 32768)}
    asked = {"nofile": (4096, 4096), "stack": (67108864, 67108864)}
    assert engine.allowed_ulimits(asked) == {"nproc": (32768, 32768), **asked}
    monkeypatch.setattr(podman_engine, "_can_raise_limits", lambda: True)
    assert engine.allowed_ulimits(asked) == asked
    assert engine.containers_shared and engine.images_shared  # one store for the host


# ------------------------------------------------------------------ a real account's Podman

needs_podman_user = pytest.mark.skipif(
    os.getuid() != 0 or not podman_user.PODMAN_USER,
    reason="needs root and JGC_TEST_PODMAN_USER (scripts/test.sh creates it)",
)


@pytest.fixture
def podman_home(docker_client: Any) -> Iterator[Path]:
    """A home for the Podman user's servers (configuration, data, a workspace), the test
    images in its storage, and its containers of this run removed afterwards."""
    entry = pwd.getpwnam(podman_user.PODMAN_USER)
    podman_user.load_images(
        docker_client, [DEBIAN_IMAGE, CONDA_IMAGE, NGC_IMAGE, NO_IPYKERNEL_IMAGE]
    )
    home = Path(tempfile.mkdtemp(prefix="jgc-podman-", dir="/tmp"))
    for sub in ("config", "data", "runtime", "workspace"):
        (home / sub).mkdir()
    for path in [home, *home.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    try:
        yield home
    finally:
        podman_user.remove_test_containers()
        shutil.rmtree(home, ignore_errors=True)


def podman_server(home: Path, config: dict[str, Any] | None = None) -> Server:
    write_server_config(home, {"ContainerEngine": {"backend": "podman"}, **(config or {})})
    return Server(
        home, home / "workspace", [], user=podman_user.PODMAN_USER, env=podman_user.user_env()
    )


# Run as the Podman user by test_the_engine_starts_in_one_command_and_answers_without_podman:
# the engine's own calls, each podman command it runs counted. Prints its findings as JSON.
ENGINE_CHECKS = """
import asyncio, json, signal, sys, threading, time
from jupyter_gpu_containers.backends.podman.engine import PodmanEngine
from jupyter_gpu_containers.base.errors import EngineRefused
from jupyter_gpu_containers.base.records import ContainerSpec

label, run, suffix, first, second, tag = sys.argv[1:7]
engine = PodmanEngine()
ran = []
real = engine._cli.run_both
def counted(args, **kwargs):
    ran.append(args[0])
    return real(args, **kwargs)
engine._cli.run_both = counted
found = {}

def spec(name, command, **more):
    return ContainerSpec(image=first, command=command, name=f"jgc-check-{name}-{suffix}",
        labels={label: run}, environment={}, network_mode="none", **more)

def refusal(s):
    try:
        asyncio.run(engine.create(s))
    except EngineRefused as e:
        return e.sentence
    return ""

async def lifecycle():
    ran.clear()
    cid = await engine.create(spec("sleeps", ["sleep", "300"]))
    await engine.start(cid, first)
    found["start_commands"] = list(ran)
    found["first_state"] = (await engine.state(cid)).status
    ran.clear()
    states = [(await engine.state(cid)).status for _ in range(5)]
    found["later_states"], found["later_commands"] = states, list(ran)
    await engine.kill(cid, signal.SIGKILL)
    for _ in range(600):
        state = await engine.state(cid)
        if state is not None and state.ended:
            break
        await asyncio.sleep(0.05)
    found["killed"] = [state.status, state.exit_code] if state else None
    await engine.remove(cid)
    found["removed"] = await engine.state(cid)

# Without an init process, the OCI runtime itself finds no such command: a refused start.
found["start_refused"] = refusal(spec("refused", ["/no/such/command"], init=False))
found["no_runtime"] = refusal(spec("runtime", ["true"], runtime="nvidia"))
asyncio.run(lifecycle())

def inspections(ref, times):
    ran.clear()
    ids = [engine.inspect_image_sync(ref).id for _ in range(times)]
    return ids, ran.count("image")

found["unwatched"] = inspections(first, 2)
stop, watching = threading.Event(), threading.Event()
watcher = threading.Thread(target=engine.watch_images, args=(watching.set, stop), daemon=True)
watcher.start()
watching.wait(60)
engine._cli.run(["tag", first, tag])
found["tagged"] = inspections(tag, 1)  # the tag's own event may come after this: read again
for _ in range(600):
    ids, count = inspections(tag, 2)
    if count == 0:
        break
    time.sleep(0.05)
found["kept"] = (ids, count)
found["tries"] = 0
# A container made from it (Podman tells a "pull" of the image): the watcher inspects it again
# by itself and keeps it, unchanged. Other accounts' tests' events may empty what is kept
# meanwhile (only a pull of a kept reference is looked into): then another try.
images = engine._images
def keep(ref):
    for _ in range(600):
        if inspections(ref, 2)[1] == 0:
            return
        time.sleep(0.05)
for _ in range(20):
    keep(tag)
    generation, made_at = images._generation, time.monotonic()
    engine._cli.run(["run", "--rm", "--pull", "never", "--network", "none",
        "--label", f"{label}={run}", tag, "true"])
    for _ in range(100):
        kept = images._by_ref.get(tag)
        if images._generation > generation and kept and kept[0] > made_at:
            break
        time.sleep(0.05)
    found["tries"] += 1
    if kept and kept[0] > made_at:
        break
found["kept_after_pull"] = bool(kept and kept[0] > made_at)
engine._cli.run(["tag", second, tag])
for _ in range(600):
    ids, count = inspections(tag, 1)
    if ids[0] != found["kept"][0][0]:
        break
    time.sleep(0.05)
found["moved"] = (ids, count)
engine.untag_sync(tag)
stop.set()
engine.wake_watchers()
watcher.join(30)
print(json.dumps(found))
"""


@needs_podman_user
def test_the_engine_starts_in_one_command_and_answers_without_podman(
    podman_home: Path, docker_client: Any
) -> None:
    """A kernel's container is created and started by one podman command (a start Podman
    refuses leaves nothing, in start's sentence; a runtime Podman lacks is said with the CDI
    way); a running container's state is known from its conmon without a podman command, and
    its end is seen; an image's inspection is kept while Podman's image events are watched,
    kept through the "pull" Podman tells of each container made from it, and a tag moved is
    seen."""
    from conftest import TEST_LABEL, TEST_RUN

    # Names of this run's own (a run id's alphabet is not assumed).
    suffix = re.sub(r"[^a-z0-9]", "", TEST_RUN.lower())[-12:] or "run"
    tag = f"jgc-check/retag-{suffix}:x"
    images = (NO_IPYKERNEL_IMAGE, NGC_IMAGE)
    names = (TEST_LABEL, TEST_RUN, suffix)
    try:
        done = podman_user.run_as(
            [sys.executable, "-c", ENGINE_CHECKS, *names, *images, tag], timeout=300
        )
    finally:
        podman_user.podman("rmi", tag, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    # One command to create and start; before it, unwatched as here, the image's labels are
    # asked for (labels.container_labels: its keys of the project's namespace are set by the
    # service, issue 61). A server watches its images: their kept inspection costs no command.
    assert found["start_commands"] == ["image", "run"]
    refused = found["start_refused"]
    assert "Podman refused to start the kernel container" in refused, refused
    assert "/no/such/command" in refused, refused
    assert "no OCI runtime named nvidia" in found["no_runtime"], found["no_runtime"]
    assert "nvidia-ctk cdi generate" in found["no_runtime"]
    leftover = podman_user.podman(
        "ps", "--all", "--quiet", "--filter", f"label={TEST_LABEL}={TEST_RUN}"
    ).stdout.split()
    assert leftover == []
    assert found["first_state"] == "running"
    assert found["later_states"] == ["running"] * 5 and found["later_commands"] == []
    assert found["killed"] == ["exited", 137]
    assert found["removed"] is None
    first_id = docker_client.images.get(NO_IPYKERNEL_IMAGE).id
    second_id = docker_client.images.get(NGC_IMAGE).id
    # Unwatched, every inspection asks Podman; watched, a kept answer needs no command.
    assert found["unwatched"] == [[first_id, first_id], 2]
    assert found["tagged"][0] == [first_id]
    assert found["kept"] == [[first_id, first_id], 0]
    assert found["kept_after_pull"], found
    assert found["moved"][0] == [second_id]


@needs_podman_user
def test_the_account_is_rootless_on_overlay_and_outside_the_docker_group() -> None:
    """What the other tests rely on, said plainly when the set-up is wrong."""
    groups = subprocess.run(
        ["id", "-nG", podman_user.PODMAN_USER], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "docker" not in groups
    assert podman_user.storage_driver() == "overlay"
    rootless = podman_user.podman("info", "--format", "{{.Host.Security.Rootless}}").stdout
    assert rootless.strip() == "true"


@needs_podman_user
async def test_hidden_style_images_run_kernels_as_the_user_and_the_probe_says_why_not(
    podman_home: Path,
) -> None:
    """Python only in /opt/conda with a non-root USER, an NGC-like entrypoint: kernels start,
    as the user; an image without ipykernel is not offered, and the catalog says why."""
    entry = pwd.getpwnam(podman_user.PODMAN_USER)
    server = podman_server(podman_home)
    try:
        names = {kernel_name(CONDA_IMAGE), kernel_name(NGC_IMAGE)}

        async def offered() -> bool:
            specs = (await server.call("GET", "api", "kernelspecs"))["kernelspecs"]
            return names <= set(specs)

        await wait_until(offered, 120, f"kernel specs {sorted(names)}")
        workspace = podman_home / "workspace"
        write_notebook(workspace, "cpu.ipynb", gpus=0)  # NGC-like images ask for a GPU
        os.chown(workspace / "cpu.ipynb", entry.pw_uid, entry.pw_gid)
        for image, path in ((CONDA_IMAGE, "conda.ipynb"), (NGC_IMAGE, "cpu.ipynb")):
            session = await server.open_notebook(path, kernel_name(image))
            result = await server.execute(
                session["kernel"]["id"],
                "import os, sys\nprint(os.getuid(), sys.executable)\n"
                f"open({image.split('/')[-1].split(':')[0]!r} + '.txt', 'w').write('x')",
            )
            uid, python = result.stdout.split()
            assert int(uid) == entry.pw_uid, (image, result)
            if image == CONDA_IMAGE:
                assert python.startswith("/opt/conda/")
        owners = {p.name: p.stat().st_uid for p in workspace.iterdir()}
        assert owners["conda-nonroot.txt"] == entry.pw_uid
        assert owners["ngc-like.txt"] == entry.pw_uid

        async def refused() -> dict[str, Any] | None:
            found = await server.call("GET", "gpu-containers", "images")
            for image in found["images"]:
                if image["reference"] == NO_IPYKERNEL_IMAGE and image["kernel_ready"] is False:
                    return dict(image)
            return None

        verdict = await wait_until(refused, 120, f"the probe's verdict on {NO_IPYKERNEL_IMAGE}")
        assert "ipykernel" in verdict["kernel_ready_reason"]

        # Offered until its probe answered (the server started without waiting for probes);
        # the kernel specs are listed again on a thread of their own once it did.
        async def withdrawn() -> bool:
            specs = (await server.call("GET", "api", "kernelspecs"))["kernelspecs"]
            return kernel_name(NO_IPYKERNEL_IMAGE) not in specs

        await wait_until(withdrawn, 60, f"{NO_IPYKERNEL_IMAGE}'s kernel spec withdrawn")
    finally:
        server.stop()


@needs_podman_user
async def test_the_kernels_view_follows_its_log_and_another_account_reaches_nothing(
    podman_home: Path,
) -> None:
    """The kernel's own view (container, image id, log) comes from the user's Podman. Another
    account (outside the docker group too) sees none of it: its own Podman lists none of the
    user's containers, the kernel's private directory is closed to it, and it cannot signal
    the kernel's processes."""
    other = os.environ.get("JGC_TEST_OUTSIDER", "")
    if not other:
        pytest.fail("JGC_TEST_OUTSIDER names no account (scripts/test.sh creates one)")
    server = podman_server(podman_home)
    try:
        kernel = await server.call(
            "POST", "api", "kernels", body={"name": kernel_name(DEBIAN_IMAGE)}
        )
        kernel_id = kernel["id"]
        result = await server.execute(
            kernel_id,
            "import os, sys\nprint('to the log', file=sys.__stderr__, flush=True)\n"
            "print(os.getpid())",
        )
        assert result.status == "ok", result
        view = await server.call("GET", "gpu-containers", "kernels", kernel_id)
        assert view["container"]["status"] == "running"
        assert view["image"]["id"].startswith("sha256:")
        (container,) = podman_user.kernel_containers(kernel_id)
        assert view["container"]["id"] == container["Id"]

        async def logged() -> bool:
            response = await server.fetch(
                "GET", "gpu-containers", "kernels", kernel_id, "log?follow=0", raise_error=False
            )
            return response.code == 200 and b"to the log" in response.body

        await wait_until(logged, 60, "the kernel's line in its log")

        # Another account: its own Podman, which knows nothing of the user's containers.
        podman_user.runtime_dir(other)
        listed = podman_user.podman("ps", "--all", "--format", "{{.ID}}", user=other, check=False)
        assert container["Id"][:12] not in listed.stdout
        private = [
            Path(m["Source"])
            for m in (await podman_inspect(container["Id"]))["Mounts"]
            if m["Destination"] == "/run/jupyter-kernel"
        ]
        assert private, "the kernel's private directory is mounted"
        probe = subprocess.run(
            ["setpriv", f"--reuid={other}", f"--regid={other}", "--init-groups", "ls", private[0]],
            capture_output=True,
            text=True,
            check=False,
        )
        assert probe.returncode != 0 and "Permission denied" in probe.stderr
        kernel_pid = int(
            podman_user.podman("inspect", "--format", "{{.State.Pid}}", container["Id"]).stdout
        )
        signal_it = subprocess.run(
            [
                "setpriv",
                f"--reuid={other}",
                f"--regid={other}",
                "--init-groups",
                "kill",
                f"-{int(signal.SIGINT)}",
                str(kernel_pid),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert signal_it.returncode != 0
        assert (await server.execute(kernel_id, "print('still here')")).stdout.strip() == (
            "still here"
        )
        await server.fetch("DELETE", "api", "kernels", kernel_id)
        assert podman_user.kernel_containers(kernel_id) == []
    finally:
        server.stop()


async def podman_inspect(container_id: str) -> dict[str, Any]:
    import json

    out = await asyncio.to_thread(podman_user.podman, "container", "inspect", container_id)
    found: list[dict[str, Any]] = json.loads(out.stdout)
    return found[0]


@needs_podman_user
async def test_a_pull_into_the_users_storage_uses_the_login_it_is_given_and_no_other(
    podman_home: Path, private_registry: PrivateRegistry, docker_client: Any
) -> None:
    """A private image pulled through the server: without a login the registry's refusal is
    said with what to do, with the user's login it is pulled, with progress and its digest, into
    the user's own storage, and offered as a kernel; no password is left on disk."""
    ref = private_registry.push_test_image("jgc/podman-pullable:1")
    private_registry.remove_local(ref)
    server = podman_server(
        podman_home,
        {
            "PodmanEngine": {"insecure_registries": [private_registry.host]},
            "PullManager": {"progress_interval": 0.0},
        },
    )
    try:

        async def pull_until_ended() -> dict[str, Any]:
            pull = await server.call("POST", "gpu-containers", "pulls", body={"image": ref})

            async def ended() -> dict[str, Any] | None:
                found = await server.call("GET", "gpu-containers", "pulls", pull["id"])
                return dict(found) if found["state"] in ("done", "error", "cancelled") else None

            return await wait_until(ended, 180, f"the pull of {ref}")

        refused = await pull_until_ended()
        assert refused["state"] == "error", refused
        assert "Authorization failed" in refused["message"], refused
        await server.call(
            "PUT",
            "gpu-containers",
            "registries",
            private_registry.host,
            "credentials",
            body={"username": private_registry.username, "password": private_registry.password},
        )
        done = await pull_until_ended()
        assert done["state"] == "done", done
        assert done["digest"].startswith("sha256:")
        assert len(done["layers"]) >= 3 and done["phase"] == "complete"
        found = podman_user.podman("image", "inspect", "--format", "{{.Id}}", ref, check=False)
        assert found.returncode == 0

        async def offered() -> bool:
            specs = (await server.call("GET", "api", "kernelspecs"))["kernelspecs"]
            return kernel_name(ref) in specs

        await wait_until(offered, 120, f"a kernel spec for {ref}")
        runtime = podman_user.runtime_dir()
        leftovers = [p.name for p in runtime.iterdir() if p.name.startswith("jgc-pull-auth-")]
        assert leftovers == []
    finally:
        server.stop()
        podman_user.remove_image(ref)


@needs_podman_user
async def test_a_silent_podman_pull_is_not_called_stalled_and_its_cancel_ends_it(
    podman_home: Path,
) -> None:
    """podman says nothing while a layer downloads (a large one: minutes), so
    PullManager.stall_timeout does not apply to its pulls (pulls_report_bytes False): a pull
    from a registry that never sends its manifest is still under way long past it, and its
    user's cancel ends it at once (the podman process ended)."""
    stalling = StallingRegistry()
    server = podman_server(
        podman_home,
        {
            "PodmanEngine": {"insecure_registries": [stalling.host]},
            "PullManager": {"stall_timeout": 1.0},
        },
    )
    try:
        pull = await server.call(
            "POST", "gpu-containers", "pulls", body={"image": stalling.ref("silent")}
        )

        async def state() -> str:
            return str((await server.call("GET", "gpu-containers", "pulls", pull["id"]))["state"])

        async def pulling() -> bool:
            return await state() == "pulling"

        await wait_until(pulling, 60, "the pull to start")
        await asyncio.sleep(4)  # four times its stall_timeout: not stopped for silence
        assert await state() == "pulling"
        cancelled = await server.call("DELETE", "gpu-containers", "pulls", pull["id"])
        assert cancelled["state"] == "cancelled", cancelled
    finally:
        server.stop()
        stalling.close()


@needs_podman_user
def test_doctor_says_what_rootless_podman_lacks_and_how_to_fix_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`jupyter gpu-containers doctor`: on the set-up account, nothing blocks; an account whose
    storage came up on vfs is told the fix; a missing subordinate range blocks, with the
    administrator's command; a user outside the docker group is pointed to Podman."""

    def doctor(user: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = str(Path(sys.executable).parent / "jupyter-gpu-containers")
        return podman_user.run_as([command, "doctor", *args], user=user)

    ready = doctor(podman_user.PODMAN_USER, "--ContainerEngine.backend=podman")
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert "Podman's storage driver: overlay." in ready.stdout
    assert "[blocking]" not in ready.stdout

    outsider = os.environ.get("JGC_TEST_OUTSIDER", "")
    if not outsider:
        pytest.fail("JGC_TEST_OUTSIDER names no account (scripts/test.sh creates one)")
    on_docker = doctor(outsider)
    assert on_docker.returncode == 1
    assert "docker` group" in on_docker.stdout
    assert "ContainerEngine.backend = 'podman'" in on_docker.stdout

    # The outsider's own Podman storage, never configured: vfs, and the fix said.
    on_vfs = doctor(outsider, "--ContainerEngine.backend=podman")
    if "storage driver: overlay" not in on_vfs.stdout:
        assert "storage is on vfs" in on_vfs.stdout and "storage.conf" in on_vfs.stdout

    # No subordinate range: it blocks, with the command that fixes it (the checks as the user
    # would see them; podman itself answers as this test's user).
    from jupyter_gpu_containers.backends.podman import doctor as checks
    from jupyter_gpu_containers.backends.podman.cli import PodmanCLI

    empty = tmp_path / "subuid"
    empty.write_text("someone-else:100000:65536\n")
    entry = pwd.getpwnam(podman_user.PODMAN_USER)
    monkeypatch.setattr(os, "geteuid", lambda: entry.pw_uid)
    monkeypatch.setattr(checks.getpass, "getuser", lambda: entry.pw_name)
    settings = PodmanEngine(podman_command=["podman"])
    findings = checks.diagnose(
        PodmanCLI(settings), network="none", tun_usable=True, id_ranges=(str(empty), str(empty))
    )
    blocking = [f.sentence for f in findings if f.blocking]
    assert blocking and "usermod --add-subuids" in blocking[0]


@pytest.fixture
def fake_cdi_gpus() -> Iterator[dict[str, Path]]:
    """NVIDIA's CDI kind naming the suite's static GPUs (GPU-test-<i>), each a device node the
    test makes (a harmless one: the null device's numbers) in a directory of its own; the spec
    in /etc/cdi (Podman 4.3 reads no other place), named so that the attach mode's "auto" does
    not take it for NVIDIA's own, and removed afterwards. GPU uuid -> its device node."""
    from conftest import STATIC_GPUS, TEST_RUN

    directory = Path(tempfile.mkdtemp(prefix="jgc-cdi-devices-", dir="/tmp"))
    directory.chmod(0o755)
    nodes: dict[str, Path] = {}
    for gpu in STATIC_GPUS:
        node = directory / f"gpu{gpu['index']}"
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        node.chmod(0o666)
        nodes[str(gpu["uuid"])] = node
    devices = "".join(
        f'  - name: "{uuid}"\n    containerEdits:\n      deviceNodes:\n        - path: {node}\n'
        for uuid, node in nodes.items()
    )
    spec = Path("/etc/cdi") / f"jgc-test-{TEST_RUN}.yaml"
    spec.parent.mkdir(mode=0o755, exist_ok=True)
    spec.write_text(f'cdiVersion: "0.5.0"\nkind: "nvidia.com/gpu"\ndevices:\n{devices}')
    try:
        yield nodes
    finally:
        spec.unlink(missing_ok=True)
        shutil.rmtree(directory, ignore_errors=True)


@needs_podman_user
async def test_gpus_reach_podman_kernels_as_cdi_devices_booked_among_the_users_kernels(
    podman_home: Path, fake_cdi_gpus: dict[str, Path]
) -> None:
    """Each GPU kernel's container sees exactly the device nodes of the GPUs booked for it,
    and no other; a second kernel of the user gets another GPU (the ledger of the user's own
    kernels), and the server says the booking covers the user's kernels only."""
    from conftest import STATIC_GPUS

    entry = pwd.getpwnam(podman_user.PODMAN_USER)
    server = podman_server(
        podman_home,
        {"GPUInventory": {"static_gpus": STATIC_GPUS}, "GPUAllocator": {"attach_mode": "cdi"}},
    )
    try:
        assert "GPUs are booked among your own kernels only" in server.output()
        # The panel says so too (its GPUs' part reads the report's ledger_scope).
        assert (await server.call("GET", "gpu-containers", "gpus"))["ledger_scope"] == "user"
        workspace = podman_home / "workspace"
        seen: dict[str, str] = {}
        for path in ("one.ipynb", "two.ipynb"):
            write_notebook(workspace, path, gpus=1)
            os.chown(workspace / path, entry.pw_uid, entry.pw_gid)
            session = await server.open_notebook(path, kernel_name(NGC_IMAGE))
            kernel_id = session["kernel"]["id"]
            view = await server.call("GET", "gpu-containers", "kernels", kernel_id)
            (booked,) = [g["uuid"] for g in view["gpus"]]
            listed = ", ".join(repr(str(n)) for n in fake_cdi_gpus.values())
            result = await server.execute(
                kernel_id, f"import os\nprint([p for p in ({listed},) if os.path.exists(p)])"
            )
            assert result.stdout.strip() == repr([str(fake_cdi_gpus[booked])]), result
            seen[path] = booked
        assert seen["one.ipynb"] != seen["two.ipynb"]
    finally:
        server.stop()


# ------------------------------------------------------------- a kernel service on Podman as root

SERVICE_USER_A = os.environ.get("JGC_TEST_STUDENT_A", "")
SERVICE_USER_B = os.environ.get("JGC_TEST_STUDENT_B", "")
needs_root_podman_and_students = pytest.mark.skipif(
    os.getuid() != 0 or not shutil.which("podman") or not (SERVICE_USER_A and SERVICE_USER_B),
    reason="needs root, podman and JGC_TEST_STUDENT_A/B (scripts/test.sh makes them)",
)


@needs_root_podman_and_students
async def test_a_kernel_service_on_podman_as_root_runs_each_users_kernels_as_them_on_one_ledger(
    docker_client: Any, fake_cdi_gpus: dict[str, Path]
) -> None:
    """ServiceApp.backend "podman": the service as root, kernels in root's Podman. Each user's
    kernel runs as that user in their workspace (their files are theirs), sees exactly the GPU
    booked for it, and the two users' kernels get different GPUs: one ledger for the host, as
    on Docker. Neither user reaches the other's kernel; a shutdown leaves no container."""
    from service_process import KernelService

    podman_user.load_images(docker_client, [NGC_IMAGE], user=podman_user.ROOT)
    service = KernelService(
        {"ServiceApp": {"backend": "podman"}, "GPUAllocator": {"attach_mode": "cdi"}}
    )
    try:
        a, b = service.add_user(SERVICE_USER_A), service.add_user(SERVICE_USER_B)
        service.start()
        listed = ", ".join(repr(str(n)) for n in fake_cdi_gpus.values())
        code = (
            "import os\n"
            "open('mine.txt', 'w').write('x')\n"
            f"print(os.getuid(), [p for p in ({listed},) if os.path.exists(p)])"
        )
        seen = {}
        for user in (a, b):
            kernel_id = await service.start_kernel(user, kernel_name(NGC_IMAGE))
            ws = await service.websocket(user, kernel_id)
            try:
                result = await execute(ws, code)
            finally:
                ws.close()
            entry = pwd.getpwnam(user.name)
            uid, devices = result.stdout.strip().split(" ", 1)
            assert int(uid) == entry.pw_uid, result
            written = user.workspace / "mine.txt"
            assert (written.stat().st_uid, written.stat().st_gid) == (entry.pw_uid, entry.pw_gid)
            code_gpus, view = await service.answer(
                user, "GET", f"gpu-containers/kernels/{kernel_id}"
            )
            assert code_gpus == 200, view
            (booked,) = [g["uuid"] for g in view["gpus"]]
            assert devices == repr([str(fake_cdi_gpus[booked])]), result
            seen[user.name] = (kernel_id, booked)
        assert seen[a.name][1] != seen[b.name][1]
        answered, report = await service.answer(a, "GET", "gpu-containers/gpus")
        assert answered == 200 and report["ledger_scope"] == "host", report
        for user, other in ((a, b), (b, a)):
            theirs = seen[other.name][0]
            assert (await service.answer(user, "GET", f"api/kernels/{theirs}"))[0] == 404
        for user in (a, b):
            kernel_id = seen[user.name][0]
            assert (await service.answer(user, "DELETE", f"api/kernels/{kernel_id}"))[0] == 204
        assert podman_user.run_containers(podman_user.ROOT) == []
    finally:
        service.close()
        podman_user.remove_test_containers(podman_user.ROOT)


@needs_podman_user
def test_a_kernel_service_on_rootless_podman_is_refused_in_a_sentence() -> None:
    """Rootless Podman runs a container's other uids as subordinate ids of its user: a service
    there could not run users' kernels as them. It does not start, and says why."""
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **podman_user.user_env()}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    user = podman_user.PODMAN_USER
    entry = pwd.getpwnam(user)
    jupyter = str(Path(sys.executable).parent / "jupyter")
    as_user = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
    serve = [jupyter, "gpu-containers", "serve", "--ServiceApp.backend=podman", "--port=0"]
    # Its own runtime directory, should it start after all (then on a port of its own, and
    # ended by the timeout): nothing of it in a shared place.
    with tempfile.TemporaryDirectory(prefix="jgc-podman-service-") as runtime:
        os.chown(runtime, entry.pw_uid, entry.pw_gid)
        done = subprocess.run(
            [*as_user, *serve],
            env={**env, "JUPYTER_CONFIG_DIR": runtime, "JUPYTER_RUNTIME_DIR": runtime},
            cwd="/",
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert "rootless Podman (as " in said and "Run the service as root" in said, said


@needs_podman_user
class TestConformanceOnRootlessPodman(
    test_conformance.PatientOutputs,
    test_conformance.PythonKernelSamples,
    jupyter_kernel_test.KernelTests,
):
    """jupyter_kernel_test's conformance suite (test_conformance.py) against a kernel on a
    user's rootless Podman: started by that user's own Jupyter server (``POST /api/kernels``),
    reached over its websocket by jupyter_server's stock gateway client, as a JupyterLab page
    or a server with ``--gateway-url`` would."""

    server: ClassVar[Server]
    home: ClassVar[Path]
    kernel_id: ClassVar[str] = ""

    @classmethod
    def setUpClass(cls) -> None:
        import docker

        entry = pwd.getpwnam(podman_user.PODMAN_USER)
        client = docker.from_env()
        try:
            podman_user.load_images(client, [DEBIAN_IMAGE])
        finally:
            client.close()
        cls.home = Path(tempfile.mkdtemp(prefix="jgc-podman-conformance-", dir="/tmp"))
        for sub in ("config", "data", "runtime", "workspace"):
            (cls.home / sub).mkdir()
        for path in [cls.home, *cls.home.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)
        try:
            cls.server = podman_server(cls.home)
            kernel = asyncio.run(
                cls.server.call("POST", "api", "kernels", body={"name": kernel_name(DEBIAN_IMAGE)})
            )
            cls.kernel_id = kernel["id"]
            server = cls.server
            kc = test_conformance.ServiceKernelClient(cls.kernel_id, server.url, server.token)
            cls.kc = kc  # type: ignore[assignment]
            kc.start_channels_blocking()
            run_sync(kc.wait_for_ready)(timeout=test_conformance.START_TIMEOUT)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            kc = getattr(cls, "kc", None)
            if kc is not None and kc.response_router is not None:
                with contextlib.suppress(Exception):
                    kc.stop_channels()
            if cls.kernel_id:
                asyncio.run(cls.server.fetch("DELETE", "api", "kernels", cls.kernel_id))
        finally:
            server = getattr(cls, "server", None)
            if server is not None:
                server.stop()
            podman_user.remove_test_containers()
            shutil.rmtree(cls.home, ignore_errors=True)


@needs_podman_user
async def test_a_kernels_environment_is_saved_into_the_users_own_storage(
    podman_home: Path,
) -> None:
    """Issue 31, item 3, on rootless Podman: a kernel's environment saved as an image is built
    by the user's own Podman into their storage (nobody else's to hide it from), and a kernel on
    it imports the packages from the image."""
    entry = pwd.getpwnam(podman_user.PODMAN_USER)
    wheel = tiny_wheel(podman_home / "workspace")
    os.chown(wheel, entry.pw_uid, entry.pw_gid)
    server = podman_server(podman_home)
    saved = ""
    try:
        # The NGC-like image (its pip installs as NGC's does), without its default GPU.
        notebook = write_notebook(podman_home / "workspace", "lab.ipynb", gpus=0)
        os.chown(notebook, entry.pw_uid, entry.pw_gid)
        started_kernel = await server.call(
            "POST",
            "gpu-containers",
            "notebooks",
            "kernel",
            body={"path": "lab.ipynb", "kernel_name": kernel_name(NGC_IMAGE), "gpus": 0},
        )
        kernel = started_kernel["session"]["kernel"]
        ws = await websocket_connect(
            HTTPRequest(
                f"ws://127.0.0.1:{server.port}/api/kernels/{kernel['id']}/channels",
                headers={"Authorization": f"token {server.token}"},
            )
        )
        try:
            result = await execute(
                ws,
                f"%pip install --no-index --disable-pip-version-check /workspace/{wheel.name}",
                timeout=120,
            )
        finally:
            ws.close()
        assert "Successfully installed" in result.stdout, result

        async def ended_save(save_id: str) -> dict[str, Any]:
            async def ended() -> dict[str, Any] | None:
                found = await server.call("GET", "gpu-containers", "saves", save_id)
                return dict(found) if found["state"] in ("done", "error", "cancelled") else None

            return dict(await wait_until(ended, 300, "the save's end"))

        # A file in the packages folder that is not the user's: the save says so (Podman reads
        # the cut-short context its own way; the refusal is what the user is told).
        planted = next((podman_home / "workspace").glob(".jupyter-gpu-containers/packages/*/lib"))
        (planted / "planted.py").write_text("x = 1\n")  # root's
        refused = await server.call(
            "POST", "gpu-containers", "kernels", kernel["id"], "save", body={"name": "tiny"}
        )
        done = await ended_save(refused["id"])
        assert done["state"] == "error" and "planted.py is not yours" in done["message"], done
        (planted / "planted.py").unlink()

        started = await server.call(
            "POST", "gpu-containers", "kernels", kernel["id"], "save", body={"name": "tiny"}
        )
        saved = started["image"]
        assert saved.startswith(f"localhost/jupyter-gpu-containers/saved/u{entry.pw_uid}/tiny:")

        done = await ended_save(started["id"])
        assert done["state"] == "done", done
        listed = podman_user.podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
        assert saved in listed.split()
        # Podman's own names lose "localhost/" here (images.py): the kernel spec's reference.
        offered = saved.removeprefix("localhost/")

        async def spec() -> str | None:
            specs = (await server.call("GET", "api", "kernelspecs"))["kernelspecs"]
            return kernel_name(offered) if kernel_name(offered) in specs else None

        name = await wait_until(spec, 60, "the saved image's kernel spec")
        notebook = write_notebook(podman_home / "workspace", "saved.ipynb", gpus=0)
        os.chown(notebook, entry.pw_uid, entry.pw_gid)
        other = (
            await server.call(
                "POST",
                "gpu-containers",
                "notebooks",
                "kernel",
                body={"path": "saved.ipynb", "kernel_name": name, "gpus": 0},
            )
        )["session"]["kernel"]
        found = await server.execute(other["id"], "import jgc_tiny; print(jgc_tiny.__file__)")
        assert found.stdout.startswith(f"{SAVED_PACKAGES_DIR}/lib/python3"), found
    finally:
        server.stop()
        if saved:
            podman_user.remove_image(saved)


# ------------------------------------------------------------------ the builder's steps (issue 61)

# Run as the Podman user (rootless) and as root (a kernel service's Podman) by
# test_build_steps_are_confined_and_commit_exactly_the_config_given: PodmanEngine.build_steps()
# driven as images/builder.py drives it, against the account's own Podman. Prints its findings.
BUILD_STEP_CHECKS = r"""
import io, json, subprocess, sys, tarfile, threading
from jupyter_gpu_containers.backends.backend import ImageConfig, StepLimits
from jupyter_gpu_containers.backends.podman.engine import PodmanEngine
from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.base.errors import ContainerKernelError

test_label, test_image_label, run, base_ref = sys.argv[1:5]
engine = PodmanEngine()
steps = engine.build_steps()
marks = {test_label: run, L.BUILD: f"check-{run}"}
found = {}

def podman(*args, stdin=None):
    return subprocess.run(["podman", *args], input=stdin, capture_output=True, check=True).stdout

def step(container, argv, user="", workdir="/", env=("PATH=/usr/bin:/bin",), cancelled=None):
    lines = []
    code = steps.exec_step(container, list(argv), user=user, workdir=workdir, env=list(env),
        on_line=lines.append, cancelled=cancelled or threading.Event())
    return code, lines

def refusal(fn):
    try:
        fn()
    except ContainerKernelError as e:
        return e.sentence
    return ""

# A hostile base: the project's record labels, a label and variables of its own.
maker = podman("create", "--label", f"{test_label}={run}", base_ref, "true").decode().strip()
hostile = podman("commit", "--quiet", "--change", f"LABEL {test_image_label}={run}",
    "--change", "LABEL org.jupyter.gpu-containers.gpus=GPU-stolen",
    "--change", "LABEL org.jupyter.gpu-containers.managed=true",
    "--change", "ENV HOSTILE=1", "--change", "ONBUILD RUN echo triggered", maker).decode().strip()
podman("rm", maker)
found["base_labels"] = steps.image_config(hostile).labels

stage = steps.create_stage(hostile, labels=marks,
    limits=StepLimits(memory=256 << 20, cpus=1, pids=77))
found["stage_labels"] = json.loads(podman("container", "inspect", stage))[0]["Config"]["Labels"]
code, lines = step(stage, ["/bin/sh", "-c", "grep -E '^(CapEff|NoNewPrivs):' /proc/self/status; "
    "cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max 2>/dev/null; "
    "grep 'Max processes' /proc/self/limits; id -u; env | sort"],
    env=("PATH=/usr/bin:/bin", "SECRET=a b  c"))
found["status"] = [code, lines]
code, lines = step(stage, ["python3", "-c", "import subprocess\nstarted = []\ntry:\n"
    "    for _ in range(200): started.append(subprocess.Popen(['sleep', '60']))\n"
    "except OSError: pass\nprint(len(started))\nfor p in started: p.kill()"])
found["processes"] = [code, lines]
found["as_user"] = step(stage, ["id", "-u"], user="1000", workdir="/tmp")
# A step's words are the command's, never podman's options.
found["flag_argv"] = step(stage, ["--user=0", "id"], user="1000")

out = io.BytesIO()
with tarfile.open(fileobj=out, mode="w") as tar:
    for name, data in (("opt/jgc/f.txt", b"hello"), ("opt/jgc/sub/g.txt", b"world")):
        info = tarfile.TarInfo(name)
        info.size, info.uid, info.gid, info.mode = len(data), 1234, 4321, 0o640
        tar.addfile(info, io.BytesIO(data))
steps.put_archive(stage, "/", out.getvalue())
found["put"] = step(stage, ["stat", "-c", "%u %g %a", "/opt/jgc/f.txt"])
back = {}
with tarfile.open(fileobj=steps.get_archive(stage, "/opt/jgc"), mode="r|") as tar:
    for m in tar:
        back[m.name] = tar.extractfile(m).read().decode() if m.isfile() else "dir"
found["got"] = back
found["missing"] = refusal(lambda: steps.get_archive(stage, "/no/such/path").read())
# A COPY --from an image reads a container of it that never starts.
source = steps.create_source(hostile, labels=marks)
with tarfile.open(fileobj=steps.get_archive(source, "/etc/debian_version"), mode="r|") as tar:
    found["from_source"] = [(m.name, bool(tar.extractfile(m).read().strip())) for m in tar]
found["source_state"] = json.loads(podman("container", "inspect", source))[0]["State"]["Status"]
steps.remove_container(source)
step(stage, ["dd", "if=/dev/zero", "of=/opt/jgc/big", "bs=1M", "count=3"])
found["layer_size"] = steps.layer_size(stage)

# A cancel ends the step where it is (told once it printed: no timing).
cancel = threading.Event()
said = []
def told(line):
    said.append(line)
    if line == "started":
        cancel.set()
code = steps.exec_step(stage, ["/bin/sh", "-c", "echo started; sleep 600"], user="",
    workdir="/", env=["PATH=/usr/bin:/bin"], on_line=told, cancelled=cancel)
found["cancelled"] = [code, said]

# A new stage for the commit (the cancel ended the first).
stage2 = steps.create_stage(hostile, labels=marks, limits=StepLimits())
steps.put_archive(stage2, "/", out.getvalue())
config = ImageConfig(env=("PATH=/usr/bin:/bin", "A=1"), cmd=("python3", "-V"), entrypoint=None,
    workdir="/opt/jgc", user="1000", labels={"ignored": "x"}, exposed_ports=("8888/tcp",),
    volumes=(), stop_signal="SIGINT")
given = {"org.example.mine": "yes", test_image_label: run}
image = steps.commit(stage2, config, given)
found["image"] = image
data = json.loads(podman("image", "inspect", image))[0]
found["config"] = data["Config"]
found["names"] = data.get("RepoTags") or []
stage3 = steps.create_stage(image, labels=marks, limits=StepLimits())
found["in_image"] = step(stage3, ["cat", "/opt/jgc/sub/g.txt"], user="1234")
found["network_none"] = json.loads(podman("container", "inspect", stage3))[0]["HostConfig"][
    "NetworkMode"]
try:
    stage4 = steps.create_stage(image, labels=marks, limits=StepLimits(network=True))
except ContainerKernelError as e:
    found["network_build"] = ["refused", e.sentence]
else:
    inspected = json.loads(podman("container", "inspect", stage4))[0]
    found["network_build"] = ["network", inspected["HostConfig"]["NetworkMode"]]
    steps.remove_container(stage4)

# An image without /bin/sh cannot hold a stage.
empty = io.BytesIO()
with tarfile.open(fileobj=empty, mode="w") as tar:
    info = tarfile.TarInfo("hello.txt")
    tar.addfile(info, io.BytesIO(b""))
bare = podman("import", "--quiet", "--change", f"LABEL {test_image_label}={run}", "-",
    stdin=empty.getvalue()).decode().strip()
found["no_shell"] = refusal(lambda: steps.create_stage(bare, labels=marks, limits=StepLimits()))
found["by_name"] = refusal(lambda: steps.create_stage(base_ref, labels=marks, limits=StepLimits()))

for container in (stage, stage2, stage3, stage, stage3):
    steps.remove_container(container)
for one in (image, image, hostile, bare):
    steps.remove_image(one)
def listed(*args):
    found = podman(*args, "--all", "--quiet", "--filter", f"label={test_label}={run}")
    return found.decode().split()
found["left_containers"] = listed("ps")
found["left_images"] = listed("images") + podman("images", "--all", "--quiet", "--filter",
    f"label={test_image_label}={run}").decode().split()
names = podman("images", "--format", "{{.Repository}}").decode().split()
found["load_names"] = [n for n in names if "jgc-commit-" in n]
print(json.dumps(found))
"""


def _remove_run_images(user: str) -> None:
    """This run's images in ``user``'s Podman (the checks' own, should they fail midway)."""
    from conftest import TEST_IMAGE_LABEL, TEST_LABEL, TEST_RUN

    for label in (TEST_LABEL, TEST_IMAGE_LABEL):
        listed = podman_user.podman(
            "images", "--all", "--quiet", "--filter", f"label={label}={TEST_RUN}", user=user
        ).stdout.split()
        if listed:
            podman_user.podman("rmi", "--force", *set(listed), user=user, check=False)


needs_podman = pytest.mark.skipif(
    os.getuid() != 0 or not shutil.which("podman") or not podman_user.PODMAN_USER,
    reason="needs root, podman and JGC_TEST_PODMAN_USER (scripts/test.sh creates it)",
)


@needs_podman
@pytest.mark.parametrize("account", ["rootless", "root"])
def test_build_steps_are_confined_and_commit_exactly_the_config_given(
    account: str, docker_client: Any
) -> None:
    """Issue 61, findings 1, 5 and 6 on Podman (rootless, a user's own; root, a kernel
    service's): the builder's steps run in a container of an image id (a name is refused),
    without capabilities, with no-new-privileges, a process bound (pids limit; rootless under
    cgroups v1, RLIMIT_NPROC) that stops a fork bomb, no network (one of the container's own,
    slirp4netns, only when asked; refused without /dev/net/tun), the environment exactly as
    given; a
    tar goes in with its owners and comes back; a cancel ends a step; the commit is an
    untagged image with exactly the config and labels given (none of the hostile base's
    project labels, variables or ONBUILD, none of the stage container's labels); a base
    without /bin/sh is refused in a sentence; and removal leaves no container and no image."""
    from conftest import TEST_IMAGE_LABEL, TEST_LABEL, TEST_RUN

    user = podman_user.PODMAN_USER if account == "rootless" else podman_user.ROOT
    podman_user.load_images(docker_client, [DEBIAN_IMAGE], user=user)
    argv = [sys.executable, "-c", BUILD_STEP_CHECKS, TEST_LABEL, TEST_IMAGE_LABEL, TEST_RUN]
    try:
        if account == "rootless":
            done = podman_user.run_as([*argv, DEBIAN_IMAGE], timeout=400)
        else:
            # From "/", as run_as: the package the test command's PYTHONPATH names, if any.
            done = subprocess.run(
                [*argv, DEBIAN_IMAGE],
                capture_output=True,
                text=True,
                timeout=400,
                check=False,
                cwd="/",
            )
    finally:
        podman_user.remove_test_containers(user)
        _remove_run_images(user)
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert "org.jupyter.gpu-containers.gpus" in found["base_labels"]  # the base is hostile
    # No build container passes for a kernel's record: the base's project labels are set "".
    stage_labels = found["stage_labels"]
    assert stage_labels["org.jupyter.gpu-containers.gpus"] == "", stage_labels
    assert stage_labels["org.jupyter.gpu-containers.managed"] == "", stage_labels
    assert stage_labels[TEST_LABEL] == TEST_RUN, stage_labels

    code, lines = found["status"]
    assert code == 0, lines
    assert "CapEff:\t0000000000000000" in lines and "NoNewPrivs:\t1" in lines, lines
    if account == "root":
        assert "77" in lines, lines  # the pids cgroup's bound
    else:  # rootless under cgroups v1: RLIMIT_NPROC
        bound = next(x for x in lines if x.startswith("Max processes"))
        assert bound.split()[2:4] == ["77", "77"], lines
    assert lines[-4:] == ["HOME=/root", "PATH=/usr/bin:/bin", "PWD=/", "SECRET=a b  c"], lines
    assert lines[-5] == "0", lines  # root in the container (rootless: the user's own uid)
    code, lines = found["processes"]
    assert code == 0 and int(lines[-1]) < 77, lines
    assert found["as_user"] == [0, ["1000"]]
    code, lines = found["flag_argv"]
    assert code == 127 and 'exec: "--user=0"' in lines[-1], lines

    assert found["put"] == [0, ["1234 4321 640"]]
    assert found["got"] == {
        "jgc": "dir",
        "jgc/f.txt": "hello",
        "jgc/sub": "dir",
        "jgc/sub/g.txt": "world",
    }
    assert "/no/such/path" in found["missing"] and "could not be found" in found["missing"]
    assert found["from_source"] == [["debian_version", True]]
    assert found["source_state"] in ("created", "configured"), found["source_state"]
    assert found["layer_size"] >= 3 << 20
    code, said = found["cancelled"]
    assert code != 0 and said == ["started"], found["cancelled"]

    assert found["image"].startswith("sha256:") and found["names"] == []
    config = found["config"]
    assert config["Labels"] == {"org.example.mine": "yes", TEST_IMAGE_LABEL: TEST_RUN}
    assert config["Env"] == ["PATH=/usr/bin:/bin", "A=1"]
    assert config["Cmd"] == ["python3", "-V"] and not config.get("Entrypoint")
    assert (config["User"], config["WorkingDir"]) == ("1000", "/opt/jgc")
    assert list(config["ExposedPorts"]) == ["8888/tcp"] and config["StopSignal"] == "SIGINT"
    assert not config.get("OnBuild") and not config.get("Volumes")
    assert found["in_image"] == [0, ["world"]]
    assert found["network_none"] == "none"
    if account == "root":  # a network of the container's own (root may open /dev/net/tun)
        assert found["network_build"] == ["network", "slirp4netns"]
    else:  # the test account may not open /dev/net/tun (scripts/test.sh leaves it 0600)
        kind, sentence = found["network_build"]
        assert kind == "refused" and "/dev/net/tun" in sentence, found["network_build"]
    assert "has no /bin/sh" in found["no_shell"], found["no_shell"]
    assert "not an image id" in found["by_name"], found["by_name"]
    assert found["left_containers"] == [] and found["left_images"] == []
    assert found["load_names"] == []


@needs_root_podman_and_students
async def test_a_students_build_on_a_podman_service_runs_in_the_services_own_builder(
    docker_client: Any,
) -> None:
    """Issue 61, findings 1, 5 and 6 through a kernel service on root's Podman (ServiceApp.backend
    "podman", build_policy "everyone"), as a student outside the docker group: her Dockerfile is
    run by the service's builder, never by ``podman build`` (whose steps have Podman's default
    capabilities and no-new-privileges off): each RUN has no capabilities, no-new-privileges
    and the pids bound; the image is hers, its config exactly what the builder computed (none
    of Podman's own variables a container gets); and no build container is left."""
    from conftest import TEST_IMAGE_LABEL, TEST_RUN
    from service_process import KernelService

    from jupyter_gpu_containers.base import labels as L

    podman_user.load_images(docker_client, [DEBIAN_IMAGE], user=podman_user.ROOT)
    service = KernelService(
        {
            "ServiceApp": {"backend": "podman", "build_policy": "everyone"},
            "ImageSaves": {"extra_labels": {TEST_IMAGE_LABEL: TEST_RUN}, "build_network": False},
        }
    )
    started: dict[str, Any] = {}
    try:
        a = service.add_user(SERVICE_USER_A)
        service.start()
        folder = a.workspace / "env"
        folder.mkdir()
        (folder / "Dockerfile").write_text(
            f"FROM {DEBIAN_IMAGE}\n"
            "COPY notes.txt /opt/notes.txt\n"
            "ENV GREETING=hers\n"
            "RUN grep -E '^(CapEff|NoNewPrivs):' /proc/self/status"
            " && echo pids $(cat /sys/fs/cgroup/pids/pids.max) && echo her-step-ran\n"
        )
        (folder / "notes.txt").write_text("hers\n")
        entry = pwd.getpwnam(SERVICE_USER_A)
        for path in (folder, folder / "Dockerfile", folder / "notes.txt"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        code, started = await service.answer(
            a, "POST", "gpu-containers/builds", {"path": "env/Dockerfile"}
        )
        assert code == 202, started

        async def ended() -> Any:
            code, now = await service.answer(a, "GET", f"gpu-containers/saves/{started['id']}")
            assert code == 200, now
            return now if now["state"] in ("done", "error", "cancelled") else None

        done = await wait_until(ended, 300, "the build's end")
        assert done["state"] == "done", done
        log = "\n".join(done["log"])
        assert "her-step-ran" in log, log
        assert re.search(r"CapEff:\s+0000000000000000", log), log
        assert re.search(r"NoNewPrivs:\s+1", log), log
        assert re.search(r"pids [1-9][0-9]*\b", log) and "pids max" not in log, log
        inspected = json.loads(
            podman_user.podman("image", "inspect", started["image"], user=podman_user.ROOT).stdout
        )[0]
        env = inspected["Config"]["Env"]
        assert "GREETING=hers" in env and not any(v.startswith("container=") for v in env), env
        labels = inspected["Config"]["Labels"]
        assert labels[TEST_IMAGE_LABEL] == TEST_RUN and L.MANAGED not in labels, labels
        left = podman_user.podman(
            "ps", "--all", "--quiet", "--filter", f"label={L.BUILD}", user=podman_user.ROOT
        ).stdout.split()
        assert left == [], left
    finally:
        service.close()
        if started.get("image"):
            podman_user.podman("rmi", started["image"], user=podman_user.ROOT, check=False)
        _remove_run_images(podman_user.ROOT)
        podman_user.remove_test_containers(podman_user.ROOT)


def test_a_build_steps_environment_is_given_only_as_podman_reads_it_back() -> None:
    """A step's environment goes to podman as --env-file lines on its stdin, which podman reads
    its own way (a line's leading blanks and a '#' line dropped, a carriage return before the
    line break dropped, a name alone taken from podman's own environment): whatever it would
    read otherwise than written is refused, never passed on."""
    from jupyter_gpu_containers.backends.podman.build_steps import env_file
    from jupyter_gpu_containers.base.errors import ValueRefused

    assert env_file(["A=1", "B=x y = z", "C="]) == b"A=1\nB=x y = z\nC=\n"
    for bad in ("#A=1", " A=1", "A B=1", "A=1\r", "A=x\nB=2", "=1", "HOME", "A=\0", "A\0=1"):
        with pytest.raises(ValueRefused, match="A build step's environment variable"):
            env_file([bad])


# Issue 61, finding 1: four ways a Dockerfile hid a FROM from the service's check while root
# Podman's builder (``podman build``) ran it: a line ending "\\"; "\" before a no-break space; an
# unknown directive before "# escape="; an empty line in a continuation. {base} is an allowed
# base, {hidden} an image here that ImageSaves.allowed_bases does not allow.
HIDDEN_FROM = {
    "double-backslash": "FROM {base}\nRUN echo \\\\\nFROM {hidden}\nRUN echo hidden-ran\n",
    "no-break-space": "FROM {base}\nRUN echo \\\u00a0\nFROM {hidden}\nRUN echo hidden-ran\n",
    "directive-order": (
        "# unknown=x\n# escape=`\nFROM {base}\nRUN echo `\nFROM {hidden}\nRUN echo hidden-ran\n"
    ),
    "empty-continuation": "FROM {base}\nRUN echo \\\n\nFROM {hidden}\nRUN echo hidden-ran\n",
}


@needs_root_podman_and_students
async def test_a_hidden_from_never_reaches_root_podman(docker_client: Any) -> None:
    """Issue 61, finding 1, on the engine where it broke (a kernel service on root's Podman, a
    student outside the docker group): each Dockerfile that hid a FROM of a base the
    administrator does not allow either is refused in a sentence or builds on the allowed base
    alone: the image holds the allowed base's layers and one of its own, none of the hidden
    base's, whatever the text's tricks (one parse, the service's, and no engine reads it)."""
    from conftest import TEST_IMAGE_LABEL, TEST_RUN
    from service_process import KernelService

    from jupyter_gpu_containers.base import labels as L

    podman_user.load_images(docker_client, [DEBIAN_IMAGE, NGC_IMAGE], user=podman_user.ROOT)

    def layers(ref: str) -> list[str]:
        found = podman_user.podman("image", "inspect", ref, user=podman_user.ROOT).stdout
        return list(json.loads(found)[0]["RootFS"]["Layers"])

    allowed, hidden = layers(DEBIAN_IMAGE), layers(NGC_IMAGE)
    assert set(hidden) - set(allowed)  # the hidden base's layers would show in the image
    service = KernelService(
        {
            "ServiceApp": {"backend": "podman", "build_policy": "everyone"},
            "ImageSaves": {
                "extra_labels": {TEST_IMAGE_LABEL: TEST_RUN},
                "build_network": False,
                "allowed_bases": ["jgc/*"],
            },
        }
    )
    built: list[str] = []
    try:
        a = service.add_user(SERVICE_USER_A)
        service.start()
        entry = pwd.getpwnam(SERVICE_USER_A)
        outcomes = {}
        for variant, text in HIDDEN_FROM.items():
            folder = a.workspace / variant
            folder.mkdir()
            recipe = folder / "Dockerfile"
            recipe.write_text(text.format(base=DEBIAN_IMAGE, hidden=NGC_IMAGE), encoding="utf-8")
            for path in (folder, recipe):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            code, started = await service.answer(
                a, "POST", "gpu-containers/builds", {"path": f"{variant}/Dockerfile"}
            )
            if code != 202:
                assert 400 <= code < 500 and started["message"], (variant, code, started)
                outcomes[variant] = "refused"
                continue
            built.append(started["image"])

            async def ended(build_id: str = started["id"]) -> Any:
                code, now = await service.answer(a, "GET", f"gpu-containers/saves/{build_id}")
                assert code == 200, now
                return now if now["state"] in ("done", "error", "cancelled") else None

            done = await wait_until(ended, 300, f"the {variant} build's end")
            if done["state"] == "error":
                assert done["message"], done
                outcomes[variant] = "refused"
                continue
            assert done["state"] == "done", (variant, done)
            made = layers(started["image"])
            assert made[:-1] == allowed and made[-1] not in hidden, (variant, made)
            outcomes[variant] = "built on the allowed base"
        assert set(outcomes) == set(HIDDEN_FROM), outcomes
        left = podman_user.podman(
            "ps", "--all", "--quiet", "--filter", f"label={L.BUILD}", user=podman_user.ROOT
        ).stdout.split()
        assert left == [], left
    finally:
        service.close()
        for ref in built:
            podman_user.podman("rmi", ref, user=podman_user.ROOT, check=False)
        _remove_run_images(podman_user.ROOT)
        podman_user.remove_test_containers(podman_user.ROOT)
