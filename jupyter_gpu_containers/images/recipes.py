"""What a build from a user's workspace builds: their ``Dockerfile`` parsed into the instructions
the service's own builder runs (images/builder.py), or the instructions made for a
``requirements.txt`` or a save.

There is one parser: no engine ever reads the user's text. What is parsed here is what runs, so
no difference between two readings of one text (a continuation one reads and another does not)
can hide a base, a source or a step from the checks. Every image a Dockerfile names (each
stage's ``FROM``, ``COPY --from``) is checked against the administrator's bases by the caller
(``images_named``) and given to the builder as the id it admitted; and what the builder does not
run is refused here, in a sentence naming the line:

- a reference with a variable in it (``FROM $BASE``, ``--from=$X``): name it outright;
- ``ADD`` of a URL or a git repository: nothing is fetched for a build (a RUN step may, where
  the build's network is on);
- ``ONBUILD``, ``HEALTHCHECK``, ``FROM scratch``, flags on ``RUN`` (BuildKit's mounts, networks,
  security modes), a ``# syntax=`` directive, heredocs, an instruction this builder does not
  know;
- a ``LABEL`` (or ``MAINTAINER``) in this project's namespace: those labels are the service's.

The parser follows Dockerfile's documented rules: parser directives at the very top (``#
escape=``; an unknown one is a comment, and ends them), lines split at "\\n" only (a "\\r"
before it dropped), comment lines and blank lines skipped (inside a continued instruction too),
a line continued when it ends in the escape character followed only by spaces and tabs, JSON and
shell forms, instructions in any case, and variables (``$X``, ``${X}``, ``${X:-d}``,
``${X:+d}``) substituted by :func:`expand` in the instructions where Docker substitutes them, with
the stage's environment as the builder has it then.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ..base import labels as L
from ..base.errors import ContainerKernelError

# A Dockerfile larger than this is not a recipe anyone writes by hand.
MAX_RECIPE_BYTES = 256 * 1024
# Each stage is a container of its own, alive until the build ends, with its own limits: a
# build of more stages than this is refused.
MAX_STAGES = 16
REQUIREMENTS = "requirements.txt"
# The files a build may start from: a Dockerfile (any name starting so: "Dockerfile.gpu") or one
# ending in ".Dockerfile"/".dockerfile", or a requirements.txt.
_DOCKERFILE = re.compile(r"(?:Dockerfile(?:\.[^/]*)?|[^/]+\.[Dd]ockerfile)")
_DIRECTIVE = re.compile(r"#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.*?)[ \t]*$")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?::[A-Za-z0-9_][A-Za-z0-9_.-]*)?")
_URL = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*://|git@)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STAGE = re.compile(r"[a-z][a-z0-9_.-]*")
# Where a build from a requirements.txt puts its folder while pip reads it.
REQUIREMENTS_DIR = "/opt/jupyter-gpu-containers/build"
DEFAULT_SHELL = ("/bin/sh", "-c")

# The instructions the builder runs, and those kept in the image's config; with the flags each
# takes (a flag not listed is refused).
_FLAGS: dict[str, frozenset[str]] = {
    "FROM": frozenset({"platform"}),
    "COPY": frozenset({"from", "chown", "chmod", "link"}),
    "ADD": frozenset({"chown", "chmod", "link"}),
}
_KNOWN = frozenset(
    {
        "FROM",
        "RUN",
        "COPY",
        "ADD",
        "ENV",
        "ARG",
        "LABEL",
        "MAINTAINER",
        "WORKDIR",
        "USER",
        "EXPOSE",
        "VOLUME",
        "CMD",
        "ENTRYPOINT",
        "SHELL",
        "STOPSIGNAL",
    }
)


class RecipeRefused(ContainerKernelError):
    """A Dockerfile this project will not build (400), in a sentence."""

    status = 400


def kind_of(name: str) -> str:
    """ "dockerfile" or "requirements" for a file a build may start from, "" otherwise."""
    if name == REQUIREMENTS:
        return "requirements"
    if _DOCKERFILE.fullmatch(name):
        return "dockerfile"
    return ""


@dataclass(frozen=True)
class Instruction:
    """One instruction of a stage, as parsed: where it starts (1-based), its keyword (upper
    case), its flags (``--name=value``; a flag without "=" has the value ""), and its arguments:
    ``json`` the JSON form's strings (None for the shell form), ``text`` the rest as written
    (the shell form's, variables not yet substituted)."""

    line: int
    keyword: str
    flags: tuple[tuple[str, str], ...] = ()
    json: tuple[str, ...] | None = None
    text: str = ""

    @property
    def where(self) -> str:
        return f"Line {self.line} ({self.keyword})"

    def flag(self, name: str) -> str | None:
        for key, value in self.flags:
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class Stage:
    """A stage: its base (an image reference as written, or an earlier stage's index), its name
    ("" for none), and its instructions."""

    line: int
    base: str  # an image reference ("" when built on an earlier stage)
    base_stage: int | None
    name: str
    instructions: tuple[Instruction, ...]


@dataclass
class Recipe:
    """A parsed Dockerfile: its stages (the last one is the image), the ARGs before the first
    FROM with their defaults, every image it names (``FROM`` and ``COPY --from``, stage names
    left out) and the last stage's base (what the image is built on)."""

    stages: list[Stage] = field(default_factory=list)
    global_args: dict[str, str | None] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)
    final_base: str = ""


