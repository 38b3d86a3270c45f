"""A real private registry for tests: Debian's `docker-registry` (distribution 2.8), htpasswd auth.

It listens on 127.0.0.1, which the engine treats as an insecure (plain HTTP) registry by default
(`docker info` lists 127.0.0.0/8 under "Insecure Registries"), so no TLS and no daemon config.
Pushes pass credentials per request (X-Registry-Auth via docker-py's auth_config): nothing is
written to ~/.docker and `docker login` is never run.

The password has a distinctive form ("pw-<hex>") so tests can grep logs and messages for it.
"""

from __future__ import annotations

import atexit
import io
import os
import secrets
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.utils import parse_repository_tag

TEST_IMAGE = "jgc-test/pullable:latest"
TEST_IMAGE_BASE = "jgc/debian-ipykernel:bookworm"
# Three layers of incompressible data (fixed seeds), so a pull shows per-layer Downloading and
# Extracting progress with a real total. The file bytes are the same on every build; the layer
# digests are not (file mtimes), so a fresh build never matches layers some earlier pull left.
TEST_IMAGE_LAYER_MB = (2, 3, 4)
# Two large layers, for pulls that must still be running when a test cancels them.
BIG_TEST_IMAGE = "jgc-test/pullable-big:latest"
BIG_TEST_IMAGE_LAYER_MB = (160, 160)


def test_image_dockerfile(layers_mb: tuple[int, ...], tag: str) -> str:
    # The tag first: builds for two tags never share the build cache's layers.
    return (
        f"FROM {TEST_IMAGE_BASE}\n"
        + f'LABEL org.jupyter.gpu-containers.test-image-tag="{tag}"\n'
        + "".join(
            f'RUN python3 -c "import random; r = random.Random({i}); '
            f"open('/opt/pullable-{i}.bin', 'wb').write(r.randbytes({mb} * 2**20))\"\n"
            for i, mb in enumerate(layers_mb)
        )
        + 'LABEL org.jupyter.gpu-containers.test-image="pullable"\n'
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _split(name: str) -> tuple[str, str]:
    repo, tag = parse_repository_tag(name)
    return repo, tag or "latest"


@dataclass
class PrivateRegistry:
    host: str  # "127.0.0.1:<port>"
    username: str
    password: str
    workdir: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}

    @property
    def log_path(self) -> Path | None:
        return self.workdir / "registry.log" if self.workdir else None

    def ref(self, name: str) -> str:
        """ "127.0.0.1:<port>/<name>" (name may carry a tag)."""
        return f"{self.host}/{name}"

    def _api(self) -> docker.APIClient:
        return docker.APIClient(**docker.utils.kwargs_from_env())

    def push(self, local_ref: str, name: str) -> str:
        """Push a local image as host/name with per-request credentials; return that ref.

        The registry tag is removed locally afterwards. Note that this alone does not make a later
        pull download anything: while local_ref still holds the same image, the engine finds the
        image config locally and skips every layer (see push_test_image).
        """
        repo, tag = _split(self.ref(name))
        target = f"{repo}:{tag}"
        api = self._api()
        try:
            api.tag(local_ref, repo, tag)
            try:
                for item in api.push(
                    repo, tag=tag, stream=True, decode=True, auth_config=self.auth_config
                ):
                    if "error" in item:
                        raise RuntimeError(f"push of {target} failed: {item['error']}")
            finally:
                self._remove(api, target)
        finally:
            api.close()
        return target

    def push_test_image(
        self, name: str = "pullable:latest", big: bool = False, local: str = ""
    ) -> str:
        """Push the small test image (TEST_IMAGE) as host/name; return the registry ref.

        Built from TEST_IMAGE_BASE plus three small random-data layers (2, 3, 4 MiB), only when
        the tag is missing. After the push the local TEST_IMAGE is removed too: while any local
        image holds the same image config, the engine's pull fetches the manifest and skips every
        layer. Without it, a pull of the returned ref downloads and extracts the three layers for
        real (the base layer reports "Already exists"). The next call rebuilds it (about a second).
        ``big``: two 160 MiB layers instead (BIG_TEST_IMAGE), for pulls slow enough to cancel.
        ``local``: the local build's tag instead of TEST_IMAGE, for a user of its own (the UI
        tests' registry): a build of its own has layers of its own, so that what one pulled and
        keeps never makes the other's pull skip its layers.
        """
        local = local or (BIG_TEST_IMAGE if big else TEST_IMAGE)
        layers = BIG_TEST_IMAGE_LAYER_MB if big else TEST_IMAGE_LAYER_MB
        for attempt in range(3):
            build_test_image(local, layers)
            try:
                target = self.push(local, name)
                break
            except docker.errors.ImageNotFound:
                # Another run removed TEST_IMAGE between our build and our tag: build again.
                if attempt == 2:
                    raise
        self.remove_local(local)
        return target

    def remove_local(self, ref: str) -> None:
        """Remove a local tag (and the image, when that was its last tag); absent is fine."""
        api = self._api()
        try:
            self._remove(api, ref)
        finally:
            api.close()

    @staticmethod
    def _remove(api: docker.APIClient, ref: str) -> None:
        try:
            api.remove_image(ref)
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as e:
            # In use by a container, or removed concurrently: leave it, tests clean containers.
            if e.status_code not in (404, 409):
                raise

    def remove_local_tags(self) -> None:
        """Remove every local tag of this registry's images: a test's own ``remove_local`` is
        refused while a kernel container still uses the image, and the registry's port is never
        used again, so nothing else would ever remove them."""
        api = self._api()
        try:
            for image in api.images():
                for tag in image.get("RepoTags") or []:
                    if tag.startswith(f"{self.host}/"):
                        self._remove(api, tag)
        finally:
            api.close()

    def __enter__(self) -> PrivateRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the registry process this object started (by its pid, nothing else)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def build_test_image(
    tag: str = TEST_IMAGE, layers_mb: tuple[int, ...] = TEST_IMAGE_LAYER_MB
) -> str:
    """Build a pullable test image unless it exists; return its ref."""
    api = docker.APIClient(**docker.utils.kwargs_from_env())
    try:
        try:
            api.inspect_image(tag)
            return tag
        except docker.errors.ImageNotFound:
            pass
        context = io.BytesIO()
        with tarfile.open(fileobj=context, mode="w") as tar:
            data = test_image_dockerfile(layers_mb, tag).encode()
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        context.seek(0)
        log = []
        for item in api.build(fileobj=context, custom_context=True, tag=tag, rm=True, decode=True):
            log.append(item.get("stream") or item.get("status") or "")
            if "error" in item:
                raise RuntimeError(f"build of {tag} failed: {item['error']}\n{''.join(log)}")
        return tag
    finally:
        api.close()


