"""The kernel service deployed in the cluster as docs/kubernetes.md tells an administrator, with a
real JupyterHub whose users' servers use it as their gateway (``--gateway-url``).

- The service's image is built by scripts/build-service-image.sh (deploy/kubernetes/
  service.Dockerfile) and imported into a real node (tests/k8s_node.py).
- deploy/kubernetes/rbac.yaml and service.yaml are applied as shipped: the test only appends its
  values to the ConfigMap's configuration file (this cluster's node, image, Hub and accounts) and
  tells the pod where the API server is (see ``_in_this_cluster``).
- A real Hub (tests/hub.py) spawns the two students' servers as their own accounts, with the
  service's pod as their gateway and their own Hub token as the gateway token; the service checks
  those tokens with the Hub.

A student opens a notebook in their own server: the kernel is a pod the scheduler placed on the
GPU node with the notebook's GPU, code runs as the student in the notebook's directory of their
workspace, the other student cannot reach it, and closing the notebook removes the pod.

The Deployment's two replicas, one active (ActiveLease): the active one killed (kill -9 of its
process), then the one acting after it paused past its lease and resumed; each time the
student's notebook runs a cell again on the same kernel pod, through the replica that acts, and
the resumed one stands down. The cluster has no kube-proxy: users' servers reach the Service
through a relay that follows its ready endpoints, as kube-proxy would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TEST_LABEL, TEST_RUN, kernel_name, write_notebook
from hostusers import ids_of
from hub import STUDENT_A, STUDENT_B, Hub, needs_students, server_api_token
from k8s_cluster import ControlPlane, wait_for
from k8s_node import RealNode
from kernel_io import execute
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from relay import TcpRelay
from servers import wait_until
from service_image import built as built_service_image
from service_image import remove as remove_service_image
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import WebSocketClosedError, websocket_connect

from jupyter_gpu_containers.backends.kubernetes.lease import ROLE
from jupyter_gpu_containers.base import labels as L

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy" / "kubernetes"
CONFIG_FILE = "jupyter_gpu_containers_serve_config.py"
# A 2-core machine runs the control plane, a kubelet, the Hub, two servers and the pods.
REQUEST_TIMEOUT = 180.0

pytestmark = [needs_students, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def service_image(real_node: RealNode) -> Iterator[str]:
    """The service's image (tests/service_image.py: its build began when this module's tests
    were collected), in the node."""
    try:
        yield real_node.import_image(built_service_image())
    finally:
        remove_service_image()


@dataclass
class Student:
    name: str
    hub: Hub
    api_token: str
    workspace: Path

    def _request(self, method: str, path: str, body: Any = None) -> HTTPRequest:
        return HTTPRequest(
            f"{self.hub.url}/user/{self.name}/{path.lstrip('/')}",
            method=method,
            headers={"Authorization": f"token {self.api_token}"},
            body=None if body is None else json.dumps(body),
            allow_nonstandard_methods=True,
            request_timeout=REQUEST_TIMEOUT,
        )

    async def answer(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """What the student's own server answers (through the Hub's proxy)."""
        response = await AsyncHTTPClient().fetch(
            self._request(method, path, body), raise_error=False
        )
        try:
            return response.code, json.loads(response.body) if response.body else None
        except ValueError:
            return response.code, response.body.decode("utf-8", "replace")

    async def open_notebook(self, spec: str, path: str) -> dict[str, Any]:
        """Once the kernel spec is listed in the student's own server: a notebook of theirs
        asking for one GPU, opened on it (its session)."""

        async def listed() -> bool:
            code, specs = await self.answer("GET", "api/kernelspecs")
            return code == 200 and spec in specs["kernelspecs"]

        await wait_until(listed, 180, f"the kernel spec {spec} in the student's server")
        uid, gid = ids_of(self.name)
        os.chown(write_notebook(self.workspace, path, gpus=1), uid, gid)
        name = Path(path).name
        body = {"path": path, "type": "notebook", "name": name, "kernel": {"name": spec}}
        code, session = await self.answer("POST", "api/sessions", body)
        assert code == 201, (code, session)
        return dict(session)

    async def channels(self, kernel_id: str, timeout: float = REQUEST_TIMEOUT) -> Any:
        """The kernel's websocket through the student's server, as their notebook's page opens
        it."""
        return await websocket_connect(
            HTTPRequest(
                f"ws://127.0.0.1:{self.hub.port}/user/{self.name}/api/kernels/{kernel_id}/channels",
                headers={"Authorization": f"token {self.api_token}"},
                connect_timeout=timeout,
                request_timeout=timeout,
            )
        )

    async def run(self, kernel_id: str, code: str, timeout: float = REQUEST_TIMEOUT) -> Any:
        ws = await self.channels(kernel_id, timeout)
        try:
            return await execute(ws, code, timeout)
        finally:
            ws.close()


@dataclass
class Deployment:
    namespace: str
    pod: Any  # the active replica's pod at the start, as the API gave it
    hub: Hub
    students: dict[str, Student]
    core: Any  # the admin's CoreV1Api

    def service_log(self, pod: Any = None, previous: bool = False) -> str:
        return str(
            self.core.read_namespaced_pod_log(
                (pod or self.pod).metadata.name, self.namespace, tail_lines=400, previous=previous
            )
        )

    def service_pods(self) -> list[Any]:
        pods = self.core.list_namespaced_pod(
            self.namespace, label_selector="app.kubernetes.io/component=kernel-service"
        ).items
        return [p for p in pods if p.metadata.deletion_timestamp is None]

    def active_pod(self) -> Any:
        """The pod the Service routes to: labelled active by the replica holding the lease, and
        ready. None between two."""
        active = [p for p in self.service_pods() if (p.metadata.labels or {}).get(ROLE)]
        return active[0] if len(active) == 1 and _ready(active[0]) else None

    def kernel_pods(self) -> list[Any]:
        pods = self.core.list_namespaced_pod(
            self.namespace, label_selector=f"{L.MANAGED}=true"
        ).items
        return [p for p in pods if p.metadata.deletion_timestamp is None]


def _in_this_cluster(
    documents: list[dict[str, Any]], overrides: str, node: RealNode, api: TcpRelay
) -> None:
    """Append ``overrides`` to the ConfigMap's configuration, and put the Deployment's pod on the
    real node. This cluster has no kube-proxy and no DNS: the pod's in-cluster configuration
    finds the API server through KUBERNETES_SERVICE_HOST/PORT, here the relay on the node's
    bridge, under the name the API server's certificate carries."""
    for doc in documents:
        if doc["kind"] == "ConfigMap":
            doc["data"][CONFIG_FILE] += overrides
        elif doc["kind"] == "Deployment":
            spec = doc["spec"]["template"]["spec"]
            spec["nodeSelector"] = node.node_selector
            spec["tolerations"] = [node.toleration]
            spec["hostAliases"] = [{"ip": api.host, "hostnames": ["kubernetes.default.svc"]}]
            spec["containers"][0]["env"] += [
                {"name": "KUBERNETES_SERVICE_HOST", "value": "kubernetes.default.svc"},
                {"name": "KUBERNETES_SERVICE_PORT", "value": str(api.port)},
            ]


