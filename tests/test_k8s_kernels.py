"""Kernels as real pods: the kernel service with ``ServiceApp.backend = "kubernetes"``, as the
service account of deploy/kubernetes/rbac.yaml, starts a kernel pod on a real node (a kubelet
with containerd, tests/k8s_node.py) from an image imported from the local Docker engine. The
kernel answers on the pod's IP, runs code as its user, writes into the user's workspace (a
persistent volume), is interrupted by message, restarted and deleted, and leaves no pod, Secret
or volume behind."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hostusers import ids_of
from k8s_cluster import ControlPlane, wait_for
from k8s_node import RealNode
from kernel_io import collect, execute, send_execute
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from service_process import KernelService

from jupyter_gpu_containers.host.user_packages import packages_key
from jupyter_gpu_containers.kernel.kernelspecs import kernel_name_for

REPO = Path(__file__).resolve().parent.parent
RBAC = REPO / "deploy" / "kubernetes" / "rbac.yaml"

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def cluster_service(
    control_plane: ControlPlane,
    real_node: RealNode,
    real_node_image: str,
    k8s_namespace: str,
    tmp_path: Path,
) -> Iterator[tuple[KernelService, str, str]]:
    """A kernel service whose backend is the cluster, with one user whose workspace is a
    persistent volume (a hostPath volume on the real node: this host's directory), and the
    administrator's dataset, another (KubernetesBackend.datasets: read-only)."""
    user = os.environ.get("JGC_TEST_USER", "")
    if not user:
        pytest.fail("JGC_TEST_USER names no account (scripts/test.sh creates one)")
    applied = control_plane.apply(RBAC, k8s_namespace)
    token = control_plane.service_account_token(k8s_namespace, "jupyter-gpu-containers")
    kubeconfig = control_plane.kubeconfig_for_token(token, tmp_path / "service.kubeconfig")
    volume = dataset_volume = ""
    service = KernelService(
        {
            "ServiceApp": {"backend": "kubernetes"},
            "KubernetesBackend": {
                "kubeconfig": kubeconfig,
                "namespace": k8s_namespace,
                "node_selector": real_node.node_selector,
                "tolerations": [real_node.toleration],
                "workspace_volume": {"persistentVolumeClaim": {"claimName": "ws-{username}"}},
                "datasets": [
                    {
                        "name": "course",
                        "mount_path": "/datasets/course",
                        "volume": {"persistentVolumeClaim": {"claimName": "course-data"}},
                    }
                ],
                "startup_timeout": 180,
            },
            "ImageCatalog": {"listed_images": [{"image": real_node_image}]},
            "GPUAllocator": {"max_gpus_per_user": 1},
        }
    )
    try:
        service.add_user(user)
        workspace = service.home / "ws" / user
        (workspace / "notes").mkdir()
        os.chown(workspace / "notes", *ids_of(user))
        volume = control_plane.bind_claim(k8s_namespace, f"ws-{user}", workspace)
        data = service.home / "course-data"
        data.mkdir(mode=0o755)
        (data / "readme.txt").write_text("the course's data\n")
        (data / "readme.txt").chmod(0o644)
        dataset_volume = control_plane.bind_claim(k8s_namespace, "course-data", data)
        service.start()
        yield service, user, real_node_image
    finally:
        # Shown when the test failed (pytest prints a failed test's captured output).
        print("\n".join(service.output().splitlines()[-80:]))
        service.close()
        for made in (volume, dataset_volume):
            if made:  # never "": the client would delete every volume (a collection delete)
                control_plane.delete_volume(made)
        rbac = client.RbacAuthorizationV1Api(control_plane.admin_client)
        for obj in applied:
            with _absent():
                if obj["kind"] == "ClusterRole":
                    rbac.delete_cluster_role(obj["metadata"]["name"])
                elif obj["kind"] == "ClusterRoleBinding":
                    rbac.delete_cluster_role_binding(obj["metadata"]["name"])


class _absent:
    """Tolerates a 404: what is to be deleted is gone already."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: Any, tb: Any) -> bool:
        return isinstance(error, ApiException) and error.status == 404


def kernel_pods(
    control_plane: ControlPlane, namespace: str, *, terminating: bool = False
) -> list[Any]:
    """The namespace's kernel pods; those being deleted (a restart's old pod for a second)
    only with ``terminating``."""
    core = client.CoreV1Api(control_plane.admin_client)
    pods = core.list_namespaced_pod(
        namespace, label_selector="org.jupyter.gpu-containers.managed=true"
    ).items
    return [p for p in pods if terminating or p.metadata.deletion_timestamp is None]


def test_a_kernel_pod_answers_runs_code_writes_the_workspace_and_leaves_nothing(
    control_plane: ControlPlane,
    real_node: RealNode,
    k8s_namespace: str,
    cluster_service: tuple[KernelService, str, str],
) -> None:
    service, username, image = cluster_service
    user = service.users[username]
    uid, gid = ids_of(username)
    core = client.CoreV1Api(control_plane.admin_client)

    async def scenario() -> None:
        code, specs = await service.answer(user, "GET", "api/kernelspecs")
        assert code == 200, specs
        name = kernel_name_for(image)
        assert name in specs["kernelspecs"], sorted(specs["kernelspecs"])
        notes = service.home / "ws" / username / "notes"
        env = {
            "JPY_SESSION_NAME": str(notes / "k8s.ipynb"),
            "KERNEL_WORKING_DIR": str(notes),
            # One GPU (the real node advertises four; there is no device plugin, so the
            # container gets none: what is checked is the request and what it is told).
            "KERNEL_GPU_CONTAINERS_REQUEST": "1",
        }
        # Two one-GPU starts at once against GPUAllocator.max_gpus_per_user = 1: the cap's
        # count and the pod's creation are one step per user, so exactly one starts.
        answers = await asyncio.gather(
            *(
                service.answer(user, "POST", "api/kernels", {"name": name, "env": env})
                for _ in range(2)
            )
        )
        assert sorted(code for code, _ in answers) == [201, 409], answers
        kernel_id = next(str(model["id"]) for code, model in answers if code == 201)
        (pod,) = kernel_pods(control_plane, k8s_namespace)
        assert pod.spec.node_name == real_node.name
        assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
        # A second GPU kernel of the same user is over GPUAllocator.max_gpus_per_user.
        code, refused = await service.answer(
            user,
            "POST",
            "api/kernels",
            {"name": name, "env": {"KERNEL_GPU_CONTAINERS_REQUEST": "1"}},
        )
        assert code == 409, refused
        assert "over the limit of 1 GPU per user" in refused["message"]
        assert pod.status.pod_ip
        first_uid = pod.metadata.uid
        ws = await service.websocket(user, kernel_id)
        try:
            result = await execute(
                ws,
                "import os\n"
                "open('from-pod.txt', 'w').write('written in a pod')\n"
                "print(os.getuid(), os.getgid(), os.getcwd(),"
                " os.environ.get('NVIDIA_VISIBLE_DEVICES', 'unset'))",
                timeout=60,
            )
            ids, cwd, visible = result.stdout.split()[:2], *result.stdout.split()[2:]
            assert ids == [str(uid), str(gid)], result
            # In the notebook's directory, in the workspace mounted where Docker mounts it.
            assert cwd.endswith("/notes"), result
            # The device plugin says which GPUs it has: nothing of the spec's hides them.
            assert visible == "unset", result
            written = notes / "from-pod.txt"
            assert written.read_text() == "written in a pod"
            assert (written.stat().st_uid, written.stat().st_gid) == (uid, gid)
            # Its user has a name in the pod (its own /etc/passwd and /etc/group, from its
            # Secret), the image untouched.
            who = await execute(
                ws,
                "import getpass, grp, os, subprocess\n"
                "print(getpass.getuser(), grp.getgrgid(os.getgid()).gr_name,"
                " subprocess.run(['whoami'], capture_output=True, text=True).stdout.strip())",
                timeout=60,
            )
            assert who.stdout.split() == [username, username, username], who
            # The administrator's dataset: its data, read-only, and named in the kernel's view.
            data = await execute(
                ws,
                "print(open('/datasets/course/readme.txt').read().strip())\n"
                "try:\n"
                "    open('/datasets/course/mine.txt', 'w')\n"
                "except OSError as e:\n"
                "    print('refused', e.errno)",
                timeout=60,
            )
            assert data.stdout.splitlines() == ["the course's data", "refused 30"], data  # EROFS
            code, view = await service.answer(user, "GET", f"gpu-containers/kernels/{kernel_id}")
            assert code == 200, view
            assert {
                "type": "dataset",
                "source": "course (claim course-data)",
                "target": "/datasets/course",
                "read_only": True,
            } in view["mounts"], view["mounts"]
            code, listed = await service.answer(user, "GET", "gpu-containers/kernels")
            assert code == 200, listed
            assert listed["kernels"][0]["datasets"] == [
                {
                    "name": "course",
                    "target": "/datasets/course",
                    "read_only": True,
                    "source": "claim course-data",
                }
            ], listed
            # The user's packages for the image: a folder of the workspace volume, on the
            # kernel's path (what pip installs there is kept: a module put there stands in).
            kept = await execute(
                ws,
                "import os, site, sys\n"
                "p = site.getusersitepackages()\n"
                "open(os.path.join(p, 'jgc_kept.py'), 'w').write('WHERE = 1\\n')\n"
                "print(os.environ['PYTHONUSERBASE'], p in sys.path)",
                timeout=60,
            )
            folder = f".jupyter-gpu-containers/packages/{packages_key(image)}"
            assert kept.stdout.split() == [f"/workspace/{folder}", "True"], kept
            (module,) = (notes.parent / folder).glob("lib/python3*/site-packages/jgc_kept.py")
            assert (module.stat().st_uid, module.stat().st_gid) == (uid, gid)
            # Interrupted (by message: the service's account may not exec into pods).
            msg_id = await send_execute(ws, "import time\ntime.sleep(120)")
            await asyncio.sleep(2)
            code, _ = await service.answer(user, "POST", f"api/kernels/{kernel_id}/interrupt")
            assert code == 204
            interrupted = await collect(ws, msg_id, timeout=30)
            assert interrupted.ename == "KeyboardInterrupt", interrupted
        finally:
            ws.close()
        # Restarted: a new pod, the same kernel id, code runs again.
        code, _ = await service.answer(user, "POST", f"api/kernels/{kernel_id}/restart")
        assert code == 200
        (after,) = kernel_pods(control_plane, k8s_namespace)
        assert after.metadata.uid != first_uid
        ws = await service.websocket(user, kernel_id)
        try:
            result = await execute(ws, "import jgc_kept; print(6 * 7 * jgc_kept.WHERE)", timeout=60)
            assert result.stdout.strip() == "42", result
        finally:
            ws.close()
        # The service does not see the volume: the panel is told where the packages are.
        code, packages = await service.answer(user, "GET", "gpu-containers/packages")
        assert code == 200 and not packages["measured"] and packages["folders"] == [], packages
        assert ".jupyter-gpu-containers/packages" in packages["message"]
        code, _ = await service.answer(user, "DELETE", f"api/kernels/{kernel_id}")
        assert code == 204
        pod_uids = {first_uid, after.metadata.uid}
        # Nothing left: no pod, no Secret, no container on the node, no volume of its pods.
        wait_for(
            lambda: not kernel_pods(control_plane, k8s_namespace, terminating=True),
            60,
            "the kernel's pod was not deleted",
        )
        assert [
            s.metadata.name
            for s in core.list_namespaced_secret(k8s_namespace).items
            if s.metadata.name.startswith("jupyter-kernel-")
        ] == []
        wait_for(
            lambda: all(not real_node.pod_containers(u) for u in pod_uids),
            60,
            "the node kept containers of the kernel's pods",
        )
        wait_for(
            lambda: all(not (real_node.kubelet_root / "pods" / u).exists() for u in pod_uids),
            60,
            "the kubelet kept the volumes of the kernel's pods",
        )

    asyncio.run(scenario())


def test_a_restarted_service_reattaches_its_kernel_pods(
    control_plane: ControlPlane,
    k8s_namespace: str,
    cluster_service: tuple[KernelService, str, str],
) -> None:
    """The service stops (keeping its kernels) and starts again without its private
    directories, as a new pod of a Deployment would: it finds the kernel's pod by its labels,
    its connection in the pod's Secret, connects on the pod's IP, and the kernel's state is
    still there."""
    service, username, image = cluster_service
    user = service.users[username]

    async def scenario() -> None:
        kernel_id = await service.start_kernel(user, kernel_name_for(image))
        ws = await service.websocket(user, kernel_id)
        try:
            assert (await execute(ws, "kept = 'still here'", timeout=60)).status == "ok"
        finally:
            ws.close()
        service.stop()
        (pod,) = kernel_pods(control_plane, k8s_namespace)
        # A new service pod has none of its predecessor's private directories: the connection
        # comes back from the kernel's Secret.
        shutil.rmtree(service.home / "kernels")
        service.start("--ServiceApp.keep_kernels_on_stop=False")
        assert "reattached 1" in service.output()
        code, model = await service.answer(user, "GET", f"api/kernels/{kernel_id}")
        assert code == 200, model
        ws = await service.websocket(user, kernel_id)
        try:
            result = await execute(ws, "print(kept)", timeout=60)
            assert result.stdout.strip() == "still here", result
        finally:
            ws.close()
        (same,) = kernel_pods(control_plane, k8s_namespace)
        assert same.metadata.uid == pod.metadata.uid
        code, _ = await service.answer(user, "DELETE", f"api/kernels/{kernel_id}")
        assert code == 204

    service.stop()
    service.config["ServiceApp"]["keep_kernels_on_stop"] = True
    service.config_file.write_text(json.dumps(service.config))
    service.start()
    asyncio.run(scenario())


# An image like NGC's whose reference says nothing of CUDA or GPUs: on a cluster no engine reads
# its environment, so the administrator's list entry is all that says it is a CUDA 12.4 build.
HIDDEN_NGC_REF = "docker.io/jgc-test/course-dl:24.05-py3"
HIDDEN_NGC = {"image": HIDDEN_NGC_REF, "gpu": True, "cuda": "12.4.1"}
# What GPU feature discovery labels an A100 node with driver 550 (CUDA 12.4) as.
A100_DRIVER_550 = {
    "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
    "nvidia.com/gpu.compute.major": "8",
    "nvidia.com/gpu.compute.minor": "0",
    "nvidia.com/cuda.driver.major": "550",
    "nvidia.com/cuda.driver.minor": "54",
    "nvidia.com/cuda.driver.rev": "15",
    "nvidia.com/cuda.runtime.major": "12",
    "nvidia.com/cuda.runtime.minor": "4",
}


def test_a_listed_cuda_image_asks_for_a_gpu_and_is_described_alike_everywhere(
    control_plane: ControlPlane,
    real_node: RealNode,
    k8s_namespace: str,
    cluster_service: tuple[KernelService, str, str],
) -> None:
    """docs/kubernetes.md: a kernel asks for its kernel spec's default GPUs "as on Docker", where
    a CUDA image's spec asks for one. The images list, the kernel spec and the cluster view take
    the list entry's word alike."""
    service, username, image = cluster_service
    user = service.users[username]
    core = client.CoreV1Api(control_plane.admin_client)
    # The test image under the hidden name on the node (containerd's tag, no second import), and
    # the real node labelled as GPU feature discovery would label an A100 node: both undone.
    real_node.ctr("images", "tag", "--force", image, HIDDEN_NGC_REF)
    core.patch_node(real_node.name, {"metadata": {"labels": A100_DRIVER_550}})
    service.stop()
    service.config["ImageCatalog"]["listed_images"] = [{"image": image}, HIDDEN_NGC]
    service.config_file.write_text(json.dumps(service.config))
    name = kernel_name_for(HIDDEN_NGC_REF)

    async def scenario() -> None:
        code, specs = await service.answer(user, "GET", "api/kernelspecs")
        assert code == 200, specs
        assert name in specs["kernelspecs"], sorted(specs["kernelspecs"])
        spec = specs["kernelspecs"][name]["spec"]
        assert spec["metadata"]["kernel_provisioner"]["config"]["gpus"] == 1, spec
        assert spec["metadata"]["gpu_containers"]["gpu"] is True, spec
        # The images list: a GPU build with the listed CUDA.
        code, images = await service.answer(user, "GET", "gpu-containers/images")
        assert code == 200, images
        (row,) = [r for r in images["images"] if r["reference"] == HIDDEN_NGC_REF]
        assert (row["gpu"], row["cuda_version"]) == (True, "12.4.1"), row
        # The cluster view: CUDA 12.4 on the node's driver 550 runs natively.
        code, view = await service.answer(user, "GET", "gpu-containers/cluster")
        assert code == 200, view
        (pool,) = [p for p in view["pools"] if any(n["name"] == real_node.name for n in p["nodes"])]
        verdicts = {v["image"]: v["verdict"] for v in pool["verdicts"]}
        assert verdicts[HIDDEN_NGC_REF]["outcome"] == "native", verdicts
        # ... which the images list says too: it judges against the cluster's node pools, not
        # the service's own host.
        assert row["verdict"]["outcome"] == "native", row["verdict"]
        # A start with no GPU request gets the spec's default: one GPU, as on Docker.
        kernel_id = await service.start_kernel(user, name)
        try:
            (pod,) = kernel_pods(control_plane, k8s_namespace)
            assert pod.spec.containers[0].image == HIDDEN_NGC_REF
            assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
        finally:
            code, _ = await service.answer(user, "DELETE", f"api/kernels/{kernel_id}")
            assert code == 204

    try:
        service.start()
        asyncio.run(scenario())
    finally:
        unlabel = {"metadata": {"labels": dict.fromkeys(A100_DRIVER_550)}}
        core.patch_node(real_node.name, unlabel)
        real_node.ctr("images", "rm", HIDDEN_NGC_REF)
