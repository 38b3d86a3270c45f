"""The GPU panel on a cluster (cluster_view.py, ``GET /gpu-containers/cluster``) against a real
control plane (tests/k8s_cluster.py): fake GPU nodes labelled as NVIDIA's GPU feature discovery
labels them, kernel pods the scheduler binds to them, read as the kernel service's account with
only what deploy/kubernetes/rbac.yaml grants. Node pools grouped by product and driver, holders
per node, another user's holder anonymised, and each listed image's verdict per pool; then the
same through a real kernel service's REST route, checked against openapi.yaml."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hostusers import ids_of
from k8s_cluster import ControlPlane, wait_for
from kubernetes import client
from service_process import KernelService
from test_k8s_backend import (  # noqa: F401 - pool and service_kubeconfig are fixtures
    kernel_spec,
    make_backend,
    pool,
    run,
    service_kubeconfig,
)
from test_openapi import SPEC_PATH, Conformance, _StrictLoader

from jupyter_gpu_containers.backends.kubernetes.k8s import KubernetesBackend
from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.images.catalog import ImageCatalog
from jupyter_gpu_containers.routes.cluster_view import brand_of, cluster_view, driver_of

A100 = "NVIDIA-A100-SXM4-80GB"
H100 = "NVIDIA-H100-80GB-HBM3"
# Labels exactly as GPU feature discovery publishes them on such nodes.
A100_LABELS = {
    "nvidia.com/gpu.product": A100,
    "nvidia.com/gpu.memory": "81920",
    "nvidia.com/gpu.count": "4",
    "nvidia.com/gpu.family": "ampere",
    "nvidia.com/gpu.compute.major": "8",
    "nvidia.com/gpu.compute.minor": "0",
    "nvidia.com/cuda.driver.major": "550",
    "nvidia.com/cuda.driver.minor": "54",
    "nvidia.com/cuda.driver.rev": "15",
    "nvidia.com/cuda.runtime.major": "12",
    "nvidia.com/cuda.runtime.minor": "4",
}
H100_LABELS = {
    "nvidia.com/gpu.product": H100,
    "nvidia.com/gpu.memory": "81559",
    "nvidia.com/gpu.count": "4",
    "nvidia.com/gpu.family": "hopper",
    "nvidia.com/gpu.compute.major": "9",
    "nvidia.com/gpu.compute.minor": "0",
    # The newer releases' form only: the full version in one label.
    "nvidia.com/cuda.driver-version.full": "535.104.05",
    "nvidia.com/cuda.runtime-version.full": "12.2",
}
# nvidia/cuda 12.4 images declare this requirement; the NVIDIA runtime enforces it, so the
# 535 pool (CUDA 12.2) cannot run it, whatever minor-version compatibility would allow.
CUDA_124 = {
    "image": "nvidia/cuda:12.4.1-base-ubuntu22.04",
    "env": {"NVIDIA_REQUIRE_CUDA": "cuda>=12.4"},
}
CPU_IMAGE = {"image": "quay.io/jupyter/scipy-notebook:2024-10-07", "gpu": False}


def _users() -> tuple[tuple[str, int, int], tuple[str, int, int]]:
    names = os.environ.get("JGC_TEST_USER", ""), os.environ.get("JGC_TEST_PEER", "")
    if not all(names):
        pytest.fail("JGC_TEST_USER and JGC_TEST_PEER name no accounts (scripts/test.sh makes them)")
    first, second = ((name, *ids_of(name)) for name in names)
    return first, second


def add_pools(control_plane: ControlPlane, label: str) -> dict[str, list[str]]:
    """Two A100 nodes with driver 550 and one H100 node with driver 535, four GPUs each, in
    the test's node pool ``label``."""
    nodes = {A100: [f"{label}-a100-0", f"{label}-a100-1"], H100: [f"{label}-h100-0"]}
    for product, names in nodes.items():
        for name in names:
            labels = A100_LABELS if product == A100 else H100_LABELS
            control_plane.add_fake_node(name, gpus=4, labels={"jgc-test-pool": label, **labels})
    return nodes


