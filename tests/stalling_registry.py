"""A registry that answers the engine's ping, then never sends a manifest (a registry a student
runs could do the same): a pull from it stays under way until it is cancelled, however slow
the machine. For the tests of pulls' bounds and cancels (test_threat_pulls.py, test_podman.py).
"""

from __future__ import annotations

import http.server
import socketserver
import threading
from typing import Any


class StallingRegistry:
    """An HTTP registry on 127.0.0.1 that answers ``/v2/`` and holds every other request open
    with a manifest that never comes, until :meth:`close`."""

    def __init__(self) -> None:
        released = self.released = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.path == "/v2/":
                    self.send_response(200)
                    self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                    return
                self.send_response(200)
                self.send_header(
                    "Content-Type", "application/vnd.docker.distribution.manifest.v2+json"
                )
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.flush()
                released.wait(600)

            do_HEAD = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the engine's TLS attempt (answered 400, then plain HTTP) is no news

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def ref(self, name: str) -> str:
        return f"{self.host}/jgc-stall/{name}:1"

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
