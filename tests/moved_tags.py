"""A registry tag whose content moves: pushed with a first content (pulled here), and a second
content built to push over it, for the environment stamp's tests (test_environment_stamp.py,
and behind a kernel service in test_gateway_user.py). Every image is labelled and removed."""

from __future__ import annotations

import contextlib
import io
import secrets
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from conftest import DEBIAN_IMAGE, NGC_IMAGE, TEST_IMAGE_LABEL, TEST_RUN, kernel_container
from registry import PrivateRegistry


def build_marked(client: docker.DockerClient, marker: str) -> str:
    """A kernel-ready image whose /stamp-marker holds ``marker``; its local tag."""
    tag = f"jgc-test/stamp:{marker}"
    dockerfile = (
        f"FROM {DEBIAN_IMAGE}\n"
        f"RUN echo {marker} > /stamp-marker\n"
        f'LABEL {TEST_IMAGE_LABEL}="{TEST_RUN}"\n'
    )
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    return tag


@pytest.fixture
def moving_tag(
    docker_client: docker.DockerClient, private_registry: PrivateRegistry
) -> Iterator[dict[str, Any]]:
    """A registry tag pushed with a first content (pulled here), and a second content ready to
    push over it; every image removed afterwards."""
    first, second = (f"v{secrets.token_hex(4)}" for _ in range(2))
    built = [build_marked(docker_client, m) for m in (first, second)]
    name = f"stamp-{secrets.token_hex(3)}:class"
    ref = private_registry.push(built[0], name)
    docker_client.images.pull(ref, auth_config=private_registry.auth_config)
    first_image = docker_client.images.get(ref)
    try:
        yield {
            "ref": ref,
            "first": first,
            "second": second,
            "second_local": built[1],
            "first_id": first_image.id,
            "first_digest": first_image.attrs["RepoDigests"][0],
            "name": name,
        }
    finally:
        for image in [*built, ref, first_image.id]:
            with contextlib.suppress(docker.errors.APIError):
                docker_client.images.remove(image, force=True)


@pytest.fixture
def course_tag(docker_client: docker.DockerClient) -> Iterator[str]:
    """A course's tag on the tests' GPU build (NGC-like), made before the server starts (its
    first listing has it), as an administrator's `docker tag` makes one; a test moves it with
    another `docker tag`. The tag only is removed after: its images are the tests'."""
    ref = f"jgc-test/course-moved:{TEST_RUN}-{secrets.token_hex(3)}"
    repository, tag = ref.split(":")
    docker_client.images.get(NGC_IMAGE).tag(repository, tag)
    try:
        yield ref
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(ref)


def marker_of(docker_client: docker.DockerClient, kernel_id: str) -> str:
    container = kernel_container(docker_client, kernel_id)
    return str(container.exec_run(["cat", "/stamp-marker"]).output.decode().strip())


@pytest.fixture
def local_moving_tag(docker_client: docker.DockerClient) -> Iterator[dict[str, Any]]:
    """A tag built on this host (no registry: a course image an administrator builds here) with
    a first content, and a second content ready to move the tag to; the first keeps no other
    tag, so once the tag moves only its id reaches it (as `docker build -t` leaves it). Every
    image removed afterwards."""
    first, second = (f"v{secrets.token_hex(4)}" for _ in range(2))
    built = [build_marked(docker_client, m) for m in (first, second)]
    ref = f"jgc-test/stamp-local-{secrets.token_hex(3)}:class"
    first_image = docker_client.images.get(built[0])
    repository, tag = ref.split(":")
    first_image.tag(repository, tag)
    docker_client.images.remove(built[0])  # (the tag only: `ref` still names it)
    try:
        yield {
            "ref": ref,
            "first": first,
            "second": second,
            "second_local": built[1],
            "first_id": first_image.id,
        }
    finally:
        for image in [ref, built[1], first_image.id]:
            with contextlib.suppress(docker.errors.APIError):
                docker_client.images.remove(image, force=True)
