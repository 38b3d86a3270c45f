"""Attacks on image names (issue 61, finding 2): a student names an image by its id, or by a
prefix of one, to reach what is not theirs, an untagged image of another student's build above
all (Docker reads a name that is no tag as an id's prefix). Against the real kernel service
(root) and engine, the students real accounts outside the docker group.

The mechanism under attack: images/named.py, the one resolver of a user's image names (the
content route, every admission of a name a user gives: a build's bases, a notebook's pin).
Extend this file with every new route or field that takes an image name from a user.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from conftest import DEBIAN_IMAGE, TEST_IMAGE_LABEL, TEST_RUN, kernel_name
from hostusers import BOB, MALLORY, needs_accounts, run_as
from service_process import KernelService, ServiceUser

pytestmark = [needs_accounts, pytest.mark.usefixtures("docker_client")]

USER_A = os.environ.get("JGC_TEST_STUDENT_A") or MALLORY
USER_B = os.environ.get("JGC_TEST_STUDENT_B") or BOB
ABSENT = "jgc-test/never-here:1"


@pytest.fixture
def untagged(docker_client: docker.DockerClient) -> Iterator[Any]:
    """Another student's build step as the engine keeps it: an untagged image holding her
    secret. Removed at the end, whatever happened."""
    dockerfile = f"FROM {DEBIAN_IMAGE}\nRUN echo her-secret-{TEST_RUN} > /secret\n"
    image, _log = docker_client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), labels={TEST_IMAGE_LABEL: TEST_RUN}, rm=True
    )
    assert not image.tags
    yield image
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        docker_client.images.remove(image.id, force=True, noprune=False)


@pytest.fixture
def service() -> Iterator[tuple[KernelService, ServiceUser, ServiceUser]]:
    """A service as the admin guide sets one up for builds (every student may build), with the
    default allow-lists ("*")."""
    made = KernelService(
        {
            "ServiceApp": {"build_policy": "everyone"},
            "ImageSaves": {"extra_labels": {TEST_IMAGE_LABEL: TEST_RUN}, "build_network": False},
        }
    )
    try:
        a = made.add_user(USER_A)
        b = made.add_user(USER_B)
        made.start()
        yield made, a, b
    finally:
        made.close()


def id_names(image_id: str) -> list[str]:
    """Every way an id names an image to the engine: its prefixes of 1 to 12 digits, bare and
    with "sha256:", and the whole id both ways."""
    digits = image_id.removeprefix("sha256:")
    prefixes = [digits[:n] for n in range(1, 13)]
    return [*prefixes, *(f"sha256:{p}" for p in prefixes), digits, image_id]


async def test_the_content_route_resolves_no_id_and_no_prefix(
    service: tuple[KernelService, ServiceUser, ServiceUser],
    untagged: Any,
    docker_client: docker.DockerClient,
) -> None:
    server, _a, b = service
    tagged = docker_client.images.get(DEBIAN_IMAGE)
    # The route works: a tag names its image.
    code, seen = await server.answer(b, "GET", f"gpu-containers/images/content?ref={DEBIAN_IMAGE}")
    assert code == 200 and seen["digest"], seen
    for image in (untagged, tagged):
        for name in id_names(image.id):
            query = f"ref={name}&recorded={name}"
            code, seen = await server.answer(b, "GET", f"gpu-containers/images/content?{query}")
            assert code == 200, (name, seen)
            assert seen["digest"] == "", (name, seen)
            # A stamp records a locally built image's content by its whole id: present only
            # for a tagged image this user sees (nothing the catalog does not show), never a
            # prefix, never an untagged image.
            whole = image is tagged and name == image.id
            assert seen["recorded_present"] is whole, (name, seen)


async def test_a_build_names_no_base_by_id(
    service: tuple[KernelService, ServiceUser, ServiceUser],
    untagged: Any,
    docker_client: docker.DockerClient,
) -> None:
    server, a, _b = service
    tagged = docker_client.images.get(DEBIAN_IMAGE)

    async def build_on(base: str, folder: str) -> tuple[int, Any]:
        run_as(
            a.name,
            "import os, sys\n"
            "d = os.path.join(sys.argv[1], sys.argv[2])\n"
            "os.mkdir(d)\n"
            "open(os.path.join(d, 'Dockerfile'), 'w').write("
            "'FROM ' + sys.argv[3] + '\\nRUN cat /secret\\n')\n",
            str(a.workspace),
            folder,
            base,
        )
        return await server.answer(
            a, "POST", "gpu-containers/builds", {"path": f"{folder}/Dockerfile"}
        )

    code, absent = await build_on(ABSENT, "absent")
    assert code == 404, absent
    digits = untagged.id.removeprefix("sha256:")
    names = [digits[:4], digits[:8], digits[:12], digits, tagged.id.removeprefix("sha256:")[:12]]
    for n, name in enumerate(names):
        code, refused = await build_on(name, f"by-id-{n}")
        # The sentence of an image that is not here, whatever the id names: nothing leaks.
        assert code == 404, (name, refused)
        assert refused["message"] == absent["message"].replace(ABSENT, name), (name, refused)
    code, saves = await server.answer(a, "GET", "gpu-containers/saves")
    assert code == 200 and saves["saves"] == [], saves


async def test_a_pin_names_no_untagged_image(
    service: tuple[KernelService, ServiceUser, ServiceUser],
    docker_client: docker.DockerClient,
) -> None:
    """A notebook's pin (a digest of its kernel's repository) reaches an image only through a
    tagged repository's digest the engine lists: never an id in digest form."""
    server, _a, b = service
    tagged = docker_client.images.get(DEBIAN_IMAGE)
    repository = DEBIAN_IMAGE.rsplit(":", 1)[0]
    pin = f"{repository}@{tagged.id}"
    code, refused = await server.answer(
        b,
        "POST",
        "api/kernels",
        {"name": kernel_name(DEBIAN_IMAGE), "env": {"KERNEL_GPU_CONTAINERS_IMAGE_DIGEST": pin}},
    )
    assert code == 404 and refused["message"].startswith(f"There is no image {pin} here"), refused


