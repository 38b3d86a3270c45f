"""A kernel's files on the host, for its provisioner (provisioner.py): its private directory
(host/privatedirs.py), both views of its connection (the kernel manager's connection file, which
the server reads, and the container's, in the private directory), and the kernel's own
/etc/passwd and /etc/group there.

All of it is blocking (the file system, the user database, perhaps the image's probe): the
provisioner calls it on a worker thread, never on the event loop.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Protocol

import zmq
from jupyter_client.connect import KernelConnectionInfo

from ..base.errors import ContainerKernelError
from ..base.records import KERNEL_DIR_IN_CONTAINER, ImageRecord
from ..host.accounts import group_text, host_account_name, host_group_name, passwd_text
from ..host.identity import KernelUser
from ..host.privatedirs import (
    connection_root,
    discard_private_dir,
    make_private_dir,
    remove_stale_sockets,
    write_account_files,
    write_connection_file,
)
from ..placement.placement import private_root_traversable
from ..policy.admin_policy import ContainerPolicy
from ..policy.checks import numeric_user
from ..policy.launchplan import KernelOptions, LaunchFacts, gather_facts
from ..services import Services
from . import relay_files


class FilesKernel(Protocol):
    """What the kernel's files read of its provisioner, and set on it: ``connection_dir`` (the
    private directory), ``connection_info`` and ``transport``."""

    kernel_id: str
    parent: Any
    run_as: str
    network_mode: str
    transport: str
    owner: KernelUser | None
    connection_dir: str | None
    connection_info: KernelConnectionInfo

    @property
    def services(self) -> Services: ...

    def options(self) -> KernelOptions: ...


class KernelFiles:
    """The files of one provisioner's kernel. The private directory is the provisioner's
    ``connection_dir``: a reattached kernel (load_provisioner_info) and a warm container's
    handover set it too."""

    def __init__(self, kernel: FilesKernel) -> None:
        self.kernel = kernel

    def prepare(
        self,
        policy: ContainerPolicy,
        root_dir: str,
        cwd: str,
        server_root: str,
        session: str,
    ) -> LaunchFacts:
        """The private directory, both views of the connection, and the launch's facts (blocking:
        a worker thread)."""
        kernel = self.kernel
        km = kernel.parent
        assert km is not None  # pre_launch checked
        local = kernel.services.placement.reaches_kernels_on_loopback
        if kernel.connection_dir is None:
            # A job's rootless Podman reaches the directory as its user: the root is
            # traversable then (0711; the directory itself stays the user's alone).
            root = connection_root(
                policy.connection_dir_root,
                traversable=private_root_traversable(kernel.services.placement),
            )
            # A tmpfs of this host only where the kernel runs on it: a pod gets its connection
            # file from a Secret (this directory is never mounted), and a job's node reads the
            # directory through the file system it shares with this host.
            size = policy.private_dir_size if local else None
            kernel.connection_dir = make_private_dir(root, kernel.kernel_id, self.owner(), size)
        else:
            remove_stale_sockets(kernel.connection_dir)
        # The host's view of the connection, held by the kernel manager.
        if not local:
            # A pod or a job's node has an address of its own (known once it runs): tcp there
            # (launch_kernel sets the address, and the ports where the kernel chose them).
            kernel.transport = "tcp"
            km.transport = "tcp"
            km.ip = "127.0.0.1"
            if kernel.services.placement.kernel_chooses_ports and km.curve_publickey is None:
                # A job's node is reached by every account on the network: its ports are the
                # channel relay's, CurveZMQ servers with this keypair (relay_files.py), and the
                # server's sockets use it as their client key too (jupyter_client). One per
                # kernel, kept by its restarts (the kernel manager keeps it).
                km.curve_publickey, km.curve_secretkey = zmq.curve_keypair()
        elif kernel.transport == "ipc":
            km.transport = "ipc"
            km.ip = os.path.join(kernel.connection_dir, "kernel-ipc")
        else:
            km.transport = "tcp"
            km.ip = "127.0.0.1"
        km.write_connection_file(jupyter_session=session)
        kernel.connection_info = km.get_connection_info()
        self.write_container_connection_file()
        owner = kernel.owner
        return gather_facts(
            kernel.options(),
            policy,
            kernel_id=kernel.kernel_id,
            root_dir=root_dir,
            cwd=cwd,
            session=session,
            connection_dir=kernel.connection_dir,
            server_id=kernel.services.server_id(server_root),
            user=(owner.uid, owner.gid, owner.username) if owner else None,
            state_dir=kernel.services.state.identity,
        )

    def owner(self) -> tuple[int, int] | None:
        """Who must own the kernel's private directory and connection file: the service user,
        or an explicit run_as uid (no capabilities in the container: owning them is its only way
        in). None: the server's user, who creates them. A pod reads its connection file from
        a Secret, not from this directory: the server's user keeps it."""
        kernel = self.kernel
        if not kernel.services.placement.shares_directory:
            return None
        if kernel.owner is not None:
            return kernel.owner.uid, kernel.owner.gid
        return numeric_user(kernel.run_as)

    def write_container_connection_file(self) -> None:
        kernel = self.kernel
        assert kernel.connection_dir is not None
        info = dict(kernel.connection_info)
        # The kernel's own ipykernel has no Curve: the keys are the relay's alone.
        public, secret = info.pop("curve_publickey", ""), info.pop("curve_secretkey", "")
        if info["transport"] == "ipc":
            info["ip"] = f"{KERNEL_DIR_IN_CONTAINER}/kernel-ipc"
        elif kernel.services.placement.kernel_chooses_ports:
            # On a job's node, which every account on the network reaches: the kernel binds
            # ipc in this directory (its user's alone), and the channel relay beside it binds
            # the node's ports as a CurveZMQ server and writes them back here (relay_files.py).
            if not public or not secret:
                raise ContainerKernelError(
                    "A kernel on a Slurm node needs its channel keys (CurveZMQ), and this "
                    "kernel has none: start it again.",
                    status=409,
                )
            info.update(relay_files.KERNEL_SIDE)
            relay_files.write(kernel.connection_dir, str(public), str(secret), self.owner())
        elif kernel.network_mode != "host":
            info["ip"] = "0.0.0.0"  # inside the container's own network namespace only
        key = info.get("key", b"")
        info["key"] = key.decode() if isinstance(key, bytes) else key
        # The kernel's container can write this directory (a symlink in place of kernel.json,
        # say): replaced, never followed. An explicit run_as uid reads (and ipykernel rewrites)
        # the file with no capabilities, so owning it is its only way in.
        write_connection_file(kernel.connection_dir, info, self.owner())

    def with_account_files(
        self, image: ImageRecord, facts: LaunchFacts | None
    ) -> LaunchFacts | None:
        """The kernel's /etc/passwd and /etc/group, its user's entry first, then the image's
        own (as its probe read them), into its private directory for the plan to mount
        (accounts.py); ``facts`` with them. An image is probed before its kernel spec is listed,
        so the probe's answer is at hand; a kernel started on an image not probed yet (a
        hand-written spec) waits for the probe here. Without an answer (a probe that timed
        out), root's entry and the user's. Blocking: a worker thread."""
        kernel = self.kernel
        if facts is None or not kernel.connection_dir:
            return facts
        uid, gid, name = facts.uid, facts.gid, facts.username
        explicit = numeric_user(kernel.run_as)
        if explicit is not None:
            (uid, gid), name = explicit, host_account_name(explicit[0])
        probe = kernel.services.probe
        found = (probe.cached(image.id) or probe.probe_sync(image)).accounts
        home = kernel.options().home_path
        files = write_account_files(
            kernel.connection_dir,
            passwd_text(found.get("passwd", ""), uid, gid, name, home),
            group_text(found.get("group", ""), gid, host_group_name(gid), name, uid),
        )
        return dataclasses.replace(facts, account_files=files)

    def remove(self) -> None:
        """The private directory and the kernel manager's connection file."""
        self.remove_private_dir()
        if self.kernel.parent is not None:
            self.kernel.parent.cleanup_connection_file()

    def remove_private_dir(self) -> None:
        if self.kernel.connection_dir:
            discard_private_dir(self.kernel.connection_dir)
            self.kernel.connection_dir = None
