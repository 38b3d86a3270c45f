#!/usr/bin/env bash
# The set-up command. On a fresh Debian/Ubuntu machine: installs what is missing, starts the
# Docker engine, builds the small kernel-ready demo image if it is not there, installs the
# project, and starts JupyterLab on 127.0.0.1 with a demo workspace whose notebook runs in a
# container of the demo image.
#
#   scripts/demo.sh                 JupyterLab on http://127.0.0.1:8888
#   scripts/demo.sh --port 9999     extra arguments go to `jupyter lab`
#
# JGC_DEMO_WORKSPACE (default ~/gpu-containers-demo) is the workspace mounted into kernels.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
prepare_machine demo ""

workspace=${JGC_DEMO_WORKSPACE:-$HOME/gpu-containers-demo}
mkdir -p "$workspace"
"$venv/bin/python" - "$workspace" <<'PY'
import json, sys
from pathlib import Path
from jupyter_gpu_containers.kernelspecs import kernel_name_for

image = "jgc/demo:bookworm"
notebook = Path(sys.argv[1]) / "welcome.ipynb"
if not notebook.exists():
    cells = [
        ("markdown", "# Kernels in containers\n\nThis notebook's kernel runs inside a container "
         f"of `{image}`. Its kernel spec name is stored in the notebook's metadata, so it "
         "reopens on the same image. The workspace is mounted at `/workspace`, and files you "
         "write there belong to you."),
        ("code", "import os, socket, getpass\n"
         "print('container:', socket.gethostname())\n"
         "print('user:', os.getuid(), getpass.getuser(), '| cwd:', os.getcwd())\n"
         "open('written-in-a-container.txt', 'w').write('hello from the container\\n')"),
    ]
    nb = {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": kernel_name_for(image),
                                    "display_name": f"Python 3 · {image}", "language": "python"}},
        "cells": [
            {"cell_type": kind, "metadata": {}, "source": text, "id": f"cell-{i}",
             **({"outputs": [], "execution_count": None} if kind == "code" else {})}
            for i, (kind, text) in enumerate(cells)
        ],
    }
    notebook.write_text(json.dumps(nb, indent=1))
print(f"Demo workspace: {notebook.parent}")
PY

# The server's user must reach the engine's socket.
run_as=()
if ! docker info >/dev/null 2>&1; then
  log "adding $(id -un) to the docker group so the server can reach the engine"
  as_root usermod -aG docker "$(id -un)"
  run_as=(sg docker -c)
fi
args=(lab --ip=127.0.0.1 --port="${JGC_DEMO_PORT:-8888}" "--ServerApp.root_dir=$workspace"
      --LabApp.default_url=/lab/tree/welcome.ipynb)
# As root, the demo's kernels run as root too, which the extension refuses unless allowed.
[ "$(id -u)" -eq 0 ] && args+=(--allow-root --ContainerPolicy.allow_root=True)
log "starting JupyterLab; open the URL it prints (Ctrl-C twice to stop)"
if [ ${#run_as[@]} -gt 0 ]; then
  exec "${run_as[@]}" "$(printf '%q ' "$venv/bin/jupyter" "${args[@]}" "$@")"
fi
exec "$venv/bin/jupyter" "${args[@]}" "$@"