@dataclass
class _Raw:
    line: int
    keyword: str
    rest: str


def _lines(text: str) -> list[str]:
    """The file's lines as a Dockerfile's reader splits them: at "\\n" only, a "\\r" before it
    dropped (Python's splitlines also splits at U+2028, "\\x0b" and others: never here)."""
    text = text.removeprefix("\ufeff")
    return [line.removesuffix("\r") for line in text.split("\n")]


def _raw_instructions(text: str) -> list[_Raw]:
    lines = _lines(text)
    escape = "\\"
    index = 0
    seen: set[str] = set()
    # Parser directives: "# name=value" comments before anything else. An unknown one is a
    # comment, and a comment ends the directives: an "# escape=" after it is a comment too.
    while index < len(lines):
        found = _DIRECTIVE.fullmatch(lines[index])
        if not found:
            break
        name, value = found.group(1).lower(), found.group(2)
        if name not in ("escape", "syntax", "check"):
            break
        if name in seen:
            raise RecipeRefused(f"Line {index + 1}: the {name} directive is given twice.")
        seen.add(name)
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
    continued = re.compile(re.escape(escape) + r"[ \t]*$")
    found_instructions: list[_Raw] = []
    current: list[str] = []
    start = 0
    for number in range(index, len(lines)):
        raw = lines[number]
        stripped = raw.strip(" \t")
        # Comment lines and blank lines are skipped, inside a continued instruction too.
        if stripped.startswith("#") or not stripped:
            continue
        if not current:
            start = number + 1
        match = continued.search(raw)
        if match:
            current.append(raw[: match.start()])
            continue
        current.append(raw)
        found_instructions.append(_split("".join(current), start))
        current = []
    if current:
        found_instructions.append(_split("".join(current), start))
    return found_instructions


def _split(joined: str, line: int) -> _Raw:
    joined = joined.strip(" \t")
    parts = re.split(r"[ \t]+", joined, maxsplit=1)
    return _Raw(line, parts[0].upper(), parts[1] if len(parts) > 1 else "")


def _flags(raw: _Raw) -> tuple[tuple[tuple[str, str], ...], str]:
    """The leading ``--name=value`` flags of an instruction, and what follows them."""
    flags: list[tuple[str, str]] = []
    rest = raw.rest
    allowed = _FLAGS.get(raw.keyword, frozenset())
    where = f"Line {raw.line} ({raw.keyword})"
    while rest.startswith("--"):
        parts = re.split(r"[ \t]+", rest, maxsplit=1)
        word, rest = parts[0], parts[1] if len(parts) > 1 else ""
        name, equals, value = word[2:].partition("=")
        name = name.lower()
        if name not in allowed:
            if raw.keyword == "RUN":
                raise RecipeRefused(
                    f"{where}: {word[:40]} is BuildKit's (a mount, a network or a security mode "
                    "of the build's step), which builds here do not run. Remove it."
                )
            raise RecipeRefused(f"{where}: the flag {word[:40]} is not one this builder runs.")
        if not equals and name != "link":
            raise RecipeRefused(f"{where}: the flag --{name} takes a value (--{name}=…).")
        if any(name == seen for seen, _ in flags):
            raise RecipeRefused(f"{where}: the flag --{name} is given twice.")
        flags.append((name, value))
    return tuple(flags), rest


