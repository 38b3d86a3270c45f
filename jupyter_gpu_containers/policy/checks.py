"""The checks a launch's inputs pass before any container exists, each refusing in a sentence:
paths inside the workspace, mount sources under the allowed roots, environment values, labels,
kernel ids, the user a kernel runs as, sizes and the kernel's limits under the administrator's
ceilings, the network mode. Pure but for realpath and the user database.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..base.errors import (
    KernelOptionRefused,
    MountRefused,
    PathRefused,
    ValueRefused,
)
from ..base.records import KERNEL_DIR_IN_CONTAINER
from .admin_policy import ContainerPolicy

# Linux's limits: PATH_MAX counts the terminating NUL, NAME_MAX bounds one path component. A
# longer path can never name a file, so it is refused before any system call sees it.
PATH_MAX = 4096
NAME_MAX = 255

# What reaches a container as an environment variable name: what POSIX shells can export.
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
# Set by the GPU allocator alone: a kernel spec that set it could see GPUs it never booked.
RESERVED_ENV = frozenset({"NVIDIA_VISIBLE_DEVICES"})
# Kernel ids name files (the connection file, the private directory) and containers:
# jupyter_server makes UUIDs, but POST /api/kernels lets a client choose one. Only ids its kernel
# routes can reach (five groups of word characters joined by '-', as in a UUID): a kernel whose
# id no route matches could never be shut down through the API, and would hold its GPUs.
_KERNEL_ID = re.compile(r"[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+){4}")
_KERNEL_ID_MAX = 128
_NUMERIC_USER = re.compile(r"([0-9]{1,10})(?::([0-9]{1,10}))?")


def _shown(value: Any, limit: int = 80) -> str:
    """A value as a sentence may quote it: repr (which escapes NUL, control characters and
    unpaired surrogates, so the sentence itself is always printable), cut short."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + "…"
    return repr(value)


def check_path_text(path: Any, what: str = "path") -> str:
    """``path`` when it is a string the OS can take as a path; else PathRefused saying why.

    Refused: anything but a non-empty str, NUL (C strings end there: "/root\0/x" would reach a
    system call as "/root"), text the file system encoding cannot store (unpaired surrogates),
    paths of PATH_MAX bytes or more, and components longer than NAME_MAX. Unicode is taken as
    written, without normalisation: Linux compares names as bytes, so two spellings of one name
    are two different paths, and neither can lead anywhere the other cannot."""
    if not isinstance(path, str) or not path:
        raise PathRefused(f"The {what} must be a non-empty path, not {_shown(path)}.")
    if "\0" in path:
        raise PathRefused(f"The {what} {_shown(path)} contains a NUL character.")
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:
        raise PathRefused(
            f"The {what} {_shown(path)} is not text a file name can hold (it contains an "
            "unpaired surrogate)."
        ) from None
    if len(raw) >= PATH_MAX:
        raise PathRefused(
            f"The {what} {_shown(path)} is {len(raw)} bytes long; paths are limited to "
            f"{PATH_MAX - 1} bytes."
        )
    longest = max(len(part) for part in raw.split(b"/"))
    if longest > NAME_MAX:
        raise PathRefused(
            f"The {what} {_shown(path)} has a name of {longest} bytes; names are limited to "
            f"{NAME_MAX} bytes."
        )
    return path


def _realpath(path: str, what: str) -> str:
    try:
        return os.path.realpath(path)
    except (OSError, ValueError, RecursionError):
        # Python before 3.13 resolves symlink chains recursively: a long crafted chain ends here.
        raise PathRefused(f"The {what} {_shown(path)} cannot be resolved.") from None


