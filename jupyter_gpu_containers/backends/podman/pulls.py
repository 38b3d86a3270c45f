"""Pulls into the user's Podman storage: ``podman pull`` with the credentials it is given and no
others (an authfile of its own, never the user's podman login, never a password on a command
line), its progress read from what podman says, its cancel, and the sentence a failed pull
becomes (images/pulls.py queues and follows them).

Without a terminal podman prints one line per step, no byte counts: each layer is reported when
its copy begins and done when the image's config is copied (which follows the layers)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from ...base.errors import PullFailed, RegistryAuthFailed
from .. import docker_formats
from .cli import PodmanCLI, end_process, last_words


def _authfile(registry: str, auth_config: dict[str, str] | None) -> str:
    """A private authfile naming only ``auth_config``'s login (an empty one without it), in the
    user's runtime directory when there is one (tmpfs, the user's alone)."""
    auths: dict[str, Any] = {}
    if auth_config is not None:
        token = f"{auth_config.get('username', '')}:{auth_config.get('password', '')}"
        auths[auth_config.get("serveraddress") or registry] = {
            "auth": base64.b64encode(token.encode()).decode()
        }
    runtime = os.environ.get("XDG_RUNTIME_DIR") or None
    fd, path = tempfile.mkstemp(prefix="jgc-pull-auth-", suffix=".json", dir=runtime)
    with os.fdopen(fd, "w") as f:  # mkstemp: mode 0600, O_EXCL
        json.dump({"auths": auths}, f)
    return path


def open_pull(
    cli: PodmanCLI,
    ref: str,
    tag: str,
    auth_config: dict[str, str] | None,
    *,
    registry: str,
    who: str,
    tls_verify: bool,
) -> PullStream:
    """Engine.open_pull: start ``podman pull`` of ``ref`` at ``tag``; the progress stream."""
    target = f"{ref}@{tag}" if tag.startswith("sha256:") else f"{ref}:{tag}"
    authfile = _authfile(registry, auth_config)
    args = ["pull", "--authfile", authfile, f"--tls-verify={str(tls_verify).lower()}", target]
    try:
        process = cli.popen(args, merge_stderr=True)
    except BaseException:
        os.unlink(authfile)
        raise
    return PullStream(cli, process, authfile, target, registry, who)


class PullStream:
    """Progress messages (in Docker's shape) for one ``podman pull``; :meth:`close` from any
    thread cancels it (podman is ended, and keeps no partial image)."""

    def __init__(
        self,
        cli: PodmanCLI,
        process: Any,
        authfile: str,
        ref: str,
        registry: str,
        who: str,
    ) -> None:
        self._cli = cli
        self._process = process
        self._authfile = authfile
        self._ref, self._registry, self._who = ref, registry, who
        self.closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        layers: list[str] = []
        said: list[str] = []
        stream = self._process.stdout
        try:
            for raw in stream:
                line = raw.decode("utf-8", "replace").strip()
                if not line:
                    continue
                said.append(line)
                del said[:-20]
                if line.startswith("Copying blob "):
                    layer = line.split()[2].removeprefix("sha256:")[:12]
                    if layer not in layers:
                        layers.append(layer)
                        yield {"status": "Pulling fs layer", "id": layer}
                    if line.endswith(" skipped: already exists"):
                        yield {"status": "Already exists", "id": layer}
                elif line.startswith("Copying config "):
                    for layer in layers:
                        yield {"status": "Pull complete", "id": layer}
                elif not line.startswith("Error") and " " in line:
                    yield {"status": line.rstrip(".")}
            code = self._process.wait()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self._authfile)
            end_process(self._process)
        if self.closed:
            return
        if code != 0:
            raise pull_error(self._ref, self._registry, self._who, last_words("\n".join(said)))
        digest = self._digest()
        if digest:
            yield {"status": f"Digest: {digest}"}
        yield {"status": f"Status: Downloaded newer image for {self._ref}"}

    def _digest(self) -> str:
        """The pulled manifest's digest, as the registry names it (what Docker reports)."""
        try:
            found = self._cli.json(["image", "inspect", self._ref], what="inspect the pull")
        except Exception:
            return ""
        data = (found or [{}])[0]
        return str(data.get("Digest") or "")

    def close(self) -> None:
        self.closed = True
        end_process(self._process)
        with contextlib.suppress(OSError):
            os.unlink(self._authfile)


def pull_error(ref: str, registry: str, who: str, message: str) -> PullFailed | RegistryAuthFailed:
    return docker_formats.pull_error(ref, registry, who, message, engine="Podman")
