"""Shared fixtures. Tests run against the real Docker engine that the test command starts.

Every container a test starts carries TEST_LABEL; the autouse fixture removes them after each
test, failed or not, and prints their logs when a test failed, so a failure shows what the kernel
said. Tests that need a clean engine assert it themselves (``assert_no_test_containers``).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import stale_runs
from jupyter_server.serverapp import ServerApp

from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.kernel.kernelspecs import kernel_name_for, kernel_spec_dict
from jupyter_gpu_containers.services import services_for

# Readiness probe answers, shared by the session's in-process servers (see jp_server_config).
PROBE_CACHE = Path(tempfile.mkdtemp(prefix="jgc-probe-cache-"))
atexit.register(shutil.rmtree, PROBE_CACHE, True)

# One value per pytest run, so parallel runs on one engine never remove each other's containers;
# of a form that later runs can judge over once its process is gone (stale_runs.py).
TEST_RUN = os.environ.get("JGC_TEST_RUN") or stale_runs.new_run_id()
TEST_LABEL = stale_runs.TEST_LABEL
TEST_IMAGE_LABEL = stale_runs.TEST_IMAGE_LABEL

DEBIAN_IMAGE = "jgc/debian-ipykernel:bookworm"
NGC_IMAGE = "jgc-test/ngc-like:24.05-py3"
CONDA_IMAGE = "jgc-test/conda-nonroot:latest"
NO_IPYKERNEL_IMAGE = "jgc-test/no-ipykernel:latest"
TEST_IMAGES = (DEBIAN_IMAGE, NGC_IMAGE, CONDA_IMAGE, NO_IPYKERNEL_IMAGE)

STATIC_GPUS = [
    {
        "index": i,
        "uuid": f"GPU-test-{i}",
        "name": "Tesla T4",
        "brand": "tesla",
        "compute_capability": "7.5",
        "memory_total": 16 * 2**30,
    }
    for i in range(4)
]

# k8s_cluster: the real Kubernetes control plane (the session fixture `control_plane`);
# slurm_cluster: a real single-node Slurm (the session fixture `slurm_cluster`).
pytest_plugins = ["pytest_jupyter.jupyter_server", "k8s_cluster", "k8s_node", "slurm_cluster"]


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """The real engine. Tests inspect containers with it; the package reaches it via engine.py."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as e:
        pytest.fail(
            f"No Docker engine answers ({e}). scripts/test.sh starts one.",
            pytrace=False,
        )
    missing = []
    for ref in TEST_IMAGES:
        try:
            client.images.get(ref)
        except docker.errors.ImageNotFound:
            missing.append(ref)
    if missing:
        pytest.fail(
            f"Test images missing: {', '.join(missing)}. Build them: scripts/build-images.sh test",
            pytrace=False,
        )
    # A run that was killed left its containers (booking test GPUs) and images (some made slow
    # on purpose) behind: remove those of runs that are over before this one counts anything.
    stale_runs.sweep(client, TEST_RUN, print)
    yield client
    # An image a test built and removed while a container still used it is only untagged: the
    # layers stay, dangling, once the container goes. Drop this run's.
    for label in (TEST_IMAGE_LABEL, TEST_LABEL):
        with contextlib.suppress(docker.errors.APIError):
            client.images.prune(filters={"dangling": True, "label": f"{label}={TEST_RUN}"})
    client.close()


def test_containers(client: docker.DockerClient) -> list[Any]:
    return client.containers.list(
        ignore_removed=True, all=True, filters={"label": f"{TEST_LABEL}={TEST_RUN}"}
    )


def wait_for_background_probes() -> None:
    """Readiness probes the in-process server started in the background remove their own
    containers when they end: let them end before counting containers (a test that runs first in
    a session finds the probes of every local image still running). A server that stopped waited
    for its own already."""
    if not ServerApp.initialized():
        return
    services = services_for(ServerApp.instance())
    if services is not None:
        services.probe.wait_idle(timeout=180)


def assert_no_test_containers(client: docker.DockerClient) -> None:
    wait_for_background_probes()
    left = [f"{c.name} ({c.status})" for c in test_containers(client)]
    assert not left, f"containers left behind: {left}"


