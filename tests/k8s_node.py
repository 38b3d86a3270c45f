"""A real Kubernetes node for tests: a kubelet with a containerd of its own, joined to the control
plane that tests/k8s_cluster.py runs, so that pods really run (the kernel pods of the Kubernetes
backend included) from images imported from the local Docker engine.

What it is made of, all of it this node's own and removed by ``stop()``:

- containerd (Debian's binary) with its own config, root, state and socket
  (``/var/lib/jgc-k8s-<id>``, ``/run/jgc-k8s-<id>``), never the one dockerd uses. Its CRI plugin
  runs pods with runc and cgroupfs (this project's machines have cgroup v1 and no systemd).
- A CNI network: a Linux bridge ``jgc<id>`` with host-local addresses in a /24 of 10.244.0.0/16
  that no route of the host covers yet. The harness makes the bridge and gives it the subnet's
  first address, which is also the node's InternalIP: the kubelet listens there, reachable from
  this host (the apiserver reaches it for logs) and not from the network. Pods' IPs are reachable
  from the host through the bridge. No masquerading: pods need no way out (no registry is
  reachable from these machines anyway), and so no NAT rules are left on the host. One FORWARD
  rule, commented ``jgc-k8s-<id>``, lets pods on the bridge reach each other (the kernel service's
  pod its kernel pods) past the DROP policy Docker sets; ``stop()`` removes it.
- The pause image, made from the ``pause`` program that scripts/build-kubernetes.sh builds: a
  one-file OCI archive written here and imported into containerd's ``k8s.io`` namespace.
- The kubelet: a client certificate signed by the control plane's CA (``system:node:<name>``
  in ``system:nodes``, as the Node authorizer and NodeRestriction expect), a serving certificate
  from the same CA (so the apiserver can verify it), its own root dir, pod log dir, cgroup root
  (``/jgc-k8s-<id>`` in every hierarchy, so two test runs' kubelets never share ``/kubepods``) and
  resolv.conf.

The node registers with the taint ``org.jupyter.gpu-containers/real-node=true:NoSchedule``, so
pods of API-level tests that count where the scheduler puts pods (onto fake nodes) never land
here; a test that wants a real pod adds ``node.toleration`` and ``node.node_selector``.

GPUs: after the kubelet registered, the node advertises ``gpus`` of ``nvidia.com/gpu`` through
the documented node-status patch (capacity on the ``nodes/status`` subresource), as fake nodes
do. There is no device plugin and no GPU: the kubelet admits a pod that asks for the resource
against that capacity (it handles resources no device plugin registered like any extended
resource), and the container gets no device. Real pods therefore test scheduling and admission
with GPU requests, never a GPU itself.

The kubelet changes three kernel settings when it starts (vm.overcommit_memory=1, kernel.panic=10,
kernel.panic_on_oops=1: its "protect kernel defaults" off). The first node on the machine writes
down the values the machine had; the last one to stop puts them back.

Where root lacks CAP_SYS_RESOURCE (this project's VMs), runc cannot lower a process's
oom_score_adj, which the kubelet asks for every pod sandbox: the CRI plugin then runs with
``restrict_oom_score_adj`` and the kubelet with ``oomScoreAdj: 0``.

A run that is killed cannot stop its node: the kubelet and containerd end with the test process
(parent-death signal), and the next node's ``start()`` removes what is left of nodes whose run is
over (``sweep_stale_nodes``: each node's directory names its run, as stale_runs.py judges them).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import io
import ipaddress
import json
import os
import platform
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import pytest
import stale_runs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from k8s_cluster import TEST_RUN, _die_with_parent, kubernetes_bin_dir
from kubernetes import client as k8s

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
REAL_NODE_TAINT_KEY = "org.jupyter.gpu-containers/real-node"
NOT_READY_TAINT_KEY = "node.kubernetes.io/not-ready"
CNI_BIN_DIR = Path("/usr/lib/cni")
CGROUP_MOUNT = Path("/sys/fs/cgroup")
# The kubelet sets these when it starts. The first node on the machine writes down the values the
# machine had (KERNEL_SETTINGS); the last one to go puts them back (see the module docstring).
KERNEL_TUNABLES = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")
KERNEL_SETTINGS = Path("/run/jgc-k8s-kernel-settings.json")
# Held while a node picks its subnet and makes its bridge (so that two test runs starting nodes
# at the same moment on one machine never take the same subnet), and while the kernel settings
# are written down or put back.
MACHINE_LOCK = Path("/run/jgc-k8s.lock")
REGISTER_TIMEOUT = 120.0


class ControlPlaneLike(Protocol):
    """What a node needs of tests/k8s_cluster.py's ControlPlane."""

    server: str
    ca_file: Path
    ca_key_file: Path
    admin_client: Any  # a kubernetes.client.ApiClient of a cluster admin

    def sign_client_cert(
        self, common_name: str, organizations: Sequence[str] = ()
    ) -> tuple[Path, Path]: ...


