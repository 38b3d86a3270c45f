"""The network a kernel's container joins on the Docker engine: the one place a spec's network
mode becomes the engine's (issue 61, finding 8: one student's kernel served its workspace over
HTTP on Docker's default bridge, and another student's kernel read it).

- **"bridge"** (a kernel spec's default) is not Docker's default bridge, where every container
  reaches every other, but the kernels' network, ``KERNELS_NETWORK``: a bridge network made with
  inter-container traffic off (``com.docker.network.bridge.enable_icc=false``). No kernel on it
  reaches another, whoever's they are (a user's own kernels share their workspace, not a
  network); each still reaches the outside world through the host (pip, datasets), and Docker's
  isolation rules keep the containers of every other network (the default bridge's, builds')
  from it. One network for every kernel: no per-user networks to bound, none of Docker's small
  pool of address ranges used up by a class of students.
- **A named network** (one the administrator lists in ContainerPolicy.allowed_network_modes) is
  joined only when it keeps its containers apart in the same way (a bridge network with
  inter-container traffic off); else the start is refused in a sentence that says how to make one.
- "none", "host" and "container:<id>" are Docker's own modes, passed on: "host" and "container:"
  are never a kernel's unless the administrator lists them, and their help says what they share.

What this does not close: the host routes to every bridge network, so a process on the host
itself (any local account) can still connect to a kernel's address on it; only a firewall rule on
the host's own output (for example to the kernels' subnet for root alone) closes that. Root
Podman's default ("auto": each container's own network) has no such address.

Only a member of the docker group (who is root on the host anyway) can make a Docker network, so
no student can make the kernels' network first; what the engine has under its name is checked
(a bridge, inter-container traffic off) at each start, and the network is joined by the id
that was checked, which names that network and no later one.
"""

from __future__ import annotations

import threading
from typing import Any

import docker
import docker.errors

from ...base.errors import EngineRefused, KernelOptionRefused
from .sentences import short

KERNELS_NETWORK = "jupyter-gpu-containers-kernels"
ICC = "com.docker.network.bridge.enable_icc"
_DOCKERS_OWN = ("none", "host")


def keeps_containers_apart(network: dict[str, Any]) -> bool:
    """Whether a network's inspect answer says its containers cannot reach each other: a bridge
    network with inter-container traffic off."""
    options = network.get("Options") or {}
    return network.get("Driver") == "bridge" and str(options.get(ICC, "")).lower() == "false"


class KernelNetworks:
    """The network each kernel joins. Called on the engine's worker threads: the kernels'
    network is looked up at each start (one inspect; it may have been removed by hand since) and
    made by one thread at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def resolve(self, c: docker.APIClient, mode: str) -> str:
        """The engine's network mode for a spec's ``mode``."""
        if mode in _DOCKERS_OWN or mode.startswith("container:"):
            return mode
        if mode in ("bridge", "default"):  # Docker's names for its default bridge
            with self._lock:
                return _kernels_network(c)
        try:
            network = c.inspect_network(mode)
        except docker.errors.NotFound:
            raise KernelOptionRefused(
                f"The Docker engine has no network {mode!r} for this kernel. Ask an "
                "administrator to create it, or use the default network."
            ) from None
        if not keeps_containers_apart(network):
            raise KernelOptionRefused(
                f"The network {mode!r} lets the containers on it reach each other, so one "
                "user's kernel could read what another user's kernel serves on it. Kernels "
                "join only networks that keep them apart: an administrator creates it with "
                f"`docker network create --opt {ICC}=false {mode}`."
            )
        return str(network["Id"])


def _kernels_network(c: docker.APIClient) -> str:
    """The kernels' network's id: made when missing, refused in a sentence when what has its name
    does not keep containers apart (made by hand, or by an older version)."""
    for _ in range(2):
        try:
            network = c.inspect_network(KERNELS_NETWORK)
        except docker.errors.NotFound:
            try:
                c.create_network(
                    KERNELS_NETWORK,
                    driver="bridge",
                    options={ICC: "false"},
                    check_duplicate=True,
                )
            except docker.errors.APIError as e:
                if e.status_code != 409:  # 409: another server made it meanwhile
                    raise EngineRefused(
                        f"The Docker engine refused to create the kernels' network "
                        f"{KERNELS_NETWORK!r}: {short(e.explanation or str(e))}"
                    ) from e
            continue
        if not keeps_containers_apart(network):
            raise KernelOptionRefused(
                f"The Docker network {KERNELS_NETWORK!r} lets the containers on it reach each "
                "other; kernels do not join it. Ask an administrator to remove it (`docker "
                f"network rm {KERNELS_NETWORK}`): the next kernel's start makes it again, with "
                "inter-container traffic off."
            )
        return str(network["Id"])
    raise EngineRefused(
        f"The Docker engine's kernels' network {KERNELS_NETWORK!r} could not be made. Try again."
    )
