"""What the nodes ran for each image reference, learned from the pods (the readiness probe's, the
kernels' on the watch): a cluster has no engine to ask, so a listed image's content id is the one
its last pod reported, and the image watchers hear when it changes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ...base.records import ImageRecord
from .images import CONTENT_ID, ImageDigest, canonical_reference, content_digest, repository_of
from .objects import CONTAINER_NAME
from .pods import created_at, kernel_status


class LearnedImages:
    """Image reference (canonical) -> what the nodes last ran for it. Each change bumps the
    generation, which wakes the image watchers (:meth:`watch`) on their own threads."""

    def __init__(self, log: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        self._log = log
        self._lock = threading.Lock()
        self._digests: dict[str, ImageDigest] = {}
        self._changed = threading.Condition()
        self._generation = 0

    def digest(self, ref: str) -> ImageDigest | None:
        """What a node last ran for ``ref`` (None: no pod of it has run since this backend
        started)."""
        with self._lock:
            return self._digests.get(canonical_reference(ref))

    def learn(self, ref: str, image_id: str, created: float, *, tell_watchers: bool = True) -> None:
        """A pod of ``ref`` that the API server created at ``created`` ran ``image_id`` (its
        container status's imageID). Ignored when a pod created later said otherwise (a kernel
        pod still running the tag's previous image says nothing new); the API server's clock
        orders them, not the nodes'. When the reference's content id is new or changed, the image
        watchers hear of it (``tell_watchers``)."""
        digest, pinned = content_digest(image_id)
        if not digest or not ref:
            return
        key = canonical_reference(ref)
        if pinned and repository_of(pinned) != repository_of(ref):
            # A node's word only: a pinned form from another repository would send the next
            # probe to a registry nobody listed.
            pinned = ""
        with self._lock:
            known = self._digests.get(key)
            if known is not None and created < known.created:
                return
            if known is not None and known.id == digest:
                pinned = pinned or known.pinned
            self._digests[key] = ImageDigest(digest, pinned, max(created, 0.0))
        if known is not None and known.id == digest:
            return
        if known is not None:
            self._log.info(
                "The image %s is now %s on the nodes (it was %s): its kernel specs and readiness "
                "are looked at anew.",
                ref,
                digest,
                known.id,
            )
        if not tell_watchers:
            return
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def learn_from_pod(self, pod: Any) -> None:
        """The kernel container's image and the content id its node resolved it to."""
        container = kernel_status(pod)
        spec = next(
            (
                c
                for c in (pod.spec.containers if pod.spec else None) or []
                if c.name == CONTAINER_NAME
            ),
            None,
        )
        if container is None or spec is None or not container.image_id:
            return
        self.learn(str(spec.image or ""), str(container.image_id), created_at(pod))

    def oneshot_target(self, image: str) -> tuple[str, str]:
        """(the reference a one-shot run of ``image`` tells about, what its pod runs): a content
        id learned for a listed reference runs as its pinned "repo@sha256:…" (exactly that
        content) when the node gave one, else as the reference, whose content the pod's status
        then tells (it may have moved on meanwhile)."""
        if CONTENT_ID.fullmatch(image):
            with self._lock:
                for ref, known in self._digests.items():
                    if known.id == image:
                        return ref, known.pinned or ref
        return image, image

    def listed_record(self, ref: str) -> ImageRecord:
        """A listed image as the nodes last ran it: its id is the content id a node reported
        for the reference (so the readiness probe's answer is per digest, and a tag that moved
        is a new image), else, before any pod of it ran, the reference itself."""
        known = self.digest(ref)
        return ImageRecord(
            id=known.id if known else ref,
            tags=(ref,),
            labels={},
            env={},
            entrypoint=(),
            user="",
            created="",
            size=0,
            repo_digests=(known.pinned,) if known and known.pinned else (),
        )

    def watch(
        self, on_change: Callable[[], None], stop: threading.Event, closed: Callable[[], bool]
    ) -> None:
        """Call ``on_change`` (on this thread) whenever a reference's content id is learned or
        changes; returns once ``stop`` is set (and :meth:`wake` called) or ``closed()``."""
        with self._changed:
            seen = self._generation
        while not stop.is_set() and not closed():
            with self._changed:
                if self._generation == seen:
                    # Woken by a change or wake; the timeout only bounds a missed stop.
                    self._changed.wait(timeout=5.0)
                current = self._generation
            if stop.is_set() or closed() or current == seen:
                continue
            seen = current
            try:
                on_change()
            except Exception as e:  # the next change calls again: the watcher stays
                self._log.warning("After a listed image's digest changed: %s", e)

    def wake(self) -> None:
        """Every :meth:`watch` looks at its ``stop`` now."""
        with self._changed:
            self._changed.notify_all()
