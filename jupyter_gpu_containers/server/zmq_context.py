"""The ZeroMQ context that all of a server's kernel sockets share, sized for hundreds of kernels.

jupyter_client gives every kernel of a server one context, and libzmq allows a context 1023
sockets by default: each kernel holds a few (heartbeat, control), and each page connected to it
four more (shell, iopub, stdin, control). A kernel service with some 150 kernels and their pages
open refused the next page's connection ("Too many open files", a ZMQError from the context, with
the process far from its open-file limit; benchmarks, section 13). Each socket is also at least
one file descriptor, and a service started by systemd gets a soft open-file limit of 1024: the
soft limit is raised toward the hard one first.
"""

from __future__ import annotations

import resource

import zmq

# What the soft open-file limit is raised to at most when the hard limit allows more (or none).
OPEN_FILES_WANTED = 65536


def raise_open_files_limit(wanted: int = OPEN_FILES_WANTED) -> int:
    """Raise this process's soft open-file limit toward ``wanted``, within its hard limit; the
    soft limit after (``wanted`` when there is none)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft  # not ours to raise (a container's or a sandbox's limit): as it is
        return target
    return soft


def size_context(context: zmq.Context, max_sockets: int) -> int:
    """Allow ``context`` up to ``max_sockets`` sockets (within libzmq's own ceiling); the number
    set. Only before its first socket: libzmq sizes a context when it makes the first one."""
    allowed = max(1, min(max_sockets, context.get(zmq.SOCKET_LIMIT)))
    context.set(zmq.MAX_SOCKETS, allowed)
    return allowed
