"""A real Jupyter server process, run as an ordinary user: files belong to that user, and after a
`kill -9` of the server its kernels are reattached (same server) or swept (sweep mode, or another
server), never orphaned.

Sessions and CI run as root; the test command creates a non-root user in the docker group
(JGC_TEST_USER) for these tests (the docker group is root-equivalent on the host: README,
Security).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    NGC_IMAGE,
    assert_no_test_containers,
    kernel_name,
)
from hostusers import host_state_dir
from servers import Server, write_server_config

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


@pytest.fixture
def user_home() -> Iterator[Path]:
    """A home for USER outside pytest's root-only tmp_path, with the project's test labels, and
    a host state directory as `setup-host` makes one (root's: never under a user's home)."""
    entry = pwd.getpwnam(USER)
    home = Path(tempfile.mkdtemp(prefix="jgc-user-", dir="/tmp"))
    for sub in ("config", "data", "runtime", "workspace", "other-workspace"):
        (home / sub).mkdir()
    for path in [home, *home.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    try:
        with host_state_dir() as state:
            write_server_config(home, {"ContainerPolicy": {"state_dir": str(state)}})
            yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def servers(user_home: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()
        if server.process.returncode not in (0, -signal.SIGKILL, -signal.SIGTERM):
            print(server.output())


async def test_files_are_the_users_and_kill_9_reattaches_then_sweeps(
    user_home: Path, servers: list[Server], docker_client: Any
) -> None:
    entry = pwd.getpwnam(USER)
    workspace = user_home / "workspace"

    def start(root: Path, *args: str) -> Server:
        servers.append(Server(user_home, root, list(args), user=USER))
        return servers[-1]

    first = start(workspace)
    (workspace / "work").mkdir()
    os.chown(workspace / "work", entry.pw_uid, entry.pw_gid)
    session = await first.open_notebook("work/nb.ipynb", kernel_name(NGC_IMAGE))
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
    (container,) = docker_client.containers.list(filters={"label": f"{L.KERNEL_ID}={kernel_id}"})
    assert container.status == "running"

    # The same server again reattaches to the very same live kernel.
    second = start(workspace)
    kernels = await second.call("GET", "api", "kernels")
    assert [k["id"] for k in kernels] == [kernel_id], second.output()
    assert kernels[0]["name"] == kernel_name(NGC_IMAGE)
    result = await second.execute(kernel_id, "print(marker)")
    assert result.stdout.strip() == "state survives"

    # Its container's labels still name the dead first process; another server starting now must
    # see that a live server (the second) owns the kernel, and leave it alone.
    bystander = start(user_home / "other-workspace")
    assert "removed 0" in bystander.output()
    bystander.stop()
    assert (await second.execute(kernel_id, "print(marker)")).stdout.strip() == "state survives"
    await second.call("POST", "api", "kernels", kernel_id, "restart", body={})
    assert (
        await second.execute(kernel_id, "print('marker' in globals())")
    ).stdout.strip() == "False"

    # Killed again, then started in sweep mode: the container is removed, nothing is adopted.
    second.kill9()
    third = start(workspace, "--GPUContainersApp.on_start=sweep")
    assert await third.call("GET", "api", "kernels") == []
    assert_no_test_containers(docker_client)

    # A kernel of a killed server is swept by any other server started on the host.
    kernel = await third.call("POST", "api", "kernels", body={"name": kernel_name(NGC_IMAGE)})
    third.kill9()
    other = start(user_home / "other-workspace")
    assert await other.call("GET", "api", "kernels") == []
    assert_no_test_containers(docker_client)
    assert "Kernel containers at start: reattached 0, removed 1" in other.output()
    assert kernel["id"]
    # ...with the swept kernels' private directories.
    assert list((user_home / "runtime" / "gpu-containers").iterdir()) == []
