"""The ZeroMQ context of a server's kernels holds sockets for hundreds of kernels and their pages
(zmq_context.py): libzmq's default of 1023 sockets a context stopped a kernel service with some
150 kernels and their pages open."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest
import zmq

from jupyter_gpu_containers.server.kernelmanager import GPUContainersKernelManager
from jupyter_gpu_containers.server.zmq_context import raise_open_files_limit, size_context

# More sockets than libzmq's default allows a context (1023), as 200 kernels with their pages
# need (a few a kernel, four a page).
SOCKETS = 1500


@pytest.fixture
def open_files() -> Iterator[tuple[int, int]]:
    """The open-file limits as they were, put back after the test."""
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield limits
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def test_a_servers_kernels_context_takes_more_sockets_than_libzmqs_default(
    open_files: tuple[int, int],
) -> None:
    _soft, hard = open_files
    if hard != resource.RLIM_INFINITY and hard < 2 * SOCKETS + 64:
        pytest.skip(f"the hard open-file limit ({hard}) is below what {SOCKETS} sockets need")
    # As a service started by systemd finds it: a soft limit of 1024.
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    manager = GPUContainersKernelManager()
    context = manager.context
    try:
        assert context.get(zmq.MAX_SOCKETS) > SOCKETS
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 2 * SOCKETS
        sockets = [context.socket(zmq.DEALER) for _ in range(SOCKETS)]
        for sock in sockets:
            sock.close(linger=0)
    finally:
        context.destroy(linger=0)


def test_the_number_of_sockets_is_a_setting(open_files: tuple[int, int]) -> None:
    manager = GPUContainersKernelManager(max_kernel_sockets=4)
    context = manager.context
    try:
        assert context.get(zmq.MAX_SOCKETS) == 4
        sockets = [context.socket(zmq.DEALER) for _ in range(4)]
        with pytest.raises(zmq.ZMQError):
            context.socket(zmq.DEALER)  # the fifth: what libzmq says at its ceiling
        for sock in sockets:
            sock.close(linger=0)
    finally:
        context.destroy(linger=0)


def test_the_soft_limit_is_raised_only_within_the_hard_one(open_files: tuple[int, int]) -> None:
    _soft, hard = open_files
    ceiling = hard if hard != resource.RLIM_INFINITY else 4096
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, ceiling), ceiling))
    assert raise_open_files_limit(ceiling * 4) == ceiling
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (ceiling, ceiling)
    # Never lowered.
    assert raise_open_files_limit(16) == ceiling


def test_a_context_is_never_given_more_than_libzmq_allows() -> None:
    context = zmq.Context()
    try:
        assert size_context(context, 10**9) == context.get(zmq.SOCKET_LIMIT)
    finally:
        context.destroy(linger=0)
