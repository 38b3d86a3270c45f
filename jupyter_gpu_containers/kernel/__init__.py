"""jupyter_client's contract: the kernel provisioner, the checks before a start, the
handshake with a new kernel, the warm pool, the kernel specs. Runs outside a server too
(nbclient, VS Code)."""
