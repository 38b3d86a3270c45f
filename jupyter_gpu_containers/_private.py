"""Every use this project makes of other libraries' private names, in one place, each with why.

Libraries change their private parts without notice, so each use is a small function, here for
jupyter_client and jupyter_server, in backends/docker/private.py for docker-py and urllib3 (only
the Docker backend may import docker); ``tests/test_private_apis.py`` pins them to
the versions ``pyproject.toml`` allows: an upgrade that breaks one fails that test, not a user's
kernel.

- jupyter_client / jupyter_server: ``MultiKernelManager._kernels``,
  ``MappingKernelManager._kernel_connections`` and ``._finish_kernel_start``, for adopting a
  running kernel after a server restart: no public API registers a kernel that is already
  running (jupyter_server knows remote kernels only behind a gateway).
- jupyter_client: ``KernelManager._launch_args``, ``._attempted_start``,
  ``._async_post_start_kernel`` and ``._kernel_spec``, so that an adopted kernel restarts like
  one this process started (same directory and environment).
- jupyter_client: ``MultiKernelManager._pending_kernels``: a failed start stays there, and
  ``shutdown_all`` then fails on it (404) before shutting the other kernels down.
- jupyter_server: ``MappingKernelManager._kernel_buffers``: the messages it keeps for a page
  that reconnects are an unbounded list; ``start_buffering`` makes the entry and there is no
  other way to put a bounded buffer in its place (kernelmanager.OfflineBuffer). A page's
  reconnection also reads the entry before jupyter_server takes it, to know that it takes over
  the buffered streams, which its nudge must leave alone (websocket.py).
- jupyter_server: ``ExtensionApp._link_jupyter_server_extension``, the link hook its extension
  guide documents: the one moment before the server creates its kernel spec manager, kernel
  manager and web application, so the only one at which their classes can be chosen (app.py).
- jupyter_server: ``ZMQChannelsWebsocketConnection._open_sockets``: pages attached to a kernel
  restarted in place must reconnect; it is the registry jupyter_server's own shutdown uses, and
  there is no public one.
- jupyter_server: ``ZMQChannelsWebsocketConnection._send_status_message``: a page that
  reconnects after a restart the server made learns the kernel's state from it (JupyterLab
  ignores the status of its own kernel_info requests); it is how jupyter_server itself tells
  pages "restarting" and "dead", framed for either websocket protocol.
- docker-py and urllib3: ``APIClient._custom_adapter`` and ``HTTPConnectionPool._new_conn``, to
  give this project's client (only it) a unix connection that closes its socket when the engine
  is away: docker-py's leaks one descriptor per failed call.
- docker-py: ``CancellableStream._response`` and the same socket, to close a build step's exec
  stream (docker/build_steps.py): its ``close()`` leaves the hijacked socket open once the
  engine ended the stream, one descriptor per step.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection

# ---------------------------------------------------------------------------- jupyter_client/server


def forget_failed_starts(mkm: Any) -> None:
    """Drop the starts that failed from the multi-kernel manager's pending map."""
    pending = getattr(mkm, "_pending_kernels", None)
    if not isinstance(pending, dict):
        return
    for kernel_id, task in list(pending.items()):
        if kernel_id not in mkm and (not isinstance(task, asyncio.Future) or task.done()):
            pending.pop(kernel_id, None)


def prepare_adopted(km: Any, launch_args: dict[str, Any], spec: Any | None) -> None:
    """Make a kernel manager look like one that started its kernel: the arguments a restart
    re-uses, and (when given) the kernel spec it was started from."""
    if spec is not None:
        km._kernel_spec = spec
    km._launch_args = launch_args
    km._attempted_start = True


async def register_adopted(mkm: Any, km: Any, kernel_id: str) -> None:
    """Register a running kernel with the multi-kernel manager, as jupyter_server does when one
    of its own kernels finishes starting."""
    await km._async_post_start_kernel()
    mkm._kernels[kernel_id] = km
    mkm._kernel_connections[kernel_id] = 0
    await mkm._finish_kernel_start(kernel_id)


def offline_buffer(mkm: Any, kernel_id: str) -> dict[str, Any] | None:
    """The entry jupyter_server's ``start_buffering`` made for ``kernel_id`` (its "buffer",
    "session_key" and "channels"), or None when it buffers nothing for it."""
    buffers = getattr(mkm, "_kernel_buffers", None)
    if not isinstance(buffers, dict) or kernel_id not in buffers:
        return None
    entry = buffers[kernel_id]
    return entry if isinstance(entry, dict) else None


def open_kernel_websockets() -> list[Any]:
    """The kernel websocket connections jupyter_server has open now."""
    return list(getattr(ZMQChannelsWebsocketConnection, "_open_sockets", ()))


def send_kernel_status(connection: Any, state: str) -> None:
    """Tell the page on ``connection`` (a kernel websocket) that its kernel is ``state``."""
    connection._send_status_message(state)
