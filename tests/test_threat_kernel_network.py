"""Attacks on the network between kernels: issue 61, finding 8 ("Kernels of different users cannot
reach each other").

One student's kernel serves its workspace over HTTP on its network address (as TensorBoard or a
dev server would: ``python -m http.server``), a 0600 file of hers in it; another student's kernel
tries to read the file through it. Real kernel service (as root), real accounts outside the
docker group, real engines: Docker, and root's Podman (a kernel service's engine) with the two
settings of PodmanEngine.network an administrator has: "bridge" (Podman's default network before
the change; now a network per user, isolated) and "auto" (a network of each container's own).

Her own second kernel: on Docker it cannot reach her first either (one kernels' network with
inter-container traffic off: no kernel reaches another, whoever's); on Podman's "bridge" it can
(her kernels share her own network, isolated from everyone else's); on "auto" it cannot (each
container has a network of its own). A network an administrator names is joined only when it
keeps its containers apart (Docker: one with inter-container traffic on is refused). On
Kubernetes the NetworkPolicy is the mechanism: its manifest is checked here, and
docs/kubernetes.md says what is open where the network plugin does not enforce it. Extend this
file for any new way a kernel gets a network.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import podman_user
import pytest
from conftest import DEBIAN_IMAGE, TEST_LABEL, TEST_RUN, kernel_name
from hostusers import BOB, MALLORY, ids_of, needs_accounts
from kernel_io import execute
from servers import VENV_BIN
from service_process import KernelService, ServiceUser

pytestmark = [needs_accounts, pytest.mark.usefixtures("docker_client")]

USER_A = os.environ.get("JGC_TEST_STUDENT_A") or MALLORY
USER_B = os.environ.get("JGC_TEST_STUDENT_B") or BOB
SECRET = "finding-8-her-private-notes"
PORT = 8000
# Seconds a connection attempt may take before it counts as not made: a firewall that drops
# packets answers nothing, so the attempt ends at this bound (generous for a loaded machine;
# nothing is asserted about the time itself).
CONNECT_BOUND = 10

root_podman = pytest.mark.skipif(
    os.getuid() != 0 or not shutil.which("podman"), reason="needs root and podman"
)

SERVE = f"""
import os, socket, subprocess, sys, time
with open('secret.txt', 'w') as f:
    f.write({SECRET!r})
os.chmod('secret.txt', 0o600)
server = subprocess.Popen(
    [sys.executable, '-m', 'http.server', '{PORT}', '--bind', '0.0.0.0',
     '--directory', os.getcwd()],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)
for _ in range(600):
    try:
        socket.create_connection(('127.0.0.1', {PORT}), timeout=1).close()
        break
    except OSError:
        time.sleep(0.1)
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
probe.connect(('10.255.255.254', 9))  # no packet: the address the default route leaves from
print(probe.getsockname()[0])
"""

READ = """
import urllib.request
try:
    answer = urllib.request.urlopen('http://{address}:{port}/secret.txt', timeout={bound})
    print('READ', answer.read().decode())
except Exception as e:
    print('NOT READ', type(e).__name__, e)
