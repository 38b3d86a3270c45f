"""What a build from a user's workspace may build: their ``Dockerfile`` read and checked before
the engine sees it, or the Dockerfile made for a ``requirements.txt``.

A Dockerfile is the user's, and the engine runs it with the engine's rights: every image it names
(each stage's ``FROM``, ``COPY --from``) is checked against the administrator's bases by the
caller (``images_named``), and what would reach past the build's own container is refused here,
in a sentence naming the line:

- a reference with a variable in it (``FROM $BASE``): the engine would substitute it after the
  check;
- ``ADD`` of a URL or a git repository: the engine fetches those itself, from the host's network
  (loopback included), whatever the build's network is;
- ``ONBUILD``: instructions run by a later build of whoever builds on the image, unchecked then;
- flags on ``RUN`` (``--mount``, ``--network``, ``--security``) and a ``# syntax=`` directive
  (a builder image of the user's choosing): BuildKit's, which reach past the build container.

The parser follows Dockerfile's own rules: parser directives at the top (``# escape=``), comment
lines, lines continued by the escape character, JSON and shell forms, instructions in any case.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ..base.errors import ContainerKernelError

# A Dockerfile larger than this is not a recipe anyone writes by hand.
MAX_RECIPE_BYTES = 256 * 1024
REQUIREMENTS = "requirements.txt"
# The files a build may start from: a Dockerfile (any name starting so: "Dockerfile.gpu") or one
# ending in ".Dockerfile"/".dockerfile", or a requirements.txt.
_DOCKERFILE = re.compile(r"(?:Dockerfile(?:\.[^/]*)?|[^/]+\.[Dd]ockerfile)")
_DIRECTIVE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.*?)\s*$")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?::[A-Za-z0-9_][A-Za-z0-9_.-]*)?")
_URL = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*://|git@)")


class RecipeRefused(ContainerKernelError):
    """A Dockerfile this project will not give the engine (400), in a sentence."""

    status = 400


def kind_of(name: str) -> str:
    """ "dockerfile" or "requirements" for a file a build may start from, "" otherwise."""
    if name == REQUIREMENTS:
        return "requirements"
    if _DOCKERFILE.fullmatch(name):
        return "dockerfile"
    return ""


@dataclass
class Recipe:
    """A checked Dockerfile: every image it names (``FROM`` and ``COPY --from``, stage names
    left out), and the last stage's base (what the image is built on)."""

    images: list[str] = field(default_factory=list)
    final_base: str = ""


@dataclass
class _Instruction:
    line: int  # 1-based, where it starts
    keyword: str  # upper case
    rest: str


def _instructions(text: str) -> list[_Instruction]:
    lines = text.splitlines()
    escape = "\\"
    index = 0
    # Parser directives: comments of the form "# name=value" before anything else.
    while index < len(lines):
        found = _DIRECTIVE.match(lines[index])
        if not found:
            break
        name, value = found.group(1).lower(), found.group(2)
        if name == "escape":
            if value not in ("\\", "`"):
                raise RecipeRefused(
                    f"Line {index + 1}: the escape directive takes \\ or `, not {value[:20]!r}."
                )
            escape = value
        elif name == "syntax":
            raise RecipeRefused(
                f"Line {index + 1}: a '# syntax=' directive names a builder image of its own, "
                "which builds here do not run. Remove the line."
            )
        index += 1
    found_instructions: list[_Instruction] = []
    current: list[str] = []
    start = 0
    for number in range(index, len(lines)):
        raw = lines[number]
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue  # comments, even inside a continued instruction, and blank lines
        if not current:
            start = number + 1
        body = raw.rstrip()
        if body.endswith(escape):
            current.append(body[: -len(escape)])
            continue
        current.append(body)
        joined = " ".join(part.strip() for part in current).strip()
        current = []
        keyword, _, rest = joined.partition(" ")
        found_instructions.append(_Instruction(start, keyword.upper(), rest.strip()))
    if current:
        joined = " ".join(part.strip() for part in current).strip()
        keyword, _, rest = joined.partition(" ")
        found_instructions.append(_Instruction(start, keyword.upper(), rest.strip()))
    return found_instructions


def _flags(rest: str) -> tuple[dict[str, str], str]:
    """The leading ``--name=value`` flags of an instruction, and what follows them."""
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        name, _, value = word[2:].partition("=")
        flags[name.lower()] = value
        rest = rest.strip()
    return flags, rest


