"""A user's own packages per image, without an engine: the folder's key and path, what a kernel's
plan gets, the kernel's start putting the folder on its path (a real Python), and the host side
(measure, reset) against what a hostile user can plant in their own workspace. The kernels that
install and keep packages are in test_user_packages.py."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_launchplan import FACTS, plan
from traitlets import TraitError

from jupyter_gpu_containers.base.errors import PathRefused
from jupyter_gpu_containers.host import user_packages
from jupyter_gpu_containers.host.user_packages import (
    KEY_PATTERN,
    check_packages_dir,
    folder_bytes,
    list_folders,
    packages_key,
    reset_folder,
    user_base,
)
from jupyter_gpu_containers.policy.admin_policy import ContainerPolicy
from jupyter_gpu_containers.policy.command import KERNEL_BOOT

DIR = ".jupyter-gpu-containers/packages"


@pytest.mark.parametrize(
    "ref",
    [
        "nvcr.io/nvidia/pytorch:24.05-py3",
        "pytorch:24.05-py3",
        "127.0.0.1:5000/lab/tf@sha256:" + "0" * 64,
        "UPPER/Case:Tag",
        "x" * 300,
        "é:é",
    ],
)
def test_each_reference_has_a_key_of_its_own_that_names_it(ref: str) -> None:
    key = packages_key(ref)
    assert KEY_PATTERN.fullmatch(key), key
    # Reproducible, and never another reference's (the name part alone would be shared by
    # nvcr.io/nvidia/pytorch:24.05-py3 and pytorch:24.05-py3).
    assert key == packages_key(ref)
    assert key != packages_key(ref + "0")
    assert packages_key("nvcr.io/nvidia/pytorch:24.05-py3").startswith("pytorch-24.05-py3-")


def test_the_folder_is_a_normalised_path_inside_the_workspace() -> None:
    assert check_packages_dir("pkgs/") == "pkgs"
    for bad in ("", "/abs", "../up", "a/../..", ".", "a//b", "a/./b"):
        with pytest.raises(ValueError, match="must"):
            check_packages_dir(bad)
        with pytest.raises(TraitError, match="user_packages_dir"):
            ContainerPolicy(user_packages_dir=bad)


def test_a_kernel_gets_its_images_folder_unless_turned_off() -> None:
    env = plan().environment
    assert env["PYTHONUSERBASE"] == user_base("/workspace", DIR, "img:1")
    assert env["PYTHONUSERBASE"] == f"/workspace/{DIR}/{packages_key('img:1')}"
    assert "PIP_REQUIRE_VIRTUALENV" not in env
    moved = plan({"workspace_mount_path": "/home/jovyan/work"}, {"user_packages_dir": "p"})
    assert moved.environment["PYTHONUSERBASE"] == f"/home/jovyan/work/p/{packages_key('img:1')}"
    # A kernel spec's own choice stands; the administrator can turn it off.
    assert plan(spec_env={"PYTHONUSERBASE": "/mine"}).environment["PYTHONUSERBASE"] == "/mine"
    assert "PYTHONUSERBASE" not in plan(policy={"user_packages": False}).environment


def test_over_the_guard_pip_installs_no_more() -> None:
    guard = {"user_packages_max_bytes": 1000}
    over = dataclasses.replace(FACTS, packages_bytes=1001)
    assert plan(policy=guard, facts=over).environment["PIP_REQUIRE_VIRTUALENV"] == "1"
    under = dataclasses.replace(FACTS, packages_bytes=1000)
    assert "PIP_REQUIRE_VIRTUALENV" not in plan(policy=guard, facts=under).environment
    # Not measured (no guard, or a workspace not on this host): nothing is refused.
    assert "PIP_REQUIRE_VIRTUALENV" not in plan(policy=guard).environment
    assert "PIP_REQUIRE_VIRTUALENV" not in plan(facts=over).environment


# The machine's Python, as an image's is: not this virtual environment's, in which user
# site-packages are off.
SYSTEM_PYTHON = "/usr/bin/python3"


def system_python_version() -> str:
    """The machine's Python's "X.Y" (its user site-packages' folder name)."""
    return subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def boot_paths(
    tmp_path: Path, base: Path, *flags: str, python: str = SYSTEM_PYTHON
) -> dict[str, object]:
    """What a Python started as a kernel's is (``-c KERNEL_BOOT``) has on its path and in its
    environment once the bootstrap ran, with ``base`` as PYTHONUSERBASE; the kernel itself
    swapped for a report."""
    report = (
        "import json, os, sys\n"
        "print(json.dumps({'path': sys.path, 'pip_user': os.environ.get('PIP_USER'),"
        " 'bin': os.environ['PATH'].split(os.pathsep)[0]}))\n"
    )
    launcher = tmp_path / "launcher"
    launcher.mkdir(exist_ok=True)
    (launcher / "ipykernel_launcher.py").write_text(report)
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONUSERBASE": str(base),
        # The stand-in launcher: after the bootstrap, as the real one is found on the path.
        "PYTHONPATH": str(launcher),
    }
    out = subprocess.run(
        [python, *flags, "-c", KERNEL_BOOT],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout))


