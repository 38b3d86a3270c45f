"""From "this kernel, this image, this notebook" to the description of its container.

Two steps, under the administrator's policy (admin_policy.py) and the checks (checks.py), with
no engine:

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

import dataclasses
import os
import pwd
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..base import labels
from ..base.errors import PathRefused, ValueRefused
from ..base.records import KERNEL_DIR_IN_CONTAINER, ContainerSpec, ImageRecord, Mount
from ..gpus.allocator import Attachment
from ..host.user_packages import folder_bytes, packages_key, user_base
from .admin_policy import ContainerPolicy
from .checks import (
    RESERVED_ENV,
    check_environment,
    check_extra_mount,
    check_labels,
    container_path_for,
    inside,
    kernel_limits,
    kernel_user,
)
from .command import entrypoint_is_interpreter


@dataclass(frozen=True)
class KernelOptions:
    """What a kernel's options (ContainerProvisioner's traits: the administrator's configuration,
    then the kernel spec's) say of its container."""

    image: str
    # The digest of ``image``'s repository the kernel runs instead (its notebook's pin,
    # images/environment.py, checked), or "".
    pinned_image: str = ""
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

    @property
    def run_image(self) -> str:
        """The reference the container runs: the pinned digest, else ``image``."""
        return self.pinned_image or self.image


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
    # The size of the user's packages folder for this image (user_packages.py), measured only
    # under ContainerPolicy.user_packages_max_bytes and where the workspace is on this host.
    packages_bytes: int | None = None
    # The host state directory the server registers in (StateDir.identity; "": none known).
    state_dir: str = ""


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
    state_dir: str = "",
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
    packages_bytes = None
    if policy.user_packages and policy.user_packages_max_bytes > 0:
        try:
            packages_bytes = folder_bytes(
                root, uid, policy.user_packages_dir, packages_key(options.run_image)
            )
        except (OSError, PathRefused):
            packages_bytes = None  # not on this host, or not the user's: nothing to guard here
    return LaunchFacts(
        root=root,
        uid=uid,
        gid=gid,
        username=username or _username(uid),
        server_id=server_id,
        state_dir=state_dir,
        owner=labels.OwnerProcess.current().token(),
        host_cwd=host_cwd,
        cwd=container_path_for(host_cwd, root, options.workspace_mount_path),
        session=in_container,
        notebook=notebook,
        extra_mounts=mounts,
        connection_dir=connection_dir,
        name=f"jupyter-kernel-{kernel_id[:8]}-{secrets.token_hex(3)}",
        packages_bytes=packages_bytes,
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
    how ``gpus`` (UUIDs) reach the container, or how many a scheduler places; ``ports``: the
    kernel's ports (tcp transport); ``pool_id``: set for the warm pool's containers, which start
    in their private directory."""
    environment: dict[str, str] = {k: str(v) for k, v in spec_env.items()}
    environment.update({k: str(v) for k, v in options.environment.items()})
    reserved = sorted(RESERVED_ENV & set(environment))
    if reserved:
        raise ValueRefused(
            f"The kernel's environment may not set {', '.join(reserved)}: the GPU allocator "
            "sets it to the GPUs the kernel booked. Remove it from the kernel spec's env or "
            "the kernel's environment settings.",
            setting="ContainerProvisioner.environment",
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
    if policy.user_packages:
        # The user's packages for this image (user_packages.py; command.KERNEL_BOOT puts them
        # on the path). A kernel spec that sets PYTHONUSERBASE itself keeps its own.
        environment.setdefault(
            "PYTHONUSERBASE",
            user_base(options.workspace_mount_path, policy.user_packages_dir, options.run_image),
        )
        over = policy.user_packages_max_bytes
        if over > 0 and facts.packages_bytes is not None and facts.packages_bytes > over:
            environment["PIP_REQUIRE_VIRTUALENV"] = "1"
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
            **({labels.STATE_DIR: facts.state_dir} if facts.state_dir else {}),
            labels.OWNER_PROCESS: facts.owner,
            labels.USER: facts.username,
            labels.UID: str(facts.uid),
            labels.NOTEBOOK: facts.notebook,
            labels.CWD: facts.host_cwd,
            labels.IMAGE: options.image,
            labels.CONNECTION_DIR: facts.connection_dir,
            labels.TRANSPORT: options.transport,
            labels.GPUS: ",".join(gpus),
            # What it runs instead of the tag, read back when a server reattaches it.
            **({labels.IMAGE_PIN: options.pinned_image} if options.pinned_image else {}),
        }
    )
    return ContainerSpec(
        image=options.run_image,
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
        gpu_count=attached.count,
        gpu_resource=attached.resource,
    )
