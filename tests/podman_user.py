"""A real account's rootless Podman, for the tests that run kernels on it (and root's Podman, a
kernel service's engine: ``user=ROOT``).

scripts/test.sh creates the account (JGC_TEST_PODMAN_USER, jgc-podman-user): outside the docker
group, with subordinate uid and gid ranges, its Podman storage on native overlay
(~/.config/containers/storage.conf). What the tests need of it here: its runtime directory
(/run/user/<uid>, which a login would make), the suite's test images in its own storage (loaded
from Docker once, like Docker's own, cached by image id), its podman run as it, the environment
its Jupyter servers get, and its containers of this test run listed and removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import stale_runs
from conftest import TEST_LABEL, TEST_RUN

PODMAN_USER = os.environ.get("JGC_TEST_PODMAN_USER", "")
# Podman as root (a kernel service's engine): root's own storage and containers, no setpriv.
ROOT = "root"


def runtime_dir(user: str = PODMAN_USER) -> Path:
    """The user's runtime directory, made as a login would (0700, the user's)."""
    entry = pwd.getpwnam(user)
    path = Path(f"/run/user/{entry.pw_uid}")
    path.parent.mkdir(mode=0o755, exist_ok=True)
    if not path.is_dir():
        path.mkdir(mode=0o700)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def user_env(user: str = PODMAN_USER) -> dict[str, str]:
    """What a login of ``user`` would set that Podman reads: HOME (its storage and
    configuration) and XDG_RUNTIME_DIR (its runtime state)."""
    return {"HOME": pwd.getpwnam(user).pw_dir, "XDG_RUNTIME_DIR": str(runtime_dir(user))}


def podman(
    *args: str, user: str = PODMAN_USER, stdin: Any = None, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``podman args`` as ``user`` (rootless, in its environment; ROOT: root's Podman)."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
    prefix: list[str] = []
    if user != ROOT:
        env.update(user_env(user))
        prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
    done = _run([*prefix, "podman", *args], env, timeout, stdin)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} as {user} failed: {done.stderr.strip()}")
    return done


def run_as(
    argv: list[str], user: str = PODMAN_USER, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``argv`` as ``user``, in its Podman environment, with this test process's Python and
    package on its paths (the project's commands, or ``python -c``); not checked."""
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}),
        **user_env(user),
    }
    as_user = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
    return _run([*as_user, *argv], env, timeout)


