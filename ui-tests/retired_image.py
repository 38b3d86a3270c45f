"""An image the administrator retired, for the UI tests (environment.spec.ts): the UI servers'
configuration retires RETIRED (server_config.py), redirecting to the tests' Debian image; this
script makes RETIRED exist (another tag of that image), and on "remove" removes it, as an
administrator removes a retired image. The end of its input removes the tag if it is still there.

Prints {"ref"} once the tag exists, and {"removed": true} after "remove".

    python ui-tests/retired_image.py
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import docker
from server_config import RETIRED_IMAGE, RETIRED_REDIRECT


def say(**what: object) -> None:
    print(json.dumps(what), flush=True)


def remove(client: docker.DockerClient) -> None:
    # Only the tag: the image is the tests' Debian image, which RETIRED_REDIRECT names too.
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.remove(RETIRED_IMAGE, noprune=True)


def main() -> None:
    client = docker.from_env()
    repository, tag = RETIRED_IMAGE.rsplit(":", 1)
    try:
        client.images.get(RETIRED_REDIRECT).tag(repository, tag)
        say(ref=RETIRED_IMAGE)
        for line in sys.stdin:
            if line.strip() == "remove":
                remove(client)
                say(removed=True)
    finally:
        remove(client)


if __name__ == "__main__":
    main()