def gpu_kernel(
    backend: KubernetesBackend, tmp_path: Path, name: str, gpus: int, who: tuple[str, int, int]
) -> tuple[str, str]:
    """A kernel pod of user ``who`` asking for ``gpus`` GPUs: (pod name, kernel id)."""
    username, uid, gid = who
    spec = kernel_spec(tmp_path, name=name, gpus=gpus, user=f"{uid}:{gid}")
    spec = dataclasses.replace(
        spec,
        labels={
            **spec.labels,
            L.USER: username,
            L.UID: str(uid),
            L.NOTEBOOK: f"{username}/{name}.ipynb",
        },
    )
    return run(backend.create(spec)), spec.labels[L.KERNEL_ID]


def bound_nodes(control_plane: ControlPlane, namespace: str, pods: list[str]) -> dict[str, str]:
    """pod -> node, once the scheduler has bound every one of ``pods``."""
    core = client.CoreV1Api(control_plane.admin_client)

    def nodes() -> dict[str, str]:
        return {p: core.read_namespaced_pod(p, namespace).spec.node_name or "" for p in pods}

    wait_for(lambda: all(nodes().values()), 60, "the scheduler did not bind the kernel pods")
    return nodes()


def my_pools(view: dict[str, Any], label: str) -> dict[str, dict[str, Any]]:
    """This test's pools (the control plane is shared by the session), by product."""
    return {
        p["product"]: p
        for p in view["pools"]
        if any(node["name"].startswith(f"{label}-") for node in p["nodes"])
    }


