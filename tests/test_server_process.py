"""A real Jupyter server process, run as an ordinary user: files belong to that user, and after a
`kill -9` of the server its kernels are reattached (same server) or swept (sweep mode, or another
server), never orphaned. On each engine a user's own server runs kernels on: Docker, as a user in
the docker group; rootless Podman, as a user outside it.

Sessions and CI run as root; the test command creates the non-root users for these tests: one in
the docker group (JGC_TEST_USER; the docker group is root-equivalent on the host: README,
Security), one outside it with subordinate uids for Podman (JGC_TEST_PODMAN_USER).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import podman_user
import pytest
from conftest import (
    DEBIAN_IMAGE,
    NGC_IMAGE,
    assert_no_test_containers,
    kernel_name,
)
from hostusers import host_state_dir
from servers import Server, jupyter_env, write_server_config

from jupyter_gpu_containers.base import labels as L

USER = os.environ.get("JGC_TEST_USER", "")
pytestmark = [
    pytest.mark.usefixtures("docker_client"),
    pytest.mark.skipif(
        not USER or os.getuid() != 0,
        reason="needs root and JGC_TEST_USER (scripts/test.sh sets both up)",
    ),
]
VENV_BIN = Path(sys.executable).parent


@dataclass
class Engine:
    """The engine a user's server runs kernels on, as the test sees it: the user, what its
    server is given, and its containers of this test run."""

    name: str
    user: str
    # The image its kernels run: on Podman a CPU one, for its user's GPUs are not booked yet
    # (the host ledger's state directory is the docker group's; NGC_IMAGE asks for a GPU).
    image: str = NGC_IMAGE
    env: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    docker_client: Any = None

    def kernel_statuses(self, kernel_id: str) -> list[str]:
        if self.name == "podman":
            return [str(c.get("State")) for c in podman_user.kernel_containers(kernel_id)]
        found = self.docker_client.containers.list(
            all=True, filters={"label": f"{L.KERNEL_ID}={kernel_id}"}
        )
        return [c.status for c in found]

    def assert_no_test_containers(self) -> None:
        if self.name == "podman":
            assert podman_user.run_containers() == []
        else:
            assert_no_test_containers(self.docker_client)


@pytest.fixture(params=["docker", "podman"])
def engine(request: pytest.FixtureRequest, docker_client: Any) -> Iterator[Engine]:
    if request.param == "docker":
        yield Engine("docker", USER, docker_client=docker_client)
        return
    if not podman_user.PODMAN_USER:
        pytest.fail("JGC_TEST_PODMAN_USER names no account (scripts/test.sh creates one)")
    podman_user.load_images(docker_client, [DEBIAN_IMAGE])
    try:
        yield Engine(
            "podman",
            podman_user.PODMAN_USER,
            image=DEBIAN_IMAGE,
            env=podman_user.user_env(),
            config={"ContainerEngine": {"backend": "podman"}},
        )
    finally:
        podman_user.remove_test_containers()


@contextlib.contextmanager
def home_of(user: str, config: dict[str, Any] | None = None) -> Iterator[Path]:
    """A home for ``user`` outside pytest's root-only tmp_path, with the project's test labels,
    a host state directory as `setup-host` makes one (root's: never under a user's home), and
    ``config``."""
    entry = pwd.getpwnam(user)
    home = Path(tempfile.mkdtemp(prefix="jgc-user-", dir="/tmp"))
    for sub in ("config", "data", "runtime", "workspace", "other-workspace"):
        (home / sub).mkdir()
    for path in [home, *home.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    try:
        with host_state_dir() as state:
            write_server_config(
                home, {"ContainerPolicy": {"state_dir": str(state)}, **(config or {})}
            )
            yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def user_home() -> Iterator[Path]:
    """A home for USER (in the docker group), whose servers run kernels on Docker."""
    with home_of(USER) as home:
        yield home


@pytest.fixture
def engine_home(engine: Engine) -> Iterator[Path]:
    """A home for the engine's user, configured for the engine."""
    with home_of(engine.user, engine.config) as home:
        yield home


def stop_all(started: list[Server]) -> None:
    for server in started:
        server.stop()
        if server.process.returncode not in (0, -signal.SIGKILL, -signal.SIGTERM):
            print(server.output())