def _ready(pod: Any) -> bool:
    conditions = (pod.status.conditions or []) if pod.status else []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _service_endpoint(discovery: Any, namespace: str) -> tuple[str, int] | None:
    """Where kube-proxy would send a connection to the Service: a ready endpoint of its
    EndpointSlices (its selector picks the active replica's pod alone)."""
    slices = discovery.list_namespaced_endpoint_slice(
        namespace, label_selector="kubernetes.io/service-name=jupyter-gpu-containers"
    ).items
    for endpoint_slice in slices:
        ports = [p.port for p in endpoint_slice.ports or [] if p.name == "http"]
        for endpoint in endpoint_slice.endpoints or []:
            if ports and endpoint.conditions and endpoint.conditions.ready:
                return str(endpoint.addresses[0]), int(ports[0])
    return None


def _service_process(pod: Any) -> int:
    """The pid, on this host, of the kernel service's process in ``pod`` (the node's containers
    run here, in cgroups named after their pod)."""
    marker = f"pod{pod.metadata.uid}"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if b"serve" in cmdline and marker in (proc / "cgroup").read_text():
                return int(proc.name)
    raise AssertionError(f"no kernel service process in the pod {pod.metadata.name}")


def _restarts(pod: Any) -> int:
    statuses = (pod.status.container_statuses or []) if pod.status else []
    return sum(s.restart_count for s in statuses)


