"""README's second documented command, ``scripts/demo-multiuser.sh``, in its smoke mode
(``DEMO_SMOKE=1``): it brings up JupyterHub with its proxy, the two demo accounts outside the
docker group and the kernel service, as a person running it would get them, then checks the whole
chain (the Hub spawns a user's server as that user; the server lists the service's container
kernel specs with its own Hub token, which the service checks with the Hub) and stops everything.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import subprocess
from pathlib import Path

import pytest
from servers import VENV_BIN, free_port

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "demo-multiuser.sh"
# Accounts of its own, not the demo's: the UI tests run the demo, as its three users, beside this
# test (scripts/test.sh), and this test checks that none of its users runs anything when it ends.
DEMO_USERS = ("jgc-smoke-alice", "jgc-smoke-bob", "jgc-smoke-carol")


def _processes_of(user: str) -> list[int]:
    uid = pwd.getpwnam(user).pw_uid
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.mark.timeout(420)
@pytest.mark.skipif(os.getuid() != 0, reason="the demo creates accounts and runs the Hub: root")
def test_multiuser_demo_smoke(tmp_path: Path) -> None:
    hub_port, service_port = free_port(), free_port()
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "DEMO_SMOKE": "1",
        "JGC_MULTIUSER_PORT": str(hub_port),
        "JGC_SERVICE_PORT": str(service_port),
        "JGC_VENV": str(VENV_BIN.parent),
        "JGC_DEMO_USERS": " ".join(DEMO_USERS),
    }
    out = subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=400,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-8000:]
    specs = re.search(r"DEMO_SMOKE: kernel specs through the service: (.*)", text)
    assert specs, text
    listed = specs.group(1)
    assert "gpuc-jgc-demo-bookworm-" in listed and "gpuc-jgc-demo-cuda-12.2-" in listed, listed
    # A class's GPUs: two declared ones on a host without NVIDIA's (as here), one per user.
    assert "DEMO_SMOKE: GPUs: Demo GPU 0 (declared), Demo GPU 1 (declared)" in text, text
    assert "DEMO_SMOKE: a GPU kernel started: " in text, text
    # A start may wait for a GPU as long as the queue allows and still launch (60 s) before the
    # user's server stops waiting for the service's answer.
    waits = re.search(r"a start waits at most ([\d.]+) s; the server waits (\d+) s", text)
    assert waits, text
    assert float(waits.group(2)) >= float(waits.group(1)) + 60, waits.group(0)
    second = re.search(r"DEMO_SMOKE: a second GPU kernel: (\d+) (.*)", text)
    assert second and second.group(1) == "409", text
    assert "over the limit of 1 GPU per user" in second.group(2), second.group(2)
    # The demo's stop removed the kernels it caused, the GPU kernel's container with them.
    run = re.search(r"kernels carry (org\.jupyter\.gpu-containers\.demo-run=\S+)", text)
    assert run, text
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={run.group(1)}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert left.stdout.split() == [], f"the demo left kernel containers: {left.stdout}"
    # The demo's users exist, with their workspaces, and are not in the docker group: their
    # kernels came from the service alone.
    docker_members = set(grp.getgrnam("docker").gr_mem)
    for user in DEMO_USERS:
        account = pwd.getpwnam(user)
        assert os.stat(account.pw_dir).st_uid == account.pw_uid
        assert user not in docker_members
    # Everything it started is gone: no user's server left, nothing on its ports.
    for user in DEMO_USERS:
        assert _processes_of(user) == [], f"{user} still runs processes after the demo stopped"
    for port in (hub_port, service_port):
        probe = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert probe.stdout == "000", f"port {port} still answers after the demo stopped"
