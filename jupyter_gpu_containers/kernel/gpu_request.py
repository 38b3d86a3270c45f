"""What GPUs a kernel asks for across its starts, for its provisioner (provisioner.py).

The request is resolved once, at the kernel's first launch: the one its start was given (a
switch to another image, launch_request.py), else its notebook's own (its metadata), else the
kernel spec's default. A restart keeps exactly the GPUs the kernel holds, unless it is a restart
under another request: then the kernel's request is replaced, and what it had comes back if that
restart's wait is cancelled (``restore``). Whether its starts may wait in the GPU queue, and what
a start gives back while it waits, come with each start.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..gpus.allocator import GPURequest
from ..gpus.gpuqueue import WhileWaiting
from ..gpus.notebook_requests import read_notebook_request
from ..services import Services
from .launch_request import LaunchRequest


class RequestingKernel(Protocol):
    """What the request reads of its provisioner, and ``gpu_uuids``, which it sets."""

    kernel_id: str
    gpus: Any  # the kernel spec's default (ContainerProvisioner.gpus)
    # The GPUs (UUIDs) the kernel holds; a restart asks for exactly these again.
    gpu_uuids: tuple[str, ...]

    @property
    def services(self) -> Services: ...


class KernelGPURequest:
    """The GPU request of one provisioner's kernel."""

    def __init__(self, kernel: RequestingKernel) -> None:
        self.kernel = kernel
        # The GPU request of this kernel's starts, resolved once (see resolve).
        self.requested: GPURequest | None = None
        # Whether that request is only the kernel spec's default (nobody asked for GPUs).
        self.is_default = False
        # Whether it is the one its notebook saved (its metadata), not one given to a start.
        self.from_notebook = False
        # What the kernel asked for before a restart under another request, until a launch
        # succeeds.
        self._before_change: tuple[GPURequest | None, bool, bool, tuple[str, ...]] | None = None
        # The launch request whose GPUs this kernel took last (each is taken once).
        self._given_applied: LaunchRequest | None = None
        self.wait = False  # whether this kernel's starts may wait in the GPU queue
        # What the launch under way gives back while it waits for GPUs (launch_request.py).
        self.while_waiting: WhileWaiting | None = None

    def take(self, given: LaunchRequest) -> None:
        """What the start under way was given (pre_launch reads it once)."""
        kernel = self.kernel
        if given.gpus is not None and given is not self._given_applied:
            if self.requested is None:  # a first launch (else it reads its notebook)
                self.requested, self.is_default = given.gpus, False
                # (A kernel service's start: the user's server read the notebook's request.)
                self.from_notebook = given.gpus_saved
            elif given.restart_of == kernel.kernel_id:
                # A restart under another request: the kernel's current GPUs are not kept;
                # what it had comes back if the restart's wait is cancelled
                # (restore_previous_request).
                self._before_change = (
                    self.requested,
                    self.is_default,
                    self.from_notebook,
                    kernel.gpu_uuids,
                )
                self.requested, self.is_default = given.gpus, False
                self.from_notebook = False
                kernel.gpu_uuids = ()
            # Once: a callback scheduled during this launch runs in a copy of its context, so a
            # later restart may see the same record; it keeps the kernel's GPUs.
            self._given_applied = given
        self.wait = given.wait if given.wait is not None else kernel.services.queue.wait_by_default
        self.while_waiting = given.while_waiting

    async def resolve(self, notebook: str) -> GPURequest:
        """What this launch asks for. A restart keeps exactly the GPUs the kernel held; else the
        request the launch was given (a switch), else the notebook's own (its metadata, read
        through the server's contents manager; ``notebook``: its contents API path), else the
        kernel spec's default."""
        kernel = self.kernel
        if kernel.gpu_uuids:
            return GPURequest(ids=kernel.gpu_uuids)
        if self.requested is None:
            contents = getattr(kernel.services.parent, "contents_manager", None)
            found = await read_notebook_request(contents, notebook)
            if found is not None:
                self.requested, self.is_default = found, False
                self.from_notebook = True
            else:
                self.requested, self.is_default = GPURequest.parse(kernel.gpus), True
        return self.requested

    def on_image(self, request: GPURequest, gpu_build: bool) -> GPURequest:
        """What a launch of ``request`` asks for on an image that is a GPU build or not
        (catalog.describe_image, as the images list and the GPU picker judge it; an
        administrator's list entry saying ``"gpu": true`` makes it one). A CPU build never keeps
        the GPUs its notebook saved: that request was made while the notebook's tag named a GPU
        build, and a tag moved to a CPU build would otherwise hold GPUs that nothing in it can
        use (and that another student waits for). A request given to this start (a choice made
        now) and the kernel spec's default (the administrator's) stand, as do the GPUs a restart
        keeps."""
        if gpu_build or not self.from_notebook or not request.wants_gpus:
            return request
        return GPURequest()

    @property
    def changed(self) -> bool:
        """Whether a restart under another request is under way (its launch has not
        succeeded)."""
        return self._before_change is not None

    def settle(self) -> None:
        """A launch succeeded: its request is the kernel's, with nothing to go back to."""
        self._before_change = None

    def restore(self) -> bool:
        """Go back to what the kernel asked for before a restart under another request. False
        when there is nothing to go back to."""
        if self._before_change is None:
            return False
        (
            self.requested,
            self.is_default,
            self.from_notebook,
            self.kernel.gpu_uuids,
        ) = self._before_change
        self._before_change = None
        return True
