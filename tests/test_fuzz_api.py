"""Fuzzing the REST API from the shipped openapi.yaml (schemathesis) against a live server.

Every operation gets MAX_EXAMPLES generated requests that fit the spec (positive) and as many that
do not (negative), derandomized so that a run is the same every time. Checks: no answer is a
server error (5xx); positive requests get a status the spec lists for the operation, with the
content type, headers and JSON body it describes; negative ones are refused with a 4xx.

What the fuzzer can reach is bounded, on the real engine:

- pulls: the allow-list admits only ``127.0.0.1:1/jgc-fuzz/*``, where nothing listens, so a pull
  fails at once and nothing is downloaded;
- kernels: the only container kernel spec is the Debian test image, tagged under that same
  unreachable registry for this run; some generated requests are steered to it (or to a spec
  whose image is absent) so that launches really happen, and each session the fuzzer opens is
  closed at once, so at most one fuzz kernel runs at a time, on one of two GPUs of its own;
- afterwards no container of the run may remain.
"""

from __future__ import annotations

import collections
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import hypothesis
import pytest
import requests
import schemathesis
from conftest import DEBIAN_IMAGE, TEST_LABEL, TEST_RUN, install_spec, kernel_name
from conftest import test_containers as run_containers
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from servers import Server, write_server_config

import jupyter_gpu_containers

pytestmark = pytest.mark.usefixtures("docker_client")

SPEC_PATH = Path(jupyter_gpu_containers.__file__).parent / "openapi.yaml"
MAX_EXAMPLES = 25
# Nothing listens on port 1: pulls from this "registry" fail at once, never download.
FUZZ_REGISTRY = "127.0.0.1:1/jgc-fuzz"
LOCAL = f"{FUZZ_REGISTRY}/debian-ipykernel:{TEST_RUN}"  # the Debian test image, tagged locally
ABSENT = f"{FUZZ_REGISTRY}/absent:{TEST_RUN}"  # allowed, but neither local nor pullable
GPUS = [
    {"index": i, "uuid": f"GPU-fuzz-{i}", "name": "Tesla T4", "brand": "tesla"} for i in range(2)
]
CHECKS = {
    GenerationMode.POSITIVE: [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ],
    GenerationMode.NEGATIVE: [not_a_server_error, negative_data_rejection],
}
START_KERNEL = "POST /gpu-containers/notebooks/kernel"


@dataclass
class FuzzServer:
    server: Server
    real_spec: str
    absent_spec: str
    pull_id: str = ""
    auth: dict[str, str] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"{self.server.url}/{path}"


@pytest.fixture
def fuzz_server(tmp_path: Path, docker_client: docker.DockerClient) -> Iterator[FuzzServer]:
    image = docker_client.images.get(DEBIAN_IMAGE)
    image.tag(LOCAL)
    for sub in ("config", "data", "runtime", "workspace"):
        (tmp_path / sub).mkdir()
    absent = install_spec(tmp_path / "data", "fuzz-absent", ABSENT)
    write_server_config(
        tmp_path,
        {
            "ContainerPolicy": {
                "state_dir": str(tmp_path / "state"),
                "allow_root": os.getuid() == 0,
                "allowed_images": [f"{FUZZ_REGISTRY}/*"],
            },
            "ContainerKernelSpecManager": {"image_include": [f"{FUZZ_REGISTRY}/*"]},
            "KernelReadinessProbe": {"extra_labels": {TEST_LABEL: TEST_RUN}},
            "GPUInventory": {"static_gpus": GPUS},
        },
    )
    server = Server(tmp_path, tmp_path / "workspace", [])
    fuzz = FuzzServer(
        server, kernel_name(LOCAL), absent, auth={"Authorization": f"token {server.token}"}
    )
    try:
        yield fuzz
    finally:
        try:
            with_kernels = requests.get(fuzz.url("api/kernels"), headers=fuzz.auth, timeout=30)
            for kernel in with_kernels.json():
                requests.delete(fuzz.url(f"api/kernels/{kernel['id']}"), headers=fuzz.auth)
        finally:
            server.stop()
            docker_client.images.remove(LOCAL)


