"""The Kubernetes deployment files (deploy/kubernetes/, docs/kubernetes.md) say what is true.

- The YAML parses, and its parts agree with each other and with the code: the Deployment runs as
  the RBAC's service account, the Service reaches its port, the config file in the ConfigMap sets
  only options that exist, and the z2jh values point users' servers at that Service with the scope
  the Hub must grant (hubauth.py's).
- Against the real control plane (tests/k8s_cluster.py): rbac.yaml, applied into a fresh
  namespace, lets the service account do exactly what the backend does (asked of the API server as
  that account, with a token from the TokenRequest API) and refuses the rest: exec, other
  namespaces' secrets, nodes' writes, cluster roles, namespaces. The service's pod passes the
  ``restricted`` Pod Security Standard, and every object of service.yaml is accepted by the API.

Namespaces and the cluster-scoped objects the tests create are removed even when a test fails.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import importlib
import inspect
import os
import pkgutil
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from traitlets import HasTraits
from traitlets.config import Configurable, PyFileConfigLoader

import jupyter_gpu_containers
from jupyter_gpu_containers.backends.kubernetes.lease import ROLE
from jupyter_gpu_containers.service.hubauth import access_scope

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy" / "kubernetes"
RBAC = DEPLOY / "rbac.yaml"
SERVICE = DEPLOY / "service.yaml"
Z2JH = DEPLOY / "z2jh-values.yaml"
DOC = REPO / "docs" / "kubernetes.md"

ACCOUNT = "jupyter-gpu-containers"
# What the backend does (k8s.py), and all the service account may do: (API group, resource) →
# verbs. In its own namespace, but nodes (cluster-scoped, read only).
GRANTED_IN_NAMESPACE = {
    ("", "pods"): {"create", "get", "list", "watch", "delete", "patch"},
    ("", "pods/log"): {"get"},
    ("", "secrets"): {"create", "get", "delete", "patch"},
    ("", "events"): {"get", "list", "watch"},
    ("coordination.k8s.io", "leases"): {"get", "create", "update"},
}
GRANTED_CLUSTER = {("", "nodes"): {"get", "list", "watch"}}
# A namespace the YAML-only checks substitute, as an administrator's sed would.
EXAMPLE_NAMESPACE = "jupyter-kernels"


def documents(path: Path, namespace: str | None = None) -> list[dict[str, Any]]:
    text = path.read_text()
    if namespace is not None:
        text = text.replace("{{namespace}}", namespace)
    return [d for d in yaml.safe_load_all(text) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def rules_of(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def service_config_text(namespace: str = EXAMPLE_NAMESPACE) -> tuple[str, str]:
    """(the ConfigMap's file name, its text) from service.yaml."""
    config_map = one(documents(SERVICE, namespace), "ConfigMap")
    ((name, text),) = config_map["data"].items()
    return name, text


def load_service_config() -> Any:
    name, text = service_config_text()
    with tempfile.TemporaryDirectory() as d:
        Path(d, name).write_text(text)
        return PyFileConfigLoader(name, path=d).load_config()


def configurable_classes() -> dict[str, type[Configurable]]:
    """Every Configurable the service may be configured with, by class name: the package's own
    and Jupyter Server's (ServerApp, MappingKernelManager, …)."""
    import jupyter_server.serverapp as serverapp

    classes: dict[str, type[Configurable]] = {}
    for cls in serverapp.ServerApp().classes:  # type: ignore[no-untyped-call]
        classes[cls.__name__] = cls
    for info in pkgutil.walk_packages(jupyter_gpu_containers.__path__, "jupyter_gpu_containers."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Configurable) and cls.__module__ == module.__name__:
                classes[cls.__name__] = cls
    return classes


# --- the files themselves ---------------------------------------------------------------------


def test_rbac_grants_exactly_what_the_backend_uses() -> None:
    docs = documents(RBAC)
    assert sorted(d["kind"] for d in docs) == sorted(
        ["ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"]
    )
    account = one(docs, "ServiceAccount")
    assert account["metadata"] == {
        **account["metadata"],
        "name": ACCOUNT,
        "namespace": "{{namespace}}",
    }
    role = one(docs, "Role")
    assert role["metadata"]["namespace"] == "{{namespace}}"
    assert rules_of(role) == GRANTED_IN_NAMESPACE
    cluster_role = one(docs, "ClusterRole")
    assert rules_of(cluster_role) == GRANTED_CLUSTER
    for binding, role_doc in (
        (one(docs, "RoleBinding"), role),
        (one(docs, "ClusterRoleBinding"), cluster_role),
    ):
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_doc["kind"],
            "name": role_doc["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": ACCOUNT, "namespace": "{{namespace}}"}
        ]
    # Cluster-scoped names carry the namespace: two installations (or two test runs) never
    # share, overwrite or delete each other's.
    for doc in (cluster_role, one(docs, "ClusterRoleBinding")):
        assert "{{namespace}}" in doc["metadata"]["name"]
        assert "namespace" not in doc["metadata"]