def test_the_kernels_start_puts_the_folder_ahead_of_the_images_packages(tmp_path: Path) -> None:
    base = tmp_path / "ws" / DIR / packages_key("img:1")
    first = boot_paths(tmp_path, base)
    site = f"{base}/lib/python{system_python_version()}/site-packages"
    # Made at the first start (Python adds it only if it exists), and placed where Python
    # itself places it: after the standard library, before any other site-packages.
    assert os.path.isdir(site)
    path = [str(p) for p in first["path"]]  # type: ignore[attr-defined]
    assert site in path
    at = path.index(site)
    assert not any(p.endswith(("site-packages", "dist-packages")) for p in path[:at])
    assert any(p.endswith(("site-packages", "dist-packages")) for p in path[at + 1 :])
    assert first["pip_user"] == "1" and first["bin"] == f"{base}/bin"
    # Later starts: Python found it itself, once.
    again = [str(p) for p in boot_paths(tmp_path, base)["path"]]  # type: ignore[attr-defined]
    assert again.count(site) == 1
    # User site-packages off (-s; a virtual environment, as this test's own): nothing of this.
    off = boot_paths(tmp_path, tmp_path / "other", "-s")
    assert off["pip_user"] is None and not (tmp_path / "other").exists()
    venv = boot_paths(tmp_path, tmp_path / "other", python=sys.executable)
    assert sys.prefix != sys.base_prefix  # the test runs in one
    assert venv["pip_user"] is None and not (tmp_path / "other").exists()


def make_folder(packages: Path, ref: str, files: int = 3) -> Path:
    folder = packages / packages_key(ref) / "lib" / "python3.11" / "site-packages" / "pkg"
    folder.mkdir(parents=True)
    for i in range(files):
        (folder / f"m{i}.py").write_text("x = 1\n" * 1000)
    return packages / packages_key(ref)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "alice"
    ws.mkdir(mode=0o755)
    return ws


def test_folders_are_measured_and_reset(workspace: Path) -> None:
    uid = os.getuid()
    assert list_folders(str(workspace), uid, DIR) == []  # nothing installed yet
    packages = workspace / DIR
    a = make_folder(packages, "img:1")
    make_folder(packages, "img:2", files=1)
    (packages / "notes.txt").write_text("not a folder of ours")
    (packages / "not-a-key").mkdir()
    found = {f.key: f for f in list_folders(str(workspace), uid, DIR)}
    assert set(found) == {packages_key("img:1"), packages_key("img:2")}
    one = found[packages_key("img:1")]
    assert one.complete and one.entries == 7  # lib, python3.11, site-packages, pkg, 3 files
    assert one.bytes >= 3 * 6000 and one.bytes > found[packages_key("img:2")].bytes
    assert folder_bytes(str(workspace), uid, DIR, packages_key("img:1")) == one.bytes
    assert folder_bytes(str(workspace), uid, DIR, packages_key("img:3")) is None

    assert reset_folder(str(workspace), uid, DIR, packages_key("img:1"))
    assert not a.exists() and (packages / packages_key("img:2")).exists()
    assert not reset_folder(str(workspace), uid, DIR, packages_key("img:1"))  # gone already
    for bad in ("..", "../alice", "a/b", "not-a-key", "/etc"):
        with pytest.raises(PathRefused, match="does not name a packages folder"):
            reset_folder(str(workspace), uid, DIR, bad)


