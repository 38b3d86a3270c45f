"""The real node harness (tests/k8s_node.py) runs real pods: a kubelet with its own containerd,
joined to the test control plane, runs the test base image imported from the local Docker engine
as a non-root user, with the volumes a kernel pod has, a pod IP the host reaches, logs through the
API, GPU requests admitted against advertised capacity; and it leaves nothing behind."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from k8s_cluster import (
    TEST_LABEL,
    TEST_RUN,
    ControlPlane,
    dump,
    restricted_security_context,
    wait_for,
)
from k8s_node import RealNode, containerd_image_name, kubernetes_bin_dir, sweep_stale_nodes
from kubernetes import client
from kubernetes.client.exceptions import ApiException

UID = 1000
GID = 1000
POD_TIMEOUT = 90.0


@pytest.fixture
def core(control_plane: ControlPlane) -> client.CoreV1Api:
    return client.CoreV1Api(control_plane.admin_client)


def node_pod(
    name: str,
    node: RealNode,
    image: str,
    command: list[str],
    *,
    volumes: list[dict[str, Any]] | None = None,
    mounts: list[dict[str, Any]] | None = None,
    limits: dict[str, str] | None = None,
    restart_policy: str = "Never",
) -> dict[str, Any]:
    """A pod for the real node that the ``restricted`` standard admits, running as UID/GID."""
    return {
        "metadata": {"name": name, "labels": {TEST_LABEL: TEST_RUN}},
        "spec": {
            "nodeSelector": node.node_selector,
            "tolerations": [node.toleration],
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 2,
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": UID,
                "runAsGroup": GID,
                "fsGroup": GID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumes": volumes or [],
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": command,
                    "securityContext": {**restricted_security_context(), "runAsUser": UID},
                    "volumeMounts": mounts or [],
                    "resources": {"limits": limits or {}},
                }
            ],
        },
    }


def wait_phase(core: client.CoreV1Api, namespace: str, name: str, phases: set[str]) -> Any:
    """The pod once its phase is one of ``phases``; fails with the pod and its events if not."""
    deadline = time.monotonic() + POD_TIMEOUT
    while True:
        pod = core.read_namespaced_pod(name, namespace)
        if pod.status.phase in phases:
            return pod
        if time.monotonic() > deadline:
            events = core.list_namespaced_event(
                namespace, field_selector=f"involvedObject.name={name}"
            )
            lines = [f"{e.reason}: {e.message}" for e in events.items]
            pytest.fail(
                f"pod {name} is {pod.status.phase}, not {phases}:\n{dump(pod.status)}\n"
                + "\n".join(lines)
            )
        time.sleep(0.3)


def run_to_completion(core: client.CoreV1Api, namespace: str, pod: dict[str, Any]) -> str:
    """Create ``pod``, wait for it to succeed, return its log (read through the API)."""
    name = pod["metadata"]["name"]
    core.create_namespaced_pod(namespace, pod)
    done = wait_phase(core, namespace, name, {"Succeeded", "Failed"})
    log: str = core.read_namespaced_pod_log(name, namespace)
    assert done.status.phase == "Succeeded", f"{dump(done.status)}\n{log}"
    return log


def test_node_is_ready_tainted_and_advertises_gpus(
    real_node: RealNode, core: client.CoreV1Api
) -> None:
    node = core.read_node(real_node.name)
    ready = next(c for c in node.status.conditions if c.type == "Ready")
    assert ready.status == "True", dump(node.status)
    assert node.status.allocatable["nvidia.com/gpu"] == "4"
    assert node.status.capacity["nvidia.com/gpu"] == "4"
    # Only pods that ask for the real node land there; no not-ready taint is left.
    assert [t.key for t in node.spec.taints] == [real_node.toleration["key"]]
    assert node.status.node_info.container_runtime_version.startswith("containerd://")
    assert node.status.node_info.kubelet_version.startswith("v1.33.")
    assert {"type": "InternalIP", "address": real_node.node_ip} in [
        a.to_dict() for a in node.status.addresses
    ]


def test_plain_pod_runs_as_non_root_and_its_log_is_readable(
    real_node: RealNode, real_node_image: str, k8s_namespace: str, core: client.CoreV1Api
) -> None:
    script = (
        "import os; print(f'uid={os.getuid()} gid={os.getgid()} groups={sorted(os.getgroups())}')"
    )
    log = run_to_completion(
        core,
        k8s_namespace,
        node_pod("hello", real_node, real_node_image, ["python3", "-c", script]),
    )
    assert log.strip() == f"uid={UID} gid={GID} groups=[{GID}]"
    assert core.read_namespaced_pod("hello", k8s_namespace).spec.node_name == real_node.name


def test_pod_ip_is_reachable_from_the_host(
    real_node: RealNode, real_node_image: str, k8s_namespace: str, core: client.CoreV1Api
) -> None:
    command = ["python3", "-m", "http.server", "8000", "--bind", "0.0.0.0", "--directory", "/etc"]
    core.create_namespaced_pod(
        k8s_namespace, node_pod("web", real_node, real_node_image, command, restart_policy="Always")
    )
    pod = wait_phase(core, k8s_namespace, "web", {"Running"})
    assert real_node.subnet is not None
    assert pod.status.pod_ip, dump(pod.status)
    from ipaddress import ip_address

    assert ip_address(pod.status.pod_ip) in real_node.subnet
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(
                f"http://{pod.status.pod_ip}:8000/os-release", timeout=5
            ) as r:
                body = r.read().decode()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    assert "Debian" in body


def test_volumes_of_a_kernel_pod(
    real_node: RealNode, real_node_image: str, k8s_namespace: str, core: client.CoreV1Api
) -> None:
    """An emptyDir the user writes, a read-only Secret (how the backend hands a kernel its key),
    and /dev/shm as a memory-backed emptyDir with a size limit."""
    key = secrets.token_hex(16)
    core.create_namespaced_secret(
        k8s_namespace,
        {
            "metadata": {"name": "conn", "labels": {TEST_LABEL: TEST_RUN}},
            "stringData": {"key": key},
        },
    )
    script = """
