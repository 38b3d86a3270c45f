"""A real `jupyter server` process with this project's extension, and a client that starts
kernels the way JupyterLab does: ``POST /api/kernels``, then the kernel's websocket, then a
``kernel_info_request`` until its reply.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
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


class BenchServer:
    """The server runs in its own process (as JupyterLab's server does), with its own config,
    runtime and state directories under ``home``; it is stopped by its pid."""

    def __init__(self, home: Path, config: dict[str, Any]) -> None:
        # tornado's client queues beyond 10 requests at once: 20 launches at once must be 20.
        AsyncHTTPClient.configure(None, max_clients=64)
        self.home = home
        self.port = free_port()
        self.token = uuid.uuid4().hex
        self.url = f"http://127.0.0.1:{self.port}"
        self.workspace = home / "workspace"
        self.workspace.mkdir(parents=True, exist_ok=True)
        (home / "config").mkdir(exist_ok=True)
        config = dict(config)
        config["ServerApp"] = {
            **config.get("ServerApp", {}),
            "jpserver_extensions": {"benchmarks.server_probe": True},
        }
        (home / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
        self.log_path = home / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "HOME": str(self.home),
            "JUPYTER_CONFIG_DIR": str(self.home / "config"),
            "JUPYTER_DATA_DIR": str(self.home / "data"),
            "JUPYTER_RUNTIME_DIR": str(self.home / "runtime"),
            # benchmarks.server_probe, and the NVML double (tests/nvml_double.py)
            "PYTHONPATH": f"{REPO}:{REPO / 'tests'}",
            "LANG": "C.UTF-8",
        }
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "jupyter_server",
                    "--no-browser",
                    f"--port={self.port}",
                    "--ip=127.0.0.1",
                    f"--ServerApp.root_dir={self.workspace}",
                    f"--IdentityProvider.token={self.token}",
                    *(["--allow-root"] if os.getuid() == 0 else []),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of the benchmark is handled by us, once
            )
        ready = ("Kernel containers at start", "Kernel containers were not checked at start")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if any(marker in self.log_path.read_text() for marker in ready):
                return
            time.sleep(0.1)
        self.stop()
        raise ServerFailed(f"The benchmark's Jupyter server did not start:\n{self.output()}")

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

    async def call(self, method: str, path: str, body: Any = None, timeout: float = 120) -> Any:
        request = HTTPRequest(
            f"{self.url}/{path.lstrip('/')}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
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

    async def kernel_info(self, kernel_id: str, timeout: float = 60) -> None:
        """Open the kernel's websocket as JupyterLab does and wait for a kernel_info_reply."""
        ws = await websocket_connect(
            HTTPRequest(
                f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels",
                headers={"Authorization": f"token {self.token}"},
            )
        )
        try:
            msg_id = uuid.uuid4().hex
            header = {
                "msg_id": msg_id,
                "msg_type": "kernel_info_request",
                "username": "benchmark",
                "session": uuid.uuid4().hex,
                "date": datetime.now(timezone.utc).isoformat(),
                "version": "5.3",
            }
            message = {"header": header, "parent_header": {}, "metadata": {}, "content": {}}
            await ws.write_message(json.dumps({**message, "channel": "shell"}))
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                raw = await asyncio.wait_for(ws.read_message(), max(left, 0.001))
                if raw is None:
                    raise ServerFailed(f"the websocket of kernel {kernel_id} closed")
                reply = json.loads(raw)
                if reply.get("parent_header", {}).get("msg_id") == msg_id and (
                    reply["header"]["msg_type"] == "kernel_info_reply"
                ):
                    return
        finally:
            ws.close()

    async def start_kernel(self, name: str) -> tuple[str, float, float]:
        """POST /api/kernels and the first kernel_info_reply; returns the kernel id and the
        time.monotonic() when the POST answered and when the reply came."""
        model = await self.call("POST", "api/kernels", {"name": name})
        answered = time.monotonic()
        await self.kernel_info(model["id"])
        return model["id"], answered, time.monotonic()

    async def delete_kernel(self, kernel_id: str) -> None:
        await self.call("DELETE", f"api/kernels/{kernel_id}")

    async def delete_all_kernels(self) -> None:
        kernels = await self.call("GET", "api/kernels")
        await asyncio.gather(*(self.delete_kernel(k["id"]) for k in kernels))
