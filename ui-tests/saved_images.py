"""The images a UI test saves from a kernel's view (packages.spec.ts), removed when the test ends:
every image of this run (the UI servers label their saves with it, server_config.py) under the
saved images' repository. Prints {"ready": true} at once; the end of its input removes them.

    python ui-tests/saved_images.py
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import docker
from server_config import SAVED_REPOSITORY
from stale_runs import TEST_IMAGE_LABEL


def main() -> None:
    client = docker.from_env()
    run = os.environ["JGC_TEST_RUN"]
    print(json.dumps({"ready": True}), flush=True)
    try:
        for _line in sys.stdin:
            pass
    finally:
        for image in client.images.list(filters={"label": f"{TEST_IMAGE_LABEL}={run}"}):
            for tag in image.tags:
                if tag.startswith(f"{SAVED_REPOSITORY}/"):
                    with contextlib.suppress(docker.errors.APIError):
                        client.images.remove(tag, force=True)
        client.close()


if __name__ == "__main__":
    main()
