"""The network a kernel's container joins on Podman: the one place a spec's network mode becomes
Podman's (issue 61, finding 8: one student's kernel served its workspace over HTTP on the engine's
bridge, and another student's kernel read it).

A spec's "bridge" (its default) becomes ``PodmanEngine.network``, and as root (a kernel service:
one set of containers for every user) that must keep users' kernels apart:

- "auto" (the default): slirp4netns, a network of the container's own: nothing on the host, and
  no other container, can connect to a kernel's sockets (only ports it publishes, and kernels
  publish none on Podman). Without /dev/net/tun, rootless Podman falls back to the host's
  network (one user's kernels, as a kernel without a container would run); as root that would
  put every user's kernels on the host's network, and a start is refused in a sentence instead.
- "bridge" (or "podman", Podman's default network, where every container reaches every other):
  as root, a network per user, ``jupyter-gpu-containers-kernels-<uid>``, made with
  ``isolate=true``: Podman's firewall drops traffic between two such networks, so a user's
  kernels reach each other and no one else's. Only root can make root's networks, so no student
  makes one first; what has the name is checked (a bridge, isolated) before a kernel joins it.
- A named network (PodmanEngine.network, or a mode the administrator lists in
  ContainerPolicy.allowed_network_modes) is refused as root: Podman keeps no containers of one
  network apart, so every user's kernels on it would reach each other. Rootless, it is the
  user's own.
- "none", "slirp4netns", "pasta", "host", "private", "container:…" and "ns:…" are passed on:
  "host" and "container:" are an administrator's explicit choice, and the help of the option
  that names them says what they share.
"""

from __future__ import annotations

import threading
from typing import Any

from ...base import labels as L
from ...base.errors import KernelOptionRefused
from .cli import PodmanCLI, PodmanFailed

KERNELS_NETWORK_PREFIX = "jupyter-gpu-containers-kernels-"
# Podman's own modes: never a network of this backend's making.
_PODMANS_OWN = ("none", "slirp4netns", "pasta", "host", "private")
_SHARED_DEFAULT = ("bridge", "podman")
_OWNER_LABEL = "org.jupyter.gpu-containers.kernels-network-of"


def isolated(network: dict[str, Any]) -> bool:
    """Whether ``podman network inspect``'s answer is a bridge network isolated from the others."""
    options = network.get("options") or {}
    return network.get("driver") == "bridge" and str(options.get("isolate", "")).lower() == "true"


class KernelNetworks:
    """The per-user networks a root Podman's kernels join. Called on the engine's worker threads:
    a user's network is looked up at each start (one ``podman network inspect``; it may have
    been removed by hand since) and made by one thread at a time."""

    def __init__(self, cli: PodmanCLI) -> None:
        self._cli = cli
        self._lock = threading.Lock()

    def resolve(
        self, asked: str, *, configured: str, shared: bool, tun: bool, labels: dict[str, str]
    ) -> str:
        """Podman's network for a spec's mode ``asked``: ``configured`` is PodmanEngine.network,
        ``shared`` whether this Podman's containers are every user's (root), ``tun`` whether
        slirp4netns can run here, ``labels`` the container's (its user's uid)."""
        mode = asked
        if asked == "bridge":
            mode = configured
            if mode == "auto":
                if tun:
                    return "slirp4netns"
                if shared:
                    raise KernelOptionRefused(
                        "Podman cannot give this kernel a network of its own: /dev/net/tun "
                        "cannot be opened here (slirp4netns needs it), and on the host's "
                        "network every user's kernels would reach each other. Ask an "
                        "administrator to make /dev/net/tun usable, or to give each user a "
                        "network of their own.",
                        setting="PodmanEngine.network",
                    )
                return "host"  # one user's own kernels (the engine's log says so once)
        if not shared or mode in _PODMANS_OWN or mode.startswith(("container:", "ns:")):
            return mode
        if mode in _SHARED_DEFAULT:
            return self._users_network(labels)
        raise KernelOptionRefused(
            f"The kernel service does not put kernels on the named network {mode!r}: Podman "
            "keeps no containers of one network apart, so one user's kernel could read what "
            "another user's kernel serves on it. Use the default network (a network per user "
            "as root), or none."
        )

    def _users_network(self, labels: dict[str, str]) -> str:
        uid = labels.get(L.UID, "")
        if not uid.isdigit() or len(uid) > 10:
            raise KernelOptionRefused(
                "This kernel names no user, so it has no network of its user's to join."
            )
        name = f"{KERNELS_NETWORK_PREFIX}{int(uid)}"
        with self._lock:
            for _ in range(2):
                try:
                    found = self._cli.json(
                        ["network", "inspect", name], what=f"describe the network {name}"
                    )
                except PodmanFailed:
                    self._make(name, uid)
                    continue
                network = found[0] if isinstance(found, list) and found else {}
                if not isinstance(network, dict) or not isolated(network):
                    raise KernelOptionRefused(
                        f"The Podman network {name!r} is not isolated from the others; "
                        "kernels do not join it. Ask an administrator to remove it (`podman "
                        f"network rm {name}`): the next kernel's start makes it again."
                    )
                return name
        raise KernelOptionRefused(f"The Podman network {name!r} could not be made. Try again.")

    def _make(self, name: str, uid: str) -> None:
        try:
            self._cli.run(
                [
                    "network",
                    "create",
                    "--driver=bridge",
                    "--opt=isolate=true",
                    f"--label={_OWNER_LABEL}={uid}",
                    name,
                ],
                what=f"create the network {name}",
            )
        except PodmanFailed as e:
            if "already" not in e.said.lower():  # made meanwhile by another process: inspected
                raise
