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
End of input stops the lab (which ends its kernels' jobs), cancels every job left, removes the
student's containers of this run, stops the cluster and removes its files.

    python ui-tests/slurm_lab.py
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

import stale_runs  # noqa: E402

# A run of its own, judged by this process (stale_runs): the student's containers carry it, and
# what a killed run left is swept by the next.
os.environ["JGC_TEST_RUN"] = f"ui-slurm-{stale_runs.new_run_id()}"

import docker  # noqa: E402
import podman_user  # noqa: E402
from conftest import DEBIAN_IMAGE  # noqa: E402
from servers import Server, write_server_config  # noqa: E402
from slurm_cluster import SlurmCluster  # noqa: E402

STUDENT = os.environ.get("JGC_TEST_STUDENT_A", "jgc-student-a")
OTHER = os.environ.get("JGC_TEST_STUDENT_B", "jgc-student-b")
REPO = TESTS.parent


def say(**what: object) -> None:
    print(json.dumps(what), flush=True)


def cdi_spec(stack: ExitStack, cluster: SlurmCluster, run: str) -> str:
    """The cluster's GPUs by index in a CDI spec of this run's own kind (as tests/slurm_cluster.py's
    cdi_by_index makes it); the GPU device template for SlurmBackend.gpu_device."""
    devices = "".join(
        f'  - name: "{index}"\n    containerEdits:\n      deviceNodes:\n'
        f"        - path: {cluster.device(index)}\n"
        for index in range(cluster.gpus)
    )
    kind = "jgc-" + re.sub(r"[^a-z0-9]+", "-", run.lower()).strip("-") + ".test/gpu"
    spec = Path("/etc/cdi") / f"jgc-test-slurm-{run}.yaml"
    spec.parent.mkdir(mode=0o755, exist_ok=True)
    spec.write_text(f'cdiVersion: "0.5.0"\nkind: "{kind}"\ndevices:\n{devices}')
    stack.callback(spec.unlink, missing_ok=True)
    return kind + "={index}"


def lab_home(stack: ExitStack, cluster: SlurmCluster, gpu_device: str) -> Path:
    entry = pwd.getpwnam(STUDENT)
    home = Path(tempfile.mkdtemp(prefix="jgc-ui-slurm-", dir="/tmp"))
    stack.callback(shutil.rmtree, home, ignore_errors=True)
    for sub in ("config", "data", "data/labextensions", "runtime", "workspace"):
        (home / sub).mkdir()
    # The working tree's build, as the other UI servers use it.
    build = REPO / "jupyter_gpu_containers" / "labextension"
    if (build / "package.json").exists():
        (home / "data" / "labextensions" / "jupyter-gpu-containers").symlink_to(build)
    for path in [home, *home.rglob("*")]:
        os.lchown(path, entry.pw_uid, entry.pw_gid)
    write_server_config(
        home,
        {
            "ContainerEngine": {"backend": "slurm"},
            "SlurmBackend": {
                "slurm_conf": str(cluster.conf),
                "poll_interval": 0.5,
                "gpu_device": gpu_device,
            },
            "ImageCatalog": {"listed_images": [{"image": DEBIAN_IMAGE, "gpu": True}]},
            # The host (the cluster's login node) has no GPUs of its own.
            "GPUInventory": {"static_gpus": []},
            # window.jupyterapp, for the tests' commands (as galata's configuration does).
            "LabApp": {"expose_app_in_browser": True},
        },
    )
    return home


def slurm(cluster: SlurmCluster, *argv: str, user: str | None = None) -> str:
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"] if user else []
    done = subprocess.run(
        [*prefix, *argv],
        env={**os.environ, "SLURM_CONF": str(cluster.conf)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd="/",
    )
    return done.stdout.strip()


def hold_every_gpu(cluster: SlurmCluster) -> str:
    """Another student's batch job on every GPU, once Slurm runs it."""
    job = slurm(
        cluster,
        "sbatch",
        "--parsable",
        f"--gres=gpu:{cluster.gpus}",
        f"--job-name={os.environ['JGC_TEST_RUN']}-holder",
        "--output=/dev/null",
        "--wrap=sleep 3600",
        user=OTHER,
    ).split(";")[0]
    for _ in range(300):
        if slurm(cluster, "squeue", "--noheader", "--format=%T", f"--jobs={job}") == "RUNNING":
            return job
        time.sleep(0.2)
    raise RuntimeError(f"the holder job {job} never ran")


def main() -> None:
    run = os.environ["JGC_TEST_RUN"]
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="jgc-ui-slurm-cluster-", dir="/tmp"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        cluster = SlurmCluster(workdir)
        cluster.start()
        stack.callback(cluster.stop)  # after every job is cancelled (its own stop does that)
        stack.callback(podman_user.remove_test_containers, STUDENT)
        gpu_device = cdi_spec(stack, cluster, run)
        podman_user.load_images(docker.from_env(), [DEBIAN_IMAGE], user=STUDENT)
        home = lab_home(stack, cluster, gpu_device)
        server = Server(
            home, home / "workspace", [], user=STUDENT, env=podman_user.user_env(STUDENT)
        )
        stack.callback(server.stop)
        say(
            url=server.url,
            token=server.token,
            workspace=str(home / "workspace"),
            devices=str(cluster.dev),
        )
        holder = ""
        for line in sys.stdin:
            command = line.strip()
            if command == "hold":
                holder = hold_every_gpu(cluster)
                say(held=holder)
            elif command == "free" and holder:
                slurm(cluster, "scancel", holder)
                holder = ""
                say(freed=True)
            else:
                say(error=f"unknown command {command!r}")


if __name__ == "__main__":
    main()