def resolve_inside(path: Any, root: str, *, what: str = "path", relative: bool = False) -> str:
    """The real path of ``path`` when it is ``root`` itself or lies below it; else PathRefused.

    ``relative``: ``path`` is relative to ``root``, and an absolute one is refused; otherwise
    ``path`` must be absolute. Both are resolved with realpath (symlinks followed, ".." applied)
    before the comparison, which is against ``root + os.sep``, never a bare prefix: a sibling
    sharing the root's prefix ("/data/alice2" for the root "/data/alice") is outside, and so is
    a symlink inside the root that points out of it."""
    check_path_text(root, "root directory")
    if not os.path.isabs(root):
        raise PathRefused(f"The root directory {_shown(root)} must be an absolute path.")
    check_path_text(path, what)
    if relative:
        if path.startswith("/"):
            raise PathRefused(
                f"The {what} {_shown(path)} must be relative to {root}, not an absolute path."
            )
        path = check_path_text(os.path.join(root, path), what)
    elif not os.path.isabs(path):
        raise PathRefused(f"The {what} {_shown(path)} must be an absolute path.")
    real_root = _realpath(root, "root directory")
    real = _realpath(path, what)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise PathRefused(f"The {what} {_shown(path)} lies outside {real_root}.")
    # Symlinks can make the resolved path longer than any path may be.
    return check_path_text(real, what)


def inside(path: str, root: str) -> bool:
    """True when ``path`` (absolute) resolves to ``root`` itself or below it; False for paths
    outside it and for anything that cannot be a path (see :func:`resolve_inside`)."""
    try:
        resolve_inside(path, root)
    except PathRefused:
        return False
    return True


def check_mount_source(source: Any, allowed_roots: Iterable[str]) -> str:
    """Resolve ``source`` and return it when it exists inside an allowed root, else refuse."""
    try:
        check_path_text(source, "mount source")
        if not os.path.isabs(source):
            raise PathRefused(f"The mount source {_shown(source)} must be an absolute host path.")
    except PathRefused as e:
        raise MountRefused(e.sentence) from None
    roots = [r for r in allowed_roots if r]
    if not any(inside(source, root) for root in roots):
        allowed = ", ".join(roots) or "(none configured)"
        raise MountRefused(
            f"The host path {_shown(source)} is outside the directories allowed for mounts "
            f"({allowed}). An administrator can allow mounts from its parent directory.",
            setting="ContainerPolicy.allowed_mount_roots",
        )
    real = os.path.realpath(source)
    # The engine would otherwise create a missing source, as root, on the host.
    if not os.path.exists(real):
        raise MountRefused(f"The mount source {_shown(source)} does not exist on this host.")
    return real


def check_mount_target(target: Any, workspace: str) -> str:
    """``target`` when it is a clean absolute path in the container that neither is the
    workspace nor hides the kernel's private directory (or lies in it); else PathRefused."""
    check_path_text(target, "mount target")
    if not target.startswith("/"):
        raise PathRefused(f"The mount target {_shown(target)} must be an absolute path.")
    # normpath keeps a leading "//" (POSIX leaves its meaning to the system): refuse it too.
    if target == "/" or "//" in target or posixpath.normpath(target) != target:
        raise PathRefused(
            f"The mount target {_shown(target)} must be a normalised path below / (no '.', "
            "'..', '//' or trailing '/')."
        )
    if target == KERNEL_DIR_IN_CONTAINER or target.startswith(KERNEL_DIR_IN_CONTAINER + "/"):
        raise PathRefused(
            f"The mount target {_shown(target)} would hide {KERNEL_DIR_IN_CONTAINER}, where the "
            "kernel finds its connection file."
        )
    if target == workspace:
        raise PathRefused(
            f"The mount target {_shown(target)} would hide the workspace ({workspace})."
        )
    return str(target)


def _check_value(what: str, value: Any, max_bytes: int, setting: str = "") -> str:
    if not isinstance(value, str):
        raise ValueRefused(f"{what} must be text, not {type(value).__name__}.")
    if "\0" in value:
        raise ValueRefused(f"{what} contains a NUL character.")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueRefused(
            f"{what} is not valid text (it contains an unpaired surrogate)."
        ) from None
    if size > max_bytes:
        raise ValueRefused(
            f"{what} is {size} bytes long; at most {max_bytes} are allowed.", setting=setting
        )
    return value


