"""A build's recipe parsed by the service, the one parse its own builder runs (images/recipes.py):
the images a Dockerfile names, each way past the build's own container refused with the line
named, Docker's documented rules for lines, directives and variables, and the recipes the service
writes itself (issue 61, finding 1: no second parser)."""

from __future__ import annotations

import pytest

from jupyter_gpu_containers.images.recipes import (
    Instruction,
    RecipeRefused,
    check_dockerfile,
    expand,
    key_values,
    kind_of,
    lex_words,
    requirements_recipe,
)


def test_recipe_files_by_name() -> None:
    assert kind_of("Dockerfile") == "dockerfile"
    assert kind_of("Dockerfile.gpu") == "dockerfile"
    assert kind_of("nlp.Dockerfile") == "dockerfile"
    assert kind_of("requirements.txt") == "requirements"
    for other in ("notes.txt", "dockerfile.md", "requirements-dev.txt", "Makefile", ""):
        assert kind_of(other) == "", other


def test_every_image_named_and_the_last_stages_base() -> None:
    recipe = check_dockerfile(
        "# a comment\n"
        "ARG VERSION=1\n"
        "FROM --platform=linux/amd64 jgc/debian-ipykernel:bookworm AS builder\n"
        "RUN echo built > /built\n"
        "\n"
        "from jgc-test/ngc-like:24.05-py3\n"
        "COPY --from=builder /built /built\n"
        "COPY --from=jgc-test/conda-nonroot:latest /etc/hostname /x\n"
        'RUN ["sh", "-c", "echo done"]\n'
    )
    assert recipe.images == [
        "jgc/debian-ipykernel:bookworm",
        "jgc-test/ngc-like:24.05-py3",
        "jgc-test/conda-nonroot:latest",
    ]
    assert recipe.final_base == "jgc-test/ngc-like:24.05-py3"


def test_a_stage_named_after_another_builds_on_that_stage() -> None:
    recipe = check_dockerfile("FROM a/b:1 AS base\nRUN true\nFROM base\nRUN true\n")
    assert recipe.images == ["a/b:1"]
    assert recipe.final_base == "a/b:1"


def test_continued_lines_and_the_escape_directive() -> None:
    recipe = check_dockerfile("FROM \\\n  a/b:1\nRUN echo a \\\n# a comment inside\n  b\n")
    assert recipe.images == ["a/b:1"]
    recipe = check_dockerfile("# escape=`\nFROM a/b:2\nRUN echo `\n  c\n")
    assert recipe.images == ["a/b:2"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("FROM $BASE\n", ["Line 1 (FROM)", "variable"]),
        ("ARG B=a/b:1\nFROM ${B}\n", ["Line 2 (FROM)", "variable"]),
        ("FROM a/b:1\nCOPY --from=$X /a /b\n", ["Line 2 (COPY)", "variable"]),
        ("FROM a/b:1\nADD http://127.0.0.1:8888/api /x\n", ["Line 2 (ADD)", "network"]),
        ('FROM a/b:1\nADD ["https://e.org/f", "/f"]\n', ["Line 2 (ADD)", "network"]),
        ("FROM a/b:1\nADD git@github.com:a/b.git /src\n", ["Line 2 (ADD)"]),
        ("FROM a/b:1\nONBUILD RUN id\n", ["Line 2 (ONBUILD)", "later build"]),
        ("FROM a/b:1\nRUN --mount=type=bind,target=/h id\n", ["Line 2 (RUN)", "BuildKit"]),
        ("FROM a/b:1\nrun --network=host id\n", ["Line 2 (RUN)", "--network=host"]),
        ("# syntax=docker/dockerfile:1\nFROM a/b:1\n", ["Line 1", "syntax"]),
        ("# escape=x\nFROM a/b:1\n", ["Line 1", "escape"]),
        ("RUN id\n", ["Line 1 (RUN)", "starts with FROM"]),
        ("# nothing\n", ["no FROM"]),
        ("FROM a/b:1 b c\n", ["Line 1 (FROM)", "AS"]),
        ("FROM a/b:1\nRUN echo \0\n", ["NUL"]),
    ],
)
def test_what_reaches_past_the_build_is_refused_naming_the_line(
    text: str, words: list[str]
) -> None:
    with pytest.raises(RecipeRefused) as refused:
        check_dockerfile(text)
    assert refused.value.status == 400
    for word in words:
        assert word in refused.value.sentence, refused.value.sentence


def test_a_local_add_is_a_copy() -> None:
    assert check_dockerfile("FROM a/b:1\nADD data.tar.gz /data/\n").images == ["a/b:1"]


def test_a_huge_recipe_is_refused() -> None:
    with pytest.raises(RecipeRefused, match="larger than"):
        check_dockerfile("FROM a/b:1\n" + "RUN true\n" * 40_000)


