"""The placements (placement/): one per kind of engine, chosen once by Services, and what each
hands the plan. The launches themselves are tested end to end against real engines (the GPU
allocation, queue, quota and warm pool tests on Docker; the Kubernetes tests on a cluster)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config, LoggingConfigurable

from jupyter_gpu_containers.backends.kubernetes.k8s import KubernetesBackend
from jupyter_gpu_containers.backends.slurm.backend import SlurmBackend
from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.base.errors import ContainerKernelError
from jupyter_gpu_containers.base.records import ContainerRecord
from jupyter_gpu_containers.gpus.allocator import Attachment
from jupyter_gpu_containers.placement.batch import BatchPlacement
from jupyter_gpu_containers.placement.cluster import ClusterPlacement, refuse_host_sharing
from jupyter_gpu_containers.placement.host import HostPlacement
from jupyter_gpu_containers.services import Services, placement_class


def test_a_docker_server_places_kernels_on_its_host() -> None:
    services = Services(LoggingConfigurable(config=Config()))
    try:
        assert isinstance(services.placement, HostPlacement)
        assert services.placement.backend is services.backend
        assert services.placement.queue is services.queue
    finally:
        services.close()


def test_a_scheduled_attachment_names_a_count_and_hides_no_gpus() -> None:
    with_gpus = Attachment.scheduled(2, "nvidia.com/mig-1g.10gb")
    assert (with_gpus.count, with_gpus.resource) == (2, "nvidia.com/mig-1g.10gb")
    # The device plugin says which GPUs the container has: nothing may hide them.
    assert "NVIDIA_VISIBLE_DEVICES" not in with_gpus.environment
    assert with_gpus.runtime is None and with_gpus.device_requests == []
    # A kernel without GPUs says so to legacy CUDA images (which default to "all").
    assert Attachment.scheduled(0, "").environment == {"NVIDIA_VISIBLE_DEVICES": "void"}


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"GPUQueue": {"wait_by_default": True}}, "GPUQueue.wait_by_default"),
        ({"GPUQuota": {"hours_per_user": 5.0}}, "GPUQuota.hours_per_user"),
        ({"GPUQuota": {"hours_per_group": {"ml-course": 200.0}}}, "GPUQuota.hours_per_group"),
        ({"GPUReclaim": {"enabled": True}}, "GPUReclaim.enabled"),
    ],
)
def test_a_cluster_refuses_what_only_a_host_does(settings: dict, named: str) -> None:
    with pytest.raises(ContainerKernelError, match=rf"remove {named} from the kernel service"):
        refuse_host_sharing(Config(settings))


def test_a_cluster_takes_what_does_apply_there() -> None:
    # Turned off, or the per-user cap (which the cluster placement counts): nothing to refuse.
    refuse_host_sharing(
        Config(
            {
                "GPUQueue": {"wait_by_default": False},
                "GPUQuota": {"hours_per_user": 0.0, "hours_per_group": {"ml-course": 0.0}},
                "GPUReclaim": {"enabled": False},
                "GPUAllocator": {"max_gpus_per_user": 1},
            }
        )
    )


def test_the_kernel_service_on_kubernetes_will_not_start_with_a_quota(tmp_path: Path) -> None:
    """Before it reaches any cluster: the sentence, exit status 1."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter_gpu_containers.cli",
            "serve",
            "--ServiceApp.backend=kubernetes",
            "--GPUQuota.hours_per_user=5",
            "--GPUReclaim.enabled=True",
            "--port=0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert (
        "The kernel service cannot start: On Kubernetes the cluster's scheduler places kernels "
        "and their GPUs, so GPU-hour quotas and reclaiming idle GPUs cannot apply there: remove "
        "GPUQuota.hours_per_user and GPUReclaim.enabled from the kernel service's configuration"
    ) in done.stderr


def test_a_slurm_service_needs_a_root_for_private_directories_the_nodes_share() -> None:
    with pytest.raises(ContainerKernelError, match=r"set the root of the kernels' connection") as e:
        BatchPlacement.prepare_service_config(Config())
    assert e.value.setting == "ContainerPolicy.connection_dir_root"
    BatchPlacement.prepare_service_config(
        Config({"ContainerPolicy": {"connection_dir_root": "/shared/jupyter-kernels"}})
    )
    with pytest.raises(ContainerKernelError, match=r"^On Slurm the cluster's scheduler places"):
        BatchPlacement.prepare_service_config(
            Config(
                {
                    "ContainerPolicy": {"connection_dir_root": "/shared/jupyter-kernels"},
                    "GPUQueue": {"wait_by_default": True},
                }
            )
        )


