"""A user's own packages, per image, with kernels on the real engine: a notebook's ``%pip
install`` of a wheel the test makes (no index, no network) imports at once, is in the workspace's
folder of the kernel's image, and is still there after a restart and after a switch to another
image and back; the other image's kernels never see it; the panel's route lists it with its image
and resets it, after which the next kernel of the image has the image's own packages only. (The
same behind the kernel service, as a student outside the docker group: test_service.py; without an
engine: test_user_packages_units.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    DEBIAN_IMAGE,
    NGC_IMAGE,
    TEST_IMAGE_LABEL,
    TEST_LABEL,
    TEST_RUN,
    kernel_name,
    write_notebook,
)
from jupyter_server.serverapp import ServerApp
from kernel_io import execute_in, refusal
from tiny_wheel import tiny_wheel
from tornado.httpclient import HTTPClientError

from jupyter_gpu_containers.base import labels as L
from jupyter_gpu_containers.host import packages_archive, user_packages
from jupyter_gpu_containers.host.packages_archive import SAVED_PACKAGES_DIR, SAVED_PACKAGES_ENV
from jupyter_gpu_containers.host.user_packages import packages_key
from jupyter_gpu_containers.images import privateimages
from jupyter_gpu_containers.services import Services, services_for

pytestmark = pytest.mark.usefixtures("docker_client")

IMPORT = (
    "try:\n"
    "    import jgc_tiny\n"
    "    print(jgc_tiny.__file__)\n"
    "except ImportError:\n"
    "    print('absent')\n"
)


async def post(jp_fetch: Any, body: dict[str, Any]) -> Any:
    response = await jp_fetch(
        "gpu-containers", "notebooks", "kernel", method="POST", body=json.dumps(body)
    )
    return json.loads(response.body)


def services() -> Services:
    found = services_for(ServerApp.instance())
    assert found is not None
    return found


async def catalog_rows(jp_fetch: Any) -> list[dict[str, Any]]:
    response = await jp_fetch("gpu-containers", "images", params={"wait": "1"})
    return list(json.loads(response.body)["images"])


async def where_it_imports(jp_ws_fetch: Any, kernel_id: str) -> str:
    result = await execute_in(jp_ws_fetch, kernel_id, IMPORT)
    assert result.status == "ok", result
    return result.stdout.strip()


async def test_a_notebooks_pip_install_is_kept_for_its_image_alone(
    jp_fetch: Any, jp_ws_fetch: Any, jp_root_dir: Path
) -> None:
    wheel = tiny_wheel(jp_root_dir)
    write_notebook(jp_root_dir, "lab.ipynb", gpus=0)
    started = await post(
        jp_fetch, {"path": "lab.ipynb", "kernel_name": kernel_name(NGC_IMAGE), "gpus": 0}
    )
    kernel_id = started["session"]["kernel"]["id"]
    key = packages_key(NGC_IMAGE)
    folder = f"/workspace/.jupyter-gpu-containers/packages/{key}"

    # Installed as a notebook does, and imported in the same kernel at once.
    result = await execute_in(
        jp_ws_fetch,
        kernel_id,
        f"%pip install --no-index --disable-pip-version-check /workspace/{wheel.name}",
        timeout=120,
    )
    # pip names it as it normalises it (jgc-tiny, or jgc_tiny in other versions).
    assert result.status == "ok", result
    assert re.search(r"Successfully installed jgc[-_]tiny-1\.0", result.stdout), result
    assert (await where_it_imports(jp_ws_fetch, kernel_id)).startswith(f"{folder}/lib/python3")
    installed = list((jp_root_dir / folder.removeprefix("/workspace/")).glob("lib/*/site-packages"))
    assert {"jgc_tiny.py", "jgc_tiny-1.0.dist-info"} <= {p.name for p in installed[0].iterdir()}

    # A restart (its memory gone) still has it.
    await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="")
    assert (await where_it_imports(jp_ws_fetch, kernel_id)).startswith(folder)

    # Another image's kernel does not: its folder is its own.
    switched = await post(
        jp_fetch, {"path": "lab.ipynb", "kernel_name": kernel_name(DEBIAN_IMAGE), "gpus": 0}
    )
    other = switched["session"]["kernel"]["id"]
    assert await where_it_imports(jp_ws_fetch, other) == "absent"

    # Back on the first image: there again.
    back = await post(
        jp_fetch, {"path": "lab.ipynb", "kernel_name": kernel_name(NGC_IMAGE), "gpus": 0}
    )
    kernel_id = back["session"]["kernel"]["id"]
    assert (await where_it_imports(jp_ws_fetch, kernel_id)).startswith(folder)

    # The panel's list: each image's folder, named by its image, with what is in it.
    listing = json.loads((await jp_fetch("gpu-containers", "packages")).body)
    folders = {f["key"]: f for f in listing["folders"]}
    assert folders[key]["image"] == NGC_IMAGE and folders[key]["packages"] == 1
    assert folders[key]["bytes"] > 0 and folders[key]["complete"]
    assert folders[packages_key(DEBIAN_IMAGE)]["packages"] == 0  # its kernels installed nothing

    # Reset: the next kernel of the image has the image's own packages only.
    await jp_fetch("gpu-containers", "packages", key, method="DELETE")
    await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="")
    assert await where_it_imports(jp_ws_fetch, kernel_id) == "absent"
    listing = json.loads((await jp_fetch("gpu-containers", "packages")).body)
    # Its start made the folder again, empty.
    assert {f["key"]: f["packages"] for f in listing["folders"]}[key] == 0


async def test_one_measure_or_reset_at_a_time(
    jp_fetch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second measure or reset while one of the same user's is under way is answered 409 at
    once (each walks the workspace on a worker thread); once it ended, the next is served."""
    started, release = threading.Event(), threading.Event()
    measure = user_packages.list_folders

    def held(*args: Any) -> Any:
        started.set()
        release.wait(60)
        return measure(*args)

    monkeypatch.setattr(user_packages, "list_folders", held)
    first = asyncio.ensure_future(jp_fetch("gpu-containers", "packages"))
    try:
        assert await asyncio.to_thread(started.wait, 60)
        key = packages_key(NGC_IMAGE)
        for request in (
            jp_fetch("gpu-containers", "packages"),
            jp_fetch("gpu-containers", "packages", key, method="DELETE"),
        ):
            code, message = await refusal(request)
            assert code == 409 and "already" in message
    finally:
        release.set()
    assert (await first).code == 200
    assert (await jp_fetch("gpu-containers", "packages")).code == 200


