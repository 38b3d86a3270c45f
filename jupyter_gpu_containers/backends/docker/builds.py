"""Image builds on the Docker engine: a build of a context this project wrote (a tar stream, sent
as it is written), its output read line by line, its cancel, and the sentence a failed build
becomes (images/saves.py follows them).

The build reaches a network only where its options say (the engine's default network, never the
host's), never pulls (its FROM names images already here), and reuses no layer of an earlier
build; the engine's intermediate containers are removed whatever happens."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

import docker
import docker.errors
import requests.exceptions

from ...base.errors import ContainerKernelError, EngineRefused
from ..backend import BuildOptions
from .client import EngineClient
from .private import shutdown_response_socket, start_build, stream_items
from .sentences import short


def open_build(
    client: EngineClient, context: BinaryIO, name: str, options: BuildOptions
) -> BuildStream:
    """Engine.open_build: send ``context`` to the engine and start its build (untagged; ``name``
    says what it is in sentences); the output stream. Returns once the engine has the whole
    context."""
    api = client.connect()
    params: dict[str, Any] = {
        "rm": True,
        "forcerm": True,
        "pull": False,
        # No layer of another build reused: a step's cache key is its text, which anyone may
        # write, and its layer whatever their build made of it.
        "nocache": True,
        "networkmode": "default" if options.network else "none",
        "q": False,
    }
    if options.memory:
        params["memory"] = options.memory
    try:
        response = start_build(api, context, params)
    except docker.errors.APIError as e:
        raise build_error(name, e.explanation or str(e)) from e
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
        raise client.unavailable(e) from e
    return BuildStream(api, response, name)


class BuildStream:
    """The engine's output of one build, line by line; :meth:`close` from any thread cancels it
    (the engine stops a build whose client went away). ``image_id``: the built image, once the
    engine said it."""

    def __init__(self, client: docker.APIClient, response: Any, tag: str) -> None:
        self._client = client
        self._response = response
        self._tag = tag
        self.closed = False
        self.image_id = ""

    def __iter__(self) -> Iterator[str]:
        try:
            for item in stream_items(self._client, self._response):
                if "error" in item:
                    detail = item.get("errorDetail") or {}
                    raise build_error(self._tag, detail.get("message") or item["error"])
                aux = item.get("aux")
                if isinstance(aux, dict) and aux.get("ID"):
                    self.image_id = str(aux["ID"])
                text = item.get("stream")
                if isinstance(text, str):
                    for line in text.splitlines():
                        if line.strip():
                            yield line.rstrip()
        except ContainerKernelError:
            raise
        except Exception as e:
            if self.closed:  # our own shutdown, in whichever way the reader fails
                return
            raise EngineRefused(
                f"The build of {self._tag} broke off: the engine connection ended "
                f"({short(str(e), 200)})."
            ) from e

    def close(self) -> None:
        self.closed = True
        shutdown_response_socket(self._response)


def build_error(name: str, message: str) -> EngineRefused:
    return EngineRefused(f"The Docker engine could not build {name}: {short(message, 300)}")