def _wait_until_up(reg: PrivateRegistry, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            urllib.request.urlopen(f"http://{reg.host}/v2/", timeout=2).close()
            last = "200 without credentials: auth is not on"
        except urllib.error.HTTPError as e:
            if e.code == 401:
                return
            last = e
        except OSError as e:
            last = e
        time.sleep(0.1)
    log = reg.log_path.read_text(errors="replace")[-3000:] if reg.log_path else ""
    raise RuntimeError(
        f"docker-registry on {reg.host} did not answer 401 on /v2/ "
        f"(exit code {proc.poll()}, last: {last}); its log:\n{log}"
    )


def start_registry(workdir: Path, timeout: float = 30) -> PrivateRegistry:
    """Start `docker-registry serve` under workdir, listening on 127.0.0.1:<free port>.

    Waits until GET /v2/ answers 401. Stop it with .stop(), or use the result as a context manager;
    it is stopped at interpreter exit too. Its log is workdir/registry.log, its blobs
    workdir/storage.
    """
    exe = shutil.which("docker-registry")
    htpasswd = shutil.which("htpasswd")
    if not exe or not htpasswd:
        raise RuntimeError(
            "docker-registry and htpasswd are needed (Debian: docker-registry, apache2-utils)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    username = f"user-{secrets.token_hex(4)}"
    password = f"pw-{secrets.token_hex(12)}"
    # -i: the password from stdin, not argv, so it never shows in a process list.
    subprocess.run(
        [htpasswd, "-Bic", str(workdir / "htpasswd"), username],
        input=password.encode(),
        check=True,
        capture_output=True,
    )
    port = _free_port()
    host = f"127.0.0.1:{port}"
    (workdir / "storage").mkdir(exist_ok=True)
    (workdir / "config.yml").write_text(
        "version: 0.1\n"
        "log:\n"
        "  level: info\n"
        "  accesslog:\n"
        "    disabled: true\n"
        "storage:\n"
        "  filesystem:\n"
        f"    rootdirectory: {workdir / 'storage'}\n"
        "  delete:\n"
        "    enabled: true\n"
        "http:\n"
        f"  addr: {host}\n"
        f"  secret: {secrets.token_hex(16)}\n"
        "auth:\n"
        "  htpasswd:\n"
        "    realm: jgc-test-registry\n"
        f"    path: {workdir / 'htpasswd'}\n"
    )
    env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    with open(workdir / "registry.log", "wb") as log:
        proc = subprocess.Popen(
            [exe, "serve", str(workdir / "config.yml")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
            start_new_session=True,  # its own process group: ^C to pytest does not reach it
        )
    reg = PrivateRegistry(host, username, password, workdir, proc)
    atexit.register(reg.stop)
    try:
        _wait_until_up(reg, proc, timeout)
    except BaseException:
        reg.stop()
        raise
    return reg


@pytest.fixture(scope="session")
def private_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRegistry]:
    """A running private registry with auth, for the whole session. Pushes are up to the test."""
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield reg
    finally:
        reg.stop()
        reg.remove_local_tags()