def _json_form(rest: str) -> tuple[str, ...] | None:
    """An instruction's JSON form (a list of strings), None when it is in shell form."""
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def check_dockerfile(text: str) -> Recipe:
    """``text`` as a Recipe, or RecipeRefused naming the line that cannot be built here."""
    if len(text.encode("utf-8")) > MAX_RECIPE_BYTES:
        raise RecipeRefused(
            f"The Dockerfile is larger than {MAX_RECIPE_BYTES // 1024} KiB: not one this server "
            "builds."
        )
    if "\0" in text:
        line = text[: text.index("\0")].count("\n") + 1
        raise RecipeRefused(f"Line {line}: a NUL character cannot be in a Dockerfile.")
    recipe = Recipe()
    names: dict[str, int] = {}  # a stage's name, and its index as a name too
    current: list[Instruction] = []
    head: tuple[int, str, int | None, str] | None = None

    def close_stage() -> None:
        if head is not None:
            recipe.stages.append(Stage(head[0], head[1], head[2], head[3], tuple(current)))

    for raw in _raw_instructions(text):
        where = f"Line {raw.line} ({raw.keyword})"
        if raw.keyword not in _KNOWN:
            raise _unknown(raw, where)
        flags, rest = _flags(raw)
        if raw.keyword == "FROM":
            close_stage()
            if len(recipe.stages) >= MAX_STAGES:
                raise RecipeRefused(
                    f"{where}: a Dockerfile here has at most {MAX_STAGES} stages (each runs in a "
                    "container of its own until the build ends)."
                )
            current = []
            head = _from(raw, where, flags, rest, names, recipe)
            continue
        if head is None:
            if raw.keyword != "ARG":
                raise RecipeRefused(f"{where}: a Dockerfile starts with FROM (or ARG, then FROM).")
            for name, value in _arg(rest, where):
                recipe.global_args[name] = value
            continue
        ins = Instruction(raw.line, raw.keyword, flags, _json_form(rest), rest)
        _check(ins, names, recipe)
        current.append(ins)
    close_stage()
    if not recipe.stages:
        raise RecipeRefused("The Dockerfile has no FROM line: nothing to build on.")
    _check_stage_uses(recipe)
    return recipe


def _check_stage_uses(recipe: Recipe) -> None:
    """A stage another stage is built on goes on in the same container (no image is made of
    it in between): it may be built on once, and not copied from."""
    names = {s.name: i for i, s in enumerate(recipe.stages) if s.name}
    copied: dict[int, int] = {}
    for stage in recipe.stages:
        for ins in stage.instructions:
            source = ins.flag("from")
            if ins.keyword == "COPY" and source is not None:
                index = stage_index(source, names, len(recipe.stages))
                if index is not None:
                    copied.setdefault(index, ins.line)
    built_on: dict[int, int] = {}
    for stage in recipe.stages:
        if stage.base_stage is None:
            continue
        if stage.base_stage in built_on or stage.base_stage in copied:
            line = built_on.get(stage.base_stage) or copied[stage.base_stage]
            raise RecipeRefused(
                f"Line {stage.line} (FROM): the stage it builds on is also used by line {line}; "
                "a build here goes on building in a stage's own container, so a stage may be "
                "built on once and then not copied from. Start the other stage from the image."
            )
        built_on[stage.base_stage] = stage.line


def stage_index(source: str, names: dict[str, int], count: int) -> int | None:
    """The index of the stage ``source`` (a ``--from``) names, None for an image."""
    lowered = source.lower()
    if lowered in names:
        return names[lowered]
    if lowered.isdigit() and int(lowered) < count:
        return int(lowered)
    return None


def _unknown(raw: _Raw, where: str) -> RecipeRefused:
    if raw.keyword == "ONBUILD":
        return RecipeRefused(
            f"{where}: ONBUILD instructions would run, unchecked, in a later build on this "
            "image. Write them as instructions of this Dockerfile instead."
        )
    if raw.keyword == "HEALTHCHECK":
        return RecipeRefused(
            f"{where}: a kernel's image has no use for a health check, and builds here do not "
            "keep one. Remove the line."
        )
    return RecipeRefused(f"{where}: {raw.keyword[:40]} is not an instruction this builder runs.")


