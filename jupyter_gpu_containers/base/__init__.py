"""The vocabulary every layer shares: backend-neutral records, the sentences errors carry,
the labels that make a container a kernel's record, image references, symlink-safe files.
Imports nothing else of the package."""