def test_service_manifest_runs_as_the_rbac_account() -> None:
    docs = documents(SERVICE, EXAMPLE_NAMESPACE)
    assert {d["metadata"].get("namespace") for d in docs} == {EXAMPLE_NAMESPACE}
    deployment = one(docs, "Deployment")
    spec = deployment["spec"]
    # Two replicas, one acting (ActiveLease), replaced one at a time.
    assert spec["replicas"] == 2 and spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == one(documents(RBAC), "ServiceAccount")["metadata"]["name"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    (container,) = pod["containers"]
    assert container["command"][:3] == ["jupyter", "gpu-containers", "serve"]

    # The --config file is the ConfigMap's, where the ConfigMap is mounted.
    config_map = one(docs, "ConfigMap")
    (config_arg,) = [a for a in container["command"] if a.startswith("--config=")]
    config_path = Path(config_arg.split("=", 1)[1])
    (volume,) = [v for v in pod["volumes"] if v.get("configMap")]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["mountPath"] == str(config_path.parent) and mount["readOnly"] is True
    assert config_path.name in config_map["data"]
    # The name `jupyter gpu-containers serve` (and its token commands) look for by default.
    from jupyter_gpu_containers.cli import SERVICE_CONFIG_FILE

    assert config_path.name == SERVICE_CONFIG_FILE + ".py"

    # The Service reaches the port the config listens on.
    config = load_service_config()
    (port,) = container["ports"]
    assert port["containerPort"] == config.ServerApp.port
    service = one(docs, "Service")
    # The Service selects the service's pods, and of them the one the active replica labels.
    selector = dict(service["spec"]["selector"])
    assert selector.pop(ROLE) == "active"
    assert selector.items() <= spec["template"]["metadata"]["labels"].items()
    assert ROLE not in spec["template"]["metadata"]["labels"]
    (pod_name,) = [e for e in container["env"] if e["name"] == "POD_NAME"]
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]
    assert config.KubernetesBackend.namespace == EXAMPLE_NAMESPACE
    assert config.ServiceApp.backend == "kubernetes"

    # Every writable path the service uses is a volume: the root file system is read-only.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    for variable in ("HOME", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR"):
        assert env[variable] in mounted, variable
    # The Hub token comes from a Secret, never from the manifest.
    (token,) = [e for e in container["env"] if e["name"] == "JUPYTERHUB_API_TOKEN"]
    assert set(token) == {"name", "valueFrom"}


def test_service_config_sets_only_options_that_exist() -> None:
    config = load_service_config()
    classes = configurable_classes()
    assert config, "the ConfigMap's config file sets nothing"
    for section, values in config.items():
        assert section in classes, f"c.{section}: no such configurable class"
        traits = classes[section].class_traits(config=True)
        for key in values:
            assert key in traits, f"c.{section}.{key} is not an option of {section}"
            # The value is one the trait takes (set on a copy of the trait, as config would be).
            holder = HasTraits()
            holder.add_traits(**{key: copy.deepcopy(traits[key])})
            setattr(holder, key, values[key])


