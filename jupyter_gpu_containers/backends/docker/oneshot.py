"""One-shot containers on the Docker engine (the readiness probe's): a command run in a throw-away,
hardened container of an image with no network and small limits, its output read back, the
container killed past its timeout and removed whatever happens."""

from __future__ import annotations

import contextlib
import logging
import time

import docker
import docker.errors
import docker.types
import requests.exceptions

from ...base import labels as L
from ...base.errors import EngineRefused
from ...base.records import OneshotResult
from .containers import hardening_options, image_labels
from .sentences import image_missing, short


def run_oneshot(
    c: docker.APIClient,
    *,
    log: logging.Logger,
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
    """Engine.run_oneshot_sync, on the client ``c`` (which says what each argument does)."""
    host_config = c.create_host_config(
        network_mode="none",
        init=True,  # reaps whatever an entrypoint forks, and forwards our kill
        mem_limit="512m",
        pids_limit=128,
        # Reading the output back needs a driver the engine can read from, whatever the
        # daemon's default (syslog, none, ...) is.
        log_config=docker.types.LogConfig(type="json-file", config={"max-size": "1m"}),
        **hardening_options(cap_add or [], no_new_privileges),
    )
    try:
        created = c.create_container(
            image=image,
            command=command,
            # The project's keys the image carries are set "" (labels.container_labels).
            labels=L.container_labels(labels, image_labels(c, image)),
            user=user,
            entrypoint=[""] if entrypoint == [] else entrypoint,
            environment=environment or None,
            host_config=host_config,
        )
    except docker.errors.ImageNotFound as e:
        raise image_missing(image) from e
    except docker.errors.APIError as e:
        raise EngineRefused(
            f"The Docker engine refused to create a one-shot container for {image}: "
            f"{short(e.explanation or str(e))}"
        ) from e
    container_id = str(created["Id"])
    try:
        try:
            c.start(container_id)
            started = time.monotonic()
            exit_code, timed_out = -1, False
            try:
                status = c.wait(container_id, timeout=timeout)
                exit_code = int(status.get("StatusCode", -1))
            except (requests.exceptions.Timeout, requests.exceptions.ConnectionError):
                # Over a unix socket docker-py reports the wait's read timeout as a
                # ConnectionError; one that came early is the engine's trouble, not ours.
                if time.monotonic() - started < timeout:
                    raise
                timed_out = True
                with contextlib.suppress(docker.errors.APIError):  # 409: it just ended
                    c.kill(container_id)
            # Separate streams: callers parse stdout, which entrypoints also print to.
            stdout = c.logs(container_id, stdout=True, stderr=False, tail=500)
            stderr = c.logs(container_id, stdout=False, stderr=True, tail=500)
        except docker.errors.APIError as e:
            raise EngineRefused(
                f"The Docker engine refused to run a one-shot container for {image}: "
                f"{short(e.explanation or str(e))}"
            ) from e
        return OneshotResult(
            exit_code=exit_code,
            stdout=stdout.decode("utf-8", "replace"),
            stderr=stderr.decode("utf-8", "replace"),
            timed_out=timed_out,
            image_id=_oneshot_image_id(c, container_id, image),
        )
    finally:
        try:
            c.remove_container(container_id, force=True, v=True)
        except docker.errors.APIError as e:
            if e.status_code not in (404, 409):  # gone, or already being removed
                log.warning("Could not remove one-shot container %s: %s", container_id[:12], e)
        except requests.exceptions.RequestException as e:
            # The engine went away: nothing to remove it with. Its labels tell it apart.
            log.warning("Could not remove one-shot container %s: %s", container_id[:12], e)


def _oneshot_image_id(c: docker.APIClient, container_id: str, image: str) -> str:
    """The id of the image a one-shot container ran: ``image`` itself when it is an id
    (the probe runs by id), else the container's Image field ("" if it cannot be read)."""
    if image.startswith("sha256:") and len(image) == 71:
        return image
    try:
        return str(c.inspect_container(container_id).get("Image") or "")
    except (docker.errors.APIError, requests.exceptions.RequestException):
        return ""
