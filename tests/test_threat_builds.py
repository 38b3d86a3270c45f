"""Attacks on image builds, as students outside the docker group through the kernel service
(`ServiceApp.build_policy = "everyone"`, `ImageSaves.allowed_bases = ["jgc/*"]`), against the
real service and Docker engine. Issue 61, findings 1, 3, 5, 6 and 9; the next feature that
touches builds extends this file.

- Finding 1, parser differentials: a line ending "\\\\", "\\" then a no-break space, an unknown
  directive before "# escape=", an empty continuation line, each followed by ``FROM <an image
  the student may not build on>``: refused, or built exactly as the service parsed it (the
  hidden image's secret never read). There is one parser now: the service's own builder runs
  what images/recipes.py parsed.
- Finding 3: ``ADD http://127.0.0.1:<port>`` of a listener the test runs, plain and hidden
  behind a differential: refused or never fetched; the listener sees no request.
- Finding 5: a RUN step's confinement, read from inside the step: no capabilities,
  no-new-privileges, the pids limit (a fork bomb stops there), no network by default; with the
  network on, the backend's own builds network, from which a server beside the kernels is
  unreachable.
- Finding 6: ``FROM scratch`` refused; a build past ``max_build_bytes`` keeps no image; a
  failing, a cancelled and a multi-stage build leave no image and no container behind.
- Finding 9: with every build slot taken, another student's build waits in a fair queue (its
  place shown) instead of a 429, and runs once a slot is free; past ``max_queued``, 429.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import tarfile
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from conftest import DEBIAN_IMAGE, TEST_IMAGE_LABEL, TEST_RUN
from hostusers import BOB, MALLORY, needs_accounts, run_as
from servers import wait_until
from service_process import KernelService, ServiceUser

from jupyter_gpu_containers.base import labels as L

pytestmark = [needs_accounts, pytest.mark.usefixtures("docker_client")]

USER_A = os.environ.get("JGC_TEST_STUDENT_A") or MALLORY
USER_B = os.environ.get("JGC_TEST_STUDENT_B") or BOB
USER_C = os.environ.get("JGC_TEST_OUTSIDER") or "jgc-outsider"
USER_D = os.environ.get("JGC_TEST_PEER") or "jgc-peer"
SECRET = f"hidden-secret-{uuid.uuid4().hex}"
HIDDEN = f"jgc-test/hidden-{uuid.uuid4().hex[:8]}:1"
MAX_BUILD_BYTES = 30 * 2**20


@pytest.fixture(scope="module")
def hidden_image() -> Iterator[str]:
    """An image here whose /secret holds SECRET, outside ImageSaves.allowed_bases: what a
    hidden FROM would read."""
    client = docker.from_env()
    container = client.containers.create(
        DEBIAN_IMAGE, ["true"], labels={TEST_IMAGE_LABEL: TEST_RUN}
    )
    try:
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w") as tar:
            body = f"{SECRET}\n".encode()
            info = tarfile.TarInfo("secret")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        container.put_archive("/", data.getvalue())
        repository, tag = HIDDEN.rsplit(":", 1)
        container.commit(repository, tag, conf={"Labels": {TEST_IMAGE_LABEL: TEST_RUN}})
    finally:
        container.remove(force=True)
    try:
        yield HIDDEN
    finally:
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(HIDDEN, force=True)
        client.close()


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[KernelService, dict[str, ServiceUser]]]:
    """A kernel service as the issue's: builds for everyone, on jgc/* only, 30 MiB a build may
    add, one build at a time and two waiting."""
    service = KernelService(
        {
            "ServiceApp": {"build_policy": "everyone"},
            "ImageSaves": {
                "extra_labels": {TEST_IMAGE_LABEL: TEST_RUN},
                "allowed_bases": ["jgc/*"],
                "max_build_bytes": MAX_BUILD_BYTES,
                "max_concurrent": 1,
                "max_queued": 2,
            },
        }
    )
    try:
        users = {name: service.add_user(name) for name in (USER_A, USER_B, USER_C, USER_D)}
        service.start()
        yield service, users
    finally:
        service.close()


def write_as(user: ServiceUser, folder: str, files: dict[str, str]) -> None:
    """``files`` in ``folder`` of the user's workspace, written by the user."""
    run_as(
        user.name,
        "import json, os, sys\n"
        "d = os.path.join(sys.argv[1], sys.argv[2])\n"
        "os.makedirs(d, exist_ok=True)\n"
        "for name, text in json.loads(sys.argv[3]).items():\n"
        "    with open(os.path.join(d, name), 'w', encoding='utf-8', newline='') as f:\n"
        "        f.write(text)\n",
        str(user.workspace),
        folder,
        json.dumps(files),
    )


