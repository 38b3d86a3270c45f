"""The kernel-readiness probe against the real engine: the test images' answers, the caches, the
sharing of one container between concurrent askers, the concurrency bound, timeouts, and images
that are missing or lack Python.

Probe containers are counted by wrapping the shared Engine's run_oneshot_sync (the wrapper still
runs the real container), so "no container was started" is asserted directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import (
    CONDA_IMAGE,
    DEBIAN_IMAGE,
    NGC_IMAGE,
    NO_IPYKERNEL_IMAGE,
    TEST_IMAGE_LABEL,
    TEST_LABEL,
    TEST_RUN,
    assert_no_test_containers,
)
from jupyter_core.paths import jupyter_data_dir
from traitlets.config import Config, LoggingConfigurable

from jupyter_gpu_containers.backends.docker.engine import Engine
from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.base.errors import ImageMissing
from jupyter_gpu_containers.base.records import ImageRecord, OneshotResult
from jupyter_gpu_containers.images.probe import (
    MARKER,
    PROBE_COMMAND,
    KernelReadinessProbe,
    ProbeResult,
    interpret,
    parse_answer,
)

pytestmark = pytest.mark.usefixtures("docker_client")

SLEEPY_IMAGE = f"jgc-test/probe-sleepy:{TEST_RUN}"
FRAMEWORKS_IMAGE = f"jgc-test/probe-frameworks:{TEST_RUN}"
NO_PYTHON_IMAGE = f"jgc-test/probe-no-python:{TEST_RUN}"

DERIVED = {
    # An ENTRYPOINT that takes longer than any probe timeout in these tests.
    SLEEPY_IMAGE: f"""FROM {DEBIAN_IMAGE}
ENTRYPOINT ["sh", "-c", "sleep 120; exec \\"$@\\"", "sleepy-entrypoint"]
""",
    # Framework distributions as package metadata only. `torch` is also a package that hangs
    # when imported: a probe that imported frameworks would time out here. The ENTRYPOINT is
    # the interpreter, which kernels (and so probes) clear.
    FRAMEWORKS_IMAGE: f"""FROM {DEBIAN_IMAGE}
RUN set -e; d=/usr/lib/python3/dist-packages; \\
    for spec in torch-2.4.0a0 tensorflow_gpu-2.15.0 mxnet_cu112-1.9.1 \\
                paddlepaddle_gpu-2.6.1 keras-3.3.3; do \\
      name=$(echo "${{spec%-*}}" | tr _ -); version="${{spec##*-}}"; \\
      mkdir "$d/$spec.dist-info"; \\
      printf 'Metadata-Version: 2.1\\nName: %s\\nVersion: %s\\n' "$name" "$version" \\
        > "$d/$spec.dist-info/METADATA"; \\
    done; \\
    mkdir "$d/torch"; echo 'import time; time.sleep(3600)' > "$d/torch/__init__.py"
ENTRYPOINT ["python3"]
""",
    NO_PYTHON_IMAGE: f"""FROM {DEBIAN_IMAGE}
