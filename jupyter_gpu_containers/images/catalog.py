"""The image catalog: what each image is, whether it can run a kernel, whether it runs here.

Seed 000's users pick images from a table of framework x tag x CUDA x required driver and learn
of a driver mismatch only when the container fails. The catalog reads that table for them, for
every local image and every image an administrator lists for pulling.

What an image is comes from what it says about itself, most specific first: NGC's environment
(``NVIDIA_PRODUCT_NAME`` with ``NVIDIA_<PRODUCT>_VERSION``), framework environment variables
(``PYTORCH_VERSION``, ``TENSORFLOW_VERSION``), ``com.nvidia.<framework>.version`` labels, tag
conventions such as OpenPAI's ``python_3.6-pytorch_1.4.0-gpu``, and finally the packages the
readiness probe found. For an image not pulled yet, only the reference and the admin's list entry
speak. Rows are computed by pure functions over facts the handler gathers off the event loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from traitlets import Dict, List, Unicode, Union
from traitlets.config import LoggingConfigurable

from ..base.errors import ImageNotAllowed
from ..base.records import ImageDiskUse, ImageRecord
from ..base.references import normalize_reference, registry_of
from ..gpus.inventory import Inventory
from ..policy.admin_policy import ContainerPolicy, check_image_allowed
from . import compat
from .cuda_requirements import image_cuda
from .probe import ProbeResult
from .saves import lineage

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


# The readiness probe's framework keys (distribution names, see probe.FRAMEWORK_DISTRIBUTIONS)
# as people name the frameworks.
_PROBED_FRAMEWORKS = {
    "torch": "PyTorch",
    "tensorflow": "TensorFlow",
    "jax": "JAX",
    "mxnet": "MXNet",
    "paddlepaddle": "Paddle",
    "keras": "Keras",
    "cntk": "CNTK",
}


def framework_with_probe(
    ref: str, env: Mapping[str, str], labels: Mapping[str, str], probe: ProbeResult | None
) -> Framework | None:
    """framework_of, completed by the packages the readiness probe found: the framework when the
    image says nothing of it, its version when only the name is known (a tag like
    ``pytorch-gpu``). The probe lists frameworks most specific first (torch before keras)."""
    framework = framework_of(ref, env, labels)
    found = probe.frameworks if probe is not None else {}
    if framework is None:
        for key, version in found.items():
            return Framework(_PROBED_FRAMEWORKS.get(key, key), version)
        return None
    if not framework.version and not framework.release:
        for key, version in found.items():
            if _PROBED_FRAMEWORKS.get(key) == framework.name:
                return Framework(framework.name, version)
    return framework


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


# ---------------------------------------------------------------------- what a reference says


def cuda_from_reference(ref: str) -> str:
    """The CUDA version a tag names: nvidia/cuda's ``12.2.2-cudnn8-runtime-ubuntu22.04``, or
    ``cuda12.2`` / ``cuda-12.2`` / ``cu121`` / ``cuda12-`` anywhere in a tag."""
    last = ref.rsplit("/", 1)[-1]
    repo, _, tag = last.partition(":")
    tag = tag.split("@", 1)[0].lower()
    if repo == "cuda":
        m = re.match(r"(\d+\.\d+(?:\.\d+)?)", tag)
        if m:
            return m.group(1)
    m = re.search(r"(?<![a-z])cuda[-_]?(\d+(?:\.\d+){0,2})", tag)
    if m:
        return m.group(1)
    m = re.search(r"(?<![a-z])cu(\d{2,3})(?!\d)", tag)
    if m:  # cu121 -> 12.1, cu118 -> 11.8
        digits = m.group(1)
        return f"{digits[:-1]}.{digits[-1]}"
    return ""


def gpu_from_reference(ref: str) -> bool | None:
    """True for a tag that says gpu/cuda, False for one that says cpu, None when it says
    neither."""
    tag = ref.rsplit("/", 1)[-1].partition(":")[2].lower()
    words = set(re.split(r"[^a-z0-9]+", tag))
    if "cpu" in words:
        return False
    if "gpu" in words or cuda_from_reference(ref) or ref.startswith("nvcr.io/nvidia/"):
        return True
    return None


# ---------------------------------------------------------------------- the default list

# What the seeds' users pick from: NGC PyTorch and TensorFlow (seed 001), tensorflow/tensorflow
# GPU and CPU, jupyter/docker-stacks, and OpenPAI's standard images (seed 000's table, with its
# CUDA and driver columns). "cuda" and "driver" give a verdict before the image is pulled; once
# pulled, the image's own environment is what counts.
DEFAULT_LISTED_IMAGES: list[dict[str, Any]] = [
    {
        "image": "nvcr.io/nvidia/pytorch:25.10-py3",
        "description": "NGC PyTorch 25.10 (PyTorch 2.9, CUDA 13.0)",
        "cuda": "13.0.2",
        "driver": "580.95.05",
    },
    {
        "image": "nvcr.io/nvidia/pytorch:24.05-py3",
        "description": "NGC PyTorch 24.05 (PyTorch 2.4, CUDA 12.4)",
        "cuda": "12.4.1",
        "driver": "550.54.15",
    },
    {
        "image": "nvcr.io/nvidia/tensorflow:24.05-tf2-py3",
        "description": "NGC TensorFlow 24.05 (TensorFlow 2.15, CUDA 12.4)",
        "cuda": "12.4.1",
        "driver": "550.54.15",
    },
    {
        "image": "tensorflow/tensorflow:2.15.0-gpu-jupyter",
        "description": "TensorFlow 2.15 with GPU support and Jupyter (CUDA 12.2)",
        "cuda": "12.2",
    },
    {
        "image": "tensorflow/tensorflow:2.15.0-jupyter",
        "description": "TensorFlow 2.15, CPU only, with Jupyter",
        "gpu": False,
    },
    {
        "image": "quay.io/jupyter/pytorch-notebook:cuda12-latest",
        "description": "Jupyter Docker Stacks: PyTorch notebook, CUDA 12",
        "cuda": "12",
    },
    {
        "image": "quay.io/jupyter/scipy-notebook:latest",
        "description": "Jupyter Docker Stacks: SciPy notebook (CPU)",
        "gpu": False,
    },
    {
        "image": "openpai/standard:python_3.6-pytorch_1.4.0-gpu",
        "description": "OpenPAI standard: PyTorch 1.4.0, Python 3.6, CUDA 10.1",
        "cuda": "10.1",
        "driver": "418.39",
    },
    {
        "image": "openpai/standard:python_3.6-tensorflow_1.15.0-gpu",
        "description": "OpenPAI standard: TensorFlow 1.15.0, Python 3.6, CUDA 10.0",
        "cuda": "10.0",
        "driver": "410.48",
    },
    {
        "image": "openpai/standard:python_3.6-pytorch_1.4.0-cpu",
        "description": "OpenPAI standard: PyTorch 1.4.0, Python 3.6, CPU only",
        "gpu": False,
    },
]


def listed_environment(entry: Mapping[str, Any]) -> dict[str, str]:
    """The environment a listed image would have, as far as its list entry says: enough for a
    compatibility verdict before it is pulled."""
    env = {}
    ref = str(entry["image"])
    cuda = str(entry.get("cuda") or cuda_from_reference(ref))
    if cuda and entry.get("gpu", True) is not False:
        env["CUDA_VERSION"] = cuda
        if entry.get("driver"):
            env["CUDA_DRIVER_VERSION"] = str(entry["driver"])
        if ref.startswith("nvcr.io/nvidia/"):
            # What every NGC framework image declares: a permissive runtime requirement (its
            # real need is CUDA_VERSION), and a product name; both shape the verdict.
            framework = framework_from_reference(ref)
            env["NVIDIA_REQUIRE_CUDA"] = "cuda>=9.0"
            env["NVIDIA_PRODUCT_NAME"] = framework.name if framework else "NGC"
    for key, value in (entry.get("env") or {}).items():
        env[str(key)] = str(value)
    return env


# ---------------------------------------------------------------------- what an image is


@dataclass(frozen=True)
class ImageDescription:
    """Whether an image is a GPU build, and the environment its compatibility verdict reads: the
    one answer the images list, the image's kernel spec (its default GPU count) and the cluster
    view's verdicts all take (describe_image)."""

    gpu: bool
    env: dict[str, str]

    @property
    def cuda(self) -> str:
        """The CUDA version the verdict checks ("" for a CPU build or when unknown)."""
        return image_cuda(self.env) if self.gpu else ""

    def verdict(self, inventory: Inventory) -> compat.Verdict:
        return compat.verdict(self.env, inventory, gpu_build=self.gpu)


