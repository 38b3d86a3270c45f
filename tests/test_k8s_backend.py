"""The Kubernetes backend (k8s.py) against a real control plane (tests/k8s_cluster.py), as the
kernel service's account with only what deploy/kubernetes/rbac.yaml grants it: pods with the
right spec, security context, volumes and Secret; the scheduler's placement of GPU kernels and
its reason for those it cannot place; the GPU holders; a restarted service finding its pods by
their labels; nothing left behind."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from k8s_cluster import TEST_LABEL, TEST_RUN, ControlPlane, wait_for
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from jupyter_gpu_containers.backends.kubernetes.k8s import KubernetesBackend
from jupyter_gpu_containers.backends.kubernetes.pods import SchedulingRefused
from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.base.errors import EngineRefused, MountRefused
from jupyter_gpu_containers.base.records import ContainerSpec, Mount

REPO = Path(__file__).resolve().parent.parent
RBAC = REPO / "deploy" / "kubernetes" / "rbac.yaml"
KEY = "k8s-test-key-" + uuid.uuid4().hex


@pytest.fixture
def service_kubeconfig(
    control_plane: ControlPlane, k8s_namespace: str, tmp_path: Path
) -> Iterator[str]:
    """A kubeconfig of the service's account in the test's namespace, with the RBAC of
    deploy/kubernetes/rbac.yaml and nothing else."""
    applied = control_plane.apply(RBAC, k8s_namespace)
    token = control_plane.service_account_token(k8s_namespace, "jupyter-gpu-containers")
    try:
        yield control_plane.kubeconfig_for_token(token, tmp_path / "service.kubeconfig")
    finally:
        rbac = client.RbacAuthorizationV1Api(control_plane.admin_client)
        for obj in applied:
            name = obj["metadata"]["name"]
            try:
                if obj["kind"] == "ClusterRole":
                    rbac.delete_cluster_role(name)
                elif obj["kind"] == "ClusterRoleBinding":
                    rbac.delete_cluster_role_binding(name)
            except ApiException as e:
                if e.status != 404:
                    raise


@pytest.fixture
def pool(control_plane: ControlPlane) -> Iterator[str]:
    """A node-pool label value of this test's own: its fake nodes carry it, and its backend
    selects it, so that other tests' nodes never take these pods."""
    value = "pool-" + uuid.uuid4().hex[:10]
    made: list[str] = []
    yield value
    core = client.CoreV1Api(control_plane.admin_client)
    for node in core.list_node(label_selector=f"jgc-test-pool={value}").items:
        made.append(node.metadata.name)
    for name in made:
        control_plane.delete_node(name)


def add_nodes(control_plane: ControlPlane, pool: str, count: int, gpus: int) -> list[str]:
    names = [f"{pool}-n{i}" for i in range(count)]
    for name in names:
        control_plane.add_fake_node(
            name,
            gpus=gpus,
            labels={"jgc-test-pool": pool, "nvidia.com/cuda.driver.major": "550"},
        )
    return names


def make_backend(kubeconfig: str, namespace: str, pool: str, **traits: Any) -> KubernetesBackend:
    return KubernetesBackend(
        kubeconfig=kubeconfig,
        namespace=namespace,
        node_selector={"jgc-test-pool": pool},
        # Fake nodes have no kubelet to confirm a graceful deletion.
        removal_grace_period=0,
        **traits,
    )


