"""Per-notebook GPU requests, remembered across kernel restarts and reopening the notebook.

The stock ``POST /api/kernels`` and ``/api/sessions`` bodies carry no GPU request, but sessions
put the notebook's path in the kernel's environment (``JPY_SESSION_NAME``). So a notebook's
request is stored here, keyed by the notebook's real path, and the provisioner looks it up when
any kernel starts for that notebook: from the Launcher, from a reopened notebook, from a restart.
The extension's endpoint writes it (and then restarts the kernel); nothing else needs to know.

One small JSON file per user, in that user's Jupyter data directory (mode 0600).
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from jupyter_core.paths import jupyter_data_dir
from traitlets import Unicode, default
from traitlets.config import LoggingConfigurable

from .allocator import GPURequest
from .gpus import Inventory
from .safefiles import write_json_atomic


class NotebookRequests(LoggingConfigurable):
    store_path = Unicode(
        config=True,
        help="""Where notebooks' GPU requests are kept (a JSON file). Default:
        <jupyter data dir>/gpu_containers/notebook-requests.json.""",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.Lock()

    @default("store_path")
    def _default_store_path(self) -> str:
        return os.path.join(jupyter_data_dir(), "gpu_containers", "notebook-requests.json")

    def _read(self) -> dict[str, Any]:
        try:
            with open(self.store_path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, notebook: str) -> Any:
        """The stored request (a count or a list of ids) for a notebook, or None."""
        entry = self._read().get(os.path.realpath(notebook))
        return entry.get("gpus") if isinstance(entry, dict) else None

    def set(self, notebook: str, gpus: Any) -> GPURequest:
        """Validate and remember a notebook's request; None forgets it (back to the default)."""
        request = GPURequest.parse(gpus) if gpus is not None else None
        with self._lock:
            data = self._read()
            key = os.path.realpath(notebook)
            if request is None:
                data.pop(key, None)
            else:
                data[key] = {"gpus": request.to_json()}
            directory = os.path.dirname(self.store_path)
            os.makedirs(directory, mode=0o700, exist_ok=True)
            # Atomic: readers never see half a file.
            write_json_atomic(directory, os.path.basename(self.store_path), data)
        return request or GPURequest()

    def for_launch(self, notebook: str, default: Any) -> tuple[GPURequest, bool]:
        """What a kernel starting for ``notebook`` ("" for none) asks for: the notebook's stored
        request, else ``default`` (its kernel spec's); and whether it is only that default.
        Blocking (a file): a worker thread."""
        stored = self.get(notebook) if notebook else None
        return GPURequest.parse(stored if stored is not None else default), stored is None


def fitted_to_host(request: GPURequest, is_default: bool, inventory: Inventory) -> GPURequest:
    """A request as a host without GPUs can meet it: GPU images' kernels ask for one GPU by
    default, and on such a host their CPU code still runs. An explicit request, or a GPU host
    whose NVML fails, keeps the request (and fails with the reason)."""
    if request.wants_gpus and is_default and not inventory.allocatable() and not inventory.failed:
        return GPURequest()
    return request
