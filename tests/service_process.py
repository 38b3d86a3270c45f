"""A real kernel service (`jupyter gpu-containers serve`) for tests, and its users.

The service runs as root (the suite's user), as an administrator would run it; its users are
real local accounts, each with a workspace they own and a token from the service's token file.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostusers import ids_of, merged
from servers import (
    NO_PORT,
    VENV_BIN,
    engine_env,
    free_port,
    listening,
    open_event_stream,
    remove_tree,
)
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse
from tornado.websocket import WebSocketClientConnection, websocket_connect

from jupyter_gpu_containers.host.hoststate import provision

TOKEN = re.compile(r"\bjgc_[A-Za-z0-9_-]+")


@dataclass
class ServiceUser:
    name: str
    token: str
    workspace: Path


class KernelService:
    """`jupyter gpu-containers serve` in a home of its own under /tmp (configuration, state,
    token file, connection files), with a workspace per user under ``home/ws``. ``env`` is added
    to the service's environment at each start (a Hub's JUPYTERHUB_API_URL / _TOKEN /
    _SERVICE_NAME, say: ``hub.Hub.service_environment()``); ``extra_env`` may be changed before
    a start."""

    def __init__(
        self, config: dict[str, Any] | None = None, env: dict[str, str] | None = None
    ) -> None:
        from conftest import STATIC_GPUS, TEST_LABEL, TEST_RUN

        self.home = Path(tempfile.mkdtemp(prefix="jgc-service-", dir="/tmp"))
        self.home.chmod(0o755)  # users' workspaces lie below it
        (self.home / "ws").mkdir()
        self.tokens_file = self.home / "etc" / "tokens"
        self.config = merged(
            {
                "ContainerProvisioner": {"extra_labels": {TEST_LABEL: TEST_RUN}},
                "ContainerPolicy": {
                    "state_dir": str(self.home / "state"),
                    "connection_dir_root": str(self.home / "kernels"),
                },
                "GPUInventory": {"static_gpus": STATIC_GPUS},
                "GPUAllocator": {"attach_mode": "runtime"},
                "ServiceTokens": {"tokens_file": str(self.tokens_file)},
                "UserDirectory": {"workspace_template": str(self.home / "ws" / "{username}")},
                # A stop removes the kernels (the leak check expects it); tests of a restart
                # that keeps them say so.
                "ServiceApp": {"keep_kernels_on_stop": False},
            },
            config or {},
        )
        # As `jupyter gpu-containers setup-host --group ''` makes it for a service that runs as
        # root: root's alone (0700), so no user can reach the ledger's lock or the records.
        provision(str(self.home / "state"), "")
        self.config_file = self.home / "service_config.json"
        self.config_file.write_text(json.dumps(self.config))
        self.users: dict[str, ServiceUser] = {}
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_count = 0

    # ------------------------------------------------------------------ users

    def add_user(self, name: str, ids: str = "") -> ServiceUser:
        """A workspace ``name`` owns (``ids``: "uid:gid" of an account of the administrator's
        map; else the system account's), and a token for them from the service's command."""
        self.add_workspace(name, ids)
        user = self.add_user_token_only(name)
        self.users[name] = user
        return user

    def add_workspace(self, name: str, ids: str = "") -> Path:
        """The workspace of ``name`` (``home/ws/name``, as UserDirectory.workspace_template
        says), owned by them (``ids`` as in add_user), and no token: under JupyterHub, users'
        tokens are the Hub's."""
        workspace = self.home / "ws" / name
        workspace.mkdir(exist_ok=True)
        uid, gid = (int(i) for i in ids.split(":")) if ids else ids_of(name)
        os.chown(workspace, uid, gid)
        return workspace

    def add_user_token_only(self, name: str) -> ServiceUser:
        """A token for ``name``, and nothing else: no workspace."""
        out = subprocess.run(
            [
                str(VENV_BIN / "jupyter"),
                "gpu-containers",
                "token",
                "add",
                name,
                f"--tokens-file={self.tokens_file}",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        found = TOKEN.findall(out)
        assert found, out
        return ServiceUser(name, found[-1], self.home / "ws" / name)

    # ------------------------------------------------------------------ the process

    def start(self, *args: str, another_port: bool = True, ready: str = "") -> None:
        """Start the service, ready once it has recovered its kernels and listens (or, with
        ``ready``, once its output says that, and it listens: a standby replica). Its port
        was free when chosen, but another process may take it before the service binds it:
        the service then exits (ServerApp.port_retries is 0 for it), and, with
        ``another_port``, starts again on another."""
        for _ in range(5):
            try:
                self._start_once(*args, ready=ready)
                return
            except AssertionError:
                if not another_port or NO_PORT not in self.output():
                    raise
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
        raise AssertionError(f"the kernel service found no free port:\n{self.output()}")

    def _start_once(self, *args: str, ready: str = "") -> None:
        self._log_count += 1
        self.log_path = self.home / f"service-{self._log_count}.log"
        log = open(self.log_path, "w")  # noqa: SIM115 - the process writes it; closed below
        env = {
            "PATH": f"{VENV_BIN}:/usr/bin:/bin",
            "HOME": str(self.home),
            "JUPYTER_CONFIG_DIR": str(self.home / "config"),
            "JUPYTER_DATA_DIR": str(self.home / "data"),
            "JUPYTER_RUNTIME_DIR": str(self.home / "runtime"),
            "LANG": "C.UTF-8",
            # A checkout tried with another's environment (PYTHONPATH=it) runs its own code.
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}),
            **engine_env(),
            **self.extra_env,
        }
        self.process = subprocess.Popen(
            [
                str(VENV_BIN / "jupyter"),
                "gpu-containers",
                "serve",
                f"--config={self.config_file}",
                f"--port={self.port}",
                f"--ServerApp.root_dir={self.home}",
                *args,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        marks = (
            (ready,)
            if ready
            else ("Kernel containers at start", "Kernel containers were not checked at start")
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the kernel service did not start:\n{self.output()}")
            if any(m in self.output() for m in marks) and listening(self.port):
                return
            time.sleep(0.1)
        raise AssertionError(f"the kernel service did not become ready:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text() if hasattr(self, "log_path") else ""

    def kill9(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            # SIGTERM: Jupyter Server shuts its kernels down, then exits (SIGINT without a
            # terminal exits without shutting them down).
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def close(self) -> None:
        self.stop()
        # Shown by pytest for a failing test only (captured output of its teardown).
        for log in sorted(self.home.glob("service-*.log")):
            lines = log.read_text(errors="replace").splitlines()
            print(f"--- {log.name} of the kernel service on port {self.port} (last 300 lines) ---")
            print("\n".join(lines[-300:]))
        remove_tree(self.home)

    # ------------------------------------------------------------------ requests

    async def fetch(
        self, user: ServiceUser | None, method: str, path: str, body: Any = None
    ) -> HTTPResponse:
        headers = {"Authorization": f"token {user.token}"} if user else {}
        request = HTTPRequest(
            f"{self.url}/{path.lstrip('/')}",
            method=method,
            headers=headers,
            body=None if body is None else json.dumps(body),
            allow_nonstandard_methods=True,
            request_timeout=180,
        )
        return await AsyncHTTPClient().fetch(request, raise_error=False)

    async def answer(
        self, user: ServiceUser | None, method: str, path: str, body: Any = None
    ) -> tuple[int, Any]:
        response = await self.fetch(user, method, path, body)
        try:
            data = json.loads(response.body) if response.body else None
        except ValueError:
            data = response.body.decode("utf-8", "replace")
        return response.code, data

    async def open_stream(self, user: ServiceUser, path: str) -> asyncio.StreamWriter:
        """A GET of an event stream as ``user``, left open once its headers said 200 (close the
        writer to end it)."""
        return await open_event_stream(self.port, user.token, path)

    async def start_kernel(
        self, user: ServiceUser, name: str, env: dict[str, str] | None = None
    ) -> str:
        code, model = await self.answer(
            user, "POST", "api/kernels", {"name": name, "env": env or {}}
        )
        assert code == 201, (code, model)
        return str(model["id"])

    async def websocket(self, user: ServiceUser, kernel_id: str) -> WebSocketClientConnection:
        return await websocket_connect(
            HTTPRequest(
                f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels",
                headers={"Authorization": f"token {user.token}"},
            )
        )
