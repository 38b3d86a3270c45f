"""The batch script for a site with NVIDIA's pyxis (SlurmBackend.launcher = "pyxis"), as far as it
can be checked here: the test cluster has no pyxis (its srun refuses --container-image), so these
read the script the service would submit and run its shell parts, never a container through it.
What a site with pyxis checks by hand is in docs/slurm.md."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from jupyter_gpu_containers.backends.podman_args import env_lines
from jupyter_gpu_containers.backends.slurm import kernels
from jupyter_gpu_containers.backends.slurm.script import (
    PASSED_ON,
    RESTART_SIGNAL,
    pyxis_batch_script,
    pyxis_image,
)
from jupyter_gpu_containers.base.errors import PathRefused, ValueRefused
from jupyter_gpu_containers.base.records import KERNEL_DIR_IN_CONTAINER, ContainerSpec, Mount

ENVIRONMENT = {
    "JPY_SESSION_NAME": '/home/ann/it\'s a "notebook" $HOME `id`.ipynb',
    "KERNEL_GPU_CONTAINERS_REQUEST": "2",
}


def script_for(restart_wait: int = 0) -> str:
    return pyxis_batch_script(
        "nvcr.io/nvidia/pytorch:24.05-py3",
        ["python", "-m", "ipykernel_launcher", "-f", "/jgc/kernel.json"],
        mounts=[("/shared/home/ann", "/shared/home/ann", False), ("/shared/k/ab12", "/jgc", True)],
        workdir="/shared/home/ann",
        home="/shared/home/ann",
        description="jupyter_gpu_containers kernel container k1 (pytorch)",
        environment=env_lines(ENVIRONMENT).decode(),
        restart_wait=restart_wait,
    )


def srun_argv(script: str) -> list[str]:
    [line] = [line.strip() for line in script.splitlines() if line.strip().startswith("srun ")]
    assert line.endswith(" &"), line  # the script stays the step's parent
    return shlex.split(line.removesuffix(" &"))


def test_enroots_names_of_images() -> None:
    assert pyxis_image("nvcr.io/nvidia/pytorch:24.05-py3") == "nvcr.io#nvidia/pytorch:24.05-py3"
    assert pyxis_image("registry.example:5000/lab/img:1") == "registry.example:5000#lab/img:1"
    assert pyxis_image("localhost/img:1") == "localhost#img:1"
    assert pyxis_image("tensorflow/tensorflow:2.16.1-gpu") == "tensorflow/tensorflow:2.16.1-gpu"
    assert pyxis_image("ubuntu:24.04") == "ubuntu:24.04"
    assert pyxis_image("/shared/images/pytorch.sqsh") == "/shared/images/pytorch.sqsh"


@pytest.mark.parametrize("restart_wait", [0, 30])
def test_the_kernel_is_a_container_step_of_the_job(restart_wait: int) -> None:
    script = script_for(restart_wait)
    checked = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True)
    assert checked.returncode == 0, checked.stderr
    assert srun_argv(script) == [
        "srun",
        "--ntasks=1",
        "--export=ALL",
        "--container-image=nvcr.io#nvidia/pytorch:24.05-py3",
        "--container-mounts=/shared/home/ann:/shared/home/ann,/shared/k/ab12:/jgc:ro",
        "--container-workdir=/shared/home/ann",
        "--no-container-mount-home",
        *("python", "-m", "ipykernel_launcher", "-f", "/jgc/kernel.json"),
    ]
    assert "podman" not in script
    # Signals go to the kernel's step, never to srun (which answers one SIGINT with a status).
    for name in PASSED_ON:
        assert re.search(rf"trap 'scancel --signal={name} .*' {name}$", script, re.M), name
    assert re.search(rf"trap 'scancel --signal=TERM .*' {RESTART_SIGNAL}$", script, re.M)
    assert "trap 'ending=1' TERM" in script
    assert ("slurm-$SLURM_JOB_ID-$next.next" in script) == (restart_wait > 0)


def test_the_environment_reaches_the_step_whole_and_off_the_command_line(tmp_path: Path) -> None:
    """The variables are exported by the script for the step (pyxis gives the container the
    step's environment), each value exactly as it was, whatever shell characters it holds; none
    is on srun's command line, which every account on the node reads in /proc."""
    script = script_for()
    exports = [line for line in script.splitlines() if line.startswith("export ")]
    names = [name for name in ENVIRONMENT]
    shell = "\n".join(exports) + "\n" + "".join(f'printf "%s\\0" "${name}"\n' for name in names)
    out = subprocess.run(
        ["sh", "-c", shell], capture_output=True, env={"PATH": os.environ["PATH"]}, check=True
    ).stdout
    assert out.decode().split("\0")[:-1] == [ENVIRONMENT[name] for name in names]
    assert not any("notebook" in arg for arg in srun_argv(script))


def test_a_kernel_job_through_pyxis_and_what_it_cannot_name(tmp_path: Path) -> None:
    spec = ContainerSpec(
        image="nvcr.io/nvidia/pytorch:24.05-py3",
        command=["python", "-m", "ipykernel_launcher", "-f", "/jgc/kernel.json"],
        name="jupyter-kernel-k1",
        labels={},
        environment={},
        mounts=[Mount(str(tmp_path), KERNEL_DIR_IN_CONTAINER, read_only=False)],
        working_dir="/home/ann",
        gpu_count=2,
    )
    settings = kernels.JobSettings(launcher="pyxis", restart_wait=30)
    job = kernels.kernel_job(spec, settings, description="a kernel")
    argv = srun_argv(job.script)
    assert f"--container-mounts={tmp_path}:{KERNEL_DIR_IN_CONTAINER}" in argv
    assert job.request.gpus == 2  # the job asks Slurm for them; the step has the job's
    assert "--device" not in job.script
    odd = ContainerSpec(
        image=spec.image,
        command=spec.command,
        name=spec.name,
        labels={},
        environment={},
        mounts=[*spec.mounts, Mount("/data/a,b", "/data", read_only=True)],
    )
    with pytest.raises(PathRefused, match="cannot run through pyxis: its --container-mounts"):
        kernels.kernel_job(odd, settings, description="a kernel")


def test_the_probe_task_through_pyxis_runs_the_image_itself() -> None:
    args = kernels.pyxis_oneshot_args(
        "nvcr.io/nvidia/pytorch:24.05-py3", ["python", "-c", "print(1)"], {"A": "1"}
    )
    assert args == [
        "--export=NONE,A=1",
        "--container-image=nvcr.io#nvidia/pytorch:24.05-py3",
        "--no-container-mount-home",
        "python",
        "-c",
        "print(1)",
    ]
    with pytest.raises(ValueRefused, match="a comma"):
        kernels.pyxis_oneshot_args("img", ["true"], {"A": "1,2"})
