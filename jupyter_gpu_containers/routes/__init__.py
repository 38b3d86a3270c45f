"""The extension's REST resources under /gpu-containers (thin handlers, the logic of the
larger ones in modules of their own)."""