class RealNodeError(RuntimeError):
    """The node could not start; the message carries the tail of the log that says why."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _oci_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def pause_image_archive(pause_binary: Path, name: str) -> bytes:
    """An OCI image archive (``ctr images import`` reads it) of one file, ``/pause``, its
    entrypoint, running as 65535 like the upstream image; named ``name`` by containerd's
    ``io.containerd.image.name`` annotation."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as layer_tar:
        data = pause_binary.read_bytes()
        info = tarfile.TarInfo("pause")
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        layer_tar.addfile(info, io.BytesIO(data))
    layer = layer_buf.getvalue()
    arch = _oci_arch()
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Entrypoint": ["/pause"], "User": "65535:65535", "WorkingDir": "/"},
            "rootfs": {
                "type": "layers",
                "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"],
            },
        },
        sort_keys=True,
    ).encode()

    def descriptor(media_type: str, blob: bytes) -> dict[str, Any]:
        return {
            "mediaType": media_type,
            "digest": f"sha256:{hashlib.sha256(blob).hexdigest()}",
            "size": len(blob),
        }

    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor("application/vnd.oci.image.config.v1+json", config),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", layer)],
        },
        sort_keys=True,
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    **descriptor("application/vnd.oci.image.manifest.v1+json", manifest),
                    "platform": {"architecture": arch, "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
                    },
                }
            ],
        },
        sort_keys=True,
    ).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:

        def add(path: str, blob: bytes) -> None:
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(blob), 0o644, 0
            archive.addfile(info, io.BytesIO(blob))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index)
        for blob in (layer, config, manifest):
            add(f"blobs/sha256/{hashlib.sha256(blob).hexdigest()}", blob)
    return out.getvalue()


