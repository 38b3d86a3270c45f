"""Pulls on the Docker engine: a pull's request (with the credentials it is given, and no others),
its progress stream, its cancel, and the sentence a failed pull becomes (images/pulls.py queues
and follows them).

A pull is a connection of its own to the engine, made here with the standard library's HTTP
client, not the shared docker-py client's pool: the engine answers ``POST /images/create`` only
once the registry has sent the image's manifest, and a registry that never does (one a student
runs, or one that hangs) would hold a pooled request that nothing can reach. The socket is
ours from the moment it is connected, so :meth:`PullStream.close` cancels at any point, before
the engine's first answer as well as during the download.
"""

from __future__ import annotations

import codecs
import contextlib
import http.client
import json
import socket
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import Any

import docker.auth

from ...base.errors import ContainerKernelError, PullFailed, RegistryAuthFailed
from .. import docker_formats
from .client import EngineClient
from .sentences import short

# The most bytes one progress message may take (the engine's are a few hundred): a stream that
# sends more without a message's end is not the engine's.
MAX_MESSAGE_BYTES = 1 << 20


def open_pull(
    client: EngineClient,
    ref: str,
    tag: str,
    auth_config: dict[str, str] | None,
    *,
    registry: str,
    who: str,
) -> PullStream:
    """Engine.open_pull: connect to the engine for a pull of ``ref`` at ``tag``; the progress
    stream, which makes the request when first read."""
    api = client.connect()  # the engine's API version, and a sentence when it is not there
    headers = {"Content-Type": "text/plain", "Content-Length": "0"}
    if auth_config is not None:
        headers["X-Registry-Auth"] = docker.auth.encode_header(auth_config)
    query = urllib.parse.urlencode({"fromImage": ref, "tag": tag})
    path = f"/v{api.api_version}/images/create?{query}"
    try:
        connection = _connection(client.settings.resolved_url, client.settings.api_timeout)
    except ValueError as e:
        raise ContainerKernelError(str(e), status=501, setting="Engine.docker_url") from None
    try:
        connection.connect()
    except OSError as e:
        raise client.unavailable(e) from e
    return PullStream(connection, path, headers, ref, registry, who)


def _connection(url: str, timeout: float) -> http.client.HTTPConnection:
    """A connection to the engine at ``url``; ValueError, in a sentence, for an address this
    project's pulls cannot speak to (TLS or ssh: Engine.docker_url, the caller's setting)."""
    if url.startswith(("unix://", "http+unix://")):
        return _UnixConnection(url.split("://", 1)[1], timeout)
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("tcp", "http") or not parsed.hostname:
        raise ValueError(
            f"Pulls reach the Docker engine at a unix:// or plain tcp:// address, and this "
            f"server's address of the engine is {url[:200]!r}: pull the image with docker on "
            "the engine's host, or ask an administrator to point this server at the engine's "
            "unix socket."
        )
    return http.client.HTTPConnection(parsed.hostname, parsed.port or 2375, timeout=timeout)


class _UnixConnection(http.client.HTTPConnection):
    """HTTP on the engine's unix socket; the socket is closed when the connect fails."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def progress_messages(chunks: Iterable[bytes], ref: str) -> Iterator[Any]:
    """The JSON messages of the engine's progress stream, however its bytes are cut into chunks
    (a message, or a character of a layer's or an error's text, may span two). PullFailed for
    a stream that goes on for MAX_MESSAGE_BYTES without a message's end."""
    decoder = json.JSONDecoder()
    text = codecs.getincrementaldecoder("utf-8")("replace")
    buffer = ""
    for chunk in chunks:
        buffer += text.decode(chunk)
        while True:
            buffer = buffer.lstrip()
            if not buffer:
                break
            try:
                item, end = decoder.raw_decode(buffer)
            except ValueError:
                if len(buffer) > MAX_MESSAGE_BYTES:
                    raise PullFailed(
                        f"The pull of {ref} broke off: the engine sent something that is not "
                        "its progress."
                    ) from None
                break  # the rest of this message is still to come
            buffer = buffer[end:]
            yield item


class PullStream:
    """The engine's progress messages for one pull; :meth:`close` from any thread cancels it
    (the engine abandons a pull whose only client went away), whether or not the engine has
    answered yet."""

    def __init__(
        self,
        connection: http.client.HTTPConnection,
        path: str,
        headers: dict[str, str],
        ref: str,
        registry: str,
        who: str,
    ) -> None:
        self._connection = connection
        self._path, self._headers = path, headers
        self._ref, self._registry, self._who = ref, registry, who
        self.closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            yield from self._messages()
        except ContainerKernelError:
            raise
        except Exception as e:
            # After our own shutdown the reads fail in one of several ways (OSError,
            # http.client's errors): all of them mean "cancelled".
            if self.closed:
                return
            raise PullFailed(
                f"The pull of {self._ref} broke off: the engine connection ended "
                f"({short(str(e), 200)})."
            ) from e
        finally:
            self._connection.close()

    def _messages(self) -> Iterator[dict[str, Any]]:
        connection = self._connection
        connection.request("POST", self._path, headers=self._headers)
        sock = connection.sock
        if sock is not None:  # the answer comes when the registry's does: no time bound here
            sock.settimeout(None)
        response = connection.getresponse()
        if response.status >= 400:
            body = response.read(MAX_MESSAGE_BYTES)
            try:
                message = str(json.loads(body).get("message") or "")
            except (ValueError, AttributeError):
                message = body.decode("utf-8", "replace")
            raise self._error(message or f"HTTP {response.status}")
        chunks = iter(lambda: response.read1(65536), b"")
        for item in progress_messages(chunks, self._ref):
            if not isinstance(item, dict):
                continue
            if "error" in item:
                detail = item.get("errorDetail") or {}
                raise self._error(str(detail.get("message") or item["error"]))
            yield item

    def _error(self, message: str) -> PullFailed | RegistryAuthFailed:
        return pull_error(self._ref, self._registry, self._who, message)

    def close(self) -> None:
        """Cancel: shut the socket down, which wakes a thread blocked on it at once, waiting
        for the engine's answer or reading its progress (the engine then logs "Not continuing
        with pull after error: context canceled" and keeps no partial layers)."""
        self.closed = True
        sock = self._connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def pull_error(ref: str, registry: str, who: str, message: str) -> PullFailed | RegistryAuthFailed:
    return docker_formats.pull_error(ref, registry, who, message, engine="the Docker engine")
