"""Every failure on the way to a running kernel comes back as its own sentence, through the REST
API, with nothing left behind on the engine. Real engine, real images, real refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    DEBIAN_IMAGE,
    NO_IPYKERNEL_IMAGE,
    TEST_LABEL,
    TEST_RUN,
    assert_no_test_containers,
    install_spec,
    kernel_name,
)
from kernel_io import start_refusal
from tornado.httpclient import HTTPClientError

pytestmark = pytest.mark.usefixtures("docker_client")


async def test_image_missing(jp_fetch: Any, jp_data_dir: Path, docker_client: Any) -> None:
    name = install_spec(jp_data_dir, "absent", "jgc-test/absent:never-built")
    code, message = await start_refusal(jp_fetch, name)
    assert code == 404
    assert "jgc-test/absent:never-built is not on this host" in message
    assert_no_test_containers(docker_client)


def unprobed_no_ipykernel_spec(jp_data_dir: Path) -> str:
    """A spec for the image without ipykernel whose explicit command skips the readiness probe's
    verdict (test_images.py covers that): the path of an image nobody probed, where the
    container's own exit says why."""
    return install_spec(
        jp_data_dir,
        "no-ipykernel",
        NO_IPYKERNEL_IMAGE,
        kernel_cmd=["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
    )


async def test_image_without_ipykernel(
    jp_fetch: Any, jp_data_dir: Path, docker_client: Any, tmp_path: Path
) -> None:
    name = unprobed_no_ipykernel_spec(jp_data_dir)
    code, message = await start_refusal(jp_fetch, name)
    # Found by the container's exit, not by sitting out the 30 s launch timeout.
    assert code == 422
    assert "has Python but not ipykernel" in message
    assert "No module named ipykernel" in message
    assert_no_test_containers(docker_client)
    assert os.listdir(tmp_path / "conn") == []


async def test_container_exits_at_start_with_its_log_tail(
    jp_fetch: Any, jp_data_dir: Path, docker_client: Any
) -> None:
    name = install_spec(
        jp_data_dir,
        "dies",
        DEBIAN_IMAGE,
        kernel_cmd=[
            "python3",
            "-c",
            "import sys; print('ImportError: libcuda.so.1', file=sys.stderr); sys.exit(3)",
        ],
    )
    code, message = await start_refusal(jp_fetch, name)
    assert code == 500
    assert "exited at start with code 3" in message
    assert "ImportError: libcuda.so.1" in message
    assert_no_test_containers(docker_client)


@pytest.mark.server_config(
    # Allowed by the administrator, so that the engine's own refusal is what the user reads.
    lambda _: {"ContainerPolicy": {"allowed_runtimes": ["nvidia", "no-such-runtime"]}}
)
async def test_engine_refuses_an_unknown_runtime(
    jp_fetch: Any, jp_data_dir: Path, docker_client: Any
) -> None:
    name = install_spec(jp_data_dir, "bad-runtime", DEBIAN_IMAGE, runtime="no-such-runtime")
    code, message = await start_refusal(jp_fetch, name)
    assert code == 500
    assert "refused" in message and "no-such-runtime" in message
    assert_no_test_containers(docker_client)


async def test_engine_reason_for_memlock_ulimit(
    jp_fetch: Any, jp_data_dir: Path, docker_client: Any
) -> None:
    """The seeds' `--ulimit memlock=-1`: refused on unprivileged hosts such as these, where the
    engine's reason must reach the user; accepted where the host allows it."""
    name = install_spec(jp_data_dir, "memlock", DEBIAN_IMAGE, ulimits={"memlock": -1})
    probe = docker_client.containers.create(
        DEBIAN_IMAGE, "true", ulimits=[_memlock()], labels={TEST_LABEL: TEST_RUN}
    )
    try:
        probe.start()
        host_allows = True
    except Exception as e:
        host_allows = False
        assert "rlimit" in str(e)
    finally:
        probe.remove(force=True)
    if host_allows:
        response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": name}))
        await jp_fetch("api", "kernels", json.loads(response.body)["id"], method="DELETE")
    else:
        code, message = await start_refusal(jp_fetch, name)
        assert code == 500
        assert "refused to start" in message and "rlimit" in message
    assert_no_test_containers(docker_client)


def _memlock() -> Any:
    import docker.types

    return docker.types.Ulimit(name="memlock", soft=-1, hard=-1)


async def test_launch_timeout(jp_fetch: Any, jp_data_dir: Path, docker_client: Any) -> None:
    name = install_spec(
        jp_data_dir, "silent", DEBIAN_IMAGE, kernel_cmd=["sleep", "300"], launch_timeout=2.0
    )
    code, message = await start_refusal(jp_fetch, name)
    assert code == 504
    assert "did not answer within 2 s" in message
    assert_no_test_containers(docker_client)


@pytest.mark.server_config(
    lambda tmp: {"Engine": {"docker_url": f"unix://{tmp}/no-engine-here.sock"}}
)
async def test_engine_not_reachable(jp_fetch: Any, jp_data_dir: Path, tmp_path: Path) -> None:
    name = install_spec(jp_data_dir, "static", DEBIAN_IMAGE)
    code, message = await start_refusal(jp_fetch, name)
    assert code == 503
    assert f"not reachable at unix://{tmp_path}/no-engine-here.sock" in message

    status = json.loads((await jp_fetch("gpu-containers", "status")).body)
    assert status["engine"]["ok"] is False
    assert "not reachable" in status["engine"]["message"]
    # No engine, no image kernels; the static spec and the native kernel remain.
    specs = json.loads((await jp_fetch("api", "kernelspecs")).body)["kernelspecs"]
    assert kernel_name(DEBIAN_IMAGE) not in specs
    assert "static" in specs


async def test_sessions_api_carries_the_sentence(
    jp_fetch: Any, jp_data_dir: Path, docker_client: Any
) -> None:
    body = {
        "path": "nb.ipynb",
        "type": "notebook",
        "name": "nb.ipynb",
        "kernel": {"name": unprobed_no_ipykernel_spec(jp_data_dir)},
    }
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("api", "sessions", method="POST", body=json.dumps(body))
    assert info.value.response is not None
    assert "has Python but not ipykernel" in json.loads(info.value.response.body)["message"]
    assert_no_test_containers(docker_client)