@dataclass
class Tally:
    """What was sent and answered, per operation and generation mode."""

    statuses: dict[tuple[str, str], collections.Counter[int]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    failures: list[str] = field(default_factory=list)
    impossible: list[str] = field(default_factory=list)  # no invalid request can be made
    launched: int = 0  # kernels the fuzzer started (each shut down at once)

    def count(self, mode: GenerationMode) -> int:
        return sum(sum(c.values()) for (_, m), c in self.statuses.items() if m == mode.value)

    def server_errors(self) -> int:
        return sum(n for c in self.statuses.values() for code, n in c.items() if code >= 500)

    def table(self) -> str:
        return "\n".join(
            f"{label:58} {mode:8} {sum(c.values()):3}  {dict(sorted(c.items()))}"
            for (label, mode), c in sorted(self.statuses.items())
        )


STEER = st.sampled_from(["as generated", "real", "absent"])


def steer(case: Any, how: str, fuzz: FuzzServer) -> None:
    """Point a valid request at something that exists, so that the fuzzer gets past "no such
    kernel spec" and "no such pull" to real launches, pulls and cancels."""
    if how == "as generated":
        return
    label = case.operation.label
    if label == START_KERNEL and isinstance(case.body, dict):
        case.body["kernel_name"] = fuzz.real_spec if how == "real" else fuzz.absent_spec
        if how == "real":
            # A launch that can succeed: generated paths and GPU requests are mostly refused
            # before one (they are still sent "as generated" and "absent").
            case.body["path"] = "steered.ipynb"
            case.body["start"] = True
            case.body["gpus"] = (None, 0, 1)[len(repr(case.body)) % 3]
    elif label == "POST /gpu-containers/pulls" and isinstance(case.body, dict):
        case.body["image"] = ABSENT  # allowed, and fails at once
    elif "{pull_id}" in case.path:
        case.path_parameters["pull_id"] = fuzz.pull_id
    elif "{registry}" in case.path:
        case.path_parameters["registry"] = "127.0.0.1:5000"


def fuzz_operation(operation: Any, mode: GenerationMode, fuzz: FuzzServer, tally: Tally) -> None:
    key = (operation.label, mode.value)
    tally.statuses[key]  # listed even when no request could be made

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,  # the same requests on every run, in CI too
        database=None,
        deadline=None,  # kernel launches take seconds
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @hypothesis.given(
        case=operation.as_strategy(
            generation_mode=mode,
            headers=fuzz.auth,
            # The spec's other way to pass the token: fixed, or a generated one would refuse
            # most requests with a 403 before they reach the handler.
            query={"token": fuzz.server.token},
        ),
        how=STEER,
    )
    def run(case: Any, how: str) -> None:
        if mode == GenerationMode.POSITIVE:
            steer(case, how, fuzz)
        response = case.call(timeout=120)
        tally.statuses[key][response.status_code] += 1
        if case.operation.label == START_KERNEL and response.status_code == 200:
            session = response.json()["session"]
            if session:  # close it at once: one fuzz kernel at a time
                tally.launched += 1
                closed = requests.delete(
                    fuzz.url(f"api/sessions/{session['id']}"), headers=fuzz.auth, timeout=60
                )
                assert closed.status_code == 204, closed.text
        case.validate_response(response, checks=CHECKS[mode])

    try:
        run()
    except Unsatisfiable:
        # Nothing in the operation can be made invalid (no parameters, or a path parameter
        # whose only invalid values cannot be put in a URL path).
        tally.impossible.append(f"{operation.label} {mode.value}")
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:
        # A failed check: collect it, fuzz the other operations, then report them all.
        tally.failures.append(f"{operation.label} ({mode.value}):\n{e}")


def test_fuzz_the_rest_api(
    fuzz_server: FuzzServer,
    docker_client: docker.DockerClient,
    record_property: Any,
) -> None:
    fuzz = fuzz_server
    specs = requests.get(fuzz.url("api/kernelspecs"), headers=fuzz.auth, timeout=30).json()
    assert {fuzz.real_spec, fuzz.absent_spec} <= set(specs["kernelspecs"]), specs
    # An ended pull for the pull routes to find.
    started = requests.post(
        fuzz.url("gpu-containers/pulls"), json={"image": ABSENT}, headers=fuzz.auth, timeout=30
    )
    assert started.status_code == 202, started.text
    fuzz.pull_id = started.json()["id"]

    schema = schemathesis.openapi.from_path(SPEC_PATH)
    schema.config.update(base_url=fuzz.server.url)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 37, [op.label for op in operations]

    tally = Tally()
    began = time.monotonic()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz_operation(operation, mode, fuzz, tally)
    elapsed = time.monotonic() - began

    # Let the readiness probes the catalog reads started end, then close what is left.
    catalog = requests.get(
        fuzz.url("gpu-containers/images"), params={"wait": "1"}, headers=fuzz.auth, timeout=300
    )
    assert catalog.status_code == 200, catalog.text
    sessions = requests.get(fuzz.url("api/sessions"), headers=fuzz.auth, timeout=30).json()
    assert sessions == [], sessions
    summary = (
        f"{tally.count(GenerationMode.POSITIVE)} valid and {tally.count(GenerationMode.NEGATIVE)}"
        f" invalid requests in {elapsed:.0f} s, {tally.launched} kernels launched; no invalid"
        f" request possible for: {tally.impossible}\n{tally.table()}"
    )
    print(summary)
    record_property("fuzz_summary", summary)
    assert not tally.failures, "\n\n".join(tally.failures) + "\n\n" + summary
    assert tally.server_errors() == 0, summary
    assert (
        tally.count(GenerationMode.POSITIVE) >= 200 and tally.count(GenerationMode.NEGATIVE) >= 150
    )
    assert tally.launched >= 3, summary  # launches really happened, on the engine
    assert sum(tally.statuses[(START_KERNEL, "positive")].values()) >= MAX_EXAMPLES

    # Nothing outlives the fuzzing: no kernel container, no probe container.
    for _ in range(50):
        left = run_containers(docker_client)
        if not left:
            break
        time.sleep(0.2)
    assert not left, [c.name for c in left]
    listing = requests.get(fuzz.url("gpu-containers/allocations"), headers=fuzz.auth, timeout=30)
    assert json.loads(listing.text)["allocations"] == []