def test_the_resolver_reads_only_references_of_tagged_images() -> None:
    """images/named.py's find, pure: a tag, or a digest of a repository the image is tagged in;
    never an id, a prefix, another repository's digest, or the text an engine would complete."""
    from jupyter_gpu_containers.base.records import ImageRecord
    from jupyter_gpu_containers.images.named import find

    def record(image_id: str, tags: list[str], digests: tuple[str, ...] = ()) -> ImageRecord:
        return ImageRecord(image_id, tuple(tags), {}, {}, (), "", "", 0, digests)

    tagged = record(
        "sha256:" + "a" * 64, ["jgc/x:1", "localhost/own:1"], ("jgc/x@sha256:" + "d" * 64,)
    )
    retagged = record("sha256:" + "b" * 64, ["other/y:1"], ("jgc/x@sha256:" + "e" * 64,))
    images = [tagged, retagged]
    found = {
        name: find(images, name)
        for name in [
            "jgc/x:1",
            "docker.io/jgc/x:1",
            "jgc/x@sha256:" + "d" * 64,
            "jgc/x:1@sha256:" + "d" * 64,
            "localhost/own:1",
        ]
    }
    assert all(image is tagged for image in found.values()), found
    for name in [
        "jgc/x",  # :latest, which is no tag here
        "aaaa",
        "a" * 12,
        "a" * 64,
        "sha256:aaaa",
        "sha256:" + "a" * 64,
        "jgc/x@sha256:" + "e" * 64,  # a digest of jgc/x on an image not tagged in jgc/x
        "jgc/x@sha256:aaaa",
        "JGC/X:1",
        "",
    ]:
        assert find(images, name) is None, name