def test_z2jh_values_point_users_servers_at_the_service() -> None:
    values = yaml.safe_load(Z2JH.read_text())
    docs = documents(SERVICE, EXAMPLE_NAMESPACE)
    service = one(docs, "Service")
    config = load_service_config()

    # JUPYTER_GATEWAY_URL is the Service's in-cluster address and port.
    env = values["singleuser"]["extraEnv"]
    url = urlsplit(env["JUPYTER_GATEWAY_URL"])
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    assert url.scheme == "http"
    assert url.hostname == f"{name}.{namespace}.svc.cluster.local"
    assert url.port == service["spec"]["ports"][0]["port"]
    assert float(env["JUPYTER_GATEWAY_REQUEST_TIMEOUT"]) >= 60

    # The Hub knows the service by the name the service checks scopes for; users' tokens carry
    # that scope, and the role gives it.
    service_name = config.HubIdentity.service_name
    hub = values["hub"]
    assert service_name in hub["services"] and "url" not in hub["services"][service_name]
    scope = access_scope(service_name)
    assert scope in hub["config"]["Spawner"]["server_token_scopes"]
    assert any(scope in role["scopes"] for role in hub["loadRoles"].values())
    hub_url = urlsplit(config.HubIdentity.api_url)
    assert hub_url.path == "/hub/api" and hub_url.port == 8081

    # Each server's gateway token is its own Hub API token: run the extraConfig as the Hub would.
    from traitlets.config import Config

    c = Config()
    c.KubeSpawner.environment = dict(env)
    for snippet in hub["extraConfig"].values():
        exec(snippet, {"c": c})  # the file under test, as z2jh runs it
    token = c.KubeSpawner.environment["JUPYTER_GATEWAY_AUTH_TOKEN"]
    assert token(SimpleNamespace(api_token="the-servers-own-token")) == "the-servers-own-token"

    # z2jh's network policies: users' pods may reach the service's port, the service the Hub.
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    (egress,) = values["singleuser"]["networkPolicy"]["egress"]
    (to,) = egress["to"]
    assert to["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": namespace}
    assert to["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert [p["port"] for p in egress["ports"]] == [service["spec"]["ports"][0]["port"]]
    (ingress,) = values["hub"]["networkPolicy"]["ingress"]
    assert ingress["from"][0]["podSelector"]["matchLabels"].items() <= pod_labels.items()


def test_docs_name_real_options_and_files() -> None:
    """docs/kubernetes.md's KubernetesBackend options are the backend's, and every file of
    deploy/kubernetes it names exists."""
    from jupyter_gpu_containers.backends.kubernetes.k8s import KubernetesBackend

    text = DOC.read_text()
    traits = KubernetesBackend.class_traits(config=True)
    named = set(re.findall(r"KubernetesBackend\.([A-Za-z_]+)", text))
    assert named, "docs/kubernetes.md names no KubernetesBackend option"
    assert named <= set(traits), f"not options of KubernetesBackend: {named - set(traits)}"
    for documented in ("namespace", "gpu_resource", "workspace_volume", "unschedulable"):
        assert documented in named
    # The failover section's options are ActiveLease's, each of them in its table.
    from jupyter_gpu_containers.backends.kubernetes.lease import ActiveLease

    lease_traits = set(ActiveLease.class_traits(config=True))
    named = set(re.findall(r"ActiveLease\.([A-Za-z_]+)", text))
    assert named and named <= lease_traits, named - lease_traits
    assert [t for t in lease_traits if f"| `{t}`" not in text] == []
    for path in set(re.findall(r"deploy/kubernetes/[A-Za-z0-9_.-]+", text)):
        assert (REPO / path).is_file(), path
    for linked_from in (REPO / "README.md", REPO / "docs" / "admin-guide.md"):
        assert "kubernetes.md" in linked_from.read_text(), linked_from


# --- against the real control plane -----------------------------------------------------------


def access_review(api_client: Any, verb: str, resource: str, namespace: str = "") -> bool:
    """Whether the client's own identity may ``verb`` ``resource`` (``pods/exec``: a
    subresource), asked of the API server (SelfSubjectAccessReview)."""
    from kubernetes import client

    group, _, rest = resource.rpartition(":")
    name, _, subresource = rest.partition("/")
    attributes = {"verb": verb, "resource": name, "group": group, "namespace": namespace}
    if subresource:
        attributes["subresource"] = subresource
    review = client.AuthorizationV1Api(api_client).create_self_subject_access_review(
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }
    )
    return bool(review.status.allowed)


@pytest.fixture(scope="module")
def installed(control_plane: Any) -> Iterator[SimpleNamespace]:
    """rbac.yaml applied into two fresh namespaces (two installations side by side), and an API
    client authenticated as the first one's service account; everything removed afterwards."""
    from kubernetes import client, config

    suffix = os.urandom(3).hex()
    namespaces = [f"jgc-rbac-{suffix}", f"jgc-rbac-other-{suffix}"]
    rbac = client.RbacAuthorizationV1Api(control_plane.admin_client)
    api_client = None
    try:
        applied: dict[str, list[dict[str, Any]]] = {}
        for namespace in namespaces:
            control_plane.create_namespace(namespace)
            applied[namespace] = control_plane.apply(RBAC, namespace)

        def client_for(namespace: str) -> Any:
            """An API client authenticated as ``namespace``'s service account (TokenRequest)."""
            token = control_plane.service_account_token(namespace, ACCOUNT, seconds=600)
            with tempfile.TemporaryDirectory() as d:
                path = control_plane.kubeconfig_for_token(token, Path(d, "kubeconfig"))
                return config.new_client_from_config(config_file=path)

        api_client = client_for(namespaces[0])
        yield SimpleNamespace(
            namespace=namespaces[0],
            other=namespaces[1],
            applied=applied,
            client=api_client,
            client_for=client_for,
            admin=control_plane.admin_client,
            control_plane=control_plane,
        )
    finally:
        if api_client is not None:
            api_client.close()
        for namespace in namespaces:
            name = f"jupyter-gpu-containers-nodes-{namespace}"
            for delete in (rbac.delete_cluster_role_binding, rbac.delete_cluster_role):
                with contextlib.suppress(client.ApiException):
                    delete(name)
            control_plane.delete_namespace(namespace, wait=False)


