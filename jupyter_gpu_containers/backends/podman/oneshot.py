"""One-shot containers on Podman (the readiness probe's): a command run in a throw-away, hardened
container of an image with no network and small limits, its output read back, the container killed
past its timeout and removed whatever happens."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess

from ...base import labels as L
from ...base.errors import EngineRefused, EngineUnavailable
from ...base.records import OneshotResult
from ..docker_formats import short
from ..podman_args import env_lines, hardening_args
from .cli import PodmanCLI, PodmanFailed
from .containers import image_labels, image_missing, remove
from .images import image_id


def run_oneshot(
    cli: PodmanCLI,
    *,
    log: logging.Logger,
    userns: str,
    ulimits: dict[str, tuple[int, int]],
    image: str,
    command: list[str],
    labels: dict[str, str],
    timeout: float,
    entrypoint: list[str] | None,
    user: str | None,
    cap_add: list[str] | None,
    no_new_privileges: bool,
    environment: dict[str, str] | None,
) -> OneshotResult:
    """PodmanEngine.run_oneshot_sync (the Docker engine's says what each argument does)."""
    args = ["create", "--pull", "never", "--network", "none", "--init"]
    args += ["--memory", "512m", "--pids-limit", "128", "--log-driver", "k8s-file"]
    if userns:
        args += ["--userns", userns]
    for name, (soft, hard) in ulimits.items():
        args += ["--ulimit", f"{name}={soft}:{hard}"]
    args += hardening_args(cap_add or [], no_new_privileges)
    target = image.removeprefix("sha256:")  # podman names an image by its bare id
    # The project's keys the image carries are set "" (labels.container_labels).
    for key, value in L.container_labels(labels, image_labels(cli, target)).items():
        args += ["--label", f"{key}={value}"]
    if user:
        args += ["--user", user]
    if entrypoint is not None:
        args += ["--entrypoint", json.dumps(entrypoint) if entrypoint else ""]
    if environment:
        args += ["--env-file", "/dev/stdin"]
    try:
        out = cli.run(
            [*args, target, *command],
            what=f"create a one-shot container for {image}",
            stdin=env_lines(environment or {}),
        )
    except PodmanFailed as e:
        if e.image_not_known:
            raise image_missing(image) from e
        raise EngineRefused(
            f"Podman refused to create a one-shot container for {image}: {short(e.said)}"
        ) from e
    container_id = out.strip().splitlines()[-1]
    try:
        exit_code, timed_out = -1, False
        try:
            cli.run(["start", container_id], what=f"start a one-shot container for {image}")
            try:
                said = cli.run(["wait", container_id], timeout=timeout, what="wait for it")
                exit_code = int(said.strip().splitlines()[-1])
            except EngineUnavailable as e:
                if not isinstance(e.__cause__, subprocess.TimeoutExpired):
                    raise
                timed_out = True
                with contextlib.suppress(PodmanFailed, EngineUnavailable):
                    cli.run(["kill", container_id], what="kill it")
            # Separate streams: callers parse stdout, which entrypoints also print to.
            stdout, stderr = cli.run_both(["logs", "--tail", "500", container_id], what="read it")
        except PodmanFailed as e:
            raise EngineRefused(
                f"Podman refused to run a one-shot container for {image}: {short(e.said)}"
            ) from e
        ran = ""
        if image.startswith("sha256:") and len(image) == 71:
            ran = image
        else:
            try:
                found = cli.json(["container", "inspect", container_id], what="inspect it")
                ran = image_id((found or [{}])[0].get("Image"))
            except Exception:
                ran = ""
        return OneshotResult(
            exit_code=exit_code, stdout=stdout, stderr=stderr, timed_out=timed_out, image_id=ran
        )
    finally:
        try:
            remove(cli, container_id=container_id)
        except Exception as e:  # its labels tell it apart for a later clean-up
            log.warning("Could not remove one-shot container %s: %s", container_id[:12], e)
