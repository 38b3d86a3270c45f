"""Docker's formats, which Podman speaks too, read here for both backends (neither imports the
other, and this module imports neither engine's client): a container's inspect answer as the
kernel's view shows it, a line of ``logs --timestamps``, and a registry's refusal of a pull as a
sentence."""

from __future__ import annotations

from typing import Any

from ..base.errors import PullFailed, RegistryAuthFailed
from .backend import ContainerDetails, LogLine, MountInfo

_NEVER = "0001-01-01T00:00:00Z"


def short(text: str, limit: int = 400) -> str:
    """An engine's words on one line, cut to a readable length."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def as_image_id(raw: Any) -> str:
    """An image id as Docker writes it (``sha256:…``; Podman writes the hex alone)."""
    text = str(raw or "")
    return text if not text or text.startswith("sha256:") else f"sha256:{text}"


def _time(value: Any) -> str:
    text = str(value or "")
    return "" if not text or text.startswith(_NEVER[:10]) else text


def container_details(data: dict[str, Any]) -> ContainerDetails:
    """The parts of an inspect answer (``docker inspect``, ``podman inspect``) that a kernel's
    view shows."""
    state = data.get("State") or {}
    config = data.get("Config") or {}
    host = data.get("HostConfig") or {}
    mounts = tuple(
        MountInfo(
            type=str(m.get("Type") or ""),
            source=str(m.get("Source") or ""),
            target=str(m.get("Destination") or ""),
            read_only=not m.get("RW", True),
        )
        for m in data.get("Mounts") or []
    )
    return ContainerDetails(
        id=str(data.get("Id") or ""),
        name=str(data.get("Name") or "").lstrip("/"),
        image_id=as_image_id(data.get("Image")),
        # Podman names the reference it was created from apart; Docker in Config.Image.
        image_ref=str(data.get("ImageName") or config.get("Image") or ""),
        labels=dict(config.get("Labels") or {}),
        status=str(state.get("Status") or ""),
        created=str(data.get("Created") or ""),
        started_at=_time(state.get("StartedAt")),
        finished_at=_time(state.get("FinishedAt")),
        exit_code=int(state.get("ExitCode") or 0),
        oom_killed=bool(state.get("OOMKilled")),
        error=str(state.get("Error") or ""),
        mounts=mounts,
        tmpfs=tuple(sorted((host.get("Tmpfs") or {}).keys())),
    )


def log_line(raw: bytes) -> LogLine:
    """One line of ``logs --timestamps``: "<RFC 3339 time> <text>"."""
    text = raw.decode("utf-8", "replace").rstrip("\r")
    stamp, _, rest = text.partition(" ")
    if len(stamp) >= 20 and stamp[:4].isdigit() and "T" in stamp:
        return LogLine(stamp, rest)
    return LogLine("", text)


_AUTH_MARKERS = (
    "unauthorized",
    "authentication required",
    "no basic auth credentials",
    "denied",
    "incorrect username or password",
    "401",
)


def pull_error(
    ref: str, registry: str, who: str, message: str, *, engine: str
) -> PullFailed | RegistryAuthFailed:
    """The sentence for a failed pull: an authorization failure names the registry and the user;
    anything else quotes the engine (``engine``: "the Docker engine", "Podman")."""
    low = message.lower()
    said = short(message, 300)
    if any(marker in low for marker in _AUTH_MARKERS):
        login = f"the login of {who!r}" if who else "a pull without credentials"
        hint = (
            "Check the username and password (or token) for this registry"
            if who
            else "Give credentials for this registry (your own, or ask an administrator to give "
            "this server some)"
        )
        return RegistryAuthFailed(
            f"Authorization failed: the registry {registry} refused {login} for {ref}. "
            f"{hint}, then pull again. (registry said: {said})",
            setting="" if who else "RegistryCredentials.registry_auth",
        )
    if "not found" in low or "manifest unknown" in low or "does not exist" in low:
        return PullFailed(
            f"The registry {registry} has no image {ref} (or this login may not see it). "
            f"Check the name and tag. (registry said: {said})"
        )
    if "http response to https client" in low:
        return PullFailed(
            f"The registry {registry} answers over plain HTTP, which {engine} refuses to pull "
            f"{ref} from unless an administrator lists it among the engine's insecure "
            f"registries. (engine said: {said})",
            # Docker's own list is the daemon's (its insecure-registries), not an option here.
            setting="PodmanEngine.insecure_registries" if engine == "Podman" else "",
        )
    if "connection refused" in low or "no such host" in low or "i/o timeout" in low:
        return PullFailed(
            f"The registry {registry} cannot be reached from {engine}, so {ref} cannot be "
            f"pulled. (engine said: {said})"
        )
    return PullFailed(f"The pull of {ref} from {registry} failed: {said}")