@pytest.fixture(scope="module")
def deployment(
    control_plane: ControlPlane,
    real_node: RealNode,
    real_node_image: str,
    service_image: str,
) -> Iterator[Deployment]:
    namespace = f"jgc-deploy-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(control_plane.admin_client)
    rbac = client.RbacAuthorizationV1Api(control_plane.admin_client)
    # Each clean-up is registered as soon as what it removes exists, and each runs (last made,
    # first removed) even when another fails or the set-up stopped half-way.
    with contextlib.ExitStack() as cleanup:
        # Not under pytest's own directory, which is root's alone: the students' servers serve
        # their workspaces below it.
        root = Path(tempfile.mkdtemp(prefix="jgc-deploy-", dir="/tmp"))
        cleanup.callback(shutil.rmtree, root, ignore_errors=True)
        root.chmod(0o755)
        workspaces = {}
        for user in (STUDENT_A, STUDENT_B):
            workspaces[user] = root / "ws" / user
            workspaces[user].mkdir(parents=True)
            os.chown(workspaces[user], *ids_of(user))
        (root / "ws").chmod(0o755)
        template = str(root / "ws" / "{username}")
        hub = Hub(
            [STUDENT_A, STUDENT_B],
            spawner_env={
                "JUPYTER_GATEWAY_REQUEST_TIMEOUT": str(int(REQUEST_TIMEOUT)),
                "JUPYTER_GATEWAY_CONNECT_TIMEOUT": "60",
            },
            extra_config=f"c.Spawner.notebook_dir = {template!r}",
        )
        cleanup.callback(hub.close)
        # Shown when a test failed (pytest prints a failed test's captured output).
        cleanup.callback(lambda: print("\n".join(hub.output().splitlines()[-60:])))
        api_relay = cleanup.enter_context(
            TcpRelay(real_node.node_ip, "127.0.0.1", control_plane.port)
        )
        hub_relay = cleanup.enter_context(TcpRelay(real_node.node_ip, "127.0.0.1", hub.hub_port))
        control_plane.create_namespace(
            namespace,
            {"pod-security.kubernetes.io/enforce": "restricted", TEST_LABEL: TEST_RUN},
        )
        # The namespace goes with the service, its kernel pods and their Secrets.
        cleanup.callback(control_plane.delete_namespace, namespace)
        cleanup.callback(_delete_cluster_wide, rbac, DEPLOY / "rbac.yaml", namespace)
        control_plane.apply(DEPLOY / "rbac.yaml", namespace)
        core.create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": "jupyter-gpu-containers-hub"},
                "stringData": {"api-token": hub.service_token},
            },
        )
        # The students' workspaces: the claims service.yaml names (home-<user>), each bound to
        # a volume that is the student's directory here, which their own server serves too.
        for user, workspace in workspaces.items():
            volume = control_plane.bind_claim(namespace, f"home-{user}", workspace)
            cleanup.callback(control_plane.delete_volume, volume)
        accounts = {user: "{}:{}".format(*ids_of(user)) for user in workspaces}
        overrides = f"""
# --- tests/test_k8s_deployment.py: this cluster's node, image, Hub and accounts -------------
c.KubernetesBackend.node_selector = {real_node.node_selector!r}
c.KubernetesBackend.tolerations = [{real_node.toleration!r}]
c.KubernetesBackend.cpu_request = "50m"
c.KubernetesBackend.memory_request = "64Mi"
c.KubernetesBackend.memory_limit = "1Gi"
c.KubernetesBackend.startup_timeout = 180
c.ContainerPolicy.max_shm_size = "1g"
c.ContainerProvisioner.extra_labels = {{{TEST_LABEL!r}: {TEST_RUN!r}}}
# The node's image has no CUDA of its own: the administrator's word makes it a GPU build,
# whose notebooks keep the GPU they saved (a CPU build's would run without it).
c.ImageCatalog.listed_images = [{{"image": {real_node_image!r}, "gpu": True}}]
c.ContainerPolicy.allowed_images = [{real_node_image!r}]
c.HubIdentity.api_url = "http://{hub_relay.host}:{hub_relay.port}/hub/api"
c.UserDirectory.accounts = {accounts!r}
c.UserDirectory.workspace_template = {template!r}
"""
        text = (DEPLOY / "service.yaml").read_text().replace("{{image}}", service_image)
        text = text.replace("{{namespace}}", namespace)
        documents = [d for d in yaml.safe_load_all(text) if d]
        _in_this_cluster(documents, overrides, real_node, api_relay)
        control_plane.apply(yaml.safe_dump_all(documents), namespace)

        made = Deployment(namespace, None, hub, {}, core)

        def ready() -> bool:
            pods = made.service_pods()
            return len(pods) == 2 and all(map(_ready, pods)) and made.active_pod() is not None

        try:
            # Both replicas ready (the standby answers its probes too), one labelled active.
            wait_for(ready, 240, "the service's two pods did not become ready, one active")
        except TimeoutError:
            for pod in made.service_pods():
                print(pod.metadata.labels, pod.status)
                try:
                    print(core.read_namespaced_pod_log(pod.metadata.name, namespace))
                except ApiException as e:
                    print(f"(no log: {e.reason})")
            raise
        made.pod = made.active_pod()
        # The Service's stand-in (no kube-proxy here): each connection to the active replica.
        discovery = client.DiscoveryV1Api(control_plane.admin_client)
        gateway = cleanup.enter_context(
            TcpRelay("127.0.0.1", target=lambda: _service_endpoint(discovery, namespace))
        )
        hub.gateway_url = f"http://127.0.0.1:{gateway.port}"
        hub.start()
        students = {}
        for user, workspace in workspaces.items():
            pid = hub.start_server(user)
            assert server_api_token(pid)  # the server runs, with a token of its own
            students[user] = Student(user, hub, hub.new_token(user), workspace)
        made.students = students

        def service_log() -> None:
            for pod in made.service_pods():
                for previous in (True, False):
                    with contextlib.suppress(ApiException):
                        log = made.service_log(pod, previous=previous)
                        print(f"--- {pod.metadata.name} (previous: {previous}) ---")
                        print("\n".join(log.splitlines()[-80:]))

        cleanup.callback(service_log)
        yield made


