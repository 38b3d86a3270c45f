"""Attacks on a Slurm kernel's ports (issue 61, finding 4: "anyone who reaches a Slurm node reads
every kernel on it"), as other real accounts on the node, against the real kernel service on the
project's real Slurm (tests/slurm_cluster.py) and the students' real rootless Podman.

A student's kernel runs as a Slurm job; while it prints a secret, another student and an account
outside every group connect to every tcp port the job's processes listen on (as ``ss`` lists
them) with plain ZMQ sockets of every type (SUB subscribed to everything, DEALER sending a
kernel_info_request signed with a guessed key, REQ), and with CurveZMQ clients that know the
relay's public key (a random keypair, and one claiming the kernel's own public key): they read
nothing (an hb echo of their own ping is all a Curve client gets), and the owner's kernel still
runs code, reads input(), is interrupted and restarted. The kernel offers no debugger (ipykernel's
debugpy would listen on the node's loopback). Extend this file for the next way in.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import select
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from hostusers import as_user, ids_of
from kernel_io import collect, execute, execute_request, send_execute
from service_process import KernelService
from slurm_cluster import SlurmCluster
from test_slurm_service import STUDENT_A, STUDENT_B, printed, slurm_service  # noqa: F401

from jupyter_gpu_containers.base.records import KERNEL_DIR_IN_CONTAINER, RELAY_CONFIG_NAME
from jupyter_gpu_containers.kernel.kernelspecs import kernel_name_for

OUTSIDER = os.environ.get("JGC_TEST_OUTSIDER", "")
ALICE_UID = ids_of(STUDENT_A)[0] if STUDENT_A else -1
DEBIAN_IMAGE = "jgc/debian-ipykernel:bookworm"

pytestmark = [
    pytest.mark.skipif(
        not STUDENT_A or not STUDENT_B or not OUTSIDER or os.getuid() != 0,
        reason="needs root, two student accounts and the outsider (scripts/test.sh)",
    ),
    pytest.mark.timeout(600),
]

# Run as another account: connect to every port (argv: the secret, the node's address, the
# ports as JSON, the relay's public key), each with plain sockets and with Curve clients, send
# what a client would, and say what came back once stdin closes. An exact echo of what a socket
# sent (hb echoes) is counted apart: it tells nothing of the kernel.
ATTACK = r"""
import hashlib, hmac, json, os, sys, threading, uuid, zmq
secret, host, server_key = sys.argv[1].encode(), sys.argv[2], sys.argv[4].encode()
ports = json.loads(sys.argv[3])
context, poller, sent = zmq.Context(), zmq.Poller(), {}
def kernel_info(key):
    header = {"msg_id": uuid.uuid4().hex, "msg_type": "kernel_info_request", "username": "m",
              "session": uuid.uuid4().hex, "date": "", "version": "5.3"}
    parts = [json.dumps(header).encode(), b"{}", b"{}", b"{}"]
    signature = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        signature.update(part)
    return [b"<IDS|MSG>", signature.hexdigest().encode(), *parts]
def keys(kind):
    public, secret_key = zmq.curve_keypair()
    if kind == "curve-claiming-the-kernels-key":
        public = server_key
    return public, secret_key
for port in ports:
    for kind in ("plain", "curve-random-key", "curve-claiming-the-kernels-key"):
        for socket_type in (zmq.SUB, zmq.DEALER, zmq.REQ):
            s = context.socket(socket_type)
            s.linger = 0
            if kind != "plain":
                s.curve_publickey, s.curve_secretkey = keys(kind)
                s.curve_serverkey = server_key
            if socket_type == zmq.SUB:
                s.setsockopt(zmq.SUBSCRIBE, b"")
            s.connect(f"tcp://{host}:{port}")
            poller.register(s, zmq.POLLIN)
            if socket_type == zmq.DEALER:
                sent[s] = kernel_info(os.urandom(16).hex().encode())
                s.send_multipart(sent[s])
            elif socket_type == zmq.REQ:
                sent[s] = [b"ping"]
                s.send_multipart(sent[s])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
