"""What a kernel's own view says of its mounts (routes/kernel_view.py), without an engine."""

from __future__ import annotations

from jupyter_gpu_containers.backends.backend import ContainerDetails, MountInfo
from jupyter_gpu_containers.host.identity import KernelUser
from jupyter_gpu_containers.routes.kernel_view import mounts_json

ALICE = KernelUser("alice", 2001, 2001, "/srv/ws/alice")


def details(*mounts: MountInfo) -> ContainerDetails:
    return ContainerDetails(
        id="c1",
        name="kernel",
        image_id="sha256:" + "ab" * 32,
        image_ref="jgc/demo:bookworm",
        labels={},
        status="running",
        created="",
        started_at="",
        finished_at="",
        exit_code=0,
        oom_killed=False,
        error="",
        mounts=mounts,
        tmpfs=(),
    )


MOUNTS = (
    MountInfo("bind", "/root/.local/share/jgc/packages/alice", "/opt/jgc/packages", False),
    MountInfo("bind", "/srv/ws/alice", "/workspace", False),
    MountInfo("dataset", "course (claim course-data)", "/datasets/course", True),
    MountInfo("bind", "/srv/ws/alice-other/x", "/data", True),
    MountInfo("bind", "/root/.local/share/jgc/kernels/k1", "/etc/jgc", True),
)


def test_mounts_are_listed_by_their_path_in_the_container_whatever_the_engines_order() -> None:
    targets = [m["target"] for m in mounts_json(details(*MOUNTS), None)]
    assert targets == sorted(targets)
    backwards = [m["target"] for m in mounts_json(details(*reversed(MOUNTS)), None)]
    assert backwards == targets


def test_a_service_user_sees_where_their_files_come_from_not_the_services_paths() -> None:
    shown = {m["target"]: m["source"] for m in mounts_json(details(*MOUNTS), ALICE)}
    assert shown == {
        "/workspace": "/srv/ws/alice",
        "/datasets/course": "course (claim course-data)",
        # Another path that merely starts with the workspace's name is not in it.
        "/data": "",
        "/opt/jgc/packages": "",
        "/etc/jgc": "",
    }


def test_a_users_own_server_shows_every_source() -> None:
    assert [m["source"] for m in mounts_json(details(*MOUNTS), None)] == [
        "/srv/ws/alice-other/x",
        "course (claim course-data)",
        "/root/.local/share/jgc/kernels/k1",
        "/root/.local/share/jgc/packages/alice",
        "/srv/ws/alice",
    ]
