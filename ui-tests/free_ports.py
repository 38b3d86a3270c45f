"""Free loopback ports for the UI tests' servers, below the range the kernel hands out for port 0.

The test command starts the UI tests beside the rest's pytest session, whose tests bind port 0
all the time (servers, clients' own ends): a port from that range, free when picked, may be theirs
by the time a UI server binds it. No process binds below that range unless told a port.

    python ui-tests/free_ports.py N    N free ports, on one line
"""

from __future__ import annotations

import random
import socket
import sys
from pathlib import Path


def ephemeral_low() -> int:
    """The first port of the kernel's range for port 0 (32768 when it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int) -> list[int]:
    low = min(20000, ephemeral_low() // 2)
    high = ephemeral_low() - 1
    picked: list[int] = []
    for port in random.sample(range(low, high), high - low):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        picked.append(port)
        if len(picked) == count:
            return picked
    raise SystemExit(f"fewer than {count} free ports between {low} and {high}")


if __name__ == "__main__":
    print(" ".join(str(port) for port in free_ports(int(sys.argv[1]))))
