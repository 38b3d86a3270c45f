"""A root server's private directories get a tmpfs of their own (privatedirs.py), made where the
Docker engine sees it: in the server's own mount namespace when that is the host's (the mount(2)
call itself), else in the host's, by a process that enters it (a service under systemd with
PrivateTmp= or ProtectSystem= has a namespace of its own). Real mounts and real namespaces
(util-linux's unshare), no engine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TEST_RUN

from jupyter_gpu_containers.base.errors import ContainerKernelError
from jupyter_gpu_containers.host.privatedirs import discard_private_dir, make_private_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")

SIZE_MIB = 4


def mounted_under(root: Path) -> list[str]:
    """Mount points at or under ``root`` in this (the host's) namespace."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == str(root) or p.startswith(f"{root}/")]


@pytest.fixture
def root() -> Iterator[Path]:
    """A root for private directories, mode 0700, bind-mounted on itself and shared, as systemd
    leaves the host's mounts: a namespace made from this one with slave propagation receives
    the mounts made under it. Every mount under it is gone afterwards, whatever the test did."""
    path = Path(tempfile.mkdtemp(prefix=f"jgc-private-dirs-{TEST_RUN}-"))
    try:
        subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
        subprocess.run(["mount", "--make-shared", str(path)], check=True)
        yield path
    finally:
        for point in reversed(mounted_under(path)):
            subprocess.run(["umount", "--lazy", point], check=False)
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def test_a_root_servers_private_directory_is_a_sized_tmpfs_of_its_own(root: Path) -> None:
    path = make_private_dir(str(root), "0123abcd-kernel", (1234, 5678), f"{SIZE_MIB}m")
    assert mounted_under(root)[-1] == path
    info, fs = os.stat(path), os.statvfs(path)
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (1234, 5678, 0o700)
    assert fs.f_blocks * fs.f_frsize == SIZE_MIB * 1024 * 1024
    # Nothing in it is run, set-uid or a device.
    for flag in (os.ST_NOSUID, os.ST_NODEV, os.ST_NOEXEC):
        assert fs.f_flag & flag
    discard_private_dir(path)
    assert not os.path.exists(path)
    assert mounted_under(root) == [str(root)]


# A server in a mount namespace of its own (unshare's), making a private directory under argv[1]
# and saying what it saw; then, told on stdin, discarding it. The engine's namespace is the
# host's, PID 1's (HOST_MOUNT_NAMESPACE); the test's process stands for the host here (argv[2]),
# since a sandbox may keep PID 1's namespace from root (the server then mounts in its own).
SERVER_IN_ITS_OWN_NAMESPACE = r"""
import json, os, sys
from jupyter_gpu_containers.base.errors import ContainerKernelError
from jupyter_gpu_containers.host import privatedirs
from jupyter_gpu_containers.host.privatedirs import discard_private_dir, make_private_dir
privatedirs.HOST_MOUNT_NAMESPACE = sys.argv[2]
try:
    path = make_private_dir(sys.argv[1], "0123abcd-kernel", None, "4m")
except ContainerKernelError as e:
    print(json.dumps({"refused": str(e), "setting": e.setting}), flush=True)
    sys.exit(0)
print(json.dumps({"path": path, "mounted_here": os.path.ismount(path)}), flush=True)
sys.stdin.readline()
discard_private_dir(path)
print(json.dumps({"gone": not os.path.exists(path)}), flush=True)
"""


def server_in_its_own_namespace(root: Path, propagation: str) -> subprocess.Popen[str]:
    unshare = ["unshare", "--mount", f"--propagation={propagation}"]
    engines_namespace = f"/proc/{os.getpid()}/ns/mnt"
    return subprocess.Popen(
        [*unshare, sys.executable, "-c", SERVER_IN_ITS_OWN_NAMESPACE, str(root), engines_namespace],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_server_in_a_namespace_of_its_own_mounts_where_the_engine_sees_it(root: Path) -> None:
    with server_in_its_own_namespace(root, "slave") as server:
        assert server.stdout is not None and server.stdin is not None
        made = json.loads(server.stdout.readline())
        # Made in the host's namespace (the engine's), and received in the server's.
        assert made["mounted_here"] is True
        assert made["path"] in mounted_under(root)
        server.stdin.write("\n")
        server.stdin.flush()
        assert json.loads(server.stdout.readline()) == {"gone": True}
    assert mounted_under(root) == [str(root)]


def test_a_namespace_the_hosts_mounts_do_not_reach_is_refused_in_a_sentence(root: Path) -> None:
    with server_in_its_own_namespace(root, "private") as server:
        out, _ = server.communicate(timeout=60)
    refusal = json.loads(out)["refused"]
    assert "could not get a file system of its own (a tmpfs of 4m)" in refusal
    assert "ask an administrator to have private directories made as plain" in refusal
    assert json.loads(out)["setting"] == "ContainerPolicy.private_dir_size"
    # Undone in the host's namespace too, and the directory removed.
    assert mounted_under(root) == [str(root)]
    assert list(root.iterdir()) == []


def test_a_failed_mount_is_refused_in_a_sentence_and_leaves_no_directory(root: Path) -> None:
    with pytest.raises(ContainerKernelError, match="could not get a file system of its own"):
        make_private_dir(str(root), "0123abcd-kernel", None, "not-a-size")
    assert list(root.iterdir()) == []
    assert mounted_under(root) == [str(root)]
