"""docker-py's (and urllib3's) private parts, each a small function or adapter: a build step's
exec stream closed with its socket, and unix connections that close their socket when the
engine is away. (A pull is a connection of its own, made with the standard library: pulls.py.)

Listed, with why, in :mod:`jupyter_gpu_containers._private` (the one list of this project's
private uses); ``tests/test_private_apis.py`` pins them to the docker-py versions allowed.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import docker
import docker.transport.unixconn as unixconn


def close_exec_stream(stream: Any) -> None:
    """Close an exec's output (docker-py's CancellableStream) and the hijacked socket under it,
    which its own close() leaves open once the engine ended the stream."""
    response: Any = getattr(stream, "_response", None)
    with contextlib.suppress(AttributeError, OSError):
        reader = response.raw._fp.fp.raw  # the socket's file; the socket closes after it
        sock = reader._sock
        reader.close()
        sock.close()
    with contextlib.suppress(Exception):
        stream.close()


class _ClosingUnixConnection(unixconn.UnixHTTPConnection):
    """docker-py's unix connection, closing its socket when the connect fails."""

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.unix_socket)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class _ClosingUnixPool(unixconn.UnixHTTPConnectionPool):
    def _new_conn(self) -> _ClosingUnixConnection:
        return _ClosingUnixConnection(self.base_url, self.socket_path, self.timeout)


class _ClosingUnixAdapter(unixconn.UnixHTTPAdapter):
    def get_connection(self, url: Any, proxies: Any = None) -> _ClosingUnixPool:
        with self.pools.lock:
            pool = self.pools.get(url)
            if pool:
                return pool
            pool = _ClosingUnixPool(url, self.socket_path, self.timeout, maxsize=self.max_pool_size)
            self.pools[url] = pool
        return pool


def close_sockets_of_failed_connects(client: docker.APIClient, base_url: str) -> None:
    """Give ``client`` (a unix-socket client of this project's, no one else's) connections that
    close their socket when the connect fails."""
    if not base_url.startswith(("unix://", "http+unix://")):
        return
    socket_url = "http+unix://" + base_url.split("://", 1)[1]
    adapter = _ClosingUnixAdapter(socket_url, timeout=client.timeout)
    client._custom_adapter = adapter
    client.mount("http+docker://", adapter)