def _delete_cluster_wide(rbac: Any, manifest: Path, namespace: str) -> None:
    """The cluster-wide objects of ``manifest`` (rbac.yaml's ClusterRole and its binding, named
    per namespace), which the namespace's deletion leaves."""
    text = manifest.read_text().replace("{{namespace}}", namespace)
    for doc in yaml.safe_load_all(text):
        if not doc or doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            continue
        delete = (
            rbac.delete_cluster_role
            if doc["kind"] == "ClusterRole"
            else rbac.delete_cluster_role_binding
        )
        try:
            delete(doc["metadata"]["name"])
        except ApiException as e:
            if e.status != 404:
                raise


async def test_a_students_notebook_kernel_is_a_pod_of_the_service_in_the_cluster(
    deployment: Deployment, real_node: RealNode, real_node_image: str
) -> None:
    pod = deployment.pod
    # The Deployment as shipped: PodSecurity "restricted" admitted it, as its own uid.
    assert pod.spec.security_context.run_as_user == 10001
    assert pod.spec.containers[0].security_context.read_only_root_filesystem is True
    assert "users authenticate with their JupyterHub API tokens" in deployment.service_log()

    alice = deployment.students[STUDENT_A]
    bob = deployment.students[STUDENT_B]
    spec = kernel_name(real_node_image)

    # The listed image is a kernel spec in the student's server, through the service's pod.
    uid, gid = ids_of(alice.name)
    course = alice.workspace / "course"
    course.mkdir()
    os.chown(course, uid, gid)
    session = await alice.open_notebook(spec, "course/week1.ipynb")
    kernel_id = session["kernel"]["id"]

    # The kernel is a pod of the service's namespace, on the GPU node the scheduler chose, with
    # the notebook's GPU, booked to the student.
    pods = [p for p in deployment.kernel_pods() if p.metadata.labels.get(L.KERNEL_ID) == kernel_id]
    assert len(pods) == 1, [p.metadata.name for p in deployment.kernel_pods()]
    kernel_pod = pods[0]
    assert kernel_pod.spec.node_name == real_node.name
    assert kernel_pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    assert kernel_pod.metadata.labels[L.USER] == alice.name
    assert kernel_pod.spec.security_context.run_as_user == uid

    # Code runs as the student, in the notebook's directory of their workspace, through their
    # server, the service's pod and the kernel pod.
    result = await alice.run(
        kernel_id,
        "import os; open('out.txt', 'w').write('hi'); print(os.getuid(), os.getgid(), os.getcwd())",
    )
    assert result.status == "ok", result
    assert result.stdout.split() == [str(uid), str(gid), "/workspace/course"], result
    written = (course / "out.txt").stat()
    assert (written.st_uid, written.st_gid) == (uid, gid)

    # The other student's server neither lists nor reaches it.
    code, kernels = await bob.answer("GET", "api/kernels")
    assert code == 200 and kernel_id not in [k["id"] for k in kernels], kernels
    code, _ = await bob.answer("GET", f"api/kernels/{kernel_id}")
    assert code == 404

    # Closing the notebook removes the pod and its Secret.
    code, _ = await alice.answer("DELETE", f"api/sessions/{session['id']}")
    assert code == 204
    name = kernel_pod.metadata.name
    wait_for(
        lambda: not [p for p in deployment.kernel_pods() if p.metadata.name == name],
        120,
        f"the kernel pod {name} was not removed",
    )
    secrets = deployment.core.list_namespaced_secret(deployment.namespace).items
    assert not [s for s in secrets if s.metadata.name.startswith(name)], secrets


