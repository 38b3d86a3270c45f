"""What the Kubernetes backend writes, pure: the names, labels and security contexts of a kernel's
pod, Docker-style sizes as quantities, the pod's uid and gid, and where its Secret's files go.
"""

from __future__ import annotations

import re
from typing import Any

from ...base import labels as L
from ...base.errors import EngineRefused

KERNEL_DIR_IN_CONTAINER = "/run/jupyter-kernel"
# Where a kernel pod's Secret (its connection file) is mounted, read-only.
SECRET_DIR_IN_CONTAINER = "/run/jupyter-kernel-secret"
CONNECTION_FILE_NAME = "kernel.json"
# The kernel's own account files (accounts.py), which the provisioner writes beside its
# connection file: in a pod they come from its Secret too, each file mounted on its own.
ACCOUNT_FILES_IN_CONTAINER = {"/etc/passwd": "passwd", "/etc/group": "group"}
CONTAINER_NAME = "kernel"
# Labels (selectable) carry what is label-safe; annotations carry every value exactly.
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_DNS_LABEL = re.compile(r"[^a-z0-9-]+")
GPU_COUNT_ANNOTATION = L.GPU_COUNT
GPU_RESOURCE_ANNOTATION = L.GPU_RESOURCE


def hardened(uid: int, gid: int, read_only: bool = False) -> dict[str, Any]:
    """A container's security context: ``uid``:``gid``, never root, no capability, no privilege
    gained, the runtime's default seccomp profile (what PodSecurity "restricted" asks)."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "readOnlyRootFilesystem": read_only,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def label_safe(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL_VALUE.match(value))


def pod_name(name: str) -> str:
    """A DNS-1123 label from a container name (lower case, digits, dashes; 63 at most)."""
    text = _DNS_LABEL.sub("-", name.lower()).strip("-")[:63].strip("-")
    return text or "kernel"


def parse_user(user: str | None) -> tuple[int, int]:
    """The numeric uid and gid a pod runs as. Kubernetes needs numbers for runAsNonRoot."""
    if not user:
        raise EngineRefused(
            "Kernels on Kubernetes run as the authenticated user's numeric uid and gid, and this "
            'kernel has none (ContainerProvisioner.run_as is "image"). Set run_as to '
            '"server" or to an unprivileged "uid:gid".'
        )
    uid_text, _, gid_text = user.partition(":")
    try:
        uid = int(uid_text)
        gid = int(gid_text or uid_text)
    except ValueError:
        raise EngineRefused(
            f"Kernels on Kubernetes run as numeric ids, and {user!r} is not one."
        ) from None
    if uid == 0 or gid == 0:
        raise EngineRefused("A kernel pod never runs as root (runAsNonRoot); this one would.")
    return uid, gid


def quantity(size: str) -> str:
    """A Docker-style size ("1g", "512m", "64k") as a Kubernetes quantity ("1Gi", ...)."""
    text = size.strip()
    match = re.fullmatch(r"(\d+)([bkmgt]?)b?", text.lower())
    if not match:
        return text  # already a Kubernetes quantity ("1Gi"), or the API says why not
    number, unit = match.groups()
    return number + {"": "", "b": "", "k": "Ki", "m": "Mi", "g": "Gi", "t": "Ti"}[unit]


def split_labels(labels: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(pod labels, pod annotations): every value exactly in the annotations; the label-safe
    ones also as labels, which label selectors can find."""
    safe = {k: v for k, v in labels.items() if LABEL_KEY.match(k) and label_safe(v)}
    return safe, {k: v for k, v in labels.items() if k.startswith(L.PREFIX)}


def safe_labels(labels: dict[str, str], keys: tuple[str, ...]) -> dict[str, str]:
    return {k: labels[k] for k in keys if k in labels and label_safe(labels[k])}