"""


@pytest.fixture
def services() -> Iterator[list[KernelService]]:
    made: list[KernelService] = []
    yield made
    for service in made:
        service.close()


async def run(service: KernelService, user: ServiceUser, kernel_id: str, code: str) -> Any:
    ws = await service.websocket(user, kernel_id)
    try:
        return await execute(ws, code, timeout=120)
    finally:
        ws.close()


async def attack(
    services: list[KernelService], config: dict[str, Any] | None = None
) -> tuple[str, str, str]:
    """A serves her workspace from her kernel; B's kernel, then A's second kernel, read it from
    her kernel's address. What A's own kernel, B's and A's second read."""
    # /usr/sbin too, as a system service has it: Podman's bridge networks need iptables.
    service = KernelService(config, env={"PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin"})
    services.append(service)
    a, b = service.add_user(USER_A), service.add_user(USER_B)
    service.start()
    spec = kernel_name(DEBIAN_IMAGE)
    served = await service.start_kernel(a, spec)
    result = await run(service, a, served, SERVE)
    assert result.status == "ok", result
    address = result.stdout.strip().splitlines()[-1]
    assert address and not address.startswith("127."), result
    secret = a.workspace / "secret.txt"
    assert secret.stat().st_uid == ids_of(a.name)[0] and secret.stat().st_mode & 0o077 == 0
    read = READ.format(address=address, port=PORT, bound=CONNECT_BOUND)
    # The file is served on that address (else the attack below proves nothing).
    own = await run(service, a, served, read)
    assert f"READ {SECRET}" in own.stdout, own
    theirs = await run(service, b, await service.start_kernel(b, spec), read)
    assert theirs.status == "ok", theirs
    second = await run(service, a, await service.start_kernel(a, spec), read)
    assert second.status == "ok", second
    return own.stdout, theirs.stdout, second.stdout


async def test_another_users_docker_kernel_cannot_read_what_a_kernel_serves(
    services: list[KernelService],
) -> None:
    _own, theirs, second = await attack(services)
    assert SECRET not in theirs and "NOT READ" in theirs, theirs
    # One kernels' network with inter-container traffic off: her own other kernel neither.
    assert SECRET not in second and "NOT READ" in second, second


@pytest.fixture
def root_podman_images(docker_client: Any) -> Iterator[None]:
    podman_user.load_images(docker_client, [DEBIAN_IMAGE], user=podman_user.ROOT)
    yield
    podman_user.remove_test_containers(podman_user.ROOT)
    # The students' networks (made by the engine for their kernels, now gone): removed so that
    # every run makes them again; one still in use by another run's kernel stays.
    for name in (USER_A, USER_B):
        with contextlib.suppress(Exception):
            podman_user.podman(
                "network",
                "rm",
                f"jupyter-gpu-containers-kernels-{ids_of(name)[0]}",
                user=podman_user.ROOT,
                check=False,
            )


@root_podman
@pytest.mark.usefixtures("root_podman_images")
@pytest.mark.parametrize("network", ["bridge", "auto"])
async def test_another_users_podman_kernel_cannot_read_what_a_kernel_serves(
    services: list[KernelService], network: str
) -> None:
    config = {
        "ServiceApp": {"backend": "podman"},
        "GPUAllocator": {"attach_mode": "cdi"},
        "PodmanEngine": {"network": network},
    }
    _own, theirs, second = await attack(services, config)
    assert SECRET not in theirs and "NOT READ" in theirs, theirs
    if network == "bridge":
        # Her own network, isolated from every other user's: her kernels reach each other.
        assert f"READ {SECRET}" in second, second
    else:
        # A network of each container's own: her address there is every container's own.
        assert SECRET not in second and "NOT READ" in second, second


def test_the_kubernetes_policy_lets_no_kernel_pod_reach_another() -> None:
    """On Kubernetes the NetworkPolicy is the mechanism (enforced where the network plugin
    enforces policies: docs/kubernetes.md says what is open where it does not): every kernel pod
    takes traffic from the service's pods alone, on every port, so no kernel pod (another
    user's, or the same user's) connects to what a kernel serves. Every pod the backend makes
    is a kernel pod for the policy (the managed label, which the service sets); the labels the
    policy lets in are the service's pods' (never give kernels those: docs/kubernetes.md)."""
    import yaml

    from jupyter_gpu_containers.base import labels as L

    text = (Path(__file__).resolve().parent.parent / "deploy/kubernetes/service.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text.replace("{{namespace}}", "kernels")) if d]
    (policy,) = [
        d
        for d in docs
        if d["kind"] == "NetworkPolicy"
        and d["metadata"]["name"] == "jupyter-gpu-containers-kernels"
    ]
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {L.MANAGED: "true"}}
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    assert "ports" not in rule  # every port, a kernel's own servers' included
    service_pods = {
        "app.kubernetes.io/name": "jupyter-gpu-containers",
        "app.kubernetes.io/component": "kernel-service",
    }
    assert rule["from"] == [{"podSelector": {"matchLabels": service_pods}}]


async def test_a_named_docker_network_that_lets_kernels_reach_each_other_is_refused(
    services: list[KernelService], docker_client: Any
) -> None:
    """What a network named by an administrator means: a kernel joins it only when it keeps the
    containers on it apart (Docker: inter-container traffic off); one that does not is refused
    in a sentence, 4xx, before any kernel is on it."""
    name = f"jgc-test-lab-net-{TEST_RUN}"
    network = docker_client.networks.create(name, driver="bridge", labels={TEST_LABEL: TEST_RUN})
    try:
        service = KernelService(
            {
                "ContainerPolicy": {"allowed_network_modes": ["bridge", "none", name]},
                "ContainerProvisioner": {"network_mode": name},
            }
        )
        services.append(service)
        a = service.add_user(USER_A)
        service.start()
        code, body = await service.answer(
            a, "POST", "api/kernels", {"name": kernel_name(DEBIAN_IMAGE), "env": {}}
        )
        assert 400 <= code < 500, (code, body)
        assert "lets the containers on it reach each other" in body["message"], body
        network.reload()
        assert not network.containers
    finally:
        # The service first (a kernel that joined the network, before the change, goes with it).
        for service in services:
            service.close()
        services.clear()
        network.remove()


@root_podman
@pytest.mark.usefixtures("root_podman_images")
async def test_a_named_network_on_root_podman_is_refused(services: list[KernelService]) -> None:
    """Podman keeps no containers of one network apart: as root (a kernel service) a named
    network, whether PodmanEngine.network or a mode the administrator lists, is refused in a
    sentence, 4xx, and no container is made."""
    name = f"jgc-test-lab-net-{TEST_RUN}"
    service = KernelService(
        {
            "ServiceApp": {"backend": "podman"},
            "GPUAllocator": {"attach_mode": "cdi"},
            "ContainerPolicy": {"allowed_network_modes": ["bridge", "none", name]},
            "ContainerProvisioner": {"network_mode": name},
        }
    )
    services.append(service)
    a = service.add_user(USER_A)
    service.start()
    code, body = await service.answer(
        a, "POST", "api/kernels", {"name": kernel_name(DEBIAN_IMAGE), "env": {}}
    )
    assert 400 <= code < 500, (code, body)
    assert "Podman keeps no containers of one network apart" in body["message"], body
    assert podman_user.run_containers(podman_user.ROOT) == []