def check_environment(env: Mapping[str, Any], max_value_bytes: int) -> dict[str, str]:
    """``env`` when every name is a portable variable name and every value plain text the
    engine can pass on (no NUL, encodable as UTF-8, at most ``max_value_bytes``); else
    ValueRefused naming the variable. Values may contain newlines (certificates do)."""
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise ValueRefused(
                f"{_shown(name)} cannot be an environment variable name: names are ASCII "
                "letters, digits and '_', do not start with a digit, and have at most 255 "
                "characters."
            )
        _check_value(
            f"The value of the environment variable {name}",
            value,
            max_value_bytes,
            setting="ContainerPolicy.max_env_value_bytes",
        )
    return dict(env)


def check_labels(container_labels: Mapping[str, Any]) -> dict[str, str]:
    """Container labels carry user-derived text (the notebook's path): printable names, and
    values under the rules of environment values, bounded by PATH_MAX."""
    for key, value in container_labels.items():
        if not isinstance(key, str) or not key or len(key) > NAME_MAX or not key.isprintable():
            raise ValueRefused(f"{_shown(key)} cannot be a container label name.")
        _check_value(f"The value of the container label {key}", value, PATH_MAX)
    return dict(container_labels)


def check_kernel_id(kernel_id: Any) -> str:
    """Kernel ids name the connection file and the private directory on the host, and the
    container; and the kernel must be reachable through jupyter_server's routes afterwards: five
    groups of ASCII letters, digits and '_', joined by '-' (a UUID), at most 128 characters."""
    if (
        not isinstance(kernel_id, str)
        or len(kernel_id) > _KERNEL_ID_MAX
        or not _KERNEL_ID.fullmatch(kernel_id)
    ):
        raise ValueRefused(
            f"{_shown(kernel_id)} cannot be a kernel id: use a UUID, or five groups of letters, "
            "digits and '_' joined by '-' (at most 128 characters), which the kernel API's "
            "routes can reach."
        )
    return kernel_id


def check_run_as(policy: ContainerPolicy, run_as: str, server_uid: int, server_gid: int) -> None:
    """Refuse a ``run_as`` the administrator did not list (ContainerPolicy.allowed_run_as).

    Kernel specs set run_as, and a user's own spec would otherwise run its kernel as another
    user's uid, with that user's access to every mount. "server", and an explicit "uid:gid" that
    is the server's own, are always allowed."""
    explicit = numeric_user(run_as)
    if run_as == "server" or explicit == (server_uid, server_gid):
        return
    listed: set[Any] = set()
    for item in policy.allowed_run_as:
        with contextlib.suppress(ValueRefused):
            listed.add(item if item in ("server", "image") else numeric_user(item))
    if (run_as == "image" and "image" in listed) or (explicit is not None and explicit in listed):
        return
    what = "the image's USER" if explicit is None else f"uid:gid {explicit[0]}:{explicit[1]}"
    raise KernelOptionRefused(
        f"This kernel is set to run as {what}, which the administrator has not allowed: kernels "
        "run as the server's own user unless an administrator allows another. Ask one to, or "
        "choose a kernel that runs as you.",
        setting="ContainerProvisioner.run_as, ContainerPolicy.allowed_run_as",
    )


def check_extra_mount(
    policy: ContainerPolicy, extra: Mapping[str, Any], allowed_roots: list[str], workspace: str
) -> tuple[str, str, bool]:
    """One of ContainerProvisioner.extra_mounts as (source, target, read_only). Read-only unless
    it says ``"read_only": false`` (the JSON value), and then only inside
    ContainerPolicy.writable_mount_roots: kernel specs set extra mounts."""
    source = check_mount_source(extra.get("source", ""), allowed_roots)
    target = check_mount_target(extra.get("target", ""), workspace)
    writable = extra.get("read_only", True) is False
    if writable and not any(inside(source, root) for root in policy.writable_mount_roots if root):
        roots = ", ".join(policy.writable_mount_roots)
        which = f"only mounts inside {roots} may be" if roots else "no mount may be"
        raise MountRefused(
            f"The mount of {_shown(source)} at {target} asks to be writable, but on this server "
            f"{which}. Mount it read-only, or ask an administrator to allow writable mounts "
            "there.",
            setting="ContainerPolicy.writable_mount_roots",
        )
    return source, target, not writable


