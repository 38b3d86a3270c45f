"""A build's recipe read and checked before the engine sees it (images/recipes.py): the images a
Dockerfile names, and each way past the build's own container refused with the line named."""

from __future__ import annotations

import pytest

from jupyter_gpu_containers.images.recipes import (
    RecipeRefused,
    check_dockerfile,
    kind_of,
    requirements_dockerfile,
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


def test_the_requirements_dockerfile() -> None:
    text = requirements_dockerfile("sha256:abc", "jovyan")
    lines = text.splitlines()
    assert lines[0] == "FROM sha256:abc"
    assert "pip install --no-cache-dir -r requirements.txt" in text
    assert lines[-1] == "USER jovyan"
    # The image's user is metadata of the image: never more than a name.
    assert "USER" not in requirements_dockerfile("sha256:abc", "x\nRUN id")
    assert requirements_dockerfile("sha256:abc", "root").splitlines()[-1].startswith("RUN ")
    # What it makes passes its own check.
    assert check_dockerfile(text).images == ["sha256:abc"]


def test_a_named_stage_is_also_its_index() -> None:
    recipe = check_dockerfile("FROM a/b:1 AS builder\nRUN true\nFROM c/d:2\nCOPY --from=0 /x /x\n")
    assert recipe.images == ["a/b:1", "c/d:2"]
