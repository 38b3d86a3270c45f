"""A student's JupyterLab on a Slurm cluster, for the UI tests (slurm.spec.ts): a real
single-node Slurm (tests/slurm_cluster.py) whose four GPUs are device files named in a CDI spec of
this run's own kind, the test image in the student's rootless Podman, and the student's own
JupyterLab with ``ContainerEngine.backend = "slurm"`` (their kernels are jobs they submit), as
docs/slurm.md's section 5 sets it up. No GPU inventory on the host: the panel's GPUs are Slurm's.

Prints one JSON line once the lab answers: {"url", "token", "workspace", "devices"}. Reads
commands on stdin, one per line, each answered with a JSON line (``devices``: the directory of
the GPUs' device files, at the same path in a kernel's container):
  hold   another student's batch job takes every GPU ({"held": job id}, once it runs)
  free   that job is cancelled ({"freed": true})
  status whether the lab's server runs and answers ({"alive", "answers", "exit_status", and
         "log": its end when it does not answer), for a test whose browser was refused
End of input stops the lab (which ends its kernels' jobs), cancels every job left, removes the
student's containers of this run, stops the cluster and removes its files.

    python ui-tests/slurm_lab.py
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

import stale_runs  # noqa: E402

# A run of its own, judged by this process (stale_runs): the student's containers carry it, and
# what a killed run left is swept by the next.
os.environ["JGC_TEST_RUN"] = f"ui-slurm-{stale_runs.new_run_id()}"

import docker  # noqa: E402
import podman_user  # noqa: E402
from conftest import DEBIAN_IMAGE  # noqa: E402
from servers import read_command  # noqa: E402
from slurm_cluster import SlurmCluster, cdi_spec, users_own_server  # noqa: E402

STUDENT = os.environ.get("JGC_TEST_STUDENT_A", "jgc-student-a")
OTHER = os.environ.get("JGC_TEST_STUDENT_B", "jgc-student-b")
REPO = TESTS.parent


def say(**what: object) -> None:
    print(json.dumps(what), flush=True)


def server_status(server: Any) -> dict[str, object]:
    exit_status = server.process.poll()
    try:
        with urllib.request.urlopen(f"{server.url}/api?token={server.token}", timeout=10) as r:
            answers = r.status == 200
    except OSError:
        answers = False
    return {
        "alive": exit_status is None,
        "answers": answers,
        "exit_status": exit_status,
        **({} if answers else {"log": server.output()[-3000:]}),
    }


def main() -> None:
    run = os.environ["JGC_TEST_RUN"]
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="jgc-ui-slurm-cluster-", dir="/tmp"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        cluster = SlurmCluster(workdir)
        cluster.start()
        stack.callback(cluster.stop)  # after every job is cancelled (its own stop does that)
        gpu_device = stack.enter_context(cdi_spec(cluster, run))
        podman_user.load_images(docker.from_env(), [DEBIAN_IMAGE], user=STUDENT)
        build = REPO / "jupyter_gpu_containers" / "labextension"  # as the other UI servers use it
        config = {
            "SlurmBackend": {"poll_interval": 0.5, "gpu_device": gpu_device},
            "ImageCatalog": {"listed_images": [{"image": DEBIAN_IMAGE, "gpu": True}]},
            # The host (the cluster's login node) has no GPUs of its own.
            "GPUInventory": {"static_gpus": []},
            # window.jupyterapp, for the tests' commands (as galata's configuration does).
            "LabApp": {"expose_app_in_browser": True},
        }
        server = stack.enter_context(
            users_own_server(
                cluster,
                STUDENT,
                config,
                build if (build / "package.json").exists() else None,
            )
        )
        home = server.home
        say(
            url=server.url,
            token=server.token,
            workspace=str(home / "workspace"),
            devices=str(cluster.dev),
        )
        holder = ""
        while (line := read_command()) is not None:
            command = line.strip()
            if command == "hold":
                holder = cluster.hold_every_gpu(OTHER, f"{run}-holder")
                say(held=holder)
            elif command == "status":
                say(**server_status(server))
            elif command == "free" and holder:
                cluster.run(["scancel", holder])
                holder = ""
                say(freed=True)
            else:
                say(error=f"unknown command {command!r}")


if __name__ == "__main__":
    main()
