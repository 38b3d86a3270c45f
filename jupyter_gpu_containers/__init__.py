"""Jupyter kernels inside GPU framework containers."""

from __future__ import annotations

from typing import Any

from .base import moved

__version__ = "0.1.0"

# Modules moved into folders keep their old names for a while (a config may name one).
moved.install()


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "jupyter-gpu-containers"}]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .server.app import GPUContainersApp

    return [{"module": "jupyter_gpu_containers", "app": GPUContainersApp}]
