"""A real Kubernetes control plane for the tests: etcd, kube-apiserver, kube-scheduler and
kube-controller-manager on 127.0.0.1, as a cluster runs them (issue #18).

The binaries are the ones scripts/build-kubernetes.sh builds from the Kubernetes sources (the test
command exports their directory as ``JGC_K8S_BIN``); etcd is Debian's ``etcd-server``. Everything
speaks TLS with certificates from a CA the harness makes, clients authenticate with client
certificates or service-account tokens, authorization is ``Node,RBAC`` and admission includes
PodSecurity and NodeRestriction, so what a test proves about permissions and pod specs holds on a
real cluster.

Nodes without a kubelet ("fake nodes", ``add_fake_node``) are Node objects whose status the
harness writes through the ``nodes/status`` subresource, the documented way to advertise extended
resources such as ``nvidia.com/gpu``: the scheduler places pods on them, nothing runs the pods.
The node lifecycle controller is off, so such nodes are never tainted unreachable, and so is the
TaintNodesByCondition admission plugin, whose not-ready taint only that controller lifts. Pods
bound to fake nodes are deleted with a grace period of 0 (no kubelet would confirm a graceful
deletion).
tests/k8s_node.py adds a real node (a kubelet with containerd) to the same control plane.

Simulated nodes (``add_fake_node(simulated=True)``, once ``simulate_pods()`` started KWOK's
controller, built with the binaries) are fake nodes whose pods KWOK reports as a kubelet would:
Running, with an address, and gone once deleted; still nothing runs. Their addresses come from
SIMULATED_POD_CIDR, which the harness routes nowhere on this host while KWOK runs, so that a
connection to a simulated pod fails here at once instead of leaving the host.

Every process is started here and ended by its pid in ``stop()``, which also runs after a start
that failed half-way. Logs are under ``workdir/logs``; a failure says which component failed and
ends with the tail of its log.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import pytest
import stale_runs
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "scripts" / "build-kubernetes.sh"
BINARIES = ("kube-apiserver", "kube-scheduler", "kube-controller-manager")

TEST_LABEL = stale_runs.TEST_LABEL
TEST_IMAGE_LABEL = stale_runs.TEST_IMAGE_LABEL
# The same value conftest.py computes for this process (a run id is a fact of the process).
TEST_RUN = os.environ.get("JGC_TEST_RUN") or stale_runs.new_run_id()

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/24"
# The apiserver gives the `kubernetes` Service the first address of the range: its serving
# certificate names it, as a cluster's does.
SERVICE_IP = "10.96.0.1"
FIELD_MANAGER = "jgc-tests"
START_TIMEOUT = 90.0
# The node label (and taint) KWOK's controller manages nodes by: pods on them are simulated.
SIMULATED_LABEL = "org.jupyter.gpu-containers.simulated"
SIMULATED_TAINT = {"key": SIMULATED_LABEL, "value": "kwok", "effect": "NoSchedule"}
# RFC 2544's range for benchmarking networks: nothing on any network these machines reach.
SIMULATED_POD_CIDR = "198.18.0.0/16"


class ClusterStartError(RuntimeError):
    """A component of the control plane did not start; the message ends with its log's tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(the log is empty)"


# --- Certificates -------------------------------------------------------------------------------


class CertificateAuthority:
    """A CA for one control plane: it signs every serving and client certificate the cluster
    uses. ECDSA P-256 keys, which every component accepts and which take no time to make."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jgc-test-kubernetes-ca")])
        now = datetime.datetime.now(datetime.timezone.utc)
        public = self.key.public_key()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_file = directory / "ca.crt"
        self.key_file = directory / "ca.key"
        self.cert_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        _write_private(self.key_file, _key_pem(self.key))

    def issue(
        self,
        stem: str,
        common_name: str,
        organizations: Sequence[str] = (),
        *,
        server: bool = False,
        client: bool = False,
        ips: Sequence[str] = (),
        dns: Sequence[str] = (),
    ) -> tuple[Path, Path]:
        """A key and a certificate signed by this CA, written as ``<stem>.crt``/``<stem>.key``."""
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path = self.directory / f"{stem}.crt"
        key_path = self.directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(key_path, _key_pem(key))
        return cert_path, key_path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    """Keys and tokens: readable by their owner only, from the moment the file exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