def _sign_serving_cert(
    ca_file: Path, ca_key_file: Path, common_name: str, ip: str, cert_path: Path, key_path: Path
) -> None:
    """A kubelet serving certificate for ``ip``, signed by the control plane's CA."""
    ca_cert = x509.load_pem_x509_certificate(Path(ca_file).read_bytes())
    ca_key = serialization.load_pem_private_key(Path(ca_key_file).read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def containerd_image_name(docker_ref: str) -> str:
    """The fully qualified name containerd (and the CRI) gives an image Docker calls
    ``docker_ref``: ``jgc/x:1`` is ``docker.io/jgc/x:1``, ``python`` is
    ``docker.io/library/python:latest``."""
    from jupyter_gpu_containers.base.references import parse_reference

    return parse_reference(docker_ref).qualified


def _run(*argv: str) -> None:
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0:
        raise RealNodeError(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr.strip()}")


def _has_cap_sys_resource() -> bool:
    """Whether this process may lower an oom_score_adj (some VMs' root lacks CAP_SYS_RESOURCE)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 24))  # CAP_SYS_RESOURCE is 24
    return False


def _mounts_under(*roots: Path) -> list[str]:
    """Mount points under ``roots``, deepest first (so each can be unmounted in turn)."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            # Field 5 is the mount point, with spaces and the like escaped as octal.
            point = line.split()[4].encode().decode("unicode_escape")
            if any(point == str(r) or point.startswith(f"{r}/") for r in roots):
                found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def _cgroup_hierarchies() -> list[Path]:
    """The cgroup v1 hierarchies (and the hybrid unified one) mounted under /sys/fs/cgroup."""
    return sorted(
        p for p in CGROUP_MOUNT.iterdir() if p.is_dir() and not p.is_symlink() and p.is_mount()
    )


class RealNode:
    """A kubelet + containerd joined to ``control_plane`` as node ``name`` (see the module
    docstring). ``start()`` returns once the node is Ready and advertises its GPUs; ``stop()``
    removes everything it made, also after a start that failed half-way."""

    def __init__(
        self,
        control_plane: ControlPlaneLike,
        bin_dir: str | Path,
        workdir: str | Path,
        name: str,
        *,
        gpus: int = 4,
        gpu_resource: str = "nvidia.com/gpu",
        labels: dict[str, str] | None = None,
    ) -> None:
        self.control_plane = control_plane
        self.bin_dir = Path(bin_dir)
        self.workdir = Path(workdir)
        self.name = name
        self.gpus = gpus
        self.gpu_resource = gpu_resource
        self.labels = dict(labels or {})
        self.id = secrets.token_hex(4)
        self.run_dir = Path(f"/run/jgc-k8s-{self.id}")
        self.lib_dir = Path(f"/var/lib/jgc-k8s-{self.id}")
        self.socket = self.run_dir / "containerd.sock"
        self.bridge = f"jgc{self.id}"
        self.cgroup_root = f"/jgc-k8s-{self.id}"
        self.kubelet_root = self.lib_dir / "kubelet"
        self.containerd_log = self.workdir / "containerd.log"
        self.kubelet_log = self.workdir / "kubelet.log"
        self.subnet: ipaddress.IPv4Network | None = None
        self.node_ip = ""
        self.kubelet_port = 0
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []
        self._imported: dict[str, str] = {}

    # --- what tests use ------------------------------------------------------------------------

    @property
    def toleration(self) -> dict[str, str]:
        """The toleration a pod needs to run on this node."""
        return {"key": REAL_NODE_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}

    @property
    def node_selector(self) -> dict[str, str]:
        """The node selector that puts a pod on this node."""
        return {"kubernetes.io/hostname": self.name}

    @property
    def core(self) -> k8s.CoreV1Api:
        """The core API as the cluster's admin."""
        return k8s.CoreV1Api(self.control_plane.admin_client)

    def ctr(self, *args: str, input: bytes | None = None, timeout: float = 120) -> str:
        """Run ``ctr`` against this node's containerd, in the namespace the CRI plugin uses."""
        proc = subprocess.run(
            ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args],
            input=input,
            capture_output=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            said = proc.stderr.decode(errors="replace").strip()
            raise RealNodeError(f"ctr {' '.join(args)} failed ({proc.returncode}): {said}")
        return proc.stdout.decode(errors="replace")

    def containers(self) -> list[str]:
        """Ids of the containers (pods' sandboxes and containers) in this node's containerd."""
        return self.ctr("containers", "list", "--quiet").split()

    def pod_containers(self, pod_uid: str) -> list[str]:
        """Ids of the containers (its sandbox included) that the CRI plugin made for a pod."""
        return self.ctr(
            "containers", "list", "--quiet", f'labels."io.kubernetes.pod.uid"=={pod_uid}'
        ).split()

    def import_image(self, docker_ref: str, *, again: bool = False) -> str:
        """Copy ``docker_ref`` from the local Docker engine into this node's containerd (unpacked,
        so a pod with ``imagePullPolicy: Never`` runs it). Returns containerd's name for it.
        Each reference is imported once per node, unless ``again`` (the tag moved in Docker:
        the node's tag moves with it)."""
        if docker_ref in self._imported and not again:
            return self._imported[docker_ref]
        save = subprocess.Popen(
            ["docker", "save", docker_ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert save.stdout is not None
        try:
            imported = subprocess.run(
                [
                    "ctr",
                    "--address",
                    str(self.socket),
                    "--namespace",
                    "k8s.io",
                    "images",
                    "import",
                    "-",
                ],
                stdin=save.stdout,
                capture_output=True,
                timeout=300,
            )
        finally:
            save.stdout.close()
            _, save_err = save.communicate(timeout=60)
        if save.returncode != 0:
            raise RealNodeError(
                f"docker save {docker_ref} failed: {save_err.decode(errors='replace').strip()}"
            )
        if imported.returncode != 0:
            raise RealNodeError(
                f"importing {docker_ref} into the node's containerd failed: "
                f"{imported.stderr.decode(errors='replace').strip()}"
            )
        name = containerd_image_name(docker_ref)
        if name not in self.ctr("images", "list", "--quiet").split():
            raise RealNodeError(f"{docker_ref} was imported, but containerd lists no {name}")
        self._imported[docker_ref] = name
        return name

    # --- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        for tool in ("containerd", "ctr", "runc", "ip", "docker"):
            if shutil.which(tool) is None:
                raise RealNodeError(
                    f"A real Kubernetes node needs {tool}, and it is not installed."
                )
        for program in ("kubelet", "pause"):
            if not (self.bin_dir / program).is_file():
                raise RealNodeError(
                    f"{self.bin_dir / program} is missing: run scripts/build-kubernetes.sh."
                )
        if not (CNI_BIN_DIR / "bridge").is_file():
            raise RealNodeError(
                "The CNI plugins are not installed (apt-get install containernetworking-plugins)."
            )
        sweep_stale_nodes()
        self.workdir.mkdir(parents=True, exist_ok=True)
        for d in (self.run_dir, self.lib_dir):
            d.mkdir(mode=0o700, parents=True)
        (self.lib_dir / "owner").write_text(f"{TEST_RUN}\n")
        try:
            self._make_network()
            self._start_containerd()
            self.ctr(
                "images",
                "import",
                "-",
                input=pause_image_archive(self.bin_dir / "pause", PAUSE_IMAGE),
            )
            self._make_cgroup_root()
            self._start_kubelet()
            self._wait_ready()
            self._finish_registration()
        except BaseException as failure:
            try:
                self.stop()
            except RealNodeError as e:
                failure.add_note(str(e))
            raise

    def _make_network(self) -> None:
        with _machine_lock():
            routes = json.loads(
                subprocess.run(
                    ["ip", "-j", "-4", "route", "show", "table", "all"],
                    capture_output=True,
                    check=True,
                ).stdout
                or b"[]"
            )
            taken = []
            for r in routes:
                dst = r.get("dst", "")
                if dst and dst != "default":
                    with contextlib.suppress(ValueError):
                        taken.append(ipaddress.ip_network(dst, strict=False))
            candidates = [
                ipaddress.IPv4Network(f"10.244.{n}.0/24") for n in random.sample(range(256), 256)
            ]
            for subnet in candidates:
                if not any(subnet.overlaps(t) for t in taken):
                    self.subnet = subnet
                    break
            else:
                raise RealNodeError("Every /24 of 10.244.0.0/16 is already routed on this host.")
            self.node_ip = str(subnet.network_address + 1)
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{self.node_ip}/{subnet.prefixlen}", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
            # Pod to pod on the bridge passes the host's FORWARD chain (Docker turns on
            # bridge netfilter), whose policy Docker sets to DROP: let this bridge's own traffic
            # through, as Docker does for docker0 and a cluster's network plugin for its pods.
            _run("iptables", "-w", "-I", "FORWARD", "1", *_forward_rule(self.id))
        conf_dir = self.lib_dir / "cni-conf"
        conf_dir.mkdir()
        (conf_dir / "10-jgc.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": f"jgc-{self.id}",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": self.bridge,
                            "isGateway": True,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": str(self.subnet), "gateway": self.node_ip}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(self.lib_dir / "cni-ipam"),
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                },
                indent=1,
            )
        )

    def _containerd_config(self) -> str:
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        # The kubelet asks for oom_score_adj -998 for sandboxes (-997 for Guaranteed pods). Where
        # root lacks CAP_SYS_RESOURCE, runc cannot lower it and every sandbox fails to start
        # ("can't get final child's PID from pipe: EOF"); the CRI plugin then clamps scores to
        # its own instead, as it does for rootless containerd.
        restrict_oom = "false" if _has_cap_sys_resource() else "true"
        return f"""version = 2
root = "{self.lib_dir / "containerd"}"
state = "{self.run_dir / "containerd"}"
# Only what the CRI plugin needs: no snapshotters this node never uses, no /opt installer.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = {restrict_oom}
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{shutil.which("runc")}"
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{self.lib_dir / "cni-conf"}"
    max_conf_num = 1
"""

    def _spawn(self, name: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        out = open(log, "ab")  # noqa: SIM115 (closed in stop())
        self._logs.append(out)
        # The kubelet and containerd end with the test process, even when it is killed (the
        # parent-death signal is tied to the forking thread: the main thread's lives as long as
        # the process). What they leave (pods' processes, shims) the next run's start sweeps.
        main = threading.current_thread() is threading.main_thread()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if main else None,
        )
        self._procs[name] = proc
        return proc

    def _start_containerd(self) -> None:
        config = self.run_dir / "containerd.toml"
        config.write_text(self._containerd_config())
        proc = self._spawn(
            "containerd",
            ["containerd", "--config", str(config), "--log-level", "info"],
            self.containerd_log,
        )
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RealNodeError(
                    f"containerd exited ({proc.returncode}):\n{_tail(self.containerd_log)}"
                )
            if self.socket.exists():
                try:
                    plugins = subprocess.run(
                        ["ctr", "--address", str(self.socket), "plugins", "list"],
                        capture_output=True,
                        timeout=10,
                    ).stdout.decode()
                except subprocess.TimeoutExpired:
                    plugins = ""
                cri = [line for line in plugins.splitlines() if " cri " in f" {line} "]
                if cri:
                    if not cri[0].split()[-1] == "ok":
                        raise RealNodeError(
                            f"containerd's CRI plugin did not start:\n{_tail(self.containerd_log)}"
                        )
                    return
            if time.monotonic() > deadline:
                raise RealNodeError(
                    f"containerd did not answer in 30 s:\n{_tail(self.containerd_log)}"
                )
            time.sleep(0.2)

    def _make_cgroup_root(self) -> None:
        """``/jgc-k8s-<id>`` in every hierarchy: the kubelet checks that its cgroup root exists."""
        for hierarchy in _cgroup_hierarchies():
            path = hierarchy / self.cgroup_root.lstrip("/")
            path.mkdir()
            if hierarchy.name == "cpuset":
                # A v1 cpuset cgroup takes no task until it has CPUs and memory nodes.
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (path / knob).write_text((hierarchy / knob).read_text())

    def _start_kubelet(self) -> None:
        cp = self.control_plane
        certs = self.lib_dir / "pki"
        certs.mkdir()
        client_cert, client_key = cp.sign_client_cert(f"system:node:{self.name}", ["system:nodes"])
        _sign_serving_cert(
            cp.ca_file,
            cp.ca_key_file,
            f"system:node:{self.name}",
            self.node_ip,
            certs / "kubelet.crt",
            certs / "kubelet.key",
        )
        kubeconfig = self.lib_dir / "kubelet.kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "jgc",
                            "cluster": {
                                "server": cp.server,
                                "certificate-authority": str(cp.ca_file),
                            },
                        }
                    ],
                    "users": [
                        {
                            "name": self.name,
                            "user": {
                                "client-certificate": str(client_cert),
                                "client-key": str(client_key),
                            },
                        }
                    ],
                    "contexts": [{"name": "jgc", "context": {"cluster": "jgc", "user": self.name}}],
                    "current-context": "jgc",
                }
            )
        )
        kubeconfig.chmod(0o600)
        # Pods get this node's own resolv.conf: the host's nameservers that they can reach.
        nameservers = []
        with contextlib.suppress(OSError):
            for line in Path("/etc/resolv.conf").read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0] == "nameserver" and not parts[1].startswith("127."):
                    nameservers.append(line)
        resolv = self.lib_dir / "resolv.conf"
        resolv.write_text("".join(f"{line}\n" for line in nameservers))
        self.kubelet_port = _free_port()
        with _machine_lock():
            if not KERNEL_SETTINGS.exists():
                settings = {t: (Path("/proc/sys") / t).read_text().strip() for t in KERNEL_TUNABLES}
                KERNEL_SETTINGS.write_text(json.dumps(settings))
        kubelet_config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.node_ip,
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzPort": 0,
            "tlsCertFile": str(certs / "kubelet.crt"),
            "tlsPrivateKeyFile": str(certs / "kubelet.key"),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(cp.ca_file)},
            },
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "resolvConf": str(resolv),
            "podLogsDir": str(self.lib_dir / "pod-logs"),
            "registerWithTaints": [
                {"key": REAL_NODE_TAINT_KEY, "value": "true", "effect": "NoSchedule"}
            ],
            # Not this node's business to touch the host's firewall.
            "makeIPTablesUtilChains": False,
            # Other work on a shared test machine fills its disk: never evict test pods or delete
            # the images imported for them because of that.
            "evictionHard": {
                "memory.available": "50Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "shutdownGracePeriod": "0s",
        }
        if not _has_cap_sys_resource():
            # It could not lower its own score either, and would only say so in its log.
            kubelet_config["oomScoreAdj"] = 0
        config = self.lib_dir / "kubelet-config.json"
        config.write_text(json.dumps(kubelet_config, indent=1))
        argv = [
            str(self.bin_dir / "kubelet"),
            f"--config={config}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={self.kubelet_root}",
            f"--cert-dir={certs}",
            f"--hostname-override={self.name}",
            f"--node-ip={self.node_ip}",
            f"--node-labels={','.join(f'{k}={v}' for k, v in sorted(self.labels.items()))}",
            # The kubelet's image garbage collector spares the sandbox image it is told of.
            f"--pod-infra-container-image={PAUSE_IMAGE}",
            "--v=2",
        ]
        self._spawn("kubelet", argv, self.kubelet_log)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + REGISTER_TIMEOUT
        last = "not registered"
        while time.monotonic() < deadline:
            proc = self._procs["kubelet"]
            if proc.poll() is not None:
                raise RealNodeError(
                    f"The kubelet exited ({proc.returncode}):\n{_tail(self.kubelet_log)}"
                )
            try:
                node = self.core.read_node(self.name)
            except k8s.ApiException as e:
                if e.status != 404:
                    raise
            else:
                conditions = node.status.conditions if node.status else None
                ready = [c for c in conditions or [] if c.type == "Ready"]
                if ready and ready[0].status == "True":
                    return
                last = (
                    f"{ready[0].reason}: {ready[0].message}" if ready else "no Ready condition yet"
                )
            time.sleep(0.5)
        raise RealNodeError(
            f"Node {self.name} was not Ready after {REGISTER_TIMEOUT:.0f} s ({last}). "
            f"The kubelet's log:\n{_tail(self.kubelet_log)}"
        )

    def _finish_registration(self) -> None:
        """What a cluster does for a new node once it is Ready, and this control plane does not:
        its node lifecycle controller is off (fake nodes have no kubelet), so the admin takes the
        ``not-ready`` taint the kubelet registered with away. Then the GPUs are advertised."""
        node = self.core.read_node(self.name)
        registered = (node.spec.taints if node.spec else None) or []
        taints = [t for t in registered if t.key != NOT_READY_TAINT_KEY]
        if len(taints) != len(registered):
            self.core.patch_node(
                self.name,
                {
                    "spec": {
                        "taints": [
                            {"key": t.key, "value": t.value, "effect": t.effect} for t in taints
                        ]
                    }
                },
            )
        if not self.gpus:
            return
        # The documented way to advertise an extended resource: a JSON patch of nodes/status.
        # The kubelet keeps it in later status updates (until it registers the node anew).
        key = self.gpu_resource.replace("~", "~0").replace("/", "~1")
        patch = [
            {"op": "add", "path": f"/status/capacity/{key}", "value": str(self.gpus)},
            {"op": "add", "path": f"/status/allocatable/{key}", "value": str(self.gpus)},
        ]
        self.core.patch_node_status(self.name, patch)

    # --- stop ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Delete the node's pods and the node, stop the kubelet, remove the containers, stop
        containerd; then remove whatever is left by force (see ``clean_up_node``)."""
        errors: list[str] = []

        def attempt(what: str, fn: Any, *args: Any) -> None:
            try:
                fn(*args)
            except Exception as e:  # every step runs; the errors are reported together
                errors.append(f"{what}: {e}")

        if "kubelet" in self._procs:
            attempt("deleting the node's pods", self._drain)
        attempt("deleting the node", self._delete_node)
        attempt("stopping the kubelet", self._end, "kubelet")
        if "containerd" in self._procs:
            attempt("removing containers", self._remove_containers)
        attempt("stopping containerd", self._end, "containerd")
        errors += clean_up_node(self.id)
        for log in self._logs:
            log.close()
        self._logs.clear()
        if errors:
            raise RealNodeError("The real node did not stop cleanly: " + "; ".join(errors))

    def _node_pods(self) -> list[Any]:
        pods = self.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={self.name}"
        ).items
        return list(pods)

    def _drain(self) -> None:
        """Delete what still runs here and let the kubelet tear it down (CNI teardown, volumes
        unmounted), so nothing is left to clean by force."""
        for pod in self._node_pods():
            with contextlib.suppress(k8s.ApiException):
                self.core.delete_namespaced_pod(
                    pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0
                )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not self._node_pods() and not self.ctr("tasks", "list", "--quiet").split():
                return
            time.sleep(0.5)

    def _delete_node(self) -> None:
        with contextlib.suppress(k8s.ApiException):
            self.core.delete_node(self.name)

    def _end(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def _remove_containers(self) -> None:
        """What the kubelet left: kill and delete tasks (their shims end with them), then the
        containers; and the network namespaces of pod sandboxes, which the CRI plugin keeps as
        bind mounts under /var/run/netns."""
        netns: set[tuple[str | None, str]] = set()
        for cid in self.containers():
            with contextlib.suppress(RealNodeError, ValueError):
                spec = json.loads(self.ctr("containers", "info", cid)).get("Spec") or {}
                for ns in (spec.get("linux") or {}).get("namespaces") or []:
                    netns.add((ns.get("type"), ns.get("path", "")))
        for tid in self.ctr("tasks", "list", "--quiet").split():
            with contextlib.suppress(RealNodeError):
                self.ctr("tasks", "kill", "--signal", "SIGKILL", tid)
            for _ in range(50):
                with contextlib.suppress(RealNodeError):
                    self.ctr("tasks", "delete", tid)
                    break
                time.sleep(0.1)
        for cid in self.containers():
            self.ctr("containers", "delete", cid)
        for kind, path in netns:
            _remove_netns(kind, path)


def _node_pids(node_id: str) -> set[int]:
    """Processes of node ``node_id``: its kubelet, containerd and shims (their command lines
    name its directories) and its pods' processes (in its cgroups)."""
    marker = f"jgc-k8s-{node_id}".encode()
    pids = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (proc / "cmdline").read_bytes():
                    pids.add(int(proc.name))
    for hierarchy in _cgroup_hierarchies():
        root = hierarchy / f"jgc-k8s-{node_id}"
        for dirpath, _, _ in os.walk(root):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in (Path(dirpath) / "cgroup.procs").read_text().split())
    pids.discard(os.getpid())
    return pids


