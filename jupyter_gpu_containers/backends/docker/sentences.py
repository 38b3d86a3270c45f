"""The sentences of :mod:`jupyter_gpu_containers.base.errors` that several parts of the Docker
backend translate docker-py's failures into: an engine that cannot be reached, an image that is
not on the host, and the engine's own words cut to a readable length."""

from __future__ import annotations

from ...base.errors import EngineUnavailable, ImageMissing


def unavailable(url: str, e: BaseException) -> EngineUnavailable:
    """The engine at ``url`` could not be reached (``e`` says how)."""
    detail = str(e)
    hint = (
        "Start it (for example `sudo systemctl start docker`), or ask an administrator to point "
        "this server at the engine's address."
    )
    if isinstance(e, PermissionError) or "Permission denied" in detail:
        hint = (
            "This server's user may not use that socket: an administrator can add it to the "
            "`docker` group, or point this server at another address of the engine."
        )
    return EngineUnavailable(
        f"The Docker engine is not reachable at {url}. {hint} (engine said: {short(detail)})",
        setting="Engine.docker_url",
    )


def image_missing(image: str, then_start: bool = False) -> ImageMissing:
    then = ", then start the kernel again" if then_start else ""
    return ImageMissing(
        f"The image {image} is not on this host. Pull or build it first "
        f"(`docker pull {image}`){then}."
    )


def short(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