@pytest.fixture(autouse=True)
def jp_server_cleanup(jp_asyncio_loop: Any, request: pytest.FixtureRequest) -> Iterator[None]:
    """pytest-jupyter's server clean-up (which shuts the test server's kernels down), then a leak
    check: after each test and its servers, no container of the test may remain. Leftovers are
    removed, their logs printed, and the test errors. (Overrides pytest-jupyter's fixture of the
    same name, so that the check runs after the server's own shutdown, not before it.)"""
    yield
    # Probes the server started in the background end (and remove their containers) first.
    wait_for_background_probes()
    app = ServerApp.instance()
    try:
        jp_asyncio_loop.run_until_complete(app._cleanup())
    finally:
        if hasattr(app, "kernel_manager"):
            app.kernel_manager.context.destroy()
        ServerApp.clear_instance()
    if "docker_client" not in request.fixturenames:
        return
    client: docker.DockerClient = request.getfixturevalue("docker_client")
    wait_for_background_probes()
    leftovers = test_containers(client)
    for container in leftovers:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            logs = container.logs(tail=30).decode("utf-8", "replace")
            print(f"--- log of {container.name} ({container.status}) ---\n{logs}")
            container.remove(force=True)
    if leftovers:
        pytest.fail(
            f"{len(leftovers)} container(s) outlived the test and its servers: "
            f"{[c.name for c in leftovers]}",
            pytrace=False,
        )