import json, os
open("/work/note.txt", "w").write("written")
st = os.stat("/work/note.txt")
secret = os.stat("/conn/key")
mounts = {line.split()[1]: line.split() for line in open("/proc/mounts")}
try:
    open("/conn/other", "w")
    secret_writable = True
except OSError:
    secret_writable = False
print(json.dumps({
    "owner": [st.st_uid, st.st_gid],
    "key": open("/conn/key").read(),
    "key_mode": oct(secret.st_mode & 0o777),
    "key_gid": secret.st_gid,
    "secret_writable": secret_writable,
    "shm": mounts["/dev/shm"][2],
    "shm_options": mounts["/dev/shm"][3],
}))
"""
    pod = node_pod(
        "volumes",
        real_node,
        real_node_image,
        ["python3", "-c", script],
        volumes=[
            {"name": "work", "emptyDir": {}},
            {"name": "conn", "secret": {"secretName": "conn", "defaultMode": 0o400}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
        ],
        mounts=[
            {"name": "work", "mountPath": "/work"},
            {"name": "conn", "mountPath": "/conn", "readOnly": True},
            {"name": "shm", "mountPath": "/dev/shm"},
        ],
    )
    seen = json.loads(run_to_completion(core, k8s_namespace, pod))
    assert seen["owner"] == [UID, GID]
    assert seen["key"] == key
    # fsGroup makes the key readable by the user's group; nobody else reads it.
    assert seen["key_mode"] == "0o440" and seen["key_gid"] == GID
    assert seen["secret_writable"] is False
    assert seen["shm"] == "tmpfs", seen
    assert "size=65536k" in seen["shm_options"], seen


def test_host_path_workspace_gets_files_owned_by_the_user(
    real_node: RealNode,
    real_node_image: str,
    control_plane: ControlPlane,
    core: client.CoreV1Api,
    tmp_path: Path,
) -> None:
    """A workspace on the node's disk (hostPath: only a ``privileged`` namespace admits it), as
    Docker's bind mount is: what the kernel writes there belongs to the user on the host."""
    workspace = tmp_path / "home"
    workspace.mkdir()
    os.chown(workspace, UID, GID)
    tmp_path.chmod(0o755)
    namespace = f"t-hostpath-{os.urandom(3).hex()}"
    control_plane.create_namespace(namespace, {"pod-security.kubernetes.io/enforce": "privileged"})
    try:
        pod = node_pod(
            "workspace",
            real_node,
            real_node_image,
            [
                "python3",
                "-c",
                "import os; os.chdir('/home/user'); open('out.txt', 'w').write('from the pod')",
            ],
            volumes=[{"name": "home", "hostPath": {"path": str(workspace), "type": "Directory"}}],
            mounts=[{"name": "home", "mountPath": "/home/user"}],
        )
        run_to_completion(core, namespace, pod)
    finally:
        control_plane.delete_namespace(namespace)
    out = workspace / "out.txt"
    assert out.read_text() == "from the pod"
    assert (out.stat().st_uid, out.stat().st_gid) == (UID, GID)