async def start_build(
    service: KernelService, user: ServiceUser, folder: str, dockerfile: str
) -> tuple[int, Any]:
    write_as(user, folder, {"Dockerfile": dockerfile})
    return await service.answer(
        user, "POST", "gpu-containers/builds", {"path": f"{folder}/Dockerfile"}
    )


async def ended(service: KernelService, user: ServiceUser, build_id: str) -> Any:
    async def done() -> Any:
        code, now = await service.answer(user, "GET", f"gpu-containers/saves/{build_id}")
        assert code == 200, now
        return now if now["state"] in ("done", "error", "cancelled") else None

    return await wait_until(done, 300, f"build {build_id}")


def leftovers(build_id: str, marker: str) -> tuple[list[str], list[str]]:
    """The containers and images of the build ``build_id`` still on the engine: those carrying
    its L.BUILD label, and any whose command or history holds ``marker`` (a step of its
    Dockerfile; an engine-side build's intermediate containers and images carry that)."""
    client = docker.from_env()
    try:
        api = client.api  # rows, not objects: nothing inspected that may go meanwhile
        label = {"label": f"{L.BUILD}={build_id}"}
        containers = [
            row["Id"]
            for row in api.containers(all=True)
            if marker in str(row.get("Command") or "")
            or (row.get("Labels") or {}).get(L.BUILD) == build_id
        ]
        images = [row["Id"] for row in api.images(all=True, filters=label)]
        for row in api.images(all=True):
            with contextlib.suppress(docker.errors.APIError):
                if marker in json.dumps(api.history(row["Id"])):
                    images.append(row["Id"])
        return sorted(set(containers)), sorted(set(images))
    finally:
        client.close()


def remove_image(ref: str) -> None:
    with (
        contextlib.closing(docker.from_env()) as client,
        contextlib.suppress(docker.errors.APIError),
    ):
        client.images.remove(ref, force=True)


# ---------------------------------------------------------------- finding 1: one parser

DIFFERENTIALS = {
    # Docker's own reader: "\\\\" escapes the escape, no continuation; here it continues.
    "double-escape": f"FROM {DEBIAN_IMAGE}\nRUN echo \\\\\nFROM {{hidden}}\n",
    # Python's rstrip() removes a no-break space; Docker's [ \t]* does not.
    "nbsp": f"FROM {DEBIAN_IMAGE}\nRUN echo \\\u00a0\nFROM {{hidden}}\n",
    # Docker stops reading directives at an unknown one: "`" escapes nothing then.
    "late-escape": f"# foo=bar\n# escape=`\nFROM {DEBIAN_IMAGE}\nRUN echo `\nFROM {{hidden}}\n",
    # An empty line inside a continuation is skipped.
    "empty-continuation": f"FROM {DEBIAN_IMAGE}\nRUN echo \\\n\nFROM {{hidden}}\n",
}


@pytest.mark.parametrize("variant", sorted(DIFFERENTIALS))
async def test_a_hidden_from_is_refused_or_never_read(
    service: tuple[KernelService, dict[str, ServiceUser]], hidden_image: str, variant: str
) -> None:
    """Finding 1: each differential with ``FROM <hidden image>`` after it, then a step that
    prints the hidden image's secret where it can: refused (the hidden image is no allowed
    base), or built as the service parsed it, the secret never printed nor in the image."""
    svc, users = service
    a = users[USER_A]
    text = DIFFERENTIALS[variant].format(hidden=hidden_image)
    text += "RUN cat /secret 2>/dev/null || echo no-secret-here\n"
    code, started = await start_build(svc, a, f"diff-{variant}", text)
    if code != 202:
        assert code == 403 and hidden_image in started["message"], (code, started)
        return
    try:
        done = await ended(svc, a, started["id"])
        log = "\n".join(done["log"])
        assert SECRET not in log and SECRET not in done["message"], done
        assert done["state"] == "done" and "no-secret-here" in log, done
        with contextlib.closing(docker.from_env()) as client:
            out = client.containers.run(
                started["image"],
                ["sh", "-c", "cat /secret 2>/dev/null || echo none"],
                remove=True,
                labels={TEST_IMAGE_LABEL: TEST_RUN},
            )
        assert SECRET not in out.decode()
    finally:
        remove_image(started["image"])


