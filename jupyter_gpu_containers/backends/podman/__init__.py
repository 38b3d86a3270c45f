"""The rootless Podman backend (engine.py): kernels in containers of the user's own Podman."""