def _arguments(rest: str) -> list[str]:
    """An instruction's arguments: its JSON form, or its words."""
    if rest.startswith("["):
        try:
            value = json.loads(rest)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return rest.split()


def check_dockerfile(text: str) -> Recipe:
    """``text`` as a Recipe, or RecipeRefused naming the line that cannot be built here."""
    if len(text.encode("utf-8")) > MAX_RECIPE_BYTES:
        raise RecipeRefused(
            f"The Dockerfile is larger than {MAX_RECIPE_BYTES // 1024} KiB: not one this server "
            "builds."
        )
    recipe = Recipe()
    stages: list[str] = []
    bases: dict[str, str] = {}
    for ins in _instructions(text):
        where = f"Line {ins.line} ({ins.keyword})"
        if "\0" in ins.rest:
            raise RecipeRefused(f"{where}: a NUL character cannot be in a Dockerfile.")
        if ins.keyword == "FROM":
            _flags_, rest = _flags(ins.rest)
            words = rest.split()
            if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
                raise RecipeRefused(
                    f"{where}: FROM takes an image and, optionally, 'AS <stage name>'."
                )
            ref = words[0]
            if "$" in ref or any("$" in v for v in _flags_.values()):
                raise RecipeRefused(
                    f"{where}: the image {ref[:200]} is named through a variable; name it "
                    "outright, so that it can be checked against the allowed bases."
                )
            # A stage built on an earlier stage is built on that stage's base.
            image = bases.get(ref.lower(), ref)
            if ref.lower() not in bases:
                recipe.images.append(ref)
            recipe.final_base = image
            # A later stage names it by its index, or by its name when it has one.
            bases[str(len(stages))] = image
            stage = words[2].lower() if len(words) == 3 else str(len(stages))
            stages.append(stage)
            bases[stage] = image
        elif not stages and ins.keyword != "ARG":
            raise RecipeRefused(f"{where}: a Dockerfile starts with FROM (or ARG, then FROM).")
        elif ins.keyword in ("COPY", "ADD"):
            flags, rest = _flags(ins.rest)
            source = flags.get("from", "")
            if source:
                if "$" in source:
                    raise RecipeRefused(
                        f"{where}: --from={source[:200]} is named through a variable; name it "
                        "outright."
                    )
                if source.lower() not in bases:
                    recipe.images.append(source)
            if ins.keyword == "ADD":
                for argument in _arguments(rest)[:-1]:
                    if _URL.match(argument):
                        raise RecipeRefused(
                            f"{where}: ADD of {argument[:200]} would have the engine fetch it "
                            "from this host's network. Download it in a RUN step instead (the "
                            "build's network is the administrator's), or put the file in the "
                            "build's folder."
                        )
        elif ins.keyword == "ONBUILD":
            raise RecipeRefused(
                f"{where}: ONBUILD instructions would run, unchecked, in a later build on this "
                "image. Write them as instructions of this Dockerfile instead."
            )
        elif ins.keyword == "RUN" and ins.rest.startswith("--"):
            flag = ins.rest.split()[0][:40]
            raise RecipeRefused(
                f"{where}: {flag} is BuildKit's (a mount, a network or a security mode of the "
                "build's step), which builds here do not run. Remove it."
            )
    if not stages:
        raise RecipeRefused("The Dockerfile has no FROM line: nothing to build on.")
    return recipe


def requirements_dockerfile(base: str, user: str = "") -> str:
    """The Dockerfile of a build from a ``requirements.txt``: ``base`` (an image id), the folder
    copied in as root's, and pip run there as root (so that a requirement naming a file of the
    folder, a wheel, is found), with whichever Python the image runs kernels with; then the
    image's own ``user`` again. An image's Python that its distribution manages (PEP 668) takes
    the packages too: the image is the user's own."""
    # The image's metadata: never more than a user (and group) name or number.
    other = bool(user) and user not in ("root", "0", "0:0") and bool(_USER.fullmatch(user))
    lines = [
        f"FROM {base}",
        *(["USER root"] if other else []),
        "COPY . /opt/jupyter-gpu-containers/build",
        "RUN cd /opt/jupyter-gpu-containers/build "
        "&& if command -v python >/dev/null 2>&1; then py=python; else py=python3; fi "
        "&& PIP_BREAK_SYSTEM_PACKAGES=1 $py -m pip install --no-cache-dir -r requirements.txt "
        "&& cd / && rm -rf /opt/jupyter-gpu-containers/build",
    ]
    if other:
        lines.append(f"USER {user}")
    return "\n".join(lines) + "\n"
