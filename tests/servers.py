"""A real `jupyter server` process for tests that need several servers, or to kill one."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kernel_io import execute
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

VENV_BIN = Path(sys.executable).parent

# What jupyter_server logs when it cannot bind its port (it exits then: port_retries = 0).
NO_PORT = "ERROR: the Jupyter server could not be started because"

# What the extension logs once the server is ready: it has reattached or swept what earlier
# servers left, or found that no engine answers, or (behind a kernel service) says where it is.
READY = (
    "Kernel containers at start",
    "Kernel containers were not checked at start",
    "kernels live behind the kernel service at",
)


async def open_event_stream(port: int, token: str, path: str) -> asyncio.StreamWriter:
    """A GET of an event stream on 127.0.0.1:``port`` with ``token``, left open once its
    headers said 200 (close the writer to end it); AssertionError, the connection closed,
    for any other answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /{path.lstrip('/')} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: token {token}\r\n\r\n".encode()
    )
    await writer.drain()
    status = await reader.readline()
    if status.split()[1:2] != [b"200"]:
        writer.close()
        raise AssertionError(f"the stream {path} was not opened: {status!r}")
    return writer


async def wait_until(check: Any, timeout: float, what: str) -> Any:
    """Poll the coroutine function ``check`` until it returns something true; that value.
    AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.5)


def remove_tree(path: Path) -> None:
    """Remove a test's directory, first detaching the tmpfs a root server mounted on each of its
    kernels' private directories (privatedirs.py) that no shutdown removed: a server killed, or a
    test that failed before its kernels were shut down."""
    with open("/proc/self/mounts") as mounts:
        targets = [line.split()[1] for line in mounts if line.startswith("jgc-kernel ")]
    for target in targets:
        if target.startswith(f"{path}/"):
            subprocess.run(["umount", "--lazy", target], check=False)
    shutil.rmtree(path, ignore_errors=True)


def read_command() -> str | None:
    """The next line on standard input, None at its end: how the UI tests' labs read their
    commands (ui-tests/slurm_lab.py, reclaim_lab.py, other_student.py).

    Another process sharing the same pipe can set O_NONBLOCK on it for a while (node does, as
    jupyter_lsp runs ``npm prefix -g`` at a server's start), and Python takes the read that then
    finds no data for the end of input: the lab ended at once and stopped its server, and the
    test's browser was refused (CI, twice). Such a read is made again, blocking."""
    while True:
        line = sys.stdin.readline()
        if line:
            return line
        if os.get_blocking(sys.stdin.fileno()):
            return None
        os.set_blocking(sys.stdin.fileno(), True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port`` (asked once a server said it
    is ready: it holds the port then, so what answers is the server)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# The server extensions of the test environment that a test server has no use for unless a
# browser opens its pages (the UI tests' labs): JupyterLab's alone took a second of CPU at each
# of the suite's hundreds of server starts, on a two-core machine that runs two sessions.
PAGE_EXTENSIONS = ("jupyterlab", "jupyter_lsp", "jupyter_server_terminals", "notebook_shim")


def write_server_config(
    home: Path, extra: dict[str, Any] | None = None, *, pages: bool = False
) -> None:
    """The config every test server reads (JUPYTER_CONFIG_DIR=home/config): the test run's
    container label, a host state directory under home, four static GPUs on the runc-backed
    nvidia runtime; JupyterLab and its page extensions only with ``pages``."""
    from conftest import STATIC_GPUS, TEST_LABEL, TEST_RUN

    config: dict[str, Any] = {
        "ContainerProvisioner": {"extra_labels": {TEST_LABEL: TEST_RUN}},
        # Servers started without a user run as the suite's user, root in CI: allow their kernels.
        "ContainerPolicy": {"state_dir": str(home / "state"), "allow_root": os.getuid() == 0},
        "GPUInventory": {"static_gpus": STATIC_GPUS},
        "GPUAllocator": {"attach_mode": "runtime"},
        **(extra or {}),
    }
    # (A section of ``extra`` replaces the default's whole; the extensions are added to its.)
    server_app = config["ServerApp"] = dict(config.get("ServerApp", {}))
    server_app["jpserver_extensions"] = {
        **{name: pages for name in PAGE_EXTENSIONS},
        **server_app.get("jpserver_extensions", {}),
    }
    (home / "config").mkdir(exist_ok=True)
    (home / "config" / "jupyter_server_config.json").write_text(json.dumps(config))


def jupyter_env(home: Path) -> dict[str, str]:
    """The environment of a Jupyter process of the tests' (a server, the demo's notebook
    writer) whose home is ``home``: its Jupyter directories there, the test environment's
    commands first."""
    return {
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
        "HOME": str(home),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "LANG": "C.UTF-8",
        # A checkout tried with another's environment (PYTHONPATH=it) runs its own code.
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}),
        **engine_env(),
    }


