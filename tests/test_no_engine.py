"""A server on a host without a Docker engine (Binder, say) starts, and every GET route answers
with a status and a sentence a person can read, never a 500. A real `jupyter server` process,
configured as binder/postBuild configures Binder's, its engine address a socket nobody listens
on; its answers are also checked against openapi.yaml."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import DEBIAN_IMAGE, write_notebook_on
from servers import Server
from test_openapi import NO_PULL, SPEC_PATH, Conformance, _StrictLoader, served_routes

from jupyter_gpu_containers.routes.kernel_view import NOT_YOURS

BINDER_CONFIG = Path(__file__).resolve().parent.parent / "binder" / "jupyter_server_config.json"
NOTEBOOK = "nb.ipynb"
NO_KERNEL = "00000000-0000-0000-0000-000000000000"


@pytest.fixture(params=["binder", "no-gpus"])
def no_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """ "binder": binder/jupyter_server_config.json (a static inventory of demo GPUs).
    "no-gpus": no GPU configuration at all (NVML, which finds none on a host without a driver)."""
    for sub in ("config", "data", "runtime", "workspace"):
        (tmp_path / sub).mkdir()
    config: dict[str, Any] = (
        json.loads(BINDER_CONFIG.read_text()) if request.param == "binder" else {}
    )
    config["ContainerPolicy"] = {"state_dir": str(tmp_path / "state")}
    config["Engine"] = {"docker_url": f"unix://{tmp_path}/no-engine-here.sock"}
    (tmp_path / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
    server = Server(tmp_path, tmp_path / "workspace", [])
    try:
        yield server
    finally:
        server.stop()


def _spec() -> dict[str, Any]:
    with SPEC_PATH.open(encoding="utf-8") as f:
        loaded: dict[str, Any] = yaml.load(f, Loader=_StrictLoader)  # a SafeLoader
    return loaded


async def test_every_get_route_answers_without_an_engine(no_engine: Server, tmp_path: Path) -> None:
    conformance = Conformance(_spec())
    no_engine_here = f"not reachable at unix://{tmp_path}/no-engine-here.sock"
    answers: dict[str, tuple[int, Any]] = {}
    for path, method in sorted(served_routes()):
        if method != "get":
            continue
        url = path.format(pull_id=NO_PULL, kernel_id=NO_KERNEL, save_id=NO_PULL).lstrip("/")
        if path.endswith("/notebooks/kernel"):
            url += f"?path={NOTEBOOK}"
        if path.endswith("/images/content"):
            url += "?ref=jgc/debian-ipykernel:bookworm"
        response = await no_engine.fetch("GET", url, raise_error=False)
        assert response.code < 500, (path, response.code, response.body[:300])
        answers[path] = (response.code, conformance.check(response, path, method))

    code, status = answers.pop("/gpu-containers/status")
    assert code == 200 and status["engine"]["ok"] is False and status["kernelspecs"] == 0
    assert no_engine_here in status["engine"]["message"]
    code, report = answers.pop("/gpu-containers/gpus")
    assert code == 200 and no_engine_here in report["engine_error"]
    # The GPUs are listed all the same (nobody can be seen holding one), or it says why not.
    assert all(g["holders"] == [] for g in report["gpus"])
    assert report["gpus"] or report["reason"]
    if report["source"] == "static":  # binder/jupyter_server_config.json's demo GPUs
        assert [g["uuid"] for g in report["gpus"]] == ["GPU-binder-demo-0", "GPU-binder-demo-1"]
    # The Docker backend: no cluster, no node pools (and no engine is needed to say so).
    assert answers.pop("/gpu-containers/cluster") == (
        200,
        {"backend": "docker", "pools": [], "engine_error": ""},
    )
    code, mine = answers.pop("/gpu-containers/allocations")
    assert (code, mine["allocations"]) == (200, []) and no_engine_here in mine["engine_error"]
    code, catalog = answers.pop("/gpu-containers/images")
    assert code == 200 and no_engine_here in catalog["engine_error"]
    assert catalog["images"] and not any(row["pulled"] for row in catalog["images"])
    assert catalog["host"]["gpus"] == len(report["gpus"])
    # What a reference names here now (a notebook's stamp is checked with it): nothing.
    assert answers.pop("/gpu-containers/images/content") == (
        200,
        {
            "ref": "jgc/debian-ipykernel:bookworm",
            "digest": "",
            "recorded_present": False,
            "recorded_kept": False,
            "retired": None,
        },
    )
    code, notebook = answers.pop("/gpu-containers/notebooks/kernel")
    assert (code, notebook["kernel"]) == (200, None)
    # A notebook on an image's kernel spec, which cannot be read with the engine away: its
    # image is not said to be gone (the engine is, not the image).
    write_notebook_on(tmp_path / "workspace", "stamped.ipynb", DEBIAN_IMAGE, "sha256:" + "ab" * 32)
    route = "/gpu-containers/notebooks/kernel"
    response = await no_engine.fetch("GET", f"{route.lstrip('/')}?path=stamped.ipynb")
    assert conformance.check(response, route, "get")["retired"] is None
    assert answers.pop("/gpu-containers/pulls") == (200, {"pulls": []})
    assert answers.pop("/gpu-containers/registries") == (200, {"registries": []})
    for path in ("/gpu-containers/pulls/{pull_id}", "/gpu-containers/pulls/{pull_id}/events"):
        code, error = answers.pop(path)
        assert code == 404 and "There is no pull" in error["message"]
    code, kernels = answers.pop("/gpu-containers/kernels")
    assert code == 200 and kernels["kernels"] == [] and no_engine_here in kernels["engine_error"]
    for path in ("/gpu-containers/kernels/{kernel_id}", "/gpu-containers/kernels/{kernel_id}/log"):
        code, error = answers.pop(path)
        assert code == 404 and error["message"] == NOT_YOURS
    # Fair sharing (issue 17): what is known without an engine, or the admin check's sentence.
    code, queue = answers.pop("/gpu-containers/queue")
    assert (code, queue["queue"], queue["length"]) == (200, [], 0)
    code, quota = answers.pop("/gpu-containers/quota")
    assert code == 200 and quota["enabled"] is False
    code, admin = answers.pop("/gpu-containers/admin")
    assert code == 403 and "not an administrator" in admin["message"]
    assert answers.pop("/gpu-containers/admin/notices") == (200, {"notices": []})
    assert answers.pop("/gpu-containers/metrics")[0] == 200
    code, prepull = answers.pop("/gpu-containers/prepull")
    assert code == 200 and prepull["schedule"] == []
    # The user's packages per image (issue 31): the workspace's, no engine needed.
    code, packages = answers.pop("/gpu-containers/packages")
    assert code == 200 and packages["enabled"] and packages["measured"], packages
    # Saves of environments as images (issue 31): none, and none to read.
    assert answers.pop("/gpu-containers/saves") == (
        200,
        {"saves": [], "refusal": "", "build_refusal": ""},
    )
    code, error = answers.pop("/gpu-containers/saves/{save_id}")
    assert code == 404 and "There is no save" in error["message"]
    assert not answers, f"GET routes this test does not know yet: {sorted(answers)}"
    assert "Traceback" not in no_engine.output()


async def test_native_kernels_work_without_an_engine(no_engine: Server) -> None:
    """What a Binder user can do: run a notebook on the native Python kernel."""
    conformance = Conformance(_spec())
    specs = (await no_engine.call("GET", "api", "kernelspecs"))["kernelspecs"]
    assert list(specs) == ["python3"]  # no images, no container kernels
    route = "/gpu-containers/notebooks/kernel"
    response = await no_engine.fetch(
        "POST", route.lstrip("/"), body={"path": NOTEBOOK, "kernel_name": "python3"}
    )
    started = conformance.check(response, route, "post")
    response = await no_engine.fetch("GET", f"{route.lstrip('/')}?path={NOTEBOOK}")
    state = conformance.check(response, route, "get")
    kernel = state["kernel"]
    assert (kernel["id"], kernel["name"]) == (started["session"]["kernel"]["id"], "python3")
    assert (kernel["image"], kernel["gpus"], state["default"]) == ("", [], 0)
    result = await no_engine.execute(kernel["id"], "print(6 * 7)")
    assert result.stdout.strip() == "42"