print("connected", flush=True)
read, echoes = [], 0
while not stop.is_set():
    for s, _ in poller.poll(100):
        frames = s.recv_multipart()
        if frames == sent.get(s):
            echoes += 1
        else:
            read.append(frames)
said = {"read": len(read), "secret": any(secret in f for m in read for f in m),
        "ports": len(ports), "echoes": echoes, "first": repr(read[:1])[:300]}
print(json.dumps(said), flush=True)
"""

_PIDS = re.compile(r"pid=(\d+)")


def listening_ports(private: Path) -> set[int]:
    """Every tcp port a process of the kernel's container listens on, as ``ss`` lists them: the
    processes that see the kernel's private directory at KERNEL_DIR_IN_CONTAINER."""
    out = subprocess.run(
        ["ss", "-H", "-l", "-t", "-n", "-p"], capture_output=True, text=True, check=True
    ).stdout
    mine = private.stat()
    found = set()
    for line in out.splitlines():
        for pid in _PIDS.findall(line):
            try:
                seen = os.stat(f"/proc/{pid}/root{KERNEL_DIR_IN_CONTAINER}")
            except OSError:
                continue
            if (seen.st_dev, seen.st_ino) == (mine.st_dev, mine.st_ino):
                found.add(int(line.split()[3].rsplit(":", 1)[1]))
    return found


class Attackers:
    """The attack, as each account at once; what each read."""

    def __init__(self, accounts: list[str], secret: str, ports: set[int], key: str) -> None:
        self.processes = [
            subprocess.Popen(
                [
                    *as_user(account),
                    sys.executable,
                    "-c",
                    ATTACK,
                    secret,
                    "127.0.0.1",
                    json.dumps(sorted(ports)),
                    key,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                cwd="/",
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            )
            for account in accounts
        ]
        try:
            for process in self.processes:
                assert process.stdout is not None
                ready, _, _ = select.select([process.stdout], [], [], 60)
                assert ready, "the attacker did not connect within 60 s"
                line = process.stdout.readline().strip()
                assert line == "connected", line + process.stdout.read()
        except BaseException:
            self.stop()
            raise

    def results(self) -> list[dict[str, Any]]:
        said = []
        for process in self.processes:
            out, _ = process.communicate(timeout=60)
            said.append(json.loads(out.strip().splitlines()[-1]))
        return said

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(10)


async def answer_input(ws: Any, msg_id: str, value: str) -> None:
    """Until the request ``msg_id`` asks for input on stdin: answer it with ``value``."""
    while True:
        raw = await asyncio.wait_for(ws.read_message(), 60)
        if raw is None:
            raise ConnectionError("kernel websocket closed")
        msg = json.loads(raw)
        if msg["msg_type"] == "input_request" and msg["parent_header"]["msg_id"] == msg_id:
            break
    reply = {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": "input_reply",
            "username": "test",
            "session": msg["header"]["session"],
            "date": "",
            "version": "5.3",
        },
        "parent_header": msg["header"],
        "metadata": {},
        "content": {"value": value, "status": "ok"},
        "channel": "stdin",
        "buffers": [],
    }
    await ws.write_message(json.dumps(reply))


async def debugger_started(ws: Any) -> dict[str, Any]:
    """The kernel's answer to JupyterLab's first debugger request (DAP "initialize", on the
    control channel), which has ipykernel start debugpy where it has it."""
    request = execute_request("", uuid.uuid4().hex)
    request["header"]["msg_type"] = "debug_request"
    request["channel"] = "control"
    request["content"] = {
        "type": "request",
        "seq": 1,
        "command": "initialize",
        "arguments": {"clientID": "test", "adapterID": "python", "pathFormat": "path"},
    }
    await ws.write_message(json.dumps(request))

    async def reply() -> dict[str, Any]:
        while True:
            raw = await ws.read_message()
            if raw is None:
                raise ConnectionError("kernel websocket closed")
            msg = json.loads(raw)
            if (
                msg["msg_type"] == "debug_reply"
                and msg["parent_header"].get("msg_id") == request["header"]["msg_id"]
            ):
                return dict(msg["content"] or {})

    return await asyncio.wait_for(reply(), 60)