ALLOWED = [
    *[(verb, "pods") for verb in ("create", "get", "list", "watch", "delete", "patch")],
    ("get", "pods/log"),
    *[(verb, "secrets") for verb in ("create", "get", "delete", "patch")],
    *[(verb, "events") for verb in ("get", "list", "watch")],
    *[(verb, "coordination.k8s.io:leases") for verb in ("get", "create", "update")],
]
REFUSED_HERE = [
    ("create", "pods/exec"),
    ("get", "pods/exec"),
    ("create", "pods/attach"),
    ("create", "pods/portforward"),
    ("update", "pods"),
    ("delete", "coordination.k8s.io:leases"),
    ("list", "coordination.k8s.io:leases"),
    ("deletecollection", "pods"),
    ("patch", "pods/status"),
    ("create", "pods/eviction"),
    ("list", "secrets"),
    ("watch", "secrets"),
    ("update", "secrets"),
    ("create", "events"),
    ("get", "configmaps"),
    ("create", "serviceaccounts/token"),
    ("create", "persistentvolumeclaims"),
    ("create", "apps:deployments"),
    ("create", "rbac.authorization.k8s.io:roles"),
    ("create", "rbac.authorization.k8s.io:rolebindings"),
    ("bind", "rbac.authorization.k8s.io:roles"),
    ("escalate", "rbac.authorization.k8s.io:roles"),
    ("patch", "rbac.authorization.k8s.io:roles"),
]
REFUSED_CLUSTER = [
    ("patch", "nodes"),
    ("update", "nodes"),
    ("delete", "nodes"),
    ("create", "nodes"),
    ("patch", "nodes/status"),
    ("get", "nodes/proxy"),
    ("create", "rbac.authorization.k8s.io:clusterrolebindings"),
    ("create", "rbac.authorization.k8s.io:clusterroles"),
    ("bind", "rbac.authorization.k8s.io:clusterroles"),
    ("escalate", "rbac.authorization.k8s.io:clusterroles"),
    ("delete", "namespaces"),
    ("create", "namespaces"),
    ("patch", "namespaces"),
    ("list", "pods"),  # every namespace's
    ("list", "secrets"),
    ("get", "persistentvolumes"),
    ("create", "certificates.k8s.io:certificatesigningrequests"),
]


def test_rbac_as_the_service_account(installed: SimpleNamespace) -> None:
    here, other, sa = installed.namespace, installed.other, installed.client
    # The cluster-scoped objects are this installation's own, named after its namespace.
    names = {(o["kind"], o["metadata"]["name"]) for o in installed.applied[here]}
    assert ("ClusterRole", f"jupyter-gpu-containers-nodes-{here}") in names
    assert ("ClusterRoleBinding", f"jupyter-gpu-containers-nodes-{here}") in names

    wrong: list[str] = []
    for verb, resource in ALLOWED:
        if not access_review(sa, verb, resource, here):
            wrong.append(f"refused {verb} {resource} in its namespace")
        if access_review(sa, verb, resource, other):
            wrong.append(f"allowed {verb} {resource} in another namespace")
    for verb in ("get", "list", "watch"):
        if not access_review(sa, verb, "nodes"):
            wrong.append(f"refused {verb} nodes")
    for verb, resource in REFUSED_HERE:
        if access_review(sa, verb, resource, here):
            wrong.append(f"allowed {verb} {resource} in its namespace")
    for verb, resource in REFUSED_CLUSTER:
        if access_review(sa, verb, resource):
            wrong.append(f"allowed {verb} {resource} cluster-wide")
    assert not wrong, "; ".join(wrong)

    # The other installation's account has the same rights in its own namespace only.
    other_sa = installed.client_for(other)
    try:
        assert access_review(other_sa, "create", "pods", other)
        assert not access_review(other_sa, "create", "pods", here)
        assert not access_review(other_sa, "get", "secrets", here)
    finally:
        other_sa.close()


