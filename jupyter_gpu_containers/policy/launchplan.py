"""From "this kernel, this image, this notebook" to the description of its container.

Two steps, and admin policy, no engine:

1. :func:`gather_facts` reads what a launch needs to know of the host, once per launch and on a
   worker thread (it blocks: realpath, the user database, the host state directory): the
   workspace's real path, the user, the server id, the notebook's and the kernel's directories as
   the container sees them, the extra mounts' real sources.
2. :func:`plan_container` turns the request (image, command, the kernel's options, the kernel
   spec's environment, the GPUs and how they attach) and those facts, under the administrator's
   :class:`ContainerPolicy`, into a backend-neutral :class:`~.records.ContainerSpec`, or a
   refusal in a sentence. It is pure: the security-relevant parts (which host paths get mounted,
   which environment and user reach the container, which limits hold) are table-tested without
   an engine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import os
import posixpath
import pwd
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from traitlets import Bool, Dict, Int, List, TraitError, Unicode, validate
from traitlets.config import LoggingConfigurable

from ..base import labels
from ..base.errors import (
    ImageNotAllowed,
    KernelOptionRefused,
    MountRefused,
    PathRefused,
    ValueRefused,
)
from ..base.records import ContainerSpec, ImageRecord, Mount
from ..base.references import BadReference, parse_reference
from ..gpus.allocator import Attachment

# Mount point of the private per-kernel directory inside the container.
KERNEL_DIR_IN_CONTAINER = "/run/jupyter-kernel"

# How the kernel starts, once an interpreter is found: `python -c KERNEL_BOOT -f FILE`, which runs
# ipykernel_launcher as `python -m ipykernel_launcher -f FILE` would, but for sys.path. Both put
# the working directory (the notebook's, which its user writes) first on sys.path: -m as its
# path, -c as "". While ipykernel loads, a notebook's own ipykernel_launcher.py, or a queue.py or
# any module ipykernel imports, would be imported instead, and could keep the kernel from ever
# answering (a start that holds a slot of the kernel service until launch_timeout). The bootstrap
# takes "" off before it imports anything; IPython puts it back once the kernel has loaded, after
# the standard library (InteractiveShellApp.init_path), so code in the notebook still imports the
# notebook's own modules, and the kernel still runs in the notebook's directory. Python's own
# switch for this (-P, PYTHONSAFEPATH) is 3.11's, and IPython leaves the directory off sys.path
# for good under it. Written for every Python 3 (and 2.7). No single quote: it is one sh word.
KERNEL_BOOT = (
    "import sys\n"
    'if sys.path and sys.path[0] == "":\n'
    "    del sys.path[0]\n"
    "import runpy\n"
    'runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)\n'
)
KERNEL_EXEC = 'exec "$py" -c \'' + KERNEL_BOOT + '\' -f "$1"'


def find_python_and(exec_line: str) -> str:
    """The container's script that finds an interpreter and runs ``exec_line`` with it (``$py``)."""
    return _FIND_PYTHON.replace("@EXEC@", exec_line)


# Runs inside the container, after the image's ENTRYPOINT: find an interpreter (images put it in
# different places: /usr/bin, /usr/local/bin, /opt/conda/bin) and exec it (KERNEL_EXEC, the
# connection file given as $1). exec keeps python the direct child of init, so signals reach it.
_FIND_PYTHON = r"""
for py in "${JUPYTER_GPU_CONTAINERS_PYTHON:-}" python3 python \
          /opt/conda/bin/python3 /usr/local/bin/python3 /usr/bin/python3; do
  [ -n "$py" ] || continue
  if command -v "$py" >/dev/null 2>&1; then
    @EXEC@
  fi
done
echo "jupyter-gpu-containers: no Python interpreter in this image" \
     "(looked for python3 and python on PATH=$PATH," \
     "and in /opt/conda/bin, /usr/local/bin, /usr/bin)" >&2
exit 127
"""
FIND_PYTHON_AND_EXEC = find_python_and(KERNEL_EXEC)