def test_no_other_account_on_the_node_reads_or_reaches_a_students_kernel(
    slurm_service: KernelService,  # noqa: F811
    slurm_cluster: SlurmCluster,
) -> None:
    service = slurm_service
    alice = service.users[STUDENT_A]
    name = kernel_name_for(DEBIAN_IMAGE)
    notes = service.home / "ws" / STUDENT_A / "notes"
    session = str(notes / f"ports-{secrets.token_hex(4)}.ipynb")
    secret = f"api_key = {secrets.token_hex(8)!r}"

    def private_dir() -> Path:
        (found,) = [
            p.parent
            for p in (service.home).rglob(RELAY_CONFIG_NAME)
            if p.parent.stat().st_uid == ALICE_UID
        ]
        return found

    async def attacked(ws: Any) -> None:
        """Every port the job listens on, attacked while the kernel prints the secret."""
        private = private_dir()
        ports = listening_ports(private)
        assert len(ports) >= 5, ports
        relay = private / RELAY_CONFIG_NAME
        # The kernel's keys: its user's alone.
        assert relay.stat().st_mode & 0o777 == 0o600 and relay.stat().st_uid == ALICE_UID
        public = json.loads(relay.read_text())["public_key"]
        attackers = Attackers([OUTSIDER, STUDENT_B], secret, ports, public)
        try:
            result = await execute(
                ws,
                f"import time\nfor _ in range(20):\n    print({secret!r}); time.sleep(0.05)",
                timeout=60,
            )
            assert result.stdout.count(secret) == 20, result
            said = attackers.results()
        finally:
            attackers.stop()
        for account, what in zip([OUTSIDER, STUDENT_B], said):
            assert what["ports"] == len(ports), (account, what)
            assert what["read"] == 0 and not what["secret"], (account, what)
            # Its sockets reached live ports: a Curve client's ping on hb comes back (hb admits
            # any Curve client, and only echoes).
            assert what["echoes"] > 0, (account, what)

    async def scenario() -> None:
        kernel_id = await service.start_kernel(
            alice,
            name,
            {"JPY_SESSION_NAME": session, "KERNEL_WORKING_DIR": str(notes)},
        )
        ws = await service.websocket(alice, kernel_id)
        try:
            await attacked(ws)
            # No debugger: ipykernel's debugpy would listen on the node's 127.0.0.1, which
            # every account on the node reaches, and run what any client there asks.
            before = listening_ports(private_dir())
            started = await debugger_started(ws)
            assert started.get("success") is not True, started
            assert listening_ports(private_dir()) == before
            # input() through stdin: the relay routes the kernel's request to this client.
            request = execute_request("x = input('code? ')\nprint('got', x)", uuid.uuid4().hex)
            request["content"]["allow_stdin"] = True
            await ws.write_message(json.dumps(request))
            msg_id = request["header"]["msg_id"]
            await answer_input(ws, msg_id, "four-two")
            got = await collect(ws, msg_id, timeout=60)
            assert got.stdout.strip() == "got four-two", got
            # An interrupt reaches the kernel, not the relay: the kernel goes on answering.
            msg_id = await send_execute(
                ws, "import time\nprint('sleeping', flush=True)\ntime.sleep(120)", False
            )
            await printed(ws, msg_id, "sleeping")
            code, _ = await service.answer(alice, "POST", f"api/kernels/{kernel_id}/interrupt")
            assert code == 204
            interrupted = await collect(ws, msg_id, timeout=30)
            assert interrupted.ename == "KeyboardInterrupt", interrupted
            assert (await execute(ws, "print(6 * 7)", timeout=60)).stdout.strip() == "42"
        finally:
            ws.close()
        # Restarted: a new relay on new ports, as closed as the first.
        code, _ = await service.answer(alice, "POST", f"api/kernels/{kernel_id}/restart")
        assert code == 200
        ws = await service.websocket(alice, kernel_id)
        try:
            await attacked(ws)
        finally:
            ws.close()
        code, _ = await service.answer(alice, "DELETE", f"api/kernels/{kernel_id}")
        assert code == 204

    asyncio.run(scenario())
