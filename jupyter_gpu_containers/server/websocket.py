"""The kernel websocket: Nagle's algorithm off, the kernel's state told to every page that
connects, its channels known to be attached to a restarted kernel before the restart answers
(``iopub_reattached``), and a way to have pages reconnect after a restart the server makes on its
own (``close_kernel_websockets``).

jupyter_server's kernel websocket leaves TCP_NODELAY unset. A kernel answers a request with a
burst of small frames (status busy, the reply, status idle); with Nagle on, the server holds every
frame after the first until the client acknowledges it, and the client's TCP delays that
acknowledgement by up to 40 ms on Linux. benchmarks/ measured it: 45 ms of a kernel's ~50 ms first
reply on its websocket, and the same stall on every message burst after it. With the option
below the first reply takes ~5 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from jupyter_client.session import DELIM
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from tornado import web

from .._private import offline_buffer, open_kernel_websockets, send_kernel_status

# The msg_id prefix of the kernel_info requests that check a websocket's IOPub after a restart:
# the status messages they cause are not the page's, and are not sent to it.
PROBE_PREFIX = "jgc-iopub-probe-"
_PROBE_BYTES = PROBE_PREFIX.encode()
# How long a restart's answer waits for its websockets' IOPub (ZMQ reconnects every 100 ms: it
# takes a fraction of a second). Past it, something else is wrong, and the restart answers.
REATTACH_TIMEOUT = 10.0
# How often the probe is sent again while a websocket's IOPub has not seen it.
_PROBE_INTERVAL = 0.2
# What one page may send while its kernel (re)starts, which is held until the kernel can answer
# it (a restart that waits for a GPU may take an hour): beyond either bound a message is refused.
MAX_HELD_MESSAGES = 200
MAX_HELD_BYTES = 4 * 2**20


class NoDelayWebsocketConnection(ZMQChannelsWebsocketConnection):
    """jupyter_server's own ZMQ websocket connection, which sets TCP_NODELAY when it opens, and
    tells the page the kernel's state once it is connected.

    The state: a page that reconnects learns it from no one else. JupyterLab sends a
    kernel_info request on every (re)connection and ignores the status messages that answer it
    (they are "untracked"), so after a restart the server made (new GPUs, in place) its status
    stayed "Unknown" until the next cell ran. The state jupyter_server tracks from the kernel's
    own status messages is the truth, and saying it again to a page that knew it is harmless.
    """

    # Set once the connection forwards its kernel's messages (its connect's nudge is done).
    _forwarding = False
    # A restart's probe of this connection's IOPub: the probes' msg_ids and the future that
    # their first status message on this connection's IOPub resolves (iopub_reattached).
    _probe_ids: set[str] | None = None
    _probe_seen: asyncio.Future[None] | None = None
    # What the page sent while its kernel was (re)starting, held until the kernel can answer it
    # with its output reaching this page (release_held); None while nothing is held.
    _held: list[Any] | None = None
    _held_bytes = 0
    _releaser: asyncio.Future[None] | None = None
    # Set once the server closed this connection (close_kernel_websockets): until the page
    # hears the close, what it sends is kept for its reconnection.
    _closed_by_server = False
    _kept_after_close = 0
    _kept_bytes_after_close = 0
    # The uid of the kernel's owner on a shared server (the kernel service), whose bounds this
    # connection counts toward; None on a user's own server.
    _owner_uid: int | None = None
    # The buffered IOPub stream this connection takes over from jupyter_server's buffer on a
    # page's reconnection (connect), until its nudge; None otherwise.
    _restored_iopub: Any = None
    # Whether this connection's log named the bound on held messages that refused one.
    _refusal_logged = False

    async def prepare(self) -> None:
        """Admit the connection within its user's bound (a shared server), then as
        jupyter_server does."""
        self._admit()
        try:
            await super().prepare()
        except BaseException:
            self._leave()
            raise

    def _admit(self) -> None:
        """On a shared server each connection holds sockets to its kernel, and one user's pages
        may have at most GPUContainersKernelManager.max_websockets_per_user open (HTTP 429
        beyond it, with a sentence)."""
        manager = self.multi_kernel_manager
        owner_of = getattr(manager, "owner_of", None)
        owner = owner_of(self.kernel_id) if callable(owner_of) else None
        uid = getattr(owner, "uid", None)
        store = self._store()
        if not isinstance(uid, int) or store is None:
            return
        limit = int(getattr(manager, "max_websockets_per_user", 0) or 0)
        if not store.admit(uid, self, limit):
            # The answer is jupyter_server's: the option is named in the log alone.
            self.log.warning(
                "Kernel %s: a connection of uid %s refused, %d open already (setting: "
                "GPUContainersKernelManager.max_websockets_per_user)",
                self.kernel_id,
                uid,
                limit,
            )
            raise web.HTTPError(
                429,
                f"This kernel connection was refused: your pages have {limit} open already, "
                "the most one user may. Close the notebooks and tabs you no longer use.",
            )
        self._owner_uid = uid

    def _leave(self) -> None:
        store = self._store()
        if store is not None and self._owner_uid is not None:
            store.leave(self._owner_uid, self)

    def handle_incoming_message(self, incoming_msg: Any) -> None:
        """Pass the page's message on, unless its kernel is (re)starting: then it is held.

        A message sent while a restart waits (for a GPU, up to GPUQueue.max_wait) would wait in
        the shell socket's queue and run the moment the new kernel starts, before this page's
        IOPub listens to it again: the cell would get its reply but none of its output. Held here,
        it goes on once the restarted kernel's output reaches this page (iopub_reattached), in
        the order sent; the page shows the cell queued meanwhile. Bounded per page.

        Once the server has closed this connection, a message the page sent before it heard the
        close is kept for its reconnection, which sends it: held here, it would go with this
        connection, and passed on, its reply and output would come on a connection that no
        longer writes to the page (the cell then runs for ever on the page). Seen in a run when
        a cell was sent just as a cancelled wait's restart closed the page's connection."""
        store = self._store()
        closing = self._closed_by_server and store is not None
        if self._held is None and not closing and not self._kernel_starting():
            super().handle_incoming_message(incoming_msg)
            return
        size = len(incoming_msg)
        count, held_bytes = (
            (self._kept_after_close, self._kept_bytes_after_close)
            if closing
            else (len(self._held or ()), self._held_bytes)
        )
        if count >= MAX_HELD_MESSAGES or held_bytes + size > MAX_HELD_BYTES:
            self.write_stderr(
                "This message was not sent: the kernel is starting, and this page has sent "
                f"more than it may while it waits ({MAX_HELD_MESSAGES} messages, "
                f"{MAX_HELD_BYTES // 2**20} MiB). Run the cell again once the kernel has started.",
                self._header_of(incoming_msg),
            )
            return
        if store is not None and not store.charge(self._owner_uid, size, self._user_limit()):
            self.write_stderr(
                "This message was not sent: your kernels are starting, and your pages have "
                "sent more than one user may while they wait "
                f"({self._user_limit() // 2**20} MiB in all). Run the cell again once the "
                "kernel has started.",
                self._header_of(incoming_msg),
            )
            if not self._refusal_logged:  # once a connection: a page may send many
                self._refusal_logged = True
                self.log.warning(
                    "Kernel %s: a message of uid %s not sent, over what one user's pages may "
                    "hold while kernels start (setting: "
                    "GPUContainersKernelManager.held_messages_limit_per_user)",
                    self.kernel_id,
                    self._owner_uid,
                )
            return
        if closing and store is not None:
            store.keep(self.kernel_id, self.session_key, [incoming_msg], self._owner_uid, size)
            self._kept_after_close += 1
            self._kept_bytes_after_close += size
            return
        if self._held is None:
            self._held = []
            self._releaser = asyncio.ensure_future(self._release_eventually())
        self._held.append(incoming_msg)
        self._held_bytes += size

    def release_held(self) -> None:
        """Send on what was held while the kernel started, in the order it came."""
        self._refund()
        held, self._held, self._held_bytes = self._held, None, 0
        for message in held or ():
            if not self.channels:
                return  # closed meanwhile: what is left goes nowhere
            super().handle_incoming_message(message)

    def _kernel_starting(self) -> bool:
        """Whether the kernel is not ready for this page: it is starting, or the server's own
        restart of it has not finished. The new kernel is ready before that restart checked
        this page's IOPub and closed its connection; a cell sent in between ran with its output
        lost (its reply and final status came, its printout did not: seen in a CI run)."""
        ready = getattr(self.kernel_manager, "ready", None)
        if isinstance(ready, asyncio.Future) and not ready.done():
            return True
        store = self._store()
        return store is not None and self.kernel_id in store.restarting

    async def _release_eventually(self) -> None:
        """Send on what is held once the kernel runs and this page's IOPub hears it. A restart
        the server made closes its pages' connections once their IOPub heard the kernel
        (close_kernel_websockets): what is held then goes with the page's reconnection, which
        sends it once connected (a reply sent between the close and jupyter_server's buffering
        would be lost). Else (a restart jupyter_client's restarter made) this page's IOPub is
        checked here, and it is sent on this connection.

        While the server's restart goes on (its own check of the pages' IOPub, up to
        REATTACH_TIMEOUT, then the close), nothing is sent, however long that takes: sent before
        this page's IOPub hears the new kernel, a cell's reply comes (the shell socket queues it)
        and its output does not (a PUB socket drops what no one listens to yet). A run on a
        loaded machine lost a cell's output so, when a deadline here let go first. The restart
        ends, whatever happens (its context's finally), so nothing is held for ever."""
        while self._held is not None and self.channels:
            ready = getattr(self.kernel_manager, "ready", None)
            if isinstance(ready, asyncio.Future) and ready.done() and ready.exception() is None:
                break
            await asyncio.sleep(0.1)
        while self._held is not None and self.channels:
            if self.kernel_id in getattr(self._store(), "restarting", ()):
                await asyncio.sleep(0.1)
                continue
            await iopub_reattached(
                self.kernel_manager, self.kernel_id, lambda: bool(self.channels), [self]
            )
            self.release_held()
            return
        self.release_held()

    def keep_held_for_reconnection(self) -> None:
        """The server closes this connection (close_kernel_websockets): what it holds goes to
        the page's next connection with the same session, which sends it once connected."""
        store = self._store()
        self._closed_by_server = True
        if self._held and store is None:
            self.release_held()  # no one to keep them: sent now, as before the close
        elif self._held and store is not None:
            # Still the user's: they count toward the user's bound until taken or expired.
            store.keep(
                self.kernel_id, self.session_key, self._held, self._owner_uid, self._held_bytes
            )
        self._held, self._held_bytes = None, 0

    def _user_limit(self) -> int:
        return int(getattr(self.multi_kernel_manager, "held_messages_limit_per_user", 0) or 0)

    def _refund(self) -> None:
        store = self._store()
        if store is not None and self._held_bytes:
            store.refund(self._owner_uid, self._held_bytes)

    def _store(self) -> HeldMessages | None:
        store = getattr(self.multi_kernel_manager, "held_messages", None)
        return store if isinstance(store, HeldMessages) else None

    async def _send_kept_once_heard(self) -> None:
        """Send what was kept for this page, then what it sent since, once a probe's status
        reaches this connection's IOPub. jupyter_server's nudge says the same of a new stream,
        but a reconnection that takes over its buffered streams skips it (nudge), and a stream
        the restart's own check gave up on (REATTACH_TIMEOUT, on a loaded machine) may not hear
        the new kernel yet: a cell sent then got its reply and lost its output (seen in a run)."""
        try:
            await iopub_reattached(
                self.kernel_manager, self.kernel_id, lambda: bool(self.channels), [self]
            )
        finally:
            if self.channels:  # else what was kept waits for the page's next connection
                self._send_kept()
            self.release_held()

    def _send_kept(self) -> None:
        store = self._store()
        for message in store.take(self.kernel_id, self.session_key) if store is not None else ():
            if not self.channels:
                return
            super().handle_incoming_message(message)

    def _header_of(self, incoming_msg: Any) -> dict[str, Any]:
        try:
            if isinstance(incoming_msg, str):
                return dict(json.loads(incoming_msg).get("header") or {})
        except ValueError:
            pass
        return {}

    def connect(self) -> Any:
        handler = self.websocket_handler
        if getattr(handler, "ws_connection", None) is not None:
            handler.set_nodelay(True)
        # The IOPub stream a page's reconnection takes over (see nudge), when the server buffers
        # this session's messages: jupyter_server's connect hands it to this connection.
        buffered = offline_buffer(self.multi_kernel_manager, self.kernel_id)
        if buffered is not None and buffered.get("session_key") == self.session_key:
            self._restored_iopub = (buffered.get("channels") or {}).get("iopub")
        connected = super().connect()
        if isinstance(connected, asyncio.Future):
            connected.add_done_callback(self._tell_state)
        return connected

    def nudge(self) -> asyncio.Future[None]:
        """jupyter_server's nudge, except for a page's reconnection that takes over the streams
        its buffered messages came on (the kernel's ports unchanged): those are subscribed and
        receiving already, and the nudge's IOPub handler would take the first message that
        arrives on them, not forward it, and not buffer it. That message is the kernel's, often
        output: the last line a cell printed, or the "idle" that ends it (the page then shows
        the cell running for ever). Seen when a page came back just as a long cell ended."""
        restored, self._restored_iopub = self._restored_iopub, None
        iopub = self.channels.get("iopub")
        if restored is None or iopub is not restored or iopub.closed():
            return super().nudge()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def handle_outgoing_message(self, stream: Any, outgoing_msg: list[Any]) -> None:
        channel = stream if isinstance(stream, str) else getattr(stream, "channel", None)
        # A bytes search first: only a probe's status messages carry the prefix in their parent
        # header, and every other message goes on without being parsed once more.
        if channel == "iopub" and _PROBE_BYTES in _parent_header(outgoing_msg):
            self._probe_answered(outgoing_msg)
            return
        super().handle_outgoing_message(stream, outgoing_msg)

    def _probe_answered(self, outgoing_msg: list[Any]) -> None:
        """A probe's status message reached this connection's IOPub: it is subscribed to the
        restarted kernel. The message itself is not the page's."""
        try:
            _, parts = self.session.feed_identities(outgoing_msg)
            parent = self.session.unpack(parts[2])
        except Exception:
            return
        waiting, ids = self._probe_seen, self._probe_ids
        if waiting is not None and ids and parent.get("msg_id") in ids and not waiting.done():
            waiting.set_result(None)

    def expect_probes(self, ids: set[str]) -> asyncio.Future[None] | None:
        """A future resolved once a status message of one of the probes ``ids`` (the set grows
        as probes are sent) reaches this connection's IOPub; None when the connection does not
        forward messages (yet, or any more)."""
        iopub = self.channels.get("iopub")
        if not self._forwarding or iopub is None or iopub.closed():
            return None
        self._probe_ids = ids
        self._probe_seen = asyncio.get_running_loop().create_future()
        return self._probe_seen

    def disconnect(self) -> None:  # type: ignore[override]  # the ABC says async; it is not
        self._refund()
        self._held, self._held_bytes = None, 0  # for a kernel no page listens to any more
        self._leave()
        waiting = self._probe_seen
        if waiting is not None and not waiting.done():
            waiting.cancel()  # a restart waits for this connection no more
        super().disconnect()

    def _tell_state(self, connected: asyncio.Future[Any]) -> None:
        if connected.cancelled() or connected.exception() is not None:
            return
        self._forwarding = True
        # What the page sent before the server closed its last connection goes on once this
        # connection's IOPub hears the kernel (_send_kept_once_heard).
        store = self._store()
        if store is not None and store.has_kept(self.kernel_id, self.session_key):
            # Held meanwhile: what the page sends now goes after what it sent before.
            self._held = self._held if self._held is not None else []
            self._releaser = asyncio.ensure_future(self._send_kept_once_heard())
        state = getattr(self.kernel_manager, "execution_state", None)
        handler = self.websocket_handler
        if state in ("idle", "busy") and getattr(handler, "ws_connection", None) is not None:
            send_kernel_status(self, state)


class HeldMessages:
    """What a kernel manager keeps for its pages' connections (one per server, owned by
    GPUContainersKernelManager): the kernels whose restart it is making (a page's held
    messages wait for its end), and what pages sent while their kernel restarted, kept for
    their reconnection after the server closed their connections ((kernel id, session key) ->
    (when, messages)), each bounded as a connection's held messages are, a minute at most. The
    kernel id is part of the key: a session key is the page's to choose, and another user's
    page naming it must not receive what was kept for this one.

    On a shared server (the kernel service) it also counts, per user (uid), the bytes their
    pages' messages held or kept take, and their open connections, for the per-user bounds;
    a user's own server (uid None) counts neither."""

    KEPT_SECONDS = 60.0

    def __init__(self) -> None:
        self.restarting: set[str] = set()
        self._kept: dict[tuple[str, str], tuple[float, list[Any], int | None, int]] = {}
        self._held_bytes: dict[int, int] = {}
        self._connections: dict[int, weakref.WeakSet[Any]] = {}

    def charge(self, uid: int | None, size: int, limit: int) -> bool:
        """Count ``size`` more bytes held for user ``uid``; False (nothing counted) when that
        would pass ``limit`` (0: no bound)."""
        if uid is None:
            return True
        self._expire()  # what nobody came back for counts no more
        used = self._held_bytes.get(uid, 0)
        if limit > 0 and used + size > limit:
            return False
        self._held_bytes[uid] = used + size
        return True

    def refund(self, uid: int | None, size: int) -> None:
        if uid is None:
            return
        left = self._held_bytes.get(uid, 0) - size
        if left > 0:
            self._held_bytes[uid] = left
        else:
            self._held_bytes.pop(uid, None)

    def held_bytes(self, uid: int) -> int:
        return self._held_bytes.get(uid, 0)

    def admit(self, uid: int, connection: Any, limit: int) -> bool:
        """Count ``connection`` as one of user ``uid``'s; False (not counted) when they have
        ``limit`` open already (0: no bound). Weak: a connection that never opened goes when
        it is collected."""
        open_now = self._connections.setdefault(uid, weakref.WeakSet())
        if limit > 0 and len(open_now) >= limit:
            return False
        open_now.add(connection)
        return True

    def leave(self, uid: int, connection: Any) -> None:
        open_now = self._connections.get(uid)
        if open_now is not None:
            open_now.discard(connection)
            if not open_now:
                del self._connections[uid]

    def connections(self, uid: int) -> int:
        return len(self._connections.get(uid, ()))

    @contextlib.contextmanager
    def server_restart(self, kernel_id: str) -> Iterator[None]:
        """A restart the server makes (GPUContainersKernelManager.restart_kernel, and what its
        caller does at once after it: closing the pages' connections)."""
        self.restarting.add(kernel_id)
        try:
            yield
        finally:
            self.restarting.discard(kernel_id)

    def keep(
        self, kernel_id: str, session_key: str, messages: list[Any], uid: int | None, size: int
    ) -> None:
        """Keep ``messages`` (``size`` bytes, counted for ``uid`` already) for the reconnection
        of the page ``session_key`` of kernel ``kernel_id``."""
        self._expire()
        earlier = self._kept.pop((kernel_id, session_key), None)
        if earlier is not None:  # kept twice before a reconnection: in the order sent
            messages, size = earlier[1] + messages, earlier[3] + size
        self._kept[(kernel_id, session_key)] = (time.monotonic(), messages, uid, size)

    def has_kept(self, kernel_id: str, session_key: str) -> bool:
        self._expire()
        return (kernel_id, session_key) in self._kept

    def take(self, kernel_id: str, session_key: str) -> list[Any]:
        self._expire()
        kept = self._kept.pop((kernel_id, session_key), None)
        if kept is None:
            return []
        self.refund(kept[2], kept[3])
        return kept[1]

    def _expire(self) -> None:
        """Drop what was kept for pages that did not come back within KEPT_SECONDS, and its
        count toward its user's bound."""
        now = time.monotonic()
        for key, (since, _, owner, kept_size) in list(self._kept.items()):
            if now - since > self.KEPT_SECONDS:
                del self._kept[key]
                self.refund(owner, kept_size)


def _parent_header(msg_list: list[Any]) -> bytes:
    """The raw parent header of a message in ZMQ's framing (identities, delimiter, signature,
    header, parent header, …); b"" if it has none."""
    for i, part in enumerate(msg_list):
        if bytes(part) == DELIM:
            return bytes(msg_list[i + 3]) if len(msg_list) > i + 3 else b""
    return b""


async def iopub_reattached(
    km: Any,
    kernel_id: str,
    running: Callable[[], bool],
    connections: list[NoDelayWebsocketConnection] | None = None,
) -> None:
    """Return once every websocket attached to kernel ``kernel_id`` receives the restarted
    kernel's IOPub messages (or after REATTACH_TIMEOUT).

    A websocket's ZMQ sockets stay connected to the kernel's endpoints across a restart, and
    reconnect to the new kernel on ZMQ's own timer (every 100 ms), unaware of the restart. The
    restart answers once the new kernel answered the provisioner's own sockets; a request the page
    sends then waits in the shell socket's queue and is delivered when it reconnects, but IOPub is
    a PUB socket: whatever the kernel publishes before the websocket's SUB socket has reconnected
    and subscribed is dropped. The kernel ran the request and its reply came back, but its
    output and status did not (7 of 10 such requests, measured). So the restart answers only once
    each websocket's IOPub has received a status message of a probe (a kernel_info request on a
    shell socket of its own, sent again until seen; those messages are not sent to the pages).
    ``running``: whether the kernel is still there (a shutdown may come meanwhile).
    ``connections``: those to check (all of the kernel's by default).
    """
    ids: set[str] = set()
    waiting = [
        future
        for connection in (connections if connections is not None else open_kernel_websockets())
        if isinstance(connection, NoDelayWebsocketConnection)
        and getattr(connection, "kernel_id", None) == kernel_id
        and (future := connection.expect_probes(ids)) is not None
    ]
    if not waiting:
        return
    shell = km.connect_shell()
    deadline = time.monotonic() + REATTACH_TIMEOUT
    try:
        pending = set(waiting)
        while pending and running() and time.monotonic() < deadline:
            msg = km.session.msg("kernel_info_request")
            msg["header"]["msg_id"] = msg["msg_id"] = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
            ids.add(msg["msg_id"])
            km.session.send(shell, msg)
            _done, pending = await asyncio.wait(pending, timeout=_PROBE_INTERVAL)
        if pending and running():
            km.log.warning(
                "Kernel %s: %d websocket(s) did not receive the restarted kernel's messages "
                "within %.0f s.",
                kernel_id,
                len(pending),
                REATTACH_TIMEOUT,
            )
    finally:
        shell.close()
        for future in waiting:
            future.cancel()


# RFC 6455 "Service Restart": the client should reconnect (JupyterLab does so at once for any code
# but 1000 and 1001).
SERVICE_RESTART = 1012


def close_kernel_websockets(kernel_id: str, reason: str) -> int:
    """Close every open websocket of kernel ``kernel_id`` with code 1012 (Service Restart), so that
    each page reconnects; returns how many were closed.

    A restart that the server makes on its own (a notebook's GPUs changed in place) keeps the
    kernel's ports, so the pages' websockets stay attached through it and receive the new kernel's
    first ``status: starting``. JupyterLab ignores the status messages of the kernel_info requests
    that follow, so a page that saw it shows "Starting" until the next cell runs. A page restarts
    its connection itself only around the restarts it asks for. Once reconnected, the page is
    told the kernel's state (NoDelayWebsocketConnection), which it would not learn otherwise.
    """
    # jupyter_server keeps no public registry of open kernel websockets (_private.py). Without
    # one nothing is closed: pages then show a stale status, and nothing else is at stake.
    closed = 0
    for connection in open_kernel_websockets():
        if getattr(connection, "kernel_id", None) != kernel_id:
            continue
        handler = getattr(connection, "websocket_handler", None)
        if handler is None or getattr(handler, "ws_connection", None) is None:
            continue  # already closing
        if isinstance(connection, NoDelayWebsocketConnection):
            connection.keep_held_for_reconnection()
        handler.close(SERVICE_RESTART, reason[:120])
        closed += 1
    return closed


# RFC 6455 "Internal Error": the kernel behind the websocket is gone.
KERNEL_GONE = 1011


def end_kernel_websockets(kernel_id: str, sentence: str) -> int:
    """Tell every page on kernel ``kernel_id`` that it is dead and why (its status "dead" and the
    sentence on stderr), then close their websockets; returns how many."""
    closed = 0
    for connection in open_kernel_websockets():
        if getattr(connection, "kernel_id", None) != kernel_id:
            continue
        handler = getattr(connection, "websocket_handler", None)
        if handler is None or getattr(handler, "ws_connection", None) is None:
            continue
        try:
            connection.write_stderr(sentence, {})
            send_kernel_status(connection, "dead")
        except Exception:  # closing already: the close below still ends it
            pass
        handler.close(KERNEL_GONE, sentence[:120])
        closed += 1
    return closed
