"""What another local account, or a kernel's own code, can reach on the kernel service's host.

Real parts: the service process as root, students outside the docker group, the shell-only
account (no login to the service at all), code running in a student's kernel, the real engine.

- A tcp kernel's ports would be published on the host's loopback, where every account connects,
  and IOPub needs no key to subscribe to: the service refuses tcp, and the shell-only account,
  listening on every port the host publishes, reads nothing of a student's kernel.
- A kernel's private directory (mounted writable at /run/jupyter-kernel) is a tmpfs of
  ContainerPolicy.private_dir_size: a notebook fills that, never the file system the service's
  runtime directory is on.
"""

from __future__ import annotations

import errno
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import CONDA_IMAGE, DEBIAN_IMAGE, kernel_container, kernel_name
from hostusers import BOB, MALLORY, as_user, needs_accounts
from kernel_io import execute
from servers import wait_until
from service_process import KernelService, ServiceUser

from jupyter_gpu_containers.base import labels as L

pytestmark = [needs_accounts, pytest.mark.usefixtures("docker_client")]

STUDENT = os.environ.get("JGC_TEST_STUDENT_A") or MALLORY
# A shell-only account: no token for the service, no docker group.
OUTSIDER = os.environ.get("JGC_TEST_OUTSIDER") or BOB
IPC_SPEC = kernel_name(DEBIAN_IMAGE)
TCP_SPEC = kernel_name(CONDA_IMAGE)  # the administrator's override asks tcp for this image
PRIVATE_DIR_SIZE = 4 * 1024 * 1024
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[KernelService, ServiceUser]]:
    made = KernelService(
        {
            "ContainerPolicy": {"private_dir_size": "4m"},
            "ContainerKernelSpecManager": {
                "image_overrides": {CONDA_IMAGE: {"provisioner": {"transport": "tcp"}}}
            },
        }
    )
    try:
        student = made.add_user(STUDENT)
        made.start()
        yield made, student
    finally:
        made.close()


async def run(service: KernelService, user: ServiceUser, kernel_id: str, code: str) -> Any:
    ws = await service.websocket(user, kernel_id)
    try:
        return await execute(ws, code)
    finally:
        ws.close()


async def shut_down(service: KernelService, user: ServiceUser, kernel_id: str) -> None:
    code, answer = await service.answer(user, "DELETE", f"api/kernels/{kernel_id}")
    assert code == 204, (code, answer)


# What any account can do on the host: `ps` shows every docker-proxy's -host-port, and a SUB
# socket needs no key. It subscribes to every port the host publishes (rescanning until told to
# stop on stdin), then says whether any message carried the secret (argv[1]).
SUBSCRIBE_TO_EVERY_PUBLISHED_PORT = r"""
import os, sys, threading, zmq
secret = sys.argv[1].encode()
def published():
    found = set()
    for pid in os.listdir("/proc"):
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if args[0].endswith(b"docker-proxy") and b"-host-port" in args:
            found.add(int(args[args.index(b"-host-port") + 1]))
    return found
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
context, poller, ports, seen = zmq.Context(), zmq.Poller(), set(), False
print("listening", flush=True)
while not stop.is_set():
    for port in sorted(published() - ports):
        ports.add(port)
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"tcp://127.0.0.1:{port}")
        poller.register(sub, zmq.POLLIN)
    for sub, _ in poller.poll(100):
        seen = seen or any(secret in frame for frame in sub.recv_multipart())
print("read the secret" if seen else "read nothing", "from", len(ports), "ports", flush=True)
"""


async def test_an_outsider_reads_no_students_kernel_output(
    service: tuple[KernelService, ServiceUser],
) -> None:
    made, student = service
    secret = f"api_key = {secrets.token_hex(8)!r}"
    outsider = subprocess.Popen(
        [*as_user(OUTSIDER), sys.executable, "-c", SUBSCRIBE_TO_EVERY_PUBLISHED_PORT, secret],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
    )
    assert outsider.stdin is not None and outsider.stdout is not None
    try:
        assert outsider.stdout.readline().strip() == "listening"
        # The administrator asked tcp for this image: the service refuses, in a sentence.
        code, refusal = await made.answer(student, "POST", "api/kernels", {"name": TCP_SPEC})
        assert code == 403, (code, refusal)
        assert "tcp transport" in refusal["message"], refusal
        assert "Use the ipc transport, the default" in refusal["message"], refusal
        code, kernels = await made.answer(student, "GET", "api/kernels")
        assert (code, kernels) == (200, []), kernels
        # The student's kernel: her code and its output, while the outsider listens.
        kernel_id = await made.start_kernel(student, IPC_SPEC)
        try:
            result = await run(
                made,
                student,
                kernel_id,
                f"import time\nfor _ in range(20):\n    print({secret!r}); time.sleep(0.05)",
            )
            assert result.stdout.count(secret) == 20, result
        finally:
            await shut_down(made, student, kernel_id)
    finally:
        said, _ = outsider.communicate(timeout=60)
    assert said.startswith("read nothing"), said


async def test_notebook_code_fills_its_private_directory_not_the_host(
    service: tuple[KernelService, ServiceUser], docker_client: docker.DockerClient
) -> None:
    made, student = service
    kernel_id = await made.start_kernel(student, IPC_SPEC)
    private = Path(kernel_container(docker_client, kernel_id).labels[L.CONNECTION_DIR])
    try:
        # Twice the limit, a MiB at a time: the write stops at the tmpfs's size.
        fill = (
            "import os\n"
            "fd = os.open('/run/jupyter-kernel/fill', os.O_WRONLY | os.O_CREAT, 0o600)\n"
            "written = 0\n"
            "try:\n"
            f"    for _ in range({2 * PRIVATE_DIR_SIZE // MIB}):\n"
            f"        written += os.write(fd, bytes({MIB}))\n"
            "    print('wrote', written)\n"
            "except OSError as e:\n"
            "    print('stopped', e.errno, written)\n"
        )
        said = (await run(made, student, kernel_id, fill)).stdout.split()
        assert said[:2] == ["stopped", str(errno.ENOSPC)], said
        assert int(said[2]) <= PRIVATE_DIR_SIZE, said
        # On the host: a file system of its own, of the configured size, not the root's.
        assert os.path.ismount(private)
        host = os.statvfs(private)
        assert host.f_blocks * host.f_frsize == PRIVATE_DIR_SIZE
        assert os.stat(private).st_dev != os.stat(private.parent).st_dev
        # The kernel still answers.
        assert (await run(made, student, kernel_id, "print(6 * 7)")).stdout.strip() == "42"
    finally:
        await shut_down(made, student, kernel_id)

    async def gone() -> bool:
        mounted = Path("/proc/self/mounts").read_text().split()
        return not private.exists() and str(private) not in mounted

    await wait_until(gone, 30, "the private directory's tmpfs unmounted and removed")
