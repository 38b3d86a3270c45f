"""The private names of other libraries this project uses (listed, with why, in
jupyter_gpu_containers/_private.py), pinned: an upgrade that renames one fails here, by name, not
in a user's kernel. Each is also exercised for real elsewhere (recovery's reattach in
test_server_process.py, a restart's reconnect in test_gpu_rest.py, a build step's stream in
test_threat_builds.py, the engine going away in test_faults.py)."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import docker
import docker.transport.unixconn as unixconn
import pytest
from jupyter_client.manager import AsyncKernelManager, KernelManager
from jupyter_client.multikernelmanager import MultiKernelManager
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from jupyter_server.services.kernels.kernelmanager import MappingKernelManager
from packaging.version import Version

from jupyter_gpu_containers.server.kernelmanager import GPUContainersKernelManager

# What pyproject.toml allows, and so what this file vouches for.
ALLOWED = {
    "jupyter_server": (Version("2.10"), Version("3")),
    "jupyter_client": (Version("8.6"), Version("9")),
    "docker": (Version("7.1"), Version("8")),
}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_installed_versions_are_the_ones_vouched_for(package: str) -> None:
    low, high = ALLOWED[package]
    assert low <= Version(version(package)) < high


def test_jupyter_client_and_server_private_names() -> None:
    assert "_pending_kernels" in MultiKernelManager.class_traits()
    assert "_kernels" in MultiKernelManager.class_traits()
    assert "_kernel_connections" in MappingKernelManager.class_traits()
    # The offline buffer's entry: made by start_buffering, replayed by the websocket's connect.
    assert "_kernel_buffers" in MappingKernelManager.class_traits()
    assert "_kernel_buffers[kernel_id]" in inspect.getsource(MappingKernelManager.start_buffering)
    assert 'buffer_info["buffer"]' in inspect.getsource(ZMQChannelsWebsocketConnection.connect)
    assert inspect.iscoroutinefunction(MappingKernelManager._finish_kernel_start)
    assert inspect.iscoroutinefunction(AsyncKernelManager._async_post_start_kernel)
    assert "_launch_args" in inspect.getsource(AsyncKernelManager._async_pre_start_kernel)
    assert "_attempted_start" in inspect.getsource(KernelManager)
    assert "_kernel_spec" in vars(KernelManager) and "_launch_args" in KernelManager.class_traits()
    assert list(ZMQChannelsWebsocketConnection._open_sockets) == []  # a (weak) set, empty here
    assert list(
        inspect.signature(ZMQChannelsWebsocketConnection._send_status_message).parameters
    ) == [
        "self",
        "status",
    ]


def test_the_kernel_manager_overrides_what_it_means_to() -> None:
    for name in ("start_kernel", "restart_kernel", "interrupt_kernel", "shutdown_kernel"):
        assert name in vars(GPUContainersKernelManager), name
        assert hasattr(MappingKernelManager, name), name
    assert inspect.iscoroutinefunction(GPUContainersKernelManager.adopt)


def test_docker_py_private_names() -> None:
    assert "_custom_adapter" in inspect.getsource(docker.APIClient.__init__)
    assert callable(unixconn.UnixHTTPConnectionPool._new_conn)
    signature = inspect.signature(unixconn.UnixHTTPConnection.__init__)
    assert list(signature.parameters)[1:3] == ["base_url", "unix_socket"]
    # A build step's exec stream (docker/build_steps.py) is closed through its response.
    from docker.types.daemon import CancellableStream

    assert "self._response = response" in inspect.getsource(CancellableStream.__init__)
