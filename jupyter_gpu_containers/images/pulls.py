"""Image pulls with progress that several clients can watch, join and cancel.

A pull is long (NGC images are 10 to 20 GB), so it runs on its own thread, reading the engine's
progress stream, and never on the event loop or the engine's shared call pool. Each progress
message updates one :class:`Pull`; watchers get whole snapshots (phase, per-layer and total bytes),
so a browser that joins late, or reconnects, needs no history. A second request for an image that
is already being pulled joins that pull instead of starting another.

Everything is bounded: at most ``max_concurrent`` pulls run (each on one thread), at most
``max_queued`` wait for a slot (as entries in a queue, with no thread; one more is refused with
429), and at most ``max_watchers`` progress streams are open. A queued pull is cancelled at once.
On a kernel service every user's share is bounded too (``max_per_user`` pulls under way or
waiting, ``ENDED_KEPT_PER_USER`` ended pulls kept; their progress streams are counted with
their other event streams, server/event_streams.py), and a free slot goes to the waiting pull
of a user with the fewest running: one student cannot hold the queue.

A pull never replaces a locally built image (a tag with no registry digest), and a pull made with
the user's own registry login is recorded as theirs (privateimages.py).

Launches never pull (an image that is not local fails at once), so pull time can never count
against a kernel's launch timeout.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from traitlets import Float, Int
from traitlets.config import LoggingConfigurable

from ..backends.backend import ContainerBackend, PullProgress
from ..base import labels as L
from ..base.errors import ContainerKernelError, ImageMissing, ImageNotAllowed, Refusal
from ..base.references import ImageReference, parse_reference
from ..host.hoststate import StateDir
from ..policy.admin_policy import ContainerPolicy, check_image_allowed
from . import named, privateimages
from .credentials import Credential, RegistryCredentials, scrub

ACTIVE = ("queued", "pulling")
ENDED = ("done", "error", "cancelled")
# Ended pulls kept for their users to read, per user: the newest (each holds its layers' table).
ENDED_KEPT_PER_USER = 16

# Engine status text -> a layer's phase. "Already exists" layers are local: they add nothing to
# download, but count as complete.
_LAYER_PHASES = {
    "pulling fs layer": "waiting",
    "waiting": "waiting",
    "downloading": "downloading",
    "verifying checksum": "downloaded",
    "download complete": "downloaded",
    "extracting": "extracting",
    "pull complete": "complete",
    "already exists": "exists",
}


# Why a user's pull is refused where ContainerPolicy.allow_user_pulls is off (the pull itself and
# GET /gpu-containers/status's pull_refusal say the same).
PULLS_TURNED_OFF = Refusal(
    "Pulling images is turned off on this server: ask an administrator to pull the image for you.",
    "ContainerPolicy.allow_user_pulls",
)


@dataclass
class Layer:
    id: str
    phase: str = "waiting"
    downloaded: int = 0
    extracted: int = 0
    size: int = 0  # bytes to download, once the engine says

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "phase": self.phase,
            "downloaded": self.downloaded,
            "extracted": self.extracted,
            "size": self.size,
        }


@dataclass
class Pull:
    id: str
    image: str  # the reference as the user asked for it, normalised
    registry: str
    state: str = "queued"  # queued, pulling, done, error, cancelled
    phase: str = "resolving"  # resolving, downloading, extracting, complete
    layers: dict[str, Layer] = field(default_factory=dict)
    message: str = ""  # the engine's last status line, or the error sentence
    error_status: int = 0
    started: float = field(default_factory=time.time)
    finished: float = 0.0
    digest: str = ""
    watchers: set[asyncio.Queue[dict[str, Any] | None]] = field(default_factory=set)
    stream: PullProgress | None = None
    cancel_requested: bool = False
    # Whose pull: a kernel service's user name ("" on a user's own server). Others see none of it.
    whose: str = ""
    # A pre-pull the administrator scheduled (prepull.py): the admin's registry login only.
    scheduled: bool = False
    # When the engine last said anything of it (time.monotonic()), and whether it was stopped
    # for saying nothing for PullManager.stall_timeout.
    last_progress: float = 0.0
    stalled: bool = False
    done_event: asyncio.Event = field(default_factory=asyncio.Event)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> dict[str, Any]:
        # The pull's thread changes the layers while the loop reads them: one at a time.
        with self.lock:
            return self._snapshot()

    def _snapshot(self) -> dict[str, Any]:
        sized = [layer for layer in self.layers.values() if layer.phase != "exists"]
        total = sum(layer.size for layer in sized)
        downloaded = sum(
            layer.size
            if layer.phase in ("downloaded", "extracting", "complete")
            else layer.downloaded
            for layer in sized
        )
        return {
            "id": self.id,
            "image": self.image,
            "registry": self.registry,
            "state": self.state,
            "phase": self.phase,
            "message": self.message,
            "error_status": self.error_status,
            "layers": [layer.to_dict() for layer in self.layers.values()],
            "total_bytes": total,
            "downloaded_bytes": downloaded,
            "extracted_layers": sum(
                layer.phase in ("complete", "exists") for layer in self.layers.values()
            ),
            "progress": min(1.0, round(downloaded / total, 4))
            if total
            else (1.0 if self.state == "done" else 0.0),
            "digest": self.digest,
            "started": self.started,
            "finished": self.finished,
        }

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one engine progress message into the pull's state (the pull's thread)."""
        with self.lock:
            self._apply(event)

    def _apply(self, event: dict[str, Any]) -> None:
        status = str(event.get("status", ""))
        layer_id = event.get("id")
        detail = event.get("progressDetail") or {}
        phase = _LAYER_PHASES.get(status.lower())
        if layer_id and phase:
            layer = self.layers.setdefault(layer_id, Layer(layer_id))
            layer.phase = phase
            current, total = int(detail.get("current") or 0), int(detail.get("total") or 0)
            if phase == "downloading":
                layer.downloaded = current
                layer.size = total or layer.size
            elif phase == "extracting":
                layer.extracted = current
                layer.size = layer.size or total
        elif status.startswith("Digest:"):
            self.digest = status.split(":", 1)[1].strip()
        if status and not layer_id:
            self.message = status
        phases = {layer.phase for layer in self.layers.values()}
        if "extracting" in phases or ("downloaded" in phases and "downloading" not in phases):
            self.phase = "extracting"
        elif phases & {"downloading", "waiting"}:
            self.phase = "downloading"
        elif phases and phases <= {"complete", "exists"}:
            self.phase = "complete"


