"""Issue 31, item 4: an image of the user's own built from their workspace, on the real engine: a
Dockerfile (its folder the context, a RUN step's words in the build's log, the lineage's labels
the project's and not the Dockerfile's), a requirements.txt naming a wheel of its folder, a cancel
and a failing step, and each refusal said before anything is built: a path out of the workspace, a
file that is no recipe, a base the administrator does not allow, a base that is not here, a
Dockerfile that reaches past its build, a recipe that is not the user's. (Behind the kernel
service, as a student outside the docker group: test_service.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import DEBIAN_IMAGE, NGC_IMAGE, TEST_IMAGE_LABEL, TEST_RUN, kernel_name
from jupyter_server.serverapp import ServerApp
from kernel_io import refusal
from tiny_wheel import tiny_wheel

from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.images import privateimages
from jupyter_gpu_containers.services import Services, services_for

pytestmark = pytest.mark.usefixtures("docker_client")

BUILDS = {
    "ImageSaves": {
        "extra_labels": {TEST_IMAGE_LABEL: TEST_RUN},
        # Bases: the test images, but not the one without ipykernel; and one that is not here.
        "allowed_bases": ["jgc/*", "jgc-test/ngc-like:*", "jgc-test/absent:*"],
        # Builds here reach no network: the requirements' wheel is in its folder.
        "build_network": False,
    }
}


def services() -> Services:
    found = services_for(ServerApp.instance())
    assert found is not None
    return found


async def build(jp_fetch: Any, **body: Any) -> dict[str, Any]:
    response = await jp_fetch("gpu-containers", "builds", method="POST", body=json.dumps(body))
    assert response.code == 202
    started = dict(json.loads(response.body))
    assert response.headers["Location"].endswith(f"/gpu-containers/saves/{started['id']}")
    assert started["kind"] == "build"
    return started


async def ended(jp_fetch: Any, build_id: str) -> dict[str, Any]:
    """The build once it ended (the server's own wait: no polling)."""
    saves = services().saves
    found = saves.get(build_id)
    assert found is not None
    await asyncio.wait_for(saves.wait(found), 300)
    return dict(json.loads((await jp_fetch("gpu-containers", "saves", build_id)).body))


def write(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


@pytest.mark.server_config(lambda tmp_path: BUILDS)
async def test_a_workspace_dockerfile_builds_an_image_of_its_users_own(
    jp_fetch: Any, jp_root_dir: Path, docker_client: Any
) -> None:
    uid = os.getuid()
    listed = json.loads((await jp_fetch("gpu-containers", "saves")).body)
    assert listed["build_refusal"] == "", listed
    tool = jp_root_dir / "envs" / "tool"
    write(
        tool,
        {
            "Dockerfile": (
                f"FROM {DEBIAN_IMAGE} AS base\n"
                "FROM base\n"
                "COPY hello.txt /opt/hello.txt\n"
                "RUN echo built-step-ran \\\n"
                "  && cp /opt/hello.txt /opt/copied\n"
                'LABEL note="mine"\n'
            ),
            "hello.txt": "hello from the workspace\n",
        },
    )
    # A link in the context is kept as a link: resolved in the image, never on this host.
    (tool / "shadow").symlink_to("/etc/shadow")
    started = await build(jp_fetch, path="envs/tool/Dockerfile")
    new = started["image"]
    assert new.startswith(f"localhost/jupyter-gpu-containers/saved/u{uid}/tool:"), started
    assert started["recipe"] == "envs/tool/Dockerfile" and started["base"] == DEBIAN_IMAGE
    try:
        done = await ended(jp_fetch, started["id"])
        assert done["state"] == "done", done
        assert "built-step-ran" in done["log"] and any("COPY" in line for line in done["log"])
        assert done["message"] == f"Built {new} from envs/tool/Dockerfile on {DEBIAN_IMAGE}."
        image = docker_client.images.get(new)
        # The lineage is the project's (a Dockerfile's label in its namespace is refused:
        # test_what_cannot_be_built_is_said_before_anything_is).
        assert image.labels[L.SAVED_FROM] == DEBIAN_IMAGE
        assert image.labels[L.SAVED_FROM_ID] == docker_client.images.get(DEBIAN_IMAGE).id
        assert image.labels["note"] == "mine" and image.labels[TEST_IMAGE_LABEL] == TEST_RUN
        out = docker_client.containers.run(
            new,
            ["sh", "-c", "cat /opt/copied; readlink /shadow || echo no-link"],
            remove=True,
            labels={TEST_IMAGE_LABEL: TEST_RUN},
        )
        assert out.decode().splitlines() == ["hello from the workspace", "no-link"]
        # Private to its user, as a saved image is.
        state = services().state
        images = await asyncio.to_thread(services().backend.list_images_sync)
        assert any(new in i.tags for i in privateimages.visible(images, state, [], uid=uid))
        theirs = privateimages.visible(images, state, [], uid=uid + 4242)
        assert not any(new in i.tags for i in theirs)
        rows = json.loads((await jp_fetch("gpu-containers", "images", params={"wait": "1"})).body)
        row = {r["reference"]: r for r in rows["images"]}[new]
        assert row["saved_from"]["image"] == DEBIAN_IMAGE
        assert row["saved_from"]["recipe"] == "envs/tool/Dockerfile"
        # Its kernel spec says what it was built on.
        manager: Any = ServerApp.instance().kernel_spec_manager
        await asyncio.to_thread(manager.refresh)
        specs = json.loads((await jp_fetch("api", "kernelspecs")).body)["kernelspecs"]
        shown = specs[kernel_name(new)]["spec"]["display_name"]
        assert shown.endswith(f"(built on {DEBIAN_IMAGE})"), shown
    finally:
        with contextlib.suppress(Exception):
            docker_client.images.remove(new, force=True)


@pytest.mark.server_config(lambda tmp_path: BUILDS)
async def test_a_requirements_txt_installs_into_the_chosen_base(
    jp_fetch: Any, jp_root_dir: Path, docker_client: Any
) -> None:
    folder = jp_root_dir / "reqs"
    folder.mkdir()
    wheel = tiny_wheel(folder)
    write(folder, {"requirements.txt": f"./{wheel.name}\n"})
    code, message = await refusal(build(jp_fetch, path="reqs/requirements.txt"))
    assert code == 400 and "Choose the image" in message
    started = await build(jp_fetch, path="reqs/requirements.txt", base=NGC_IMAGE, name="tiny")
    new = started["image"]
    try:
        done = await ended(jp_fetch, started["id"])
        assert done["state"] == "done", done
        assert any("Successfully installed jgc" in line for line in done["log"]), done["log"]
        out = docker_client.containers.run(
            new,
            ["python3", "-c", "import jgc_tiny; print(jgc_tiny.VERSION)"],
            remove=True,
            labels={TEST_IMAGE_LABEL: TEST_RUN},
        )
        assert out.decode().splitlines()[-1] == "1.0"  # after the NGC-like banner
        # The base's own user again, and no copy of the folder left in the image.
        image = docker_client.images.get(new)
        base = docker_client.images.get(NGC_IMAGE)
        assert image.attrs["Config"]["User"] == base.attrs["Config"]["User"]
        assert image.labels[L.SAVED_FROM] == NGC_IMAGE
    finally:
        with contextlib.suppress(Exception):
            docker_client.images.remove(new, force=True)


@pytest.mark.server_config(lambda tmp_path: BUILDS)
async def test_a_build_cancelled_or_failing_keeps_nothing_and_says_why(
    jp_fetch: Any, jp_root_dir: Path, docker_client: Any
) -> None:
    write(
        jp_root_dir / "slow",
        {"Dockerfile": f"FROM {DEBIAN_IMAGE}\nRUN echo step-started && sleep 300\n"},
    )
    started = await build(jp_fetch, path="slow/Dockerfile")
    underway = services().saves.get(started["id"])
    assert underway is not None

    async def step_started() -> None:
        while "step-started" not in underway.snapshot()["log"]:
            await asyncio.sleep(0.1)

    # A second build of the same user while one is under way: refused.
    code, message = await refusal(build(jp_fetch, path="slow/Dockerfile"))
    assert code == 409 and "still under way" in message
    await asyncio.wait_for(step_started(), 120)
    cancelled = json.loads(
        (await jp_fetch("gpu-containers", "saves", started["id"], method="DELETE")).body
    )
    assert cancelled["state"] == "cancelled", cancelled
    assert "nothing was kept" in cancelled["message"]
    assert not docker_client.images.list(name=started["image"].rsplit(":", 1)[0])
    # The build's stage container went with it, before the cancel was said done.
    step = {"label": f"{L.BUILD}={started['id']}"}
    assert not await asyncio.to_thread(docker_client.containers.list, all=True, filters=step)
    assert not await asyncio.to_thread(docker_client.images.list, filters=step)

    write(
        jp_root_dir / "broken",
        {"Dockerfile": f"FROM {DEBIAN_IMAGE}\nRUN echo about-to-fail && exit 3\n"},
    )
    failing = await build(jp_fetch, path="broken/Dockerfile")
    done = await ended(jp_fetch, failing["id"])
    assert done["state"] == "error" and done["error_status"] > 0, done
    assert "about-to-fail" in done["log"]
    assert "could not build" in done["message"] and "returned a non-zero code: 3" in done["message"]
    assert not docker_client.images.list(name=failing["image"].rsplit(":", 1)[0])


@pytest.mark.server_config(lambda tmp_path: BUILDS)
async def test_what_cannot_be_built_is_said_before_anything_is(
    jp_fetch: Any, jp_root_dir: Path
) -> None:
    recipes = {
        "not-allowed": "FROM jgc-test/no-ipykernel:latest\n",
        "copy-from": f"FROM {DEBIAN_IMAGE}\nCOPY --from=jgc-test/no-ipykernel:latest /x /x\n",
        "absent": "FROM jgc-test/absent:1\n",
        "fetch": f"FROM {DEBIAN_IMAGE}\nADD http://127.0.0.1:1/secret /s\n",
        "variable": "ARG B\nFROM $B\n",
        "label": f"FROM {DEBIAN_IMAGE}\nLABEL {L.MANAGED}=true\n",
    }
    for name, text in recipes.items():
        write(jp_root_dir / name, {"Dockerfile": text})
    expected = {
        "not-allowed": (403, "the bases this server builds on are"),
        "copy-from": (403, "jgc-test/no-ipykernel:latest"),
        "absent": (404, "jgc-test/absent:1"),
        "fetch": (400, "Line 2 (ADD)"),
        "variable": (400, "Line 2 (FROM)"),
        "label": (400, "namespace"),
    }
    for name, (status, words) in expected.items():
        code, message = await refusal(build(jp_fetch, path=f"{name}/Dockerfile"))
        assert (code, words in message) == (status, True), (name, code, message)
    write(jp_root_dir / "notes", {"notes.txt": "x"})
    for path, status, words in (
        ("../etc/Dockerfile", 400, "not a file of your workspace"),
        ("/etc/Dockerfile", 400, "not a file of your workspace"),
        ("notes/notes.txt", 400, "not a recipe this server builds"),
        ("nowhere/Dockerfile", 400, "cannot be opened"),
        ("notes/Dockerfile", 400, "There is no notes/Dockerfile"),
    ):
        code, message = await refusal(build(jp_fetch, path=path))
        assert (code, words in message) == (status, True), (path, code, message)
    code, message = await refusal(build(jp_fetch, path="x/Dockerfile", name="Not A/Name"))
    assert code == 400 and "cannot name an image" in message
    # A Dockerfile reached through a link, or not its user's: refused, never read.
    (jp_root_dir / "linked").mkdir()
    (jp_root_dir / "linked" / "Dockerfile").symlink_to(jp_root_dir / "absent" / "Dockerfile")
    code, message = await refusal(build(jp_fetch, path="linked/Dockerfile"))
    assert code == 400 and "symbolic link is not followed" in message
    theirs = jp_root_dir / "theirs"
    write(theirs, {"Dockerfile": f"FROM {DEBIAN_IMAGE}\n"})
    os.chown(theirs / "Dockerfile", 4242, 4242)
    code, message = await refusal(build(jp_fetch, path="theirs/Dockerfile"))
    assert code == 400 and "is not yours" in message


@pytest.mark.server_config(
    lambda tmp_path: {"ImageSaves": {**BUILDS["ImageSaves"], "builds": False}}
)
async def test_builds_turned_off_are_refused_in_a_sentence(
    jp_fetch: Any, jp_root_dir: Path
) -> None:
    listed = json.loads((await jp_fetch("gpu-containers", "saves")).body)
    assert "Building images from your workspace is turned off" in listed["build_refusal"], listed
    # The option that turned them off is an administrator's to read, and this user is none.
    assert "build_refusal_setting" not in listed, listed
    write(jp_root_dir / "off", {"Dockerfile": f"FROM {DEBIAN_IMAGE}\n"})
    code, message = await refusal(build(jp_fetch, path="off/Dockerfile"))
    assert code == 403 and "turned off" in message