RUN rm -f /usr/bin/python3* /usr/bin/python /usr/local/bin/python*
""",
}


@pytest.fixture(scope="module")
def derived_images(docker_client: docker.DockerClient) -> Iterator[None]:
    """Tiny images built from the Debian test image for this module, removed afterwards."""
    try:
        for tag, dockerfile in DERIVED.items():
            docker_client.images.build(
                fileobj=io.BytesIO(dockerfile.encode()),
                tag=tag,
                rm=True,
                forcerm=True,
                # So that a later run removes it if this one is killed (stale_runs.py).
                labels={TEST_IMAGE_LABEL: TEST_RUN},
            )
        yield
    finally:
        for tag in DERIVED:
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_client.images.remove(tag, force=True)


class ProbeRuns:
    """Counts probe containers, and how many ran at once, by wrapping the real engine call."""

    def __init__(self, engine: Engine, delay: float = 0.0) -> None:
        self.real = engine.run_oneshot_sync
        self.delay = delay
        self.calls: list[dict[str, Any]] = []
        self.running = 0
        self.peak = 0
        self._lock = threading.Lock()

    def __call__(self, image: str, command: list[str], **kwargs: Any) -> OneshotResult:
        with self._lock:
            self.calls.append({"image": image, "command": command, **kwargs})
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            time.sleep(self.delay)  # widens the window in which others could start their own
            return self.real(image, command, **kwargs)
        finally:
            with self._lock:
                self.running -= 1


# One engine for the module's probes: the `runs` wrapper replaces its one-shot call.
ENGINE = Engine()


@pytest.fixture
def engine() -> Engine:
    return ENGINE


@pytest.fixture
def runs(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> ProbeRuns:
    counter = ProbeRuns(engine)
    monkeypatch.setattr(engine, "run_oneshot_sync", counter)
    return counter


def make_probe(cache_dir: Path, **kwargs: Any) -> KernelReadinessProbe:
    # The module's engine, so the `runs` wrapper sees its containers.
    return KernelReadinessProbe(
        backend=ENGINE, extra_labels={TEST_LABEL: TEST_RUN}, cache_dir=str(cache_dir), **kwargs
    )


def cache_files(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir()) if cache_dir.exists() else []


@pytest.mark.parametrize(
    ("ref", "python"),
    [
        (DEBIAN_IMAGE, "/usr/bin/python3"),
        # The NGC-like ENTRYPOINT prints a banner to stdout before exec'ing the probe.
        (NGC_IMAGE, "/usr/bin/python3"),
        # Python only under /opt/conda (on PATH), and a non-root USER.
        (CONDA_IMAGE, "/opt/conda/bin/python3"),
    ],
)
def test_ready_images(ref: str, python: str, engine: Engine, runs: ProbeRuns, tmp_path: Path):
    image = engine.inspect_image_sync(ref)
    probe = make_probe(tmp_path / "cache")
    result = probe.probe_sync(image)
    assert result.ready, result.reason
    assert result.definitive
    assert result.reason == ""
    assert result.image_id == image.id
    assert result.python == python
    assert result.python_version.startswith("3.11.")
    assert result.ipykernel_version.split(".")[0].isdigit()
    # Frameworks come from package metadata: the NGC-like image claims PyTorch in its
    # environment and labels, but has no torch installed, and the probe says what is installed.
    assert result.frameworks == {}
    # The image's own account files, as read inside it (for the kernel's copies).
    assert result.accounts["passwd"].startswith("root:x:0:0:")
    assert "\nnogroup:x:65534:" in result.accounts["group"]
    json.dumps(result.to_dict())  # what the REST API will send

    # One container: by image id, as the image's USER, with its ENTRYPOINT, and our labels.
    assert len(runs.calls) == 1
    call = runs.calls[0]
    assert call["image"] == image.id
    assert call["user"] is None
    assert call["entrypoint"] is None
    assert call["labels"][L.PROBE] == "true"
    # One of the image's names: other tests tag the same test image meanwhile (the benchmarks'
    # copies), and the label names whichever tag the engine lists first.
    assert call["labels"][L.IMAGE] in image.tags
    assert ref in image.tags
    assert call["labels"][TEST_LABEL] == TEST_RUN
    assert L.MANAGED not in call["labels"]  # never mistaken for a kernel by recovery or ledger
    probe.close()


def test_image_without_ipykernel(engine: Engine, runs: ProbeRuns, tmp_path: Path) -> None:
    image = engine.inspect_image_sync(NO_IPYKERNEL_IMAGE)
    probe = make_probe(tmp_path / "cache")
    result = probe.probe_sync(image)
    assert not result.ready
    assert result.definitive  # the image's content, not this run: cached like any answer
    assert result.reason == (
        f"Python {result.python_version} at /usr/bin/python3 cannot import ipykernel: "
        "No module named 'ipykernel'. Install ipykernel in the image (pip install ipykernel)."
    )
    assert result.ipykernel_version == ""
    assert probe.cached(image.id) == result
    probe.close()


@pytest.mark.usefixtures("derived_images")
def test_frameworks_from_metadata_without_importing_them(
    engine: Engine, runs: ProbeRuns, tmp_path: Path
) -> None:
    image = engine.inspect_image_sync(FRAMEWORKS_IMAGE)
    probe = make_probe(tmp_path / "cache", timeout=20.0)
    result = probe.probe_sync(image)
    # Ready: had the probe imported the (hanging) torch, it would have timed out.
    assert result.ready, result.reason
    assert result.frameworks == {
        "torch": "2.4.0a0",
        "tensorflow": "2.15.0",
        "mxnet": "1.9.1",
        "paddlepaddle": "2.6.1",
        "keras": "3.3.3",
    }
    assert runs.calls[0]["entrypoint"] == []  # ENTRYPOINT ["python3"] cleared, as for kernels
    probe.close()


@pytest.mark.usefixtures("derived_images")
def test_image_without_python(engine: Engine, runs: ProbeRuns, tmp_path: Path) -> None:
    image = engine.inspect_image_sync(NO_PYTHON_IMAGE)
    probe = make_probe(tmp_path / "cache")
    result = probe.probe_sync(image)
    assert not result.ready
    assert result.definitive
    assert result.reason.startswith("No Python interpreter in this image (looked for ")
    assert "/opt/conda/bin, /usr/local/bin, /usr/bin" in result.reason
    assert result.python == ""
    probe.close()


def test_cached_in_memory_then_on_disk(engine: Engine, runs: ProbeRuns, tmp_path: Path) -> None:
    image = engine.inspect_image_sync(DEBIAN_IMAGE)
    cache_dir = tmp_path / "cache"
    probe = make_probe(cache_dir)
    assert probe.cached(image.id) is None
    first = probe.probe_sync(image)
    assert len(runs.calls) == 1

    # Again: the memory cache, no container.
    assert probe.probe_sync(image) is first
    assert len(runs.calls) == 1

    # On disk: one file named by the image id, in a directory only this user can read.
    assert stat.S_IMODE(os.stat(cache_dir).st_mode) == 0o700
    assert cache_files(cache_dir) == [image.id.replace(":", "-") + ".json"]

    # A restarted server (a new probe on the same directory) reads it back, no container.
    again = make_probe(cache_dir)
    assert again.cached(image.id) == first
    assert again.probe_sync(image) == first
    assert len(runs.calls) == 1

    # A cache file from another version of the probe is not trusted.
    path = cache_dir / cache_files(cache_dir)[0]
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "format": "older"}))
    assert make_probe(cache_dir).cached(image.id) is None
    probe.close()
    again.close()


async def test_cached_answers_on_the_event_loop(
    engine: Engine, runs: ProbeRuns, tmp_path: Path
) -> None:
    image = await engine.inspect_image(DEBIAN_IMAGE)
    probe = make_probe(tmp_path / "cache")
    first = await probe.probe(image)
    assert first.ready
    assert await probe.probe(image) is first
    assert len(runs.calls) == 1
    probe.close()


def test_concurrent_probes_of_one_image_share_one_container(
    engine: Engine, runs: ProbeRuns, tmp_path: Path
) -> None:
    runs.delay = 0.5
    image = engine.inspect_image_sync(DEBIAN_IMAGE)
    probe = make_probe(tmp_path / "cache")
    results: list[ProbeResult] = []
    threads = [
        threading.Thread(target=lambda: results.append(probe.probe_sync(image))) for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 6
    assert len(runs.calls) == 1
    assert all(r == results[0] for r in results)
    assert results[0].ready
    probe.close()


async def test_concurrent_async_probes_share_one_container(
    engine: Engine, runs: ProbeRuns, tmp_path: Path
) -> None:
    runs.delay = 0.5
    image = await engine.inspect_image(CONDA_IMAGE)
    probe = make_probe(tmp_path / "cache")
    results = await asyncio.gather(*(probe.probe(image) for _ in range(6)))
    assert len(runs.calls) == 1
    assert all(r == results[0] for r in results)
    assert results[0].ready
    probe.close()


def test_max_concurrent_bounds_probe_containers(
    engine: Engine, runs: ProbeRuns, tmp_path: Path
) -> None:
    runs.delay = 0.3
    images = [engine.inspect_image_sync(ref) for ref in (DEBIAN_IMAGE, NGC_IMAGE, CONDA_IMAGE)]
    images.append(engine.inspect_image_sync(NO_IPYKERNEL_IMAGE))
    probe = make_probe(tmp_path / "cache", max_concurrent=2)
    threads = [threading.Thread(target=probe.probe_sync, args=(image,)) for image in images]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(runs.calls) == 4
    assert runs.peak == 2
    probe.close()


@pytest.mark.usefixtures("derived_images")
def test_timeout_is_not_cached_and_leaves_no_container(
    engine: Engine, runs: ProbeRuns, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    image = engine.inspect_image_sync(SLEEPY_IMAGE)
    cache_dir = tmp_path / "cache"
    probe = make_probe(cache_dir, timeout=0.5)
    result = probe.probe_sync(image)
    assert not result.ready
    assert not result.definitive
    assert result.reason.startswith("The probe timed out after 0.5 s")
    assert_no_test_containers(docker_client)  # killed and removed, not left to finish

    # Not cached as the image's answer, in memory or on disk; but the next request within the
    # backoff gets the failure without a container (issue 61: failed probes ran again and again).
    assert probe.cached(image.id) is None
    assert cache_files(cache_dir) == []
    assert probe.probe_sync(image) == result
    assert len(runs.calls) == 1
    probe.close()
    # Without a backoff, the next request probes again.
    eager = make_probe(cache_dir, timeout=0.5, failure_backoff=0.0)
    assert not eager.probe_sync(image).definitive
    assert not eager.probe_sync(image).definitive
    assert len(runs.calls) == 3
    eager.close()


def test_missing_image(engine: Engine, runs: ProbeRuns, tmp_path: Path) -> None:
    ref = "jgc-test/not-on-this-host:never"
    gone = ImageRecord(
        id="sha256:" + "0" * 64,
        tags=(ref,),
        labels={},
        env={},
        entrypoint=(),
        user="",
        created="",
        size=0,
    )
    probe = make_probe(tmp_path / "cache")
    result = probe.probe_sync(gone)
    assert not result.ready
    assert not result.definitive
    assert result.reason == (
        f"The image {ref} is not on this host. Pull or build it first (`docker pull {ref}`)."
    )
    assert probe.cached(gone.id) is None

    # The engine's own sentence, for callers that name the image themselves.
    with pytest.raises(ImageMissing, match=r"^The image jgc-test/not-on-this-host:never is not"):
        engine.run_oneshot_sync(ref, PROBE_COMMAND, labels={TEST_LABEL: TEST_RUN}, timeout=5.0)
    probe.close()


def test_engine_not_reachable(tmp_path: Path) -> None:
    socket_path = tmp_path / "no-engine.sock"
    unreachable = Engine(config=Config({"Engine": {"docker_url": f"unix://{socket_path}"}}))
    probe = KernelReadinessProbe(backend=unreachable, cache_dir=str(tmp_path / "cache"))
    image = ENGINE.inspect_image_sync(DEBIAN_IMAGE)
    result = probe.probe_sync(image)
    assert not result.ready
    assert not result.definitive  # says nothing about the image: asked again next time
    assert result.reason.startswith(f"The Docker engine is not reachable at unix://{socket_path}")
    assert probe.cached(image.id) is None
    probe.close()
    unreachable.close()


def test_answer_parsing() -> None:
    answer = {"python": "/usr/bin/python3", "python_version": "3.10.12", "frameworks": {}}
    answer["ipykernel_version"] = "6.29.0"
    # A banner without a trailing newline puts the marker mid-line; later lines are ignored.
    stdout = f"== PyTorch ==\nNVIDIA Release 24.05 {MARKER}{json.dumps(answer)}\nbye\n"
    assert parse_answer(stdout) == answer
    assert parse_answer("== PyTorch ==\n") is None
    assert parse_answer(f"{MARKER}not json\n") is None

    crashed = interpret(
        "sha256:" + "1" * 64, OneshotResult(139, "", "Segmentation fault", False), 5
    )
    assert not crashed.definitive
    assert "exited with code 139 before Python answered" in crashed.reason
    assert "Segmentation fault" in crashed.reason

    result = interpret("sha256:" + "1" * 64, OneshotResult(0, stdout, "", False), 5)
    assert ProbeResult.from_dict(result.to_dict()) == result
    with pytest.raises(ValueError, match="wrong type"):
        ProbeResult.from_dict({**result.to_dict(), "ready": "yes"})


def test_the_probe_is_configured_from_its_parent(tmp_path: Path) -> None:
    config = Config({"KernelReadinessProbe": {"timeout": 7.5, "max_concurrent": 3}})
    parent = LoggingConfigurable(config=config)
    probe = KernelReadinessProbe(parent=parent, backend=Engine(parent=parent))
    try:
        assert probe.timeout == 7.5
        assert probe.max_concurrent == 3
        assert probe.cache_dir == os.path.join(jupyter_data_dir(), "gpu_containers", "probes")
    finally:
        probe.close()
        probe.backend.close()


# Only the image it uses: this module's sleepy image would hold the server's stop for a whole
# probe timeout (a stopping server lets its background probes end).
@pytest.mark.server_config(
    lambda tmp_path: {"ContainerKernelSpecManager": {"image_include": [DEBIAN_IMAGE]}}
)
async def test_recovery_removes_probe_containers_of_dead_servers(
    jp_serverapp: Any, docker_client: docker.DockerClient
) -> None:
    """A server killed mid-probe leaves its probe container; the next server's start removes it,
    and leaves a live server's probe alone."""
    from jupyter_gpu_containers.server.recovery import recover
    from jupyter_gpu_containers.services import services_for

    me = L.OwnerProcess.current()
    dead = L.OwnerProcess(me.host, me.boot, me.pid, "not-this-start-time")
    made = {}
    for name, owner in (("dead", dead), ("live", me)):
        made[name] = docker_client.containers.create(
            DEBIAN_IMAGE,
            "sleep 60",
            labels={TEST_LABEL: TEST_RUN, L.PROBE: "true", L.OWNER_PROCESS: owner.token()},
        )
    try:
        report = await recover(
            services_for(jp_serverapp), jp_serverapp.kernel_manager, "reattach", jp_serverapp.log
        )
        assert made["dead"].id in report.removed
        left = {
            c.id
            for c in docker_client.containers.list(
                ignore_removed=True, all=True, filters={"label": L.PROBE}
            )
        }
        assert made["dead"].id not in left and made["live"].id in left
    finally:
        for container in made.values():
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
