"""The Kubernetes control plane harness (tests/k8s_cluster.py) does what a cluster does: TLS and
authentication, RBAC and PodSecurity, the scheduler placing GPU pods on nodes that advertise
``nvidia.com/gpu``, the controller manager's garbage collector; and it cleans up after itself."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from k8s_cluster import (
    TEST_LABEL,
    TEST_RUN,
    WORKDIR_PREFIX,
    ClusterStartError,
    ControlPlane,
    dump,
    restricted_security_context,
    sweep_stale_workdirs,
    wait_for,
)
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

GPU = "nvidia.com/gpu"


@pytest.fixture
def core(control_plane: ControlPlane) -> client.CoreV1Api:
    return client.CoreV1Api(control_plane.admin_client)


@pytest.fixture
def fake_nodes(control_plane: ControlPlane) -> Iterator[Any]:
    """``fake_nodes(count, gpus)``: fake GPU nodes that only this test's pods select (a label of
    their own), deleted afterwards with the pods bound to them."""
    made: list[str] = []

    def make(count: int, gpus: int) -> dict[str, str]:
        group = f"g{os.urandom(3).hex()}"
        for i in range(count):
            name = f"fake-{group}-{i}"
            control_plane.add_fake_node(
                name,
                gpus=gpus,
                labels={"jgc-test/group": group, "nvidia.com/cuda.driver.major": "535"},
            )
            made.append(name)
        return {"jgc-test/group": group}

    yield make
    for name in made:
        control_plane.delete_node(name)


def gpu_pod(name: str, gpus: int, node_selector: dict[str, str]) -> dict[str, Any]:
    """A pod the ``restricted`` standard admits, asking for ``gpus`` GPUs. The image is never
    pulled: fake nodes run nothing."""
    return {
        "metadata": {"name": name, "labels": {TEST_LABEL: TEST_RUN}},
        "spec": {
            "nodeSelector": node_selector,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "kernel",
                    "image": "jgc-test/never-pulled:1",
                    "securityContext": restricted_security_context(),
                    "resources": {"limits": {GPU: str(gpus)}},
                }
            ],
        },
    }


def pod_scheduled(pod: Any) -> Any:
    return next((c for c in pod.status.conditions or [] if c.type == "PodScheduled"), None)


def test_apiserver_ready_through_tls_only_on_loopback(control_plane: ControlPlane) -> None:
    import urllib3

    cert, key = control_plane.sign_client_cert("readyz-reader")
    http = urllib3.PoolManager(
        cert_reqs="CERT_REQUIRED",
        ca_certs=str(control_plane.ca_file),
        cert_file=str(cert),
        key_file=str(key),
    )
    response = http.request("GET", f"{control_plane.server}/readyz?verbose")
    assert response.status == 200, response.data
    assert b"readyz check passed" in response.data
    assert b"[+]poststarthook/rbac/bootstrap-roles ok" in response.data

    # The serving certificate is the harness CA's and nothing else's: a client that does not
    # trust that CA refuses the connection.
    stranger = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", retries=False)
    with pytest.raises(urllib3.exceptions.SSLError):
        stranger.request("GET", f"{control_plane.server}/readyz")

    # Anonymous requests are authenticated as nobody and authorized for nothing but health.
    anonymous = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=str(control_plane.ca_file))
    assert anonymous.request("GET", f"{control_plane.server}/api/v1/namespaces").status == 403

    # Bound to 127.0.0.1: the machine's other addresses do not answer on the port.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this picks the outgoing address
        own_address = probe.getsockname()[0]
    if own_address.startswith("127."):
        return
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((own_address, control_plane.port), timeout=5).close()


def test_client_certificates_and_tokens_authenticate_as_who_they_name(
    control_plane: ControlPlane, k8s_namespace: str, tmp_path: Path
) -> None:
    cert, key = control_plane.sign_client_cert("alice", ["team-a", "team-b"])
    configuration = client.Configuration()
    configuration.host = control_plane.server
    configuration.ssl_ca_cert = str(control_plane.ca_file)
    configuration.cert_file, configuration.key_file = str(cert), str(key)
    with client.ApiClient(configuration) as alice:
        review = client.AuthenticationV1Api(alice).create_self_subject_review({})
        assert review.status.user_info.username == "alice"
        assert {"team-a", "team-b"} <= set(review.status.user_info.groups)
        # RBAC: a user nobody granted anything may not list pods.
        with pytest.raises(ApiException) as refused:
            client.CoreV1Api(alice).list_namespaced_pod(k8s_namespace)
        assert refused.value.status == 403

    token = control_plane.service_account_token(k8s_namespace, "default", seconds=600)
    path = control_plane.kubeconfig_for_token(token, tmp_path / "sa.kubeconfig")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with config.new_client_from_config(config_file=path) as service_account:
        review = client.AuthenticationV1Api(service_account).create_self_subject_review({})
        assert review.status.user_info.username == f"system:serviceaccount:{k8s_namespace}:default"
        with pytest.raises(ApiException) as refused:
            client.CoreV1Api(service_account).list_namespaced_secret(k8s_namespace)
        assert refused.value.status == 403


def test_apply_creates_namespaced_and_cluster_objects_and_applies_again(
    control_plane: ControlPlane, k8s_namespace: str, tmp_path: Path
) -> None:
    cluster_role = f"jgc-test-{k8s_namespace}"
    manifest = tmp_path / "rbac.yaml"
    manifest.write_text(
        f"""\
