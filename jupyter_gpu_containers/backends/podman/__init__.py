"""The Podman backend (engine.py): kernels in containers of the user's own rootless Podman, or of
root's Podman in a kernel service."""