def test_gpu_request_is_admitted_against_advertised_capacity(
    real_node: RealNode, real_node_image: str, k8s_namespace: str, core: client.CoreV1Api
) -> None:
    """The kubelet admits a pod asking for advertised GPUs (no device plugin, so no device); the
    scheduler refuses more than the node has."""
    log = run_to_completion(
        core,
        k8s_namespace,
        node_pod(
            "gpu",
            real_node,
            real_node_image,
            ["python3", "-c", "print('admitted')"],
            limits={"nvidia.com/gpu": "2"},
        ),
    )
    assert log.strip() == "admitted"
    core.create_namespaced_pod(
        k8s_namespace,
        node_pod("too-many", real_node, real_node_image, ["true"], limits={"nvidia.com/gpu": "5"}),
    )

    def unschedulable() -> bool:
        conditions = core.read_namespaced_pod("too-many", k8s_namespace).status.conditions or []
        return any(c.type == "PodScheduled" and c.reason == "Unschedulable" for c in conditions)

    wait_for(
        unschedulable,
        30,
        "a pod asking for 5 GPUs of a 4-GPU node was not refused by the scheduler",
    )
    pod = core.read_namespaced_pod("too-many", k8s_namespace)
    message = next(c.message for c in pod.status.conditions if c.type == "PodScheduled")
    assert "Insufficient nvidia.com/gpu" in message


def test_deleted_pod_leaves_no_container_mount_or_directory(
    real_node: RealNode, real_node_image: str, k8s_namespace: str, core: client.CoreV1Api
) -> None:
    core.create_namespaced_secret(
        k8s_namespace,
        {"metadata": {"name": "conn", "labels": {TEST_LABEL: TEST_RUN}}, "stringData": {"k": "v"}},
    )
    pod = node_pod(
        "doomed",
        real_node,
        real_node_image,
        ["python3", "-c", "import time; time.sleep(600)"],
        restart_policy="Always",
        volumes=[
            {"name": "conn", "secret": {"secretName": "conn"}},
            {"name": "shm", "emptyDir": {"medium": "Memory"}},
        ],
        mounts=[
            {"name": "conn", "mountPath": "/conn", "readOnly": True},
            {"name": "shm", "mountPath": "/dev/shm"},
        ],
    )
    core.create_namespaced_pod(k8s_namespace, pod)
    uid = wait_phase(core, k8s_namespace, "doomed", {"Running"}).metadata.uid
    assert len(real_node.pod_containers(uid)) == 2  # the sandbox and the container
    pod_dir = real_node.kubelet_root / "pods" / uid
    assert any(
        str(pod_dir) in line for line in Path("/proc/self/mountinfo").read_text().splitlines()
    )

    core.delete_namespaced_pod("doomed", k8s_namespace)

    def gone() -> bool:
        try:
            core.read_namespaced_pod("doomed", k8s_namespace)
        except ApiException as e:
            return e.status == 404
        return False

    wait_for(gone, 60, "the kubelet did not confirm the pod's deletion in 60 s")
    # The kubelet removes the container at once and the sandbox at its next garbage collection.
    wait_for(
        lambda: not real_node.pod_containers(uid),
        90,
        f"containers of pod {uid} are still in containerd",
    )
    assert not any(
        str(pod_dir) in line for line in Path("/proc/self/mountinfo").read_text().splitlines()
    )
    wait_for(lambda: not pod_dir.exists(), 30, f"{pod_dir} is still there")


@pytest.fixture
def spare_node(control_plane: ControlPlane, tmp_path: Path) -> Iterator[RealNode]:
    node = RealNode(
        control_plane, kubernetes_bin_dir(), tmp_path, f"spare-{os.urandom(3).hex()}", gpus=0
    )
    yield node
    node.stop()  # a second stop() finds nothing left to do