# --- Processes ----------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, even by SIGKILL, so a killed
    run leaves no control plane behind. (Linux ties this to the thread that forked: see
    ``_Process``.)"""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class _Process:
    """A component: its command line, its pid and its log."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 (closed in stop)
        # The parent-death signal fires when the forking *thread* ends: ask for it only from the
        # main thread, which lives as long as the process.
        main = threading.current_thread() is threading.main_thread()
        try:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if main else None,
                start_new_session=True,
            )
        except OSError as e:
            self._log.close()
            raise ClusterStartError(f"{name} could not be started ({argv[0]}): {e}") from e

    def exited(self) -> int | None:
        return self.popen.poll()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL when it does not end within ``timeout``; by pid only."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(10)
        self._log.close()

    def failure(self, what: str) -> ClusterStartError:
        status = self.popen.poll()
        state = f"exited with status {status}" if status is not None else "is still running"
        return ClusterStartError(
            f"{self.name} {what} ({state}). The end of its log, {self.log_path}:\n"
            f"{log_tail(self.log_path)}"
        )


def _https_get(
    url_host: str,
    port: int,
    path: str,
    ca_file: Path,
    cert: tuple[Path, Path] | None = None,
    timeout: float = 3.0,
) -> tuple[int, str]:
    context = ssl.create_default_context(cafile=str(ca_file))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    conn = http.client.HTTPSConnection(url_host, port, context=context, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


# --- The control plane --------------------------------------------------------------------------


class ControlPlane:
    """etcd, kube-apiserver, kube-scheduler and kube-controller-manager, on 127.0.0.1.

    ``bin_dir`` holds the Kubernetes binaries; ``workdir`` (made if missing) receives the PKI,
    etcd's data, kubeconfigs and logs. After ``start()``: ``server`` is the apiserver's URL,
    ``ca_file``/``ca_key_file`` the CA (a node harness signs kubelet certificates with them),
    ``admin_kubeconfig`` a kubeconfig of a cluster admin (group ``system:masters``) and
    ``admin_client`` a ``kubernetes.client.ApiClient`` made from it.
    """

    def __init__(self, bin_dir: str | os.PathLike[str], workdir: str | os.PathLike[str]) -> None:
        self.bin_dir = Path(bin_dir)
        self.workdir = Path(workdir)
        self.pki = self.workdir / "pki"
        self.logs = self.workdir / "logs"
        self.ca_file = self.pki / "ca.crt"
        self.ca_key_file = self.pki / "ca.key"
        self.admin_kubeconfig = self.workdir / "admin.kubeconfig"
        self.port = 0
        self.server = ""
        self.service_account_issuer = SERVICE_ACCOUNT_ISSUER
        self.admin_client: Any = None
        self._ca: CertificateAuthority | None = None
        self._processes: list[_Process] = []
        self._dynamic: Any = None
        self._unreachable_route = False  # simulate_pods() added it; stop() removes it

    # -- lifecycle --

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start every component and return once the apiserver is ready, the scheduler and the
        controller manager answer, and the controllers work (the ``default`` namespace has its
        service account). Raises ClusterStartError; call ``stop()`` afterwards either way."""
        missing = [b for b in BINARIES if not os.access(self.bin_dir / b, os.X_OK)]
        if missing:
            raise ClusterStartError(
                f"The Kubernetes binaries {', '.join(missing)} are not in {self.bin_dir}. "
                f"Build them with {BUILD_SCRIPT} (it prints their directory)."
            )
        etcd = shutil.which("etcd")
        if etcd is None:
            raise ClusterStartError("etcd is not installed; install Debian's etcd-server.")
        deadline = time.monotonic() + timeout
        self.logs.mkdir(parents=True, exist_ok=True)
        ca = self._ca = CertificateAuthority(self.pki)
        # The names a client inside or outside the cluster reaches the apiserver by.
        serving = ca.issue(
            "serving",
            "kube-apiserver",
            server=True,
            ips=["127.0.0.1", SERVICE_IP],
            dns=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        )
        etcd_cert = ca.issue(
            "etcd", "etcd", server=True, client=True, ips=["127.0.0.1"], dns=["localhost"]
        )
        etcd_client = ca.issue("apiserver-etcd-client", "kube-apiserver-etcd-client", client=True)
        kubelet_client = ca.issue(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            ["system:masters"],
            client=True,
        )
        admin = ca.issue("admin", "jgc-test-admin", ["system:masters"], client=True)
        scheduler = ca.issue("kube-scheduler", "system:kube-scheduler", client=True)
        controller_manager = ca.issue(
            "kube-controller-manager", "system:kube-controller-manager", client=True
        )
        sa_key = ec.generate_private_key(ec.SECP256R1())
        sa_private = self.pki / "service-account.key"
        sa_public = self.pki / "service-account.pub"
        _write_private(sa_private, _key_pem(sa_key))
        sa_public.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self._write_kubeconfig(self.admin_kubeconfig, "admin", cert=admin)
        scheduler_kubeconfig = self._write_kubeconfig(
            self.workdir / "kube-scheduler.kubeconfig", "kube-scheduler", cert=scheduler
        )
        kcm_kubeconfig = self._write_kubeconfig(
            self.workdir / "kube-controller-manager.kubeconfig",
            "kube-controller-manager",
            cert=controller_manager,
        )

        etcd_port, etcd_peer_port = free_port(), free_port()
        etcd_tls = [f"--cert-file={etcd_cert[0]}", f"--key-file={etcd_cert[1]}"]
        etcd_tls += [f"--trusted-ca-file={self.ca_file}", "--client-cert-auth"]
        etcd_tls += [f"--peer-cert-file={etcd_cert[0]}", f"--peer-key-file={etcd_cert[1]}"]
        etcd_tls += [f"--peer-trusted-ca-file={self.ca_file}", "--peer-client-cert-auth"]
        peer_url = f"https://127.0.0.1:{etcd_peer_port}"
        etcd_process = self._spawn(
            "etcd",
            [
                etcd,
                "--name=jgc",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=https://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=https://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=jgc={peer_url}",
                "--initial-cluster-state=new",
                "--listen-metrics-urls=",
                *etcd_tls,
            ],
        )
        # The apiserver waits for etcd by itself: start both at once.
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers=https://127.0.0.1:{etcd_port}",
                f"--etcd-cafile={self.ca_file}",
                f"--etcd-certfile={etcd_client[0]}",
                f"--etcd-keyfile={etcd_client[1]}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--tls-cert-file={serving[0]}",
                f"--tls-private-key-file={serving[1]}",
                f"--client-ca-file={self.ca_file}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={sa_public}",
                f"--service-account-signing-key-file={sa_private}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--authorization-mode=Node,RBAC",
                # PodSecurity is on by default; NodeRestriction limits what a kubelet may change
                # to its own Node and its pods, as on any cluster that follows the docs.
                "--enable-admission-plugins=NodeRestriction,PodSecurity",
                # It taints every new node not-ready, for the node lifecycle controller to lift
                # once the kubelet reports Ready; that controller is off (see the controller
                # manager), so the taint would stay on every node, fake or real.
                "--disable-admission-plugins=TaintNodesByCondition",
                f"--kubelet-client-certificate={kubelet_client[0]}",
                f"--kubelet-client-key={kubelet_client[1]}",
                # A real node registers 127.0.0.1 as its address; its name resolves nowhere.
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                "--profiling=false",
            ],
        )
        self._wait(
            etcd_process,
            "did not answer on /health",
            lambda: (
                _https_get("127.0.0.1", etcd_port, "/health", self.ca_file, etcd_client)[0] == 200
            ),
            deadline,
        )
        self._wait(
            apiserver,
            "did not become ready (/readyz)",
            lambda: _https_get("127.0.0.1", self.port, "/readyz", self.ca_file, admin)[0] == 200,
            deadline,
        )

        scheduler_port, kcm_port = free_port(), free_port()
        delegated = ["--authentication-kubeconfig", "--authorization-kubeconfig", "--kubeconfig"]
        scheduler_process = self._spawn(
            "kube-scheduler",
            [
                str(self.bin_dir / "kube-scheduler"),
                *(f"{flag}={scheduler_kubeconfig}" for flag in delegated),
                "--bind-address=127.0.0.1",
                f"--secure-port={scheduler_port}",
                f"--tls-cert-file={serving[0]}",
                f"--tls-private-key-file={serving[1]}",
                "--leader-elect=false",
                "--profiling=false",
            ],
        )
        kcm_process = self._spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                *(f"{flag}={kcm_kubeconfig}" for flag in delegated),
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--tls-cert-file={serving[0]}",
                f"--tls-private-key-file={serving[1]}",
                "--leader-elect=false",
                f"--service-account-private-key-file={sa_private}",
                f"--root-ca-file={self.ca_file}",
                "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={self.ca_file}",
                f"--cluster-signing-key-file={self.ca_key_file}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                # Fake nodes have no kubelet to renew their leases: the node lifecycle
                # controller would taint them unreachable and evict their pods.
                "--controllers=*,-node-lifecycle-controller",
                "--profiling=false",
            ],
        )
        for process, port in ((scheduler_process, scheduler_port), (kcm_process, kcm_port)):
            self._wait(process, "did not answer on /healthz", self._healthy(port), deadline)

        from kubernetes import config

        self.admin_client = config.new_client_from_config(config_file=str(self.admin_kubeconfig))
        # The controllers run once the service account controller has given `default` its
        # service account (pods cannot be created in a namespace before that).
        self._wait(
            kcm_process,
            "did not create the default namespace's service account",
            lambda: self._has_default_service_account("default"),
            deadline,
        )

    def stop(self) -> None:
        """End every component this harness started, newest first, by pid. Safe to call twice,
        and after a start that failed anywhere."""
        if self.admin_client is not None:
            with contextlib.suppress(Exception):
                self.admin_client.close()
            self.admin_client = None
        self._dynamic = None
        while self._processes:
            process = self._processes.pop()
            with contextlib.suppress(Exception):
                process.stop()
        if self._unreachable_route:
            subprocess.run(
                ["ip", "route", "del", "unreachable", SIMULATED_POD_CIDR],
                capture_output=True,
                check=False,
            )
            self._unreachable_route = False

    def simulate_pods(self, timeout: float = 60.0) -> None:
        """Start KWOK's controller (``kwok``, from the binaries' directory): it manages the nodes
        labelled SIMULATED_LABEL=kwok, and makes their pods Running with an address from
        SIMULATED_POD_CIDR, which is routed nowhere until ``stop()``. Once: a second call does
        nothing. Raises ClusterStartError."""
        if any(p.name == "kwok" for p in self._processes):
            return
        binary = kwok_binary(self.bin_dir)
        if not self._unreachable_route:
            added = subprocess.run(
                ["ip", "route", "add", "unreachable", SIMULATED_POD_CIDR],
                capture_output=True,
                text=True,
                check=False,
            )
            if added.returncode == 0:
                self._unreachable_route = True
            elif "File exists" not in added.stderr:  # another cluster of this host has it
                raise ClusterStartError(
                    f"The simulated pods' addresses ({SIMULATED_POD_CIDR}) could not be routed "
                    f"nowhere: {added.stderr.strip()}"
                )
        network = ipaddress.ip_network(SIMULATED_POD_CIDR)
        process = self._spawn(
            "kwok",
            [
                str(binary),
                f"--kubeconfig={self.admin_kubeconfig}",
                f"--manage-nodes-with-label-selector={SIMULATED_LABEL}=kwok",
                f"--cidr={network[1]}/{network.prefixlen}",
                f"--node-ip={network[-2]}",
            ],
        )
        # It says so once its informers watch the nodes it manages.
        self._wait(
            process,
            "did not start to manage the simulated nodes",
            lambda: "Watch nodes" in process.log_path.read_text("utf-8", "replace"),
            time.monotonic() + timeout,
        )

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, argv: list[str]) -> _Process:
        process = _Process(name, argv, self.logs / f"{name}.log")
        self._processes.append(process)
        return process

    def _wait(
        self,
        process: _Process,
        what: str,
        ready: Callable[[], bool],
        deadline: float,
    ) -> None:
        while True:
            if process.exited() is not None:
                raise process.failure(what)
            with contextlib.suppress(OSError, ssl.SSLError, http.client.HTTPException):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise process.failure(what)
            time.sleep(0.1)

    def _healthy(self, port: int) -> Callable[[], bool]:
        return lambda: _https_get("127.0.0.1", port, "/healthz", self.ca_file)[0] == 200

    def _write_kubeconfig(
        self,
        path: Path,
        user: str,
        *,
        cert: tuple[Path, Path] | None = None,
        token: str | None = None,
    ) -> Path:
        credentials: dict[str, str] = {}
        if cert is not None:
            credentials = {"client-certificate": str(cert[0]), "client-key": str(cert[1])}
        if token is not None:
            credentials = {"token": token}
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "jgc-test",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": "jgc-test", "context": {"cluster": "jgc-test", "user": user}}],
            "current-context": "jgc-test",
        }
        _write_private(path, yaml.safe_dump(kubeconfig).encode())
        return path

    # -- credentials --

    def sign_client_cert(
        self, common_name: str, organizations: Sequence[str] = ()
    ) -> tuple[Path, Path]:
        """A client certificate and key for user ``common_name`` in groups ``organizations``,
        signed by the cluster's CA (the apiserver authenticates it)."""
        if self._ca is None:
            raise RuntimeError("The control plane has not been started.")
        # A file of its own per call: a client that still uses an earlier one keeps it.
        stem = f"client-{re.sub(r'[^A-Za-z0-9_.-]', '_', common_name)}-{os.urandom(4).hex()}"
        return self._ca.issue(stem, common_name, organizations, client=True)

    def kubeconfig_for_token(self, token: str, path: str | os.PathLike[str]) -> str:
        """Write a kubeconfig that trusts the cluster's CA and authenticates with the bearer
        ``token`` (mode 0600); returns its path."""
        return str(self._write_kubeconfig(Path(path), "token-user", token=token))

    def service_account_token(self, namespace: str, name: str, seconds: int = 3600) -> str:
        """A token of service account ``namespace/name`` from the TokenRequest API, as kubelets
        project them into pods (``seconds`` is at least 600)."""
        from kubernetes import client

        response = client.CoreV1Api(self.admin_client).create_namespaced_service_account_token(
            name,
            namespace,
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"audiences": [SERVICE_ACCOUNT_ISSUER], "expirationSeconds": seconds},
            },
        )
        return str(response.status.token)

    # -- objects --

    def apply(self, manifest: str | os.PathLike[str], namespace: str) -> list[dict[str, Any]]:
        """Create (or update, by server-side apply) every object of a YAML stream: a file's path
        or the text itself. ``{{namespace}}`` is replaced by ``namespace``, which is also the
        namespace of namespaced objects that name none. Returns the objects as the API stored
        them."""
        text = str(manifest)
        if isinstance(manifest, os.PathLike) or ("\n" not in text and os.path.isfile(text)):
            text = Path(manifest).read_text()
        text = re.sub(r"\{\{\s*namespace\s*\}\}", namespace, text)
        applied = []
        for document in yaml.safe_load_all(text):
            if not document:
                continue
            resource = self.dynamic.resources.get(
                api_version=document["apiVersion"], kind=document["kind"]
            )
            metadata = document.setdefault("metadata", {})
            if resource.namespaced:
                metadata.setdefault("namespace", namespace)
            result = self.dynamic.server_side_apply(
                resource,
                body=document,
                name=metadata["name"],
                namespace=metadata.get("namespace") if resource.namespaced else None,
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
            )
            applied.append(result.to_dict())
        return applied

    @property
    def dynamic(self) -> Any:
        """A ``kubernetes.dynamic.DynamicClient`` of the admin (discovery cached in workdir)."""
        if self._dynamic is None:
            from kubernetes.dynamic import DynamicClient

            self._dynamic = DynamicClient(
                self.admin_client, cache_file=str(self.workdir / "discovery-cache.json")
            )
        return self._dynamic

    def create_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        """A namespace whose pods must meet the ``restricted`` Pod Security Standard, labelled
        with the test run; returns once its ``default`` service account and CA config map exist
        (before that, pods cannot be created or cannot start)."""
        from kubernetes import client

        core = client.CoreV1Api(self.admin_client)
        all_labels = {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
            TEST_LABEL: TEST_RUN,
            **(labels or {}),
        }
        core.create_namespace({"metadata": {"name": name, "labels": all_labels}})

        def ready() -> bool:
            if not self._has_default_service_account(name):
                return False
            names = [c.metadata.name for c in core.list_namespaced_config_map(name).items]
            return "kube-root-ca.crt" in names

        wait_for(ready, 30, f"namespace {name} got no default service account within 30 s")

    def delete_namespace(self, name: str, *, wait: bool = True, timeout: float = 60) -> None:
        """Delete a namespace and everything in it. Its pods go first with a grace period of 0:
        on a fake node no kubelet would ever confirm a graceful deletion."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        core = client.CoreV1Api(self.admin_client)
        try:
            core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
            core.delete_namespace(name)
        except ApiException as e:
            if e.status != 404:
                raise
            return
        if wait:
            wait_for(
                lambda: not _exists(lambda: core.read_namespace(name)),
                timeout,
                f"namespace {name} was not deleted within {timeout:.0f} s",
            )

    def bind_claim(
        self,
        namespace: str,
        claim: str,
        host_path: str | os.PathLike[str],
        *,
        labels: Mapping[str, str] | None = None,
        path_type: str = "Directory",
        wait: bool = True,
    ) -> str:
        """A PersistentVolumeClaim ``claim`` in ``namespace`` bound to a volume of its own that is
        ``host_path`` on the node (a ``restricted`` pod may mount a claim, not a host path): a
        user's workspace. Returns the volume's name, for :meth:`delete_volume` (the claim goes
        with its namespace). ``wait``: until the claim is Bound."""
        from kubernetes import client

        core = client.CoreV1Api(self.admin_client)
        volume = f"{claim}-{os.urandom(4).hex()}"
        host: dict[str, str] = {"path": str(host_path)}
        if path_type:
            host["type"] = path_type
        core.create_persistent_volume(
            {
                "metadata": {"name": volume, "labels": dict(labels or {TEST_LABEL: TEST_RUN})},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "",
                    "hostPath": host,
                    "claimRef": {"namespace": namespace, "name": claim},
                },
            }
        )
        try:
            core.create_namespaced_persistent_volume_claim(
                namespace,
                {
                    "metadata": {"name": claim},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": "",
                        "volumeName": volume,
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                },
            )
            if wait:

                def bound() -> bool:
                    found = core.read_namespaced_persistent_volume_claim(claim, namespace)
                    return bool(found.status and found.status.phase == "Bound")

                wait_for(bound, 60, f"the claim {claim} was not bound within 60 s")
        except BaseException:
            # The caller never learns the volume's name: it goes here (the claim goes with
            # its namespace).
            with contextlib.suppress(Exception):
                self.delete_volume(volume)
            raise
        return volume

    def delete_volume(self, name: str) -> None:
        """Delete a persistent volume (absent is fine)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        if not name:  # the client would delete the whole collection
            raise ValueError("delete_volume needs a volume's name")
        try:
            client.CoreV1Api(self.admin_client).delete_persistent_volume(name)
        except ApiException as e:
            if e.status != 404:
                raise

    def add_fake_node(
        self,
        name: str,
        *,
        gpus: int = 0,
        gpu_resource: str = "nvidia.com/gpu",
        labels: Mapping[str, str] | None = None,
        extra: Mapping[str, int | str] | None = None,
        taints: Sequence[Mapping[str, str]] = (),
        cpu: str = "16",
        memory: str = "64Gi",
        simulated: bool = False,
    ) -> None:
        """A Node without a kubelet, which the scheduler places pods on: the Node object, then
        its status written through the ``nodes/status`` subresource (the documented way to
        advertise extended resources): capacity and allocatable for cpu, memory, 110 pods,
        ``gpus`` of ``gpu_resource`` and the resources in ``extra`` (e.g. more MIG resource
        names), a Ready condition and node info. ``labels`` go on the node (e.g. GPU feature
        discovery's ``nvidia.com/cuda.driver.major``), ``taints`` on its spec. ``simulated``:
        KWOK's controller (simulate_pods) runs its pods; it is labelled and tainted so (a pod
        lands on it only when it tolerates SIMULATED_TAINT)."""
        from kubernetes import client

        core = client.CoreV1Api(self.admin_client)
        node_labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            TEST_LABEL: TEST_RUN,
            **(labels or {}),
            **({SIMULATED_LABEL: "kwok"} if simulated else {}),
        }
        all_taints = [dict(t) for t in taints] + ([dict(SIMULATED_TAINT)] if simulated else [])
        core.create_node(
            {
                "metadata": {"name": name, "labels": node_labels},
                "spec": {"taints": all_taints},
            }
        )
        resources: dict[str, str] = {"cpu": cpu, "memory": memory, "pods": "110"}
        if gpus:
            resources[gpu_resource] = str(gpus)
        resources.update({k: str(v) for k, v in (extra or {}).items()})
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        conditions = [
            {
                "type": kind,
                "status": "False",
                "reason": f"No{kind}",
                "message": "a fake node of the tests",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }
            for kind in ("MemoryPressure", "DiskPressure", "PIDPressure")
        ]
        conditions.append(
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "a fake node of the tests: nothing runs its pods",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }
        )
        status = {
            "capacity": resources,
            "allocatable": resources,
            "conditions": conditions,
            "addresses": [{"type": "Hostname", "address": name}],
            "nodeInfo": {
                "machineID": name,
                "systemUUID": name,
                "bootID": name,
                "kernelVersion": os.uname().release,
                "osImage": "fake node (jupyter-gpu-containers tests)",
                "containerRuntimeVersion": "fake://0",
                "kubeletVersion": self.version(),
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
        core.patch_node_status(
            name,
            {"status": status},
            _content_type="application/strategic-merge-patch+json",
        )

    def delete_node(self, name: str) -> None:
        """Delete a node and, with a grace period of 0, the pods bound to it."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        core = client.CoreV1Api(self.admin_client)
        for pod in core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={name}").items:
            with contextlib.suppress(ApiException):
                core.delete_namespaced_pod(
                    pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0
                )
        with contextlib.suppress(ApiException):
            core.delete_node(name)

    def version(self) -> str:
        """The apiserver's version, e.g. ``v1.33.13``."""
        from kubernetes import client

        return str(client.VersionApi(self.admin_client).get_code().git_version)

    def _has_default_service_account(self, namespace: str) -> bool:
        from kubernetes import client

        core = client.CoreV1Api(self.admin_client)
        return _exists(lambda: core.read_namespaced_service_account("default", namespace))


def _exists(read: Callable[[], object]) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        read()
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    return True


@contextlib.contextmanager
def service_account(
    plane: ControlPlane, namespace: str, rbac: Path, workdir: Path
) -> Iterator[str]:
    """``rbac`` (deploy/kubernetes/rbac.yaml) applied in ``namespace``; a kubeconfig file (in
    ``workdir``) that authenticates as its service account. Its cluster-wide objects, which the
    namespace's deletion leaves, are deleted afterwards."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    applied = plane.apply(rbac, namespace)
    try:
        token = plane.service_account_token(namespace, "jupyter-gpu-containers")
        yield plane.kubeconfig_for_token(token, workdir / "service.kubeconfig")
    finally:
        api = client.RbacAuthorizationV1Api(plane.admin_client)
        for obj in applied:
            delete = {
                "ClusterRole": api.delete_cluster_role,
                "ClusterRoleBinding": api.delete_cluster_role_binding,
            }.get(obj["kind"])
            if delete is not None:
                try:
                    delete(obj["metadata"]["name"])
                except ApiException as e:
                    if e.status != 404:
                        raise


def wait_for(ready: Callable[[], bool], timeout: float, message: str) -> None:
    """Return once ``ready()`` is true; TimeoutError(message) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(message)
        time.sleep(0.1)


# --- pytest -------------------------------------------------------------------------------------


def kubernetes_bin_dir() -> Path:
    """``JGC_K8S_BIN`` (the test command sets it), or the directory the build script prints (it
    builds the binaries first when this machine has none: many minutes, once)."""
    configured = os.environ.get("JGC_K8S_BIN")
    if configured:
        return Path(configured)
    # The control plane's binaries only: KWOK's controller, built after them, is the
    # benchmark's (kwok_binary), and the tests of the cluster need not wait for it.
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--kubernetes"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.splitlines()[-20:])
        pytest.fail(
            f"{BUILD_SCRIPT} failed (status {result.returncode}), so there is no Kubernetes to "
            f"test against. Its last words:\n{tail}",
            pytrace=False,
        )
    return Path(result.stdout.strip().splitlines()[-1])


def kwok_binary(bin_dir: Path) -> Path:
    """KWOK's controller: beside the Kubernetes binaries in ``bin_dir``, or, when it is not
    there (yet: the test command builds it in the background after them), the one the build
    script prints the directory of once that build is done (it waits for it under its lock, or
    builds it). Raises ClusterStartError."""
    binary = bin_dir / "kwok"
    if os.access(binary, os.X_OK):
        return binary
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.splitlines()[-20:])
        raise ClusterStartError(
            f"{BUILD_SCRIPT} failed (status {result.returncode}), so there is no KWOK "
            f"controller to simulate nodes with. Its last words:\n{tail}"
        )
    binary = Path(result.stdout.strip().splitlines()[-1]) / "kwok"
    if not os.access(binary, os.X_OK):
        raise ClusterStartError(f"{BUILD_SCRIPT} built no KWOK controller at {binary}.")
    return binary


WORKDIR_PREFIX = "jgc-k8s-"


def sweep_stale_workdirs(say: Callable[[str], None] = print) -> None:
    """Remove the work directories (etcd's data, keys, logs) of test runs that were killed
    before they could remove their own. Their processes died with them (see
    ``_die_with_parent``). A directory something is still mounted under is left alone."""
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    mount_points = [line.split()[4] for line in mounts if len(line.split()) > 4]
    for path in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        run_id = path.name[len(WORKDIR_PREFIX) :].rsplit(".", 1)[0]
        if run_id == TEST_RUN or stale_runs.run_is_over(run_id) is not True:
            continue
        if any(m == str(path) or m.startswith(f"{path}/") for m in mount_points):
            continue
        say(f"removing {path}, left by the ended test run {run_id}")
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """One control plane for the test session, stopped and removed at its end."""
    bin_dir = kubernetes_bin_dir()
    sweep_stale_workdirs()
    for attempt in (1, 2):
        workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{TEST_RUN}."))
        plane = ControlPlane(bin_dir, workdir)
        try:
            plane.start()
            break
        except ClusterStartError as e:
            plane.stop()
            shutil.rmtree(workdir, ignore_errors=True)
            # A free port can be taken by another process before a component binds it: the
            # only failure worth a second try.
            if attempt == 1 and "address already in use" in str(e):
                continue
            pytest.fail(f"The Kubernetes control plane did not start: {e}", pytrace=False)
    try:
        yield plane
    finally:
        plane.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def k8s_namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh ``restricted`` namespace for one test, deleted (with its pods) afterwards."""
    base = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"t-{base}-{os.urandom(3).hex()}"
    control_plane.create_namespace(name)
    try:
        yield name
    finally:
        control_plane.delete_namespace(name, wait=False)


def restricted_security_context() -> dict[str, Any]:
    """A container security context the ``restricted`` Pod Security Standard admits."""
    return {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def dump(obj: Any) -> str:
    """A model or dict as JSON, for assertion messages."""
    data = obj.to_dict() if hasattr(obj, "to_dict") else obj
    return json.dumps(data, default=str, indent=1)[:4000]
