"""A kernel's Slurm batch script: on the node Slurm chose, as the user, run the kernel's container
with rootless Podman, given exactly the GPUs Slurm allocated to the job.

Which GPUs a job holds is known only on the node, once the job runs (``SLURM_JOB_GPUS``: the
indices of the node's GRES, in gres.conf's order), so the script turns them into Podman's devices
there: each index through the site's template, by default NVIDIA's CDI name for the GPU of that
index (``nvidia.com/gpu=<index>``, as ``nvidia-ctk cdi generate`` names them). The site's
gres.conf and its CDI spec must number the GPUs alike (both follow the PCI bus order when gres.conf
is written by ``AutoDetect=nvml`` and the CDI spec by ``nvidia-ctk``; docs/slurm.md).

The script is made from strings this project chose or checked (the podman arguments, each quoted
for the shell here); nothing in it is read from the job's environment but Slurm's own GPU list,
which is checked to be numbers before it is used.

Where the site has NVIDIA's pyxis (a Slurm plugin that runs a job step in an enroot container,
``srun --container-image``), the script runs the container as a step instead (pyxis_batch_script):
Slurm's own cgroup then limits it to the job's GPUs, and the step ends with the job. Not tested
here: the test cluster has no pyxis (docs/slurm.md says what a site checks).
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Sequence

from ...base.errors import PathRefused, ValueRefused

# What the script's shell is told of each GPU index ({index}); a site without CDI names device
# files instead ("/dev/nvidia{index}" with the control devices added by the administrator).
CDI_BY_INDEX = "nvidia.com/gpu={index}"
# The signals a kernel is sent (jupyter_client's interrupt is SIGINT), passed on by name.
PASSED_ON = ("INT", "HUP", "QUIT", "USR1", "USR2")
# Ends the here-document of the environment: no line of it can be this (each holds a "=").
END_OF_ENVIRONMENT = "JGC_END_OF_ENVIRONMENT"
# The signal that stops a kernel's container for a restart in the job's allocation: the script
# stops the container and waits for the next generation. Never passed on to the kernel.
RESTART_SIGNAL = "ALRM"


def generation_file(job_id: str, generation: int, what: str) -> str:
    """The name of a generation's file in the kernel's private directory (the job's working
    directory): ``exit`` (its container's exit status, written by the script as the container
    ends) or ``next`` (written by the service: run that generation)."""
    return f"slurm-{job_id}-{generation}.{what}"


@dataclasses.dataclass(frozen=True)
class _Runner:
    """How a script runs its container: the lines that prepare it, the command (started in the
    background: the script stays the container's parent), the lines of its standard input, the
    signal traps, and what is done before the next generation's container."""

    setup: list[str]
    run: str
    stdin: list[str]
    traps: list[str]
    between: list[str]


def batch_script(
    podman_run: Sequence[str],
    image_and_command: Sequence[str],
    *,
    gpu_device: str = CDI_BY_INDEX,
    home: str,
    description: str,
    environment: str = "",
    restart_wait: int = 0,
) -> str:
    """The script: ``podman run`` with ``podman_run``'s arguments (everything but its name, the
    devices, the image and the command), one ``--device`` per GPU Slurm gave the job, then
    ``image_and_command``. ``home``: the user's home (rootless Podman's storage and
    configuration are under it); ``description``: a comment for whoever reads the job's script
    (``scontrol write batch_script``).

    The container is named for the job, and the script stays its parent: a signal Slurm sends
    the batch script (``scancel --batch --signal=INT``: an interrupt) is passed to the container
    by name, and the end of the job (a cancel, its time limit: SIGTERM to the job's processes)
    stops it by name (``podman stop``), which does not depend on podman's own forwarding of
    signals; podman removes the container (``--rm``) as it ends.

    ``restart_wait``: seconds the job keeps its allocation after its container ended, for a
    restart of the kernel to run in it (0: the job ends with its container). The containers
    run one after another are the job's generations (0, 1, …): as each ends the script writes
    its exit status to the generation's ``exit`` file, then waits for the service's ``next``
    file of the next one (generation_file), and runs the container again, on the same GPUs.
    SIGALRM (RESTART_SIGNAL) stops the container for such a restart; SIGTERM ends the job.

    ``environment``: the container's, as ``--env-file`` lines (podman_args.env_lines), given on
    podman's standard input by a here-document (``podman_run`` then holds ``--env-file
    /dev/stdin``): not on a command line, which every account on the node reads in /proc. The
    script itself is readable by the job's user and Slurm's administrators only."""
    _check_environment(environment)
    if "{index}" not in gpu_device:
        raise ValueError(f"the GPU device template {gpu_device!r} names no {{index}}")
    device_before, device_after = gpu_device.split("{index}", 1)
    runner = _Runner(
        setup=[
            'name="jupyter-slurm-job-$SLURM_JOB_ID"',
            "set --",
            'for index in $(printf "%s" "${SLURM_JOB_GPUS:-}" | tr "," " "); do',
            '  case "$index" in',
            '    "" | *[!0-9]*)',
            '      echo "Slurm named a GPU that is not a number: $index" >&2',
            "      exit 1",
            "      ;;",
            "  esac",
            f'  set -- "$@" --device={shlex.quote(device_before)}"$index"'
            f"{shlex.quote(device_after) if device_after else ''}",
            "done",
        ],
        run=(
            'podman run --name "$name" '
            + " ".join(shlex.quote(arg) for arg in podman_run)
            + ' "$@" '
            + " ".join(shlex.quote(arg) for arg in image_and_command)
            + (f" <<'{END_OF_ENVIRONMENT}' &" if environment else " &")
        ),
        # The here-document's lines stay as they are (unindented): they are the container's
        # environment, and its end must begin a line.
        stdin=[environment.rstrip("\n"), END_OF_ENVIRONMENT] if environment else [],
        # Each signal the script can catch goes on to the container's process (an interrupt
        # is SIGINT); SIGTERM (a cancel, the time limit) stops it and ends the job; SIGALRM
        # stops it for a restart in this allocation.
        traps=[
            *(
                f"trap 'podman kill --signal {name} \"$name\" >/dev/null 2>&1' {name}"
                for name in PASSED_ON
            ),
            "trap 'ending=1; podman stop --time 10 \"$name\" >/dev/null 2>&1' TERM",
            f"trap 'podman stop --time 5 \"$name\" >/dev/null 2>&1' {RESTART_SIGNAL}",
        ],
        between=['podman rm --force --ignore "$name" >/dev/null 2>&1'],
    )
    return _script(runner, home=home, description=description, restart_wait=restart_wait)


def pyxis_image(reference: str) -> str:
    """enroot's form of an image reference (``srun --container-image``): a registry host, where
    the reference names one, is followed by ``#`` instead of ``/``
    ("nvcr.io#nvidia/pytorch:24.05-py3"); an absolute path (a squashfs file the site imported)
    stays as it is."""
    if reference.startswith("/"):
        return reference
    first, slash, rest = reference.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return f"{first}#{rest}"
    return reference


def pyxis_batch_script(
    image: str,
    command: Sequence[str],
    *,
    mounts: Sequence[tuple[str, str, bool]],
    workdir: str,
    home: str,
    description: str,
    environment: str = "",
    restart_wait: int = 0,
) -> str:
    """The script for a site with pyxis: the container is a job step, ``srun --container-image``
    of ``image`` (pyxis_image's form), ``mounts`` (source, target, read-only) bound, in
    ``workdir``, running ``command``, as the job's user, on the node's network. Its GPUs are
    the job's: Slurm's cgroup gives the step those alone (``ConstrainDevices=yes``), and
    enroot's NVIDIA hook brings the driver in.

    ``environment``: the container's, ``--env-file`` lines, exported by the script (quoted for
    its shell, never on a command line) for the step, whose environment pyxis gives the
    container (where the image sets a variable too, the image's value stays: pyxis's default).

    Signals go to the step with ``scancel --signal`` (srun itself answers a single SIGINT with
    its tasks' status, and passes nothing on); SIGTERM (the job ends) reaches the step from
    Slurm itself; SIGALRM ends the step for a restart in the allocation (batch_script's
    generations, each a step). Not tested here: the test cluster has no pyxis."""
    _check_environment(environment)
    bad = [path for m in mounts for path in m[:2] if "," in path or ":" in path]
    if bad or "," in workdir:
        raise PathRefused(
            "This kernel cannot run through pyxis: its --container-mounts cannot name a path "
            f"with ',' or ':' ({bad or workdir}). Rename the folder, or mount one above it."
        )
    mount_list = ",".join(f"{src}:{dst}{':ro' if ro else ''}" for src, dst, ro in mounts)
    srun = [
        "srun",
        "--ntasks=1",
        "--export=ALL",
        f"--container-image={pyxis_image(image)}",
        *([f"--container-mounts={mount_list}"] if mount_list else []),
        *([f"--container-workdir={workdir}"] if workdir else []),
        "--no-container-mount-home",
        *command,
    ]
    exports = []
    for line in environment.splitlines():
        name, _, value = line.partition("=")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueRefused(f"{name!r} is no environment variable's name.")
        exports.append(f"export {name}={shlex.quote(value)}")
    # The kernel's step: every step of the job but the batch script's own (a restart's steps
    # run one at a time).
    steps = (
        '$(squeue --steps --jobs="$SLURM_JOB_ID" --noheader --format=%i'
        ' | grep -E "^$SLURM_JOB_ID\\.[0-9]+$")'
    )
    runner = _Runner(
        setup=exports,
        run=" ".join(shlex.quote(arg) for arg in srun) + " &",
        stdin=[],
        traps=[
            *(
                f"trap 'scancel --signal={name} {steps} >/dev/null 2>&1' {name}"
                for name in PASSED_ON
            ),
            "trap 'ending=1' TERM",
            f"trap 'scancel --signal=TERM {steps} >/dev/null 2>&1' {RESTART_SIGNAL}",
        ],
        between=[],
    )
    return _script(runner, home=home, description=description, restart_wait=restart_wait)


def _check_environment(environment: str) -> None:
    """``environment`` is podman_args.env_lines's: a line per variable, whatever splits it
    into lines (its values hold no line break of any reader's: env_lines refused them, 400)."""
    if any("=" not in line for line in environment.splitlines()):
        raise ValueRefused(
            "The kernel's environment cannot be written into its job's script: a value holds "
            "a line break (podman_args.env_lines says which)."
        )


def _script(runner: _Runner, *, home: str, description: str, restart_wait: int) -> str:
    comment = " ".join(description.split())
    wait_for_child = [
        "child=$!",
        # A trapped signal ends `wait` early: wait again while the container runs.
        'while :; do wait "$child"; status=$?; kill -0 "$child" 2>/dev/null || break; done',
    ]
    if restart_wait <= 0:
        body = [runner.run, *runner.stdin, *wait_for_child, 'exit "$status"']
    else:
        # generation_file's names, in the shell's words.
        exit_file = '"slurm-$SLURM_JOB_ID-$generation.exit"'
        next_file = '"slurm-$SLURM_JOB_ID-$next.next"'
        body = [
            "generation=0",
            "while :; do",
            f"  {runner.run}",
            *runner.stdin,
            *(f"  {line}" for line in wait_for_child),
            # The job ends (a cancel, its time limit): Slurm says why, no file.
            '  [ "$ending" = 0 ] || exit "$status"',
            # Written whole, then renamed: the service never reads half a number.
            f'  printf "%s\\n" "$status" > {exit_file}.tmp && mv -f {exit_file}.tmp {exit_file}',
            "  next=$((generation + 1))",
            "  waited=0",
            f"  while [ ! -e {next_file} ]; do",
            f'    [ "$ending" = 0 ] && [ "$waited" -lt {restart_wait * 4} ] || exit "$status"',
            "    sleep 0.25",
            "    waited=$((waited + 1))",
            "  done",
            '  generation="$next"',
            *(f"  {line}" for line in runner.between),
            "done",
        ]
    return "\n".join(
        [
            "#!/bin/sh",
            f"# {comment}",
            "set -u",
            # --export=NONE: nothing of the submitting process's environment is here.
            "export PATH=/usr/local/bin:/usr/bin:/bin",
            f"export HOME={shlex.quote(home)}",
            'export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/run/user/$(id -u)}"',
            "ending=0",
            *runner.setup,
            *runner.traps,
            *body,
            "",
        ]
    )