SAVES = {"ImageSaves": {"extra_labels": {TEST_IMAGE_LABEL: TEST_RUN}, "max_images_per_user": 1}}


async def start_on(jp_fetch: Any, root: Path, notebook: str, image: str) -> str:
    write_notebook(root, notebook, gpus=0)
    started = await post(jp_fetch, {"path": notebook, "kernel_name": kernel_name(image), "gpus": 0})
    return str(started["session"]["kernel"]["id"])


async def install_tiny(jp_ws_fetch: Any, kernel_id: str, wheel: Path) -> None:
    result = await execute_in(
        jp_ws_fetch,
        kernel_id,
        f"%pip install --no-index --disable-pip-version-check /workspace/{wheel.name}",
        timeout=120,
    )
    assert result.status == "ok" and "Successfully installed" in result.stdout, result


async def save(jp_fetch: Any, kernel_id: str, **body: Any) -> dict[str, Any]:
    response = await jp_fetch(
        "gpu-containers", "kernels", kernel_id, "save", method="POST", body=json.dumps(body)
    )
    assert response.code == 202
    assert response.headers["Location"].endswith(
        f"/gpu-containers/saves/{json.loads(response.body)['id']}"
    )
    return dict(json.loads(response.body))


async def ended(jp_fetch: Any, save_id: str) -> dict[str, Any]:
    """The save once it ended (the server's own wait: no polling)."""
    saves = services().saves
    found = saves.get(save_id)
    assert found is not None
    await asyncio.wait_for(saves.wait(found), 300)
    return dict(json.loads((await jp_fetch("gpu-containers", "saves", save_id)).body))


