"""A tag made a minute ago, for the UI tests (hub.spec.ts): SOURCE tagged as TARGET on the UI
tests' engine, as an administrator's `docker tag` makes a course image's new name; the end of its
input removes the tag (only the tag: the image is the source's).

Prints {"ref": TARGET} once the tag exists.

    python ui-tests/new_tag.py SOURCE TARGET
"""

from __future__ import annotations

import contextlib
import json
import sys

import docker


def main(source: str, target: str) -> None:
    client = docker.from_env()
    repository, tag = target.rsplit(":", 1)
    try:
        client.images.get(source).tag(repository, tag)
        print(json.dumps({"ref": target}), flush=True)
        for _line in sys.stdin:
            pass
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(target, noprune=True)
        client.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
