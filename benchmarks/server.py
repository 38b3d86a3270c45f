"""A real `jupyter server` process with this project's extension, and a client that starts
kernels the way JupyterLab does: ``POST /api/kernels``, then the kernel's websocket, then a
``kernel_info_request`` until its reply.

The same class runs a user's server in front of a kernel service (``args``: ``--gateway-url``…),
and, subclassed in service.py, the kernel service itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from .harness import REPO, free_port


class ServerFailed(RuntimeError):
    pass


# What jupyter_server logs when it cannot bind its port (it may go on running after that).
NO_PORT = "ERROR: the Jupyter server could not be started because"


class BenchServer:
    """The server runs in its own process (as JupyterLab's server does), with its own config,
    runtime and state directories under ``home``; it is stopped by its pid."""

    # Log lines that say the server is ready: the extension has reattached or swept what earlier
    # servers left, found no engine, or (a user's server in front of a kernel service) said so.
    ready_markers: tuple[str, ...] = (
        "Kernel containers at start",
        "Kernel containers were not checked at start",
        "kernels live behind the kernel service at",
    )

    def __init__(
        self,
        home: Path,
        config: dict[str, Any],
        args: tuple[str, ...] = (),
        workspace: Path | None = None,
        user: str = "",
        env: dict[str, str] | None = None,
    ) -> None:
        # tornado's client queues beyond 10 requests at once: 20 launches at once must be 20.
        AsyncHTTPClient.configure(None, max_clients=64)
        self.home = home
        self.port = free_port()
        self.token = uuid.uuid4().hex
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        # Run as ``user`` (setpriv execs: the pid is the server's), with ``env`` added to its
        # environment (a rootless Podman's HOME and XDG_RUNTIME_DIR).
        self.user = user
        self.extra_env = dict(env or {})
        self.workspace = workspace or home / "workspace"
        self.workspace.mkdir(parents=True, exist_ok=True)
        (home / "config").mkdir(parents=True, exist_ok=True)
        self.write_config(config)
        self.log_path = home / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def write_config(self, config: dict[str, Any]) -> None:
        config = dict(config)
        config["ServerApp"] = {
            **config.get("ServerApp", {}),
            "jpserver_extensions": {"benchmarks.server_probe": True},
        }
        (self.home / "config" / "jupyter_server_config.json").write_text(json.dumps(config))

    def argv(self) -> list[str]:
        as_user = (
            ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--init-groups"]
            if self.user
            else []
        )
        return [
            *as_user,
            sys.executable,
            "-m",
            "jupyter_server",
            "--no-browser",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            "--ip=127.0.0.1",
            f"--ServerApp.root_dir={self.workspace}",
            f"--IdentityProvider.token={self.token}",
            *(["--allow-root"] if os.getuid() == 0 and not self.user else []),
            *self.args,
        ]

    def start(self) -> None:
        # The port was free when chosen; on a shared host another process may take it before
        # the server binds it. The server then exits (ServerApp.port_retries = 0: without it,
        # it would listen on another port, and our requests would reach the other process).
        for _ in range(5):
            if self._start_once():
                return
            if NO_PORT not in self.output():
                break
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.log_path = self.home / f"server-{self.port}.log"
        raise ServerFailed(f"The benchmark's Jupyter server did not start:\n{self.output()}")

    def _start_once(self) -> bool:
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "HOME": str(self.home),
            "JUPYTER_CONFIG_DIR": str(self.home / "config"),
            "JUPYTER_DATA_DIR": str(self.home / "data"),
            "JUPYTER_RUNTIME_DIR": str(self.home / "runtime"),
            # benchmarks.server_probe, and the NVML double (tests/nvml_double.py)
            "PYTHONPATH": f"{REPO}:{REPO / 'tests'}",
            "LANG": "C.UTF-8",
            **self.extra_env,
        }
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                self.argv(),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of the benchmark is handled by us, once
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            said = self.log_path.read_text()
            if NO_PORT in said:
                break
            if any(m in said for m in self.ready_markers) and self._listening():
                return True
            time.sleep(0.1)
        self.stop()
        return False

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def output(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # SIGTERM: the server shuts its kernels down and stops (a SIGINT without a terminal
        # would stop it without shutting its kernels down).
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    # ------------------------------------------------------------------ REST

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float = 120,
        token: str | None = None,
    ) -> Any:
        """One REST request with the server's token (or ``token``: a user's, at a kernel
        service); an error status raises ServerFailed with the answer's start."""
        request = HTTPRequest(
            f"{self.url}/{path.lstrip('/')}",
            method=method,
            headers={"Authorization": f"token {token or self.token}"},
            body=None if body is None else json.dumps(body),
            allow_nonstandard_methods=True,
            request_timeout=timeout,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as e:
            detail = e.response.body.decode(errors="replace")[:500] if e.response else ""
            raise ServerFailed(f"{method} {path}: {e.code} {detail}") from None
        return json.loads(response.body) if response.body else None

    async def channels(self, kernel_id: str, token: str | None = None) -> Any:
        """The kernel's websocket, opened as JupyterLab opens it."""
        return await websocket_connect(
            HTTPRequest(
                f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels",
                headers={"Authorization": f"token {token or self.token}"},
            )
        )

    async def kernel_info(
        self, kernel_id: str, timeout: float = 60, token: str | None = None
    ) -> None:
        """Open the kernel's websocket as JupyterLab does and wait for a kernel_info_reply."""
        ws = await self.channels(kernel_id, token)
        try:
            await request_reply(ws, "kernel_info_request", {}, timeout)
        finally:
            ws.close()

    async def start_kernel(
        self, name: str, env: dict[str, str] | None = None, token: str | None = None
    ) -> tuple[str, float, float]:
        """POST /api/kernels and the first kernel_info_reply; returns the kernel id and the
        time.monotonic() when the POST answered and when the reply came."""
        body: dict[str, Any] = {"name": name}
        if env is not None:
            body["env"] = env
        model = await self.call("POST", "api/kernels", body, token=token)
        answered = time.monotonic()
        await self.kernel_info(model["id"], token=token)
        return model["id"], answered, time.monotonic()

    async def delete_kernel(self, kernel_id: str, token: str | None = None) -> None:
        await self.call("DELETE", f"api/kernels/{kernel_id}", token=token)

    async def delete_all_kernels(self, token: str | None = None) -> None:
        kernels = await self.call("GET", "api/kernels", token=token)
        await asyncio.gather(*(self.delete_kernel(k["id"], token) for k in kernels))


async def request_reply(
    ws: Any, msg_type: str, content: dict[str, Any], timeout: float = 60
) -> dict[str, Any]:
    """Send one shell request on an open kernel websocket and wait for its reply (the message
    whose parent is the request and whose type ends in ``_reply``); returns the reply."""
    msg_id = uuid.uuid4().hex
    header = {
        "msg_id": msg_id,
        "msg_type": msg_type,
        "username": "benchmark",
        "session": uuid.uuid4().hex,
        "date": datetime.now(timezone.utc).isoformat(),
        "version": "5.3",
    }
    message = {"header": header, "parent_header": {}, "metadata": {}, "content": content}
    await ws.write_message(json.dumps({**message, "channel": "shell"}))
    wanted = msg_type.replace("_request", "_reply")
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        raw = await asyncio.wait_for(ws.read_message(), max(left, 0.001))
        if raw is None:
            raise ServerFailed(f"the kernel's websocket closed before its {wanted}")
        reply: dict[str, Any] = json.loads(raw)
        if (
            reply.get("parent_header", {}).get("msg_id") == msg_id
            and reply["header"]["msg_type"] == wanted
        ):
            return reply