def test_service_account_does_what_the_backend_does(installed: SimpleNamespace) -> None:
    """Not only reviews: as the service account, the backend's own sequence (k8s.py: the
    connection Secret, the kernel pod, the Secret given the pod as owner, the pod deleted), and
    the API's 403 for what it must not do."""
    from kubernetes import client

    here, other = installed.namespace, installed.other
    core = client.CoreV1Api(installed.client)
    secret = core.create_namespaced_secret(
        here,
        {
            "metadata": {"name": "rbac-check-connection"},
            "data": {"kernel.json": base64.b64encode(b"{}").decode()},
        },
    )
    pod = core.create_namespaced_pod(
        here,
        {
            "metadata": {"name": "rbac-check"},
            "spec": {
                "automountServiceAccountToken": False,
                "containers": [
                    {
                        "name": "kernel",
                        "image": "jgc/debian-ipykernel:bookworm",
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 1000,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                    }
                ],
            },
        },
    )
    core.patch_namespaced_secret(
        secret.metadata.name,
        here,
        {
            "metadata": {
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": "rbac-check",
                        "uid": pod.metadata.uid,
                    }
                ]
            }
        },
    )
    assert core.read_namespaced_secret(secret.metadata.name, here).metadata.owner_references
    assert [p.metadata.name for p in core.list_namespaced_pod(here).items] == ["rbac-check"]
    core.list_namespaced_event(here)
    client.CoreV1Api(installed.client).list_node()
    # The active replica's label on its pod (lease.py), and its lease: made, read, renewed.
    core.patch_namespaced_pod("rbac-check", here, {"metadata": {"labels": {ROLE: "active"}}})
    core.patch_namespaced_pod("rbac-check", here, {"metadata": {"labels": {ROLE: None}}})
    leases = client.CoordinationV1Api(installed.client)
    lease = leases.create_namespaced_lease(
        here, {"metadata": {"name": "rbac-check"}, "spec": {"holderIdentity": "a"}}
    )
    lease.spec.holder_identity = "b"
    leases.replace_namespaced_lease("rbac-check", here, lease)
    assert leases.read_namespaced_lease("rbac-check", here).spec.holder_identity == "b"
    core.delete_namespaced_pod("rbac-check", here, grace_period_seconds=0)

    for refused in (
        lambda: core.list_namespaced_secret(here),
        lambda: core.read_namespaced_secret("rbac-check-connection", other),
        lambda: core.list_namespaced_pod(other),
        lambda: core.delete_namespace(other),
        lambda: core.patch_node("any", {"metadata": {"labels": {"x": "y"}}}),
        lambda: client.CoordinationV1Api(installed.client).delete_namespaced_lease(
            "rbac-check", here
        ),
        lambda: client.RbacAuthorizationV1Api(installed.client).create_cluster_role_binding(
            {
                "metadata": {"name": f"escalate-{here}"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": here}],
            }
        ),
    ):
        with pytest.raises(client.ApiException) as refusal:
            refused()
        assert refusal.value.status == 403, refusal.value


def test_service_manifest_is_admitted(installed: SimpleNamespace) -> None:
    """Every object of service.yaml is valid for the API server (a server-side dry run in the
    installation's namespace), and the service's pod passes PodSecurity "restricted", which the
    namespace enforces (a pod with default settings is refused there: the check has teeth)."""
    from kubernetes import client

    here = installed.namespace
    text = SERVICE.read_text().replace("{{namespace}}", here)
    text = text.replace("{{image}}", "registry.example.org/jupyter-gpu-containers:1.0")
    assert "{{" not in text
    dynamic = installed.control_plane.dynamic
    for doc in yaml.safe_load_all(text):
        resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        dynamic.create(resource, body=doc, namespace=here, dry_run="All")

    deployment = one(documents(SERVICE, here), "Deployment")
    template = deployment["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "service-pod-check", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }
    pod["spec"]["containers"][0]["image"] = "registry.example.org/jupyter-gpu-containers:1.0"
    core = client.CoreV1Api(installed.admin)
    core.create_namespaced_pod(here, pod, dry_run="All")

    # A pod as a container engine would run it by default (root, capabilities, no seccomp).
    unrestricted = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "unrestricted-check"},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }
    with pytest.raises(client.ApiException) as refusal:
        core.create_namespaced_pod(here, unrestricted, dry_run="All")
    assert refusal.value.status == 403 and "restricted" in refusal.value.body, refusal.value.body