def engine_env() -> dict[str, str]:
    """The Docker engine the tests were given (DOCKER_HOST: the UI tests' own engine,
    ui-tests/start-engine.sh), for the processes they start with an environment of their own."""
    given = os.environ.get("DOCKER_HOST")
    return {"DOCKER_HOST": given} if given else {}


class Server:
    """`jupyter server`, as ``user`` when given (through setpriv, which execs: our child's pid is
    the server's, so `kill -9` hits the server itself)."""

    def __init__(
        self,
        home: Path,
        root_dir: Path,
        extra_args: list[str],
        user: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.home = home
        self.token = os.urandom(16).hex()
        self._ended_by_test = False  # kill9()
        # IPython (which the server imports) wants a directory of its own, and makes one in /tmp
        # when it cannot write under HOME, as another user's server cannot here: give it a
        # place the test removes with the home. jupyter_core would then look there for IPython
        # 3 configuration to migrate into the config directory, which is the administrator's
        # (root's): its marker says that was done.
        extra_env: dict[str, str] = {}
        if user:
            entry = pwd.getpwnam(user)
            users_own = home / f"ipython-{user}"
            users_own.mkdir(exist_ok=True)
            os.chown(users_own, entry.pw_uid, entry.pw_gid)
            extra_env["IPYTHONDIR"] = str(users_own / "ipython")
            (home / "config").mkdir(exist_ok=True)
            (home / "config" / "migrated").touch()
        self._env = {**jupyter_env(home), **extra_env, **(env or {})}
        self._argv = [
            *(["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"] if user else []),
            str(VENV_BIN / "jupyter"),
            "server",
            "--no-browser",
            # A port taken between free_port() and the bind makes the server exit, not listen
            # on another port while the test talks to the one it chose (and to whatever took
            # it: a UI test once opened a page on a kernel's port that had closed since).
            "--ServerApp.port_retries=0",
            "--ip=127.0.0.1",
            f"--ServerApp.root_dir={root_dir}",
            f"--IdentityProvider.token={self.token}",
            *(["--allow-root"] if user is None and os.getuid() == 0 else []),
            *extra_args,
        ]
        for _ in range(5):
            if self._start_once():
                return
            if NO_PORT not in self.output():
                break
        output = self.output()
        self.log.close()
        raise AssertionError(f"the server did not start:\n{output}")

    def _start_once(self) -> bool:
        """Whether the server started on a port of its own; stopped if it did not."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(self.home / f"server-{self.port}.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [*self._argv, f"--port={self.port}"],
            env=self._env,
            # Not the test's standard input: a lab's commands come there (ui-tests/*_lab.py),
            # and the server's children would share it (read_command).
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        # Ready once the extension has reattached or swept what earlier servers left (it does
        # so just after the server starts listening), or found that no engine answers.
        # (Or, for a server whose kernels live behind a kernel service, once it says so.)
        # The marker first: once it is logged the server holds the port, so a connection
        # that succeeds is to the server.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and self.process.poll() is None:
            said = self.output()
            if NO_PORT in said:
                break
            if any(m in said for m in READY) and listening(self.port):
                return True
            time.sleep(0.1)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if NO_PORT in self.output():
            self.log.close()
        return False

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    async def call(self, method: str, *path: str, body: Any = None) -> Any:
        response = await self.fetch(method, *path, body=body)
        return json.loads(response.body) if response.body else None

    async def fetch(
        self, method: str, *path: str, body: Any = None, raise_error: bool = True
    ) -> Any:
        request = HTTPRequest(
            f"{self.url}/{'/'.join(path)}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
            body=None if body is None else json.dumps(body),
            allow_nonstandard_methods=True,
            request_timeout=180,
        )
        return await AsyncHTTPClient().fetch(request, raise_error=raise_error)

    async def answer(self, method: str, *path: str, body: Any = None) -> tuple[int, Any]:
        """The status and JSON body of a request, whatever the status."""
        response = await self.fetch(method, *path, body=body, raise_error=False)
        try:
            data = json.loads(response.body) if response.body else None
        except ValueError:
            data = response.body.decode("utf-8", "replace")
        return response.code, data

    async def open_stream(self, path: str) -> asyncio.StreamWriter:
        """A GET of an event stream, left open once its headers said 200 (close the writer to
        end it)."""
        return await open_event_stream(self.port, self.token, path)

    async def open_notebook(self, path: str, kernel_name: str) -> Any:
        """A session for the notebook at ``path`` (relative to root_dir), as JupyterLab makes
        one when it opens a notebook; returns the session model."""
        body = {
            "path": path,
            "type": "notebook",
            "name": path.rsplit("/", 1)[-1],
            "kernel": {"name": kernel_name},
        }
        return await self.call("POST", "api", "sessions", body=body)

    async def execute(self, kernel_id: str, code: str) -> Any:
        ws = await websocket_connect(
            HTTPRequest(
                f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels",
                headers={"Authorization": f"token {self.token}"},
            )
        )
        try:
            return await execute(ws, code)
        finally:
            ws.close()

    def kill9(self) -> None:
        self._ended_by_test = True
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """Stop the server (its kernels shut down); once: a second call does nothing."""
        if self.log.closed:
            return
        ended = self.process.poll()
        if ended is not None:
            if not self._ended_by_test:
                # Nobody stopped it: what it said is the only account of why.
                print(
                    f"the server on port {self.port} had exited by itself (status {ended}); "
                    f"its log ends with:\n{self.output()[-4000:]}",
                    file=sys.stderr,
                )
        else:
            # SIGTERM: the server shuts its kernels down, then exits. (SIGINT without a terminal
            # makes it exit without shutting them down: the leak check then found them.)
            said = len(self.output())
            self.process.send_signal(signal.SIGTERM)
            try:
                try:
                    self.process.wait(5)
                except subprocess.TimeoutExpired:
                    # jupyter_server's handler logs before it stops its loop: a SIGTERM that
                    # came while the server itself wrote to stderr failed in that log line
                    # ("reentrant call inside <_io.BufferedWriter name='<stderr>'>") and was
                    # lost (fresh run f20). Sent again only while no shutdown has begun.
                    if "Shutting down" not in self.output()[said:]:
                        self.process.send_signal(signal.SIGTERM)
                    self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                # Its kernels and warm containers outlive it: the leak check will say so, and
                # this says why (fresh run f6: two containers left, no log to tell).
                print(
                    f"the server on port {self.port} did not stop within 20 s of SIGTERM and "
                    f"was killed; its log ends with:\n{self.output()[-4000:]}",
                    file=sys.stderr,
                )
        self.log.close()
        # The UI tests' labs remove the server's home when they end, before the tests' reporter
        # reads what the servers logged while a failed test ran: a copy for it.
        keep = os.environ.get("JGC_KEEP_SERVER_LOGS")
        if keep:
            os.makedirs(keep, exist_ok=True)
            shutil.copyfile(self.log.name, Path(keep) / f"server-{self.port}.log")
