"""The one owner of the server's shared objects (services.py): found from anything of the server,
and closed with it, leaving no thread of this project's behind."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from conftest import DEBIAN_IMAGE, kernel_name
from kernel_io import execute_in, start_kernel
from traitlets.config import Config, LoggingConfigurable

from jupyter_gpu_containers.services import Services, services_for


def our_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("gpu-containers-")]


async def test_one_services_for_the_whole_server_and_no_thread_left_after_it(
    jp_serverapp: Any, jp_fetch: Any, jp_ws_fetch: Any, docker_client: Any
) -> None:
    # Threads of other tests' objects (probes a test made and left to the collector) are theirs.
    before = set(our_threads())
    await jp_serverapp.extension_manager.start_all_extensions()
    services = services_for(jp_serverapp)
    assert isinstance(services, Services)
    mkm, ksm = jp_serverapp.kernel_manager, jp_serverapp.kernel_spec_manager
    assert services_for(mkm) is services and services_for(ksm) is services
    assert ksm.services is services

    # Use what has threads: the engine's pool, the probe's, the image watcher, a pull's.
    kernel_id = await start_kernel(jp_fetch, kernel_name(DEBIAN_IMAGE))
    provisioner = mkm.get_kernel(kernel_id).provisioner
    assert provisioner.services is services
    assert (await execute_in(jp_ws_fetch, kernel_id, "print(6 * 7)")).stdout.strip() == "42"
    await jp_fetch("gpu-containers", "images", params={"wait": "1"}, request_timeout=180)
    pull = json.loads(
        (
            await jp_fetch(
                "gpu-containers",
                "pulls",
                method="POST",
                body=json.dumps({"image": "127.0.0.1:1/x:1"}),
            )
        ).body
    )
    await services.pulls.wait(services.pulls.get(pull["id"]))

    def new_threads() -> list[str]:
        return [t.name for t in our_threads() if t not in before]

    assert new_threads(), "the server's threads were expected to be running"

    await jp_serverapp._cleanup()  # what the server does when it stops (conftest's clean-up too)
    deadline = time.monotonic() + 60
    while new_threads() and time.monotonic() < deadline:  # idle pool threads exit as they wake
        await asyncio.sleep(0.05)
    assert new_threads() == []


async def test_close_stops_the_removal_retrier(tmp_path: Any) -> None:
    """A removal the engine could not take is retried by a thread of the engine's; closing the
    services ends it (what it had left stays labelled, for the next server's recovery)."""
    config = Config({"Engine": {"docker_url": f"unix://{tmp_path}/no-engine.sock"}})
    services = Services(LoggingConfigurable(config=config))
    try:
        assert await services.backend.remove_or_defer("jgc-test-never-made") is False
        retrier = next(t for t in our_threads() if t.name == "gpu-containers-removals")
    finally:
        services.close()
    # It wakes at once, whatever removal_retry_interval says.
    await asyncio.to_thread(retrier.join, 30)
    assert not retrier.is_alive()


class Kept:
    def __init__(self, name: str, stopped: list[str]) -> None:
        self.name, self.stopped = name, stopped

    async def stop(self) -> None:
        self.stopped.append(self.name)


async def test_services_stop_what_was_kept_in_the_order_it_was_kept() -> None:
    services = Services(LoggingConfigurable(config=Config()))
    stopped: list[str] = []
    try:
        services.keep(Kept("reclaimer", stopped))
        services.warm_pool = services.keep(Kept("warm pool", stopped))
        await services.stop()
        assert stopped == ["reclaimer", "warm pool"]
        assert services.warm_pool is None  # offered to no launch from the start of the stop
        await services.stop()  # once only
        assert stopped == ["reclaimer", "warm pool"]
    finally:
        services.close()


class ClusterServer(LoggingConfigurable):
    """A configuration whose kernels are pods (ServiceApp.backend's name for it)."""

    backend = "kubernetes"


async def test_an_engine_with_no_image_store_gets_the_listed_images_and_the_admins_logins(
    tmp_path: Any,
) -> None:
    """A cluster's nodes pull: its backend offers the administrator's listed images and pulls
    them with the administrator's registry logins, both handed over by the services that built
    it (use_images); a user's own login is never among them. Nothing here reaches an API."""
    config = Config(
        {
            "ImageCatalog": {"listed_images": ["127.0.0.1:1/course:1"]},
            "RegistryCredentials": {
                "registry_auth": {"127.0.0.1:1": {"username": "admin", "password": "s3cret"}}
            },
            "KubernetesBackend": {"kubeconfig": str(tmp_path / "none.kubeconfig")},
        }
    )
    services = Services(ClusterServer(config=config))
    try:
        backend = services.backend
        assert [image.tags for image in backend.list_images_sync()] == [("127.0.0.1:1/course:1",)]
        services.credentials.set_user("127.0.0.2:1", "student", "theirs", whose="student")
        auth = backend.pull_auth  # type: ignore[attr-defined]
        assert auth("127.0.0.1:1") == {"username": "admin", "password": "s3cret"}
        assert auth("127.0.0.2:1") is None
    finally:
        services.close()
