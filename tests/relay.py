"""A TCP relay: connections to ``listen_host:port`` are passed to ``target``, both ways.

The test cluster runs no kube-proxy and no cluster DNS, so a pod cannot reach what the host serves
on loopback (the apiserver, a Hub). A relay on the node's bridge address stands in for the
Service that would route there on a real cluster; it listens only on that address. With a
function for its target, it asks where each new connection goes (None: refused), as kube-proxy
follows a Service's ready endpoints."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

Target = Callable[[], "tuple[str, int] | None"]


class TcpRelay:
    def __init__(
        self,
        listen_host: str,
        target_host: str = "",
        target_port: int = 0,
        *,
        target: Target | None = None,
    ) -> None:
        fixed = (target_host, target_port)
        self._target: Target = target if target is not None else (lambda: fixed)
        self._server = socket.create_server((listen_host, 0))
        self.host, self.port = self._server.getsockname()[:2]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="tcp-relay", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            try:
                where = self._target()
                if where is None:
                    raise OSError("no target now")
                upstream = socket.create_connection(where, timeout=10)
                upstream.settimeout(None)
            except Exception:
                client.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._open.update((client, upstream))
            threading.Thread(target=self._serve, args=(client, upstream), daemon=True).start()

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        back = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        back.start()
        self._pump(client, upstream)
        back.join()
        with self._lock:
            self._open.difference_update((client, upstream))
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.close()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            # This direction ended: pass the half-close on; the other may still be answering.
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets = list(self._open)
            self._open.clear()
        # shutdown() wakes the accept() blocked in the thread; close() alone would not.
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._server.close()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> TcpRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