@contextlib.contextmanager
def all_log_text() -> Iterator[list[str]]:
    """Every log line any logger writes meanwhile, at DEBUG, formatted with its traceback."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Keep(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger()] + [
        logging.getLogger(name) for name in list(logging.Logger.manager.loggerDict)
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)


def kernel_name(ref: str) -> str:
    return kernel_name_for(ref)


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


@pytest.fixture
def jp_server_config(request: pytest.FixtureRequest, tmp_path: Any) -> dict[str, Any]:
    """The test server's config. A test adds to it with
    ``@pytest.mark.server_config(lambda tmp_path: {...})``: the server starts before the test body
    runs, so config must be known by then."""
    config: dict[str, Any] = {
        "ServerApp": {"jpserver_extensions": {"jupyter_gpu_containers": True}},
        "ContainerProvisioner": {"extra_labels": {TEST_LABEL: TEST_RUN}, "launch_timeout": 30.0},
        # Private directories and host-wide state under tmp_path: nothing outlives a test.
        "ContainerPolicy": {
            "connection_dir_root": str(tmp_path / "conn"),
            "state_dir": str(tmp_path / "state"),
            # Sessions and CI run the suite as root, and this server's kernels run as its user:
            # allowed here, refused by default (test_hardening.py checks the refusal).
            "allow_root": os.getuid() == 0,
        },
        # No GPUs here: a static inventory of four, attached through the runc-backed "nvidia"
        # runtime that the test command gives dockerd.
        "GPUInventory": {
            "static_gpus": STATIC_GPUS,
            "static_driver_version": "535.104.05",
            "static_cuda_version": "12.2",
        },
        # Probe containers are test containers too (the leak check counts them).
        # One disk cache of probe answers for the session's servers: an answer is a fact of an
        # image id, and every server of the suite probing every image again would only load the
        # two cores (test_probe.py tests cold caches with caches of its own).
        "KernelReadinessProbe": {
            "extra_labels": {TEST_LABEL: TEST_RUN},
            "cache_dir": str(PROBE_CACHE),
        },
        "GPUAllocator": {"attach_mode": "runtime"},
    }
    for marker in reversed(list(request.node.iter_markers("server_config"))):
        _merge(config, marker.args[0](tmp_path))
    return config


@pytest.fixture
def connection_root(tmp_path: Any) -> Any:
    return tmp_path / "conn"


def kernel_container(client: docker.DockerClient, kernel_id: str) -> Any:
    found = client.containers.list(
        ignore_removed=True, all=True, filters={"label": f"{L.KERNEL_ID}={kernel_id}"}
    )
    assert len(found) == 1, f"expected one container for kernel {kernel_id}, found {found}"
    return found[0]


def write_notebook(root: Path, path: str, gpus: Any = None, **metadata: Any) -> Path:
    """A valid notebook at ``root/path`` whose metadata holds the GPU request ``gpus`` (None:
    it says nothing), as the panel saves it; ``metadata`` adds other entries."""
    if gpus is not None:
        metadata["gpu_containers"] = {"gpus": gpus}
    notebook = {"cells": [], "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}
    target = root.joinpath(*path.split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(notebook))
    return target


def write_notebook_on(root: Path, path: str, image: str, recorded: str = "") -> Path:
    """A notebook at ``root/path`` whose kernel spec is ``image``'s, as JupyterLab saves it;
    with the environment stamp of a start on ``image`` when ``recorded`` (a digest) is given."""
    metadata: dict[str, Any] = {"kernelspec": {"name": kernel_name(image), "display_name": image}}
    if recorded:
        metadata["gpu_containers"] = {"environment": {"image": image, "digest": recorded}}
    return write_notebook(root, path, **metadata)


def install_spec(data_dir: Path, name: str, image: str, **provisioner: Any) -> str:
    """A kernel spec on disk, as an admin (or `install-kernelspec`) would write it."""
    spec = kernel_spec_dict(image, None, {"provisioner": provisioner})
    spec["metadata"]["kernel_provisioner"]["config"]["extra_labels"] = {TEST_LABEL: TEST_RUN}
    target = data_dir / "kernels" / name
    target.mkdir(parents=True)
    (target / "kernel.json").write_text(json.dumps(spec))
    return name


@pytest.fixture
def two_gpu_nvml_box() -> Iterator[Any]:
    """The NVML double (tests/nvml_double.py) as a two-GPU host, restored afterwards."""
    import nvml_double

    nvml_double.BOX = nvml_double.Box(
        devices=[nvml_double.Device(uuid=f"GPU-nvml-{i}") for i in range(2)]
    )
    yield nvml_double.BOX
    nvml_double.BOX = nvml_double.eight_a100()


NVML_DOUBLE_CONFIG = {
    "GPUInventory": {
        "static_gpus": [],
        "source": "nvml",
        "nvml_module": "nvml_double",
        "cache_seconds": 0,
    }
}
from moved_tags import course_tag, local_moving_tag, moving_tag  # noqa: F401,E402
from registry import private_registry  # noqa: F401,E402

# --- A real JupyterHub (tests/hub.py; issue #16's kernel service under JupyterHub) -------------


@pytest.fixture
def jupyterhub_factory() -> Iterator[Any]:
    """Starts real JupyterHubs: ``jupyterhub_factory(users, service_url=..., spawner_env=...)``
    gives a started ``hub.Hub`` (see it for the options); every Hub started, with its proxy and
    users' servers, is stopped and removed after the test, failed or not. Tests using it need
    ``hub.needs_students`` (root, and the student accounts)."""
    from hub import Hub

    started: list[Hub] = []

    def start(users: list[str], **options: Any) -> Hub:
        hub = Hub(users, **options)
        started.append(hub)
        hub.start()
        return hub

    yield start
    for hub in reversed(started):
        hub.close()


# --- Parts and order: the Kubernetes tests, beside the others or last -------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--jgc-part",
        choices=("all", "engines", "rest"),
        default="all",
        help="which tests this session runs: all of them (the default), only the other engines' "
        "tests (Kubernetes: tests/test_k8s_*.py; rootless Podman: tests/test_podman.py; Slurm: "
        "tests/test_slurm_*.py; the benchmark command's run of those engines' sections; and the "
        "tests that need no engine, ENGINE_FREE_MODULES), or the rest. scripts/test.sh runs the "
        "two parts as two sessions side by side.",
    )


# Modules whose tests touch no engine, start no server and read no host-wide state (their files
# are their own, under tmp_path): they may run beside anything, so the test command runs them in
# the engines' session, whose lane is the shorter, not in the rest's, the longer (a fresh run's
# critical path). A module that comes to need an engine, a server or the host's state leaves this
# list; a test here that asks for one of ENGINE_FIXTURES fails at collection.
ENGINE_FREE_MODULES = frozenset(
    f"test_{name}.py"
    for name in (
        *("accounts", "allocator_units", "architecture", "catalog_units", "compat"),
        *("fuzz_parsers", "gpu_queue_units", "launch_request", "launchplan", "moved"),
        *("private_apis", "quota_units", "reclaim_units", "recipes_units", "restored_sessions"),
        *("saves_units", "tokens", "units", "user_packages_units", "words", "zmq_context"),
    )
)
ENGINE_FIXTURES = frozenset(
    ("docker_client", "jp_serverapp", "jp_fetch", "jp_ws_fetch", "jupyterhub_factory")
)


def _engines_part(item: pytest.Item) -> bool:
    """The Kubernetes tests, rootless Podman's and Slurm's: engines of their own (a cluster's
    containerd, an account's Podman, a Slurm of the tests' own), which share nothing with the
    Docker tests but the machine; the benchmark command's run of those engines' sections; and
    the tests that need no engine at all (ENGINE_FREE_MODULES).
    The benchmark's run of the Docker sections stays with the Docker tests, never beside them:
    its servers run kernels as root on the Docker engine, which the Docker tests' reads of the
    host's ledger would count (root's kernels holding GPUs, the queue's turns by GPUs held: a run
    beside them failed test_gpu_rest's allocations in a fresh run)."""
    return (
        item.path.name.startswith(("test_k8s_", "test_slurm_"))
        or item.path.name == "test_podman.py"
        or item.path.name in ENGINE_FREE_MODULES
        or _benchmark_of_other_engines(item)
    )


