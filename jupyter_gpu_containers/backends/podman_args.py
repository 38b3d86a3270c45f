"""Podman's command line for a kernel's container, as two backends speak it: the Podman backend
(``podman run --detach`` on this host) and the Slurm backend's batch script (``podman run`` on the
job's node, as the job's user). Neither backend imports the other; both import this. Pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from ..base.errors import EngineRefused, PathRefused, ValueRefused
from ..base.records import ContainerSpec

# Every character at which some reader of an environment's lines ends a line: Python's
# str.splitlines (the batch script's own check, pyxis's exports), Go's line scanner (podman's
# --env-file: "\n", a "\r" before it dropped), the shell's here-document ("\n"). A value holding
# one would reach the kernel changed, or as another variable, or fail in a reader: refused here,
# where every environment becomes lines (the Podman backend, the Slurm jobs and their probe).
LINE_BREAKS = {
    "\n": "a line feed",
    "\r": "a carriage return",
    "\v": "a vertical tab",
    "\f": "a form feed",
    "\x1c": "a file separator (U+001C)",
    "\x1d": "a group separator (U+001D)",
    "\x1e": "a record separator (U+001E)",
    "\x85": "a next-line character (U+0085)",
    "\u2028": "a line separator (U+2028)",
    "\u2029": "a paragraph separator (U+2029)",
}
# A name podman's --env-file takes as it is: not a comment ("#"), no glob ("*") that would import
# podman's own variables, no whitespace it would trim.
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def hardening_args(cap_add: Iterable[str], no_new_privileges: bool) -> list[str]:
    """Every capability dropped but ``cap_add``, and no-new-privileges (kernel and probe)."""
    args = ["--cap-drop", "ALL"]
    for cap in cap_add:
        args += ["--cap-add", cap]
    if no_new_privileges:
        args += ["--security-opt", "no-new-privileges"]
    return args


def mount_arg(source: str, target: str, read_only: bool) -> str:
    # podman splits --mount on "," and "=": a path holding one would be read as another option.
    for path in (source, target):
        if "," in path or "=" in path:
            raise PathRefused(
                f"The path {path!r} cannot be mounted into a Podman container: it holds a ',' "
                "or '=', which podman's --mount reads as the start of another option. Rename "
                "it, or mount a directory above it."
            )
    return f"type=bind,source={source},destination={target}" + (",ro" if read_only else "")


def device_args(spec: ContainerSpec) -> list[str]:
    """GPUs as Podman names them: CDI devices (``nvidia.com/gpu=<uuid>``). Podman has no
    ``--gpus``: a device request for NVIDIA's driver is refused with what to do instead."""
    args: list[str] = []
    for request in spec.device_requests:
        if request.get("driver") != "cdi":
            raise EngineRefused(
                "Podman reaches GPUs through CDI, not through device requests: an administrator "
                "can generate NVIDIA's CDI spec (`sudo nvidia-ctk cdi generate "
                "--output=/etc/cdi/nvidia.yaml`) and have GPUs attached through CDI.",
                setting="GPUAllocator.attach_mode",
            )
        for name in request.get("device_ids") or []:
            args += ["--device", str(name)]
    return args


def run_options(
    spec: ContainerSpec,
    *,
    network: str,
    userns: str,
    ulimits: dict[str, tuple[int, int]],
) -> list[str]:
    """What ``podman create`` or ``podman run`` is told of ``spec``'s container (its network
    and ulimits as the engine resolved them): everything but its name, its devices, its
    environment, its image and its command."""
    args: list[str] = []
    if userns:
        args += ["--userns", userns]
    for key, value in spec.labels.items():
        args += ["--label", f"{key}={value}"]
    if spec.user:
        args += ["--user", spec.user]
    if spec.working_dir:
        args += ["--workdir", spec.working_dir]
    for m in spec.mounts:
        args += ["--mount", mount_arg(m.source, m.target, m.read_only)]
    for target, options in spec.tmpfs.items():
        args += ["--tmpfs", f"{target}:{options}" if options else target]
    if spec.read_only:
        args += ["--read-only"]
    args += hardening_args(spec.cap_add, spec.no_new_privileges)
    if spec.shm_size:
        args += ["--shm-size", spec.shm_size]
    for name, (soft, hard) in ulimits.items():
        args += ["--ulimit", f"{name}={soft}:{hard}"]
    if spec.runtime:
        args += ["--runtime", spec.runtime]
    args += ["--network", network]
    if spec.mem_limit:
        args += ["--memory", spec.mem_limit]
    if spec.pids_limit:
        args += ["--pids-limit", str(spec.pids_limit)]
    if spec.init:
        args += ["--init"]
    if spec.entrypoint is not None:
        args += ["--entrypoint", json.dumps(spec.entrypoint) if spec.entrypoint else ""]
    for port, (address, host_port) in spec.port_bindings.items():
        args += ["--publish", f"{address}:{host_port}:{port}"]
    # k8s-file whatever containers.conf says (journald, none): rotated, and readable for the log
    # tails that error sentences quote and the kernel's view follows.
    args += ["--log-driver", "k8s-file", "--log-opt", f"max-size={spec.log_max_size}"]
    return args


def env_lines(environment: dict[str, str], *, whose: str = "The kernel's") -> bytes:
    """``environment`` as podman's ``--env-file`` reads it, given on podman's stdin: not as
    ``--env K=V`` (a command line is readable by every account on the host, in /proc), not in
    podman's own environment (HOME or XDG_RUNTIME_DIR there would move podman's own storage),
    and in no file on disk. ValueRefused (400, a sentence) for a name or value that would not
    arrive as it is (LINE_BREAKS, a NUL, a name podman reads otherwise); ``whose`` begins
    its sentence (a build step's environment passes here too: backends/podman/build_steps.py)."""
    for key, value in environment.items():
        if not _ENV_NAME.fullmatch(key):
            raise ValueRefused(
                f"{whose} environment variable {key!r} cannot be given to the container: "
                "a name is ASCII letters, digits and '_', and does not start with a digit."
            )
        found = next((name for char, name in LINE_BREAKS.items() if char in value), "")
        if found or "\0" in value:
            raise ValueRefused(
                f"{whose} environment variable {key} cannot be given to the container: "
                f"its value holds {found or 'a NUL character'}, and the container's "
                "environment is read line by line on this engine. Remove it from the value"
                + (
                    " (the notebook's path is the value of JPY_SESSION_NAME: rename the "
                    "notebook or its folder)."
                    if key == "JPY_SESSION_NAME"
                    else "."
                )
            )
    return "".join(f"{key}={value}\n" for key, value in environment.items()).encode()
