"""From "this kernel, this image, this notebook" to one container-create call.

Pure functions and admin policy, no Docker: the provisioner gathers the facts (kernel id, image,
notebook directory, user), this module turns them into an :class:`~.engine.ContainerSpec`. Keeping
it pure makes the security-relevant parts (which host paths get mounted, which environment reaches
the container) testable without an engine.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

from traitlets import Bool, Dict, List, Unicode
from traitlets.config import LoggingConfigurable

from . import labels
from .errors import ImageNotAllowed, MountRefused
from .references import BadReference, parse_reference

# Mount point of the private per-kernel directory inside the container.
KERNEL_DIR_IN_CONTAINER = "/run/jupyter-kernel"
CONNECTION_FILE_NAME = "kernel.json"

# Runs inside the container, after the image's ENTRYPOINT: find an interpreter (images put it in
# different places: /usr/bin, /usr/local/bin, /opt/conda/bin) and exec ipykernel with the
# connection file given as $1. exec keeps python the direct child of init, so signals reach it.
FIND_PYTHON_AND_EXEC = r"""
for py in "${JUPYTER_GPU_CONTAINERS_PYTHON:-}" python3 python \
          /opt/conda/bin/python3 /usr/local/bin/python3 /usr/bin/python3; do
  [ -n "$py" ] || continue
  if command -v "$py" >/dev/null 2>&1; then
    exec "$py" -m ipykernel_launcher -f "$1"
  fi
done
echo "jupyter-gpu-containers: no Python interpreter in this image" \
     "(looked for python3 and python on PATH=$PATH," \
     "and in /opt/conda/bin, /usr/local/bin, /usr/bin)" >&2
exit 127
"""

NO_PYTHON_MARKER = "jupyter-gpu-containers: no Python interpreter"
NO_IPYKERNEL_MARKERS = ("No module named ipykernel", "No module named 'ipykernel")


class ContainerPolicy(LoggingConfigurable):
    """Admin-only policy. Unlike provisioner options, nothing in a kernel spec can change these:
    kernel specs can live in user-writable directories, so they must not widen what is allowed."""

    allowed_mount_roots = List(
        Unicode(),
        config=True,
        help="""Host directories under which extra mounts may lie (resolved with realpath; a
        mount source must be the root itself or inside it). The server's root_dir, mounted as the
        workspace, is always allowed. Example: ["/raid/public"] to allow the dataset mount
        {"source": "/raid/public/my_datasets", "target": "/root/dataset"}.""",
    )

    server_id = Unicode(
        "",
        config=True,
        help="""Stable identity of this Jupyter server, written on every container it starts. A
        server restarted with the same id reattaches to the kernels it left running. Empty means
        derived from the server user's uid and the realpath of root_dir.""",
    )

    state_dir = Unicode(
        "",
        config=True,
        help="""Host-wide directory shared by all Jupyter servers on this host (every user):
        server liveness locks and the GPU allocation lock. Must be the same for every server
        that shares the GPUs. Empty means <tmp>/jupyter-gpu-containers.""",
    )

    connection_dir_root = Unicode(
        "",
        config=True,
        help="""Host directory under which each kernel gets a private (0700) directory holding
        its connection file and, with the ipc transport, its sockets. It must be on a file system
        the Docker engine can bind-mount, and short: Unix socket paths are limited to 107 bytes.
        Empty means <jupyter runtime dir>/gpu-containers, or /tmp/jupyter-gpu-containers-<uid>
        when that path is too long.""",
    )

    allowed_images = List(
        Unicode(),
        ["*"],
        config=True,
        help="""Glob patterns of the image references that may be pulled and launched, e.g.
        ["nvcr.io/nvidia/*", "jgc/*"]. Matched against the reference as written and in its
        fully qualified form (docker.io/library/ubuntu:22.04). Default: any image.""",
    )

    pinned_digests = Dict(
        config=True,
        help="""Digests that images matching a pattern must have, e.g.
        {"nvcr.io/nvidia/pytorch:24.05-py3": ["sha256:…"]}. A launch is refused unless the
        local image's repository digest (or, for a locally built image, its id) is listed; a
        pull is checked when it completes, and a mismatching image is untagged again.""",
    )

    allow_incompatible_images = Bool(
        False,
        config=True,
        help="""Launch kernels from images whose CUDA stack this host's driver cannot run (the
        catalog's "cannot-run" verdict). Off by default: such launches are refused with the
        driver they need. Turn on where the verdict is known to be wrong for a host.""",
    )


def effective_state_dir(policy: ContainerPolicy) -> str:
    return labels.ensure_shared_dir(policy.state_dir or labels.default_state_dir())


def effective_server_id(policy: ContainerPolicy, root_dir: str) -> str:
    """This process's server id, claimed in the host registry (see labels.ServerRegistry)."""
    wanted = policy.server_id or labels.default_server_id(os.getuid(), root_dir)
    return labels.ServerRegistry.claim_or_fallback(effective_state_dir(policy), wanted)


def _reference_forms(ref: str) -> list[str]:
    forms = [ref]
    with contextlib.suppress(BadReference):
        parsed = parse_reference(ref)
        forms += [parsed.written, f"{parsed.registry}/{parsed.repository}:{parsed.pull_tag}"]
    return forms


