"""Pulls on the Docker engine: a pull's request (with the credentials it is given, and no others),
its progress stream, its cancel, and the sentence a failed pull becomes (images/pulls.py queues
and follows them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import docker
import docker.auth
import docker.errors
import requests.exceptions

from ...base.errors import ContainerKernelError, PullFailed, RegistryAuthFailed
from .. import docker_formats
from .client import EngineClient
from .private import shutdown_response_socket, start_pull, stream_items
from .sentences import short


def open_pull(
    client: EngineClient,
    ref: str,
    tag: str,
    auth_config: dict[str, str] | None,
    *,
    registry: str,
    who: str,
) -> PullStream:
    """Engine.open_pull: ask the engine to pull ``ref`` at ``tag``; the progress stream."""
    api = client.connect()
    headers = {}
    if auth_config is not None:
        headers["X-Registry-Auth"] = docker.auth.encode_header(auth_config)
    try:
        # docker-py's pull() hides the HTTP response inside its generator; the response is
        # what a cancel must close, so the same request is made here one level down.
        response = start_pull(api, ref, tag, headers)
    except docker.errors.APIError as e:
        raise pull_error(ref, registry, who, e.explanation or str(e)) from e
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
        raise client.unavailable(e) from e
    return PullStream(api, response, ref, registry, who)


class PullStream:
    """The engine's progress messages for one pull; :meth:`close` from any thread cancels it
    (the engine abandons a pull whose only client went away)."""

    def __init__(
        self, client: docker.APIClient, response: Any, ref: str, registry: str, who: str
    ) -> None:
        self._client = client
        self._response = response
        self._ref, self._registry, self._who = ref, registry, who
        self.closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            for item in stream_items(self._client, self._response):
                if "error" in item:
                    detail = item.get("errorDetail") or {}
                    raise pull_error(
                        self._ref, self._registry, self._who, detail.get("message") or item["error"]
                    )
                yield item
        except ContainerKernelError:
            raise
        except Exception as e:
            # After our own shutdown the reader fails in one of several ways (urllib3's
            # ProtocolError, OSError, even AttributeError): all of them mean "cancelled".
            if self.closed:
                return
            raise PullFailed(
                f"The pull of {self._ref} broke off: the engine connection ended "
                f"({short(str(e), 200)})."
            ) from e

    def close(self) -> None:
        """Cancel: shut the socket down, which wakes a thread blocked reading it at once (the
        engine then logs "Not continuing with pull after error: context canceled" and keeps no
        partial layers). ``response.close()`` is not used: it blocks while a read is pending."""
        self.closed = True
        shutdown_response_socket(self._response)


def pull_error(ref: str, registry: str, who: str, message: str) -> PullFailed | RegistryAuthFailed:
    return docker_formats.pull_error(ref, registry, who, message, engine="the Docker engine")