@pytest.mark.server_config(lambda tmp_path: SAVES)
async def test_a_kernels_environment_saved_as_an_image_is_its_users_alone(
    jp_fetch: Any,
    jp_ws_fetch: Any,
    jp_root_dir: Path,
    docker_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 31, item 3: nothing to save is said at once; a save under way is the user's one
    (a second is refused) and, cancelled, leaves no image and no record; a save ends in an image
    of the kernel's image and the user's packages, with its lineage, in the catalog and the
    kernel specs, private to its user, whose kernels import the packages from the image; the
    user keeps as many as the server allows, and removes only their own."""
    wheel = tiny_wheel(jp_root_dir)
    kernel_id = await start_on(jp_fetch, jp_root_dir, "lab.ipynb", NGC_IMAGE)

    # Nothing installed yet: nothing to save, said at once.
    code, message = await refusal(save(jp_fetch, kernel_id))
    assert code == 409 and "no packages of yours" in message
    code, message = await refusal(save(jp_fetch, kernel_id, name="Not/A Name"))
    assert code == 400 and "cannot name an image" in message

    await install_tiny(jp_ws_fetch, kernel_id, wheel)
    await a_cancel_leaves_nothing(jp_fetch, kernel_id, docker_client, monkeypatch)
    started = await save(jp_fetch, kernel_id, name="tiny-env")
    uid = os.getuid()
    assert started["base"] == NGC_IMAGE and started["state"] in ("queued", "copying", "building")
    assert started["image"].startswith(f"localhost/jupyter-gpu-containers/saved/u{uid}/tiny-env:")
    new = started["image"]
    try:
        done = await ended(jp_fetch, started["id"])
        assert done["state"] == "done", done
        assert done["files"] > 0 and done["bytes"] > 0 and done["image_id"].startswith("sha256:")
        listed = json.loads((await jp_fetch("gpu-containers", "saves")).body)
        # This user's saves: the cancelled one, the one stopped, then this one.
        assert [s["state"] for s in listed["saves"]] == ["cancelled", "error", "done"], listed
        assert listed["saves"][2]["id"] == started["id"] and listed["refusal"] == ""

        # The image: the kernel's image by id, its lineage, the packages as root's.
        image = docker_client.images.get(new)
        base = docker_client.images.get(NGC_IMAGE)
        labels = image.labels
        assert labels[L.SAVED_FROM] == NGC_IMAGE and labels[L.SAVED_FROM_ID] == base.id
        assert labels[TEST_IMAGE_LABEL] == TEST_RUN
        assert f"{SAVED_PACKAGES_ENV}={SAVED_PACKAGES_DIR}" in image.attrs["Config"]["Env"]
        rows = {r["reference"]: r for r in (await catalog_rows(jp_fetch))}
        assert rows[new]["saved_from"]["image"] == NGC_IMAGE
        assert rows[new]["verdict"]["outcome"] == rows[NGC_IMAGE]["verdict"]["outcome"]

        # Its owner's kernel spec, and a kernel on it has the packages from the image itself.
        manager: Any = ServerApp.instance().kernel_spec_manager
        await asyncio.to_thread(manager.refresh)
        specs = json.loads((await jp_fetch("api", "kernelspecs")).body)["kernelspecs"]
        assert kernel_name(new) in specs
        saved_kernel = await start_on(jp_fetch, jp_root_dir, "saved.ipynb", new)
        where = await where_it_imports(jp_ws_fetch, saved_kernel)
        assert where.startswith(f"{SAVED_PACKAGES_DIR}/lib/python3"), where
        result = await execute_in(
            jp_ws_fetch,
            saved_kernel,
            "import os, jgc_tiny; s = os.stat(jgc_tiny.__file__); print(s.st_uid, oct(s.st_mode))",
        )
        # The image's, root's and read-only to others (this server's kernels run as root).
        assert result.stdout.split() == ["0", "0o100644"], result

        # Private to its user: every other user's view of the engine's images leaves it out.
        state = services().state
        images = await asyncio.to_thread(services().backend.list_images_sync)
        mine = privateimages.visible(images, state, [], uid=uid)
        theirs = privateimages.visible(images, state, [], uid=uid + 4242)
        assert any(new in i.tags for i in mine)
        assert not any(new in i.tags for i in theirs)
        assert any(NGC_IMAGE in i.tags for i in theirs)  # the image it came from stays everyone's

        # As many saved images as the server keeps for a user (1 here): the next save is
        # refused until one is removed, which only its user may do.
        code, message = await refusal(save(jp_fetch, kernel_id))
        assert code == 409 and "as many as this server keeps for one user" in message
        for other in (NGC_IMAGE, new.replace(f"/u{uid}/", f"/u{uid + 4242}/")):
            code, message = await refusal(
                jp_fetch("gpu-containers", "saved-images", method="DELETE", params={"image": other})
            )
            assert code == 403 and "not an image you saved" in message
        removal = {"method": "DELETE", "params": {"image": new}}
        code, message = await refusal(jp_fetch("gpu-containers", "saved-images", **removal))
        assert code == 409 and "in use by a kernel" in message
        await jp_fetch("api", "kernels", saved_kernel, method="DELETE")
        removed = await jp_fetch("gpu-containers", "saved-images", **removal)
        assert removed.code == 204
        assert not docker_client.images.list(name=new.rsplit(":", 1)[0])
        assert not [r for r in privateimages.hidden_from(state, uid + 4242).others if r.ref == new]
    finally:
        with contextlib.suppress(Exception):
            docker_client.images.remove(new, force=True)


async def a_cancel_leaves_nothing(
    jp_fetch: Any, kernel_id: str, docker_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a save of the user's is under way a second is refused; cancelled, it leaves no
    image and no private record. The context's writing is held until the cancel (no race)."""
    writing, release = threading.Event(), threading.Event()
    write = packages_archive.write_context

    def held(out: Any, **kwargs: Any) -> None:
        writing.set()
        release.wait(60)
        write(out, **kwargs)

    monkeypatch.setattr(packages_archive, "write_context", held)
    # Two asked for at once: one starts, the other is refused.
    both = await asyncio.gather(
        save(jp_fetch, kernel_id), save(jp_fetch, kernel_id), return_exceptions=True
    )
    [started] = [b for b in both if isinstance(b, dict)]
    [other] = [b for b in both if not isinstance(b, dict)]
    assert isinstance(other, HTTPClientError) and other.code == 409, other
    assert started["image"].split("/")[-1].startswith("ngc-like:")
    try:
        assert await asyncio.to_thread(writing.wait, 60)
        code, message = await refusal(save(jp_fetch, kernel_id))
        assert code == 409 and "still under way" in message
        cancel = asyncio.ensure_future(
            jp_fetch("gpu-containers", "saves", started["id"], method="DELETE")
        )
        underway = services().saves.get(started["id"])
        assert underway is not None

        async def asked() -> None:  # the cancel asked for before the writing goes on
            while not underway.cancel_requested:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(asked(), 60)
        release.set()
        final = json.loads((await cancel).body)
        assert final["state"] == "cancelled", final
        assert not docker_client.images.list(name=started["image"].rsplit(":", 1)[0])
        records = privateimages.hidden_from(services().state, os.getuid() + 4242).others
        assert not [r for r in records if r.ref == started["image"]]

        # A save that takes longer than ImageSaves.timeout is stopped, and says why.
        saves = services().saves
        saves.timeout = 0.5
        writing.clear()
        release.clear()
        slow = await save(jp_fetch, kernel_id)
        underway = saves.get(slow["id"])
        assert underway is not None and await asyncio.to_thread(writing.wait, 60)

        async def expired() -> None:
            while not underway.timed_out:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(expired(), 60)
        release.set()
        await asyncio.wait_for(saves.wait(underway), 60)
        ended = json.loads((await jp_fetch("gpu-containers", "saves", slow["id"])).body)
        assert ended["state"] == "error" and ended["error_status"] == 504, ended
        assert "the most this server gives one, and was stopped" in ended["message"], ended
        assert not docker_client.images.list(name=slow["image"].rsplit(":", 1)[0])
    finally:
        services().saves.timeout = 1800.0
        release.set()
        monkeypatch.undo()
        with contextlib.suppress(Exception):
            docker_client.images.remove(started["image"], force=True)


async def test_a_saved_image_is_removed_though_its_readiness_probe_runs(
    jp_fetch: Any, docker_client: Any
) -> None:
    """A new image is probed at once (a one-shot container of it, seconds long): its user's
    removal right then waits the probe out, rather than calling it "in use by a kernel"."""
    svc = services()
    mine = svc.saves.own_repository(os.getuid())
    ref = f"{mine}/probed-{uuid.uuid4().hex[:8]}:20261129-120000"
    other = f"{mine}/probed-{uuid.uuid4().hex[:8]}:20261129-120001"
    # A probe of it runs its ENTRYPOINT first: a few seconds, then the image's Python.
    dockerfile = f'FROM {DEBIAN_IMAGE}\nENTRYPOINT ["sh", "-c", "sleep 4; exec \\"$@\\"", "--"]\n'
    await asyncio.to_thread(
        docker_client.images.build,
        fileobj=io.BytesIO(dockerfile.encode()),
        tag=ref,
        labels={TEST_IMAGE_LABEL: TEST_RUN},
        rm=True,
    )
    try:
        image = await asyncio.to_thread(svc.backend.inspect_image_sync, ref)
        probing = svc.probe.in_background(image)

        def probe_container() -> bool:
            found = docker_client.containers.list(
                ignore_removed=True, filters={"label": f"{L.PROBE}=true"}
            )
            return any(c.image.id == image.id for c in found)

        for _ in range(100):
            if await asyncio.to_thread(probe_container):
                break
            await asyncio.sleep(0.1)
        assert not probing.done(), "the probe ended before the removal could meet it"
        removed = await jp_fetch(
            "gpu-containers", "saved-images", method="DELETE", params={"image": ref}
        )
        assert removed.code == 204
        assert probing.done()
        assert not docker_client.images.list(name=ref.rsplit(":", 1)[0])

        # Another server's probe of it (every server on the host probes a new image): a
        # container of its, labelled as probes are, that this server cannot wait on by itself.
        await asyncio.to_thread(
            docker_client.images.build,
            fileobj=io.BytesIO(dockerfile.encode()),
            tag=other,
            labels={TEST_IMAGE_LABEL: TEST_RUN},
            rm=True,
        )
        await asyncio.to_thread(
            docker_client.containers.run,
            other,
            entrypoint=["sleep", "4"],
            labels={L.PROBE: "true", TEST_LABEL: TEST_RUN},
            network_mode="none",
            auto_remove=True,
            detach=True,
        )
        removed = await jp_fetch(
            "gpu-containers", "saved-images", method="DELETE", params={"image": other}
        )
        assert removed.code == 204
        assert not docker_client.images.list(name=other.rsplit(":", 1)[0])
    finally:
        for made in (ref, other):
            with contextlib.suppress(Exception):
                docker_client.images.remove(made, force=True)