def test_the_requirements_recipe() -> None:
    recipe = requirements_recipe("sha256:abc", "jovyan")
    (stage,) = recipe.stages
    assert stage.base == "sha256:abc" and recipe.images == ["sha256:abc"]
    keywords = [ins.keyword for ins in stage.instructions]
    assert keywords == ["USER", "COPY", "RUN", "USER"]
    run = stage.instructions[2]
    assert run.json is not None and "pip install --no-cache-dir -r requirements.txt" in run.json[2]
    assert stage.instructions[-1].text == "jovyan"
    # The image's user is metadata of the image: never more than a name.
    other = requirements_recipe("sha256:abc", "x\nRUN id").stages[0].instructions
    assert [ins.keyword for ins in other] == ["COPY", "RUN"]
    assert requirements_recipe("sha256:abc", "root").stages[0].instructions[-1].keyword == "RUN"


def test_a_named_stage_is_also_its_index() -> None:
    recipe = check_dockerfile("FROM a/b:1 AS builder\nRUN true\nFROM c/d:2\nCOPY --from=0 /x /x\n")
    assert recipe.images == ["a/b:1", "c/d:2"]


def test_lines_split_as_a_dockerfile_splits_them() -> None:
    # Only "\n" ends a line ("\r\n" too); U+2028 and a form feed are characters of the line.
    recipe = check_dockerfile("FROM a/b:1\r\nRUN echo x\u2028FROM c/d:2\r\n")
    assert recipe.images == ["a/b:1"]
    assert recipe.stages[0].instructions[0].text == "echo x\u2028FROM c/d:2"
    # An escape followed by spaces and tabs continues; by a no-break space it does not.
    recipe = check_dockerfile("FROM a/b:1\nRUN echo \\ \t\nFROM c/d:2\n")
    assert recipe.images == ["a/b:1"] and len(recipe.stages) == 1
    recipe = check_dockerfile("FROM a/b:1\nRUN echo \\\u00a0\nFROM c/d:2\n")
    assert recipe.images == ["a/b:1", "c/d:2"] and len(recipe.stages) == 2
    # Empty and comment lines inside a continued instruction are skipped.
    recipe = check_dockerfile("FROM a/b:1\nRUN echo a \\\n\n  # c\n  b\n")
    assert recipe.stages[0].instructions[0].text == "echo a   b"


def test_an_unknown_directive_ends_the_directives() -> None:
    # "# escape=`" after it is a comment: the escape stays "\\", and "`" continues nothing.
    recipe = check_dockerfile("# foo=bar\n# escape=`\nFROM a/b:1\nRUN echo `\nFROM c/d:2\n")
    assert recipe.images == ["a/b:1", "c/d:2"]
    with pytest.raises(RecipeRefused, match="twice"):
        check_dockerfile("# escape=`\n# escape=\\\nFROM a/b:1\n")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("FROM scratch\n", ["Line 1 (FROM)", "scratch"]),
        ("FROM a/b:1\nHEALTHCHECK CMD true\n", ["Line 2 (HEALTHCHECK)"]),
        ("FROM a/b:1\nFROBNICATE x\n", ["Line 2 (FROBNICATE)", "not an instruction"]),
        ("FROM a/b:1\nLABEL org.jupyter.gpu-containers.managed=true\n", ["Line 2", "namespace"]),
        ('FROM a/b:1\nLABEL "org.jupyter.gpu-containers.gpus"=x\n', ["Line 2", "namespace"]),
        ("FROM a/b:1\nCOPY --parents a /b\n", ["Line 2 (COPY)", "--parents"]),
        ("FROM a/b:1\nADD --from=x a /b\n", ["Line 2 (ADD)", "--from"]),
        ("FROM a/b:1\nRUN <<EOF\n", ["Line 2 (RUN)", "heredoc"]),
        ("FROM a/b:1\nSHELL /bin/bash -c\n", ["Line 2 (SHELL)", "JSON"]),
        ("FROM a/b:1 AS x\nFROM x\nFROM x\n", ["Line 3 (FROM)", "line 2"]),
        ("FROM a/b:1 AS x\nFROM x\nCOPY --from=x /a /a\n", ["Line 2 (FROM)", "line 3"]),
        ("FROM a/b:1\n" * 17, ["Line 17 (FROM)", "at most 16 stages"]),
    ],
)
def test_what_the_builder_does_not_run_is_refused(text: str, words: list[str]) -> None:
    with pytest.raises(RecipeRefused) as refused:
        check_dockerfile(text)
    for word in words:
        assert word in refused.value.sentence, refused.value.sentence


def test_variables_substituted_as_docker_substitutes_them() -> None:
    env = {"A": "one", "EMPTY": ""}
    assert lex_words("$A ${A} ${B:-two} ${A:+three} ${EMPTY:-four}", env, "w") == [
        "one",
        "one",
        "two",
        "three",
        "four",
    ]
    assert lex_words("'$A' \"$A b\" \\$A", env, "w") == ["$A", "one b", "$A"]
    assert expand("/opt/$A", env, "w") == "/opt/one"
    pairs = key_values(Instruction(1, "ENV", text='X="a b" Y=$A'), env)
    assert pairs == [("X", "a b"), ("Y", "one")]
    assert key_values(Instruction(1, "ENV", text="X a b"), env) == [("X", "a b")]
