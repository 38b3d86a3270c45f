"""A kernel's container on rootless Podman, as ``podman`` commands: created and started from its
ContainerSpec by one ``podman run --detach`` (hardened, the user's own uid inside through
``--userns=keep-id``, structured bind mounts, GPUs as CDI devices, rotated logs; removed when
Podman refuses to start it), inspected (with its conmon's pid, which says cheaply that it still
runs), signalled, force-removed, and listed by label as records."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ...base import labels as L
from ...base.errors import ContainerKernelError, EngineRefused, ImageMissing
from ...base.records import ContainerRecord, ContainerSpec, ContainerState
from ..backend import ContainerDetails
from ..docker_formats import container_details, short
from ..podman_args import device_args, env_lines, run_options
from .cli import PodmanCLI, PodmanFailed


def image_missing(image: str, then_start: bool = False) -> ImageMissing:
    then = ", then start the kernel again" if then_start else ""
    return ImageMissing(
        f"The image {image} is not in your Podman storage. Pull or load it first "
        f"(`podman pull {image}`){then}."
    )


def image_labels(cli: PodmanCLI, image: str) -> dict[str, str]:
    """The labels Podman would merge from ``image`` into a container of it ({} when it is not
    here: the create that follows says so in its own sentence)."""
    try:
        found = cli.json(["image", "inspect", image], what=f"inspect the image {image}")
    except PodmanFailed:
        return {}
    data = (found or [{}])[0] if isinstance(found, list) else {}
    config = data.get("Config") or {}
    return dict(config.get("Labels") or data.get("Labels") or {})


def create_args(
    spec: ContainerSpec,
    *,
    network: str,
    userns: str,
    ulimits: dict[str, tuple[int, int]],
) -> list[str]:
    """``podman create`` arguments for ``spec`` (its network and ulimits as the engine resolved
    them); its environment comes on podman's stdin (:func:`env_lines`)."""
    args = ["create", "--pull", "never", "--name", spec.name]
    args += run_options(spec, network=network, userns=userns, ulimits=ulimits)
    args += device_args(spec)
    if spec.environment:
        args += ["--env-file", "/dev/stdin"]
    args += [spec.image, *spec.command]
    return args


def refused_to_create(spec: ContainerSpec, e: PodmanFailed) -> ContainerKernelError:
    """Podman's refusal to create ``spec``'s container, as a sentence."""
    if e.image_not_known:
        return image_missing(spec.image, then_start=True)
    if spec.runtime and f'runtime "{spec.runtime}" not found' in e.said:
        return EngineRefused(
            f"Podman has no OCI runtime named {spec.runtime}, which GPUs attached through a "
            "runtime need, as this server attaches them. Podman reaches GPUs through CDI: an "
            "administrator can generate NVIDIA's CDI spec (`sudo nvidia-ctk cdi generate "
            "--output=/etc/cdi/nvidia.yaml`) and have GPUs attached through CDI, or name a "
            f"runtime {spec.runtime} in containers.conf ([engine.runtimes]).",
            setting="GPUAllocator.attach_mode",
        )
    return EngineRefused(
        f"Podman refused to create the kernel container for {spec.image}: {short(e.said)}"
    )


def refused_to_start(image: str, e: PodmanFailed) -> EngineRefused:
    return EngineRefused(
        f"Podman refused to start the kernel container for {image}: {short(e.said)}. Check "
        "the container options configured for this image (ulimits, shm size, memory, GPUs); "
        "Podman cannot raise a limit above your own (`ulimit -H -a`) unless it runs as root "
        "with CAP_SYS_RESOURCE."
    )


