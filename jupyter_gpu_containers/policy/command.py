"""How a kernel's container starts its kernel: find an interpreter after the image's ENTRYPOINT,
run ipykernel with the working directory off sys.path, and read an early exit as a sentence
(no Python, no ipykernel, killed for memory).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable

from ..base.records import KERNEL_DIR_IN_CONTAINER, RELAY_CONFIG_NAME, RELAY_SCRIPT_NAME

# How the kernel starts, once an interpreter is found: `python -c KERNEL_BOOT -f FILE`, which runs
# ipykernel_launcher as `python -m ipykernel_launcher -f FILE` would, but for sys.path. Both put
# the working directory (the notebook's, which its user writes) first on sys.path: -m as its
# path, -c as "". While ipykernel loads, a notebook's own ipykernel_launcher.py, or a queue.py or
# any module ipykernel imports, would be imported instead, and could keep the kernel from ever
# answering (a start that holds a slot of the kernel service until launch_timeout). The bootstrap
# takes "" off before it imports anything; IPython puts it back once the kernel has loaded, after
# the standard library (InteractiveShellApp.init_path), so code in the notebook still imports the
# notebook's own modules, and the kernel still runs in the notebook's directory. Python's own
# switch for this (-P, PYTHONSAFEPATH) is 3.11's, and IPython leaves the directory off sys.path
# for good under it. Written for every Python 3 (and 2.7). No single quote: it is one sh word.
#
# Then the user's packages for the image (host/user_packages.py): PYTHONUSERBASE names their
# folder, and Python put its site-packages on sys.path at start only if it existed then. Before
# the first install it does not: the bootstrap makes it and adds it where Python would have, ahead
# of the image's site-packages, so that a package installed in this kernel imports in it at once
# and an upgrade wins over the image's copy. PIP_USER has pip install there even where the image's
# site-packages are writable (a root kernel, a conda owned by the image's user); the folder's bin
# joins PATH for the scripts pip installs. Nothing of this where user site-packages are off
# (a virtual environment, -s): pip then installs where it would have.
#
# Before them, the packages of a saved image (images/saves.py), which its variable names: put
# where the image's site-packages begin, so that the user's own folder, put there next, comes
# first (a package they upgrade after the save wins), then the saved ones, then the image's.
#
# A relayed kernel (RELAY_EXEC) has no debugger: ipykernel's starts debugpy listening on
# 127.0.0.1, which on a job's node (the node's network) every account there reaches, and
# debugpy runs whatever its client asks. ipykernel offers no debugger when debugpy does not
# import.
KERNEL_BOOT = (
    "import sys\n"
    'if sys.path and sys.path[0] == "":\n'
    "    del sys.path[0]\n"
    "import os, site\n"
    'if os.environ.get("JUPYTER_GPU_CONTAINERS_NO_DEBUGGER"):\n'
    '    sys.modules["debugpy"] = None\n'
    "def put(d):\n"
    "    n = len(sys.path)\n"
    "    site.addsitedir(d)\n"
    "    added = sys.path[n:]\n"
    "    del sys.path[n:]\n"
    '    ends = ("site-packages", "dist-packages")\n'
    "    at = [i for i, e in enumerate(sys.path) if e.endswith(ends)]\n"
    "    at = at[0] if at else n\n"
    "    sys.path[at:at] = added\n"
    "def on_path(d):\n"
    '    os.environ["PATH"] = os.path.join(d, "bin") + os.pathsep + os.environ.get("PATH", "")\n'
    's = os.environ.get("JUPYTER_GPU_CONTAINERS_SAVED_PACKAGES")\n'
    "if s:\n"
    '    q = os.path.join(s, "lib", "python%d.%d" % sys.version_info[:2], "site-packages")\n'
    "    if os.path.isdir(q) and q not in sys.path:\n"
    "        put(q)\n"
    "    on_path(s)\n"
    'if os.environ.get("PYTHONUSERBASE") and site.ENABLE_USER_SITE:\n'
    "    p = site.getusersitepackages()\n"
    "    if not os.path.isdir(p):\n"
    "        try:\n"
    "            os.makedirs(p)\n"
    "        except OSError:\n"
    "            pass\n"
    "    if os.path.isdir(p) and p not in sys.path:\n"
    "        put(p)\n"
    '    os.environ.setdefault("PIP_USER", "1")\n'
    '    on_path(os.environ["PYTHONUSERBASE"])\n'
    "import runpy\n"
    'runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)\n'
)
KERNEL_EXEC = 'exec "$py" -c \'' + KERNEL_BOOT + '\' -f "$1"'


def find_python_and(exec_line: str) -> str:
    """The container's script that finds an interpreter and runs ``exec_line`` with it (``$py``)."""
    return _FIND_PYTHON.replace("@EXEC@", exec_line)


