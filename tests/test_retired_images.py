"""Images the administrator retires (issue 31, item 5): ImageCatalog.deprecated_images, a message
and a redirect per image; the catalog and the kernel specs say so (the Launcher hides a retired
image's spec, the panel offers nothing new on it), and a notebook whose image is retired, or no
longer here, is told, with the move its page offers (labextension/src/retired.ts).

Pure parts, then a real server on the real engine (behind the kernel service:
test_gateway_user.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    CONDA_IMAGE,
    DEBIAN_IMAGE,
    NGC_IMAGE,
    kernel_name,
    write_notebook,
    write_notebook_on,
)
from test_environment_stamp import notebook_view, start, wait_for_spec

from jupyter_gpu_containers.base.records import ImageRecord
from jupyter_gpu_containers.gpus.inventory import Inventory
from jupyter_gpu_containers.images.catalog import (
    RETIREMENT_MESSAGE_MAX,
    CatalogInputs,
    ImageCatalog,
    Retirement,
    catalog_rows,
    retirements,
)
from jupyter_gpu_containers.kernel.kernelspecs import kernel_spec_dict
from jupyter_gpu_containers.policy.admin_policy import ContainerPolicy

# ---------------------------------------------------------------------------- pure parts


def test_retirements_read_the_admins_words_and_follow_redirects() -> None:
    found, problems = retirements(
        {
            "course/pytorch:2023": {"message": "Moved.", "redirect": "course/pytorch:2024"},
            "course/pytorch:2024": {"message": "Moved again.", "redirect": "course/pytorch:2025"},
            "ubuntu": "Use the course image.\n  It has  everything.",
            "a:1": {"redirect": "b:1"},
            "b:1": {"redirect": "a:1"},
            "bad:1": {"messages": "typo"},
            "worse:1": 3,
        }
    )
    # A redirect that is retired itself is followed to the first that is not.
    assert found["course/pytorch:2023"] == Retirement("Moved.", "course/pytorch:2025")
    assert found["course/pytorch:2024"] == Retirement("Moved again.", "course/pytorch:2025")
    # A reference alone is normalized as the catalog's are; a message's whitespace is one space.
    assert found["ubuntu:latest"] == Retirement("Use the course image. It has everything.", "")
    # A cycle redirects nowhere, and says so.
    assert found["a:1"] == Retirement("", "") and found["b:1"] == Retirement("", "")
    assert "bad:1" not in found and "worse:1" not in found
    assert len(problems) == 4, problems
    assert any("come back to" in p for p in problems)
    assert any("'bad:1'" in p and "is ignored" in p for p in problems)
    long = retirements({"x:1": "m" * 5000})[0]["x:1"]
    assert len(long.message) == RETIREMENT_MESSAGE_MAX


def test_the_catalog_and_a_kernel_spec_say_an_image_is_retired() -> None:
    catalog = ImageCatalog(
        deprecated_images={"jgc/old": {"message": "Use new.", "redirect": "jgc/new:1"}}
    )
    assert catalog.retirement("jgc/old:latest") == Retirement("Use new.", "jgc/new:1")
    assert catalog.retirement("jgc/new:1") is None
    retired = catalog.retirement("jgc/old")
    spec = kernel_spec_dict("jgc/old:latest", None, retired=retired)
    assert spec["metadata"]["gpu_containers"]["retired"] == {
        "message": "Use new.",
        "redirect": "jgc/new:1",
    }
    assert "retired" not in kernel_spec_dict("jgc/new:1", None)["metadata"]["gpu_containers"]

    image = ImageRecord(
        id="sha256:" + "1" * 64,
        tags=("jgc/old:latest", "jgc/new:1"),
        labels={},
        env={},
        entrypoint=(),
        user="",
        created="",
        size=1,
    )
    rows = catalog_rows(
        CatalogInputs(
            images=[image],
            listed=ImageCatalog(listed_images=["jgc/gone:1"]).listed(),
            inventory=Inventory("none"),
            probes={},
            policy=ContainerPolicy(),
            kernel_names={},
            retired=ImageCatalog(
                deprecated_images={"jgc/old": "Use new.", "jgc/gone:1": "Gone."}
            ).retired(),
        )
    )
    said = {row["reference"]: row["retired"] for row in rows}
    assert said == {
        "jgc/old:latest": {"message": "Use new.", "redirect": ""},
        "jgc/new:1": None,
        "jgc/gone:1": {"message": "Gone.", "redirect": ""},
    }


# ---------------------------------------------------------------------------- a real server

GONE = "jgc-test/retired-gone:2023"  # never on this host
GONE_UNSAID = "jgc-test/retired-unsaid:2023"  # neither here nor retired
RETIRED = {
    NGC_IMAGE: {"message": "The course moved to Debian.", "redirect": DEBIAN_IMAGE},
    GONE: {"message": "Gone since March.", "redirect": DEBIAN_IMAGE},
    CONDA_IMAGE: "Retired, with nowhere to go.",
}


@pytest.mark.server_config(lambda tmp_path: {"ImageCatalog": {"deprecated_images": RETIRED}})
async def test_a_retired_or_removed_image_is_said_with_its_move(
    jp_fetch: Any, jp_root_dir: Path
) -> None:
    ngc, debian = kernel_name(NGC_IMAGE), kernel_name(DEBIAN_IMAGE)
    await wait_for_spec(jp_fetch, ngc)
    await wait_for_spec(jp_fetch, debian)
    specs = json.loads((await jp_fetch("api", "kernelspecs")).body)["kernelspecs"]
    # The Launcher reads the retirement in the spec (and hides its card); the spec stays.
    assert specs[ngc]["spec"]["metadata"]["gpu_containers"]["retired"] == {
        "message": "The course moved to Debian.",
        "redirect": DEBIAN_IMAGE,
    }
    assert "retired" not in specs[debian]["spec"]["metadata"]["gpu_containers"]
    catalog = json.loads((await jp_fetch("gpu-containers", "images")).body)["images"]
    rows = {row["reference"]: row for row in catalog}
    assert rows[NGC_IMAGE]["retired"]["redirect"] == DEBIAN_IMAGE
    assert rows[DEBIAN_IMAGE]["retired"] is None

    # A notebook on the retired image: told, with the redirect's kernel spec here.
    write_notebook_on(jp_root_dir, "old.ipynb", NGC_IMAGE)
    view = await notebook_view(jp_fetch, "old.ipynb")
    assert view["retired"] == {
        "state": "retired",
        "image": NGC_IMAGE,
        "message": "The course moved to Debian.",
        "redirect": DEBIAN_IMAGE,
        "redirect_kernel_name": debian,
    }
    # Until the reader moves it, it runs where it asks.
    session = await start(jp_fetch, "old.ipynb", NGC_IMAGE)
    assert session["kernel"]["name"] == ngc
    await jp_fetch("api", "sessions", session["id"], method="DELETE")

    # A notebook whose image is gone: the image is the one its stamp recorded, and the
    # administrator's word on it is offered all the same.
    write_notebook_on(jp_root_dir, "gone.ipynb", GONE, recorded="sha256:" + "ab" * 32)
    view = await notebook_view(jp_fetch, "gone.ipynb")
    assert view["retired"] == {
        "state": "removed",
        "image": GONE,
        "message": "Gone since March.",
        "redirect": DEBIAN_IMAGE,
        "redirect_kernel_name": debian,
    }
    # Gone, and nobody said anything of it: told, with no move to offer.
    write_notebook_on(jp_root_dir, "unsaid.ipynb", GONE_UNSAID, recorded="sha256:" + "cd" * 32)
    view = await notebook_view(jp_fetch, "unsaid.ipynb")
    assert view["retired"] == {
        "state": "removed",
        "image": GONE_UNSAID,
        "message": "",
        "redirect": "",
        "redirect_kernel_name": "",
    }
    # Retired with nowhere to go.
    write_notebook_on(jp_root_dir, "conda.ipynb", CONDA_IMAGE)
    await wait_for_spec(jp_fetch, kernel_name(CONDA_IMAGE))
    view = await notebook_view(jp_fetch, "conda.ipynb")
    assert view["retired"]["message"] == "Retired, with nowhere to go."
    assert (view["retired"]["redirect"], view["retired"]["redirect_kernel_name"]) == ("", "")

    # Nothing to say: an image that is not retired, a host kernel, an image's spec gone that no
    # stamp recorded (nothing names its image) or whose stamp is of another image's kernel (the
    # notebook was switched since), a notebook without a kernel spec.
    write_notebook_on(jp_root_dir, "new.ipynb", DEBIAN_IMAGE)
    write_notebook(jp_root_dir, "host.ipynb", kernelspec={"name": "python3", "display_name": "p"})
    write_notebook_on(jp_root_dir, "nameless.ipynb", GONE)
    switched = write_notebook_on(jp_root_dir, "switched.ipynb", DEBIAN_IMAGE, "sha256:" + "ef" * 32)
    notebook = json.loads(switched.read_text())
    notebook["metadata"]["kernelspec"]["name"] = kernel_name(GONE)
    switched.write_text(json.dumps(notebook))
    write_notebook(jp_root_dir, "bare.ipynb")
    for path in ("new.ipynb", "host.ipynb", "nameless.ipynb", "switched.ipynb", "bare.ipynb"):
        assert (await notebook_view(jp_fetch, path))["retired"] is None, path

    # What an image is now, as a kernel service answers a user's server about it.
    reply = await jp_fetch("gpu-containers", "images", "content", params={"ref": GONE})
    content = json.loads(reply.body)
    assert content["digest"] == "" and content["retired"] == {
        "message": "Gone since March.",
        "redirect": DEBIAN_IMAGE,
    }
    assert json.loads((await jp_fetch("api", "kernels")).body) == []
