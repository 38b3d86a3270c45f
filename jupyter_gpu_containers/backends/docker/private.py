"""docker-py's (and urllib3's) private parts, each a small function or adapter: a pull's request
made one level below ``pull()``, its progress read, its socket shut down to cancel it, a build
step's exec stream closed with its socket, and unix connections that close their socket when
the engine is away.

Listed, with why, in :mod:`jupyter_gpu_containers._private` (the one list of this project's
private uses); ``tests/test_private_apis.py`` pins them to the docker-py versions allowed.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import docker
import docker.transport.unixconn as unixconn


def start_pull(client: docker.APIClient, ref: str, tag: str, headers: dict[str, str]) -> Any:
    """``POST /images/create`` as docker-py's pull() makes it, returning the streamed response
    (which pull() hides, and which a cancel must reach)."""
    response = client._post(
        client._url("/images/create"),
        params={"fromImage": ref, "tag": tag},
        headers=headers,
        stream=True,
        timeout=None,
    )
    client._raise_for_status(response)
    return response


def stream_items(client: docker.APIClient, response: Any) -> Iterator[dict[str, Any]]:
    """The decoded JSON messages of a streamed engine response (a pull's progress)."""
    yield from client._stream_helper(response, decode=True)


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


def shutdown_response_socket(response: Any) -> None:
    """Shut the socket under a streamed response down (from any thread)."""
    raw: Any = getattr(response, "raw", None)
    with contextlib.suppress(AttributeError, OSError):
        raw._fp.fp.raw._sock.shutdown(socket.SHUT_RDWR)


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