def kernel_spec(
    tmp_path: Path, *, name: str, gpus: int = 0, user: str = "1000:1000"
) -> ContainerSpec:
    """A ContainerSpec as the launch plan makes one: the private directory with the connection
    file (and its key), the workspace, HOME's tmpfs, /dev/shm, the labels."""
    private = tmp_path / f"private-{name}"
    private.mkdir(mode=0o700)
    connection = {
        "ip": "0.0.0.0",
        "transport": "tcp",
        "shell_port": 50001,
        "iopub_port": 50002,
        "stdin_port": 50003,
        "control_port": 50004,
        "hb_port": 50005,
        "key": KEY,
        "signature_scheme": "hmac-sha256",
    }
    (private / "kernel.json").write_text(json.dumps(connection))
    kernel_id = str(uuid.uuid4())
    return ContainerSpec(
        image="jgc/debian-ipykernel:bookworm",
        command=["python3", "-m", "ipykernel_launcher", "-f", "/run/jupyter-kernel/kernel.json"],
        name=f"jgc-{name}-{kernel_id[:8]}",
        labels={
            L.MANAGED: "true",
            L.KERNEL_ID: kernel_id,
            L.SERVER_ID: "service-test",
            L.USER: "alice",
            L.UID: "1000",
            L.NOTEBOOK: "projects/a b/analysis.ipynb",
            L.CWD: "/home/alice/projects/a b",
            L.IMAGE: "jgc/debian-ipykernel:bookworm",
            L.GPUS: "",
            TEST_LABEL: TEST_RUN,
        },
        environment={"HOME": "/home/jovyan", "USER": "alice"},
        user=user,
        working_dir="/home/jovyan/work/projects/a b",
        mounts=[
            Mount(str(private), "/run/jupyter-kernel", read_only=False),
            Mount("/home/alice", "/home/jovyan/work", read_only=False),
        ],
        tmpfs={"/home/jovyan": "rw,mode=1777,size=256m"},
        shm_size="1g",
        mem_limit="2g",
        port_bindings={p: ("127.0.0.1", p) for p in range(50001, 50006)},
        gpu_count=gpus,
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_kernel_pod_has_the_spec_security_context_volumes_and_secret(
    control_plane: ControlPlane,
    k8s_namespace: str,
    service_kubeconfig: str,
    pool: str,
    tmp_path: Path,
) -> None:
    scheduling = client.SchedulingV1Api(control_plane.admin_client)
    priority = f"jgc-kernels-{pool}"
    scheduling.create_priority_class(
        {"metadata": {"name": priority, "labels": {TEST_LABEL: TEST_RUN}}, "value": 1000}
    )
    add_nodes(control_plane, pool, 1, gpus=4)
    # The user's workspace: a claim the administrator made (PodSecurity "restricted" admits
    # persistentVolumeClaim volumes, not nfs or hostPath ones), bound to a volume of its own.
    core = client.CoreV1Api(control_plane.admin_client)
    volume = control_plane.bind_claim(
        k8s_namespace, "home-alice", f"/tmp/home-alice-{pool}", path_type="", wait=False
    )
    backend = make_backend(
        service_kubeconfig,
        k8s_namespace,
        pool,
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        priority_class_name=priority,
        cpu_request="500m",
        memory_request="1Gi",
        workspace_volume={"persistentVolumeClaim": {"claimName": "home-{username}"}},
        workspace_sub_path="u{uid}",
    )
    spec = kernel_spec(tmp_path, name="spec", gpus=2)
    try:
        name = run(backend.create(spec))
        pod = core.read_namespaced_pod(name, k8s_namespace)
        raw = json.dumps(control_plane.admin_client.sanitize_for_serialization(pod))
        # The key is in no part of the pod: not its spec, env, labels or annotations.
        assert KEY not in raw
        psc = pod.spec.security_context
        assert (psc.run_as_user, psc.run_as_group, psc.fs_group) == (1000, 1000, 1000)
        assert psc.run_as_non_root is True
        assert psc.seccomp_profile.type == "RuntimeDefault"
        assert psc.fs_group_change_policy == "OnRootMismatch"
        assert pod.spec.share_process_namespace is True
        container = pod.spec.containers[0]
        csc = container.security_context
        assert csc.allow_privilege_escalation is False
        assert csc.capabilities.drop == ["ALL"]
        assert csc.run_as_non_root is True and csc.seccomp_profile.type == "RuntimeDefault"
        assert pod.spec.automount_service_account_token is False
        assert container.resources.limits == {"nvidia.com/gpu": "2", "memory": "2Gi"}
        # An extended resource's request is its limit (the API sets it).
        assert container.resources.requests == {
            "cpu": "500m",
            "memory": "1Gi",
            "nvidia.com/gpu": "2",
        }
        # The command copies the connection file from the Secret into the pod's memory
        # (ipykernel may write it back), then runs the kernel's command.
        assert container.command is None
        assert container.args[:2] == ["sh", "-c"] and container.args[4:] == spec.command
        assert "/run/jupyter-kernel-secret/kernel.json" in container.args[2]
        assert container.working_dir == "/home/jovyan/work/projects/a b"
        assert pod.spec.node_selector == {"jgc-test-pool": pool}
        assert [t.key for t in pod.spec.tolerations if t.key == "nvidia.com/gpu"] == [
            "nvidia.com/gpu"
        ]
        assert pod.spec.priority_class_name == priority and pod.spec.priority == 1000
        assert pod.spec.restart_policy == "Never"
        volumes = {v.name: v for v in pod.spec.volumes}
        mounts = {m.mount_path: m for m in container.volume_mounts}
        secret_name = volumes["connection"].secret.secret_name
        assert mounts["/run/jupyter-kernel-secret"].read_only is True
        assert mounts["/run/jupyter-kernel-secret"].name == "connection"
        assert volumes["kernel-dir"].empty_dir.medium == "Memory"
        assert volumes["workspace"].persistent_volume_claim.claim_name == "home-alice"
        assert mounts["/home/jovyan/work"].sub_path == "u1000"
        assert volumes["dshm"].empty_dir.medium == "Memory"
        assert volumes["dshm"].empty_dir.size_limit == "1Gi"
        assert mounts["/dev/shm"].name == "dshm"
        home = next(v for v in volumes.values() if v.name == mounts["/home/jovyan"].name)
        assert home.empty_dir.medium == "Memory" and home.empty_dir.size_limit == "256Mi"
        # Labels select; annotations keep every value exactly (paths are not label values).
        assert pod.metadata.labels[L.KERNEL_ID] == spec.labels[L.KERNEL_ID]
        assert L.CWD not in pod.metadata.labels
        assert pod.metadata.annotations[L.CWD] == "/home/alice/projects/a b"
        assert pod.metadata.annotations[L.NOTEBOOK] == "projects/a b/analysis.ipynb"
        # The key's Secret: the connection file, owned by the pod so that it goes with it.
        secret = core.read_namespaced_secret(secret_name, k8s_namespace)
        content = json.loads(base64.b64decode(secret.data["kernel.json"]))
        assert content["key"] == KEY and content["ip"] == "0.0.0.0"
        owners = secret.metadata.owner_references
        assert [(o.kind, o.name, o.uid) for o in owners] == [("Pod", name, pod.metadata.uid)]
        # The scheduler placed it (2 of the node's 4 GPUs).
        wait_for(
            lambda: bool(core.read_namespaced_pod(name, k8s_namespace).spec.node_name),
            60,
            "the scheduler did not bind the kernel's pod",
        )
        # The panel's holders come from the pod watch's cache: the binding, once it has seen it.
        wanted = [(f"{pool}-n0", name, 2, "nvidia.com/gpu", "alice")]
        wait_for(
            lambda: (
                [(h.node, h.pod, h.count, h.resource, h.user) for h in backend.gpu_holders_sync()]
                == wanted
            ),
            30,
            "the GPU panel's holders did not show the kernel's pod on its node",
        )
        run(backend.remove(name))
        assert not [p for p in core.list_namespaced_pod(k8s_namespace).items]
        assert not [
            s
            for s in core.list_namespaced_secret(k8s_namespace).items
            if s.metadata.name.startswith(name)
        ]
    finally:
        backend.close()
        scheduling.delete_priority_class(priority)
        control_plane.delete_volume(volume)


def test_a_kernel_connection_is_its_secret_only_while_its_pod_owns_it(
    control_plane: ControlPlane,
    k8s_namespace: str,
    service_kubeconfig: str,
    pool: str,
    tmp_path: Path,
) -> None:
    """What a replica taking over reads back for each kernel pod: the connection file of the
    pod's Secret, trusted by the owner reference the service wrote when it made both (the pod's
    uid as the watch saw it, or, when the Secret names another, as the API says now). A Secret
    owned by anything else is refused; a pod made again under the same name, owning the Secret,
    is the Secret's pod, whether the watch has seen the new pod yet or not."""
    core = client.CoreV1Api(control_plane.admin_client)
    backend = make_backend(
        service_kubeconfig,
        k8s_namespace,
        pool,
        workspace_volume={"persistentVolumeClaim": {"claimName": "home-{username}"}},
    )
    try:
        name = run(backend.create(kernel_spec(tmp_path, name="conn")))
        secret_name = f"{name}-connection"
        info = run(backend.connection_info(name))
        assert info["key"] == KEY and info["shell_port"] == 50001

        def owned_by(pod: str, uid: str) -> None:
            # (Replaced, not patched: a patch adds to the list of owners.)
            secret = core.read_namespaced_secret(secret_name, k8s_namespace)
            secret.metadata.owner_references = [
                client.V1OwnerReference(api_version="v1", kind="Pod", name=pod, uid=uid)
            ]
            core.replace_namespaced_secret(secret_name, k8s_namespace, secret)

        # Owned by another pod that exists (one that does not, the garbage collector would
        # delete the Secret for).
        other = run(backend.create(kernel_spec(tmp_path, name="other")))
        owned_by(other, core.read_namespaced_pod(other, k8s_namespace).metadata.uid)
        with pytest.raises(EngineRefused, match="is not the kernel pod's own"):
            run(backend.connection_info(name))
        # The pod made again (the Secret kept), and the Secret given to the new one.
        old = core.read_namespaced_pod(name, k8s_namespace)
        core.delete_namespaced_pod(
            name, k8s_namespace, grace_period_seconds=0, propagation_policy="Orphan"
        )
        wait_for(
            lambda: (
                not core.list_namespaced_pod(
                    k8s_namespace, field_selector=f"metadata.name={name}"
                ).items
            ),
            60,
            "the kernel's pod was not deleted",
        )
        body = control_plane.admin_client.sanitize_for_serialization(old)
        body["metadata"] = {k: body["metadata"][k] for k in ("name", "labels", "annotations")}
        body.pop("status", None)
        again = core.create_namespaced_pod(k8s_namespace, body)
        assert again.metadata.uid != old.metadata.uid
        owned_by(name, again.metadata.uid)
        assert run(backend.connection_info(name))["key"] == KEY
        run(backend.remove(name))
        run(backend.remove(other))
        assert not [
            s
            for s in core.list_namespaced_secret(k8s_namespace).items
            if s.metadata.name.startswith(name)
        ]
    finally:
        backend.close()


def test_a_standby_reads_each_kernel_pods_secret_ahead_and_gives_it_once(
    control_plane: ControlPlane,
    k8s_namespace: str,
    service_kubeconfig: str,
    pool: str,
    tmp_path: Path,
) -> None:
    """A standby replica's backend (KubernetesBackend.stand_by) follows the kernel pods and reads
    each one's connection Secret as the watch shows it; once it acts, a reattach of that pod
    takes the Secret from memory (here the Secret is gone from the API by then: a read would
    fail), once; a second reattach of the pod reads it again."""
    core = client.CoreV1Api(control_plane.admin_client)
    active = make_backend(service_kubeconfig, k8s_namespace, pool)
    standby = make_backend(service_kubeconfig, k8s_namespace, pool)
    try:
        name = run(active.create(kernel_spec(tmp_path, name="ahead")))
        standby.stand_by()
        wait_for(lambda: standby.secrets_read_ahead() == 1, 60, "the Secret was not read ahead")
        core.delete_namespaced_secret(f"{name}-connection", k8s_namespace)
        standby.act()
        info = run(standby.connection_info(name))
        assert info["key"] == KEY and info["shell_port"] == 50001
        assert standby.secrets_read_ahead() == 0
        with pytest.raises(EngineRefused, match="connection Secret cannot be read"):
            run(standby.connection_info(name))
        # Acting, it reads no Secret ahead for the pods it starts.
        made = run(standby.create(kernel_spec(tmp_path, name="after")))
        wait_for(lambda: run(standby.state(made)) is not None, 60, "the pod was not watched")
        assert standby.secrets_read_ahead() == 0
        run(standby.remove(made))
        run(active.remove(name))
    finally:
        standby.close()
        active.close()


def test_host_paths_other_than_the_workspace_are_refused(
    control_plane: ControlPlane,
    k8s_namespace: str,
    service_kubeconfig: str,
    pool: str,
    tmp_path: Path,
) -> None:
    backend = make_backend(service_kubeconfig, k8s_namespace, pool)
    spec = kernel_spec(tmp_path, name="mounts")
    spec.mounts.append(Mount("/data/shared", "/data", read_only=True))
    try:
        with pytest.raises(MountRefused, match="not host paths such as /data/shared"):
            run(backend.create(spec))
        core = client.CoreV1Api(control_plane.admin_client)
        assert core.list_namespaced_pod(k8s_namespace).items == []
        assert [
            s.metadata.name
            for s in core.list_namespaced_secret(k8s_namespace).items
            if s.metadata.name.startswith("jgc-")
        ] == []
    finally:
        backend.close()


def test_twenty_one_gpu_kernels_on_three_four_gpu_nodes(
    control_plane: ControlPlane,
    k8s_namespace: str,
    service_kubeconfig: str,
    pool: str,
    tmp_path: Path,
) -> None:
    """12 bound, 8 pending with the scheduler's reason; a start of a pending one is refused in
    a sentence with the nodes' free GPUs; a restarted service finds every pod by its labels."""
    nodes = add_nodes(control_plane, pool, 3, gpus=4)
    backend = make_backend(service_kubeconfig, k8s_namespace, pool)
    core = client.CoreV1Api(control_plane.admin_client)
    try:
        names = [
            run(backend.create(kernel_spec(tmp_path, name=f"k{i}", gpus=1))) for i in range(20)
        ]

        def settled() -> bool:
            pods = core.list_namespaced_pod(k8s_namespace).items
            decided = [
                p
                for p in pods
                if p.spec.node_name
                or any(
                    c.type == "PodScheduled" and c.status == "False"
                    for c in p.status.conditions or []
                )
            ]
            return len(decided) == 20

        wait_for(settled, 60, "the scheduler did not decide on all 20 pods within 60 s")
        pods = core.list_namespaced_pod(k8s_namespace).items
        bound = [p for p in pods if p.spec.node_name]
        pending = [p for p in pods if not p.spec.node_name]
        assert len(bound) == 12 and len(pending) == 8
        per_node = {n: sum(1 for p in bound if p.spec.node_name == n) for n in nodes}
        assert per_node == dict.fromkeys(nodes, 4)
        for p in pending:
            (condition,) = [c for c in p.status.conditions if c.type == "PodScheduled"]
            assert condition.reason == "Unschedulable"
            assert "Insufficient nvidia.com/gpu" in condition.message
        # The holders: 12 kernels, one GPU each, four per node (as the pod watch has seen them).
        wait_for(
            lambda: (
                sorted((h.node, h.count) for h in backend.gpu_holders_sync())
                == sorted((n, 1) for n in nodes for _ in range(4))
            ),
            30,
            "the GPU panel's holders did not show the twelve placed kernels",
        )
        # A start of a pending kernel, with the "refuse" policy: a sentence, and no pod left.
        victim = pending[0].metadata.name
        with pytest.raises(SchedulingRefused) as refused:
            run(backend.start(victim, "jgc/debian-ipykernel:bookworm"))
        sentence = str(refused.value)
        assert sentence.startswith("No node can take this kernel now")
        assert "Insufficient nvidia.com/gpu" in sentence
        assert "No node has 1 free nvidia.com/gpu; 3 nodes have 0." in sentence
        assert victim not in {
            p.metadata.name for p in core.list_namespaced_pod(k8s_namespace).items
        }
        # A restarted service (a new backend) finds the pods from their labels alone, with
        # every annotation's exact value; the ledger's selector finds them too.
        restarted = make_backend(service_kubeconfig, k8s_namespace, pool)
        try:
            found = restarted.list_containers_sync({L.MANAGED: "true", L.SERVER_ID: "service-test"})
            assert sorted(r.id for r in found) == sorted(set(names) - {victim})
            assert {r.labels[L.CWD] for r in found} == {"/home/alice/projects/a b"}
            one = found[0]
            by_kernel = restarted.list_containers_sync({L.KERNEL_ID: one.labels[L.KERNEL_ID]})
            assert [r.id for r in by_kernel] == [one.id]
            state = run(restarted.state(one.id))
            assert state is not None and state.status == "created" and not state.ended
        finally:
            restarted.close()
        for name in set(names) - {victim}:
            run(backend.remove(name))
        assert core.list_namespaced_pod(k8s_namespace).items == []
    finally:
        backend.close()


def test_the_watch_sees_pods_come_and_go_and_resumes_after_a_lost_connection(
    control_plane: ControlPlane,
    k8s_namespace: str,
    service_kubeconfig: str,
    pool: str,
    tmp_path: Path,
) -> None:
    add_nodes(control_plane, pool, 1, gpus=1)
    backend = make_backend(service_kubeconfig, k8s_namespace, pool)

    async def scenario() -> None:
        first = await backend.create(kernel_spec(tmp_path, name="w1"))
        assert (await backend.state(first)) is not None
        # The watch's connection goes away (as when the API server restarts): it resumes from
        # the last resourceVersion it saw, and sees what happened meanwhile.
        backend.wake_watchers()
        second = await backend.create(kernel_spec(tmp_path, name="w2"))
        await backend.remove(first)

        async def seen() -> bool:
            return (await backend.state(first)) is None and (
                await backend.state(second)
            ) is not None

        # Generous: a loaded 2-core machine may take seconds to reconnect (one retry waits 1 s).
        for _ in range(600):
            if await seen():
                break
            await asyncio.sleep(0.1)
        assert await seen()
        await backend.remove(second)

    try:
        run(scenario())
    finally:
        backend.close()


def test_the_service_account_cannot_reach_beyond_its_namespace(
    control_plane: ControlPlane, k8s_namespace: str, service_kubeconfig: str, pool: str
) -> None:
    """RBAC refuses the backend what it must not do: another namespace's pods and secrets."""
    other = f"{k8s_namespace}-other"[:63]
    control_plane.create_namespace(other)
    try:
        backend = KubernetesBackend(kubeconfig=service_kubeconfig, namespace=other)
        try:
            with pytest.raises(Exception, match=r"(?i)forbidden"):
                backend.list_containers_sync({L.MANAGED: "true"})
        finally:
            backend.close()
    finally:
        control_plane.delete_namespace(other, wait=False)


def test_a_kernel_never_runs_as_root(tmp_path: Path) -> None:
    backend = KubernetesBackend(kubeconfig=os.devnull, namespace="unused")
    with pytest.raises(Exception, match="never runs as root"):
        backend.pod_manifest(kernel_spec(tmp_path, name="root", user="0:0"), "root")


def test_an_image_pull_secret_comes_from_the_registry_login(
    control_plane: ControlPlane,
    k8s_namespace: str,
    service_kubeconfig: str,
    pool: str,
    tmp_path: Path,
) -> None:
    """The administrator's login for the image's registry becomes the pod's image pull secret,
    owned by the pod; an image of a registry without a login gets none."""
    backend = make_backend(service_kubeconfig, k8s_namespace, pool)
    logins = {"registry.example:5000": {"username": "lab", "password": "pull-" + KEY}}
    backend.pull_auth = logins.get
    core = client.CoreV1Api(control_plane.admin_client)
    try:
        private = kernel_spec(tmp_path, name="private")
        private.image = "registry.example:5000/lab/pytorch:24.05"
        name = run(backend.create(private))
        pod = core.read_namespaced_pod(name, k8s_namespace)
        assert [s.name for s in pod.spec.image_pull_secrets] == [f"{name}-pull"]
        secret = core.read_namespaced_secret(f"{name}-pull", k8s_namespace)
        assert secret.type == "kubernetes.io/dockerconfigjson"
        config = json.loads(base64.b64decode(secret.data[".dockerconfigjson"]))
        auth = config["auths"]["registry.example:5000"]["auth"]
        assert base64.b64decode(auth).decode() == f"lab:pull-{KEY}"
        assert [o.uid for o in secret.metadata.owner_references] == [pod.metadata.uid]
        assert KEY not in json.dumps(control_plane.admin_client.sanitize_for_serialization(pod))
        public = run(backend.create(kernel_spec(tmp_path, name="public")))
        assert core.read_namespaced_pod(public, k8s_namespace).spec.image_pull_secrets is None
        for made in (name, public):
            run(backend.remove(made))
        left = [s.metadata.name for s in core.list_namespaced_secret(k8s_namespace).items]
        assert not [s for s in left if s.startswith(("jgc-private", "jgc-public"))]
    finally:
        backend.close()


def test_a_kernel_spec_may_ask_for_an_allowed_mig_profile(
    control_plane: ControlPlane,
    k8s_namespace: str,
    service_kubeconfig: str,
    pool: str,
    tmp_path: Path,
) -> None:
    """A MIG profile's resource (a kernel spec's gpu_resource) is requested as such and placed
    on a node that has it; one the administrator does not allow is refused in a sentence."""
    mig = "nvidia.com/mig-1g.10gb"
    control_plane.add_fake_node(
        f"{pool}-mig",
        gpus=0,
        labels={"jgc-test-pool": pool},
        extra={mig: 7},
    )
    backend = make_backend(service_kubeconfig, k8s_namespace, pool, allowed_gpu_resources=[mig])
    core = client.CoreV1Api(control_plane.admin_client)
    try:
        spec = kernel_spec(tmp_path, name="mig", gpus=2)
        spec.gpu_resource = mig
        name = run(backend.create(spec))
        pod = core.read_namespaced_pod(name, k8s_namespace)
        assert pod.spec.containers[0].resources.limits == {mig: "2", "memory": "2Gi"}
        wait_for(
            lambda: core.read_namespaced_pod(name, k8s_namespace).spec.node_name == f"{pool}-mig",
            60,
            "the MIG kernel was not placed on the node with that profile",
        )
        wait_for(
            lambda: (
                [(h.node, h.count, h.resource) for h in backend.gpu_holders_sync()]
                == [(f"{pool}-mig", 2, mig)]
            ),
            30,
            "the GPU panel's holders did not show the MIG kernel on its node",
        )
        refused = kernel_spec(tmp_path, name="big", gpus=1)
        refused.gpu_resource = "nvidia.com/mig-7g.80gb"
        with pytest.raises(EngineRefused, match="does not allow here"):
            run(backend.create(refused))
        run(backend.remove(name))
    finally:
        backend.close()