def test_only_services_chooses_a_placement() -> None:
    """The placements are built in one place (services.py), by the engine's declaration."""
    package = Path(__file__).parent.parent / "jupyter_gpu_containers"
    readers = sorted(
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if "schedules_gpus" in p.read_text() and "labextension" not in p.parts
    )
    # The interface declares it, the backends set it, services.py reads it to choose the
    # placement. The ledger reads it too, for another question: whether a container's GPUs need
    # the service's own holder record (the host's bookings do; a scheduler's pods and jobs are
    # its own records), never to choose where a kernel goes.
    assert readers == [
        "backends/backend.py",
        "backends/docker/engine.py",
        "backends/kubernetes/k8s.py",
        "backends/podman/engine.py",
        "backends/slurm/backend.py",
        "gpus/allocator.py",
        "services.py",
    ]
    for built in ("BatchPlacement", "ClusterPlacement", "HostPlacement"):
        called = re.compile(rf"(?<!class ){built}\(")
        builders = [
            str(p.relative_to(package))
            for p in package.rglob("*.py")
            if called.search(p.read_text()) and "labextension" not in p.parts
        ]
        assert builders == ["services.py"], built


def test_how_a_kernel_is_reached_is_the_placements_word() -> None:
    """Whether a kernel shares its private directory with this host (or has an address of its
    own) is declared by the placement, not asked of the engine."""
    reached = [
        (p.shares_directory, p.reaches_kernels_on_loopback, p.kernel_chooses_ports)
        for p in (HostPlacement, ClusterPlacement, BatchPlacement)
    ]
    # The host's: the directory mounted, loopback. A pod's: a Secret, its own address. A job's:
    # the directory on the shared file system, the node's address, ports the kernel chose.
    assert reached == [(True, True, False), (False, False, False), (True, False, True)]
    # Only the host's books this host's GPUs, and checks a request against them before a start:
    # a scheduler queues what it cannot give now (a login node has no GPUs of its own).
    assert [p.books_host_gpus for p in (HostPlacement, ClusterPlacement, BatchPlacement)] == [
        True,
        False,
        False,
    ]
    assert placement_class(SlurmBackend) is BatchPlacement
    assert placement_class(KubernetesBackend) is ClusterPlacement
    package = Path(__file__).parent.parent / "jupyter_gpu_containers"
    # The backends declare no such thing any more (connection_on_pod_ip), and only a backend
    # knows what a pod's IP is.
    assert [
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if ("connection_on_pod_ip" in p.read_text() or "pod_ip" in p.read_text())
        and "labextension" not in p.parts
        and p.relative_to(package).parts[0] != "backends"
    ] == []
    assert "connection_on_pod_ip" not in (package / "backends" / "backend.py").read_text()


ME = L.OwnerProcess("host-a", "boot-1", 4242, "started-1")


@pytest.mark.parametrize(
    ("owner", "server_id", "status", "verdict"),
    [
        # A pod's server is its namespace's service, whatever pod or host it ran in.
        (L.OwnerProcess("pod-b", "boot-9", 7, "s"), "svc", "running", "reattach"),
        (L.OwnerProcess("pod-b", "boot-9", 7, "s"), "svc", "exited", "remove"),
        (None, "svc", "running", "reattach"),  # no owner label: still the namespace's
        (L.OwnerProcess("pod-b", "boot-9", 7, "s"), "other-svc", "running", "leave"),
        (ME, "svc", "running", "leave"),  # launched by this very process while it recovers
    ],
)
def test_what_a_cluster_service_does_with_pods_left_behind(
    owner: L.OwnerProcess | None, server_id: str, status: str, verdict: str, tmp_path: Path
) -> None:
    labels = {L.SERVER_ID: server_id}
    if owner is not None:
        labels[L.OWNER_PROCESS] = owner.token()
    record = ContainerRecord("pod", "pod", "img", labels, status)
    placement = ClusterPlacement.__new__(ClusterPlacement)  # the verdict reads no state
    no_state: Any = None  # a cluster's kernels are never in the host state directory
    assert placement.left_behind(record, "svc", no_state, ME, str(tmp_path)) == verdict
