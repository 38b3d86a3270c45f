"""A notebook's GPU request travels with the notebook, in its metadata.

``metadata.gpu_containers.gpus``, next to ``metadata.kernelspec``: a count (``2``), specific
GPUs (``["0", "GPU-…"]``) or ``0`` for none. The panel writes it when the user picks GPUs and
saves it with the notebook, as JupyterLab saves the kernel spec. So a rename, a copy, a move, an
upload or a notebook sent to a colleague keeps it, and a new notebook that happens to reuse an
old name starts with nothing from its namesake.

It is read when a kernel starts for the notebook: the stock sessions API puts the notebook's path
in the kernel's environment (``JPY_SESSION_NAME``), and the file is read through the server's
contents manager (whatever stores the notebooks: a local disk, or S3). When the notebook says
nothing, the kernel spec's default applies.

The file and the server: the server keeps no copy. What it holds is the running kernel's GPUs,
which a restart keeps; an edit of the file's request takes effect at the kernel's next start.
The administrator's limits are ceilings: a request above them is refused with a sentence, never
lowered in silence, and so is a request for GPUs this host does not have (specific GPUs of the
machine the notebook was written on, say).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
from typing import Any

from ..base.errors import ValueRefused
from .allocator import GPURequest, InvalidGPURequest
from .inventory import Inventory

# The metadata key, next to ``kernelspec`` (the kernel spec's own metadata uses the same name).
METADATA_KEY = "gpu_containers"


class NotebookRequestError(ValueRefused):
    """The notebook's metadata holds something that is not a GPU request."""


def request_in_metadata(metadata: Any, notebook: str = "") -> GPURequest | None:
    """The GPU request a notebook's metadata holds, or None when it says nothing.

    Raises NotebookRequestError, with a sentence naming the notebook, for a value that is not a
    request: a kernel never starts with fewer GPUs than its notebook asks for without being told.
    """
    if not isinstance(metadata, dict):
        return None
    section = metadata.get(METADATA_KEY)
    if section is None:
        return None
    where = f"The notebook {notebook}" if notebook else "The notebook"
    if not isinstance(section, dict):
        raise NotebookRequestError(
            f"{where} has a '{METADATA_KEY}' entry in its metadata that is not an object. "
            "Choose its GPUs again in the GPU Containers panel."
        )
    if "gpus" not in section or section["gpus"] is None:
        return None
    try:
        return GPURequest.parse(section["gpus"])
    except InvalidGPURequest as e:
        raise NotebookRequestError(
            f"{where} asks for GPUs in its metadata in a form that is not a GPU request: {e} "
            "Choose its GPUs again in the GPU Containers panel."
        ) from e


def metadata_with_request(metadata: dict[str, Any], request: GPURequest | None) -> dict[str, Any]:
    """``metadata`` with ``request`` written in (None: the entry removed, back to the default)."""
    updated = dict(metadata)
    section = dict(updated.get(METADATA_KEY) or {})
    if request is None:
        section.pop("gpus", None)
    else:
        section["gpus"] = request.to_json()
    if section:
        updated[METADATA_KEY] = section
    else:
        updated.pop(METADATA_KEY, None)
    return updated


def api_path_of_session(session_name: str, root_dir: str) -> str:
    """The contents API path of the notebook a kernel starts for (``JPY_SESSION_NAME`` is the
    notebook's path on disk under the server's root), or "" when it is none: a console's
    session, a kernel started without a session, a path outside the root."""
    if not session_name.endswith(".ipynb") or not root_dir:
        return ""
    relative = os.path.relpath(os.path.normpath(session_name), os.path.normpath(root_dir))
    if relative.startswith("..") or os.path.isabs(relative):
        return ""
    return relative.replace(os.sep, "/")


async def read_notebook_request(contents_manager: Any, api_path: str) -> GPURequest | None:
    """The request in the saved notebook at ``api_path``, read through ``contents_manager``;
    None when the notebook says nothing, does not exist (yet) or cannot be read as a notebook.
    Raises NotebookRequestError for a request that is malformed."""
    return request_in_metadata(await read_notebook_metadata(contents_manager, api_path), api_path)


