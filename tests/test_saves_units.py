"""Saving a kernel's environment as an image, without an engine: the build context written from a
user's packages folder (what goes in, as whose, what is refused, the bounds and the cancel), the
names a save gets, the lineage read back, the kernel's start with saved packages on its path, and
Podman's unpacking of a context. (With the real engine: test_user_packages.py, test_service.py.)"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from test_user_packages_units import SYSTEM_PYTHON, system_python_version

from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.base.errors import ContainerKernelError, SaveRefused
from jupyter_gpu_containers.base.records import ImageRecord
from jupyter_gpu_containers.host.packages_archive import (
    SAVED_PACKAGES_DIR,
    SAVED_PACKAGES_ENV,
    ArchiveCount,
    SaveCancelled,
    _add_file,
    dockerfile,
    write_context,
)
from jupyter_gpu_containers.host.user_packages import packages_key
from jupyter_gpu_containers.images.saves import check_name, default_name, lineage
from jupyter_gpu_containers.kernel.kernelspecs import display_name_for
from jupyter_gpu_containers.policy.command import KERNEL_BOOT

DIR = ".jupyter-gpu-containers/packages"
REF = "nvcr.io/nvidia/pytorch:24.05-py3"


def packages(workspace: Path, ref: str = REF) -> Path:
    site = workspace / DIR / packages_key(ref) / "lib" / "python3.11" / "site-packages"
    (site / "pkg").mkdir(parents=True)
    (site / "pkg" / "__init__.py").write_text("x = 1\n")
    (site / "pkg-1.0.dist-info").mkdir()
    (site / "pkg-1.0.dist-info" / "METADATA").write_text("Name: pkg\n")
    tool = workspace / DIR / packages_key(ref) / "bin" / "pkg-tool"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o775)
    return workspace / DIR / packages_key(ref)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "alice"
    ws.mkdir(mode=0o755)
    return ws


def context(
    workspace: Path, **kwargs: object
) -> tuple[dict[str, tarfile.TarInfo], dict[str, bytes]]:
    out = io.BytesIO()
    arguments: dict[str, object] = {
        "workspace": str(workspace),
        "uid": os.getuid(),
        "packages_dir": DIR,
        "key": packages_key(REF),
        "base": "sha256:" + "a" * 64,
        "labels": {L.SAVED_FROM: REF},
        "max_entries": 1000,
        "max_bytes": 10**6,
        "count": ArchiveCount(),
        "cancelled": lambda: False,
    }
    arguments.update(kwargs)
    write_context(out, **arguments)  # type: ignore[arg-type]
    out.seek(0)
    members: dict[str, tarfile.TarInfo] = {}
    contents: dict[str, bytes] = {}
    with tarfile.open(fileobj=out) as tar:
        for member in tar:
            members[member.name] = member
            if member.isfile():
                found = tar.extractfile(member)
                assert found is not None
                contents[member.name] = found.read()
    return members, contents


def test_the_context_is_the_dockerfile_and_the_folder_as_roots_read_only(
    workspace: Path,
) -> None:
    folder = packages(workspace)
    (folder / "lib" / "link").symlink_to("/etc/shadow")  # kept as a link, never followed
    os.mkfifo(folder / "fifo")
    count = ArchiveCount()
    members, contents = context(workspace, count=count)
    text = contents["Dockerfile"].decode()
    assert text.startswith(f"FROM sha256:{'a' * 64}\n")
    assert f"COPY packages {SAVED_PACKAGES_DIR}\n" in text
    assert f"ENV {SAVED_PACKAGES_ENV}={SAVED_PACKAGES_DIR}\n" in text
    assert f'LABEL "{L.SAVED_FROM}"="{REF}"' in text
    site = "packages/lib/python3.11/site-packages"
    assert contents[f"{site}/pkg/__init__.py"] == b"x = 1\n"
    assert members["packages/lib/link"].issym()
    assert members["packages/lib/link"].linkname == "/etc/shadow"
    assert "packages/fifo" not in members
    for member in members.values():
        assert member.uid == 0 and member.gid == 0
        assert member.issym() or not member.mode & 0o022
    assert members["packages/bin/pkg-tool"].mode == 0o755
    assert members[f"{site}/pkg/__init__.py"].mode == 0o644
    assert count.bytes == len(b"x = 1\n") + len(b"Name: pkg\n") + len(b"#!/bin/sh\n")


def test_a_label_is_never_read_as_an_instruction() -> None:
    text = dockerfile("sha256:" + "b" * 64, {"x": 'a"\nRUN rm -rf /'}).decode()
    assert text.count("\n") == 4 and "\nRUN" not in text


def test_nothing_to_save_bounds_and_cancel_are_sentences(workspace: Path) -> None:
    with pytest.raises(SaveRefused, match="no packages of yours for this image"):
        context(workspace)
    folder = packages(workspace)
    with pytest.raises(SaveRefused, match="more than 3 files and folders"):
        context(workspace, max_entries=3)
    with pytest.raises(SaveRefused, match=r"ImageSaves\.max_bytes"):
        context(workspace, max_bytes=8)
    with pytest.raises(SaveCancelled):
        context(workspace, cancelled=lambda: True)
    # The key is a key, never a path.
    with pytest.raises(ContainerKernelError, match="does not name a packages folder"):
        context(workspace, key="../alice")
    # A packages folder that is a link is refused.
    other = workspace / "elsewhere"
    folder.rename(other)
    folder.symlink_to(other)
    with pytest.raises(ContainerKernelError, match="not a folder of yours"):
        context(workspace)


@pytest.mark.skipif(os.getuid() != 0, reason="another user's file needs root to be made")
def test_a_file_that_is_not_the_users_refuses_the_save(workspace: Path) -> None:
    folder = packages(workspace)
    planted = folder / "lib" / "python3.11" / "site-packages" / "pkg" / "secret.py"
    planted.write_text("s = 1\n")
    os.chown(planted, 4242, 4242)  # as a hard link to another user's file would be
    with pytest.raises(ContainerKernelError, match=r"secret\.py is not yours"):
        context(workspace)


def test_names_and_lineage() -> None:
    assert default_name(REF) == "pytorch"
    assert default_name("localhost/x/My_Env:1") == "my-env"
    assert default_name("sha256:" + "c" * 64) in ("sha256", "environment")
    assert check_name(" Pytorch-NLP ") == "pytorch-nlp"
    for bad in ("", "-x", "a/b", "a..b", "x" * 65, "a b", "ä"):
        with pytest.raises(ContainerKernelError, match="cannot name an image"):
            check_name(bad)
    assert lineage({}) is None
    found = lineage({L.SAVED_FROM: REF, L.SAVED_FROM_ID: "sha256:1", L.SAVED_AT: "t"})
    assert found == {"image": REF, "id": "sha256:1", "digest": "", "saved_at": "t", "recipe": ""}
    built = lineage({L.SAVED_FROM: REF, L.BUILT_FROM_RECIPE: "envs/Dockerfile"})
    assert built is not None and built["recipe"] == "envs/Dockerfile"


def test_the_kernels_start_puts_saved_packages_between_the_users_and_the_images(
    tmp_path: Path,
) -> None:
    version = system_python_version()
    saved = tmp_path / "saved"
    saved_site = saved / "lib" / f"python{version}" / "site-packages"
    saved_site.mkdir(parents=True)
    base = tmp_path / "user"
    launcher = tmp_path / "launcher"
    launcher.mkdir()
    (launcher / "ipykernel_launcher.py").write_text(
        "import json, os, sys\nprint(json.dumps([sys.path, os.environ['PATH']]))\n"
    )
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONUSERBASE": str(base),
        SAVED_PACKAGES_ENV: str(saved),
        "PYTHONPATH": str(launcher),
    }
    out = subprocess.run(
        [SYSTEM_PYTHON, "-c", KERNEL_BOOT],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    path, search = json.loads(out.stdout)
    user_site = f"{base}/lib/python{version}/site-packages"
    first_image = next(
        i
        for i, p in enumerate(path)
        if p.endswith(("site-packages", "dist-packages")) and p not in (user_site, str(saved_site))
    )
    assert path.index(user_site) < path.index(str(saved_site)) < first_image
    assert search.split(os.pathsep)[:2] == [f"{base}/bin", f"{saved}/bin"]


def test_a_file_swapped_for_a_pipe_is_refused_not_waited_on(tmp_path: Path) -> None:
    """Between the walk's look at a name and its open, code in a kernel may put a pipe there:
    the open does not wait for a writer, and the save is refused."""
    os.mkfifo(tmp_path / "pkg.py")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with (
            tarfile.open(fileobj=io.BytesIO(), mode="w") as tar,
            pytest.raises(ContainerKernelError, match="changed while it was saved"),
        ):
            _add_file(tar, fd, "pkg.py", "packages/pkg.py", os.getuid(), "p", 10**6, ArchiveCount())
    finally:
        os.close(fd)


def test_a_saved_images_kernel_is_named_by_its_name_and_what_it_came_from() -> None:
    ref = "localhost/jupyter-gpu-containers/saved/u1000/nlp:20261127-120000"
    image = ImageRecord(
        id="sha256:" + "d" * 64,
        tags=(ref,),
        labels={L.SAVED_FROM: REF, "com.nvidia.pytorch.version": "2.4.0a0"},
        env={
            "NVIDIA_PRODUCT_NAME": "PyTorch",
            "PYTORCH_VERSION": "2.4.0a0",
            "NVIDIA_PYTORCH_VERSION": "24.05",
        },
        entrypoint=(),
        user="",
        created="",
        size=0,
    )
    assert display_name_for(ref, image) == (
        f"PyTorch 24.05 · nlp:20261127-120000 (saved from {REF})"
    )
    plain = ImageRecord(**{**image.__dict__, "labels": {}})
    assert display_name_for(ref, plain) == f"PyTorch 24.05 · {ref}"


def test_a_user_keeps_few_ended_saves_and_others_keep_theirs() -> None:
    """Each ended save holds its log: one user ending build after build (a first step that
    fails at once) keeps only the newest few, and nobody else's go."""
    from typing import Any, cast

    from jupyter_gpu_containers.images.saves import ENDED_KEPT_PER_USER, ImageSaves, Save
    from jupyter_gpu_containers.policy.admin_policy import ContainerPolicy

    saves = ImageSaves(backend=cast(Any, None), policy=ContainerPolicy(), state=cast(Any, None))
    others = Save(id="other", whose="bob", base="b", image="i", state="error", finished=1.0)
    saves._saves[others.id] = others
    for n in range(ENDED_KEPT_PER_USER + 5):
        save = Save(id=f"s{n}", whose="alice", base="b", image="i", state="error")
        save.finished = 100.0 + n
        saves._saves[save.id] = save
        saves._running += 1
        saves._finish(save)
    under_way = Save(id="now", whose="alice", base="b", image="i", state="building")
    saves._saves[under_way.id] = under_way
    saves._keep_few_ended("alice")
    mine = sorted(s.id for s in saves._saves.values() if s.whose == "alice")
    expected = sorted([f"s{n}" for n in range(5, ENDED_KEPT_PER_USER + 5)] + ["now"])
    assert mine == expected
    assert "other" in saves._saves and saves._running == 0
