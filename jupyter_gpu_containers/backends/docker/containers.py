"""A kernel's container on the Docker engine, as calls of one docker-py client (Engine runs each on
its pool): created from its ContainerSpec (hardened, structured mounts, json-file logs), started
(removed when the engine refuses to start it), its state and details inspected, signalled,
force-removed, and containers listed by label as records."""

from __future__ import annotations

import contextlib
from typing import Any

import docker
import docker.errors
import docker.types

from ...base import labels as L
from ...base.errors import EngineRefused
from ...base.records import ContainerRecord, ContainerSpec, ContainerState
from ..backend import ContainerDetails
from ..docker_formats import container_details
from .networks import KernelNetworks
from .sentences import image_missing, short


def hardening_options(cap_add: list[str], no_new_privileges: bool) -> dict[str, Any]:
    """create_host_config arguments shared by kernel and probe containers: every capability
    dropped but ``cap_add``, and no-new-privileges."""
    return {
        "cap_drop": ["ALL"],
        "cap_add": list(cap_add) or None,
        "security_opt": ["no-new-privileges"] if no_new_privileges else None,
    }


def image_labels(c: docker.APIClient, image: str) -> dict[str, str]:
    """The labels the engine would merge from ``image`` into a container of it ({} when it is
    not here: the create that follows says so in its own sentence)."""
    try:
        config = c.inspect_image(image).get("Config") or {}
    except docker.errors.ImageNotFound:
        return {}
    return dict(config.get("Labels") or {})


def create(c: docker.APIClient, *, spec: ContainerSpec, networks: KernelNetworks) -> str:
    # Its network as networks.py resolves the spec's mode ("bridge": the kernels' network, where
    # no kernel reaches another).
    network_mode = networks.resolve(c, spec.network_mode)
    # Every key of the project's namespace is the service's (labels.container_labels): the
    # image's own, merged in by the engine, never stand for a record.
    labels = L.container_labels(spec.labels, image_labels(c, spec.image))
    host_config = c.create_host_config(
        # Structured mounts, not "source:target:mode" bind strings, which the engine splits on
        # ':' (a path holding one would be read as another mount); and the engine refuses a
        # missing source instead of creating it, as root, on the host.
        mounts=[
            docker.types.Mount(m.target, m.source, type="bind", read_only=m.read_only)
            for m in spec.mounts
        ]
        or None,
        tmpfs=spec.tmpfs or None,
        read_only=spec.read_only or None,
        **hardening_options(spec.cap_add, spec.no_new_privileges),
        shm_size=spec.shm_size,
        ulimits=[
            docker.types.Ulimit(name=name, soft=soft, hard=hard)
            for name, (soft, hard) in spec.ulimits.items()
        ]
        or None,
        runtime=spec.runtime,
        network_mode=network_mode,
        mem_limit=spec.mem_limit,
        pids_limit=spec.pids_limit,
        init=spec.init,
        port_bindings={port: [addr] for port, addr in spec.port_bindings.items()} or None,
        device_requests=[docker.types.DeviceRequest(**d) for d in spec.device_requests] or None,
        # json-file whatever the daemon's default: rotated, and readable for the log tails that
        # error sentences quote.
        log_config=docker.types.LogConfig(
            type="json-file",
            config={"max-size": spec.log_max_size, "max-file": str(spec.log_max_files)},
        ),
    )
    try:
        created = c.create_container(
            image=spec.image,
            command=spec.command,
            name=spec.name,
            labels=labels,
            environment=spec.environment,
            user=spec.user,
            working_dir=spec.working_dir,
            entrypoint=[""] if spec.entrypoint == [] else spec.entrypoint,
            host_config=host_config,
            ports=list(spec.port_bindings) or None,
        )
    except docker.errors.ImageNotFound as e:
        raise image_missing(spec.image, then_start=True) from e
    except docker.errors.APIError as e:
        raise EngineRefused(
            f"The Docker engine refused to create the kernel container for {spec.image}: "
            f"{short(e.explanation or str(e))}"
        ) from e
    return str(created["Id"])


def start(c: docker.APIClient, *, container_id: str, image: str) -> None:
    try:
        c.start(container_id)
    except docker.errors.APIError as e:
        with contextlib.suppress(docker.errors.APIError):
            c.remove_container(container_id, force=True, v=True)
        raise EngineRefused(
            f"The Docker engine refused to start the kernel container for {image}: "
            f"{short(e.explanation or str(e))}. Check the container options configured for "
            "this image (ulimits, runtime, shm size, memory, GPUs)."
        ) from e


def state(c: docker.APIClient, *, container_id: str) -> ContainerState | None:
    try:
        s = c.inspect_container(container_id)["State"]
    except docker.errors.NotFound:
        return None
    return ContainerState(
        status=s.get("Status", ""),
        running=bool(s.get("Running")),
        exit_code=int(s.get("ExitCode") or 0),
        oom_killed=bool(s.get("OOMKilled")),
        error=s.get("Error") or "",
    )


def kill(c: docker.APIClient, *, container_id: str, signum: int) -> None:
    try:
        c.kill(container_id, signal=int(signum))
    except docker.errors.APIError as e:
        # 404: already gone; 409: not running. Either way there is nothing to signal.
        if e.status_code not in (404, 409):
            raise


def remove(c: docker.APIClient, *, container_id: str) -> bool:
    """Force-remove; False when the container was gone, or is being removed by another call."""
    try:
        c.remove_container(container_id, force=True, v=True)
    except docker.errors.APIError as e:
        if e.status_code not in (404, 409):  # gone, or already being removed
            raise
        return False
    return True


def details(c: docker.APIClient, *, container_id: str) -> ContainerDetails | None:
    try:
        return container_details(c.inspect_container(container_id))
    except docker.errors.NotFound:
        return None


def listed(c: docker.APIClient, *, labels: dict[str, str | None]) -> list[ContainerRecord]:
    """Containers (running or not) carrying all of ``labels`` (value None: any value)."""
    filters = [k if v is None else f"{k}={v}" for k, v in labels.items()]
    rows = c.containers(all=True, filters={"label": filters})
    return [container_record(row) for row in rows]


def container_record(row: dict[str, Any]) -> ContainerRecord:
    """A row of the engine's container list as a record."""
    return ContainerRecord(
        id=row["Id"],
        name=(row.get("Names") or ["?"])[0].lstrip("/"),
        image=row.get("Image", ""),
        labels=dict(row.get("Labels") or {}),
        status=row.get("State", ""),
        created=float(row.get("Created") or 0),
    )