# Runs inside the container, after the image's ENTRYPOINT: find an interpreter (images put it in
# different places: /usr/bin, /usr/local/bin, /opt/conda/bin) and exec it (KERNEL_EXEC, the
# connection file given as $1). exec keeps python the direct child of init, so signals reach it.
_FIND_PYTHON = r"""
for py in "${JUPYTER_GPU_CONTAINERS_PYTHON:-}" python3 python \
          /opt/conda/bin/python3 /usr/local/bin/python3 /usr/bin/python3; do
  [ -n "$py" ] || continue
  if command -v "$py" >/dev/null 2>&1; then
    @EXEC@
  fi
done
echo "jupyter-gpu-containers: no Python interpreter in this image" \
     "(looked for python3 and python on PATH=$PATH," \
     "and in /opt/conda/bin, /usr/local/bin, /usr/bin)" >&2
exit 127
"""
FIND_PYTHON_AND_EXEC = find_python_and(KERNEL_EXEC)

NO_PYTHON_MARKER = "jupyter-gpu-containers: no Python interpreter"
NO_IPYKERNEL_MARKERS = ("No module named ipykernel", "No module named 'ipykernel")


def kernel_command(kernel_cmd: list[str], connection_file: str) -> list[str]:
    """The container command: the admin's explicit one, or find-python-and-exec-ipykernel."""
    if kernel_cmd:
        return [arg.replace("{connection_file}", connection_file) for arg in kernel_cmd]
    return ["sh", "-c", FIND_PYTHON_AND_EXEC, "jupyter-kernel", connection_file]


# The channel relay's start, before the kernel's own command ("$@"): the relay binds the node's
# ports as a CurveZMQ server and forks (kernel/channel_relay.py), and only once it has written
# them does the kernel start; a relay that cannot (no Curve in the image's pyzmq) ends the
# container with its sentence (NO_CURVE_MARKER), before any port is open.
RELAY_EXEC = (
    f'"$py" {KERNEL_DIR_IN_CONTAINER}/{RELAY_SCRIPT_NAME} '
    f'{KERNEL_DIR_IN_CONTAINER}/{RELAY_CONFIG_NAME} || exit "$?"\n'
    "    export JUPYTER_GPU_CONTAINERS_NO_DEBUGGER=1\n"
    '    exec "$@"'
)
NO_CURVE_MARKER = "this image's pyzmq has no CurveZMQ"


def relayed_command(command: list[str]) -> list[str]:
    """``command`` (kernel_command's) behind the channel relay, run by the first interpreter
    found as the kernel's is (find_python_and)."""
    return ["sh", "-c", find_python_and(RELAY_EXEC), "jupyter-kernel-relay", *command]


def entrypoint_is_interpreter(entrypoint: Iterable[str]) -> bool:
    """Images whose ENTRYPOINT is the interpreter itself (``["python3"]``) would run our command as
    a script; those entrypoints are cleared. Wrapper scripts (NGC's, tini + start.sh) are kept."""
    parts = list(entrypoint)
    if not parts:
        return False
    base = posixpath.basename(parts[0])
    return base.startswith("python") or base in ("ipython", "jupyter")


def diagnose_exit(image: str, exit_code: int, oom_killed: bool, log_tail: str) -> tuple[str, bool]:
    """A sentence for a container that ended before its kernel answered, and whether the image
    itself is at fault (cannot run a kernel) rather than this one start."""
    tail = f"\nLast lines of its log:\n{log_tail}" if log_tail else " It printed nothing."
    if any(marker in log_tail for marker in NO_IPYKERNEL_MARKERS):
        return (
            f"The image {image} has Python but not ipykernel, so it cannot run a Jupyter kernel. "
            "Install ipykernel in the image (pip install ipykernel) or choose another image."
            f"{tail}",
            True,
        )
    if NO_CURVE_MARKER in log_tail:
        return (
            f"The image {image} cannot run a kernel on a shared node: its pyzmq has no "
            "CurveZMQ, which keeps the kernel's channels private there. Install a pyzmq built "
            f"with libsodium in the image (pip install pyzmq) or choose another image.{tail}",
            True,
        )
    if NO_PYTHON_MARKER in log_tail:
        return (
            f"The image {image} has no Python interpreter, so it cannot run a Jupyter kernel. "
            "Choose an image with Python and ipykernel, or set the interpreter with the "
            f"JUPYTER_GPU_CONTAINERS_PYTHON environment variable of its kernel spec.{tail}",
            True,
        )
    if oom_killed or exit_code == 137:
        reason = "it ran out of memory (OOM-killed)" if oom_killed else "it was killed (exit 137)"
        return (f"The kernel container for {image} ended at start: {reason}.{tail}", False)
    return (f"The kernel container for {image} exited at start with code {exit_code}.{tail}", False)
