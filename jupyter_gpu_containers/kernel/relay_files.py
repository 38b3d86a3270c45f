"""The channel relay's files in a kernel's private directory, for a kernel whose node every
account on the network reaches (a Slurm job's: the batch placement, where the kernel chooses its
ports).

A kernel's channels are private on every engine: on this host they are ipc in its private
directory (or tcp inside a network namespace of its own), a pod's are closed by the
NetworkPolicy, and a job's are the relay's. The kernel binds ipc in its private directory (its
user's alone, 0700: no other account on the node connects), and the relay (channel_relay.py,
started by the container's command before the kernel: policy/command.py's relayed_command) binds
the node's tcp ports, each a CurveZMQ server with the kernel's own keypair, admitting through ZAP
only the client holding that keypair: the kernel service (jupyter_client uses the connection
info's keypair as its sockets' client key). Another account on the node or the network reads
nothing and sends nothing: its handshake fails before a message passes. The key that signs the
messages (HMAC) hides nothing; Curve both authenticates and encrypts.

The keypair is made by the service, one per kernel (kernel_files.py), and written here only:
into the relay's configuration in the private directory (0600, the kernel's user's; the kernel's
user may read their own kernel's key) and into the kernel manager's connection info. The images'
ipykernel need not know Curve; their pyzmq must have it (the relay refuses to start without it,
in a sentence, and the kernel then does not start: no port is ever open without Curve).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from ..base.records import (
    KERNEL_DIR_IN_CONTAINER,
    RELAY_CONFIG_NAME,
    RELAY_PORTS_NAME,
    RELAY_SCRIPT_NAME,
)
from ..base.safefiles import write_atomic

# The kernel's side of its connection file: ipc in its private directory, each channel at a
# fixed name (kernel-ipc-<n>: the relay connects to the names it is given, and
# privatedirs.remove_stale_sockets removes them before a restart).
KERNEL_PORTS = {"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}
KERNEL_IPC = f"{KERNEL_DIR_IN_CONTAINER}/kernel-ipc"
KERNEL_SIDE: dict[str, str | int] = {"transport": "ipc", "ip": KERNEL_IPC, **KERNEL_PORTS}

RELAY_SOURCE = Path(__file__).with_name("channel_relay.py")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def config(public: str, secret: str) -> dict[str, object]:
    """The relay's configuration: its keys, the kernel's endpoints (as the container sees
    them), and where it writes the ports it bound."""
    return {
        "public_key": public,
        "secret_key": secret,
        "kernel": {
            name.removesuffix("_port"): f"ipc://{KERNEL_IPC}-{port}"
            for name, port in KERNEL_PORTS.items()
        },
        "directory": KERNEL_DIR_IN_CONTAINER,
        "ports_file": RELAY_PORTS_NAME,
    }


def write(private: str, public: str, secret: str, owner: tuple[int, int] | None) -> None:
    """The relay's script and configuration into the private directory (replacing, never
    following, what the kernel left at their names), and the ports a previous relay wrote
    removed: the backend reads this start's ports only (a restart in a job's allocation
    runs a new relay). ``owner``: the kernel's user (the container runs as them)."""
    dir_fd = os.open(private, _DIR_FLAGS)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(RELAY_PORTS_NAME, dir_fd=dir_fd)
        write_atomic(dir_fd, RELAY_SCRIPT_NAME, RELAY_SOURCE.read_bytes(), 0o600, owner)
        data = json.dumps(config(public, secret)).encode()
        write_atomic(dir_fd, RELAY_CONFIG_NAME, data, 0o600, owner)
    finally:
        os.close(dir_fd)