def _declares_cuda(env: Mapping[str, str]) -> bool:
    return bool(env.get("CUDA_VERSION") or env.get("NVIDIA_REQUIRE_CUDA"))


def describe_image(
    ref: str, image_env: Mapping[str, str] | None, entry: Mapping[str, Any] | None
) -> ImageDescription:
    """What the image ``ref`` is, most specific first: the CUDA stack its own environment
    declares (``image_env``: a pulled image's, on Docker), else what the administrator's list
    entry says (``"cuda"``, ``"driver"``, ``"env"``; ``entry`` None for an image nobody lists),
    else its reference. On Kubernetes no engine reads an image's environment, so the entry is
    all there is: it must decide there exactly as on Docker. The entry's ``"gpu"``, when given,
    decides whether it is a GPU build either way: the administrator's word, which an image's own
    metadata cannot overrule."""
    own = {str(k): str(v) for k, v in (image_env or {}).items()}
    if entry is None:
        return ImageDescription(is_gpu_build(ref, own), own)
    said = entry.get("gpu")
    env = own if _declares_cuda(own) else {**listed_environment(entry), **own}
    if said is not None:
        gpu = bool(said)
    else:
        gpu = _declares_cuda(env) or bool(gpu_from_reference(ref)) or is_gpu_build(ref, own)
    return ImageDescription(gpu, env)