NO_PYTHON_MARKER = "jupyter-gpu-containers: no Python interpreter"
NO_IPYKERNEL_MARKERS = ("No module named ipykernel", "No module named 'ipykernel")

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
# Linux's capabilities (linux/capability.h, up to CAP_CHECKPOINT_RESTORE), as Docker names them.
CAPABILITIES = frozenset(
    [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ]
)


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
        the GPU allocation lock and which servers are alive. Must be the same for every server
        that shares the GPUs, owned by root (or state_dir_owner), mode 1770 with the group of
        the users who run kernels: `sudo jupyter gpu-containers setup-host` makes it. Empty
        means /run/jupyter-gpu-containers. A directory that is not so is refused, and GPU
        kernels with it.""",
    )

    state_dir_owner = Unicode(
        "",
        config=True,
        help="""A service account (name or uid) that may own state_dir instead of root, for a
        kernel service that runs as a dedicated user. Empty: root only.""",
    )

    connection_dir_root = Unicode(
        "",
        config=True,
        help="""Host directory under which each kernel gets a private (0700) directory holding
        its connection file and, with the ipc transport, its sockets. It must be on a file system
        the Docker engine can bind-mount, and short: Unix socket paths are limited to 107 bytes.
        Empty means <jupyter runtime dir>/gpu-containers, else (when that path is too long)
        $XDG_RUNTIME_DIR/jupyter-gpu-containers, else a directory of this user's made by mkdtemp
        in the temporary directory (/tmp/jupyter-gpu-containers-<uid>-<random>: a name no other
        account can create first). A configured or default directory must be this user's own,
        mode 0700: one another user created first is refused, never used.""",
    )

    private_dir_size = Unicode(
        "16m",
        config=True,
        help="""Size of the tmpfs mounted on each kernel's private directory when the server runs
        as root (the kernel service): the kernel can write that directory, and this bounds what
        it can put there instead of the file system connection_dir_root is on (the host's /run,
        say). A number of bytes with an optional k, m or g. Empty: a plain directory, bounded only
        by its file system. A server that does not run as root cannot mount: its kernels'
        directories are in its user's own runtime directory.""",
    )

    @validate("private_dir_size")
    def _validate_private_dir_size(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip()
        if value and not re.fullmatch(r"[1-9][0-9]*[kKmMgG]?", value):
            raise TraitError(
                f"ContainerPolicy.private_dir_size {value!r} is not a size: give a number of "
                'bytes with an optional k, m or g ("16m"), or "" for none.'
            )
        return value

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

    # Container hardening. Admin-only like everything here: a kernel spec (possibly written by
    # code running in a kernel whose workspace holds the user's Jupyter data directory) must not
    # be able to give its own containers root, capabilities or the host's network.

    allow_root = Bool(
        False,
        config=True,
        help="""Allow kernels that would run as root (uid 0) or in the root group (gid 0) in
        their container: a server running as root (its kernels run as the server's uid:gid),
        ContainerProvisioner.run_as "0:0", or run_as "image" with an image whose USER is root.
        Off by default: such launches are refused with a sentence saying why, because root in a
        container owns every root-owned file of the bind-mounted workspace. Turn on only where
        root kernels are intended (a single-user machine whose server runs as root).""",
    )

    cap_add = List(
        Unicode(),
        config=True,
        help="""Linux capabilities given back to kernel and probe containers, which otherwise run
        with none (every capability is dropped, --cap-drop ALL). Names with or without "CAP_",
        e.g. ["SYS_PTRACE"] for py-spy or gdb, ["IPC_LOCK"] to lock memory beyond the memlock
        ulimit, ["SYS_NICE"] for numactl; ["ALL"] gives back everything, privileged mode aside.
        ipykernel and NGC's entrypoints need none.""",
    )

    @validate("cap_add")
    def _validate_cap_add(self, proposal: Any) -> list[str]:
        names = []
        for raw in proposal["value"]:
            name = str(raw).strip().upper()
            name = name[4:] if name.startswith("CAP_") else name
            if name != "ALL" and name not in CAPABILITIES:
                raise TraitError(
                    f"ContainerPolicy.cap_add: {raw!r} is not a Linux capability name "
                    "(e.g. SYS_PTRACE or CAP_SYS_PTRACE)."
                )
            names.append(name)
        return names

    no_new_privileges = Bool(
        True,
        config=True,
        help="""Start kernel and probe containers with no-new-privileges: no process in them can
        gain privileges through setuid binaries (sudo, su) or file capabilities. Turn off only for
        images whose entrypoint must switch users that way (with run_as "image").""",
    )

    read_only_root_fs = Bool(
        False,
        config=True,
        help="""Mount kernel containers' root file system read-only, with a tmpfs at /tmp and
        /var/tmp (HOME is a tmpfs already when kernels run as the server's user). Off by default:
        `pip install` into the image's environment and images whose entrypoint writes outside
        those directories stop working.""",
    )

    allowed_network_modes = List(
        Unicode(),
        ["bridge", "none"],
        config=True,
        help="""Glob patterns of the network modes kernels may use (ContainerProvisioner.
        network_mode). Default: Docker's bridge and no network. "host" (the host's network
        namespace, where the host's loopback services are reachable), "container:*" (another
        container's namespace) and named networks must be listed here to be used.""",
    )

    allow_user_pulls = Bool(
        True,
        config=True,
        help="""Let users pull images (POST /gpu-containers/pulls), within allowed_images. Off:
        only images already on the host (an administrator's pulls) are offered. A pull made with
        a user's own registry login is offered to that user only, unless the image is listed
        in ImageCatalog.listed_images.""",
    )

    allowed_run_as = List(
        Unicode(),
        config=True,
        help="""Values of ContainerProvisioner.run_as that kernels may use besides "server"
        (the server's own uid:gid, always allowed): "image" (the image's USER, which image
        metadata decides: it may be any uid, another user's included), or numeric "uid:gid"
        values. Kernel specs can set run_as, and kernel specs can live in users' own
        directories: a uid not listed here is refused. Default: none.""",
    )

    writable_mount_roots = List(
        Unicode(),
        config=True,
        help="""Host directories under which ContainerProvisioner.extra_mounts may be writable
        ("read_only": false). Extra mounts elsewhere are read-only or refused: kernel specs set
        them. The workspace is always writable. Default: none.""",
    )

    # Ceilings. ContainerProvisioner's options are defaults that kernel specs may change; these
    # bound what any kernel spec may ask for.

    max_mem_limit = Unicode(
        None,
        allow_none=True,
        config=True,
        help="""The largest memory limit a kernel may have ("64g"): a kernel asking for none
        (ContainerProvisioner.mem_limit None) gets this one, and one asking for more is
        refused. None: no ceiling.""",
    )

    max_pids_limit = Int(
        32768,
        allow_none=True,
        config=True,
        help="""The largest process/thread limit a kernel may have: a kernel asking for none
        (ContainerProvisioner.pids_limit None) gets this one, and one asking for more is
        refused. None: no ceiling.""",
    )

    max_shm_size = Unicode(
        None,
        allow_none=True,
        config=True,
        help="""The largest /dev/shm a kernel may have ("8g"); a kernel asking for Docker's
        default (None) gets that default. None: no ceiling.""",
    )

    allowed_runtimes = List(
        Unicode(),
        ["nvidia"],
        config=True,
        help="""Container runtimes ContainerProvisioner.runtime may name, besides the engine's
        default. The runtime the GPU allocator chooses (attach mode "runtime") is always
        allowed.""",
    )

    allowed_ulimits = Dict(
        {"memlock": -1, "stack": 67108864},
        config=True,
        help="""Resource limits ContainerProvisioner.ulimits may set, name -> highest value (-1:
        unlimited). Others are refused: some, such as rtprio, let an unprivileged process take
        the host's CPUs. Default: what NVIDIA recommends for its images.""",
    )

    log_max_size = Unicode(
        "10m",
        config=True,
        help="""Largest size of one kernel container log file (Docker's json-file max-size): a
        notebook printing in a loop cannot fill the engine's disk.""",
    )

    log_max_files = Int(
        3, config=True, help="""Log files kept per kernel container (json-file max-file)."""
    )

    tmpfs_size = Unicode(
        "2g",
        config=True,
        help="""Size of each tmpfs a kernel container gets (its HOME, and /tmp and /var/tmp with
        read_only_root_fs). Without one a tmpfs may take half the host's memory.""",
    )

    max_env_value_bytes = Int(
        4096,
        config=True,
        help="""Longest environment variable value (in UTF-8 bytes) that reaches a kernel
        container; longer ones refuse the launch with a sentence. Raise it for kernel specs
        that carry long values on purpose (a certificate, say).""",
    )


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
            f"({allowed}). "
            "An administrator can add its parent to ContainerPolicy.allowed_mount_roots."
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


def _check_value(what: str, value: Any, max_bytes: int, hint: str = "") -> str:
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
        raise ValueRefused(f"{what} is {size} bytes long; at most {max_bytes} are allowed{hint}.")
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
            " (ContainerPolicy.max_env_value_bytes)",
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
        f"This kernel would run as {what} (ContainerProvisioner.run_as {run_as!r}), which the "
        "administrator has not allowed: kernels run as the server's own user unless "
        "ContainerPolicy.allowed_run_as lists another."
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
        raise MountRefused(
            f"The mount of {_shown(source)} at {target} asks to be writable, but only mounts "
            "inside ContainerPolicy.writable_mount_roots "
            f"({', '.join(policy.writable_mount_roots) or 'none configured'}) may be. Mount it "
            "read-only, or ask an administrator."
        )
    return source, target, not writable


_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([bkmgt]?)b?\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: Any, what: str) -> int:
    """Bytes in a Docker-style size: 536870912, "512m", "1g", "1.5G"."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    m = _SIZE.fullmatch(str(value)) if isinstance(value, str) else None
    if not m:
        raise ValueRefused(f'{what} {_shown(value)} is not a size such as "512m" or "8g".')
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
            f"This kernel asks for {what} {asked} (ContainerProvisioner.{option}), more than the "
            f"{ceiling} the administrator allows (ContainerPolicy.max_{option}). Ask for less."
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
    for value, what in ((mem, "ContainerProvisioner.mem_limit"), (shm, "shm_size")):
        if value is not None:
            parse_size(value, what)
    if pids is not None and pids <= 0:
        raise ValueRefused(f"ContainerProvisioner.pids_limit must be positive, not {pids}.")
    if runtime is not None and runtime not in policy.allowed_runtimes:
        raise KernelOptionRefused(
            f"The container runtime {_shown(runtime)} (ContainerProvisioner.runtime) is not "
            "allowed for kernels on this server (ContainerPolicy.allowed_runtimes: "
            f"{', '.join(policy.allowed_runtimes) or 'none'})."
        )
    limits = normalize_ulimits(ulimits)
    for name, (soft, hard) in limits.items():
        if name not in policy.allowed_ulimits:
            raise KernelOptionRefused(
                f"The resource limit {_shown(name)} (ContainerProvisioner.ulimits) may not be set "
                "for kernels on this server (ContainerPolicy.allowed_ulimits: "
                f"{', '.join(sorted(policy.allowed_ulimits)) or 'none'})."
            )
        top = int(policy.allowed_ulimits[name])
        if top != -1 and any(v == -1 or v > top for v in (soft, hard)):
            raise KernelOptionRefused(
                f"The resource limit {name} of {soft}:{hard} (ContainerProvisioner.ulimits) is "
                f"above the {top} the administrator allows (ContainerPolicy.allowed_ulimits)."
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
            f'ContainerProvisioner.run_as {_shown(run_as)} must be "server", "image" or a '
            'numeric "uid:gid".'
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
        why = f"ContainerProvisioner.run_as is {run_as!r}"
    if (_is_root(uid) or _is_root(gid)) and not allow_root:
        raise KernelOptionRefused(
            f"This kernel would run as root in its container: {why}. Root there owns every "
            "root-owned file of the mounted workspace, so it is refused. Run the server as an "
            'unprivileged user, or set ContainerProvisioner.run_as to an unprivileged "uid:gid"; '
            "if root kernels are intended, an administrator can set ContainerPolicy.allow_root."
        )
    return user


def check_network_mode(policy: ContainerPolicy, network_mode: str) -> str:
    """``network_mode`` when the administrator's allow-list admits it; else KernelOptionRefused."""
    if not any(fnmatch.fnmatchcase(network_mode, p) for p in policy.allowed_network_modes):
        allowed = ", ".join(policy.allowed_network_modes) or "none"
        raise KernelOptionRefused(
            f"The network mode {_shown(network_mode)} is not allowed for kernels on this server "
            f"(ContainerPolicy.allowed_network_modes: {allowed}). Ask an administrator to allow "
            "it, or use one of those."
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


# ----------------------------------------------------------------------------- the launch plan


@dataclass(frozen=True)
class KernelOptions:
    """What a kernel's options (ContainerProvisioner's traits: the administrator's configuration,
    then the kernel spec's) say of its container."""

    image: str
    transport: str = "ipc"
    network_mode: str = "bridge"
    workspace_mount_path: str = "/workspace"
    run_as: str = "server"
    home_path: str = "/home/jupyter"
    shm_size: str | None = "1g"
    ulimits: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    environment: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    runtime: str | None = None
    mem_limit: str | None = None
    pids_limit: int | None = 4096
    extra_labels: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    extra_mounts: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class LaunchFacts:
    """What a launch knows of the host, gathered once (:func:`gather_facts`)."""

    root: str  # the workspace (the server's root_dir), resolved
    uid: int
    gid: int
    username: str
    server_id: str
    owner: str  # the creating process (labels.OwnerProcess token)
    host_cwd: str  # the kernel's directory on the host
    cwd: str  # ... and in the container
    session: str  # JPY_SESSION_NAME as the container sees it ("" for none)
    notebook: str  # the notebook's path relative to the workspace ("" for none)
    extra_mounts: tuple[tuple[str, str, bool], ...]  # (real source, target, read-only)
    connection_dir: str  # the kernel's private directory on the host
    name: str  # the container's name
    # The kernel's /etc/passwd and /etc/group on the host (accounts.py), once written; None:
    # the image's own (a kernel that runs as the image's USER, or no engine-side files).
    account_files: tuple[str, str] | None = None


def gather_facts(
    options: KernelOptions,
    policy: ContainerPolicy,
    *,
    kernel_id: str,
    root_dir: str,
    cwd: str,
    session: str,
    connection_dir: str,
    server_id: str,
    user: tuple[int, int, str] | None = None,
) -> LaunchFacts:
    """Everything :func:`plan_container` needs to know of the host. Blocking (realpath, the user
    database): a worker thread, before the host-wide allocation lock is taken. Refuses extra
    mounts that policy does not allow, with their sentence. ``user``: (uid, gid, name) of a
    kernel service's user (identity.py), whose workspace ``root_dir`` is; None: the server's."""
    root = os.path.realpath(root_dir)
    # A directory outside the workspace is not in the container: the kernel starts at its root.
    host_cwd = cwd if cwd and inside(cwd, root) else root
    uid, gid, username = user if user is not None else (os.getuid(), os.getgid(), "")
    allowed_roots = [root, *policy.allowed_mount_roots]
    mounts = tuple(
        check_extra_mount(policy, extra, allowed_roots, options.workspace_mount_path)
        for extra in options.extra_mounts
    )
    in_container = session
    notebook = session
    if session and os.path.isabs(session):
        in_container = container_path_for(session, root, options.workspace_mount_path)
        notebook = os.path.relpath(session, root)
    return LaunchFacts(
        root=root,
        uid=uid,
        gid=gid,
        username=username or _username(uid),
        server_id=server_id,
        owner=labels.OwnerProcess.current().token(),
        host_cwd=host_cwd,
        cwd=container_path_for(host_cwd, root, options.workspace_mount_path),
        session=in_container,
        notebook=notebook,
        extra_mounts=mounts,
        connection_dir=connection_dir,
        name=f"jupyter-kernel-{kernel_id[:8]}-{secrets.token_hex(3)}",
    )


def _username(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def plan_container(
    *,
    kernel_id: str,
    kernel_name: str,
    image: ImageRecord,
    command: list[str],
    options: KernelOptions,
    spec_env: Mapping[str, Any],
    facts: LaunchFacts,
    policy: ContainerPolicy,
    attached: Attachment,
    gpus: tuple[str, ...] = (),
    ports: Mapping[str, int] | None = None,
    pool_id: str | None = None,
) -> ContainerSpec:
    """The kernel's container, or the refusal (a sentence) of what policy does not allow.

    ``spec_env``: the kernel spec's environment, as jupyter_client substituted it; ``attached``:
    how ``gpus`` (UUIDs) reach the container; ``ports``: the kernel's ports (tcp transport);
    ``pool_id``: set for the warm pool's containers, which start in their private directory."""
    environment: dict[str, str] = {k: str(v) for k, v in spec_env.items()}
    environment.update({k: str(v) for k, v in options.environment.items()})
    reserved = sorted(RESERVED_ENV & set(environment))
    if reserved:
        raise ValueRefused(
            f"The kernel's environment may not set {', '.join(reserved)}: the GPU allocator "
            "sets it to the GPUs the kernel booked. Remove it from the kernel spec's env or "
            "ContainerProvisioner.environment."
        )
    environment.update(attached.environment)
    if facts.session:
        environment["JPY_SESSION_NAME"] = facts.session

    tmpfs: dict[str, str] = {}
    user = kernel_user(options.run_as, facts.uid, facts.gid, image.user, policy.allow_root)
    # Sized: a tmpfs without one may take half the host's memory.
    scratch = f"rw,mode=1777,size={policy.tmpfs_size}"
    if options.run_as != "image":
        tmpfs[options.home_path] = scratch
        environment.setdefault("HOME", options.home_path)
        environment.setdefault("USER", facts.username)
        environment.setdefault("LOGNAME", facts.username)
    if policy.read_only_root_fs:
        for directory in ("/tmp", "/var/tmp"):
            tmpfs.setdefault(directory, scratch)
    environment = check_environment(environment, policy.max_env_value_bytes)
    # Kernel specs may lower the administrator's ceilings, never lift them.
    limits = kernel_limits(
        policy,
        mem_limit=options.mem_limit,
        pids_limit=options.pids_limit,
        shm_size=options.shm_size,
        runtime=options.runtime,
        ulimits=options.ulimits,
    )
    mounts = [
        Mount(facts.connection_dir, KERNEL_DIR_IN_CONTAINER, read_only=False),
        Mount(facts.root, options.workspace_mount_path, read_only=False),
        *(Mount(source, target, read_only) for source, target, read_only in facts.extra_mounts),
    ]
    if facts.account_files is not None and options.run_as != "image":
        # Its own name inside the container, the image untouched (accounts.py).
        passwd, group = facts.account_files
        mounts += [Mount(passwd, "/etc/passwd", True), Mount(group, "/etc/group", True)]
    port_bindings: dict[int, tuple[str, int]] = {}
    if options.transport == "tcp" and options.network_mode != "host":
        for name in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"):
            port = int((ports or {})[name])
            port_bindings[port] = ("127.0.0.1", port)
    container_labels = check_labels(
        {
            # A POOL label marks warm containers, which recovery treats apart: only the pool
            # sets it.
            **{str(k): str(v) for k, v in options.extra_labels.items() if str(k) != labels.POOL},
            **({labels.POOL: pool_id} if pool_id is not None else {}),
            labels.MANAGED: "true",
            labels.KERNEL_ID: kernel_id,
            labels.KERNEL_NAME: kernel_name,
            labels.SERVER_ID: facts.server_id,
            labels.OWNER_PROCESS: facts.owner,
            labels.USER: facts.username,
            labels.UID: str(facts.uid),
            labels.NOTEBOOK: facts.notebook,
            labels.CWD: facts.host_cwd,
            labels.IMAGE: options.image,
            labels.CONNECTION_DIR: facts.connection_dir,
            labels.TRANSPORT: options.transport,
            labels.GPUS: ",".join(gpus),
        }
    )
    return ContainerSpec(
        image=options.image,
        command=command,
        name=facts.name,
        labels=container_labels,
        environment=environment,
        user=user,
        # A warm container starts in its private directory, not the workspace: it serves no
        # notebook yet. The handover moves the kernel to the notebook's directory.
        working_dir=KERNEL_DIR_IN_CONTAINER if pool_id is not None else facts.cwd,
        mounts=mounts,
        tmpfs=tmpfs,
        shm_size=limits.shm_size,
        ulimits=limits.ulimits,
        runtime=attached.runtime or limits.runtime,
        device_requests=list(attached.device_requests),
        network_mode=options.network_mode,
        mem_limit=limits.mem_limit,
        pids_limit=limits.pids_limit,
        init=True,
        entrypoint=[] if entrypoint_is_interpreter(image.entrypoint) else None,
        port_bindings=port_bindings,
        cap_add=list(policy.cap_add),
        no_new_privileges=policy.no_new_privileges,
        read_only=policy.read_only_root_fs,
        log_max_size=policy.log_max_size,
        log_max_files=policy.log_max_files,
        gpus=gpus,
    )
