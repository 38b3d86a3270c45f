"""Per-notebook GPU requests, remembered across kernel restarts and reopening the notebook.

The stock ``POST /api/kernels`` and ``/api/sessions`` bodies carry no GPU request, but sessions
put the notebook's path in the kernel's environment (``JPY_SESSION_NAME``). So a notebook's
request is stored here, keyed by the notebook's real path, and the provisioner looks it up when
any kernel starts for that notebook: from the Launcher, from a reopened notebook, from a restart.
The extension's endpoint writes it (and then restarts the kernel); nothing else needs to know.

One small JSON file per user, in that user's Jupyter data directory (mode 0600).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from typing import Any

from jupyter_core.paths import jupyter_data_dir
from traitlets import Unicode, default
from traitlets.config import LoggingConfigurable

from .allocator import GPURequest

_lock = threading.Lock()


class NotebookRequests(LoggingConfigurable):
    store_path = Unicode(
        config=True,
        help="""Where notebooks' GPU requests are kept (a JSON file). Default:
        <jupyter data dir>/gpu_containers/notebook-requests.json.""",
    )

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
        with _lock:
            data = self._read()
            key = os.path.realpath(notebook)
            if request is None:
                data.pop(key, None)
            else:
                data[key] = {"gpus": request.to_json()}
            directory = os.path.dirname(self.store_path)
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".notebook-requests-")
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(data, f, indent=1)
                os.replace(tmp, self.store_path)  # atomic: readers never see half a file
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        return request or GPURequest()
