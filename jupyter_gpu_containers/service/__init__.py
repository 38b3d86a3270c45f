"""The kernel service for shared hosts (`jupyter gpu-containers serve`): Jupyter Server
cut down to kernels, its per-user routes, JupyterHub's token check."""

from ..base.moved import forward

# Before the folders, service.py held what service.py in this folder holds: its names still
# resolve here, with a warning.
__getattr__ = forward(__name__, "service")
