"""A kernel's environment saved as an image of its user's own: the image the kernel ran, and the
packages its user installed for that image (host/user_packages.py), as one new image.

A kernel's container changes nearly nothing of its own (HOME is a tmpfs; the workspace and the
packages folder are mounts, which a commit leaves out), so a save is a build: from the kernel's
image by id, the packages folder copied in (host/packages_archive.py writes the context, reading
the folder as its user's), a variable that the kernel's start reads to put them on the kernel's
path (after the packages the user installs later, before the image's own), and labels for its
lineage. Saves and builds alike are run by the service's own builder (builder.py: a recipe the
service parsed or wrote, executed step by step in confined containers); the engine never builds.
The context is written to a private spool first (an unnamed temporary file of this process),
which the builder's COPY steps read.

The new reference is ``<ImageSaves.repository>/u<uid>/<name>:<time>``: one path per user, so
that nobody's save can replace another user's image. Where the engine's images are every user's
(Docker, Podman as root) the reference is recorded as its user's private image before the build
starts (privateimages.py: hidden from the others, by reference and owner, in kernel specs, the
catalog and at launch), and the record is dropped if the build fails.

Saves run on threads of their own, at most ``max_concurrent`` at once; one more waits in a queue
(state "queued", its ``position`` in its snapshot), served in turn, a user with none running
before a user with one, at most ``max_queued`` waiting; each user has at most one save or build
queued or running. Each is bounded in files and bytes; a cancel stops the context being written
or the build (or takes it out of the queue). Progress is read with GET (the page polls): files
and bytes copied, then the build's lines.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, BinaryIO

from traitlets import Bool, Dict, Float, Int, List, TraitError, Unicode, validate
from traitlets.config import LoggingConfigurable

from ..backends.backend import BuildSteps, ContainerBackend, StepLimits
from ..base import labels as L
from ..base.errors import (
    BuildsNotSupported,
    ContainerKernelError,
    ImageMissing,
    ImageNotAllowed,
    Refusal,
    SaveRefused,
)
from ..base.references import BadReference, parse_reference
from ..host import build_context, packages_archive
from ..host.hoststate import StateDir
from ..host.packages_archive import ArchiveCount, SaveCancelled
from ..policy.admin_policy import (
    ALLOWED_IMAGES,
    ContainerPolicy,
    image_allowed,
    reference_matches,
)
from . import builder, privateimages, recipes
from .probe import KernelReadinessProbe

ACTIVE = ("queued", "copying", "building")
ENDED = ("done", "error", "cancelled")
# A name the user gives their image: what a repository path part may be.
NAME_PATTERN = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
MAX_NAME = 64
TAG_PATTERN = re.compile(r"[0-9]{8}-[0-9]{6}")
LOG_LINES = 200
# A build from the workspace keeps its whole log, up to this many lines: its user reads it to
# see why a step failed.
BUILD_LOG_LINES = 5000
# Ended saves and builds a user's page may still read (within ImageSaves.keep_finished).
ENDED_KEPT_PER_USER = 10


def lineage(labels: dict[str, str]) -> dict[str, str] | None:
    """What a saved image says it was saved from (its labels), None for any other image."""
    base = labels.get(L.SAVED_FROM, "")
    if not base:
        return None
    return {
        "image": base[:300],
        "id": labels.get(L.SAVED_FROM_ID, "")[:80],
        "digest": labels.get(L.SAVED_FROM_DIGEST, "")[:100],
        "saved_at": labels.get(L.SAVED_AT, "")[:40],
        "recipe": labels.get(L.BUILT_FROM_RECIPE, "")[:300],
    }


def _named_under(ref: str, prefix: str) -> bool:
    """Whether ``ref`` is a plain reference below ``prefix`` (one name and a tag: no digest,
    no path climbing out of it)."""
    rest = ref[len(prefix) :] if ref.startswith(prefix) else ""
    name, _, tag = rest.partition(":")
    return bool(NAME_PATTERN.fullmatch(name) and TAG_PATTERN.fullmatch(tag))


def default_name(base: str) -> str:
    """A name for a save of ``base`` ("pytorch" for nvcr.io/nvidia/pytorch:24.05-py3)."""
    last = base.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0].lower()
    name = re.sub(r"[^a-z0-9]+", "-", last).strip("-")[:MAX_NAME].strip("-")
    return name or "environment"


def check_name(name: str) -> str:
    """``name`` as a repository part, or SaveRefused with a sentence."""
    name = name.strip().lower()
    if not name or len(name) > MAX_NAME or not NAME_PATTERN.fullmatch(name):
        raise ContainerKernelError(
            f"{name[:80]!r} cannot name an image: use lowercase letters, digits, and '.', '_' or "
            f"'-' between them, at most {MAX_NAME} characters (for example 'pytorch-nlp').",
            status=400,
        )
    return name


@dataclass
class Save:
    id: str
    whose: str  # a kernel service's user name; "" on a user's own server
    base: str  # the reference the kernel ran (a build: its last stage's base)
    image: str  # the new reference
    kind: str = "save"  # or "build": from a recipe of the workspace
    recipe: str = ""  # a build's recipe, its path in the workspace
    state: str = "queued"
    message: str = ""
    error_status: int = 0
    count: ArchiveCount = field(default_factory=ArchiveCount)
    log: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=LOG_LINES))
    image_id: str = ""
    started: float = field(default_factory=time.time)
    finished: float = 0.0
    cancel_requested: bool = False
    timed_out: bool = False
    stream: builder.BuildRun | None = None
    position: int = 0  # in the queue, while queued (1: next)
    done_event: asyncio.Event = field(default_factory=asyncio.Event)
    # The save's thread appends to the log while the loop reads it.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_line(self, line: str) -> None:
        with self.lock:
            self.log.append(line[:500])

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            log = list(self.log)
        return {
            "id": self.id,
            "kind": self.kind,
            "recipe": self.recipe,
            "base": self.base,
            "image": self.image,
            "state": self.state,
            "message": self.message,
            "error_status": self.error_status,
            "files": self.count.entries,
            "bytes": self.count.bytes,
            "log": log,
            "image_id": self.image_id,
            "started": self.started,
            "finished": self.finished,
            "position": self.position if self.state == "queued" else 0,
        }


@dataclass(frozen=True)
class SaveSource:
    """What a save reads: the kernel's image (the reference it ran, and the image), and the
    user's packages folder for it (workspace, uid, the policy's folder, the key)."""

    base: str
    base_id: str
    base_digest: str
    workspace: str
    uid: int
    packages_dir: str
    key: str


@dataclass(frozen=True)
class BuildSource:
    """What a build from the workspace reads: the recipe (its path, and the folder that holds
    it, as folder names below the workspace), the instructions to build (parsed by recipes.py,
    or written for a requirements.txt), the id admitted for each image they name, and the last
    stage's base image."""

    recipe: str
    folders: tuple[str, ...]
    instructions: recipes.Recipe
    bases: dict[str, str]
    base: str
    base_id: str
    base_digest: str
    base_size: int
    workspace: str
    uid: int