def image_allowed(policy: ContainerPolicy, ref: str) -> str:
    """ "" when the allow-list admits ``ref``, else the sentence that refuses it."""
    forms = _reference_forms(ref)
    if any(fnmatch.fnmatchcase(f, p) for f in forms for p in policy.allowed_images):
        return ""
    return (
        f"The image {ref} is not in this server's allow-list "
        f"(ContainerPolicy.allowed_images: {', '.join(policy.allowed_images) or 'empty'}). "
        "Ask an administrator to allow it, or choose an allowed image."
    )


def pinned_for(policy: ContainerPolicy, ref: str) -> list[str] | None:
    """The digests ``ref`` must have, or None when no pin applies."""
    forms = _reference_forms(ref)
    for pattern, digests in policy.pinned_digests.items():
        if any(fnmatch.fnmatchcase(f, pattern) for f in forms):
            return [digests] if isinstance(digests, str) else [str(d) for d in digests]
    return None


def check_image_allowed(
    policy: ContainerPolicy, ref: str, digests: Iterable[str] | None = None
) -> None:
    """Refuse ``ref`` unless the allow-list admits it and, where a digest is pinned, one of
    ``digests`` (the image's repository digests and id; None: not known yet, as before a pull)
    is pinned."""
    refusal = image_allowed(policy, ref)
    if refusal:
        raise ImageNotAllowed(refusal)
    pins = pinned_for(policy, ref)
    if pins is None or digests is None:
        return
    have = {d.rsplit("@", 1)[-1] for d in digests}
    if not have & set(pins):
        shown = ", ".join(sorted(have)) or "none"
        raise ImageNotAllowed(
            f"The image {ref} has digest {shown}, but only {', '.join(pins)} is allowed for it "
            "(ContainerPolicy.pinned_digests). Pull the pinned image, or ask an administrator "
            "to update the pin."
        )


def inside(path: str, root: str) -> bool:
    """True when realpath(path) is root itself or below it. Compares against root + os.sep, so a
    sibling with the same prefix ("/data/alice2" for root "/data/alice") is outside."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def check_mount_source(source: str, allowed_roots: Iterable[str]) -> str:
    """Resolve ``source`` and return it when it lies inside an allowed root, else refuse."""
    if not source or "\0" in source or not os.path.isabs(source):
        raise MountRefused(f"The mount source {source!r} must be an absolute host path.")
    roots = [r for r in allowed_roots if r]
    if not any(inside(source, root) for root in roots):
        allowed = ", ".join(roots) or "(none configured)"
        raise MountRefused(
            f"The host path {source} is outside the directories allowed for mounts ({allowed}). "
            "An administrator can add its parent to ContainerPolicy.allowed_mount_roots."
        )
    return os.path.realpath(source)


def container_path_for(host_path: str, host_root: str, container_root: str) -> str:
    """Map a host path inside the workspace to its path in the container (else the root)."""
    if not inside(host_path, host_root):
        return container_root
    rel = os.path.relpath(os.path.realpath(host_path), os.path.realpath(host_root))
    if rel == ".":
        return container_root
    return posixpath.join(container_root, *rel.split(os.sep))


def normalize_ulimits(raw: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """{"memlock": -1, "stack": [67108864, 67108864]} -> {"memlock": (-1, -1), ...}"""
    out: dict[str, tuple[int, int]] = {}
    for name, value in raw.items():
        if isinstance(value, (list, tuple)) and len(value) == 2:
            soft, hard = int(value[0]), int(value[1])
        else:
            soft = hard = int(value)
        out[str(name)] = (soft, hard)
    return out


def kernel_command(kernel_cmd: list[str], connection_file: str) -> list[str]:
    """The container command: the admin's explicit one, or find-python-and-exec-ipykernel."""
    if kernel_cmd:
        return [arg.replace("{connection_file}", connection_file) for arg in kernel_cmd]
    return ["sh", "-c", FIND_PYTHON_AND_EXEC, "jupyter-kernel", connection_file]


def entrypoint_is_interpreter(entrypoint: Iterable[str]) -> bool:
    """Images whose ENTRYPOINT is the interpreter itself (``["python3"]``) would run our command as
    a script; those entrypoints are cleared. Wrapper scripts (NGC's, tini + start.sh) are kept."""
    parts = list(entrypoint)
    if not parts:
        return False
    base = posixpath.basename(parts[0])
    return base.startswith("python") or base in ("ipython", "jupyter")


def diagnose_exit(image: str, exit_code: int, oom_killed: bool, log_tail: str) -> tuple[str, bool]:
    """A sentence for a container that ended before its kernel answered, and whether the image
    itself is at fault (cannot run a kernel) rather than this one start."""
    tail = f"\nLast lines of its log:\n{log_tail}" if log_tail else " It printed nothing."
    if any(marker in log_tail for marker in NO_IPYKERNEL_MARKERS):
        return (
            f"The image {image} has Python but not ipykernel, so it cannot run a Jupyter kernel. "
            "Install ipykernel in the image (pip install ipykernel) or choose another image."
            f"{tail}",
            True,
        )
    if NO_PYTHON_MARKER in log_tail:
        return (
            f"The image {image} has no Python interpreter, so it cannot run a Jupyter kernel. "
            "Choose an image with Python and ipykernel, or set the interpreter with the "
            f"JUPYTER_GPU_CONTAINERS_PYTHON environment variable of its kernel spec.{tail}",
            True,
        )
    if oom_killed or exit_code == 137:
        reason = "it ran out of memory (OOM-killed)" if oom_killed else "it was killed (exit 137)"
        return (f"The kernel container for {image} ended at start: {reason}.{tail}", False)
    return (f"The kernel container for {image} exited at start with code {exit_code}.{tail}", False)