# ---------------------------------------------------------------- finding 3: no fetch


@contextlib.contextmanager
def listener() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP listener on this host's loopback that answers anything with a secret, and the
    requests it saw."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    seen: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                seen.append(conn.recv(4096))
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nSECRET")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], seen
    finally:
        server.close()
        thread.join(10)


async def test_add_of_a_loopback_url_is_never_fetched(
    service: tuple[KernelService, dict[str, ServiceUser]],
) -> None:
    """Finding 3: ADD of a URL on the host's loopback, plain (refused) and hidden behind a
    continuation the engine used to read otherwise (built as parsed: the ADD is words of a RUN
    step that has no network); the listener sees no request either way."""
    svc, users = service
    a = users[USER_A]
    with listener() as (port, seen):
        url = f"http://127.0.0.1:{port}/secret"
        code, refused = await start_build(
            svc, a, "fetch-plain", f"FROM {DEBIAN_IMAGE}\nADD {url} /fetched\n"
        )
        assert code == 400 and "Line 2 (ADD)" in refused["message"], refused
        code, started = await start_build(
            svc,
            a,
            "fetch-hidden",
            f"FROM {DEBIAN_IMAGE}\nRUN echo \\\\\nADD {url} /fetched\n"
            "RUN cat /fetched 2>/dev/null || echo nothing-fetched\n",
        )
        if code == 202:
            try:
                done = await ended(svc, a, started["id"])
                assert "SECRET" not in "\n".join(done["log"]), done
                assert "nothing-fetched" in done["log"], done
            finally:
                remove_image(started["image"])
        else:
            assert code == 400, (code, started)
        assert seen == []


# ---------------------------------------------------------------- finding 5: confinement

CONFINEMENT = (
    f"FROM {DEBIAN_IMAGE}\n"
    "RUN grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status\n"
    "RUN echo pids-max=$(cat /sys/fs/cgroup/pids.max 2>/dev/null"
    " || cat /sys/fs/cgroup/pids/pids.max)\n"
    "RUN echo interfaces=$(ls /sys/class/net | tr '\\n' ,)\n"
    # A fork bomb, bounded: children that sleep (their output closed, so the step can end),
    # forked until a fork is refused or 3000 of them run; then all killed.
    'RUN ["python3", "-c", "'
    "import os, signal, time\\n"
    "kids = []\\n"
    "try:\\n"
    "    while len(kids) < 3000:\\n"
    "        pid = os.fork()\\n"
    "        if pid == 0:\\n"
    "            os.close(1); os.close(2); time.sleep(120); os._exit(0)\\n"
    "        kids.append(pid)\\n"
    "    print('forked', len(kids))\\n"
    "except OSError:\\n"
    "    print('fork-refused-after', len(kids))\\n"
    "for pid in kids:\\n"
    "    os.kill(pid, signal.SIGKILL)\\n"
    "for pid in kids:\\n"
    "    os.waitpid(pid, 0)\\n"
    '"]\n'
)


async def test_a_build_step_is_confined_like_a_kernel(
    service: tuple[KernelService, dict[str, ServiceUser]],
) -> None:
    """Finding 5: read from inside a RUN step: no capabilities (effective or bounding),
    no-new-privileges, ImageSaves.build_pids as the pids limit (a fork bomb stops there), and
    no network but loopback (ImageSaves.build_network is False by default)."""
    svc, users = service
    b = users[USER_B]
    code, started = await start_build(svc, b, "confined", CONFINEMENT)
    assert code == 202, started
    try:
        done = await ended(svc, b, started["id"])
        assert done["state"] == "done", done
        log = done["log"]
        assert "CapEff:\t0000000000000000" in log and "CapBnd:\t0000000000000000" in log, log
        assert "NoNewPrivs:\t1" in log, log
        assert "pids-max=1024" in log, log
        assert "interfaces=lo," in log, log
        forks = [line for line in log if line.startswith(("fork-refused-after", "forked"))]
        assert len(forks) == 1 and forks[0].startswith("fork-refused-after"), log
        assert int(forks[0].split()[-1]) < 1024, forks
    finally:
        remove_image(started["image"])


# ---------------------------------------------------------------- finding 6: disk