class ImageSaves(LoggingConfigurable):
    """The server's saves of kernels' environments as images: start, read, cancel."""

    enabled = Bool(
        True,
        config=True,
        help="""Whether users may save a kernel's environment (its image and the packages they
        installed for it, ContainerPolicy.user_packages) as an image of their own, from the
        kernel's view. The image is private to its user where the engine's images are shared,
        and bounded by max_bytes and max_entries. On Kubernetes and Slurm the engine has nowhere
        to keep it for the next kernel, and saves are refused with a sentence.""",
    )

    repository = Unicode(
        "localhost/jupyter-gpu-containers/saved",
        config=True,
        help="""Where saved images are named: ``<repository>/u<uid>/<name>:<time>``. The
        administrator's allow-list (ContainerPolicy.allowed_images) must admit these references
        for kernels to start on them (its default, "*", does); a save the allow-list would not
        admit is refused before it starts. A name under "localhost/" is never pulled.""",
    )

    max_concurrent = Int(
        2,
        config=True,
        help="""Saves and builds that run at once on this server; one more waits in a queue
        (its state "queued", its place in it shown), served in turn, a user with none running
        before a user with one.""",
    )

    max_queued = Int(
        20,
        config=True,
        help="""Saves and builds that may wait for a turn (max_concurrent) at once; one more is
        refused (429) with a sentence. Each user has at most one save or build queued or running
        at a time.""",
    )

    max_bytes = Int(
        10 * 2**30,
        config=True,
        help="""The most bytes of packages one save copies into its image; a packages folder
        larger than this is refused, in a sentence, before the image is built.""",
    )

    max_entries = Int(
        200_000,
        config=True,
        help="The most files and folders one save copies into its image.",
    )

    max_images_per_user = Int(
        5,
        config=True,
        help="""Saved images one user may keep on this host (each may be as large as its image
        plus max_bytes): a save past it is refused, in a sentence, until they remove one (the
        GPU Containers panel's Remove on a saved image of theirs).""",
    )

    timeout = Float(
        1800.0,
        config=True,
        help="""Seconds a save may take, its copy and its build together; one that takes longer
        is stopped and fails with a sentence saying so (a slow workspace cannot hold a save slot
        for ever).""",
    )

    keep_finished = Float(
        600.0,
        config=True,
        help="Seconds a finished, failed or cancelled save stays readable.",
    )

    extra_labels = Dict(
        value_trait=Unicode(),
        key_trait=Unicode(),
        config=True,
        help="""Labels every saved image carries besides its lineage (an organisation's, a
        clean-up's), as ContainerProvisioner.extra_labels are for containers.""",
    )

    builds = Bool(
        True,
        config=True,
        help="""Whether users may build an image of their own from a Dockerfile or a
        requirements.txt of their workspace (the file browser's "Build Image…"). The service
        parses the Dockerfile and runs its steps itself, each stage in a container confined as a
        kernel is (root in it, with no capabilities, no-new-privileges, build_memory, build_cpus
        and build_pids, no network unless build_network): on a kernel service
        ServiceApp.build_policy also decides who may, and nobody may by default. Built images
        are named and kept private as saved images are.""",
    )

    allowed_bases = List(
        Unicode(),
        ["*"],
        config=True,
        help="""The images a build may start from (each FROM and COPY --from of a Dockerfile,
        and the base chosen for a requirements.txt), as patterns written as
        ContainerPolicy.allowed_images writes them. A base must also be on this host, admitted
        by ContainerPolicy.allowed_images and visible to its user (not another user's private
        image): builds never pull.""",
    )

    build_network = Bool(
        False,
        config=True,
        help="""Whether a build's steps reach a network (a RUN step's pip install from an
        index): a network the engine's backend makes for builds only (on Docker a bridge with
        traffic between its containers off), never the host's and never the kernels'. False
        (the default): builds reach no network, and a requirements.txt can then name only
        wheels in its own folder.""",
    )

    build_memory = Int(
        4 * 2**30,
        config=True,
        help="The most bytes of memory one step of a build may use (0: the engine's default).",
    )

    build_cpus = Float(
        1.0,
        config=True,
        help="""The most CPUs the steps of one stage of a build may use (each stage runs in a
        container of its own; a Dockerfile has at most 16 stages); 0: no limit.""",
    )

    build_pids = Int(
        1024,
        config=True,
        help="""The most processes the steps of one stage of a build may run at once (a fork bomb
        in a RUN step stops there).""",
    )

    max_build_bytes = Int(
        20 * 2**30,
        config=True,
        help="""The most bytes a build may add to its base image: a larger image is removed,
        and the build fails with a sentence saying so.""",
    )

    @validate("repository")
    def _validate_repository(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip().rstrip("/")
        try:
            parse_reference(f"{value}/u0/name:tag")
        except (BadReference, ValueError) as e:
            raise TraitError(f"ImageSaves.repository {value!r} is not a repository: {e}") from None
        return value

    def __init__(
        self,
        *,
        backend: ContainerBackend,
        policy: ContainerPolicy,
        state: Callable[[], StateDir],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.backend = backend
        self.policy = policy
        self._state = state
        self._saves: dict[str, Save] = {}
        self._running = 0
        self._waiting: list[_Job] = []
        # Called (on the save's thread) with each new image before its save is said done: the
        # server's kernel specs list it then, so the page's next read of them has it.
        self.on_image: Callable[[str], None] | None = None
        # The server's readiness probe (services.py), whose container of a new image a removal
        # waits out.
        self.probe: KernelReadinessProbe | None = None

    # ------------------------------------------------------------------ API for handlers

    def get(self, save_id: str, whose: str = "") -> Save | None:
        save = self._saves.get(save_id)
        return save if save is not None and save.whose == whose else None

    def listing(self, whose: str = "") -> list[dict[str, Any]]:
        self._forget_old()
        return [s.snapshot() for s in self._saves.values() if s.whose == whose]

    def target(self, uid: int, name: str, now: float | None = None) -> str:
        """The reference a save of ``uid`` named ``name`` gets."""
        stamp = datetime.fromtimestamp(now or time.time(), timezone.utc).strftime("%Y%m%d-%H%M%S")
        return f"{self.own_repository(uid)}/{check_name(name)}:{stamp}"

    def own_repository(self, uid: int) -> str:
        """Where ``uid``'s saved images are named: nobody else's saves are."""
        return f"{self.repository}/u{uid}"

    def is_saved_by(self, ref: str, uid: int) -> bool:
        """Whether ``ref`` names one of ``uid``'s saved images. Rootless Podman lists its
        user's own storage under Docker's names, "localhost/" dropped: there (and only there,
        where no other user's image can be) that spelling is theirs too."""
        mine = self.own_repository(uid) + "/"
        if _named_under(ref, mine):
            return True
        return not self.backend.images_shared and _named_under(ref, mine.removeprefix("localhost/"))

    def saved_by(self, uid: int) -> list[str]:
        """``uid``'s saved images (their references) on the engine now. Blocking."""
        return sorted(
            tag
            for image in self.backend.list_images_sync()
            for tag in image.tags
            if self.is_saved_by(tag, uid)
        )

    def remove_sync(
        self, ref: str, uid: int, owner: tuple[int, int] | None, state: StateDir | None
    ) -> None:
        """Remove ``uid``'s saved image ``ref`` and its private record. Refused, in a sentence,
        for any other reference, and while a kernel runs on it. Blocking."""
        if not self.is_saved_by(ref, uid):
            raise ContainerKernelError(
                f"{ref[:300]} is not an image you saved: you may remove only your own saved "
                f"images ({self.own_repository(uid)}/…).",
                status=403,
            )
        try:
            image_id = self.backend.inspect_image_sync(ref).id
        except ImageMissing:
            raise ContainerKernelError(
                f"There is no saved image {ref[:300]} of yours.", status=404
            ) from None
        probe = self.probe
        deadline = time.monotonic() + (probe.timeout if probe is not None else 30.0) + 30.0
        while True:
            self.backend.untag_sync(ref)
            try:
                self.backend.inspect_image_sync(ref)
            except ImageMissing:
                break
            # The engine keeps an image its containers use, and its last name with it. A
            # readiness probe of a new image (a one-shot container, seconds long: this server's,
            # or any other's on the host, which probe every new image) is not a kernel: once
            # the probes under way have ended, the image goes.
            if time.monotonic() < deadline and (
                (probe is not None and probe.wait_for(image_id, 5.0))
                or self.backend.list_containers_sync({L.PROBE: "true"})
            ):
                time.sleep(0.2)
                continue
            raise ContainerKernelError(
                f"Your saved image {ref[:300]} is in use by a kernel: shut its kernels down, "
                "then remove it.",
                status=409,
            )
        if state is not None and state.shared:
            privateimages.forget(state, ref, owner)
        self.log.info("Saved image %s removed at its user's word.", ref)

    def refusal(self) -> Refusal:
        """Why no save can be made on this server (none when one may)."""
        if not self.enabled:
            return Refusal(
                "Saving an environment as an image is turned off on this server: ask an "
                "administrator to turn it on.",
                "ImageSaves.enabled",
            )
        engine = self.backend.build_refusal()
        if engine:
            return Refusal(engine)
        if not self.policy.user_packages:
            return Refusal(
                "Packages installed in a kernel are not kept on this server, so there is "
                "nothing of yours to save: an administrator can have them kept.",
                "ContainerPolicy.user_packages",
            )
        return self._repository_refusal()

    def build_refusal_here(self) -> Refusal:
        """Why no build from the workspace can be made on this server (none when one may)."""
        if not self.builds:
            return Refusal(
                "Building images from your workspace is turned off on this server: ask an "
                "administrator to turn it on, or to build the image for you.",
                "ImageSaves.builds",
            )
        engine = self.backend.build_refusal()
        if engine:
            return Refusal(engine)
        return self._repository_refusal()

    def _repository_refusal(self) -> Refusal:
        sample = f"{self.repository}/u0/name:tag"
        if image_allowed(self.policy, sample):
            return Refusal(
                f"Saved images are named {self.repository}/…, which the administrator's "
                "allow-list does not admit, so no kernel could start on one. Ask the "
                f"administrator to admit {self.repository}/*.",
                f"ImageSaves.repository, {ALLOWED_IMAGES}",
            )
        return Refusal()

    def base_refusal(self, ref: str) -> Refusal:
        """Why a build may not start from ``ref`` (ImageSaves.allowed_bases), none when it
        may."""
        if reference_matches(ref, self.allowed_bases):
            return Refusal()
        return Refusal(
            f"A build may not start from {ref[:300]}: the bases this server builds on are "
            f"{', '.join(self.allowed_bases) or 'none'}. Start from one of them, or ask an "
            "administrator to allow this one.",
            "ImageSaves.allowed_bases",
        )

    async def start(
        self, source: SaveSource, name: str, whose: str, owner: tuple[int, int] | None
    ) -> Save:
        """Start saving ``source`` as ``name``. ``whose``/``owner``: a kernel service's user
        (name; uid and gid), "" and None on a user's own server."""
        engine = self.backend.build_refusal()
        if engine:
            raise BuildsNotSupported(engine)
        why = self.refusal()
        if why:
            raise ImageNotAllowed(why.sentence, setting=why.setting)
        image = self.target(source.uid, name)
        save = Save(id=uuid.uuid4().hex, whose=whose, base=source.base, image=image)
        state = await self._reserve(save, source.uid)
        labels = self._lineage(source.base, source.base_id, source.base_digest)

        def write(out: BinaryIO) -> None:
            packages_archive.write_context(
                out,
                workspace=source.workspace,
                uid=source.uid,
                packages_dir=source.packages_dir,
                key=source.key,
                base=source.base_id,
                labels=labels,
                max_entries=self.max_entries,
                max_bytes=self.max_bytes,
                count=save.count,
                cancelled=lambda: save.cancel_requested,
            )

        def done() -> str:
            return (
                f"Saved as {save.image}: {save.count.entries} files of your packages "
                f"({save.count.bytes} bytes) on {source.base}."
            )

        recipe = recipes.save_recipe(
            source.base_id, packages_archive.SAVED_PACKAGES_DIR, packages_archive.SAVED_PACKAGES_ENV
        )
        # A save's steps copy files only: no network, whatever builds may reach.
        limits = self._limits(network=False)
        self._launch(
            _Job(
                save,
                write,
                done,
                recipe,
                {source.base_id: source.base_id},
                labels,
                limits,
                0,
                state,
                owner,
            )
        )
        return save

    async def start_build(
        self, source: BuildSource, name: str, whose: str, owner: tuple[int, int] | None
    ) -> Save:
        """Start building ``source`` (checked: its recipe, its bases) as ``name``."""
        engine = self.backend.build_refusal()
        if engine:
            raise BuildsNotSupported(engine)
        why = self.build_refusal_here()
        if why:
            raise ImageNotAllowed(why.sentence, setting=why.setting)
        image = self.target(source.uid, name)
        save = Save(
            id=uuid.uuid4().hex,
            whose=whose,
            base=source.base,
            image=image,
            kind="build",
            recipe=source.recipe,
            log=collections.deque(maxlen=BUILD_LOG_LINES),
        )
        state = await self._reserve(save, source.uid)
        labels = self._lineage(source.base, source.base_id, source.base_digest, source.recipe)

        def write(out: BinaryIO) -> None:
            build_context.write_context(
                out,
                workspace=source.workspace,
                uid=source.uid,
                folders=list(source.folders),
                dockerfile="",
                max_entries=self.max_entries,
                max_bytes=self.max_bytes,
                count=save.count,
                cancelled=lambda: save.cancel_requested,
            )

        def done() -> str:
            return f"Built {save.image} from {source.recipe} on {source.base}."

        self._launch(
            _Job(
                save,
                write,
                done,
                source.instructions,
                dict(source.bases),
                labels,
                self._limits(network=self.build_network),
                # The bound holds whatever the base (FROM scratch is refused by recipes.py).
                max(source.base_size, 1),
                state,
                owner,
            )
        )
        return save

    def _limits(self, *, network: bool) -> StepLimits:
        return StepLimits(
            memory=max(0, self.build_memory),
            cpus=max(0.0, self.build_cpus),
            pids=max(1, self.build_pids),
            network=network,
        )

    def _lineage(self, base: str, base_id: str, digest: str, recipe: str = "") -> dict[str, str]:
        """The labels of a new image: the administrator's, and what it was made from."""
        labels = {
            **self.extra_labels,
            L.SAVED_FROM: base,
            L.SAVED_FROM_ID: base_id,
            L.SAVED_FROM_DIGEST: digest,
            L.SAVED_AT: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if recipe:
            labels[L.BUILT_FROM_RECIPE] = recipe
        return labels

    async def _reserve(self, save: Save, uid: int) -> StateDir | None:
        """Take a place for ``save`` (one queued or running per user; a turn among
        max_concurrent, or a place in the queue of at most max_queued), checked and taken
        before the first await: two requests of one user at once must not both find no save
        of theirs under way. Then the user's bound on saved images, and the host state
        directory where the image must be private. Returns that directory (None: the engine's
        images are its user's own)."""
        for other in self._saves.values():
            if other.whose == save.whose and other.state in ACTIVE:
                raise SaveRefused(
                    f"Your {_doing(other)} is still under way: wait for it, or cancel it, "
                    "before you start another."
                )
        queued = sum(1 for s in self._saves.values() if s.state == "queued")
        if self._running >= self.max_concurrent and queued >= max(0, self.max_queued):
            raise ContainerKernelError(
                f"{self._running} images are being saved or built on this server, as many as "
                f"it makes at once, and {queued} wait for a turn, as many as may wait. Try "
                "again in a few minutes.",
                status=429,
                setting="ImageSaves.max_concurrent, ImageSaves.max_queued",
            )
        self._saves[save.id] = save
        try:
            kept = await asyncio.to_thread(self.saved_by, uid)
            if len(kept) >= self.max_images_per_user:
                raise SaveRefused(
                    f"You keep {len(kept)} saved images here, as many as this server keeps for "
                    "one user: remove one you no longer need (the GPU Containers panel's Remove "
                    "on it) before you save another.",
                    setting="ImageSaves.max_images_per_user",
                )
            state = None
            if self.backend.images_shared:
                state = await asyncio.to_thread(self._state)
                if not state.shared:
                    raise ImageNotAllowed(
                        "A saved image is kept private to you, which needs the host state "
                        f"directory: {state.problem}",
                        setting=state.problem_setting,
                    )
        except BaseException:
            del self._saves[save.id]
            raise
        return state

    def _launch(self, job: _Job) -> None:
        """Run ``job`` now where a turn is free and nobody waits, else queue it."""
        job.save.state = "queued"
        self._waiting.append(job)
        self._dispatch()

    def _dispatch(self) -> None:
        """Give free turns to the queue: in arrival order, a user with none running first (on
        the event loop)."""
        if not self._waiting:
            return
        loop = asyncio.get_running_loop()
        while self._waiting and self._running < self.max_concurrent:
            running = collections.Counter(
                s.whose for s in self._saves.values() if s.state in ("copying", "building")
            )
            job = min(self._waiting, key=lambda j: running[j.save.whose] > 0)
            self._waiting.remove(job)
            self._running += 1
            job.save.state = "copying"
            threading.Thread(
                target=self._run,
                args=(job, loop),
                name=f"gpu-containers-save-{job.save.id[:8]}",
                daemon=True,
            ).start()
        for position, waiting in enumerate(self._waiting, start=1):
            waiting.save.position = position

    def cancel(self, save: Save) -> None:
        save.cancel_requested = True
        for job in self._waiting:
            if job.save is save:  # still queued: out of the queue, ended at once
                self._waiting.remove(job)
                save.state = "cancelled"
                save.message = f"The {save.kind} of {save.image} was cancelled: nothing was kept."
                save.finished = time.time()
                save.done_event.set()
                for position, waiting in enumerate(self._waiting, start=1):
                    waiting.save.position = position
                return
        stream = save.stream
        if stream is not None:
            stream.close()

    def _expire(self, save: Save) -> None:
        """The save's time is up (its watchdog's thread): stopped as a cancel is."""
        if save.state in ACTIVE:
            save.timed_out = True
            save.cancel_requested = True
            stream = save.stream
            if stream is not None:
                stream.close()

    async def wait(self, save: Save) -> None:
        await save.done_event.wait()

    def close(self) -> None:
        for save in list(self._saves.values()):
            if save.state not in ENDED:
                self.cancel(save)

    # ------------------------------------------------------------------ the save's thread

    def _run(self, job: _Job, loop: asyncio.AbstractEventLoop) -> None:
        save, state, owner = job.save, job.state, job.owner
        recorded = False
        watchdog = threading.Timer(self.timeout, self._expire, args=(save,))
        watchdog.daemon = True
        watchdog.start()
        try:
            save.state = "copying"
            if state is not None:
                # Recorded before the build starts: others never see it, not even for a moment.
                privateimages.record(state, save.image, owner=owner, before="")
                recorded = True
            image_id = self._build(save, job)
            if state is not None:
                privateimages.record(state, save.image, image_id, owner)
            if self.on_image is not None:
                try:
                    self.on_image(save.image)
                except Exception:  # the image is made: a listing's trouble is the listing's
                    self.log.warning("Listing %s as a kernel failed", save.image, exc_info=True)
            save.image_id = image_id
            save.state = "done"
            save.message = job.done()
            self.log.info("%s: %s (%s)", save.kind.capitalize(), save.message, image_id)
            recorded = False
        except (SaveCancelled, ContainerKernelError) as e:
            if save.timed_out:
                save.state, save.error_status = "error", 504
                save.message = (
                    f"The {save.kind} of {save.image} took longer than {self.timeout:g} seconds, "
                    "the most this server gives one, and was stopped: nothing was kept."
                )
                self.log.warning(
                    "%s stopped: %s (setting: ImageSaves.timeout)",
                    save.kind.capitalize(),
                    save.message,
                )
            elif save.cancel_requested or not isinstance(e, ContainerKernelError):
                save.state = "cancelled"
                save.message = f"The {save.kind} of {save.image} was cancelled: nothing was kept."
            else:
                save.state, save.error_status, save.message = "error", e.status, e.sentence
                self.log.warning("The %s of %s failed: %s", save.kind, save.image, e.log_text)
        except Exception as e:  # a bug or an engine surprise: still a sentence, not a hang
            save.state, save.error_status = "error", 500
            save.message = f"The {save.kind} of {save.image} failed: {e}"
            self.log.warning("The %s of %s failed", save.kind, save.image, exc_info=True)
        finally:
            watchdog.cancel()
            if recorded and state is not None:
                self._forget(state, save.image, owner)
            save.stream = None
            save.finished = time.time()
            with contextlib.suppress(RuntimeError):  # a server stopping: its loop closed first
                loop.call_soon_threadsafe(self._finish, save)

    def _build(self, save: Save, job: _Job) -> str:
        """Write the context into a private spool (an unnamed file of this process's only),
        then run the recipe with the service's own builder; check what the image adds to its
        base, and name it only then. Whatever fails, the builder removed its containers, and an
        image it made that is not kept is removed here."""
        steps = self.backend.build_steps()
        if steps is None:
            raise BuildsNotSupported(self.backend.build_refusal() or "This engine builds nothing.")
        with tempfile.TemporaryFile(prefix="jupyter-gpu-containers-build-") as spool:
            job.write(spool)
            if save.cancel_requested:
                raise SaveCancelled()
            save.state = "building"
            run = builder.BuildRun(
                steps,
                builder.BuildPlan(
                    recipe=job.recipe,
                    bases=job.bases,
                    context=spool,
                    name=save.image,
                    labels=job.labels,
                    container_labels={**self.extra_labels, L.BUILD: save.id},
                    limits=job.limits,
                    max_layer_bytes=self.max_build_bytes if job.base_size else 0,
                ),
            )
            save.stream = run
            if save.cancel_requested:  # a cancel between the check and the stream's start
                run.close()
            for line in run:
                save.add_line(line)
        image_id = run.image_id
        if save.cancel_requested:
            _remove_image(steps, image_id)
            raise SaveCancelled()
        if job.base_size:
            try:
                added = self.backend.inspect_image_sync(image_id).size - job.base_size
            except BaseException:
                _remove_image(steps, image_id)
                raise
            if added > self.max_build_bytes:
                _remove_image(steps, image_id)
                raise SaveRefused(
                    f"The image built from {save.recipe} adds {packages_archive.size_text(added)} "
                    f"to its base, more than a build may add "
                    f"({packages_archive.size_text(self.max_build_bytes)}): it was removed.",
                    setting="ImageSaves.max_build_bytes",
                )
        try:
            self.backend.tag_sync(image_id, save.image)
        except BaseException:
            _remove_image(steps, image_id)
            raise
        return image_id

    def _forget(self, state: StateDir, ref: str, owner: tuple[int, int] | None) -> None:
        # A build that failed may have tagged nothing, or something: the record goes once the
        # reference names nothing of this save's.
        with contextlib.suppress(ContainerKernelError, OSError):
            try:
                self.backend.inspect_image_sync(ref)
            except ImageMissing:
                privateimages.forget(state, ref, owner)

    def _finish(self, save: Save) -> None:
        save.done_event.set()
        self._running -= 1
        self._keep_few_ended(save.whose)
        self._dispatch()

    def _keep_few_ended(self, whose: str) -> None:
        """At most ENDED_KEPT_PER_USER ended saves of one user are kept, the newest: each holds
        its log (a build's up to BUILD_LOG_LINES lines), and a user may end one after another
        quickly (a build whose first step fails)."""
        ended = sorted(
            (s for s in self._saves.values() if s.whose == whose and s.state in ENDED),
            key=lambda s: s.finished,
        )
        for old in ended[:-ENDED_KEPT_PER_USER]:
            del self._saves[old.id]

    def _forget_old(self) -> None:
        cutoff = time.time() - self.keep_finished
        for save_id, save in list(self._saves.items()):
            if save.state in ENDED and save.finished < cutoff:
                del self._saves[save_id]


@dataclass(frozen=True)
class _Job:
    """What a save's (or a build's) thread does: ``write`` its context (into the spool), run
    ``recipe`` on ``bases`` (each image it names, and the id admitted for it) with ``labels``
    and ``limits``, check what it added to a base of ``base_size`` bytes (0: no check), keep it
    private in ``state`` as ``owner``'s, and say ``done``."""

    save: Save
    write: Callable[[BinaryIO], None]
    done: Callable[[], str]
    recipe: recipes.Recipe
    bases: dict[str, str]
    labels: dict[str, str]
    limits: StepLimits
    base_size: int
    state: StateDir | None
    owner: tuple[int, int] | None


def _doing(save: Save) -> str:
    if save.kind == "build":
        return f"build of {save.recipe} as {save.image}"
    return f"save of {save.base} as {save.image}"


def _remove_image(steps: BuildSteps, image_id: str) -> None:
    """An image a build made and does not keep: removed (a failure to is only logged by the
    engine's next prune: the build's own sentence is the one to say)."""
    if image_id:
        with contextlib.suppress(Exception):
            steps.remove_image(image_id)