# ---------------------------------------------------------------------- retired images

# An administrator's message travels into every notebook page and kernel spec: bounded.
RETIREMENT_MESSAGE_MAX = 500


@dataclass(frozen=True)
class Retirement:
    """An image the administrator retired (ImageCatalog.deprecated_images): why, in their
    words, and the reference its notebooks are offered to move to ("" for none)."""

    message: str
    redirect: str

    def to_json(self) -> dict[str, str]:
        return {"message": self.message, "redirect": self.redirect}


def retirements(configured: Mapping[str, Any]) -> tuple[dict[str, Retirement], list[str]]:
    """The administrator's ``deprecated_images``, by normalized reference, with each redirect
    followed past images that are retired themselves (to the first that is not; none in a
    cycle); and a sentence for each entry that was not understood or redirects nowhere."""
    said: dict[str, tuple[str, str]] = {}
    problems = []
    for key, value in configured.items():
        if isinstance(value, str):
            value = {"message": value}
        if not isinstance(value, Mapping) or not set(value) <= {"message", "redirect"}:
            problems.append(
                f"ImageCatalog.deprecated_images[{key!r}] is ignored: give a message, or "
                '{"message": "…", "redirect": "image:tag"}.'
            )
            continue
        message = " ".join(str(value.get("message") or "").split())[:RETIREMENT_MESSAGE_MAX]
        redirect = str(value.get("redirect") or "")
        said[normalize_reference(str(key))] = (
            message,
            normalize_reference(redirect) if redirect else "",
        )
    found = {}
    for ref, (message, redirect) in said.items():
        seen = {ref}
        while redirect in said and redirect not in seen:
            seen.add(redirect)
            redirect = said[redirect][1]
        if redirect in seen:
            problems.append(
                f"ImageCatalog.deprecated_images: the redirects from {ref} come back to "
                f"{redirect}: its notebooks are offered no move."
            )
            redirect = ""
        found[ref] = Retirement(message, redirect)
    return found, problems


# ---------------------------------------------------------------------- the catalog


