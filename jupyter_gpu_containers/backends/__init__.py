"""Container engines behind one interface (backend.py): Docker (docker/), Kubernetes
(kubernetes/). A backend imports only the base, and only it imports its engine's client."""