async def test_the_notebook_runs_again_when_the_active_replica_dies_or_pauses(
    deployment: Deployment, real_node_image: str
) -> None:
    alice = deployment.students[STUDENT_A]
    spec = kernel_name(real_node_image)

    session = await alice.open_notebook(spec, "failover.ipynb")
    kernel_id = session["kernel"]["id"]
    assert (await alice.run(kernel_id, "kept = 'still here'")).status == "ok"
    (kernel_pod,) = deployment.kernel_pods()

    async def runs_again(page: Any) -> tuple[float, Any]:
        """The student runs the cell again in their open notebook until it answers, its
        variable still there: when it answered (monotonic) and the page's websocket. A cell sent
        while their server reconnects to the service is lost (Jupyter Server's gateway client
        drops it), so each try waits 2 s; a page whose websocket closed opens another, as
        JupyterLab does."""
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if page is None:
                    page = await alice.channels(kernel_id, timeout=10)
                result = await execute(page, "print(kept)", timeout=2)
                if result.status == "ok" and result.stdout.strip() == "still here":
                    return time.monotonic(), page
            except TimeoutError:  # no answer: the cell was lost, or the service not back yet
                pass
            except (OSError, WebSocketClosedError):  # the page's websocket closed
                page = None
        raise AssertionError("the notebook's kernel did not answer again in 180 s")

    def same_kernel_pod() -> None:
        (now,) = deployment.kernel_pods()
        assert now.metadata.uid == kernel_pod.metadata.uid
        assert now.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"

    # The active replica's process killed: a replica acts again (the standby, or the killed
    # container restarted in its pod, whichever looks first), reattaches the kernel, and the
    # notebook's next cell runs on it.
    killed = deployment.pod
    page = await alice.channels(kernel_id)  # the notebook stays open throughout
    os.kill(_service_process(killed), signal.SIGKILL)
    at, wall = time.monotonic(), time.time()
    answered, page = await runs_again(page)
    lease = client.CoordinationV1Api(deployment.core.api_client).read_namespaced_lease(
        "jupyter-gpu-containers", deployment.namespace
    )
    print(
        f"kill -9 of the active replica: the lease taken by {lease.spec.holder_identity} "
        f"{lease.spec.acquire_time.timestamp() - wall:.1f} s after, the open notebook's cell "
        f"answered {answered - at:.1f} s after"
    )
    same_kernel_pod()

    # The replica acting now paused past its lease (a frozen process): the other takes over;
    # resumed, the paused one stands down (its process exits, its container starts again).
    paused = None
    while paused is None:
        paused = deployment.active_pod()
        await asyncio.sleep(0.5)
    restarts = _restarts(paused)
    pid = _service_process(paused)
    os.kill(pid, signal.SIGSTOP)
    try:

        async def other_active() -> bool:
            pod = deployment.active_pod()
            return pod is not None and pod.metadata.name != paused.metadata.name

        await wait_until(other_active, 120, "the other replica to take over from the paused one")
        # The open page's connection still ends in the frozen replica (its TCP connections
        # live on) until it resumes or its liveness probe restarts it; a page opened now (a
        # reload) reaches the replica that acts.
        _, reloaded = await runs_again(None)
        reloaded.close()
    finally:
        os.kill(pid, signal.SIGCONT)

    def stood_down() -> bool:
        pod = deployment.core.read_namespaced_pod(paused.metadata.name, deployment.namespace)
        return _restarts(pod) > restarts

    wait_for(stood_down, 120, "the resumed replica did not stand down")
    assert "lost the lease" in deployment.service_log(paused, previous=True)
    active = deployment.active_pod()
    assert active is None or active.metadata.name != paused.metadata.name
    same_kernel_pod()
    # The frozen replica's connections ended with it: the open page's runs again.
    _, page = await runs_again(page)
    page.close()

    code, _ = await alice.answer("DELETE", f"api/sessions/{session['id']}")
    assert code == 204
    wait_for(lambda: not deployment.kernel_pods(), 120, "the kernel pod was not removed")
