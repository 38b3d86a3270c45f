"""The Docker backend: the only package that imports docker."""
