"""Real local accounts for the shared-host tests, and what such tests need: homes whose
configuration belongs to the administrator, a host state directory, commands run as a user.

scripts/test.sh creates the accounts (sessions and CI run as root):

- JGC_TEST_USER (jgc-tester), in the docker group: "alice", who runs a Jupyter server;
- JGC_TEST_PEER (jgc-peer), in the docker group: "bob", another user with a server of his own;
- JGC_TEST_OUTSIDER (jgc-outsider), outside the docker group: "mallory", a shell account.

Members of the docker group are root on the host by another road (`docker run -v /:/host`); what
these tests prove is that the extension itself hands nothing over: that it follows no one's
symlinks, trusts no one's files, and lets no one's kernel spec widen the administrator's limits.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_LABEL, TEST_RUN
from servers import Server, write_server_config

from jupyter_gpu_containers.host.hoststate import provision

ALICE = os.environ.get("JGC_TEST_USER", "")
BOB = os.environ.get("JGC_TEST_PEER", "")
MALLORY = os.environ.get("JGC_TEST_OUTSIDER", "")

needs_accounts = pytest.mark.skipif(
    os.getuid() != 0 or not (ALICE and BOB and MALLORY),
    reason="needs root and the test accounts (scripts/test.sh creates them)",
)


def uid_of(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


def ids_of(user: str) -> tuple[int, int]:
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def as_user(user: str) -> list[str]:
    """The command prefix that runs a program as ``user``, with that user's groups."""
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]


def run_as(user: str, code: str, *args: str, timeout: float = 60) -> str:
    """Run ``python3 -c code args`` as ``user``; what it printed (it must succeed)."""
    done = subprocess.run(
        [*as_user(user), sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


class Held:
    """A process of ``user`` that tries something, prints one line about it, then keeps what it
    holds (a lock, say) until stopped."""

    def __init__(self, user: str, code: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [*as_user(user), sys.executable, "-c", code + HOLD_FOREVER, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd="/",
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )
        assert self.process.stdout is not None
        self.said = self.process.stdout.readline().strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


HOLD_FOREVER = "\nimport sys, time\nsys.stdout.flush()\ntime.sleep(600)\n"

# Tries to open paths and hold a lock on each: argv is pairs of a path and "dir" (open the
# directory), "ex" or "sh" (open or create the file, then an exclusive or shared flock). Prints,
# for each, "held" or the error's name.
TRY_LOCK = """
import fcntl, os, sys
said = []
for path, kind in zip(sys.argv[1::2], sys.argv[2::2]):
    try:
        if kind == "dir":
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        else:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except PermissionError:
                fd = os.open(path, os.O_RDONLY)
        fcntl.flock(fd, (fcntl.LOCK_SH if kind == "sh" else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        said.append("held")
    except OSError as e:
        said.append(type(e).__name__)
print(" ".join(said))
"""


@contextlib.contextmanager
def host_state_dir() -> Iterator[Path]:
    """A host state directory as `setup-host` makes one (root:docker 1770), in a root-owned
    directory that every account may traverse."""
    top = Path(tempfile.mkdtemp(prefix="jgc-state-", dir="/tmp"))
    top.chmod(0o755)
    try:
        provision(str(top / "state"), "docker")
        yield top / "state"
    finally:
        shutil.rmtree(top, ignore_errors=True)


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = {key: dict(value) if isinstance(value, dict) else value for key, value in base.items()}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


class UserHome:
    """A home for ``user``'s server under /tmp: the configuration (the administrator's) belongs
    to root; the data, runtime and workspace directories to the user."""

    def __init__(self, user: str, config: dict[str, Any]) -> None:
        self.user = user
        self.path = Path(tempfile.mkdtemp(prefix=f"jgc-{user}-", dir="/tmp"))
        self.path.chmod(0o755)
        (self.path / "config").mkdir()
        write_server_config(self.path, merged(self.base_config(), config))
        uid, gid = ids_of(user)
        for sub in ("data", "runtime", "workspace"):
            (self.path / sub).mkdir()
            os.chown(self.path / sub, uid, gid)
        self.servers: list[Server] = []

    @staticmethod
    def base_config() -> dict[str, Any]:
        from conftest import STATIC_GPUS

        return {
            "ContainerProvisioner": {"extra_labels": {TEST_LABEL: TEST_RUN}},
            "ContainerPolicy": {},
            "GPUInventory": {"static_gpus": STATIC_GPUS},
            "GPUAllocator": {"attach_mode": "runtime"},
        }

    @property
    def workspace(self) -> Path:
        return self.path / "workspace"

    def start(self, *args: str, env: dict[str, str] | None = None) -> Server:
        server = Server(self.path, self.workspace, list(args), user=self.user, env=env)
        self.servers.append(server)
        return server

    def install_spec(self, name: str, spec: dict[str, Any]) -> None:
        """A kernel spec in the user's own data directory, written by the user."""
        run_as(
            self.user,
            "import os, sys; d = sys.argv[1]; os.makedirs(d); "
            "open(os.path.join(d, 'kernel.json'), 'w').write(sys.argv[2])",
            str(self.path / "data" / "kernels" / name),
            json.dumps(spec),
        )

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        shutil.rmtree(self.path, ignore_errors=True)
