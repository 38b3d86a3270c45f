"""Shared fixtures. Tests run against the real Docker engine that the test command starts.

Every container a test starts carries TEST_LABEL; the autouse fixture removes them after each
test, failed or not, and prints their logs when a test failed, so a failure shows what the kernel
said. Tests that need a clean engine assert it themselves (``assert_no_test_containers``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from jupyter_gpu_containers import labels as L
from jupyter_gpu_containers.kernelspecs import kernel_name_for

# One value per pytest run, so parallel runs on one engine never remove each other's containers.
TEST_RUN = os.environ.get("JGC_TEST_RUN") or uuid.uuid4().hex[:10]
TEST_LABEL = "org.jupyter.gpu-containers.test-run"

DEBIAN_IMAGE = "jgc/debian-ipykernel:bookworm"
NGC_IMAGE = "jgc-test/ngc-like:24.05-py3"
CONDA_IMAGE = "jgc-test/conda-nonroot:latest"
NO_IPYKERNEL_IMAGE = "jgc-test/no-ipykernel:latest"
TEST_IMAGES = (DEBIAN_IMAGE, NGC_IMAGE, CONDA_IMAGE, NO_IPYKERNEL_IMAGE)

pytest_plugins = ["pytest_jupyter.jupyter_server"]


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
    yield client
    client.close()


def test_containers(client: docker.DockerClient) -> list[Any]:
    return client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={TEST_RUN}"})


def assert_no_test_containers(client: docker.DockerClient) -> None:
    left = [f"{c.name} ({c.status})" for c in test_containers(client)]
    assert not left, f"containers left behind: {left}"


@pytest.fixture(autouse=True)
def _remove_test_containers(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "docker_client" not in request.fixturenames:
        return
    client: docker.DockerClient = request.getfixturevalue("docker_client")
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for container in test_containers(client):
        if failed:
            logs = container.logs(tail=30).decode("utf-8", "replace")
            print(f"--- log of {container.name} ({container.status}) ---\n{logs}")
        container.remove(force=True)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


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
        # Private directories under tmp_path: nothing of a test outlives it.
        "ContainerPolicy": {"connection_dir_root": str(tmp_path / "conn")},
    }
    for marker in reversed(list(request.node.iter_markers("server_config"))):
        _merge(config, marker.args[0](tmp_path))
    return config


@pytest.fixture
def connection_root(tmp_path: Any) -> Any:
    return tmp_path / "conn"


def kernel_container(client: docker.DockerClient, kernel_id: str) -> Any:
    found = client.containers.list(all=True, filters={"label": f"{L.KERNEL_ID}={kernel_id}"})
    assert len(found) == 1, f"expected one container for kernel {kernel_id}, found {found}"
    return found[0]
