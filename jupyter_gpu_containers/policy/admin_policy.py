"""The administrator's policy for kernel containers (:class:`ContainerPolicy`): ceilings and
allow-lists that nothing in a kernel spec can widen, and whether an image is allowed (its
allow-list and pinned digests).
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
from collections.abc import Iterable
from typing import Any

from traitlets import Bool, Dict, Int, List, TraitError, Unicode, validate
from traitlets.config import LoggingConfigurable

from ..base.errors import ImageNotAllowed
from ..base.references import BadReference, parse_reference
from ..host.user_packages import check_packages_dir

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

    user_packages = Bool(
        True,
        config=True,
        help="""Keep each user's own packages per image: a kernel's `%pip install` lands in
        user_packages_dir of the user's workspace, in a folder of the kernel's image, and is on
        the path of every later kernel of that image (never of another image). The panel shows
        each folder's size and resets it. Off: packages go where the image's pip puts them (for
        a kernel running as its user, its HOME, a tmpfs gone at the next start).""",
    )

    user_packages_dir = Unicode(
        ".jupyter-gpu-containers/packages",
        config=True,
        help="""Where user_packages keeps a user's packages: a path relative to the user's
        workspace (the server's root_dir, or UserDirectory.workspace_template behind the kernel
        service), one folder per image below it. Put it on a volume of its own by mounting one
        there.""",
    )

    @validate("user_packages_dir")
    def _validate_user_packages_dir(self, proposal: Any) -> str:
        try:
            return check_packages_dir(str(proposal["value"]))
        except ValueError as e:
            raise TraitError(f"ContainerPolicy.user_packages_dir {e}") from None

    user_packages_max_bytes = Int(
        0,
        config=True,
        help="""A guard on the size of one image's packages folder (user_packages), in bytes:
        measured when a kernel starts; over it, that kernel's pip refuses to install more (its
        PIP_REQUIRE_VIRTUALENV is set) until the user resets the folder in the panel, and the
        panel says so. Not a quota: code in a kernel can write its workspace anyway, and only the
        workspace file system's quota bounds that. 0: no guard.""",
    )

    allowed_network_modes = List(
        Unicode(),
        ["bridge", "none"],
        config=True,
        help="""Glob patterns of the network modes kernels may use (ContainerProvisioner.
        network_mode). Default: "bridge" (each engine's network where no user's kernel reaches
        another user's: on Docker the kernels' network with inter-container traffic off, on
        Podman PodmanEngine.network) and no network. "host" (the host's network namespace,
        where the host's loopback services are reachable, and every account reaches what a
        kernel serves), "container:*" (another container's namespace) and named networks must
        be listed here to be used; a named network is joined only when it keeps its containers
        apart (Docker: made with com.docker.network.bridge.enable_icc=false; a kernel service on
        root Podman refuses named networks).""",
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


def reference_matches(ref: str, patterns: Iterable[str]) -> bool:
    """Whether one of ``patterns`` (as ContainerPolicy.allowed_images writes them) names
    ``ref``, in any of the forms a reference takes ("python:3" is "docker.io/library/python:3")."""
    forms = _reference_forms(ref)
    return any(fnmatch.fnmatchcase(f, p) for f in forms for p in patterns)


# The option that decides image_allowed's refusals.
ALLOWED_IMAGES = "ContainerPolicy.allowed_images"


def image_allowed(policy: ContainerPolicy, ref: str) -> str:
    """ "" when the allow-list admits ``ref``, else the sentence that refuses it (decided by
    ALLOWED_IMAGES)."""
    if reference_matches(ref, policy.allowed_images):
        return ""
    return (
        f"The image {ref} is not in this server's allow-list "
        f"({', '.join(policy.allowed_images) or 'empty'}). Ask an administrator to allow it, "
        "or choose an allowed image."
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
        raise ImageNotAllowed(refusal, setting=ALLOWED_IMAGES)
    pins = pinned_for(policy, ref)
    if pins is None or digests is None:
        return
    have = {d.rsplit("@", 1)[-1] for d in digests}
    if not have & set(pins):
        shown = ", ".join(sorted(have)) or "none"
        raise ImageNotAllowed(
            f"The image {ref} has digest {shown}, but an administrator pinned it to "
            f"{', '.join(pins)}. Pull the pinned image, or ask an administrator to update the "
            "pin.",
            setting="ContainerPolicy.pinned_digests",
        )