class ImageCatalog(LoggingConfigurable):
    """Every image a user may pick: the engine's local images and the admin's list of images
    that can be pulled, each with what it is, whether it can run a kernel, and whether its CUDA
    stack runs on this host."""

    listed_images = List(
        Union([Unicode(), Dict()]),
        DEFAULT_LISTED_IMAGES,
        config=True,
        help="""Images offered for pulling, shown in the catalog even before they are local.
        Each is a reference, or {"image": ref, "description": "…", "cuda": "12.4.1",
        "driver": "550.54.15", "gpu": true, "env": {…}}: "cuda"/"driver" (the CUDA version and
        the driver it was built against) give a compatibility verdict before the pull; "gpu"
        says whether it is a GPU build (whose kernels ask for one GPU by default) whatever its
        reference or its own metadata say. On Kubernetes, where no engine reads an image, the
        entry and the reference are all that describe it. Replacing this list drops the
        defaults (NGC PyTorch and TensorFlow, tensorflow/tensorflow, Jupyter Docker Stacks,
        openpai/standard); to keep them, add to extra_listed_images instead.""",
    )

    extra_listed_images = List(
        Union([Unicode(), Dict()]),
        config=True,
        help="Images listed in addition to listed_images (same form).",
    )

    deprecated_images = Dict(
        value_trait=Union([Unicode(), Dict()]),
        config=True,
        help="""Images the administrator retires, by reference, each with a message and an
        optional redirect: {"nvcr.io/nvidia/pytorch:24.05-py3": {"message": "The course moved
        to 25.01 in March.", "redirect": "nvcr.io/nvidia/pytorch:25.01-py3"}}, or a reference
        and its message alone. The Launcher and the panel stop offering a retired image; a
        notebook whose kernel spec names it opens with the message and a one-click move to the
        redirect, which the notebook records as a move (its metadata's gpu_containers.moved).
        A retired image stays usable by the notebooks that ask for it until it is removed, and
        a removed image's notebooks are offered the same move. A redirect that is retired
        itself is followed to the first image that is not.""",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._said: set[str] = set()  # the problems of deprecated_images logged so far

    def retired(self) -> dict[str, Retirement]:
        """Every retired image (deprecated_images), by normalized reference; what could not
        be read is logged, once."""
        found, problems = retirements(self.deprecated_images)
        for problem in problems:
            if problem not in self._said:
                self._said.add(problem)
                self.log.warning(problem)
        return found

    def retirement(self, ref: str) -> Retirement | None:
        """Whether ``ref`` is retired, and how (None: it is not)."""
        found, _ = retirements(self.deprecated_images)
        return found.get(normalize_reference(ref))

    def listed(self) -> list[dict[str, Any]]:
        out, seen = [], set()
        for item in [*self.listed_images, *self.extra_listed_images]:
            entry = {"image": item} if isinstance(item, str) else dict(item)
            if "image" not in entry:
                self.log.warning("ImageCatalog: a listed image without 'image' is ignored.")
                continue
            entry["image"] = normalize_reference(str(entry["image"]))
            if entry["image"] not in seen:
                seen.add(entry["image"])
                out.append(entry)
        return out


@dataclass
class CatalogInputs:
    """The facts a catalog row is computed from, gathered by the handler off the event loop."""

    images: list[ImageRecord]
    listed: list[dict[str, Any]]
    inventory: Inventory
    probes: Mapping[str, ProbeResult | None]  # image id -> result (None: not probed yet)
    policy: ContainerPolicy
    kernel_names: Mapping[str, str]  # reference -> kernel spec name, for offered images
    pulling: Mapping[str, str] = field(default_factory=dict)  # reference -> pull id
    # image id -> its disk use (the engine's ``system df``; empty when it did not answer)
    disk: Mapping[str, ImageDiskUse] = field(default_factory=dict)
    retired: Mapping[str, Retirement] = field(default_factory=dict)  # ImageCatalog.retired()
    # How an image is judged where the host's own GPUs are not where kernels run (a cluster:
    # cluster_view.catalog_verdicts); None: against ``inventory``.
    verdict_of: Callable[[ImageDescription], compat.Verdict] | None = None

    def verdict(self, described: ImageDescription) -> dict[str, str]:
        found = self.verdict_of(described) if self.verdict_of else described.verdict(self.inventory)
        return found.to_dict()


def catalog_rows(inputs: CatalogInputs) -> list[dict[str, Any]]:
    """One row per reference: every tag of every local image, then listed images not local."""
    listed = {entry["image"]: entry for entry in inputs.listed}
    rows = []
    local_refs: set[str] = set()
    for image in inputs.images:
        for ref in image.tags:
            local_refs.add(ref)
            rows.append(_local_row(ref, image, listed.get(ref), inputs))
    for ref, entry in listed.items():
        if ref not in local_refs:
            rows.append(_listed_row(ref, entry, inputs))
    rows.sort(key=lambda row: (not row["pulled"], row["reference"]))
    return rows


def _local_row(
    ref: str, image: ImageRecord, entry: Mapping[str, Any] | None, inputs: CatalogInputs
) -> dict[str, Any]:
    probe = inputs.probes.get(image.id)
    framework = framework_with_probe(ref, image.env, image.labels, probe)
    described = describe_image(ref, image.env, entry)
    digests = [d.rsplit("@", 1)[-1] for d in image.repo_digests]
    row = _common(ref, entry, inputs, digests=(*image.repo_digests, image.id))
    row.update(
        {
            "pulled": True,
            "id": image.id,
            "digest": digests[0] if digests else "",
            "size": image.size,
            **_disk_columns(inputs.disk.get(image.id)),
            "created": image.created,
            "framework": framework.name if framework else "",
            "framework_version": framework.version if framework else "",
            "framework_release": framework.release if framework else "",
            "cuda_version": described.cuda,
            "gpu": described.gpu,
            "verdict": inputs.verdict(described),
            "kernel_name": inputs.kernel_names.get(ref, ""),
            "saved_from": lineage(image.labels),
        }
    )
    row.update(_readiness(probe))
    return row


def _listed_row(ref: str, entry: Mapping[str, Any], inputs: CatalogInputs) -> dict[str, Any]:
    described = describe_image(ref, None, entry)
    framework = framework_from_reference(ref)
    row = _common(ref, entry, inputs, digests=None)
    row.update(
        {
            "pulled": False,
            "id": "",
            "digest": ref.rsplit("@", 1)[1] if "@" in ref else "",
            "size": None,
            **_disk_columns(None),
            "created": "",
            "framework": framework.name if framework else "",
            "framework_version": framework.version if framework else "",
            "framework_release": "",
            "cuda_version": described.cuda,
            "gpu": described.gpu,
            "verdict": inputs.verdict(described),
            "kernel_name": "",
            "saved_from": None,
            "kernel_ready": None,
            "kernel_ready_reason": "Not pulled yet: whether it can run a kernel is known after "
            "the pull.",
            "python": "",
            "python_version": "",
            "ipykernel_version": "",
            "frameworks": {},
        }
    )
    return row


def _common(
    ref: str,
    entry: Mapping[str, Any] | None,
    inputs: CatalogInputs,
    digests: tuple[str, ...] | None,
) -> dict[str, Any]:
    try:
        check_image_allowed(inputs.policy, ref, digests)
        allowed, allowed_reason = True, ""
    except ImageNotAllowed as e:
        allowed, allowed_reason = False, e.sentence
    retired = inputs.retired.get(ref)
    return {
        "reference": ref,
        "registry": registry_of(ref),
        "listed": entry is not None,
        "description": str((entry or {}).get("description", "")),
        "allowed": allowed,
        "allowed_reason": allowed_reason,
        "pull_id": inputs.pulling.get(ref, ""),
        "retired": retired.to_json() if retired is not None else None,
    }


def _disk_columns(use: ImageDiskUse | None) -> dict[str, Any]:
    """Bytes shared with other local images, bytes its removal alone would free, and how many
    containers use it: None where the engine did not say (or the image is not local)."""
    if use is None or use.shared_size < 0:
        shared, unique = None, None
    else:
        shared, unique = use.shared_size, use.unique_size
    return {
        "shared_size": shared,
        "unique_size": unique,
        "containers": use.containers if use is not None and use.containers >= 0 else None,
    }


def _readiness(probe: ProbeResult | None) -> dict[str, Any]:
    if probe is None:
        return {
            "kernel_ready": None,
            "kernel_ready_reason": "Not checked yet: a short probe container is on its way.",
            "python": "",
            "python_version": "",
            "ipykernel_version": "",
            "frameworks": {},
        }
    return {
        "kernel_ready": probe.ready if probe.definitive else None,
        "kernel_ready_reason": probe.reason,
        "python": probe.python,
        "python_version": probe.python_version,
        "ipykernel_version": probe.ipykernel_version,
        "frameworks": dict(probe.frameworks),
    }
