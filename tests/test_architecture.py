"""docs/architecture.md's rules, checked on the code: imports go down the layers, the package has
no import circle, only the Docker backend imports docker, no core module knows jupyter_server or
HTTP, and no module keeps a registry of its own."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "jupyter_gpu_containers"

SERVER = {
    "app",
    "handlers",
    "kernel_view",
    "kernelmanager",
    "recovery",
    "websocket",
    "stock_routes",
    "cli",
    "_private",
    "gateway_user",
    "service",
    "service_routes",
    "hubauth",
    "reclaimer",
    "waiting_sessions",
    "admin",
    "cluster_view",
}
KERNEL = {"provisioner", "admission", "handshake", "warmpool", "kernelspecs"}
BACKENDS = {"backend", "engine", "k8s"}
# What every layer may use: the records backends deal in (and the label keys that make a
# container or pod one, and the image references they name), the sentences, file primitives.
BASE = {"records", "errors", "safefiles", "labels", "references"}
MODULES = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
CORE = MODULES - SERVER - KERNEL - BACKENDS - BASE
LAYER = {
    **{m: 4 for m in SERVER},
    **{m: 3 for m in KERNEL},
    **{m: 2 for m in CORE},
    **{m: 1 for m in BACKENDS},
    **{m: 0 for m in BASE},
}


def imports(module: str) -> tuple[set[str], set[str]]:
    """(modules of the package, top-level outside packages) that ``module`` imports."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    inside, outside = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                inside.add(node.module.split(".")[0])
            else:
                inside |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            outside.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            outside |= {alias.name.split(".")[0] for alias in node.names}
    return inside & MODULES, outside


def test_imports_go_down_the_layers() -> None:
    upward = []
    for module in sorted(MODULES):
        for dependency in imports(module)[0]:
            # services.py builds the backend: the one core module that names one.
            if module == "services" and dependency in ("engine", "k8s"):
                continue
            if LAYER[dependency] > LAYER[module] or (
                LAYER[module] == 1 and dependency in ("engine", "k8s")
            ):
                upward.append(f"{module} -> {dependency}")
    assert upward == []


def test_the_package_has_no_import_circle() -> None:
    graph = {m: imports(m)[0] for m in MODULES}
    circles = []

    def visit(module: str, path: list[str]) -> None:
        for dependency in sorted(graph[module]):
            if dependency in path:
                circles.append([*path[path.index(dependency) :], dependency])
            elif dependency not in done:
                visit(dependency, [*path, dependency])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        visit(module, [module])
    assert circles == []


def test_only_the_docker_backend_imports_docker() -> None:
    assert sorted(m for m in MODULES if "docker" in imports(m)[1]) == ["engine"]


def test_only_the_kubernetes_backend_imports_kubernetes() -> None:
    clients = {"kubernetes", "kubernetes_asyncio"}
    assert sorted(m for m in MODULES if clients & imports(m)[1]) == ["k8s"]


def test_the_core_knows_no_server_and_no_http() -> None:
    leaks = sorted(
        f"{m}: {name}"
        for m in CORE | BACKENDS | BASE
        for name in imports(m)[1] & {"jupyter_server", "tornado"}
    )
    assert leaks == []


def test_no_module_keeps_a_registry_of_its_own() -> None:
    """Module-level dicts, lists or sets that code fills at run time: shared state belongs to
    services.Services (constants are tuples, frozensets, or filled where they are written)."""
    found = []
    for module in sorted(MODULES):
        tree = ast.parse((PACKAGE / f"{module}.py").read_text())
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                value = node.value
                empty = isinstance(value, (ast.Dict, ast.List, ast.Set)) and not (
                    getattr(value, "keys", None) or getattr(value, "elts", None)
                )
                called = (
                    isinstance(value, ast.Call)
                    and isinstance(value.func, ast.Name)
                    and value.func.id in ("dict", "list", "set", "Lock", "WeakValueDictionary")
                )
                if empty or called:
                    found.append(f"{module}: {ast.unparse(node)[:60]}")
    assert found == []
