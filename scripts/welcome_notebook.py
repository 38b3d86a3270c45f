"""The demo's welcome notebook (scripts/demo.sh), written so that JupyterLab opens it unmodified.

    python scripts/welcome_notebook.py WORKSPACE [--image IMAGE] [--ContainerPolicy.allow_root=True]
        [--ContainerEngine.backend=podman]  (the server's engine options, as scripts/demo.sh passes them)

As soon as a notebook's kernel connects, JupyterLab sets ``metadata.kernelspec`` to the kernel
spec's name, display name and language, and ``metadata.language_info`` to what the kernel's
``kernel_info_reply`` says, and marks the notebook modified when either differs from the file.
So neither is written by hand here: the spec comes from the project's ContainerKernelSpecManager
(with the readiness probe's answer, which names the Python version, kept in the same cache the
server reads), and ``language_info`` from a kernel of the image, started once as nbclient would
start it, and only when the notebook is (re)written.

An existing welcome.ipynb is rewritten only while it is exactly as a demo set-up wrote it (this
version or an earlier one): its cells untouched, never run and saved, no metadata but the two
entries above. Anything else is the user's notebook and is left as it is, with a line saying how
to get a fresh one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from jupyter_core.application import JupyterApp
from traitlets import Unicode, default

from jupyter_gpu_containers.kernel.kernelspecs import ContainerKernelSpecManager, kernel_name_for

NOTEBOOK = "welcome.ipynb"


def intro(image: str) -> str:
    return (
        "# Kernels in containers\n\nThis notebook's kernel runs inside a container "
        f"of `{image}`. Its kernel spec name is stored in the notebook's metadata, so it "
        "reopens on the same image. The workspace is mounted at `/workspace`, and files you "
        "write there belong to you."
    )


def cells_now(image: str) -> list[dict[str, Any]]:
    """The cells this version writes. The last statement is a `with` block, not an expression:
    `open(...).write(...)` would show its return value (the count of characters) as Out[1]."""
    return _cells(
        [
            ("markdown", intro(image)),
            (
                "code",
                "import os, socket, getpass\n"
                "print('container:', socket.gethostname())\n"
                "print('user:', os.getuid(), getpass.getuser(), '| cwd:', os.getcwd())\n"
                "with open('written-in-a-container.txt', 'w') as f:\n"
                "    f.write('hello from the container\\n')",
            ),
        ]
    )


def cells_before(image: str) -> list[dict[str, Any]]:
    """The cells earlier versions of scripts/demo.sh wrote (recognised, to be rewritten)."""
    return _cells(
        [
            ("markdown", intro(image)),
            (
                "code",
                "import os, socket, getpass\n"
                "print('container:', socket.gethostname())\n"
                "print('user:', os.getuid(), getpass.getuser(), '| cwd:', os.getcwd())\n"
                "open('written-in-a-container.txt', 'w').write('hello from the container\\n')",
            ),
        ]
    )


def _cells(cells: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [
        {
            "cell_type": kind,
            "metadata": {},
            "source": text,
            "id": f"cell-{i}",
            **({"outputs": [], "execution_count": None} if kind == "code" else {}),
        }
        for i, (kind, text) in enumerate(cells)
    ]


def as_written(notebook: Any, image: str, kernel_name: str) -> bool:
    """Whether ``notebook`` (parsed JSON) is still exactly as a demo set-up wrote it."""
    if not isinstance(notebook, dict) or set(notebook) != {
        "nbformat",
        "nbformat_minor",
        "metadata",
        "cells",
    }:
        return False
    metadata = notebook["metadata"]
    if not isinstance(metadata, dict) or not set(metadata) <= {"kernelspec", "language_info"}:
        return False
    kernelspec = metadata.get("kernelspec")
    if not isinstance(kernelspec, dict) or kernelspec.get("name") != kernel_name:
        return False
    cells = notebook["cells"]
    if not isinstance(cells, list):
        return False
    # Saved by Jupyter, a source may be a list of lines: the same text.
    normalized = [
        {**c, "source": "".join(c["source"])}
        if isinstance(c, dict) and isinstance(c.get("source"), list)
        else c
        for c in cells
    ]
    return normalized in (cells_now(image), cells_before(image))


class WelcomeNotebookApp(JupyterApp):
    name = "welcome-notebook"
    description = "Write the demo's welcome.ipynb for an image's kernel spec."
    # The server's own configuration files: the same image_overrides (display names) and
    # container policy as the demo's server.
    config_file_name = Unicode("jupyter_server_config")

    image = Unicode("jgc/demo:bookworm", config=True, help="The notebook's image.")
    aliases = {"image": "WelcomeNotebookApp.image"}

    @default("log_level")
    def _default_log_level(self) -> int:
        return logging.WARNING  # the demo's output: problems only, not every kernel start

    def start(self) -> None:
        if len(self.extra_args) != 1:
            print(f"usage: {sys.argv[0]} WORKSPACE [--image IMAGE]", file=sys.stderr)
            self.exit(2)
        workspace = Path(self.extra_args[0]).resolve()
        ksm = ContainerKernelSpecManager(parent=self)
        try:
            print(self.write(workspace, ksm))
        finally:
            ksm.close()

    def write(self, workspace: Path, ksm: ContainerKernelSpecManager) -> str:
        path = workspace / NOTEBOOK
        name = kernel_name_for(self.image)
        ksm.refresh(wait_for_probes=True)  # the probe's answer names the Python version
        if ksm.engine_error:
            raise SystemExit(ksm.engine_error)
        spec = ksm.get_kernel_spec(name)
        kernelspec = {"name": name, "display_name": spec.display_name, "language": spec.language}

        existing: Any = None
        if path.exists():
            try:
                existing = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                existing = None
            if not as_written(existing, self.image, name):
                if existing is None or existing.get("metadata", {}).get("kernelspec") != kernelspec:
                    return (
                        f"{path} was changed since the demo wrote it, so it is left as it is "
                        "(JupyterLab may mark it modified when it opens; remove it for a fresh "
                        "one)."
                    )
                return f"Demo notebook: {path}"
            metadata = existing["metadata"]
            language = metadata.get("language_info")
            if (
                existing["cells"] == cells_now(self.image)
                and metadata.get("kernelspec") == kernelspec
                and isinstance(language, dict)
                and language.get("version") == self._probed_python(ksm, name)
            ):
                return f"Demo notebook: {path}"

        language_info = asyncio.run(self._language_info(ksm, name, workspace))
        metadata = {"kernelspec": kernelspec}
        if language_info is not None:
            metadata["language_info"] = language_info
        notebook = {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": metadata,
            "cells": cells_now(self.image),
        }
        # Atomic: a server that reads the file sees the old notebook or the new one.
        fd, tmp = tempfile.mkstemp(dir=workspace, prefix=".welcome-", suffix=".ipynb")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(notebook, f, indent=1, ensure_ascii=False)
                f.write("\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        verb = "updated" if existing is not None else "written"
        return f"Demo notebook ({verb}): {path}"

    @staticmethod
    def _probed_python(ksm: ContainerKernelSpecManager, name: str) -> str | None:
        entry = ksm.image_entries().get(name)
        answer = ksm.services.probe.cached(entry[1].id) if entry else None
        return answer.python_version if answer else None

    async def _language_info(
        self, ksm: ContainerKernelSpecManager, name: str, workspace: Path
    ) -> dict[str, Any] | None:
        """What a kernel of the image answers as its language_info (as JupyterLab will see it),
        or None, with a warning, when no kernel could start (the notebook is written all the
        same; the server will say why its kernel does not start)."""
        km = AsyncKernelManager(kernel_name=name, kernel_spec_manager=ksm, parent=self)
        os.chdir(workspace)  # outside a server, the kernel's workspace is the current directory
        try:
            await km.start_kernel(cwd=str(workspace))
        except Exception as e:
            self.log.warning("No kernel of %s started to ask its language_info: %s", name, e)
            return None
        client = km.client()
        try:
            client.start_channels()
            await client.wait_for_ready(timeout=60)
            reply = await client.kernel_info(reply=True, timeout=30)
            info = reply["content"].get("language_info")
            return info if isinstance(info, dict) else None
        except Exception as e:
            self.log.warning("The kernel of %s did not answer kernel_info: %s", name, e)
            return None
        finally:
            client.stop_channels()
            await km.shutdown_kernel(now=False)


if __name__ == "__main__":
    WelcomeNotebookApp.launch_instance()
