"""docs/architecture.md's rules, checked on the code: the package's folders are its layers and
imports go down them, the package has no import circle, only the Docker backend imports docker and
only the Kubernetes backend kubernetes, only services.py builds a backend, no core module knows
jupyter_server or HTTP, no module keeps a registry of its own, and the map names every module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "jupyter_gpu_containers"

# The layers, bottom up: each names the folders (or top-level modules) in it. A module may import
# modules of its own layer and of the layers below, never of one above.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("base",),  # records, sentences, labels, references, safe files
    ("backends",),  # the backend interface and the engines behind it
    ("host",),  # the host state directory, private directories, users, tokens
    ("gpus",),  # inventory, ledger, queue, quota, reclaim policy, use
    ("policy",),  # the administrator's policy, the checks, the plan of a container
    ("images",),  # catalog, compatibility, probe, pulls, pre-pulls
    ("placement",),  # where a kernel goes and which GPUs it gets: one placement per engine
    ("services",),  # services.py: the one owner of the shared objects
    ("kernel",),  # jupyter_client's contract: provisioner, admission, warm pool, kernel specs
    ("server", "routes", "service", "cli", "_private", "__init__"),  # inside jupyter_server
)
LAYER = {folder: index for index, names in enumerate(LAYERS) for folder in names}
CORE = {"base", "backends", "host", "gpus", "policy", "images", "placement", "services"}
ENGINES = {
    "backends.docker": {"docker"},
    "backends.kubernetes": {"kubernetes", "kubernetes_asyncio"},
    # Podman is run as the `podman` command (backends/podman/cli.py says why): nothing else may
    # import its Python client either.
    "backends.podman": {"podman"},
    # Slurm is reached through its commands (backends/slurm/jobs.py says why), not a Python
    # binding of its C library.
    "backends.slurm": {"pyslurm"},
}


def module_name(path: Path) -> str:
    """'gpus.allocator' for gpus/allocator.py, 'gpus' for gpus/__init__.py, '__init__' for the
    package's own."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


FILES = {
    module_name(p): p
    for p in sorted(PACKAGE.rglob("*.py"))
    if "labextension" not in p.relative_to(PACKAGE).parts
}
MODULES = set(FILES)


def folder(module: str) -> str:
    return module.split(".")[0]


def is_package(module: str) -> bool:
    return FILES[module].name == "__init__.py"


def resolve(module: str, node: ast.ImportFrom) -> set[str]:
    """The package's modules that ``from ... import ...`` in ``module`` names."""
    if node.level == 0:
        if not (node.module or "").startswith("jupyter_gpu_containers"):
            return set()
        base = (node.module or "").split(".")[1:]
    else:
        own = [] if module == "__init__" else module.split(".")
        package = own if is_package(module) or module == "__init__" else own[:-1]
        keep = len(package) - (node.level - 1)
        assert keep >= 0, f"{module}: an import above the package"
        base = package[:keep] + (node.module.split(".") if node.module else [])
    found = set()
    for alias in node.names:
        candidate = ".".join([*base, alias.name])
        if candidate in MODULES:
            found.add(candidate)
        elif ".".join(base) in MODULES:
            found.add(".".join(base))
    return found


def imports(module: str) -> tuple[set[str], set[str]]:
    """(modules of the package, top-level names outside it) that ``module`` imports."""
    tree = ast.parse(FILES[module].read_text())
    inside, outside = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level or (node.module or "").startswith("jupyter_gpu_containers"):
                inside |= resolve(module, node)
            elif node.module:
                outside.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("jupyter_gpu_containers."):
                    inside.add(alias.name.split(".", 1)[1])
                else:
                    outside.add(alias.name.split(".")[0])
    return inside - {module}, outside


def test_every_module_is_in_a_layer() -> None:
    assert sorted({folder(m) for m in MODULES} - set(LAYER)) == []


def test_every_folder_says_what_it_holds() -> None:
    """The tree is the map: each folder's __init__.py says what belongs in it."""
    silent = []
    for module in sorted(MODULES):
        if module != "__init__" and is_package(module):
            tree = ast.parse(FILES[module].read_text())
            if not ast.get_docstring(tree):
                silent.append(module)
    assert silent == []


def test_imports_go_down_the_layers() -> None:
    upward = sorted(
        f"{module} -> {dependency}"
        for module in MODULES
        for dependency in imports(module)[0]
        if LAYER[folder(dependency)] > LAYER[folder(module)]
    )
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


def engine_of(module: str) -> str | None:
    return next((e for e in ENGINES if module == e or module.startswith(e + ".")), None)


def test_only_each_backend_imports_its_engine_client() -> None:
    found = sorted(
        f"{module}: {client}"
        for module in MODULES
        for client in imports(module)[1]
        for engine, clients in ENGINES.items()
        if client in clients and engine_of(module) != engine
    )
    assert found == []


def test_only_services_builds_a_backend() -> None:
    """The kernel layer and the core reach an engine through the backend interface: a concrete
    backend is imported by services.py alone (which builds the configured one), and by
    nothing of another engine."""
    found = sorted(
        f"{module} -> {dependency}"
        for module in MODULES
        for dependency in imports(module)[0]
        if engine_of(dependency) is not None
        and module != "services"
        and engine_of(module) != engine_of(dependency)
    )
    assert found == []


def test_a_view_imports_no_handlers() -> None:
    """routes/*_view.py hold a resource's logic; handlers import them, never the other way."""
    found = sorted(
        f"{module} -> {dependency}"
        for module in MODULES
        if module.startswith("routes.") and module.endswith("_view")
        for dependency in imports(module)[0]
        if dependency.startswith("routes.") and not dependency.endswith("_view")
    )
    assert found == []


def test_the_core_knows_no_server_and_no_http() -> None:
    leaks = sorted(
        f"{m}: {name}"
        for m in MODULES
        if folder(m) in CORE
        for name in imports(m)[1] & {"jupyter_server", "tornado"}
    )
    assert leaks == []


def test_the_map_names_every_module() -> None:
    """docs/architecture.md lists each module by its file name, under its folder's heading."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    missing = sorted(
        m
        for m in MODULES
        if not is_package(m) and m != "__init__" and f"{FILES[m].name}" not in text
    )
    assert missing == []
    folders = sorted(
        f"{m.replace('.', '/')}/" for m in MODULES if is_package(m) and m != "__init__"
    )
    assert [f for f in folders if f not in text] == []


def test_no_module_keeps_a_registry_of_its_own() -> None:
    """Module-level dicts, lists or sets that code fills at run time: shared state belongs to
    services.Services (constants are tuples, frozensets, or filled where they are written)."""
    found = []
    for module in sorted(MODULES):
        tree = ast.parse(FILES[module].read_text())
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


def test_the_checks_see_the_whole_package() -> None:
    """A resolver that lost imports would pass every rule above: the graph must hold the edges
    everyone knows of."""
    assert "base.errors" in imports("kernel.provisioner")[0]
    assert "base.labels" in imports("services")[0]
    assert {"backends.docker.engine", "backends.kubernetes.k8s"} <= imports("services")[0]
    assert "docker" in imports("backends.docker.engine")[1]
    assert "server.app" in imports("__init__")[0]