def _from(
    raw: _Raw,
    where: str,
    flags: tuple[tuple[str, str], ...],
    rest: str,
    names: dict[str, int],
    recipe: Recipe,
) -> tuple[int, str, int | None, str]:
    words = rest.split()
    if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
        raise RecipeRefused(f"{where}: FROM takes an image and, optionally, 'AS <stage name>'.")
    ref = words[0]
    if "$" in ref or any("$" in value for _, value in flags):
        raise RecipeRefused(
            f"{where}: the image {ref[:200]} is named through a variable; name it outright, so "
            "that it can be checked against the allowed bases."
        )
    if ref.lower() == "scratch":
        raise RecipeRefused(
            f"{where}: FROM scratch builds an image from nothing, which a kernel cannot run on "
            "and a build here cannot step into (its steps run in the stage's image). Start from "
            "one of the allowed bases."
        )
    index = len(recipe.stages)  # the stages before it are closed
    name = ""
    if len(words) == 3:
        name = words[2].lower()
        if not _STAGE.fullmatch(name) or name.isdigit():
            raise RecipeRefused(f"{where}: {words[2][:80]!r} cannot name a stage.")
        if name in names:
            raise RecipeRefused(f"{where}: a stage named {name} is already defined.")
    earlier = names.get(ref.lower())
    if earlier is not None:
        base, base_stage = "", earlier
        # A stage built on an earlier stage is built on that stage's base.
        recipe.final_base = _base_of(recipe, earlier)
    else:
        base, base_stage = ref, None
        recipe.images.append(ref)
        recipe.final_base = ref
    names[str(index)] = index
    if name:
        names[name] = index
    return raw.line, base, base_stage, name


def _base_of(recipe: Recipe, index: int) -> str:
    stage = recipe.stages[index]
    while stage.base_stage is not None:
        stage = recipe.stages[stage.base_stage]
    return stage.base


def _check(ins: Instruction, names: dict[str, int], recipe: Recipe) -> None:
    """Refuse, naming the line, what the builder does not run of ``ins``."""
    where = ins.where
    keyword = ins.keyword
    if keyword in ("COPY", "ADD"):
        source = ins.flag("from")
        if source is not None:
            if "$" in source:
                raise RecipeRefused(
                    f"{where}: --from={source[:200]} is named through a variable; name it outright."
                )
            if not source:
                raise RecipeRefused(f"{where}: --from names a stage or an image.")
            if source.lower() not in names:
                recipe.images.append(source)
        arguments = list(ins.json) if ins.json is not None else ins.text.split()
        if len(arguments) < 2:
            raise RecipeRefused(f"{where}: {keyword} takes at least one source and a destination.")
        if ins.text.lstrip().startswith("<<") or any(a.startswith("<<") for a in arguments):
            raise RecipeRefused(f"{where}: heredocs are BuildKit's; builds here do not run them.")
        for argument in arguments[:-1]:
            if _URL.match(argument):
                raise RecipeRefused(
                    f"{where}: {keyword} of {argument[:200]} would have the builder fetch it from "
                    "this host's network. Download it in a RUN step instead (the build's network "
                    "is the administrator's), or put the file in the build's folder."
                )
        chmod = ins.flag("chmod")
        if chmod is not None and not re.fullmatch(r"[0-7]{3,4}", chmod):
            raise RecipeRefused(f"{where}: --chmod takes an octal mode (--chmod=644).")
    elif keyword == "RUN":
        if not ins.text.strip():
            raise RecipeRefused(f"{where}: RUN needs a command.")
        if ins.text.lstrip().startswith("<<"):
            raise RecipeRefused(f"{where}: heredocs are BuildKit's; builds here do not run them.")
    elif keyword == "SHELL":
        if not ins.json:
            raise RecipeRefused(
                f'{where}: SHELL takes its command in JSON form: ["/bin/sh", "-c"].'
            )
    elif keyword in ("LABEL", "MAINTAINER"):
        for key, _ in label_pairs(ins, {}):
            if key.startswith(L.PREFIX):
                raise RecipeRefused(
                    f"{where}: the label {key[:200]} is in this project's namespace "
                    f"({L.PREFIX}…), whose labels only the service writes. Name it otherwise."
                )
    elif keyword == "ARG":
        _arg(ins.text, where)
    elif keyword in ("ENV",):
        key_values(ins, {})
    elif keyword in ("WORKDIR", "USER", "STOPSIGNAL") and not ins.text.strip():
        raise RecipeRefused(f"{where}: {keyword} needs a value.")


