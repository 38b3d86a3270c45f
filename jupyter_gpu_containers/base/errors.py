"""Errors a user reads.

Every failure on the way from "open a notebook on this image" to a running kernel gets its own
class and its own sentence, saying what happened and what to do next, and the HTTP status it
answers with when it reaches a REST client. They are plain exceptions: the provisioner also runs
outside a server (nbclient, VS Code through ``install-kernelspec``), where HTTP means nothing.
The server layer turns them into HTTP errors, once: the extension's handlers (routes/base.py) and
the kernel manager (kernelmanager.py) for the stock kernels and sessions APIs. ``str()`` is the
bare sentence, so every path (the sessions API wraps ``str(e)``, the server log) shows the same
words.

The sentence is in its reader's words: on a shared host that reader is a student, who cannot set
an option and should not have to learn its name. So a refusal that an administrator's option
decided says in plain words what an administrator can change ("ask an administrator to pull the
image for you"), and carries the option's name apart, as ``setting`` ("Class.trait", several
separated by commas). The server's log names it always (``log_text``); a JSON answer names it
only to an administrator (kernelmanager.finish_with_sentence). A refusal that is not raised but
answered as a field (why pulls or saves cannot be made here) is a :class:`Refusal`, with the
same two parts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Refusal:
    """Why something may not be done here, in the user's words, and the option that decided it
    (as ContainerKernelError's ``setting``); false when it may be done (no sentence)."""

    sentence: str = ""
    setting: str = ""

    def __bool__(self) -> bool:
        return bool(self.sentence)


class ContainerKernelError(Exception):
    """Base class: a failure with a sentence for the user and an HTTP status for the REST API."""

    status = 500
    reason_phrase = "Container kernel error"
    # An outcome someone chose (a wait cancelled), logged as news rather than as an error.
    routine = False

    def __init__(self, sentence: str, *, status: int | None = None, setting: str = "") -> None:
        super().__init__(sentence)
        self.sentence = sentence
        # The administrator's option (or options, "A.b, C.d") that decided this outcome.
        self.setting = setting
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.sentence

    @property
    def log_text(self) -> str:
        """The sentence as the server's log has it: with the option that decided it, for the
        administrator who reads the log."""
        return f"{self.sentence} (setting: {self.setting})" if self.setting else self.sentence


class EngineUnavailable(ContainerKernelError):
    """The container engine (Docker, Podman, the cluster) did not answer where we looked for it."""

    status = 503
    reason_phrase = "Container engine unavailable"


class ImageMissing(ContainerKernelError):
    """The image is not on this host (this project never pulls implicitly at launch)."""

    status = 404
    reason_phrase = "Image not found"


class ImageNotKernelReady(ContainerKernelError):
    """The image lacks Python or ipykernel."""

    status = 422
    reason_phrase = "Image cannot run a kernel"


class ContainerExited(ContainerKernelError):
    """The kernel's container ended before the kernel answered."""

    status = 500
    reason_phrase = "Kernel container exited"


class SchedulerWaitTimedOut(ContainerKernelError):
    """A cluster's scheduler (Slurm) kept a kernel's job waiting for its GPUs longer than the
    administrator lets a start wait (SlurmBackend.pending_timeout): the job was cancelled. 409,
    as the host GPU queue's own timeout: the cluster's GPUs are taken now, a state that passes
    (not 503 or 504, which say that a service is down or did not answer). Routine: logged as
    news, not as an error of the service's."""

    status = 409
    reason_phrase = "Scheduler wait timed out"
    routine = True


class EngineRefused(ContainerKernelError):
    """The engine refused to create or start the container (an option it cannot honour)."""

    status = 500
    # Neutral: the Kubernetes API refuses with it too (the sentence names which refused).
    reason_phrase = "Container engine refused the container"


class LaunchTimeout(ContainerKernelError):
    """The container ran, but the kernel inside never answered within the launch timeout."""

    status = 504
    reason_phrase = "Kernel launch timed out"


class MountRefused(ContainerKernelError):
    """A configured host path lies outside every allowed root."""

    status = 403
    reason_phrase = "Mount refused"


class ImageNotAllowed(ContainerKernelError):
    """An administrator's allow-list (ContainerPolicy.allowed_images / pinned_digests) refuses
    this image."""

    status = 403
    reason_phrase = "Image not allowed"


class ImageIncompatible(ContainerKernelError):
    """The image's CUDA stack cannot run on this host's driver (see compat.py)."""

    status = 409
    reason_phrase = "Image incompatible with this host"


class RegistryAuthFailed(ContainerKernelError):
    """A registry refused the credentials (or their absence) for a pull.

    403, not 401: a 401 from a Jupyter endpoint means "your Jupyter login expired" to clients.
    """

    status = 403
    reason_phrase = "Registry authorization failed"


class PullFailed(ContainerKernelError):
    """A pull ended with an error from the engine or the registry."""

    status = 502
    reason_phrase = "Image pull failed"


class PathRefused(ContainerKernelError):
    """A path that is malformed (NUL, too long, not text the OS can take, relative where it must
    be absolute or the reverse) or that resolves outside the directory it must stay in."""

    status = 400
    reason_phrase = "Path refused"


class ValueRefused(ContainerKernelError):
    """A value that cannot reach the engine safely: an environment variable's name or value, a
    kernel id, a label, a user spec."""

    status = 400
    reason_phrase = "Value refused"


class KeepRefused(ContainerKernelError):
    """A user's "keep it" of a kernel's GPUs that the reclaim policy does not allow now (not
    warned, kept too often, or for longer than the administrator allows)."""

    status = 409
    reason_phrase = "Kernel's GPUs not kept"


class KernelOptionRefused(ContainerKernelError):
    """A kernel option the administrator's policy does not allow (a root user, a network mode)."""

    status = 403
    reason_phrase = "Kernel option refused"


class SaveRefused(ContainerKernelError):
    """A save of an environment as an image that cannot be made: nothing to save, too large, a
    file that is not the user's, one save of theirs already under way."""

    status = 409
    reason_phrase = "Environment not saved"


class BuildsNotSupported(ContainerKernelError):
    """An engine that cannot keep an image it builds where its kernels run (a cluster's nodes
    pull from a registry this project cannot push to)."""

    status = 501
    reason_phrase = "Image builds not supported"