async def test_from_scratch_is_refused(
    service: tuple[KernelService, dict[str, ServiceUser]],
) -> None:
    """Finding 6: a final image FROM scratch skipped the size bound (a base of size 0): it is
    refused, in a sentence, before anything is built."""
    svc, users = service
    a = users[USER_A]
    code, refused = await start_build(
        svc,
        a,
        "scratch",
        f"FROM {DEBIAN_IMAGE} AS fill\nRUN head -c 1000 /dev/zero > /f\n"
        "FROM scratch\nCOPY --from=fill /f /f\n",
    )
    assert code == 400 and "Line 3 (FROM)" in refused["message"], refused
    assert "scratch" in refused["message"]


async def test_failing_cancelled_oversized_and_multi_stage_builds_leave_nothing(
    service: tuple[KernelService, dict[str, ServiceUser]],
) -> None:
    """Finding 6: a build that fails at its second step, one cancelled in a step, one whose
    step writes more than ImageSaves.max_build_bytes (stopped while it runs), and a multi-stage
    build that ends well: none leaves a container, and only the last leaves an image: its own,
    tagged."""
    svc, users = service
    a = users[USER_A]
    marker = uuid.uuid4().hex

    failing = (
        f"FROM {DEBIAN_IMAGE}\nRUN head -c 2000000 /dev/urandom > /f && echo {marker}-1\n"
        f"RUN echo {marker}-2 && exit 3\n"
    )
    code, started = await start_build(svc, a, "failing", failing)
    assert code == 202, started
    done = await ended(svc, a, started["id"])
    assert done["state"] == "error" and "non-zero code: 3" in done["message"], done
    assert leftovers(started["id"], f"{marker}-1") == ([], [])

    code, started = await start_build(
        svc, a, "slow", f"FROM {DEBIAN_IMAGE}\nRUN echo {marker}-3 && sleep 600\n"
    )
    assert code == 202, started
    build = started

    async def step_started() -> bool:
        code, now = await svc.answer(a, "GET", f"gpu-containers/saves/{build['id']}")
        return code == 200 and f"{marker}-3" in now["log"]

    await wait_until(step_started, 120, "the slow step's start")
    code, cancelled = await svc.answer(a, "DELETE", f"gpu-containers/saves/{build['id']}")
    assert code == 200 and cancelled["state"] == "cancelled", cancelled
    assert leftovers(build["id"], f"{marker}-3") == ([], [])

    code, started = await start_build(
        svc,
        a,
        "oversized",
        # Past the bound, then a step that would go on for ten minutes: stopped while it runs.
        f"FROM {DEBIAN_IMAGE}\nRUN head -c {MAX_BUILD_BYTES + 2**20} /dev/urandom > /big"
        f" && echo {marker}-4 && sleep 600\n",
    )
    assert code == 202, started
    done = await ended(svc, a, started["id"])
    assert done["state"] == "error" and "more than a build may add" in done["message"], done
    assert leftovers(started["id"], f"{marker}-4") == ([], [])

    code, started = await start_build(
        svc,
        a,
        "stages",
        f"FROM {DEBIAN_IMAGE} AS one\nRUN echo {marker}-5 > /one\n"
        f"FROM {DEBIAN_IMAGE} AS two\nRUN echo {marker}-6 > /two\n"
        f"FROM {DEBIAN_IMAGE}\nCOPY --from=one /one /one\nCOPY --from=two /two /two\n",
    )
    assert code == 202, started
    try:
        done = await ended(svc, a, started["id"])
        assert done["state"] == "done", done
        with contextlib.closing(docker.from_env()) as client:
            kept = client.images.get(started["image"]).id
            out = client.containers.run(
                kept, ["cat", "/one", "/two"], remove=True, labels={TEST_IMAGE_LABEL: TEST_RUN}
            )
        assert out.decode().split() == [f"{marker}-5", f"{marker}-6"]
        containers, images = leftovers(started["id"], f"{marker}-5")
        assert containers == [] and images == [kept], (containers, images)
        assert leftovers(started["id"], f"{marker}-6") == ([], [kept])
    finally:
        remove_image(started["image"])


# ---------------------------------------------------------------- finding 9: a fair queue


