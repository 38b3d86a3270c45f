"""A real private registry for the UI tests (start-server.sh runs this beside the server).

Debian's docker-registry with htpasswd auth on 127.0.0.1 (tests/registry.py), holding one small
kernel-ready image. What the tests need is written to <home>/registry.json: the image's reference,
the registry host and the login. On SIGTERM the registry stops and the image, if a test pulled
it, is removed from the engine.

    python ui-tests/private_registry.py <home>
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from registry import start_registry


def main(home: Path) -> None:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    registry = start_registry(home / "registry")
    ref = ""
    try:
        # A local build of its own (registry.py): pytest's pull tests pull the same kind of
        # image, and must see its layers downloaded even when both run on the machine.
        ref = registry.push_test_image("ui/pullable:latest", local="jgc-test/ui-pullable:latest")
        info = {
            "ref": ref,
            "host": registry.host,
            "username": registry.auth_config["username"],
            "password": registry.auth_config["password"],
        }
        path = home / "registry.json"
        path.write_text(json.dumps(info))
        path.chmod(0o600)
        while not stop.wait(1):
            pass
    finally:
        if ref:
            registry.remove_local(ref)
        registry.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