def test_stop_removes_everything_even_with_pods_running(
    spare_node: RealNode, k8s_namespace: str, core: client.CoreV1Api
) -> None:
    tunables = {
        t: (Path("/proc/sys") / t).read_text() for t in ("vm/overcommit_memory", "kernel/panic")
    }
    spare_node.start()
    image = spare_node.import_image("jgc/debian-ipykernel:bookworm")
    pod = node_pod(
        "left-running",
        spare_node,
        image,
        ["python3", "-c", "import time; time.sleep(600)"],
        restart_policy="Always",
        volumes=[{"name": "shm", "emptyDir": {"medium": "Memory"}}],
        mounts=[{"name": "shm", "mountPath": "/dev/shm"}],
    )
    core.create_namespaced_pod(k8s_namespace, pod)
    wait_phase(core, k8s_namespace, "left-running", {"Running"})
    pids = [p.pid for p in spare_node._procs.values()]
    shims = _shims_of(spare_node)
    assert shims, "the running pod has no containerd shim"

    spare_node.stop()

    for pid in pids + shims:
        assert _ends(pid), f"process {pid} outlived stop()"
    assert not spare_node.run_dir.exists() and not spare_node.lib_dir.exists()
    roots = (str(spare_node.run_dir), str(spare_node.lib_dir))
    assert not [
        line
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if any(r in line for r in roots)
    ]
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, check=True).stdout
    assert spare_node.bridge not in links
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{spare_node.cgroup_root.lstrip('/')}"))
    assert {t: (Path("/proc/sys") / t).read_text() for t in tunables} == tunables
    with pytest.raises(ApiException) as missing:
        core.read_node(spare_node.name)
    assert missing.value.status == 404


def test_a_killed_runs_node_is_swept_by_the_next_start(
    spare_node: RealNode, k8s_namespace: str, core: client.CoreV1Api
) -> None:
    """A run killed before its ``stop()`` leaves a pod's processes, shims, mounts, cgroups and a
    bridge: the next node's start removes them (its owner, a run that is over, says they are
    stale)."""
    spare_node.start()
    image = spare_node.import_image("jgc/debian-ipykernel:bookworm")
    pod = node_pod(
        "orphan",
        spare_node,
        image,
        ["python3", "-c", "import time; time.sleep(600)"],
        restart_policy="Always",
        volumes=[{"name": "shm", "emptyDir": {"medium": "Memory"}}],
        mounts=[{"name": "shm", "mountPath": "/dev/shm"}],
    )
    core.create_namespaced_pod(k8s_namespace, pod)
    wait_phase(core, k8s_namespace, "orphan", {"Running"})
    shims = _shims_of(spare_node)
    # The run "dies": its kubelet and containerd are killed, the pod's processes and shims stay.
    for proc in spare_node._procs.values():
        proc.kill()
        proc.wait()
    assert all(Path(f"/proc/{pid}").exists() for pid in shims)
    # A run id of the form stale_runs judges, whose process (pid 1, started at boot) started
    # after the run did: so the run is over.
    (spare_node.lib_dir / "owner").write_text("1000000000-1\n")

    sweep_stale_nodes(say=lambda _: None)

    for pid in shims:
        assert not Path(f"/proc/{pid}").exists(), f"shim {pid} outlived the sweep"
    assert not spare_node.run_dir.exists() and not spare_node.lib_dir.exists()
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{spare_node.cgroup_root.lstrip('/')}"))
    assert not Path(f"/sys/class/net/{spare_node.bridge}").exists()
    assert not [
        line
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if f"jgc-k8s-{spare_node.id}" in line
    ]
    spare_node._procs.clear()


def _ends(pid: int, timeout: float = 30) -> bool:
    """Whether process ``pid`` ends within ``timeout`` s. A shim is reparented to PID 1 once its
    task is deleted and exits a moment later; an exited process that PID 1 has not reaped yet (a
    zombie: some sandboxes' init reaps late) runs nothing and holds nothing, so it counts as
    ended."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        if stat.rpartition(")")[2].split()[0] == "Z":
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _shims_of(node: RealNode) -> list[int]:
    """Pids of the containerd shims serving this node's containerd (their command line names its
    socket)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            cmdline
            and cmdline[0].endswith(b"containerd-shim-runc-v2")
            and str(node.socket).encode() in cmdline
        ):
            found.append(int(proc.name))
    return found


@pytest.mark.parametrize(
    ("docker_ref", "name"),
    [
        ("jgc/debian-ipykernel:bookworm", "docker.io/jgc/debian-ipykernel:bookworm"),
        ("python", "docker.io/library/python:latest"),
        ("127.0.0.1:5000/team/image:1", "127.0.0.1:5000/team/image:1"),
        ("localhost/image", "localhost/image:latest"),
    ],
)
def test_containerd_names_images_as_the_cri_does(docker_ref: str, name: str) -> None:
    assert containerd_image_name(docker_ref) == name
