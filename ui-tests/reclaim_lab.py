"""A JupyterLab whose idle GPUs are given back, for the UI tests (reclaim.spec.ts): a real server
as root on the NVML double's GPUs (tests/nvml_double.py: no process of a kernel's runs on them,
so a GPU kernel is idle from its start), with GPUReclaim on and short times: a kernel holding
GPUs is warned after 6 s without GPU activity, loses them 30 s later (restarted without GPUs),
and its user may keep them 30 s or 1 minute, twice. Kernels in real containers of the test's
NGC-like image, on the runc-backed "nvidia" runtime.

Prints one JSON line once the lab answers: {"url", "token"}. End of input stops the server
(which shuts its kernels down) and removes its home.

    python ui-tests/reclaim_lab.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

import stale_runs  # noqa: E402

# A run of its own, judged by this process (stale_runs): its kernels' containers carry it, and
# what a killed run left is swept by the next.
os.environ["JGC_TEST_RUN"] = f"ui-reclaim-{stale_runs.new_run_id()}"

from conftest import NGC_IMAGE, NVML_DOUBLE_CONFIG, TEST_LABEL, TEST_RUN  # noqa: E402
from servers import Server, read_command, remove_tree, write_server_config  # noqa: E402

REPO = TESTS.parent

RECLAIM = {
    "enabled": True,
    "idle_minutes": 0.1,
    "grace_minutes": 0.5,
    "check_interval": 1,
    "keep_min_minutes": 0.5,
    "keep_max_minutes": 1,
    "keep_max_times": 2,
    "action": "restart-without-gpus",
}


def say(**what: object) -> None:
    print(json.dumps(what), flush=True)


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="jgc-ui-reclaim-", dir="/tmp"))
    try:
        for sub in ("config", "data", "data/labextensions", "runtime", "workspace", "probes"):
            (home / sub).mkdir()
        build = REPO / "jupyter_gpu_containers" / "labextension"  # as the other UI servers use it
        if (build / "package.json").exists():
            (home / "data" / "labextensions" / "jupyter-gpu-containers").symlink_to(build)
        write_server_config(
            home,
            {
                **NVML_DOUBLE_CONFIG,
                "GPUUsage": {"interval": 0.5},
                "GPUReclaim": RECLAIM,
                # The test's image only: the server probes no other image of the engine.
                "ContainerKernelSpecManager": {"image_include": [NGC_IMAGE]},
                "KernelReadinessProbe": {
                    "cache_dir": str(home / "probes"),
                    "extra_labels": {TEST_LABEL: TEST_RUN},
                },
                # window.jupyterapp, for the tests' commands (as galata's configuration does).
                "LabApp": {"expose_app_in_browser": True},
            },
            pages=True,
        )
        pythonpath = ":".join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
        env = {
            "PYTHONPATH": pythonpath,
            # The build above, before the one pip installed into the environment (jupyter_core
            # prefers an environment's own directories).
            "JUPYTER_PREFER_ENV_PATH": "0",
        }
        server = Server(home, home / "workspace", [], env=env)
        try:
            say(url=server.url, token=server.token)
            while read_command() is not None:
                say(error="this lab takes no commands")
        finally:
            server.stop()
    finally:
        remove_tree(home)


if __name__ == "__main__":
    main()
