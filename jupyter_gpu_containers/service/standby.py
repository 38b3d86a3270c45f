"""What a standby replica of the kernel service answers while it waits to act.

Until its replica holds the lease (backends/kubernetes/lease.py) the service starts nothing: no
kernel manager, no reattach, no culler. Its pod still answers its probes, so that a Deployment's
rollout completes and the pod is not restarted for being idle: ``/api`` answers as Jupyter
Server's does (its version), and every other path 503 with a sentence. The Service routes users
to the active replica only (its label), so a user reaches this only by the pod's own address.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .. import __version__

STANDBY_SENTENCE = (
    "This is a standby replica of the kernel service: another replica serves users, and this "
    "one takes over if that one stops. Reach the service through its Kubernetes Service, not a "
    "pod's own address."
)


class _Answers(BaseHTTPRequestHandler):
    server_version = "jupyter-gpu-containers-standby"

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _answer(self) -> None:
        if self.path.split("?")[0].rstrip("/") == "/api":
            self._send(200, {"version": __version__, "standby": True})
        else:
            self._send(503, {"message": STANDBY_SENTENCE, "reason": "Standby"})

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes every few seconds: nothing to log


class StandbyAnswers:
    """Answers on the service's address while the block runs (nothing when the port is 0 or
    cannot be bound: the service itself then says why when it binds)."""

    def __init__(self, ip: str, port: int, log: logging.Logger | logging.LoggerAdapter[Any]):
        self._address = (ip or "", port)
        self._log = log
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> StandbyAnswers:
        if not self._address[1]:
            return self
        try:
            self._server = ThreadingHTTPServer(self._address, _Answers)
        except OSError as e:
            self._log.warning("The standby could not answer on port %s: %s", self._address[1], e)
            return self
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="gpu-containers-standby",
            daemon=True,
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