def run_detached(
    cli: PodmanCLI,
    spec: ContainerSpec,
    *,
    network: str,
    userns: str,
    ulimits: dict[str, tuple[int, int]],
    labels_of_image: dict[str, str] | None = None,
) -> str:
    """``spec``'s container created and started by one ``podman run --detach`` (each podman
    command costs tens of milliseconds of its own: a kernel starts that much sooner than
    through create, then start); its id. A container created but refused its start is removed,
    and the refusal is start's sentence. Blocking."""
    # Every key of the project's namespace is the service's (labels.container_labels): the
    # image's own, merged in by Podman, never stand for a record. ``labels_of_image``: the
    # engine's kept inspection of it (no command of its own), else one is asked for here.
    if labels_of_image is None:
        labels_of_image = image_labels(cli, spec.image)
    spec = dataclasses.replace(spec, labels=L.container_labels(spec.labels, labels_of_image))
    args = create_args(spec, network=network, userns=userns, ulimits=ulimits)
    # Podman writes the id here once the container exists, before it starts it: a start it
    # refuses then names the container to remove (never one found by name: another may hold
    # it). A directory of this process's own (0700), which no other account can fill first.
    directory = tempfile.mkdtemp(prefix="jgc-podman-run-")
    cidfile = Path(directory) / "cid"
    try:
        try:
            out = cli.run(
                ["run", "--detach", "--cidfile", str(cidfile), *args[1:]],
                what=f"create and start the kernel container for {spec.image}",
                stdin=env_lines(spec.environment),
            )
        except PodmanFailed as e:
            created = _read_cid(cidfile)
            if not created:
                raise refused_to_create(spec, e) from e
            remove(cli, container_id=created)
            raise refused_to_start(spec.image, e) from e
        return out.strip().splitlines()[-1]
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _read_cid(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return ""
    with os.fdopen(fd) as f:
        return f.read(200).strip()


def start(cli: PodmanCLI, *, container_id: str, image: str) -> None:
    try:
        cli.run(["start", container_id], what="start the kernel container")
    except PodmanFailed as e:
        remove(cli, container_id=container_id)
        raise refused_to_start(image, e) from e


def inspect(cli: PodmanCLI, container_id: str) -> dict[str, Any] | None:
    """``podman inspect`` of one container; None when Podman does not know it."""
    try:
        found = cli.json(
            ["container", "inspect", container_id], what="inspect the kernel container"
        )
    except PodmanFailed as e:
        if e.not_found:
            return None
        raise
    return found[0] if found else None


# What state() answers while a container's conmon runs.
RUNNING = ContainerState(status="running", running=True, exit_code=0, oom_killed=False, error="")


def state_and_conmon(cli: PodmanCLI, *, container_id: str) -> tuple[ContainerState | None, int]:
    """The container's state (None when Podman does not know it), and the pid of its conmon
    while it runs (0 otherwise)."""
    data = inspect(cli, container_id)
    if data is None:
        return None, 0
    s = data.get("State") or {}
    found = ContainerState(
        status=str(s.get("Status") or ""),
        running=bool(s.get("Running")),
        exit_code=int(s.get("ExitCode") or 0),
        oom_killed=bool(s.get("OOMKilled")),
        error=str(s.get("Error") or ""),
    )
    return found, int(s.get("ConmonPid") or 0) if found.running else 0


def conmon_alive(pid: int, container_id: str) -> bool:
    """Whether ``pid`` is still the conmon of ``container_id``: a live process of this account
    (no other account can make one of ours: a reused pid of theirs is not taken for it) whose
    command line names the container (``conmon … -c <id>``)."""
    try:
        if os.stat(f"/proc/{pid}").st_uid != os.geteuid():
            return False
        with open(f"/proc/{pid}/stat", "rb") as f:
            # "pid (comm) S …": the state follows the last ')' (a comm may hold one).
            if f.read().rsplit(b")", 1)[-1].split()[:1] in ([b"Z"], [b"X"]):
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return False
    wanted = container_id.encode()
    return any(a == b"-c" and b == wanted for a, b in zip(args, args[1:], strict=False))


def kill(cli: PodmanCLI, *, container_id: str, signum: int) -> None:
    try:
        cli.run(["kill", "--signal", str(int(signum)), container_id], what="signal the kernel")
    except PodmanFailed as e:
        # Gone, or not running: there is nothing to signal.
        if not (e.not_found or "not running" in e.said or "can only kill running" in e.said):
            raise


def remove(cli: PodmanCLI, *, container_id: str) -> bool:
    """Force-remove; False when the container was gone already."""
    try:
        out = cli.run(
            ["rm", "--force", "--volumes", "--time", "2", container_id],
            what="remove the kernel container",
        )
    except PodmanFailed as e:
        if e.not_found:
            return False
        raise
    return bool(out.strip())


def details(cli: PodmanCLI, *, container_id: str) -> ContainerDetails | None:
    data = inspect(cli, container_id)
    return None if data is None else container_details(data)


def listed(cli: PodmanCLI, *, labels: dict[str, str | None]) -> list[ContainerRecord]:
    """Containers (running or not) carrying all of ``labels`` (value None: any value)."""
    args = ["ps", "--all", "--format", "json"]
    for key, value in labels.items():
        args += ["--filter", f"label={key}" if value is None else f"label={key}={value}"]
    rows = cli.json(args, what="list its containers") or []
    return [container_record(row) for row in rows]


def by_id(cli: PodmanCLI, container_id: str) -> list[ContainerRecord]:
    """The container ``container_id`` (its full id or a prefix) as a record, if Podman has it."""
    rows = cli.json(
        ["ps", "--all", "--format", "json", "--filter", f"id={container_id}"],
        what="find a container",
    )
    return [container_record(row) for row in rows or []]


def container_record(row: dict[str, Any]) -> ContainerRecord:
    """A row of ``podman ps --format json`` as a record."""
    return ContainerRecord(
        id=str(row.get("Id") or ""),
        name=(row.get("Names") or ["?"])[0],
        image=str(row.get("Image") or ""),
        labels=dict(row.get("Labels") or {}),
        status=str(row.get("State") or ""),
        created=float(row.get("Created") or 0),
    )