def test_a_listing_reads_no_more_than_its_bounds(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A student's thousands of files, or of folders, cost one listing a bounded number of
    reads: one budget of entries for every folder, a bounded number of folders."""
    refs = sorted((f"img:{i}" for i in range(4)), key=packages_key)
    for ref in refs:
        make_folder(workspace / DIR, ref, files=10)  # 14 entries each
    monkeypatch.setattr(user_packages, "MAX_ENTRIES", 20)
    found = list_folders(str(workspace), os.getuid(), DIR)
    assert [f.key for f in found] == [packages_key(r) for r in refs]
    measured = [(f.entries, f.complete) for f in found]
    assert measured == [(14, True), (6, False), (0, False), (0, False)]
    monkeypatch.setattr(user_packages, "MAX_FOLDERS", 2)
    assert len(list_folders(str(workspace), os.getuid(), DIR)) == 2
    # One folder's own measure (the guard at a kernel's start) has the whole budget.
    assert folder_bytes(str(workspace), os.getuid(), DIR, packages_key(refs[3])) == found[0].bytes


def test_what_a_user_plants_in_their_workspace_redirects_nothing(
    workspace: Path, tmp_path: Path
) -> None:
    """Behind the kernel service the measure and the reset run as root in the user's workspace:
    whatever its user put there, they touch nothing outside it."""
    uid = os.getuid()
    victim = tmp_path / "victim"
    make_folder(victim / "packages", "img:1")
    precious = victim / "packages" / packages_key("img:1")
    before = sorted(p.name for p in precious.rglob("*"))

    # The packages path itself a link to another's directory: refused, named.
    (workspace / ".jupyter-gpu-containers").mkdir()
    (workspace / DIR).symlink_to(victim / "packages")
    with pytest.raises(PathRefused, match="symbolic link"):
        list_folders(str(workspace), uid, DIR)
    with pytest.raises(PathRefused, match="symbolic link"):
        reset_folder(str(workspace), uid, DIR, packages_key("img:1"))
    (workspace / DIR).unlink()

    # A folder's name a link to another's directory: the link goes, nothing it points to.
    (workspace / DIR).mkdir()
    (workspace / DIR / packages_key("img:1")).symlink_to(precious)
    assert [f.key for f in list_folders(str(workspace), uid, DIR)] == []  # not measured
    assert reset_folder(str(workspace), uid, DIR, packages_key("img:1"))
    assert not (workspace / DIR / packages_key("img:1")).exists()

    # A link inside a folder, to a directory and to a file of another's: not followed.
    mine = make_folder(workspace / DIR, "img:1")
    (mine / "lib" / "elsewhere").symlink_to(precious)
    (mine / "lib" / "a-file").symlink_to(precious / "lib" / "python3.11")
    reset_folder(str(workspace), uid, DIR, packages_key("img:1"))
    assert not mine.exists()
    assert sorted(p.name for p in precious.rglob("*")) == before


@pytest.mark.skipif(os.getuid() != 0, reason="gives files to another uid")
def test_a_path_another_user_holds_is_refused(workspace: Path) -> None:
    make_folder(workspace / DIR, "img:1")
    middle = workspace / ".jupyter-gpu-containers"
    # Another user's directory on the way: they could swap what lies below it.
    os.chown(middle, 4321, 4321)
    with pytest.raises(PathRefused, match="belongs to"):
        list_folders(str(workspace), os.getuid(), DIR)
    os.chown(middle, os.getuid(), os.getgid())
    # Writable by others: the same.
    middle.chmod(0o777)
    with pytest.raises(PathRefused, match="writable by other users"):
        reset_folder(str(workspace), os.getuid(), DIR, packages_key("img:1"))
    middle.chmod(0o755)
    # The workspace itself another's (a service user's name mapped to another's directory).
    with pytest.raises(PathRefused):
        list_folders(str(workspace), 4321, DIR)
    # A folder of another uid in the user's packages: not listed as theirs.
    os.chown(workspace / DIR / packages_key("img:1"), 4321, 4321)
    assert list_folders(str(workspace), os.getuid(), DIR) == []
