"""Bookings written as the service writes them (gpus/allocator.py's holder records): the ledger
believes a container's GPU labels only where the service that created it recorded them (issue
61), so a test that stands in for another server's kernel writes that server's record too."""

from __future__ import annotations

from pathlib import Path

from jupyter_gpu_containers.gpus.allocator import record_holding
from jupyter_gpu_containers.host.hoststate import open_state_dir


def record_booking(state_dir: Path, container_id: str, gpus: str, uid: str, kernel_id: str) -> None:
    """Record ``container_id`` as holding ``gpus`` (comma-separated) in the state directory at
    ``state_dir``, as the server that created it would have."""
    state = open_state_dir(str(state_dir))
    try:
        state.require_shared()
        record_holding(state, container_id, gpus.split(","), uid, kernel_id)
    finally:
        state.close()