apiVersion: v1
kind: ServiceAccount
metadata:
  name: reader
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: pod-reader
rules:
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: pod-reader
  namespace: "{{{{ namespace }}}}"
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}}
subjects:
  - {{kind: ServiceAccount, name: reader, namespace: "{{{{namespace}}}}"}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {cluster_role}
rules:
  - apiGroups: [""]
    resources: [nodes]
    verbs: [get]
"""
    )
    rbac = client.RbacAuthorizationV1Api(control_plane.admin_client)
    try:
        applied = control_plane.apply(manifest, k8s_namespace)
        assert [o["kind"] for o in applied] == [
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ClusterRole",
        ]
        assert applied[0]["metadata"]["namespace"] == k8s_namespace
        # The text itself, a second time: it updates what exists instead of failing.
        again = control_plane.apply(manifest.read_text(), k8s_namespace)
        assert [o["metadata"]["uid"] for o in again] == [o["metadata"]["uid"] for o in applied]
        assert rbac.read_cluster_role(cluster_role).rules[0].resources == ["nodes"]

        token = control_plane.service_account_token(k8s_namespace, "reader")
        with config.new_client_from_config(
            config_file=control_plane.kubeconfig_for_token(token, tmp_path / "reader.kubeconfig")
        ) as reader:
            assert client.CoreV1Api(reader).list_namespaced_pod(k8s_namespace).items == []
            with pytest.raises(ApiException) as refused:
                client.CoreV1Api(reader).list_pod_for_all_namespaces()
            assert refused.value.status == 403
    finally:
        with contextlib.suppress(ApiException):
            rbac.delete_cluster_role(cluster_role)


def test_namespace_is_restricted_labelled_and_deleted(
    control_plane: ControlPlane, core: client.CoreV1Api
) -> None:
    name = f"jgc-ns-{os.urandom(3).hex()}"
    control_plane.create_namespace(name)
    try:
        labels = core.read_namespace(name).metadata.labels
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        assert labels[TEST_LABEL] == TEST_RUN
        assert core.read_namespaced_service_account("default", name).metadata.name == "default"

        # PodSecurity admission refuses a pod that may run as root.
        loose = {
            "metadata": {"name": "loose"},
            "spec": {"containers": [{"name": "c", "image": "jgc-test/never-pulled:1"}]},
        }
        with pytest.raises(ApiException) as refused:
            core.create_namespaced_pod(name, loose)
        assert refused.value.status == 403
        reason = json.loads(refused.value.body)["message"]
        assert 'violates PodSecurity "restricted:latest"' in reason, reason
    finally:
        control_plane.delete_namespace(name)
    with pytest.raises(ApiException) as gone:
        core.read_namespace(name)
    assert gone.value.status == 404


def test_scheduler_binds_a_gpu_pod_to_a_fake_gpu_node(
    control_plane: ControlPlane, core: client.CoreV1Api, k8s_namespace: str, fake_nodes: Any
) -> None:
    selector = fake_nodes(1, gpus=4)
    node = core.list_node(label_selector=f"jgc-test/group={selector['jgc-test/group']}").items[0]
    assert node.status.allocatable[GPU] == "4"
    assert node.metadata.labels["nvidia.com/cuda.driver.major"] == "535"
    assert not node.spec.taints, "the node lifecycle controller is off: no taints"

    core.create_namespaced_pod(k8s_namespace, gpu_pod("kernel", 1, selector))

    def bound() -> bool:
        pod = core.read_namespaced_pod("kernel", k8s_namespace)
        return pod.spec.node_name is not None

    wait_for(bound, 30, "the scheduler did not bind the pod within 30 s")
    pod = core.read_namespaced_pod("kernel", k8s_namespace)
    assert pod.spec.node_name == node.metadata.name, dump(pod)
    assert pod_scheduled(pod).status == "True", dump(pod)


def test_a_pod_asking_more_gpus_than_any_node_has_stays_pending_with_the_reason(
    control_plane: ControlPlane, core: client.CoreV1Api, k8s_namespace: str, fake_nodes: Any
) -> None:
    selector = fake_nodes(2, gpus=4)
    core.create_namespaced_pod(k8s_namespace, gpu_pod("greedy", 5, selector))

    def judged() -> bool:
        condition = pod_scheduled(core.read_namespaced_pod("greedy", k8s_namespace))
        return condition is not None and condition.status == "False"

    wait_for(judged, 30, "the scheduler gave no verdict on the pod within 30 s")
    pod = core.read_namespaced_pod("greedy", k8s_namespace)
    condition = pod_scheduled(pod)
    assert pod.spec.node_name is None
    assert pod.status.phase == "Pending"
    assert condition.reason == "Unschedulable"
    assert f"2 Insufficient {GPU}" in condition.message, condition.message

    def event_recorded() -> bool:
        events = core.list_namespaced_event(
            k8s_namespace, field_selector="involvedObject.name=greedy,reason=FailedScheduling"
        ).items
        return any(f"Insufficient {GPU}" in (e.message or "") for e in events)

    wait_for(event_recorded, 30, "the scheduler recorded no FailedScheduling event")


def test_garbage_collector_deletes_the_secret_its_pod_owns(
    control_plane: ControlPlane, core: client.CoreV1Api, k8s_namespace: str, fake_nodes: Any
) -> None:
    selector = fake_nodes(1, gpus=1)
    pod = core.create_namespaced_pod(k8s_namespace, gpu_pod("owner", 1, selector))
    owner = {"apiVersion": "v1", "kind": "Pod", "name": "owner", "uid": pod.metadata.uid}
    core.create_namespaced_secret(
        k8s_namespace,
        {
            "metadata": {"name": "owned", "ownerReferences": [owner]},
            "stringData": {"key": "not a real key"},
        },
    )
    unowned = {"metadata": {"name": "unowned"}, "stringData": {"key": "x"}}
    core.create_namespaced_secret(k8s_namespace, unowned)

    core.delete_namespaced_pod("owner", k8s_namespace, grace_period_seconds=0)

    def secret_gone() -> bool:
        try:
            core.read_namespaced_secret("owned", k8s_namespace)
        except ApiException as e:
            if e.status == 404:
                return True
            raise
        return False

    wait_for(secret_gone, 60, "the garbage collector left the owned Secret for 60 s")
    assert core.read_namespaced_secret("unowned", k8s_namespace).metadata.name == "unowned"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is an ended process its parent has not reaped yet.
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return False


def test_a_failed_start_says_why_and_stop_ends_what_did_start(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("kube-scheduler", "kube-controller-manager"):
        (bin_dir / name).symlink_to(control_plane.bin_dir / name)
    apiserver = bin_dir / "kube-apiserver"
    apiserver.write_text("#!/bin/sh\necho 'E0101 flag --no-such-flag is unknown' >&2\nexit 3\n")
    apiserver.chmod(0o755)

    plane = ControlPlane(bin_dir, tmp_path / "work")
    (tmp_path / "work").mkdir()
    try:
        with pytest.raises(ClusterStartError) as failed:
            plane.start(timeout=30)
        message = str(failed.value)
        assert "kube-apiserver did not become ready (/readyz) (exited with status 3)" in message
        assert "flag --no-such-flag is unknown" in message
        pids = [p.popen.pid for p in plane._processes]
        assert len(pids) == 2, "etcd and the apiserver were started"
    finally:
        plane.stop()
    assert not [pid for pid in pids if _pid_alive(pid)], "stop() left a process running"
    plane.stop()  # twice is harmless

    empty = ControlPlane(tmp_path / "nothing", tmp_path / "work2")
    with pytest.raises(ClusterStartError, match="binaries kube-apiserver, kube-scheduler"):
        empty.start()
    empty.stop()


def test_the_admin_kubeconfig_reaches_the_release_built_here(control_plane: ControlPlane) -> None:
    assert control_plane.version().startswith("v1.33.")
    assert control_plane.server == f"https://127.0.0.1:{control_plane.port}"
    assert stat.S_IMODE(os.stat(control_plane.ca_key_file).st_mode) == 0o600
    with config.new_client_from_config(config_file=str(control_plane.admin_kubeconfig)) as admin:
        names = {n.metadata.name for n in client.CoreV1Api(admin).list_namespace().items}
    assert {"default", "kube-system"} <= names


def test_work_directories_of_killed_runs_are_swept(tmp_path: Path) -> None:
    """A run killed before it could stop its control plane leaves its work directory (its
    processes die with it): the next session removes it, and nothing of a live run, nothing it
    cannot judge, and nothing with a mount under it."""
    base = Path(tempfile.gettempdir())
    ended = "1000000000-1"  # pid 1 started long after that: the run is over
    stale = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{ended}.", dir=base))
    (stale / "etcd").mkdir()
    (stale / "etcd" / "wal").write_bytes(b"x")
    mounted = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{ended}.", dir=base))
    unjudgeable = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}someone.", dir=base))
    live = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{TEST_RUN}.", dir=base))
    (mounted / "volume").mkdir()
    is_root = os.geteuid() == 0
    if is_root:
        subprocess.run(["mount", "-t", "tmpfs", "jgc-test", str(mounted / "volume")], check=True)
    said: list[str] = []
    try:
        sweep_stale_workdirs(said.append)
        assert not stale.exists()
        assert unjudgeable.exists() and live.exists()
        assert mounted.exists() == is_root
        assert any(str(stale) in line for line in said), said
    finally:
        if is_root:
            subprocess.run(["umount", str(mounted / "volume")], check=True)
        for path in (stale, mounted, unjudgeable, live):
            shutil.rmtree(path, ignore_errors=True)
