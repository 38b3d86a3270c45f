"""Property tests (hypothesis) for the parser of NVIDIA_REQUIRE_* constraints (compat.py).

The value comes from an image's environment, which anyone who can build an image writes. So:

- any text either parses or raises ValueError (the module's one error, which the verdict turns
  into a sentence); never another exception, and never slowly (a deadline per example);
- text made from the grammar (``cuda>=12.2,driver>=535 brand=tesla``, with the runtime's case
  and whitespace freedom) parses to exactly the conditions it was made of, prints back to text
  that parses the same, and means what libnvidia-container means: a requirement holds when any
  space-separated term has all of its comma-separated conditions true;
- the verdict built on it never fails either, whatever the image's environment says.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jupyter_gpu_containers.gpus.inventory import GPU, Inventory
from jupyter_gpu_containers.images import compat
from jupyter_gpu_containers.images.cuda_requirements import Condition, parse_requirement

# Bounded and fast: each example must parse within the deadline, on a slow CI machine too.
FUZZ = settings(
    max_examples=300,
    deadline=200,  # milliseconds
    derandomize=True,  # the same inputs on every run
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

PROPERTIES = ("cuda", "driver", "arch", "brand")
OPERATORS = ("=", "!=", "<", "<=", ">", ">=")
COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
BRANDS = ("tesla", "nvidia", "quadro", "geforce", "titan", "nvidiartx", "unknown", "grid")


def parse_or_value_error(text: str) -> list[list[Condition]] | None:
    """The parse, or None when the parser refused the text with a ValueError (any other
    exception escapes and fails the test)."""
    try:
        terms = parse_requirement(text)
    except ValueError as e:
        assert str(e), "a refusal must say why"
        return None
    # What the parser accepts is well formed: a non-empty OR of non-empty ANDs of known parts.
    assert terms and all(terms)
    for term in terms:
        for c in term:
            assert c.prop in PROPERTIES and c.op in OPERATORS, c
            if c.prop == "brand":
                assert c.op in ("=", "!=") and c.value == c.value.lower() and c.value
            else:
                assert compat.is_version(c.value), c
    return terms


# --------------------------------------------------------------------------- malformed input


@FUZZ
@given(st.text())
@example("")
@example("   ")
@example(",")
@example("cuda>=")
@example("cuda>=12.2,")
@example("cuda>=12.2,,driver>=535")
@example("cuda=>12.2")
@example("cuda>=12..2")
@example("cuda>=12.2.")
@example("cuda>=v12")
@example("brand>=tesla")
@example("brand=tes la")
@example("gpu>=1")
@example(">=12.2")
@example("cuda>=１２.２")  # full-width digits
@example("cuda>=12.2\x00")
@example("cuda>=" + "9" * 5000)  # longer than int() converts by default
def test_any_text_parses_or_raises_value_error(text: str) -> None:
    parse_or_value_error(text)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("cuda>=999999999", True),
        ("cuda>=1234567890", False),  # ten digits: no version part is that long
        ("cuda>=" + "9" * 5000, False),  # and int() would refuse it with another ValueError
        ("cuda>=１２.２", False),  # full-width digits: not what the runtime reads as a version
        ("driver>=٥٣٥", False),  # Arabic-Indic digits, likewise
    ],
)
def test_versions_are_ascii_and_bounded(text: str, ok: bool) -> None:
    assert (parse_or_value_error(text) is not None) == ok


# Text from the grammar's own alphabet reaches past the first refusal far more often.
GRAMMAR_TEXT = st.text(alphabet="cudaDriverARCHbrnt=!<>.,0123456789 \t\n_-", max_size=80)


@FUZZ
@given(GRAMMAR_TEXT)
def test_grammar_like_text_parses_or_raises_value_error(text: str) -> None:
    parse_or_value_error(text)


# --------------------------------------------------------------------------- valid input

VERSIONS = st.lists(st.integers(0, 999), min_size=1, max_size=4).map(
    lambda parts: ".".join(map(str, parts))
)


@st.composite
def conditions(draw: Any) -> tuple[str, Condition]:
    """(how it is written, what it means): property names in any case, as the runtime takes
    them; brand values too, compared in lower case."""
    prop = draw(st.sampled_from(PROPERTIES))
    written_prop = "".join(
        ch.upper() if draw(st.booleans()) else ch for ch in prop
    )  # "cUdA" is "cuda"
    if prop == "brand":
        op = draw(st.sampled_from(("=", "!=")))
        value = draw(st.sampled_from(BRANDS))
        written = "".join(ch.upper() if draw(st.booleans()) else ch for ch in value)
        return f"{written_prop}{op}{written}", Condition(prop, op, value)
    op = draw(st.sampled_from(OPERATORS))
    value = draw(VERSIONS)
    return f"{written_prop}{op}{value}", Condition(prop, op, value)


@st.composite
def requirements(draw: Any) -> tuple[str, list[list[Condition]]]:
    terms = draw(st.lists(st.lists(conditions(), min_size=1, max_size=4), min_size=1, max_size=4))
    spaces = st.text(alphabet=" \t\n", min_size=1, max_size=3)
    text = draw(st.text(alphabet=" \t", max_size=2))  # leading whitespace is allowed
    for i, term in enumerate(terms):
        if i:
            text += draw(spaces)
        text += ",".join(written for written, _ in term)
    return text, [[meant for _, meant in term] for term in terms]


@FUZZ
@given(requirements())
@example(("cuda>=12.2", [[Condition("cuda", ">=", "12.2")]]))
@example(
    (
        "cuda>=11.8 brand=tesla,driver>=470,driver<471",
        [
            [Condition("cuda", ">=", "11.8")],
            [
                Condition("brand", "=", "tesla"),
                Condition("driver", ">=", "470"),
                Condition("driver", "<", "471"),
            ],
        ],
    )
)
def test_requirements_parse_to_what_they_say_and_print_back(
    requirement: tuple[str, list[list[Condition]]],
) -> None:
    text, meant = requirement
    parsed = parse_requirement(text)
    assert parsed == meant
    # Printed back (as verdict reasons quote them), the text parses to the same conditions.
    printed = " ".join(",".join(str(c) for c in term) for term in parsed)
    assert parse_requirement(printed) == parsed


def version_key(text: str) -> tuple[int, ...]:
    """libnvidia-container's version order: numeric parts, trailing zero parts ignored."""
    parts = [int(p) for p in text.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def holds(c: Condition, facts: dict[str, str | None]) -> bool:
    """The reference meaning of one condition on one GPU; unknown arch or brand count as
    satisfied (the runtime checks neither without a GPU that reports them)."""
    have = facts[c.prop]
    if have is None:
        return True
    if c.prop == "brand":
        return COMPARE[c.op](have.lower(), c.value)
    return COMPARE[c.op](version_key(have), version_key(c.value))


@FUZZ
@given(
    requirements(),
    st.fixed_dictionaries(
        {
            "cuda": VERSIONS,
            "driver": VERSIONS,
            "arch": st.none() | VERSIONS,
            "brand": st.none() | st.sampled_from(BRANDS),
        }
    ),
)
def test_requirements_mean_an_or_of_ands(
    requirement: tuple[str, list[list[Condition]]], facts: dict[str, Any]
) -> None:
    text, meant = requirement
    parsed = parse_requirement(text)
    for term in parsed:
        for c in term:
            assert c.holds(**facts) == holds(c, facts), (c, facts)
    expected = any(all(holds(c, facts) for c in term) for term in meant)
    got = any(all(c.holds(**facts) for c in term) for term in parsed)
    assert got == expected


# --------------------------------------------------------------------------- the verdict

HOST = Inventory(
    source="static",
    gpus=(GPU(index="0", uuid="GPU-fuzz-0", name="A100", brand="tesla", compute_capability="8.0"),),
    driver_version="535.104.05",
    cuda_driver_version="12.2",
)
ENV_VALUES = st.one_of(GRAMMAR_TEXT, requirements().map(lambda r: r[0]), st.text(max_size=40))
ENV = st.dictionaries(
    st.sampled_from(
        [
            "NVIDIA_REQUIRE_CUDA",
            "NVIDIA_REQUIRE_DRIVER",
            "NVIDIA_REQUIRE_ARCH",
            "NVIDIA_REQUIRE_JETPACK_HOST_MOUNTS",
            "NVIDIA_DISABLE_REQUIRE",
            "CUDA_VERSION",
            "CUDA_DRIVER_VERSION",
            "NVIDIA_PRODUCT_NAME",
        ]
    ),
    ENV_VALUES,
    max_size=5,
)


@FUZZ
@given(ENV)
@example({"NVIDIA_REQUIRE_CUDA": "cuda>=" + "9" * 5000})
@example({"CUDA_VERSION": "9" * 5000})
@example({"NVIDIA_REQUIRE_CUDA": "arch>=" + "1." * 3000 + "1"})
def test_the_verdict_never_fails_whatever_the_image_declares(env: dict[str, str]) -> None:
    """An image's environment is anyone's text: the catalog and the launch check must answer
    with a verdict, never an exception."""
    result = compat.verdict(env, HOST)
    assert result.outcome in ("native", "compat", "cannot-run", "cpu-only", "no-gpus", "unknown")
    assert result.reason and "\n" not in result.reason


@pytest.mark.parametrize("text", ["cuda>=12.2 " * 2000, ",".join(["driver>=535"] * 5000)])
def test_long_requirements_parse_quickly(text: str) -> None:
    """Thousands of terms or conditions parse (a parser that backtracked would not end before
    the suite's timeout: how fast is for benchmarks, not tests)."""
    assert parse_requirement(text) is not None