@pytest.fixture
def cluster(
    control_plane: ControlPlane,
    k8s_namespace: str,
    service_kubeconfig: str,  # noqa: F811 - the fixture
    pool: str,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> Iterator[dict[str, Any]]:
    """The pools, and three kernel pods: the first user's with 2 and 1 GPUs on the A100s, the
    second user's with 1 GPU on the H100. Removed afterwards (the namespace goes too)."""
    first, second = _users()
    nodes = add_pools(control_plane, pool)
    backends = {
        product: KubernetesBackend(
            kubeconfig=service_kubeconfig,
            namespace=k8s_namespace,
            node_selector={"jgc-test-pool": pool, "nvidia.com/gpu.product": product},
            removal_grace_period=0,  # fake nodes: no kubelet confirms a graceful deletion
        )
        for product in (A100, H100)
    }
    pods: list[str] = []
    try:
        two, two_id = gpu_kernel(backends[A100], tmp_path, "two", 2, first)
        one, one_id = gpu_kernel(backends[A100], tmp_path, "one", 1, first)
        other, _ = gpu_kernel(backends[H100], tmp_path, "other", 1, second)
        pods += [two, one, other]
        yield {
            "nodes": nodes,
            "bound": bound_nodes(control_plane, k8s_namespace, pods),
            "pods": {"two": two, "one": one, "other": other},
            "kernel_ids": {two: two_id, one: one_id},
            "users": (first, second),
            "backend": backends[A100],
            "kubeconfig": service_kubeconfig,
            "namespace": k8s_namespace,
        }
    finally:
        for name in pods:
            run(backends[A100].remove(name))
        for backend in backends.values():
            backend.close()


def test_pools_holders_and_verdicts_from_node_labels(
    cluster: dict[str, Any],
    pool: str,  # noqa: F811 - the fixture
) -> None:
    (first, uid, _gid), (second, _, _) = cluster["users"]
    listed = ImageCatalog(listed_images=[CUDA_124, CPU_IMAGE]).listed()
    backend = cluster["backend"]
    view = asyncio.run(cluster_view(backend, listed, uid=str(uid), show_others=False))
    assert view["backend"] == "kubernetes" and view["engine_error"] == "", view
    pools = my_pools(view, pool)
    assert sorted(pools) == [A100, H100], view

    # Grouped by the labels: the two A100 nodes (driver from major/minor/rev) in one pool, the
    # H100 node (driver from the full-version label) in the other.
    a100, h100 = pools[A100], pools[H100]
    assert [n["name"] for n in a100["nodes"]] == cluster["nodes"][A100]
    assert [n["name"] for n in h100["nodes"]] == cluster["nodes"][H100]
    assert (a100["driver_version"], a100["cuda_driver_version"]) == ("550.54.15", "12.4")
    assert (h100["driver_version"], h100["cuda_driver_version"]) == ("535.104.05", "12.2")
    assert (a100["compute_capability"], h100["compute_capability"]) == ("8.0", "9.0")
    assert a100["memory_total"] == 81920 * 1024 * 1024
    assert a100["id"] == f"{A100}, driver 550.54.15, compute 8.0, 81920 MiB"

    # Held and free per node, as the scheduler bound the pods.
    bound = cluster["bound"]
    pods = cluster["pods"]
    counts = {pods["two"]: 2, pods["one"]: 1, pods["other"]: 1}
    for p in (a100, h100):
        for node in p["nodes"]:
            held = sum(c for pod, c in counts.items() if bound[pod] == node["name"])
            assert node["ready"] is True
            assert node["resources"] == [
                {"resource": "nvidia.com/gpu", "allocatable": 4, "held": held, "free": 4 - held}
            ], node
    assert bound[pods["other"]] == cluster["nodes"][H100][0]

    # The holders, each in its node's pool: the caller's own in full, the other user's taken.
    mine = {
        h["pod"]: (h["node"], h["count"], h["resource"], h["mine"], h["user"], h["kernel_id"])
        for h in a100["holders"]
    }
    assert mine == {
        pod: (bound[pod], counts[pod], "nvidia.com/gpu", True, first, cluster["kernel_ids"][pod])
        for pod in (pods["two"], pods["one"])
    }
    assert {h["notebook"] for h in a100["holders"]} == {f"{first}/two.ipynb", f"{first}/one.ipynb"}
    assert h100["holders"] == [
        {
            "node": bound[pods["other"]],
            "pod": pods["other"],
            "count": 1,
            "resource": "nvidia.com/gpu",
            "mine": False,
            "kernel_id": "",
            "user": "",
            "notebook": "",
            "gpus": [],  # Kubernetes does not say which of the node's GPUs
        }
    ]

    # The verdicts: CUDA 12.4 runs natively on driver 550, and the runtime refuses it on 535;
    # the CPU build runs anywhere.
    verdicts = {p: {v["image"]: v["verdict"] for v in pools[p]["verdicts"]} for p in pools}
    cuda_image = CUDA_124["image"]
    cpu_image = CPU_IMAGE["image"]
    assert list(verdicts[A100]) == [cuda_image, cpu_image]
    assert verdicts[A100][cuda_image]["outcome"] == "native", verdicts[A100]
    refused = verdicts[H100][cuda_image]
    assert refused["outcome"] == "cannot-run", refused
    assert refused["needed_driver"] == "550.54.15"
    assert "cuda>=12.4" in refused["reason"] and "535.104.05" in refused["reason"], refused
    assert {verdicts[p][cpu_image]["outcome"] for p in pools} == {"cpu-only"}

    # With GPUVisibility.show_other_users, the other user's name and notebook are shown; their
    # kernel id never is.
    shown = asyncio.run(cluster_view(backend, listed, uid=str(uid), show_others=True))
    (other,) = my_pools(shown, pool)[H100]["holders"]
    assert (other["user"], other["notebook"], other["kernel_id"]) == (
        second,
        f"{second}/other.ipynb",
        "",
    )

    # The holders made for the looks above are not kept past a change the watch shows: a
    # kernel pod gone is gone from the next look that follows it.
    asyncio.run(backend.remove(pods["one"]))

    def holders_now() -> set[str]:
        again = asyncio.run(cluster_view(backend, listed, uid=str(uid), show_others=False))
        return {h["pod"] for p in my_pools(again, pool).values() for h in p["holders"]}

    wait_for(lambda: holders_now() == {pods["two"], pods["other"]}, 60, "a holder stayed")


def test_a_pool_without_a_published_driver_or_gpus_says_so(
    control_plane: ControlPlane,
    k8s_namespace: str,
    service_kubeconfig: str,  # noqa: F811 - the fixture
    pool: str,  # noqa: F811 - the fixture
) -> None:
    """A GPU node whose driver labels are missing, and one whose device plugin offers nothing:
    each its own pool, with the verdict saying what is missing rather than guessing. The view
    follows the nodes as they change (the backend's node watch): a driver published, a node
    gone."""
    nolabels, noplugin = f"{pool}-nolabels", f"{pool}-noplugin"
    control_plane.add_fake_node(
        nolabels, gpus=2, labels={"jgc-test-pool": pool, "nvidia.com/gpu.product": "Tesla-T4"}
    )
    control_plane.add_fake_node(noplugin, gpus=0, labels={"jgc-test-pool": pool, **A100_LABELS})
    backend = make_backend(service_kubeconfig, k8s_namespace, pool)
    listed = ImageCatalog(listed_images=[CUDA_124]).listed()

    def pools_now() -> dict[str, Any]:
        view = asyncio.run(cluster_view(backend, listed, uid="1", show_others=False))
        return my_pools(view, pool)

    try:
        pools = pools_now()
        assert sorted(pools) == [A100, "Tesla-T4"], pools
        unknown = pools["Tesla-T4"]["verdicts"][0]["verdict"]
        assert unknown["outcome"] == "unknown" and "nvidia.com/cuda.driver" in unknown["reason"]
        assert pools["Tesla-T4"]["driver_version"] == "" and pools["Tesla-T4"]["holders"] == []
        empty = pools[A100]
        assert empty["nodes"][0]["resources"] == []
        no_gpus = empty["verdicts"][0]["verdict"]
        assert no_gpus["outcome"] == "no-gpus" and "device plugin" in no_gpus["reason"], no_gpus

        # Its driver published (GPU feature discovery's label), the T4 pool says which; the node
        # without the device plugin removed, its pool goes.
        core = client.CoreV1Api(control_plane.admin_client)
        driver = {"nvidia.com/cuda.driver-version.full": "535.104.05"}
        core.patch_node(nolabels, {"metadata": {"labels": driver}})
        control_plane.delete_node(noplugin)

        def changed() -> bool:
            now = pools_now()
            return list(now) == ["Tesla-T4"] and bool(now["Tesla-T4"]["driver_version"])

        wait_for(changed, 60, "the cluster view did not follow the nodes' changes")
        assert pools_now()["Tesla-T4"]["driver_version"] == "535.104.05"
    finally:
        backend.close()


def test_the_route_on_a_kernel_service(
    control_plane: ControlPlane,
    cluster: dict[str, Any],
    pool: str,  # noqa: F811 - the fixture
) -> None:
    """GET /gpu-containers/cluster of a kernel service whose backend is the cluster: each user
    sees their own kernels' pods in full and the other's as taken, asked again the same, and a
    pod gone from the next answers (ClusterViews keeps them while the watches show no change);
    the answers fit openapi.yaml."""
    (first, _, _), (second, _, _) = cluster["users"]
    service = KernelService(
        {
            "ServiceApp": {"backend": "kubernetes"},
            "KubernetesBackend": {
                "kubeconfig": cluster["kubeconfig"],
                "namespace": cluster["namespace"],
            },
            "ImageCatalog": {"listed_images": [CUDA_124]},
        }
    )
    with SPEC_PATH.open(encoding="utf-8") as f:
        conformance = Conformance(yaml.load(f, Loader=_StrictLoader))  # a SafeLoader
    route = "/gpu-containers/cluster"

    async def as_user(name: str) -> dict[str, Any]:
        response = await service.fetch(service.users[name], "GET", route)
        assert response.code == 200, response.body[:500]
        answer: dict[str, Any] = conformance.check(response, route, "get")
        return answer

    try:
        service.add_user(first)
        service.add_user(second)
        service.start()
        seen = {name: run(as_user(name)) for name in (first, second)}
        # Asked again, as a panel does (an answer kept while the cluster is the same): each
        # user's own still; and a kernel pod gone is gone from the next answers.
        assert {name: run(as_user(name)) for name in (first, second)} == seen
        run(cluster["backend"].remove(cluster["pods"]["one"]))

        def holders_now(name: str) -> set[str]:
            view = run(as_user(name))
            return {h["pod"] for p in my_pools(view, pool).values() for h in p["holders"]}

        rest = {cluster["pods"]["two"], cluster["pods"]["other"]}
        wait_for(
            lambda: all(holders_now(name) == rest for name in (first, second)),
            60,
            "a holder stayed",
        )
        anonymous = run(service.fetch(None, "GET", route))
        assert anonymous.code == 403
        # Saving an environment as an image is not offered here, and the page is told why.
        saves = run(service.fetch(service.users[first], "GET", "/gpu-containers/saves"))
        listed = conformance.check(saves, "/gpu-containers/saves", "get")
        refusal = listed["refusal"]
        assert refusal.startswith("On Kubernetes an image is pulled by the node"), refusal
        # Nor a build from the workspace: the same sentence, and a build asked for anyway 501.
        assert listed["build_refusal"] == refusal, listed
        build = run(
            service.fetch(
                service.users[first], "POST", "/gpu-containers/builds", {"path": "e/Dockerfile"}
            )
        )
        assert build.code == 501, build.body
    finally:
        print("\n".join(service.output().splitlines()[-60:]))
        service.close()

    pods = cluster["pods"]
    for name, view in seen.items():
        assert view["backend"] == "kubernetes" and view["engine_error"] == "", view
        pools = my_pools(view, pool)
        holders = {h["pod"]: h for p in pools.values() for h in p["holders"]}
        assert set(holders) == set(pods.values()), holders
        for pod, holder in holders.items():
            own = (name == first) == (pod != pods["other"])
            assert holder["mine"] is own
            assert holder["user"] == (name if own else "")
            assert bool(holder["kernel_id"]) is own
        verdicts = {p: pools[p]["verdicts"][0]["verdict"]["outcome"] for p in pools}
        assert verdicts == {A100: "native", H100: "cannot-run"}, verdicts


@pytest.mark.parametrize(
    ("labels", "driver"),
    [
        ({"nvidia.com/cuda.driver-version.full": "570.124.06"}, "570.124.06"),
        (
            {
                "nvidia.com/cuda.driver.major": "550",
                "nvidia.com/cuda.driver.minor": "54",
                "nvidia.com/cuda.driver.rev": "15",
            },
            "550.54.15",
        ),
        ({"nvidia.com/cuda.driver.major": "550"}, "550"),
        # A label is the node's word, not a version unless it looks like one.
        ({"nvidia.com/cuda.driver-version.full": "5" * 40}, ""),
        ({"nvidia.com/cuda.driver.major": "550;rm", "nvidia.com/cuda.driver.minor": "1"}, ""),
        ({}, ""),
    ],
)
def test_driver_from_feature_discovery_labels(labels: dict[str, str], driver: str) -> None:
    assert driver_of(labels) == driver


@pytest.mark.parametrize(
    ("product", "brand"),
    [
        ("NVIDIA-A100-SXM4-80GB", "nvidia"),
        ("NVIDIA-H100-80GB-HBM3", "nvidia"),
        ("NVIDIA-GH200-480GB", "nvidia"),
        ("NVIDIA-L4", "nvidia"),
        ("Tesla-V100-SXM2-16GB", "nvidia"),
        ("Tesla-T4", "nvidia"),
        ("NVIDIA-GeForce-RTX-3090", "geforce"),
        ("NVIDIA-RTX-A6000", "nvidiartx"),
        ("Quadro-RTX-8000", "quadrortx"),
        ("NVIDIA-TITAN-V", "titan"),
        ("Something-Else", ""),
    ],
)
def test_brand_from_the_product_name(product: str, brand: str) -> None:
    """GPU feature discovery publishes no NVML brand; forward compatibility depends on it."""
    assert brand_of(product) == brand
