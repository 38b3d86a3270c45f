"""The package's modules before they moved into folders, still importable by their old names.

A server's configuration may name a class by its module path (``ServerApp.kernel_manager_class =
"jupyter_gpu_containers.kernelmanager.GPUContainersKernelManager"``, a subclass in a config
file): such a name keeps working, the module the same object as at its new path, with a
DeprecationWarning that names the new one. Two old modules share their name with a folder now
(``gpus``, ``service``): the folder answers their names (:func:`forward`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

PACKAGE = "jupyter_gpu_containers"

# Old module name -> new dotted path under the package (the modules moved in version 0.2). The
# old gpus.py and service.py are not here: their folders answer for them (forward).
MOVED: Mapping[str, str] = types.MappingProxyType(
    {
        "records": "base.records",
        "errors": "base.errors",
        "safefiles": "base.safefiles",
        "labels": "base.labels",
        "references": "base.references",
        "backend": "backends.backend",
        "engine": "backends.docker.engine",
        "k8s": "backends.kubernetes.k8s",
        "hoststate": "host.hoststate",
        "privatedirs": "host.privatedirs",
        "accounts": "host.accounts",
        "identity": "host.identity",
        "tokens": "host.tokens",
        "gpu_report": "gpus.gpu_report",
        "gpu_usage": "gpus.gpu_usage",
        "allocator": "gpus.allocator",
        "gpuqueue": "gpus.gpuqueue",
        "quota": "gpus.quota",
        "reclaim": "gpus.reclaim",
        "notebook_requests": "gpus.notebook_requests",
        "launchplan": "policy.launchplan",
        "catalog": "images.catalog",
        "compat": "images.compat",
        "probe": "images.probe",
        "pulls": "images.pulls",
        "credentials": "images.credentials",
        "prepull": "images.prepull",
        "privateimages": "images.privateimages",
        "provisioner": "kernel.provisioner",
        "admission": "kernel.admission",
        "handshake": "kernel.handshake",
        "warmpool": "kernel.warmpool",
        "kernelspecs": "kernel.kernelspecs",
        "app": "server.app",
        "kernelmanager": "server.kernelmanager",
        "websocket": "server.websocket",
        "stock_routes": "server.stock_routes",
        "waiting_sessions": "server.waiting_sessions",
        "recovery": "server.recovery",
        "reclaimer": "server.reclaimer",
        "gateway_user": "server.gateway_user",
        "handlers": "routes.handlers",
        "admin": "routes.admin_view",
        "cluster_view": "routes.cluster_view",
        "kernel_view": "routes.kernel_view",
        "service_routes": "service.service_routes",
        "hubauth": "service.hubauth",
    }
)


class _Alias(importlib.abc.Loader):
    """Loads an old name as the module at its new path: the same module object."""

    def __init__(self, new_name: str) -> None:
        self.new_name = new_name
        self.own_spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = importlib.import_module(self.new_name)
        self.own_spec = module.__spec__
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        # The import system gave the module the old name's spec: it keeps its own.
        module.__spec__ = self.own_spec
        module.__loader__ = self.own_spec.loader if self.own_spec else None


class MovedModules(importlib.abc.MetaPathFinder):
    """Finds ``jupyter_gpu_containers.<old name>`` (and only those names)."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, old = fullname.partition(".")
        if package != PACKAGE or old not in MOVED:
            return None
        new_name = f"{PACKAGE}.{MOVED[old]}"
        warnings.warn(
            f"{fullname} moved to {new_name}: import it from there (the old name goes in a "
            "later version).",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.machinery.ModuleSpec(fullname, _Alias(new_name))


def forward(package: str, module: str) -> Callable[[str], Any]:
    """A folder's ``__getattr__`` that answers the names of the old module it replaced (now
    ``module`` inside it), with a DeprecationWarning."""

    def __getattr__(name: str) -> Any:
        target = importlib.import_module(f"{package}.{module}")
        if name.startswith("__") or not hasattr(target, name):
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        warnings.warn(
            f"{package}.{name} moved to {package}.{module}.{name}: import it from there (the "
            "old name goes in a later version).",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(target, name)

    return __getattr__


def install() -> None:
    """Put the finder on ``sys.meta_path``, once (the package's import calls this)."""
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