class TooManyRequests(ContainerKernelError):
    status = 429
    reason_phrase = "Too many requests"


class ReplacesLocalImage(ContainerKernelError):
    status = 409
    reason_phrase = "Pull would replace a local image"


@dataclass
class _Job:
    """What a pull's thread needs, kept while the pull waits for a slot."""

    pull: Pull
    ref: ImageReference
    given: Credential | None
    private: bool
    loop: asyncio.AbstractEventLoop
    # A kernel service's user: their name and (uid, gid), whose private record it writes.
    whose: str = ""
    owner: tuple[int, int] | None = None
    scheduled: bool = False


class PullManager(LoggingConfigurable):
    """The server's pulls: start or join, watch, cancel."""

    max_concurrent = Int(
        2,
        config=True,
        help="""Pulls that run at once; more wait in a queue (state "queued"). The engine
        downloads several layers of each pull in parallel already.""",
    )

    max_queued = Int(
        8,
        config=True,
        help="""Pulls that may wait for a slot (state "queued", no thread each). One more is
        refused with 429 and a sentence.""",
    )

    max_watchers = Int(
        16,
        config=True,
        help="""Progress streams (GET /gpu-containers/pulls/<id>/events) open at once on this
        server, all pulls together. One more is refused with 429.""",
    )

    max_per_user = Int(
        2,
        config=True,
        help="""On a kernel service: pulls one user may have running or waiting at once (the
        administrator's scheduled pre-pulls are nobody's and do not count). One more is refused
        with 429 and a sentence. A free slot goes to the waiting pull of the user with the fewest
        running. A user's own server is bounded by max_concurrent and max_queued alone.""",
    )

    stall_timeout = Float(
        600.0,
        config=True,
        help="""Seconds a running pull may go without a word from the engine (a registry that
        stops sending, or never sends the image's manifest) before it is stopped, as an error
        with a sentence, and its slot given to the next. 0: no bound. Only on an engine whose
        pulls report their bytes as they arrive (Docker): podman says nothing while a large
        layer downloads, and its pulls end by their user's or an administrator's cancel.""",
    )

    keep_finished = Float(
        600.0,
        config=True,
        help="Seconds a finished, failed or cancelled pull stays listed for clients to read.",
    )

    progress_interval = Float(
        0.25,
        config=True,
        help="""Least seconds between two progress snapshots sent to watchers (phase changes and
        the end are always sent at once). The engine sends many messages per second per layer.""",
    )

    def __init__(
        self,
        *,
        backend: ContainerBackend,
        credentials: RegistryCredentials,
        policy: ContainerPolicy,
        state: Callable[[], StateDir],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # The server's (services.py): the engine, its users' logins, the admin's policy, and
        # the host state directory (opened when first needed).
        self.backend = backend
        self.credentials = credentials
        self.policy = policy
        self._state = state
        self._pulls: dict[str, Pull] = {}
        # On the event loop only: the waiting pulls, how many run, how many streams are open.
        self._queue: collections.deque[_Job] = collections.deque()
        self._running = 0
        self._watching = 0
        self._running_by: collections.Counter[str] = collections.Counter()  # whose -> running

    # ------------------------------------------------------------------ API for handlers

    def get(self, pull_id: str, whose: str = "") -> Pull | None:
        pull = self._pulls.get(pull_id)
        return pull if pull is not None and pull.whose == whose else None

    def listing(self, whose: str = "") -> list[dict[str, Any]]:
        self._forget_old()
        return [p.snapshot() for p in self._pulls.values() if p.whose == whose]

    async def start(
        self,
        image: str,
        credential: Credential | None = None,
        whose: str = "",
        owner: tuple[int, int] | None = None,
        scheduled: bool = False,
    ) -> Pull:
        """Start pulling ``image``, or join this user's pull of it that is already running.

        ``credential``, when given, is used for this pull only (and kept nowhere); else the
        store's credential for the image's registry, if any. ``whose`` and ``owner``: a kernel
        service's user (name; uid and gid); "" and None on a user's own server. ``scheduled``:
        the administrator's pre-pull (prepull.py), which ContainerPolicy.allow_user_pulls does
        not stop, and which uses the administrator's registry login only, never a user's."""
        try:
            ref = parse_reference(image)
        except ValueError as e:
            raise ContainerKernelError(str(e), status=400) from e
        if ref.repository == "library/sha256":
            # "sha256:2c4e…" reads as a repository and tag, and the engine's inspect of it as
            # an image id's prefix: the pull's own looks at the host would resolve an id
            # (images/named.py). No registry serves such a name.
            raise ContainerKernelError(
                f"{image[:200]} is an image id, not a reference: pull an image by its "
                "repository and tag (or digest).",
                status=400,
            )
        policy = self.policy
        if not policy.allow_user_pulls and not scheduled:
            raise ImageNotAllowed(PULLS_TURNED_OFF.sentence, setting=PULLS_TURNED_OFF.setting)
        check_image_allowed(policy, ref.written)
        for pull in self._pulls.values():
            if (
                pull.image == ref.written
                and pull.state in ACTIVE
                and pull.whose == whose
                and pull.scheduled == scheduled
            ):
                return pull
        if whose and not scheduled:
            mine = sum(
                1
                for pull in self._pulls.values()
                if pull.whose == whose and pull.state in ACTIVE and not pull.scheduled
            )
            if mine >= max(0, self.max_per_user):
                raise TooManyRequests(
                    f"You have {mine} pulls under way or waiting on this server, as many as "
                    "it takes from one user. Wait for one to finish, or cancel one, before you "
                    "pull another image.",
                    setting="PullManager.max_per_user",
                )
        if self._running >= self.max_concurrent and len(self._queue) >= self.max_queued:
            raise TooManyRequests(
                f"{self._running} pulls are running and {len(self._queue)} waiting on this "
                "server, as many as it takes. Try again when one has finished.",
                setting="PullManager.max_queued",
            )
        await self._refuse_replacing_local(ref)
        own = credential or (
            None if scheduled else self.credentials.user_credential(ref.registry, whose)
        )
        # Kept private by this project where the engine's images are every user's to see.
        private = own is not None and own.source == "user" and self.backend.images_shared
        if private:
            state = await asyncio.to_thread(self._state)
            if not state.shared:
                raise ImageNotAllowed(
                    "Pulls with your own registry login are kept private to you, which needs "
                    f"the host state directory: {state.problem}",
                    setting=state.problem_setting,
                )
        pull = Pull(
            id=uuid.uuid4().hex,
            image=ref.written,
            registry=ref.registry,
            whose=whose,
            scheduled=scheduled,
        )
        self._pulls[pull.id] = pull
        loop = asyncio.get_running_loop()
        job = _Job(pull, ref, credential, private, loop, whose, owner, scheduled)
        self._queue.append(job)
        self._dispatch()
        return pull

    async def _refuse_replacing_local(self, ref: ImageReference) -> None:
        """A tag whose image came from no registry (built here: no repository digest) is never
        replaced by a pull: whoever controls the registry a reference resolves to would
        otherwise decide what a local kernel spec runs."""
        # From the listing of tagged images (images/named.py), never the engine's resolution of
        # a user's text, which reads "sha256:2c4e" as an image id's prefix (issue 61).
        local = named.find(await self.backend.list_images(), ref.written)
        if local is None:
            return
        if not local.repo_digests:
            raise ReplacesLocalImage(
                f"{ref.written} is an image built on this host, not pulled from a registry, and "
                "a pull would replace it. Give the image you want another name, or ask an "
                "administrator to remove the local one."
            )

    def close(self) -> None:
        """Stop every pull: those waiting for a slot end at once, those under way end as
        cancelled, their threads as soon as the engine's stream is closed (services.py)."""
        for job in list(self._queue):
            self.cancel(job.pull)
        for pull in self._pulls.values():
            if pull.state not in ENDED:
                self.cancel(pull)

    def _dispatch(self) -> None:
        """Give free slots to waiting pulls (on the event loop): in arrival order, a pull of a
        user with the fewest running first, so one user's queued pulls never hold the others'
        back."""
        while self._queue and self._running < self.max_concurrent:
            running = self._running_by
            job = min(self._queue, key=lambda j: running[j.whose] if j.whose else 0)
            self._queue.remove(job)
            self._launch(job)

    def _launch(self, job: _Job) -> None:
        self._running += 1
        self._running_by[job.whose] += 1
        job.pull.last_progress = time.monotonic()
        if self.stall_timeout > 0 and self.backend.pulls_report_bytes:
            job.loop.call_later(self.stall_timeout, self._check_stall, job.pull)
        threading.Thread(
            target=self._run,
            args=(job,),
            name=f"gpu-containers-pull-{job.pull.id[:8]}",
            daemon=True,
        ).start()

    def _check_stall(self, pull: Pull) -> None:
        """On the loop, ``stall_timeout`` after the engine last spoke of ``pull`` (as far as
        this call knew): stopped if it has said nothing since, else looked at again then."""
        if pull.state in ENDED or pull.cancel_requested:
            return
        quiet = time.monotonic() - pull.last_progress
        if quiet >= self.stall_timeout:
            pull.stalled = True
            self.log.warning(
                "Pull of %s stopped: the engine said nothing of it for %.0f s.", pull.image, quiet
            )
            self.cancel(pull)
            return
        asyncio.get_running_loop().call_later(self.stall_timeout - quiet, self._check_stall, pull)

    def cancel(self, pull: Pull) -> None:
        pull.cancel_requested = True
        for job in self._queue:
            if job.pull is pull:  # waiting: cancelled at once, it never started
                self._queue.remove(job)
                pull.state, pull.message = "cancelled", f"The pull of {pull.image} was cancelled."
                pull.finished = time.time()
                self._publish(pull, pull.snapshot())
                pull.done_event.set()
                return
        stream = pull.stream
        if stream is not None:
            stream.close()  # wakes the pull's thread, which then reports "cancelled"

    def subscribe(self, pull: Pull) -> asyncio.Queue[dict[str, Any] | None]:
        """A queue of ``pull``'s snapshots: the current one at once, then each change; the last
        one has an ended state. Call :meth:`unsubscribe` when done with it."""
        if self._watching >= self.max_watchers:
            raise TooManyRequests(
                f"{self._watching} progress streams are open on this server, as many as it "
                "serves. Close one, or read the pull's state with GET instead.",
                setting="PullManager.max_watchers",
            )
        self._watching += 1
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        queue.put_nowait(pull.snapshot())
        if pull.state not in ENDED:
            pull.watchers.add(queue)
        return queue

    def unsubscribe(self, pull: Pull, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._watching -= 1
        pull.watchers.discard(queue)

    async def wait(self, pull: Pull) -> None:
        await pull.done_event.wait()

    # ------------------------------------------------------------------ the pull's thread

    def _run(self, job: _Job) -> None:
        pull, ref, given, loop = job.pull, job.ref, job.given, job.loop
        credentials, policy = self.credentials, self.policy
        secrets: list[str] = [given.password] if given else []

        def publish() -> None:
            loop.call_soon_threadsafe(self._publish, pull, pull.snapshot())

        state = self._state() if job.private else None
        before = ""
        try:
            if pull.cancel_requested:
                raise _Cancelled
            pull.state = "pulling"
            publish()
            if state is not None:
                before = self._image_id_or_empty(ref.written)
                # Recorded before the pull starts: others never see it, not even for a moment.
                privateimages.record(state, ref.written, owner=job.owner, before=before)
            if given is not None:
                credential: Credential | None = given
            elif job.scheduled:
                credential = credentials.admin_credential(ref.registry)
            else:
                credential = credentials.for_registry(ref.registry, job.whose)
            # Only what this pull sent: another user's password scrubbed from this user's
            # sentences would tell them, by the dots, which text they guessed was one.
            if credential is not None:
                secrets.append(credential.password)
            who = credential.username if credential else ""
            stream = self.backend.open_pull(
                ref.name,
                ref.pull_tag,
                credential.auth_config() if credential else None,
                registry=ref.registry,
                who=who,
            )
            pull.stream = stream
            if pull.cancel_requested:  # cancelled while the request was being made
                stream.close()
            last_sent, last_phase = 0.0, pull.phase
            for event in stream:
                pull.apply(event)
                now = pull.last_progress = time.monotonic()
                if pull.phase != last_phase or now - last_sent >= self.progress_interval:
                    last_sent, last_phase = now, pull.phase
                    publish()
            if pull.cancel_requested:
                raise _Cancelled
            self._check_pins(pull, ref, policy)
            if state is not None:
                after = self._image_id_or_empty(ref.written)
                if after and after != before:
                    privateimages.record(state, ref.written, after, job.owner)
                else:  # it was here already, pulled by someone else: not this user's alone
                    privateimages.forget(state, ref.written, job.owner)
                state = None
            else:  # without a user's own login: nobody's private pull any more
                self._made_public(ref.written)
            pull.state, pull.phase = "done", "complete"
            pull.message = pull.message or f"Pulled {pull.image}"
            self.log.info("Pulled %s (%s)", pull.image, pull.digest or "no digest reported")
        except _Cancelled:
            if pull.stalled:
                pull.state, pull.error_status = "error", 504
                pull.message = (
                    f"The pull of {pull.image} was stopped: its registry sent nothing for "
                    f"{self.stall_timeout:.0f} s. Try again later, or ask an administrator "
                    "whether that registry is reachable from this host."
                )
                self.log.warning("%s (setting: PullManager.stall_timeout)", pull.message)
            else:
                pull.state, pull.message = "cancelled", f"The pull of {pull.image} was cancelled."
                self.log.info("Pull of %s cancelled", pull.image)
        except ContainerKernelError as e:
            pull.state, pull.error_status = "error", e.status
            pull.message = scrub(e.sentence, secrets)
            self.log.warning("Pull of %s failed: %s", pull.image, scrub(e.log_text, secrets))
        except Exception as e:  # a bug or an engine surprise: still a sentence, not a hang
            pull.state, pull.error_status = "error", 500
            pull.message = scrub(f"The pull of {pull.image} failed: {e}", secrets)
            self.log.warning("Pull of %s failed: %s", pull.image, pull.message)
        finally:
            if state is not None and self._image_id_or_empty(ref.written) == before:
                privateimages.forget(state, ref.written, job.owner)  # nothing new arrived
            pull.stream = None
            pull.finished = time.time()
            snapshot = pull.snapshot()
            with contextlib.suppress(RuntimeError):  # a server stopping: its loop closed first
                loop.call_soon_threadsafe(self._finish, pull, snapshot)

    def _made_public(self, ref: str) -> None:
        # The pull itself succeeded: a record that cannot be updated does not undo it.
        with contextlib.suppress(ContainerKernelError, OSError):
            state = self._state()
            image_id = self._image_id_or_empty(ref)
            if state.shared and image_id:
                privateimages.made_public(state, ref, image_id)

    def _image_id_or_empty(self, ref: str) -> str:
        try:
            return self.backend.inspect_image_sync(ref).id
        except ImageMissing:
            return ""

    def _check_pins(self, pull: Pull, ref: ImageReference, policy: ContainerPolicy) -> None:
        local = ref.written if not ref.digest else f"{ref.name}@{ref.digest}"
        image = self.backend.inspect_image_sync(local)
        forged = L.image_record_labels(image.labels)
        if forged:
            # Its labels would pass for this service's container records (issue 61): it does
            # not stay under the name pulled.
            self.backend.untag_sync(local)
            raise ImageNotAllowed(
                f"{ref.written} carries labels that only this service's own containers may "
                f"carry ({', '.join(forged)[:300]}), so it was removed again. Pull an image "
                "without labels named org.jupyter.gpu-containers.*."
            )
        try:
            check_image_allowed(policy, ref.written, (*image.repo_digests, image.id))
        except ImageNotAllowed:
            if not ref.digest:
                self.backend.untag_sync(ref.written)
            raise

    def _publish(self, pull: Pull, snapshot: dict[str, Any]) -> None:
        for queue in list(pull.watchers):
            queue.put_nowait(snapshot)

    def _finish(self, pull: Pull, snapshot: dict[str, Any]) -> None:
        self._publish(pull, snapshot)
        pull.done_event.set()
        self._running -= 1
        self._running_by[pull.whose] -= 1
        if self._running_by[pull.whose] <= 0:
            del self._running_by[pull.whose]
        self._dispatch()
        self._forget_old()

    def _forget_old(self) -> None:
        cutoff = time.time() - self.keep_finished
        for pull_id, pull in list(self._pulls.items()):
            if pull.state in ENDED and pull.finished < cutoff:
                del self._pulls[pull_id]
        # However fast one user's pulls end (an image no registry has fails at once), the
        # server keeps only their newest few.
        ended: dict[tuple[str, bool], list[Pull]] = {}
        for pull in self._pulls.values():
            if pull.state in ENDED:
                ended.setdefault((pull.whose, pull.scheduled), []).append(pull)
        for pulls in ended.values():
            pulls.sort(key=lambda p: p.finished)
            for old in pulls[: max(0, len(pulls) - ENDED_KEPT_PER_USER)]:
                del self._pulls[old.id]


class _Cancelled(Exception):
    pass