def _forward_rule(node_id: str) -> list[str]:
    """The iptables rule (after the chain) that lets node ``node_id``'s pods reach each other."""
    bridge = f"jgc{node_id}"
    comment = ["-m", "comment", "--comment", f"jgc-k8s-{node_id}"]
    return ["-i", bridge, "-o", bridge, *comment, "-j", "ACCEPT"]


def clean_up_node(node_id: str) -> list[str]:
    """Remove what node ``node_id`` left on this machine, by force: its processes (by pid), pod
    network namespaces, mounts, cgroups, bridge and directories; put back the kernel settings its
    kubelet changed. Returns what could not be done. What ``stop()`` ends with, and how a later
    run clears up after a run that was killed."""
    errors: list[str] = []
    run_dir, lib_dir = Path(f"/run/jgc-k8s-{node_id}"), Path(f"/var/lib/jgc-k8s-{node_id}")
    for _ in range(3):
        pids = _node_pids(node_id)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.1)
    else:
        errors.append(f"processes {sorted(_node_pids(node_id))} would not end")
    # Sandboxes' network namespaces: the CRI plugin's bind mounts under /var/run/netns, named in
    # the OCI specs of the tasks (a bundle is left where containerd did not delete its task).
    for config in run_dir.glob("containerd/io.containerd.runtime.v2.task/k8s.io/*/config.json"):
        with contextlib.suppress(OSError, ValueError):
            for ns in json.loads(config.read_text()).get("linux", {}).get("namespaces", []):
                _remove_netns(ns.get("type"), ns.get("path", ""))
    for point in _mounts_under(lib_dir, run_dir):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            lazy = subprocess.run(["umount", "--lazy", point], capture_output=True, text=True)
            if lazy.returncode != 0:
                errors.append(f"umount {point}: {lazy.stderr.strip()}")
    for hierarchy in _cgroup_hierarchies():
        root = hierarchy / f"jgc-k8s-{node_id}"
        # Children first: a cgroup directory goes only when it has none.
        for dirpath, _, _ in sorted(os.walk(root), key=lambda w: w[0].count("/"), reverse=True):
            try:
                os.rmdir(dirpath)
            except OSError as e:
                errors.append(f"rmdir {dirpath}: {e}")
    bridge = f"jgc{node_id}"
    # The bridge's FORWARD rule (every copy: a rule is added once per start).
    for _ in range(10):
        check = ["iptables", "-w", "-C", "FORWARD", *_forward_rule(node_id)]
        if subprocess.run(check, capture_output=True).returncode != 0:
            break
        out = subprocess.run(
            ["iptables", "-w", "-D", "FORWARD", *_forward_rule(node_id)],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            errors.append(f"iptables -D FORWARD: {out.stderr.strip()}")
            break
    if Path(f"/sys/class/net/{bridge}").exists():
        out = subprocess.run(["ip", "link", "delete", bridge], capture_output=True, text=True)
        if out.returncode != 0:
            errors.append(f"ip link delete {bridge}: {out.stderr.strip()}")
    for d in (run_dir, lib_dir):
        try:
            shutil.rmtree(d)
        except FileNotFoundError:
            pass
        except OSError as e:
            errors.append(f"removing {d}: {e}")
    with _machine_lock():
        # The last node on the machine puts back what the kubelets changed.
        if KERNEL_SETTINGS.exists() and not list(Path("/var/lib").glob("jgc-k8s-*")):
            try:
                for tunable, value in json.loads(KERNEL_SETTINGS.read_text()).items():
                    if tunable in KERNEL_TUNABLES:
                        (Path("/proc/sys") / tunable).write_text(value)
                KERNEL_SETTINGS.unlink()
            except (OSError, ValueError) as e:
                errors.append(f"restoring the kernel settings: {e}")
    return errors


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    with open(MACHINE_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _remove_netns(kind: str | None, path: str) -> None:
    if kind == "network" and path.startswith("/var/run/netns/cni-"):
        subprocess.run(["umount", path], capture_output=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def sweep_stale_nodes(say: Any = print) -> None:
    """Clean up the nodes of test runs that are over (killed before their ``stop()``): each
    node's directory names the run that made it (``owner``)."""
    for lib_dir in Path("/var/lib").glob("jgc-k8s-*"):
        node_id = lib_dir.name.removeprefix("jgc-k8s-")
        try:
            owner = (lib_dir / "owner").read_text().strip()
        except OSError:
            continue
        if owner != TEST_RUN and stale_runs.run_is_over(owner):
            errors = clean_up_node(node_id)
            say(
                f"removed real node {node_id} of the ended test run {owner}"
                + (f" ({errors})" if errors else "")
            )


@pytest.fixture(scope="session")
def real_node(control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    """A real node of the session's control plane (see RealNode), stopped at the session's end."""
    node = RealNode(
        control_plane, kubernetes_bin_dir(), tmp_path_factory.mktemp("real-node"), "real-node-0"
    )
    try:
        node.start()
    except RealNodeError as e:
        pytest.fail(f"The real Kubernetes node did not start: {e}", pytrace=False)
    yield node
    node.stop()


@pytest.fixture(scope="session")
def real_node_image(real_node: RealNode, docker_client: Any) -> str:
    """The test base image (kernel-ready: python3 and ipykernel), imported from the local Docker
    engine into the real node's containerd; the name a pod spec gives it."""
    from conftest import DEBIAN_IMAGE

    return real_node.import_image(DEBIAN_IMAGE)


def node_backend(kubeconfig: str, namespace: str, node: RealNode, **traits: Any) -> Any:
    """A KubernetesBackend whose pods (kernels, readiness probes) go to ``node``; ``traits`` add
    to its configuration."""
    from jupyter_gpu_containers.backends.kubernetes.k8s import KubernetesBackend

    return KubernetesBackend(
        kubeconfig=kubeconfig,
        namespace=namespace,
        node_selector=node.node_selector,
        tolerations=[node.toleration],
        **traits,
    )
