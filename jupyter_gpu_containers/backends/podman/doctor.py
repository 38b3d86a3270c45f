"""What rootless Podman needs of the host and the user, checked for ``jupyter gpu-containers
doctor``: Podman itself, the subordinate id ranges and the setuid helpers that map them, the
runtime directory, the storage driver, the network, the cgroups, and NVIDIA's CDI spec; each
finding a sentence that says what to do."""

from __future__ import annotations

import getpass
import os
import shutil
import stat
from collections.abc import Iterable

from ..backend import Finding
from .cli import PodmanCLI, PodmanFailed

CDI_SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")


def has_range(path: str, user: str, uid: int) -> bool:
    """Whether ``path`` (/etc/subuid, /etc/subgid) gives ``user`` a range of ids."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    for line in lines:
        parts = line.strip().split(":")
        named = len(parts) == 3 and parts[0] in (user, str(uid))
        if named and parts[2].isdigit() and int(parts[2]) > 0:
            return True
    return False


def privileged_helper(path: str) -> bool:
    """Whether ``path`` (newuidmap, newgidmap) may map ids: setuid root, or file capabilities."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_uid == 0 and st.st_mode & stat.S_ISUID:
        return True
    try:
        return bool(os.getxattr(path, "security.capability"))
    except OSError:
        return False


def nvidia_cdi_specs(directories: Iterable[str] = CDI_SPEC_DIRS) -> list[str]:
    found = []
    for directory in directories:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        found += [os.path.join(directory, n) for n in names if n.startswith("nvidia")]
    return found


def _kernel_release() -> tuple[int, int]:
    release = os.uname().release.split("-")[0].split(".")
    try:
        return int(release[0]), int(release[1])
    except (IndexError, ValueError):
        return (0, 0)


def diagnose(
    cli: PodmanCLI,
    *,
    network: str,
    tun_usable: bool,
    id_ranges: tuple[str, str] = ("/etc/subuid", "/etc/subgid"),
) -> list[Finding]:
    user, uid = getpass.getuser(), os.geteuid()
    findings: list[Finding] = []
    try:
        version = (cli.json(["version", "--format", "json"], what="say its version") or {}).get(
            "Client"
        ) or {}
    except Exception as e:
        return [Finding(f"{e}", problem=True, blocking=True)]
    said = str(version.get("Version") or "unknown")
    findings.append(Finding(f"Podman {said} runs here ({' '.join(cli.command)})."))
    major_minor = tuple(int(p) for p in said.split(".")[:2] if p.isdigit())
    if len(major_minor) == 2 and major_minor < (4, 1):
        findings.append(
            Finding(
                f"Podman {said} cannot name GPUs through CDI (4.1 or later can): kernels get no "
                "GPUs. Ask an administrator for a newer Podman.",
                problem=True,
            )
        )
    rootless = uid != 0
    if rootless:
        for path, what in zip(id_ranges, ("uid", "gid"), strict=True):
            if not has_range(path, user, uid):
                findings.append(
                    Finding(
                        f"You ({user}) have no subordinate {what} range in {path}: rootless "
                        "Podman cannot give a container's users ids of their own. An "
                        "administrator adds one: `sudo usermod --add-subuids 100000-165535 "
                        f"--add-subgids 100000-165535 {user}` (a range no other user has).",
                        problem=True,
                        blocking=True,
                    )
                )
        for helper in ("newuidmap", "newgidmap"):
            found = shutil.which(helper)
            if found is None or not privileged_helper(found):
                findings.append(
                    Finding(
                        f"{helper} is {'missing' if found is None else 'not setuid root'}: "
                        "rootless Podman needs it to map your subordinate ids. An "
                        "administrator installs it: `sudo apt install uidmap`.",
                        problem=True,
                        blocking=True,
                    )
                )
        runtime = os.environ.get("XDG_RUNTIME_DIR", "")
        try:
            st = os.stat(runtime) if runtime else None
        except OSError:
            st = None
        if st is None or st.st_uid != uid or st.st_mode & 0o077:
            findings.append(
                Finding(
                    f"XDG_RUNTIME_DIR ({runtime or 'unset'}) is not a directory of yours alone: "
                    "Podman keeps its runtime state there (a login through PAM makes "
                    f"/run/user/{uid}; `sudo loginctl enable-linger {user}` keeps it).",
                    problem=True,
                )
            )
    try:
        info = cli.json(["info", "--format", "json"], what="describe itself") or {}
    except PodmanFailed as e:
        findings.append(
            Finding(
                f"Podman cannot start for you: {e.said}. The findings above say why, if "
                "they found it.",
                problem=True,
                blocking=True,
            )
        )
        return findings
    store = info.get("store") or {}
    host = info.get("host") or {}
    driver = str(store.get("graphDriverName") or "")
    if driver == "vfs":
        native = _kernel_release() >= (5, 13)
        findings.append(
            Finding(
                "Your Podman storage is on vfs, which copies every image layer at each container "
                "start (seconds to minutes a kernel). "
                + (
                    "This kernel supports rootless overlay: put `[storage]` and "
                    '`driver = "overlay"` in ~/.config/containers/storage.conf, then run '
                    "`podman system reset` (it removes your Podman images and containers)."
                    if native
                    else "This kernel is older than 5.13: ask an administrator for "
                    "fuse-overlayfs and access to /dev/fuse."
                ),
                problem=True,
            )
        )
    else:
        findings.append(Finding(f"Podman's storage driver: {driver or 'unknown'}."))
    if rootless and network == "auto" and not tun_usable:
        findings.append(
            Finding(
                "You may not open /dev/net/tun, so rootless Podman cannot give kernels a network "
                "of their own: they share the host's network, as a kernel without a container "
                "would (PodmanEngine.network). An administrator may make /dev/net/tun usable "
                "(mode 0666 is the usual).",
                problem=True,
            )
        )
    if rootless and str(host.get("cgroupVersion") or "") == "v1":
        findings.append(
            Finding(
                "This host runs cgroups v1, where rootless Podman cannot enforce memory and "
                "process limits: kernel containers run without them. cgroups v2 (the systemd "
                "default since 2021) with controller delegation enforces them.",
                problem=True,
            )
        )
    specs = nvidia_cdi_specs()
    if specs:
        findings.append(Finding(f"GPUs reach containers through CDI: {', '.join(specs)}."))
    else:
        findings.append(
            Finding(
                "No NVIDIA CDI spec in /etc/cdi or /var/run/cdi: kernels on Podman get no GPUs. "
                "An administrator generates it: `sudo nvidia-ctk cdi generate "
                "--output=/etc/cdi/nvidia.yaml`.",
                problem=True,
            )
        )
    return findings
