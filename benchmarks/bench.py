"""The benchmark's world: one Docker image under several tags (one per variant, so that each
variant is a kernel spec with its own transport and network), one Jupyter server configured for
them, and the clean-up of everything the run made."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import docker

from jupyter_gpu_containers.kernel.kernelspecs import kernel_name_for

from .harness import LABEL, REPO, BareKernels, docker_client, remove_labelled
from .server import BenchServer

# (transport, network mode): every combination the provisioner accepts (tcp needs a network).
VARIANTS = [("ipc", "none"), ("ipc", "bridge"), ("ipc", "host"), ("tcp", "bridge"), ("tcp", "host")]
# The default configuration: what the headline ratio is about.
DEFAULT_VARIANT = ("ipc", "bridge")


class Bench:
    def __init__(self, image: str) -> None:
        self.client: docker.DockerClient = docker_client()
        self.run_id = uuid.uuid4().hex[:10]
        self.image = image
        self.home = Path(tempfile.mkdtemp(prefix="jgc-bench-home-"))
        self.repo = f"jgc-bench-{self.run_id}"
        self.tags: list[str] = []
        self.bare = BareKernels(self.client, image, self.run_id)
        # GPU kernels need the engine to attach them: the runc-backed "nvidia" runtime that
        # scripts/ensure-docker.sh sets up, or the NVIDIA toolkit's own.
        self.gpus = "nvidia" in (self.client.info().get("Runtimes") or {})
        self.server: BenchServer | None = None

    # ------------------------------------------------------------------ images and specs

    def tag(self, name: str) -> str:
        """Another tag of the image: a kernel spec of its own (returns the reference)."""
        self.client.api.tag(self.image, f"{self.repo}/{name}", "1")
        ref = f"{self.repo}/{name}:1"
        self.tags.append(ref)
        return ref

    def untag(self, ref: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_image(ref)
        if ref in self.tags:
            self.tags.remove(ref)

    def variant_ref(self, transport: str, network: str) -> str:
        return f"{self.repo}/{transport}-{network}:1"

    def kernel(self, ref: str) -> str:
        return kernel_name_for(ref)

    def server_config(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        overrides: dict[str, Any] = {}
        for transport, network in VARIANTS:
            overrides[self.variant_ref(transport, network)] = {
                "provisioner": {
                    "transport": transport,
                    "network_mode": network,
                    "gpus": 1 if self.gpus else 0,
                }
            }
        overrides[f"{self.repo}/cpu:1"] = {"provisioner": {"gpus": 0}}
        overrides[f"{self.repo}/pool:1"] = {"provisioner": {"gpus": 0}}
        labels = {LABEL: self.run_id}
        config: dict[str, Any] = {
            "ContainerKernelSpecManager": {
                # Only this run's tags are kernels (and probed at start): other images of the
                # host still show in the catalog, which the REST section measures.
                "image_include": [f"{self.repo}/*"],
                "image_overrides": overrides,
            },
            "ContainerProvisioner": {"extra_labels": labels},
            "KernelReadinessProbe": {"extra_labels": labels},
            "ContainerPolicy": {
                "state_dir": str(self.home / "state"),
                "allow_root": os.getuid() == 0,
                "allowed_network_modes": ["bridge", "none", "host"],
            },
            "GPUInventory": (
                {"source": "nvml", "nvml_module": "benchmarks.nvml_box"}
                if self.gpus
                else {"source": "static", "static_gpus": []}
            ),
            "GPUAllocator": {"attach_mode": "runtime"},
        }
        for section, values in (extra or {}).items():
            config[section] = {**config.get(section, {}), **values}
        return config

    def start_server(self, extra: dict[str, Any] | None = None) -> BenchServer:
        for transport, network in VARIANTS:
            self.tag(f"{transport}-{network}")
        self.tag("cpu")
        self.tag("pool")
        self.server = BenchServer(self.home / "server", self.server_config(extra))
        self.server.start()
        return self.server

    # ------------------------------------------------------------------ the end

    def close(self) -> None:
        """Stop the server (by its pid), remove this run's containers, tags and files."""
        if self.server is not None:
            self.server.stop()
        remove_labelled(self.client, self.run_id)
        for ref in list(self.tags):
            self.untag(ref)
        shutil.rmtree(self.home, ignore_errors=True)


def ensure_image(image: str) -> None:
    """Build the image with the project's script when it is one of its own and missing (the
    script caches by recipe hash); any other image must already be local."""
    client = docker_client()
    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        pass
    recipes = {"jgc/demo:bookworm": "demo", "jgc/debian-ipykernel:bookworm": "test"}
    if image not in recipes:
        raise SystemExit(f"The image {image} is not on this host: pull or build it first.")
    subprocess.run(["bash", str(REPO / "scripts" / "build-images.sh"), recipes[image]], check=True)