def _arg(rest: str, where: str) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    for word in lex_words(rest, {}, where):
        name, equals, value = word.partition("=")
        if not _NAME.fullmatch(name):
            raise RecipeRefused(f"{where}: {name[:80]!r} cannot name a build argument.")
        found.append((name, value if equals else None))
    if not found:
        raise RecipeRefused(f"{where}: ARG names a build argument.")
    return found


def arguments(ins: Instruction, env: dict[str, str]) -> list[tuple[str, str | None]]:
    """An ARG's names and defaults (None: none), its defaults' variables substituted."""
    return [(n, v) for n, v in _arg_words(ins.text, env, ins.where)]


def _arg_words(rest: str, env: dict[str, str], where: str) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    for word in lex_words(rest, env, where):
        name, equals, value = word.partition("=")
        found.append((name, value if equals else None))
    return found


# ---------------------------------------------------------------- words and variables


def lex_words(text: str, env: dict[str, str], where: str, escape: str = "\\") -> list[str]:
    """``text`` as the words Docker's shell lexer makes of it: split at unquoted spaces and
    tabs, quotes removed, ``escape`` escaping the next character (in double quotes only ``$``,
    ``"`` and itself), and variables substituted from ``env`` (not in single quotes). An unset
    variable is the empty string."""
    words: list[str] = []
    current: list[str] = []
    has_word = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t":
            if has_word:
                words.append("".join(current))
                current, has_word = [], False
            i += 1
            continue
        has_word = True
        if c == escape and i + 1 < n:
            current.append(text[i + 1])
            i += 2
        elif c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise RecipeRefused(f"{where}: a single quote is not closed.")
            current.append(text[i + 1 : end])
            i = end + 1
        elif c == '"':
            i += 1
            while True:
                if i >= n:
                    raise RecipeRefused(f"{where}: a double quote is not closed.")
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c == escape and i + 1 < n and text[i + 1] in ('"', "$", escape):
                    current.append(text[i + 1])
                    i += 2
                elif c == "$":
                    value, i = _variable(text, i, env, where)
                    current.append(value)
                else:
                    current.append(c)
                    i += 1
        elif c == "$":
            value, i = _variable(text, i, env, where)
            current.append(value)
        else:
            current.append(c)
            i += 1
    if has_word:
        words.append("".join(current))
    return words


def expand(word: str, env: dict[str, str], where: str) -> str:
    """One word (a JSON form's element, an instruction's whole text) with its variables
    substituted and its quotes removed, its spaces kept."""
    return " ".join(lex_words(word, env, where)) if word.strip() else word


def substitute(word: str, env: dict[str, str], where: str, escape: str = "\\") -> str:
    """A JSON form's element with its variables substituted, nothing else changed (its quotes
    and spaces are the element's own); ``escape`` before "$" keeps it."""
    out: list[str] = []
    i, n = 0, len(word)
    while i < n:
        c = word[i]
        if c == escape and i + 1 < n and word[i + 1] == "$":
            out.append("$")
            i += 2
        elif c == "$":
            value, i = _variable(word, i, env, where)
            out.append(value)
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _variable(text: str, i: int, env: dict[str, str], where: str) -> tuple[str, int]:
    """The value of the variable at ``text[i]`` ("$"), and where the text goes on."""
    n = len(text)
    if i + 1 >= n:
        return "$", i + 1
    if text[i + 1] == "{":
        end = text.find("}", i + 2)
        if end < 0:
            raise RecipeRefused(f"{where}: a ${{ is not closed.")
        inner = text[i + 2 : end]
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?::([-+])(.*))?", inner, re.DOTALL)
        if not match:
            raise RecipeRefused(
                f"{where}: ${{{inner[:60]}}} is not a substitution this builder makes "
                "(${X}, ${X:-default}, ${X:+alternative})."
            )
        name, op, word = match.group(1), match.group(2), match.group(3) or ""
        value = env.get(name, "")
        if op == "-":
            value = value or expand(word, env, where)
        elif op == "+":
            value = expand(word, env, where) if value else ""
        return value, end + 1
    match = re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[i + 1 :])
    if not match:
        return "$", i + 1
    return env.get(match.group(0), ""), i + 1 + match.end()