@pytest.fixture
def servers(user_home: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    stop_all(started)


@pytest.fixture
def engine_servers(engine_home: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    stop_all(started)


async def test_files_are_the_users_and_kill_9_reattaches_then_sweeps(
    engine: Engine, engine_home: Path, engine_servers: list[Server]
) -> None:
    user_home, servers = engine_home, engine_servers
    entry = pwd.getpwnam(engine.user)
    workspace = user_home / "workspace"

    def start(root: Path, *args: str) -> Server:
        servers.append(Server(user_home, root, list(args), user=engine.user, env=engine.env))
        return servers[-1]

    first = start(workspace)
    (workspace / "work").mkdir()
    os.chown(workspace / "work", entry.pw_uid, entry.pw_gid)
    session = await first.open_notebook("work/nb.ipynb", kernel_name(engine.image))
    kernel_id = session["kernel"]["id"]
    result = await first.execute(
        kernel_id,
        "import os\nopen('owned.txt', 'w').write('mine')\nmarker = 'state survives'\n"
        "print(os.getuid(), os.getgid())",
    )
    assert result.stdout.split() == [str(entry.pw_uid), str(entry.pw_gid)]
    written = workspace / "work" / "owned.txt"
    assert (written.stat().st_uid, written.stat().st_gid) == (entry.pw_uid, entry.pw_gid)

    # kill -9: the server dies, its kernel container keeps running.
    first.kill9()
    assert engine.kernel_statuses(kernel_id) == ["running"]

    # The same server again reattaches to the very same live kernel.
    second = start(workspace)
    kernels = await second.call("GET", "api", "kernels")
    assert [k["id"] for k in kernels] == [kernel_id], second.output()
    assert kernels[0]["name"] == kernel_name(engine.image)
    result = await second.execute(kernel_id, "print(marker)")
    assert result.stdout.strip() == "state survives"
    # Its notebook's session came back with it: the notebook reopened (JupyterLab looks its
    # session up by path, or asks for one) joins this kernel, not a second one beside it.
    sessions = await second.call("GET", "api", "sessions")
    assert [(s["path"], s["type"], s["kernel"]["id"]) for s in sessions] == [
        ("work/nb.ipynb", "notebook", kernel_id)
    ], second.output()
    reopened = await second.open_notebook("work/nb.ipynb", kernel_name(engine.image))
    assert reopened["kernel"]["id"] == kernel_id
    assert [k["id"] for k in await second.call("GET", "api", "kernels")] == [kernel_id]

    # Its container's labels still name the dead first process; another server starting now must
    # see that a live server (the second) owns the kernel, and leave it alone.
    bystander = start(user_home / "other-workspace")
    assert "removed 0" in bystander.output()
    bystander.stop()
    # Nor does a server of another host state directory, which cannot see that the second lives
    # (its creator, the first, is dead): whether its server lives is recorded in that directory.
    with home_of(engine.user, engine.config) as foreign_home:
        servers.append(
            Server(foreign_home, foreign_home / "workspace", [], user=engine.user, env=engine.env)
        )
        assert "removed 0" in servers[-1].output()
        servers[-1].stop()
    again = await second.execute(kernel_id, "print(marker)")
    assert again.stdout.strip() == "state survives", (again, second.output()[-3000:])
    await second.call("POST", "api", "kernels", kernel_id, "restart", body={})
    assert (
        await second.execute(kernel_id, "print('marker' in globals())")
    ).stdout.strip() == "False"

    # Killed again, then started in sweep mode: the container is removed, nothing is adopted.
    second.kill9()
    third = start(workspace, "--GPUContainersApp.on_start=sweep")
    assert await third.call("GET", "api", "kernels") == []
    engine.assert_no_test_containers()

    # A kernel of a killed server is swept by any other server started on the host.
    kernel = await third.call("POST", "api", "kernels", body={"name": kernel_name(engine.image)})
    third.kill9()
    other = start(user_home / "other-workspace")
    assert await other.call("GET", "api", "kernels") == []
    engine.assert_no_test_containers()
    assert "Kernel containers at start: reattached 0, removed 1" in other.output()
    assert kernel["id"]
    # ...with the swept kernels' private directories.
    left = list((user_home / "runtime" / "gpu-containers").iterdir())
    assert left == [], "\n".join(
        [f"left: {left}", *(f"--- server {i}\n{s.output()[-4000:]}" for i, s in enumerate(servers))]
    )


async def test_a_gpu_kernel_from_before_holder_records_keeps_its_gpus_when_reattached(
    user_home: Path, servers: list[Server], docker_client: Any
) -> None:
    """An upgrade while a GPU kernel runs: the version that started it wrote no holder record
    (gpus/allocator.py), so the ledger would see its GPU free and give it to the next kernel.
    The upgraded server reattaches the kernel and records its GPUs as its own, in the user's
    name (recovery.py, GPUAllocator.adopt_holding)."""
    workspace = user_home / "workspace"
    servers.append(Server(user_home, workspace, [], user=USER))
    first = servers[-1]
    kernel = await first.call("POST", "api", "kernels", body={"name": kernel_name(NGC_IMAGE)})
    (container,) = docker_client.containers.list(
        ignore_removed=True, filters={"label": f"{L.KERNEL_ID}={kernel['id']}"}
    )
    gpus = [g for g in container.labels[L.GPUS].split(",") if g]
    assert gpus
    config = json.loads((user_home / "config" / "jupyter_server_config.json").read_text())
    record = Path(config["ContainerPolicy"]["state_dir"]) / f"gpu-holder-{container.id}"
    assert json.loads(record.read_text())["gpus"] == gpus
    first.kill9()
    record.unlink()  # as the version before holder records left it

    servers.append(Server(user_home, workspace, [], user=USER))
    second = servers[-1]
    assert [k["id"] for k in await second.call("GET", "api", "kernels")] == [kernel["id"]]
    written = json.loads(record.read_text())
    assert (written["container"], written["gpus"], written["kernel_id"]) == (
        container.id,
        gpus,
        kernel["id"],
    )
    assert record.stat().st_uid == pwd.getpwnam(USER).pw_uid
    assert "its GPUs (" in second.output()
    report = await second.call("GET", "gpu-containers", "gpus")
    held = {g["uuid"]: [h["kernel_id"] for h in g["holders"]] for g in report["gpus"]}
    assert {uuid: kernel_ids for uuid, kernel_ids in held.items() if kernel_ids} == {
        uuid: [kernel["id"]] for uuid in gpus
    }
    # A second start of the same server finds the record there and writes nothing.
    second.kill9()
    servers.append(Server(user_home, workspace, [], user=USER))
    third = servers[-1]
    assert [k["id"] for k in await third.call("GET", "api", "kernels")] == [kernel["id"]]
    assert "its GPUs (" not in third.output()
    await third.call("DELETE", "api", "kernels", kernel["id"])
    assert not record.exists()


def test_the_demo_writes_its_notebook_as_a_user_on_that_users_engine(engine: Engine) -> None:
    """scripts/demo.sh (``--podman``: as a user outside the docker group) writes welcome.ipynb
    with the engine's options it gives the server: the kernel spec of the image in that user's
    engine, and the language_info of a kernel started there, as that user. The engine is
    chosen by those options alone, as the demo's server is (no configuration file names it)."""
    with home_of(engine.user) as home:
        _write_the_demo_notebook(engine, home)


def _write_the_demo_notebook(engine: Engine, engine_home: Path) -> None:
    workspace = engine_home / "workspace"
    env = {**jupyter_env(engine_home), **engine.env}
    options = ["--ContainerEngine.backend=podman"] if engine.name == "podman" else []
    done = subprocess.run(
        [
            *("setpriv", f"--reuid={engine.user}", f"--regid={engine.user}", "--init-groups"),
            sys.executable,
            str(Path(__file__).parents[1] / "scripts" / "welcome_notebook.py"),
            str(workspace),
            f"--image={DEBIAN_IMAGE}",
            *options,
        ],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Demo notebook (written)" in done.stdout, done.stdout + done.stderr
    written = workspace / "welcome.ipynb"
    assert written.stat().st_uid == pwd.getpwnam(engine.user).pw_uid
    metadata = json.loads(written.read_text())["metadata"]
    assert metadata["kernelspec"]["name"] == kernel_name(DEBIAN_IMAGE)
    # A kernel of the image answered: its Python, as the image's probe found it.
    assert metadata["language_info"]["name"] == "python"
    assert metadata["kernelspec"]["display_name"].startswith(
        "Python " + ".".join(metadata["language_info"]["version"].split(".")[:2])
    )
    engine.assert_no_test_containers()
