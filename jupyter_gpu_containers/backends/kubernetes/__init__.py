"""The Kubernetes backend: the only package that imports kubernetes."""
