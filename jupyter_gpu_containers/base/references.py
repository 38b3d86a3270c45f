"""Image references, read the way the Docker engine reads them.

Allow-lists, credentials and pulls all need the same three answers about a string such as
``nvcr.io/nvidia/pytorch:24.05-py3``: which registry serves it (credentials are per registry),
which repository and tag it names, and whether it pins a digest. One parser keeps them agreeing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"

# What the engine accepts: lower-case path components, an optional tag, an optional digest.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9-]+)*|\[[0-9a-fA-F:]+\])"
    r"(?::\d+)?"
)
_REFERENCE = re.compile(
    rf"^(?:(?P<host>{_HOST})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>[a-z0-9]+:[0-9a-fA-F]{32,}))?$"
)


class BadReference(ValueError):
    """Not something the engine would accept as an image reference."""


@dataclass(frozen=True)
class ImageReference:
    registry: str  # "docker.io", "nvcr.io", "127.0.0.1:5000"
    repository: str  # "nvidia/pytorch"; Docker Hub's official images get "library/"
    tag: str  # "" when only a digest is given
    digest: str  # "sha256:…" or ""
    written: str  # as the user wrote it, normalised with ":latest" when it had neither

    @property
    def name(self) -> str:
        """The repository as the engine names it locally (no docker.io/ or library/ prefix)."""
        if self.registry == DOCKER_HUB:
            return self.repository.removeprefix("library/")
        return f"{self.registry}/{self.repository}"

    @property
    def qualified(self) -> str:
        """The fully qualified name a node's runtime (containerd, the CRI) gives the image:
        "python" is "docker.io/library/python:latest"."""
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        return f"{text}@{self.digest}" if self.digest else text

    @property
    def pull_tag(self) -> str:
        """What the engine's pull API takes as ``tag``: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"


def parse_reference(text: str) -> ImageReference:
    """Split a reference into registry, repository, tag and digest, or raise BadReference."""
    text = text.strip()
    m = _REFERENCE.match(text)
    if not m or len(text) > 512:
        raise BadReference(
            f"{text!r} is not an image reference (expected e.g. nvcr.io/nvidia/pytorch:24.05-py3)."
        )
    host, path, tag, digest = m.group("host"), m.group("path"), m.group("tag"), m.group("digest")
    # Like the engine: a first component is a registry only when it looks like a host name.
    if host and not ("." in host or ":" in host or host == "localhost" or host.startswith("[")):
        if not re.fullmatch(_COMPONENT, host):
            raise BadReference(f"{text!r} is not an image reference (names are lower-case).")
        path, host = f"{host}/{path}", None
    registry = host or DOCKER_HUB
    repository = path if (host or "/" in path) else f"library/{path}"
    tag = tag or ("" if digest else "latest")
    written = text if (":" in text.rsplit("/", 1)[-1] or digest) else f"{text}:latest"
    return ImageReference(registry, repository, tag, digest or "", written)


def normalize_reference(ref: str) -> str:
    """``ubuntu`` -> ``ubuntu:latest``; references with a tag or digest are kept as written."""
    last = ref.rsplit("/", 1)[-1]
    if "@" in ref or ":" in last:
        return ref
    return f"{ref}:latest"


def registry_of(ref: str) -> str:
    """The registry that serves ``ref`` (Docker Hub for bare names); never fails."""
    try:
        return parse_reference(ref).registry
    except BadReference:
        return DOCKER_HUB