def _run(
    argv: list[str], env: dict[str, str], timeout: float, stdin: Any = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        env=env,
        cwd="/",
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def storage_driver(user: str = PODMAN_USER) -> str:
    return podman("info", "--format", "{{.Store.GraphDriverName}}", user=user).stdout.strip()


_swept: set[str] = set()


def sweep_ended_runs(user: str = PODMAN_USER) -> None:
    """Remove the user's containers of test runs that are over (a run killed could not clean
    up; stale_runs.py judges a run by its id), once per process; never this run's."""
    if user in _swept:
        return
    _swept.add(user)
    out = podman("ps", "--all", "--format", "json", "--filter", f"label={TEST_LABEL}", user=user)
    ended = [
        c["Id"]
        for c in (json.loads(out.stdout) if out.stdout.strip() else [])
        if (run := c.get("Labels", {}).get(TEST_LABEL, "")) != TEST_RUN
        and stale_runs.run_is_over(run)
    ]
    if ended:
        podman("rm", "--force", "--time", "0", *ended, user=user, check=False)
        # stderr: the UI tests' labs answer on stdout (ui-tests/slurm_lab.py).
        print(
            f"removed {len(ended)} container(s) of ended test runs from {user}'s Podman",
            file=sys.stderr,
        )


@contextlib.contextmanager
def _loading(user: str) -> Iterator[None]:
    """One load into ``user``'s storage at a time across the test command's two pytest
    sessions: two loads at once of the same image into one rootless storage took each other's
    layers for incomplete ones, and one failed deleting a layer a kernel had mounted (fresh run
    f3). Root's own directory holds the lock (the sessions run as root), opened without
    following a link."""
    fd = os.open(
        f"/run/jgc-test-podman-load-{user}.lock",
        os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _image_id(ref: str, user: str) -> str:
    """The image's id in the user's storage; "" when it has none by that name. Another
    failure (its storage busy with another process's work) is asked again, not taken for an
    absent image, whose load would then race that work."""
    for attempt in range(5):
        found = podman("image", "inspect", "--format", "{{.Id}}", ref, user=user, check=False)
        if found.returncode == 0:
            return found.stdout.strip()
        if "image not known" in found.stderr or "no such image" in found.stderr.lower():
            return ""
        time.sleep(1 + attempt)
    raise AssertionError(f"podman image inspect {ref} as {user} failed: {found.stderr.strip()}")


def load_images(docker_client: Any, refs: list[str], user: str = PODMAN_USER) -> None:
    """Each of ``refs`` (Docker's test images) in the user's storage under the same name and
    id: loaded from Docker when its storage has another or none. (First, what ended runs left
    there goes.)"""
    sweep_ended_runs(user)
    for ref in refs:
        wanted = str(docker_client.images.get(ref).id).removeprefix("sha256:")
        if _image_id(ref, user) == wanted:
            continue
        with _loading(user):
            if _image_id(ref, user) == wanted:  # loaded meanwhile by the other session
                continue
            save = subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE)
            try:
                podman("load", "--quiet", user=user, stdin=save.stdout)
            finally:
                assert save.stdout is not None
                save.stdout.close()
                save.wait(60)


def remove_image(ref: str, user: str = PODMAN_USER, timeout: float = 120) -> None:
    """Remove ``ref`` from the user's storage once no container uses it: a server's readiness
    probe may still run one after the server stopped. ``rmi --force`` under a running container
    left a layer half deleted with its mount held in the user's Podman namespace, and every later
    command of that user's Podman failed on it (fresh run f3). What still uses it after
    ``timeout`` is removed first (the test's own containers), with their mounts."""
    image_id = _image_id(ref, user)
    if not image_id:
        return
    uid = pwd.getpwnam(user).pw_uid
    deadline = time.monotonic() + timeout
    while True:
        # By id: Podman's ancestor filter does not match every name a test gives.
        users = podman(
            "ps", "--all", "--quiet", "--filter", f"ancestor={image_id}", user=user, check=False
        )
        using = users.stdout.split() if users.returncode == 0 else []
        # A container still being created is in no list: a readiness probe's `podman create`
        # (by the image's bare id) copies the image's layers for its user namespace first, and
        # an rmi during that copy left the copy half made with its mount held (fresh run f9).
        creating = _commands_naming(image_id, uid)
        if (not using and not creating) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if creating:
        # Never killed (that too would leave the copy half made): the image stays.
        print(f"left {ref} in {user}'s Podman: podman {creating} still name it", file=sys.stderr)
        return
    if using:
        podman("rm", "--force", "--time", "0", *using, user=user, check=False)
    podman("rmi", ref, user=user, check=False)


def _commands_naming(image_id: str, uid: int) -> list[int]:
    """The processes of ``uid`` whose command line names the image by its id (whole or short)."""
    short = image_id.removeprefix("sha256:")[:12].encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(short in arg for arg in argv):
            found.append(int(entry.name))
    return found


def run_containers(user: str = PODMAN_USER) -> list[dict[str, Any]]:
    """The user's containers (any state) that carry this test run's label."""
    out = podman(
        "ps", "--all", "--format", "json", "--filter", f"label={TEST_LABEL}={TEST_RUN}", user=user
    ).stdout
    found: list[dict[str, Any]] = json.loads(out) if out.strip() else []
    return found


def kernel_containers(kernel_id: str, user: str = PODMAN_USER) -> list[dict[str, Any]]:
    from jupyter_gpu_containers.base import labels as L

    return [c for c in run_containers(user) if c.get("Labels", {}).get(L.KERNEL_ID) == kernel_id]


def remove_test_containers(user: str = PODMAN_USER) -> int:
    """Remove this run's containers from the user's Podman; how many there were."""
    found = run_containers(user)
    if found:
        podman("rm", "--force", "--time", "0", *[c["Id"] for c in found], user=user, check=False)
    return len(found)
