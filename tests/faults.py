"""Fault injection for tests/test_faults.py: a switchable proxy in front of the real Docker
socket, and one assertion that nothing a kernel holds (container, GPU booking, private
directory, connection file) outlived it.

The proxy lets a test "stop dockerd" for one Jupyter server only: the engine itself, which other
test runs share, is never touched. Pointing the server's ``Engine.docker_url`` at the proxy's
socket, a test can

- ``stop()``: close the listener (the socket file stays, so a connect is refused, as with a
  stopped dockerd) and cut every open connection, event streams included;
- ``start()``: listen again (a dockerd that came back);
- ``cut_on(request, after=...)``: when a request line matches, drop that connection before the
  request reaches the engine, and stop, as a dockerd that died just then would look.

Threads, not asyncio: the proxy must keep forwarding while the test's event loop (which may run
the server itself) is busy, and it must never add its own stalls to that loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker

from jupyter_gpu_containers.base import labels as L

REAL_SOCKET = "/var/run/docker.sock"

# GPUs that only this file's tests use: other test files (maybe running at the same time on the
# same engine) book GPU-test-0..3, and a server treats bookings of servers it cannot see as
# garbage it may remove, so sharing ids would let two runs remove each other's kernels.
FAULT_GPUS = [
    {
        "index": i,
        "uuid": f"GPU-fault-{i}",
        "name": "Tesla T4",
        "brand": "tesla",
        "compute_capability": "7.5",
        "memory_total": 16 * 2**30,
    }
    for i in range(4)
]
FAULT_GPU_IDS = tuple(str(g["uuid"]) for g in FAULT_GPUS)


class EngineProxy:
    """A unix-socket proxy to the Docker engine that a test can stop, start and make cut."""

    def __init__(self, upstream: str = REAL_SOCKET) -> None:
        # Short, fixed-length path: pytest's tmp_path can exceed a unix socket's 108 bytes.
        self.dir = tempfile.mkdtemp(prefix="jgc-fault-", dir="/tmp")
        self.path = os.path.join(self.dir, "engine.sock")
        self.url = f"unix://{self.path}"
        self.upstream = upstream
        self.requests: list[str] = []  # request lines seen, in order
        self.cuts: list[str] = []  # request lines that were cut
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._rules: list[_Cut] = []
        self.start()

    # ---------------------------------------------------------------- switches

    @property
    def up(self) -> bool:
        return self._listener is not None

    def start(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(self.path)
            listener.listen(128)
            # accept() wakes up now and then to see whether the proxy was stopped: closing a
            # socket from another thread does not wake a thread blocked on it.
            listener.settimeout(0.1)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut the open ones, as a stopped dockerd does."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
        if listener is not None:
            # The file stays, so a connect is refused (ECONNREFUSED), as a stopped dockerd's
            # socket refuses it.
            listener.close()
        for conn in conns:
            _kill(conn)

    def cut_on(self, request: str, *, after: str | None = None, then_stop: bool = True) -> None:
        """Cut the connection carrying the first request whose request line matches the regex
        ``request`` (searched), once a request matching ``after`` has been seen (if given); the
        request never reaches the engine. With ``then_stop``, the engine then stays away until
        ``start()``."""
        with self._lock:
            self._rules.append(
                _Cut(re.compile(request), re.compile(after) if after else None, then_stop)
            )

    def reset(self) -> None:
        """Up, forwarding everything, with no rules and no history."""
        with self._lock:
            self._rules.clear()
            self.requests.clear()
            self.cuts.clear()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---------------------------------------------------------------- plumbing

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return  # stopped
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.upstream)
            except OSError:
                _kill(client)
                _kill(upstream)
                continue
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    _kill(client)
                    _kill(upstream)
                    return
                self._conns |= {client, upstream}
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._copy, args=(upstream, client), daemon=True).start()

    def _decide(self, line: str) -> _Cut | None:
        """Record a request line; the rule that cuts it, if one does."""
        with self._lock:
            self.requests.append(line)
            for rule in self._rules:
                if rule.after is not None and not rule.armed:
                    rule.armed = bool(rule.after.search(line))
                    continue
                if rule.request.search(line):
                    self._rules.remove(rule)
                    self.cuts.append(line)
                    return rule
        return None

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        """Client to engine, one HTTP request at a time, so each request line can be judged
        before it is forwarded. Bodies are forwarded by Content-Length; anything this does not
        parse (chunked uploads, upgraded connections) is passed through raw from then on."""
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = client.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, rest = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                cut = self._decide(lines[0])
                if cut is not None:
                    if cut.then_stop:
                        self.stop()  # before the client sees the cut: nothing gets through after
                    return
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (h.partition(":") for h in lines[1:])
                }
                upstream.sendall(head + b"\r\n\r\n")
                if "chunked" in headers.get("transfer-encoding", "").lower() or (
                    "upgrade" in headers.get("connection", "").lower()
                ):
                    upstream.sendall(rest)
                    self._copy(client, upstream)
                    return
                length = int(headers.get("content-length", "0") or 0)
                while len(rest) < length:
                    data = client.recv(65536)
                    if not data:
                        return
                    rest += data
                upstream.sendall(rest[:length])
                buf = rest[length:]
        except OSError:
            pass
        finally:
            self._forget(client, upstream)

    def _copy(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._forget(src, dst)

    def _forget(self, *socks: socket.socket) -> None:
        with self._lock:
            self._conns -= set(socks)
        for s in socks:
            _kill(s)


class _Cut:
    def __init__(self, request: re.Pattern[str], after: re.Pattern[str] | None, stop: bool) -> None:
        self.request, self.after, self.then_stop = request, after, stop
        self.armed = after is None


def _kill(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        s.close()


@contextlib.contextmanager
def engine_proxy() -> Iterator[EngineProxy]:
    proxy = EngineProxy()
    try:
        yield proxy
    finally:
        proxy.close()


# -------------------------------------------------------------------- leak assertion


def bookings(client: docker.DockerClient, gpu_ids: tuple[str, ...] = FAULT_GPU_IDS) -> list[str]:
    """ "<gpu uuid> <container name>" for every container on the engine (any test run, any
    server) whose labels book one of ``gpu_ids``."""
    found = []
    for c in client.containers.list(all=True, filters={"label": L.MANAGED}, ignore_removed=True):
        for uuid in c.labels.get(L.GPUS, "").split(","):
            if uuid in gpu_ids:
                found.append(f"{uuid} {c.name} ({c.status})")
    return sorted(found)


def leaks(
    client: docker.DockerClient,
    *,
    test_label: str,
    test_run: str,
    connection_root: Path | None = None,
    runtime_dir: Path | None = None,
    gpu_ids: tuple[str, ...] = FAULT_GPU_IDS,
) -> list[str]:
    """Everything a kernel of this test run left behind, as sentences ([] when nothing):
    containers of the run, GPU bookings of ``gpu_ids``, private directories under
    ``connection_root``, and the server's kernel connection files under ``runtime_dir``."""
    found = [
        f"container {c.name} ({c.status})"
        for c in client.containers.list(
            all=True, filters={"label": f"{test_label}={test_run}"}, ignore_removed=True
        )
    ]
    found += [f"GPU booking {b}" for b in bookings(client, gpu_ids)]
    if connection_root is not None and connection_root.exists():
        found += [f"private directory {p}" for p in sorted(connection_root.iterdir())]
    if runtime_dir is not None and runtime_dir.exists():
        found += [f"connection file {p}" for p in sorted(runtime_dir.glob("kernel-*.json"))]
    return found


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
