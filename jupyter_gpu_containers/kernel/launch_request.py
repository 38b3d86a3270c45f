"""What a start is given beside jupyter_client's call: one :class:`LaunchRequest`.

jupyter_client starts and restarts kernels through calls that carry no GPU request, no user and
no say in waiting (the stock sessions and kernels APIs, the kernel manager's restart). Whoever
starts a kernel with more to say sets a record around the call, with :func:`launching`; the
provisioner reads it once, in ``pre_launch``. A context variable: it follows the launch down the
awaits of the one request that set it, no client can set it, and nothing of it reaches a
container.

- ``gpus``: a request the extension's own endpoints give (a switch to another image, which the
  notebook's saved file does not know yet; a restart under other GPUs). None: the notebook's own
  (its metadata), else the kernel spec's default. A restart keeps the kernel's GPUs, unless the
  record names the kernel in ``restart_of``: then its request replaces the kernel's.
- ``wait``: whether the start may wait in the GPU queue (None: ``GPUQueue.wait_by_default``).
- ``user``: the kernel service's user the kernel is for (read at its first launch only).
- ``while_waiting``: what the start gives back while it waits for a GPU (the kernel service's
  start slot), handed to the queue.
- ``image_digest``: the digest the notebook pins its image to (images/environment.py), as a
  user's server read it from the notebook for a kernel service; "" for none. A server's own
  kernels read their notebook's pin themselves.
- ``kernel_id``: the id a user's server chose for a new kernel of a kernel service, before the
  start (its sessions list a start that waits under it); "" for the service's own choice.
- ``gpus_saved``: ``gpus`` is the notebook's saved request, as a user's server read it for a
  kernel service (not a choice made for this start): a CPU build does not keep it
  (gpu_request.py).

A user's server behind a kernel service sends the same record's ``gpus`` (with ``gpus_saved``),
``wait``, ``image_digest`` and ``kernel_id`` in the start's environment
(:meth:`LaunchRequest.environment`), and the service reads them back
(:meth:`LaunchRequest.from_environment`); the user is the service's to know, never a client's.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from ..base.errors import ValueRefused
from ..gpus.allocator import GPURequest
from ..gpus.gpuqueue import WhileWaiting
from ..host.identity import KernelUser

# What a start's env may carry of the record (the contract between users' servers and the
# kernel service).
REQUEST_ENV = "KERNEL_GPU_CONTAINERS_REQUEST"
WAIT_ENV = "KERNEL_GPU_CONTAINERS_WAIT"
IMAGE_DIGEST_ENV = "KERNEL_GPU_CONTAINERS_IMAGE_DIGEST"
KERNEL_ID_ENV = "KERNEL_GPU_CONTAINERS_KERNEL_ID"
REQUEST_SAVED_ENV = "KERNEL_GPU_CONTAINERS_REQUEST_SAVED"
# What a start's env may say of the record, all of it a user's server's word.
LAUNCH_ENVS = (REQUEST_ENV, WAIT_ENV, IMAGE_DIGEST_ENV, KERNEL_ID_ENV, REQUEST_SAVED_ENV)


def is_kernel_id(value: Any) -> bool:
    """Whether ``value`` is a kernel id as jupyter_client makes them: a UUID in its canonical
    form (lower case, hyphenated), nothing else (it names files and URLs)."""
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


@dataclass(frozen=True)
class LaunchRequest:
    """What the launches under way were given (see the module's docstring)."""

    gpus: GPURequest | None = None
    restart_of: str = ""
    wait: bool | None = None
    user: KernelUser | None = None
    while_waiting: WhileWaiting | None = None
    image_digest: str = ""
    kernel_id: str = ""
    gpus_saved: bool = False

    def environment(self) -> dict[str, str]:
        """The record's ``gpus``, ``wait``, ``image_digest`` and ``kernel_id`` as a start's
        environment carries them to a kernel service (what is None or empty is left out: the
        service's default applies)."""
        env = {}
        if self.kernel_id:
            env[KERNEL_ID_ENV] = self.kernel_id
        if self.image_digest:
            env[IMAGE_DIGEST_ENV] = self.image_digest
        if self.gpus is not None:
            env[REQUEST_ENV] = json.dumps(self.gpus.to_json())
            if self.gpus_saved:
                env[REQUEST_SAVED_ENV] = "true"
        if self.wait is not None:
            env[WAIT_ENV] = "true" if self.wait else "false"
        return env

    @classmethod
    def from_environment(cls, env: Any) -> LaunchRequest:
        """``gpus``, ``wait``, ``image_digest`` and ``kernel_id`` as a start's environment gives
        them (a client's word: only these are read; the digest is checked where it is used, the
        kernel id's being free where the kernel starts). Raises
        ValueRefused with a sentence for a malformed value, and InvalidGPURequest for a request
        that is not one."""
        env = env if isinstance(env, Mapping) else {}
        raw = env.get(REQUEST_ENV)
        gpus = None
        if isinstance(raw, str) and raw.strip() not in ("", "null"):
            try:
                value = json.loads(raw)
            except ValueError:
                raise ValueRefused(
                    f"{REQUEST_ENV} must be the notebook's GPU request as JSON (a count, a list "
                    "of GPU ids, or null)."
                ) from None
            gpus = GPURequest.parse(value) if value is not None else None
        raw_wait = env.get(WAIT_ENV)
        wait = None
        if raw_wait is not None and raw_wait != "":
            if raw_wait not in ("true", "false"):
                raise ValueRefused(f'{WAIT_ENV} must be "true" or "false".')
            wait = raw_wait == "true"
        digest = env.get(IMAGE_DIGEST_ENV)
        if digest is not None and (not isinstance(digest, str) or len(digest) > 512):
            raise ValueRefused(f"{IMAGE_DIGEST_ENV} must be an image digest reference.")
        kernel_id = env.get(KERNEL_ID_ENV)
        if kernel_id is not None and kernel_id != "" and not is_kernel_id(kernel_id):
            raise ValueRefused(
                f"{KERNEL_ID_ENV} must be a new kernel's id: a UUID in lower case, with hyphens."
            )
        saved = env.get(REQUEST_SAVED_ENV)
        if saved not in (None, "", "true", "false"):
            raise ValueRefused(f'{REQUEST_SAVED_ENV} must be "true" or "false".')
        return cls(
            gpus=gpus,
            wait=wait,
            image_digest=digest or "",
            kernel_id=kernel_id or "",
            gpus_saved=gpus is not None and saved == "true",
        )


_NOTHING_GIVEN = LaunchRequest()
_GIVEN: ContextVar[LaunchRequest | None] = ContextVar("jgc_launch_request", default=None)


def given() -> LaunchRequest:
    """The record the launches under way (in this task) were given; empty when none was."""
    return _GIVEN.get() or _NOTHING_GIVEN


@contextmanager
def launching(**fields: Any) -> Iterator[LaunchRequest]:
    """Launches made inside this block are given the record around it with ``fields``
    replaced (``launching(gpus=None)`` says "the notebook's own", whatever an outer block
    gave)."""
    record = dataclasses.replace(given(), **fields)
    token = _GIVEN.set(record)
    try:
        yield record
    finally:
        _GIVEN.reset(token)