def key_values(ins: Instruction, env: dict[str, str]) -> list[tuple[str, str]]:
    """An ENV's (or LABEL's) pairs: ``key=value …`` (quotes removed, variables substituted
    from ``env``, the environment before the instruction), or the old ``key value with
    spaces``."""
    where = ins.where
    text = ins.text.strip()
    first = re.split(r"[ \t]+", text, maxsplit=1)
    if first and "=" not in first[0]:
        if len(first) < 2:
            raise RecipeRefused(f"{where}: {ins.keyword} takes name=value.")
        return [(first[0], expand(first[1], env, where))]
    pairs: list[tuple[str, str]] = []
    for word in lex_words(text, env, where):
        key, equals, value = word.partition("=")
        if not equals or not key:
            raise RecipeRefused(f"{where}: {word[:80]!r} is not name=value.")
        pairs.append((key, value))
    if not pairs:
        raise RecipeRefused(f"{where}: {ins.keyword} takes name=value.")
    return pairs


def label_pairs(ins: Instruction, env: dict[str, str]) -> list[tuple[str, str]]:
    """A LABEL's pairs, or a MAINTAINER's (Docker's "maintainer" label)."""
    if ins.keyword == "MAINTAINER":
        return [("maintainer", expand(ins.text, env, ins.where))]
    return key_values(ins, env)


def command(ins: Instruction) -> tuple[tuple[str, ...] | None, str]:
    """A RUN's, CMD's or ENTRYPOINT's command: its JSON form (an argv, run as it is), or
    (None, its shell form's text, run by the stage's SHELL)."""
    return ins.json, ins.text


# ---------------------------------------------------------------- recipes the service writes


def requirements_recipe(base: str, user: str = "") -> Recipe:
    """The recipe of a build from a ``requirements.txt``: ``base`` (an image id), the folder
    copied in as root's, and pip run there as root (so that a requirement naming a file of the
    folder, a wheel, is found), with whichever Python the image runs kernels with; then the
    image's own ``user`` again. An image's Python that its distribution manages (PEP 668) takes
    the packages too: the image is the user's own. Written as instructions: no text is parsed."""
    # The image's metadata: never more than a user (and group) name or number.
    other = bool(user) and user not in ("root", "0", "0:0") and bool(_USER.fullmatch(user))
    steps: list[Instruction] = []
    if other:
        steps.append(Instruction(2, "USER", text="root"))
    steps.append(Instruction(3, "COPY", json=(".", REQUIREMENTS_DIR), text=""))
    steps.append(
        Instruction(
            4,
            "RUN",
            json=(
                "/bin/sh",
                "-c",
                f"cd {REQUIREMENTS_DIR} "
                "&& if command -v python >/dev/null 2>&1; then py=python; else py=python3; fi "
                "&& PIP_BREAK_SYSTEM_PACKAGES=1 $py -m pip install --no-cache-dir "
                f"-r requirements.txt && cd / && rm -rf {REQUIREMENTS_DIR}",
            ),
        )
    )
    if other:
        steps.append(Instruction(5, "USER", text=user))
    return Recipe(stages=[Stage(1, base, None, "", tuple(steps))], images=[base], final_base=base)


def save_recipe(base: str, packages_dir: str, variable: str) -> Recipe:
    """The recipe of a save: ``base`` (the kernel's image id), the packages (the context's
    ``packages`` folder) copied to ``packages_dir``, and ``variable`` naming them."""
    steps = (
        Instruction(2, "COPY", json=("packages", packages_dir)),
        Instruction(3, "ENV", text=f"{variable}={packages_dir}"),
    )
    return Recipe(stages=[Stage(1, base, None, "", steps)], images=[base], final_base=base)
