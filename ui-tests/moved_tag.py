"""A registry tag that moves under a notebook, for the UI tests (environment.spec.ts): in the
UI tests' private registry (private_registry.py), a tag pushed with a first content and pulled on
this host; on "move", a second content pushed over it and pulled, as a course's image pushed
again for next term.

Prints one JSON line, {"ref", "first", "second", "first_digest"}, once the first content is
pulled (each content's /stamp-marker holds its marker), and {"moved": true, "tag_digest"} after
"move". The end of its input removes the images it made.

    python ui-tests/moved_tag.py SERVER_HOME

With --local instead, no registry: a course image built on this host, as an administrator
builds one, whose tag moves by a second build here (``docker tag``). Its first content is a GPU
build (it declares CUDA), its second a CPU build: the first's digest is its image id, and the
second leaves it untagged.

    python ui-tests/moved_tag.py --local [REF]

REF: the tag (by default a new name the UI tests' servers offer, "jgc/ui-stamp-local-…:class";
behind the Hub, a tag of the demo's course repository, which the demo offers).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import docker
from registry import PrivateRegistry
from stale_runs import TEST_IMAGE_LABEL

BASE = "jgc/debian-ipykernel:bookworm"


def say(**what: object) -> None:
    print(json.dumps(what), flush=True)


def build(client: docker.DockerClient, marker: str, cuda: str = "") -> str:
    tag = f"jgc-test/ui-stamp:{marker}"
    run = os.environ.get("JGC_TEST_RUN", "ui")
    dockerfile = f"FROM {BASE}\nRUN echo {marker} > /stamp-marker\nLABEL {TEST_IMAGE_LABEL}={run}\n"
    if cuda:
        dockerfile += f"ENV CUDA_VERSION={cuda}\n"
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    return tag


def main_local(ref: str) -> None:
    client = docker.from_env()
    made: list[str] = []
    try:
        first, second = (f"v{secrets.token_hex(4)}" for _ in range(2))
        made += [build(client, first, cuda="12.2.2"), build(client, second)]
        repository, tag = ref.rsplit(":", 1)
        image = client.images.get(made[0])
        image.tag(repository, tag)
        client.images.remove(made.pop(0))  # (the tag only: only `ref` names it now)
        made += [ref, image.id]
        say(ref=ref, first=first, second=second, first_digest=image.id)
        for line in sys.stdin:
            if line.strip() == "move":
                now = client.images.get(made[0])
                now.tag(repository, tag)
                say(moved=True, tag_digest=now.id)
    finally:
        for name in made:
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(name, force=True)
        client.close()


def main(home: Path) -> None:
    info = json.loads((home / "registry.json").read_text())
    registry = PrivateRegistry(info["host"], info["username"], info["password"])
    client = docker.from_env()
    made: list[str] = []
    try:
        first, second = (f"v{secrets.token_hex(4)}" for _ in range(2))
        made += [build(client, first), build(client, second)]
        name = f"ui/stamp-{secrets.token_hex(3)}:class"
        ref = registry.push(made[0], name)
        made.append(ref)
        client.images.pull(ref, auth_config=registry.auth_config)
        pulled = client.images.get(ref)
        made.append(pulled.id)
        say(ref=ref, first=first, second=second, first_digest=pulled.attrs["RepoDigests"][0])
        for line in sys.stdin:
            if line.strip() == "move":
                registry.push(made[1], name)
                client.images.pull(ref, auth_config=registry.auth_config)
                now = client.images.get(ref)
                made.append(now.id)
                say(moved=True, tag_digest=now.attrs["RepoDigests"][0])
    finally:
        for image in made:
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(image, force=True)
        client.close()


if __name__ == "__main__":
    if sys.argv[1] == "--local":
        # By default a name the UI tests' servers offer as a kernel (server_config.py's "jgc/*").
        main_local(
            sys.argv[2] if len(sys.argv) > 2 else f"jgc/ui-stamp-local-{secrets.token_hex(3)}:class"
        )
    else:
        main(Path(sys.argv[1]))