_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([bkmgt]?)b?\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: Any, what: str, setting: str = "") -> int:
    """Bytes in a Docker-style size: 536870912, "512m", "1g", "1.5G". ``setting``: the option
    it was read from, for the refusal."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    m = _SIZE.fullmatch(str(value)) if isinstance(value, str) else None
    if not m:
        raise ValueRefused(
            f'{what} {_shown(value)} is not a size such as "512m" or "8g".', setting=setting
        )
    return int(float(m[1]) * _UNITS[m[2].lower()])


@dataclass(frozen=True)
class Limits:
    """A kernel container's resource limits, once the administrator's ceilings are applied."""

    mem_limit: str | None
    pids_limit: int | None
    shm_size: str | None
    runtime: str | None
    ulimits: dict[str, tuple[int, int]]


def _ceiling(asked: Any, ceiling: Any, what: str, option: str, bigger: Any) -> Any:
    if ceiling is None:
        return asked
    if asked is None:
        return ceiling  # "no limit of my own" is the ceiling, never no limit at all
    if bigger(asked, ceiling):
        raise KernelOptionRefused(
            f"This kernel asks for {what} {asked}, more than the {ceiling} the administrator "
            "allows. Ask for less.",
            setting=f"ContainerProvisioner.{option}, ContainerPolicy.max_{option}",
        )
    return asked


def kernel_limits(
    policy: ContainerPolicy,
    *,
    mem_limit: str | None,
    pids_limit: int | None,
    shm_size: str | None,
    runtime: str | None,
    ulimits: Mapping[str, Any],
) -> Limits:
    """The limits a kernel gets: what its options ask for, within ContainerPolicy's ceilings.
    Kernel specs may lower a limit, never lift it: asking for none gets the ceiling, asking for
    more is refused with a sentence."""

    def larger_size(a: Any, b: Any) -> bool:
        return parse_size(a, "A size") > parse_size(b, "A size")

    mem = _ceiling(mem_limit, policy.max_mem_limit, "a memory limit of", "mem_limit", larger_size)
    pids = _ceiling(
        pids_limit, policy.max_pids_limit, "a process limit of", "pids_limit", lambda a, b: a > b
    )
    # No shm_size is Docker's default (64m), itself a limit: it stays.
    shm = (
        shm_size
        and _ceiling(shm_size, policy.max_shm_size, "a /dev/shm of", "shm_size", larger_size)
    ) or None
    sizes = (
        (mem, "The kernel's memory limit", "ContainerProvisioner.mem_limit"),
        (shm, "The kernel's /dev/shm size", "ContainerProvisioner.shm_size"),
    )
    for value, what, option in sizes:
        if value is not None:
            parse_size(value, what, option)
    if pids is not None and pids <= 0:
        raise ValueRefused(
            f"The kernel's process limit must be positive, not {pids}.",
            setting="ContainerProvisioner.pids_limit",
        )
    if runtime is not None and runtime not in policy.allowed_runtimes:
        raise KernelOptionRefused(
            f"The container runtime {_shown(runtime)} that this kernel is set to use is not "
            "allowed for kernels on this server (those allowed: "
            f"{', '.join(policy.allowed_runtimes) or 'none'}). Ask an administrator to allow "
            "it, or choose another kernel.",
            setting="ContainerProvisioner.runtime, ContainerPolicy.allowed_runtimes",
        )
    limits = normalize_ulimits(ulimits)
    for name, (soft, hard) in limits.items():
        if name not in policy.allowed_ulimits:
            raise KernelOptionRefused(
                f"This kernel sets the resource limit {_shown(name)}, which kernels on this "
                "server may not set (those they may: "
                f"{', '.join(sorted(policy.allowed_ulimits)) or 'none'}). Ask an administrator "
                "to allow it, or choose another kernel.",
                setting="ContainerProvisioner.ulimits, ContainerPolicy.allowed_ulimits",
            )
        top = int(policy.allowed_ulimits[name])
        if top != -1 and any(v == -1 or v > top for v in (soft, hard)):
            raise KernelOptionRefused(
                f"This kernel sets the resource limit {name} to {soft}:{hard}, above the {top} "
                "the administrator allows. Ask for less.",
                setting="ContainerProvisioner.ulimits, ContainerPolicy.allowed_ulimits",
            )
    return Limits(mem, pids, shm, runtime, limits)


def numeric_user(run_as: str) -> tuple[int, int] | None:
    """(uid, gid) of an explicit ``run_as`` ("uid" or "uid:gid"; a missing gid is the uid, as
    Docker would otherwise pick gid 0 for a uid the image does not know); None for "server"
    and "image"; ValueRefused for anything else."""
    if run_as in ("server", "image"):
        return None
    m = _NUMERIC_USER.fullmatch(run_as)
    if not m:
        raise ValueRefused(
            f"The user this kernel is set to run as, {_shown(run_as)}, must be "
            '"server", "image" or a numeric "uid:gid".',
            setting="ContainerProvisioner.run_as",
        )
    uid = int(m.group(1))
    return uid, int(m.group(2) or uid)


def _is_root(name: str) -> bool:
    return name == "root" or (name.isdigit() and int(name) == 0)


def kernel_user(
    run_as: str, server_uid: int, server_gid: int, image_user: str, allow_root: bool
) -> str | None:
    """The user the engine runs the kernel as ("uid:gid"; None: the image's USER), refusing
    root (uid 0, or gid 0) unless the administrator allows it (ContainerPolicy.allow_root).

    An image USER given by a name other than "root" cannot be resolved without the image's
    /etc/passwd and is taken as unprivileged."""
    explicit = numeric_user(run_as)
    if run_as == "server":
        user: str | None = f"{server_uid}:{server_gid}"
        uid, gid = str(server_uid), str(server_gid)
        why = (
            "the Jupyter server starting it runs as "
            f"{'root' if server_uid == 0 else f'uid {server_uid}'}"
            f"{' in the root group' if server_gid == 0 else ''}, and its kernels run as its user"
        )
    elif explicit is None:  # "image"
        user = None
        uid, _, gid = (image_user.strip() or "root").partition(":")
        why = f"the image's USER is {image_user.strip() or 'unset (root)'}"
    else:
        user = f"{explicit[0]}:{explicit[1]}"
        uid, gid = str(explicit[0]), str(explicit[1])
        why = f"it is set to run as {run_as!r}"
    if (_is_root(uid) or _is_root(gid)) and not allow_root:
        raise KernelOptionRefused(
            f"This kernel would run as root in its container: {why}. Root there owns every "
            "root-owned file of the mounted workspace, so it is refused. Run the server as an "
            'unprivileged user, or set the kernel to run as an unprivileged "uid:gid"; if root '
            "kernels are intended, an administrator can allow them.",
            setting="ContainerProvisioner.run_as, ContainerPolicy.allow_root",
        )
    return user


def check_network_mode(policy: ContainerPolicy, network_mode: str) -> str:
    """``network_mode`` when the administrator's allow-list admits it; else KernelOptionRefused."""
    if not any(fnmatch.fnmatchcase(network_mode, p) for p in policy.allowed_network_modes):
        allowed = ", ".join(policy.allowed_network_modes) or "none"
        raise KernelOptionRefused(
            f"The network mode {_shown(network_mode)} is not allowed for kernels on this server "
            f"(those allowed: {allowed}). Ask an administrator to allow it, or use one of those.",
            setting="ContainerPolicy.allowed_network_modes",
        )
    return network_mode


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
        try:
            if isinstance(value, (list, tuple)) and len(value) == 2:
                soft, hard = int(value[0]), int(value[1])
            else:
                soft = hard = int(value)
        except (TypeError, ValueError):
            raise ValueRefused(
                f"The resource limit {_shown(name)} must be a number or [soft, hard], not "
                f"{_shown(value)}."
            ) from None
        out[str(name)] = (soft, hard)
    return out
