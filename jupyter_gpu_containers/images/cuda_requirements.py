"""libnvidia-container's constraint grammar, as the NVIDIA runtime evaluates an image's
``NVIDIA_REQUIRE_*`` variables (``cuda>=12.2 brand=tesla,driver>=470,driver<471``): parsed into
:class:`Condition` terms, each checked against one GPU and driver as the runtime does; and the CUDA
version an image declares. Pure, as compat.py (which makes the verdict) is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# ASCII digits only (as the runtime's own parser takes them), at most 9 per part: an image's
# environment is anyone's text, and a longer run is no version; int() even refuses 4300 digits
# or more with a ValueError that would fail the whole catalog.
_VERSION = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})*")


def _parts(version: str) -> list[int]:
    text = version.strip()
    if not _VERSION.fullmatch(text):
        raise ValueError(f"not a version: {version!r}")
    parts = [int(p) for p in text.split(".")]
    # libnvidia-container ignores trailing zero parts: 12.2 == 12.2.0.
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return parts


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older than, the same as or newer than ``b``: numeric part by part
    ("535.104.05" > "535.54.03"), trailing ``.0`` parts ignored ("12.2" == "12.2.0")."""
    pa, pb = _parts(a), _parts(b)
    return (pa > pb) - (pa < pb)


def is_version(text: str) -> bool:
    return bool(_VERSION.fullmatch(text.strip()))


_CUDA = re.compile(r"\s*([0-9]{1,9})(?:\.([0-9]{1,9}))?(?:\.([0-9]{1,9}))?(?![0-9])")


def parse_cuda(text: str) -> tuple[int, int, int | None] | None:
    """ "12.2.2.009" -> (12, 2, 2); "12.4" -> (12, 4, None). NGC's fourth part is a build."""
    match = _CUDA.match(text or "")
    if not match:
        return None
    patch = match.group(3)
    return int(match.group(1)), int(match.group(2) or 0), int(patch) if patch else None


_PROPERTIES = ("cuda", "driver", "arch", "brand")


_CONDITION = re.compile(r"([A-Za-z]+)(>=|<=|!=|=|<|>)(.*)")


_BRAND_VALUE = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Condition:
    """One ``prop op value`` of libnvidia-container's constraint grammar, e.g. ``cuda>=12.2``."""

    prop: str  # cuda | driver | arch | brand
    op: str  # = != < <= > >=
    value: str  # a version, or a lower-case brand

    def __str__(self) -> str:
        return f"{self.prop}{self.op}{self.value}"

    def holds(self, *, cuda: str, driver: str, arch: str | None, brand: str | None) -> bool:
        """Evaluate against one GPU's facts. ``arch``/``brand`` None (no GPU, or a static
        inventory that does not say) count as satisfied, as the runtime does without a GPU."""
        if self.prop == "brand":
            if brand is None:
                return True
            same = brand.lower() == self.value
            return same if self.op == "=" else not same
        if self.prop == "arch":
            if not arch:
                return True
            have = arch
        else:
            have = cuda if self.prop == "cuda" else driver
        c = compare_versions(have, self.value)
        return {
            "=": c == 0,
            "!=": c != 0,
            "<": c < 0,
            "<=": c <= 0,
            ">": c > 0,
            ">=": c >= 0,
        }[self.op]


def _parse_condition(text: str, whole: str) -> Condition:
    if not text:
        raise ValueError(f"empty condition in requirement {whole!r} (stray ',' or space?)")
    match = _CONDITION.fullmatch(text)
    if not match:
        raise ValueError(
            f"{text!r} in requirement {whole!r} is not PROPERTY OP VALUE, e.g. cuda>=12.2"
        )
    prop, op, value = match.group(1).lower(), match.group(2), match.group(3)
    if prop not in _PROPERTIES:
        raise ValueError(
            f"unknown property {match.group(1)!r} in {text!r}: expected one of "
            f"{', '.join(_PROPERTIES)}"
        )
    if prop == "brand":
        if op not in ("=", "!="):
            raise ValueError(f"{text!r}: brand takes only = and !=")
        if not _BRAND_VALUE.fullmatch(value):
            raise ValueError(f"{text!r}: {value!r} is not a brand name")
        return Condition(prop, op, value.lower())
    if not is_version(value):
        raise ValueError(f"{text!r}: {value!r} is not a version like 12.2 or 535.104.05")
    return Condition(prop, op, value)


def parse_requirement(text: str) -> list[list[Condition]]:
    """Parse an ``NVIDIA_REQUIRE_*`` value: terms separated by spaces are ORed, conditions
    separated by commas within a term are ANDed. Raises ValueError on bad grammar."""
    terms = [[_parse_condition(cond, text) for cond in term.split(",")] for term in text.split()]
    if not terms:
        raise ValueError("empty requirement")
    return terms


def brand_specific(term: Sequence[Condition]) -> bool:
    return any(c.prop == "brand" for c in term)


def term_text(term: Sequence[Condition]) -> str:
    return ",".join(str(c) for c in term)


def env_flag(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "y", "t", "on"}


def requirement_texts(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """The constraints the runtime checks, as (where from, text): NVIDIA_REQUIRE_CUDA first, then
    the other NVIDIA_REQUIRE_* (JETPACK ones are not constraints), then the implicit cuda>=X.Y
    the runtime gives a legacy image (CUDA_VERSION without NVIDIA_REQUIRE_CUDA)."""
    out: list[tuple[str, str]] = []
    names = sorted(
        (n for n in env if n.startswith("NVIDIA_REQUIRE_")),
        key=lambda n: (n != "NVIDIA_REQUIRE_CUDA", n),
    )
    for name in names:
        if name.startswith("NVIDIA_REQUIRE_JETPACK"):
            continue
        value = (env[name] or "").strip()
        if value:
            out.append((name, value))
    legacy = parse_cuda(env.get("CUDA_VERSION", "") or "")
    if legacy and not (env.get("NVIDIA_REQUIRE_CUDA") or "").strip():
        out.insert(0, ("CUDA_VERSION", f"cuda>={legacy[0]}.{legacy[1]}"))
    return out


def image_cuda(env: Mapping[str, str]) -> str:
    """The CUDA toolkit version an image declares: CUDA_VERSION as written ("12.2.2.009"), else
    the highest ``cuda`` floor in NVIDIA_REQUIRE_CUDA ("cuda>=12.8" -> "12.8"); "" for CPU
    builds."""
    declared = (env.get("CUDA_VERSION") or "").strip()
    if declared:
        return declared
    try:
        terms = parse_requirement(env.get("NVIDIA_REQUIRE_CUDA") or "")
    except ValueError:
        return ""
    floors = [
        c.value for term in terms for c in term if c.prop == "cuda" and c.op in (">=", "=", ">")
    ]
    best = ""
    for floor in floors:
        if not best or compare_versions(floor, best) > 0:
            best = floor
    return best