async def test_a_full_builder_queues_others_fairly_instead_of_refusing(
    service: tuple[KernelService, dict[str, ServiceUser]],
) -> None:
    """Finding 9 (ImageSaves.max_concurrent 1, max_queued 2): while one student's build holds
    the only slot, two other students' builds wait in order (their places shown), a fourth's
    is refused with a sentence (429), and the waiting ones run once the slot is free."""
    svc, users = service
    a, b, c, d = (users[n] for n in (USER_A, USER_B, USER_C, USER_D))
    marker = uuid.uuid4().hex
    code, holding = await start_build(
        svc, a, "holding", f"FROM {DEBIAN_IMAGE}\nRUN echo {marker}-held && sleep 600\n"
    )
    assert code == 202, holding
    images: list[str] = []
    try:

        async def holding_runs() -> bool:
            code, now = await svc.answer(a, "GET", f"gpu-containers/saves/{holding['id']}")
            return code == 200 and f"{marker}-held" in now["log"]

        await wait_until(holding_runs, 120, "the held build's step")
        quick = f"FROM {DEBIAN_IMAGE}\nRUN echo {marker}-quick\n"
        code, second = await start_build(svc, b, "second", quick)
        assert code == 202 and second["state"] == "queued" and second["position"] == 1, second
        code, third = await start_build(svc, c, "third", quick)
        assert code == 202 and third["state"] == "queued" and third["position"] == 2, third
        images += [second["image"], third["image"]]
        code, refused = await start_build(svc, d, "fourth", quick)
        assert code == 429 and "as many as may wait" in refused["message"], refused
        # One queued or running per user: the second student's next one is refused.
        code, again = await start_build(svc, b, "again", quick)
        assert code == 409 and "still under way" in again["message"], again

        code, _ = await svc.answer(a, "DELETE", f"gpu-containers/saves/{holding['id']}")
        assert code == 200
        done = await ended(svc, b, second["id"])
        assert done["state"] == "done" and f"{marker}-quick" in done["log"], done
        done = await ended(svc, c, third["id"])
        assert done["state"] == "done" and f"{marker}-quick" in done["log"], done
    finally:
        with contextlib.suppress(Exception):
            await svc.answer(a, "DELETE", f"gpu-containers/saves/{holding['id']}")
        for ref in images:
            remove_image(ref)


# ---------------------------------------------------------------- finding 5: the builds network


def test_a_build_step_with_a_network_reaches_no_kernel(docker_client: Any) -> None:
    """Finding 5, with ImageSaves.build_network on (here through the builder and the Docker
    backend directly): a RUN step on the backend's own builds network cannot reach a container
    on the engine's default bridge, where kernels run (a server listening there, as a kernel's
    TensorBoard would)."""
    from conftest import TEST_LABEL

    from jupyter_gpu_containers.backends.backend import StepLimits
    from jupyter_gpu_containers.backends.docker.engine import Engine
    from jupyter_gpu_containers.images import builder, recipes

    server = docker_client.containers.run(
        DEBIAN_IMAGE,
        ["python3", "-m", "http.server", "8000"],
        detach=True,
        labels={TEST_LABEL: TEST_RUN},
        network="bridge",
    )
    engine = Engine()
    image_id = ""
    try:
        server.reload()
        address = server.attrs["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
        base = docker_client.images.get(DEBIAN_IMAGE).id
        script = (
            "import urllib.request\n"
            "try:\n"
            f"    urllib.request.urlopen('http://{address}:8000/', timeout=10)\n"
            "    print('kernel-reached')\n"
            "except OSError as e:\n"
            "    print('kernel-unreachable', type(e).__name__)\n"
        )
        recipe = recipes.Recipe(
            stages=[
                recipes.Stage(
                    1,
                    base,
                    None,
                    "",
                    (recipes.Instruction(2, "RUN", json=("python3", "-c", script)),),
                )
            ],
            images=[base],
            final_base=base,
        )
        steps = engine.build_steps()
        run = builder.BuildRun(
            steps,
            builder.BuildPlan(
                recipe=recipe,
                bases={base: base},
                context=None,
                name="a network test",
                labels={TEST_IMAGE_LABEL: TEST_RUN},
                container_labels={TEST_IMAGE_LABEL: TEST_RUN},
                limits=StepLimits(memory=512 * 2**20, cpus=1, pids=256, network=True),
            ),
        )
        lines = list(run)
        image_id = run.image_id
        assert any(line.startswith("kernel-unreachable") for line in lines), lines
        assert "kernel-reached" not in lines
    finally:
        if image_id:
            with contextlib.suppress(Exception):
                engine.build_steps().remove_image(image_id)
        engine.close()
        server.remove(force=True)