# How long a read waits, in all, for a notebook file that reads as no notebook to become one: a
# save in progress. jupyter_server's file contents manager saves in place (its "atomic" writing
# keeps a copy beside the file and truncates the file itself), so a read during a save finds an
# empty or a half-written file. The pauses between reads double from the first.
UNREADABLE_RETRY_SECONDS = 1.5
_FIRST_PAUSE = 0.05


async def read_notebook_metadata(contents_manager: Any, api_path: str) -> dict[str, Any] | None:
    """The metadata of the saved notebook at ``api_path``; None when it does not exist (yet) or
    cannot be read as a notebook.

    A file contents manager's notebook is read from its file, never through the manager: its
    read of a notebook that is being saved "recovers" it (moves the file being written aside as
    ``.invalid`` and puts the copy from before the save in its place), which races with the
    save's own end; a UI run lost a notebook so (the save finished between the two moves, and
    the notebook was gone). A file that reads as no notebook is read again for up to
    UNREADABLE_RETRY_SECONDS (a kernel that starts as the page saves would otherwise start
    without the notebook's request). Any other contents manager (S3, say) is asked once."""
    if contents_manager is None or not api_path:
        return None
    path = notebook_file(contents_manager, api_path)
    if path is None:
        return await _read_through(contents_manager, api_path)
    pause, waited = _FIRST_PAUSE, 0.0
    while True:
        whole, metadata = await asyncio.to_thread(_read_metadata_file, path)
        if whole or waited >= UNREADABLE_RETRY_SECONDS:
            return metadata
        await asyncio.sleep(pause)
        waited += pause
        pause *= 2


def notebook_file(contents_manager: Any, api_path: str) -> str | None:
    """The file on disk of the notebook at ``api_path`` of a file contents manager (one with a
    ``root_dir`` and jupyter_server's ``use_atomic_writing``), by the manager's own rules: inside
    its root, hidden only where it allows hidden files. None for another contents manager, and
    for a path it would not serve."""
    root = getattr(contents_manager, "root_dir", None)
    if not isinstance(root, str) or not hasattr(contents_manager, "use_atomic_writing"):
        return None
    if "\0" in api_path:
        return None
    parts = [part for part in api_path.strip("/").split("/") if part]
    if not parts or any(part in (".", "..") for part in parts):
        return None
    if not getattr(contents_manager, "allow_hidden", False) and any(
        part.startswith(".") for part in parts
    ):
        return None
    root = os.path.abspath(root)
    path = os.path.normpath(os.path.join(root, *parts))
    if not path.startswith(root.rstrip(os.sep) + os.sep):
        return None
    return path


def _read_metadata_file(path: str) -> tuple[bool, dict[str, Any] | None]:
    """Whether the file at ``path`` was read whole (or is not there: nothing more will come), and
    its notebook's metadata. Not whole: empty or not JSON, as a file is while it is saved."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return True, None
    try:
        notebook = json.loads(data)
    except ValueError:
        return False, None
    metadata = notebook.get("metadata") if isinstance(notebook, dict) else None
    return True, metadata if isinstance(metadata, dict) else None


async def _read_through(contents_manager: Any, api_path: str) -> dict[str, Any] | None:
    try:
        get = contents_manager.get
        if inspect.iscoroutinefunction(get):
            model = await get(api_path, content=True, type="notebook")
        else:  # a synchronous contents manager reads the file: not on the event loop
            model = await asyncio.to_thread(get, api_path, content=True, type="notebook")
    except Exception:
        # Not there (a session named after a notebook not yet saved), not a notebook, not
        # readable: the notebook says nothing the server can read, so the default applies.
        return None
    content = model.get("content") if isinstance(model, dict) else None
    metadata = content.get("metadata") if isinstance(content, dict) else None
    return metadata if isinstance(metadata, dict) else None


def fitted_to_host(request: GPURequest, is_default: bool, inventory: Inventory) -> GPURequest:
    """A request as a host without GPUs can meet it: GPU images' kernels ask for one GPU by
    default, and on such a host their CPU code still runs. An explicit request, or a GPU host
    whose NVML fails, keeps the request (and fails with the reason)."""
    if request.wants_gpus and is_default and not inventory.allocatable() and not inventory.failed:
        return GPURequest()
    return request
