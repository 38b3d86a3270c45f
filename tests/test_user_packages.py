"""A user's own packages, per image, with kernels on the real engine: a notebook's ``%pip
install`` of a wheel the test makes (no index, no network) imports at once, is in the workspace's
folder of the kernel's image, and is still there after a restart and after a switch to another
image and back; the other image's kernels never see it; the panel's route lists it with its image
and resets it, after which the next kernel of the image has the image's own packages only. (The
same behind the kernel service, as a student outside the docker group: test_service.py; without an
engine: test_user_packages_units.py.)"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import DEBIAN_IMAGE, NGC_IMAGE, kernel_name, write_notebook
from kernel_io import execute_in, refusal
from tiny_wheel import tiny_wheel

from jupyter_gpu_containers.host import user_packages
from jupyter_gpu_containers.host.user_packages import packages_key

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
