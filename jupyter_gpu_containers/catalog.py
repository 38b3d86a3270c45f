"""What an image is: its framework and version, read from what the image says about itself.

This is the first slice of the image catalog (the full catalog with compatibility verdicts is a
later piece of work). Sources, most specific first: NGC's environment (``NVIDIA_PRODUCT_NAME`` with
``NVIDIA_<PRODUCT>_VERSION``), framework environment variables (``PYTORCH_VERSION``,
``TENSORFLOW_VERSION``), ``com.nvidia.<framework>.version`` labels, then tag conventions such as
OpenPAI's ``python_3.6-pytorch_1.4.0-gpu``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_FRAMEWORKS = {
    "pytorch": "PyTorch",
    "tensorflow": "TensorFlow",
    "jax": "JAX",
    "mxnet": "MXNet",
    "cntk": "CNTK",
    "caffe": "Caffe",
    "caffe2": "Caffe2",
    "keras": "Keras",
    "chainer": "Chainer",
    "paddle": "Paddle",
}


@dataclass(frozen=True)
class Framework:
    name: str  # "PyTorch"
    version: str  # "2.4.0a0", or "" when unknown
    release: str = ""  # a vendor release such as NGC's "24.05"

    def label(self) -> str:
        if self.release:
            return f"{self.name} {self.release}"
        return f"{self.name} {self.version}".strip()


def framework_of(ref: str, env: Mapping[str, str], labels: Mapping[str, str]) -> Framework | None:
    product = env.get("NVIDIA_PRODUCT_NAME", "")
    if product:
        key = product.upper().replace(" ", "_")
        release = env.get(f"NVIDIA_{key}_VERSION", "")
        version = env.get(f"{key}_VERSION") or labels.get(f"com.nvidia.{product.lower()}.version")
        version = version or ""
        return Framework(_FRAMEWORKS.get(product.lower(), product), version or "", release)
    for key, name in _FRAMEWORKS.items():
        version = env.get(f"{key.upper()}_VERSION") or labels.get(f"com.nvidia.{key}.version")
        if version:
            return Framework(name, version)
    return framework_from_reference(ref)


def framework_from_reference(ref: str) -> Framework | None:
    """Read the framework from a tag or repository name alone (for images not pulled yet too)."""
    repo, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "")
    text = f"{repo.rsplit('/', 1)[-1]}:{tag}".lower()
    for key, name in _FRAMEWORKS.items():
        m = re.search(rf"(?<![a-z]){key}[_-]?v?(\d+(?:\.\d+)*)?", text)
        if m:
            return Framework(name, m.group(1) or "")
    return None


def is_gpu_build(ref: str, env: Mapping[str, str]) -> bool:
    """A CUDA image declares its toolkit; a tag may say -gpu."""
    tag = ref.rsplit(":", 1)[-1].lower() if ":" in ref.rsplit("/", 1)[-1] else ""
    return bool(env.get("CUDA_VERSION") or env.get("NVIDIA_REQUIRE_CUDA")) or "gpu" in tag