def _benchmark_of_other_engines(item: pytest.Item) -> bool:
    return item.path.name == "test_benchmarks.py" and "other_engines" in item.name


def _kubernetes_part(item: pytest.Item) -> bool:
    return item.path.name.startswith("test_k8s_")


def _needs_kubernetes(item: pytest.Item) -> bool:
    """The Kubernetes tests, and the benchmark command's run of the other engines' sections
    (one is a cluster)."""
    return _kubernetes_part(item) or _benchmark_of_other_engines(item)


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """The session's part (``--jgc-part``), and its order.

    The test command runs the Kubernetes tests in a session of their own beside the others: their
    cluster and kubelet (containerd, never dockerd; pods, never Docker containers; a test-run
    label of their own) share nothing with the Docker tests but the machine, and most of their
    time is waiting on the cluster, which the other session's tests fill. Rootless Podman's tests
    (an account's own Podman) go with them, first, and the tests that need no engine.

    In a session that runs the tests needing the Kubernetes binaries with others, those go last,
    in their own order: on a machine that has never built the binaries, the test command builds
    them in the background (scripts/test.sh), so the others run meanwhile rather than one of them
    waiting. Their cluster, up from their first test to the session's end, then no longer runs
    beside the others either."""
    for item in items:
        if item.path.name in ENGINE_FREE_MODULES:
            asked = ENGINE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
            if asked:
                raise pytest.UsageError(
                    f"{item.nodeid} asks for {', '.join(sorted(asked))}, but its module is in "
                    "tests/conftest.py's ENGINE_FREE_MODULES, which the test command runs beside "
                    "the Docker tests: take the module out of that list."
                )
    part = config.getoption("jgc_part")
    if part != "all":
        kept = [item for item in items if _engines_part(item) == (part == "engines")]
        dropped = [item for item in items if _engines_part(item) != (part == "engines")]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    needing = [item for item in items if _needs_kubernetes(item)]
    if needing:
        items[:] = [item for item in items if not _needs_kubernetes(item)] + needing


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """The first test that needs the Kubernetes binaries waits here for them, before its own
    time limit starts (pytest-timeout's starts inside this wrapper): on a machine that has never
    built them, the test command builds them in the background while the tests that need none
    run (scripts/test.sh), and the build script waits for that build under its lock."""
    if _needs_kubernetes(item) and not os.environ.get("JGC_K8S_BIN"):
        import k8s_cluster

        with contextlib.suppress(pytest.fail.Exception):  # the test then fails with the words
            os.environ["JGC_K8S_BIN"] = str(k8s_cluster.kubernetes_bin_dir())
    yield


# --- The kernel service's image, built while other tests run (tests/service_image.py) ----------


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start building the service's image now when this session will run a test that deploys
    it (selected, and not skipped by its markers), and not when it only collects."""
    if session.config.option.collectonly:
        return
    for item in session.items:
        if item.path.name != "test_k8s_deployment.py":
            continue
        skips = [m for m in item.iter_markers("skipif") if m.args and m.args[0]]
        if not skips and not list(item.iter_markers("skip")):
            import service_image

            service_image.start()
        return


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A build nobody took over (the session stopped before its tests: -x, an interrupt) ends
    with the session, and its image goes."""
    import service_image

    service_image.remove()
