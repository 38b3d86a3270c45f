"""Pulls through the REST API from a real private registry (Debian's docker-registry with
htpasswd auth on 127.0.0.1): progress over server-sent events, joining, cancelling, wrong logins,
the allow-list, and the pulled image becoming a kernel spec."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import all_log_text, kernel_name
from registry import PrivateRegistry
from tornado.httpclient import HTTPClientError

pytestmark = pytest.mark.usefixtures("docker_client")


async def get(jp_fetch: Any, *path: str, **params: str) -> Any:
    return json.loads((await jp_fetch("gpu-containers", *path, params=params)).body)


async def start_pull(jp_fetch: Any, body: Any) -> dict[str, Any]:
    response = await jp_fetch("gpu-containers", "pulls", method="POST", body=json.dumps(body))
    assert response.code == 202
    return json.loads(response.body)


class EventStream:
    """A server-sent-events client: collects (event, data) pairs as they arrive."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.raw = b""
        self._buffer = b""
        self.changed = asyncio.Event()

    def feed(self, chunk: bytes) -> None:
        self.raw += chunk
        self._buffer += chunk
        while b"\n\n" in self._buffer:
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            fields = dict(
                line.split(": ", 1) for line in block.decode().splitlines() if ": " in line
            )
            if "event" in fields:
                self.events.append((fields["event"], json.loads(fields["data"])))
                self.changed.set()

    async def until(self, predicate: Any, timeout: float = 120) -> None:
        async def wait() -> None:
            while not predicate(self.events):
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), timeout)


def watch(jp_fetch: Any, pull_id: str) -> tuple[EventStream, asyncio.Future[Any]]:
    stream = EventStream()
    request = jp_fetch(
        "gpu-containers",
        "pulls",
        pull_id,
        "events",
        streaming_callback=stream.feed,
        request_timeout=300,
    )
    return stream, asyncio.ensure_future(request)


def ended(events: list[tuple[str, dict[str, Any]]]) -> bool:
    return any(name in ("done", "error", "cancelled") for name, _ in events)


@pytest.fixture
def pushed(private_registry: PrivateRegistry, docker_client: Any) -> Iterator[str]:
    """The small test image in the registry, and not on this host."""
    ref = private_registry.push_test_image("jgc/pullable:1")
    private_registry.remove_local(ref)
    yield ref
    private_registry.remove_local(ref)


@pytest.mark.server_config(
    lambda tmp_path: {"PullManager": {"progress_interval": 0.0}},
)
async def test_pull_streams_progress_then_the_image_is_a_kernel(
    jp_fetch: Any, private_registry: PrivateRegistry, pushed: str
) -> None:
    # A user's own login, kept in server memory: the admin configured none for this registry.
    await jp_fetch(
        "gpu-containers",
        "registries",
        private_registry.host,
        "credentials",
        method="PUT",
        body=json.dumps(
            {"username": private_registry.username, "password": private_registry.password}
        ),
    )
    listing = await get(jp_fetch, "registries")
    assert listing == {
        "registries": [
            {
                "registry": private_registry.host,
                "username": private_registry.username,
                "source": "user",
            }
        ]
    }
    assert private_registry.password not in json.dumps(listing)

    pull = await start_pull(jp_fetch, {"image": pushed})
    assert pull["image"] == pushed and pull["state"] in ("queued", "pulling")
    stream, request = watch(jp_fetch, pull["id"])
    await stream.until(ended)
    await request
    names = [name for name, _ in stream.events]
    final = stream.events[-1][1]
    assert names[-1] == "done", final
    assert final["state"] == "done" and final["phase"] == "complete"
    assert final["digest"].startswith("sha256:")
    progress = [data for name, data in stream.events if name == "progress"]
    downloading = [p for p in progress if p["phase"] == "downloading" and p["total_bytes"]]
    assert downloading, names
    assert any(0 < p["downloaded_bytes"] < p["total_bytes"] for p in downloading) or any(
        layer["phase"] == "downloading" for p in downloading for layer in p["layers"]
    )
    assert any(p["phase"] == "extracting" for p in progress)
    assert final["total_bytes"] > 0 and final["downloaded_bytes"] == final["total_bytes"]

    # The finished pull stays readable, and the image is now local and a kernel spec.
    assert (await get(jp_fetch, "pulls", pull["id"]))["state"] == "done"
    name = kernel_name(pushed)
    for _ in range(120):
        specs = await get_specs(jp_fetch)
        if name in specs:
            break
        await asyncio.sleep(0.5)
    assert name in specs, f"{pushed} did not become a kernel spec"
    catalog = await get(jp_fetch, "images", wait="1")
    row = next(r for r in catalog["images"] if r["reference"] == pushed)
    assert row["pulled"] and row["kernel_ready"] is True and row["kernel_name"] == name
    assert row["digest"] == final["digest"]


async def get_specs(jp_fetch: Any) -> dict[str, Any]:
    return json.loads((await jp_fetch("api", "kernelspecs")).body)["kernelspecs"]


@pytest.mark.server_config(lambda tmp_path: {"PullManager": {"progress_interval": 0.0}})
async def test_wrong_login_fails_clearly_and_the_password_goes_nowhere(
    jp_fetch: Any, private_registry: PrivateRegistry, pushed: str
) -> None:
    wrong = "pw-wrong-" + private_registry.password[::-1]
    seen: list[str] = []
    with all_log_text() as log:
        pull = await start_pull(
            jp_fetch,
            {"image": pushed, "auth": {"username": private_registry.username, "password": wrong}},
        )
        seen.append(json.dumps(pull))
        stream, request = watch(jp_fetch, pull["id"])
        await stream.until(ended)
        await request
        seen.append(stream.raw.decode())
        for path in (("pulls",), ("pulls", pull["id"]), ("registries",), ("status",)):
            seen.append(json.dumps(await get(jp_fetch, *path)))
        # No credentials at all: the same clear failure, saying none were given.
        anonymous = await start_pull(jp_fetch, {"image": pushed})
        stream2, request2 = watch(jp_fetch, anonymous["id"])
        await stream2.until(ended)
        await request2
        seen.append(stream2.raw.decode())
    name, final = stream.events[-1]
    assert name == "error" and final["state"] == "error" and final["error_status"] == 403
    assert final["message"].startswith("Authorization failed: the registry ")
    assert private_registry.host in final["message"]
    assert repr(private_registry.username) in final["message"]
    name2, final2 = stream2.events[-1]
    assert name2 == "error" and "without credentials" in final2["message"]
    assert private_registry.host in final2["message"]
    assert log, "the log capture saw nothing"
    text = "\n".join(seen + log)
    assert "Authorization failed" in "\n".join(log)  # the failure is logged ...
    assert wrong not in text  # ... and the password is nowhere
    assert private_registry.password not in text


@pytest.mark.server_config(lambda tmp_path: {"PullManager": {"progress_interval": 0.0}})
async def test_cancel_a_pull_joined_by_a_second_request(
    jp_fetch: Any, private_registry: PrivateRegistry, docker_client: Any
) -> None:
    big = private_registry.push_test_image("jgc/pullable-big:1", big=True)
    private_registry.remove_local(big)
    auth = {"username": private_registry.username, "password": private_registry.password}
    try:
        first = await start_pull(jp_fetch, {"image": big, "auth": auth})
        second = await start_pull(jp_fetch, {"image": big, "auth": auth})
        assert second["id"] == first["id"], "a second request must join the running pull"
        stream_a, request_a = watch(jp_fetch, first["id"])
        stream_b, request_b = watch(jp_fetch, first["id"])
        await stream_a.until(
            lambda events: (
                ended(events)
                or any(d["phase"] == "downloading" and d["downloaded_bytes"] for _, d in events)
            )
        )
        assert not ended(stream_a.events), "the pull ended before it could be cancelled"
        response = await jp_fetch("gpu-containers", "pulls", first["id"], method="DELETE")
        assert json.loads(response.body)["state"] == "cancelled"
        await stream_a.until(ended)
        await stream_b.until(ended)
        await asyncio.gather(request_a, request_b)
        for stream in (stream_a, stream_b):
            name, final = stream.events[-1]
            assert name == "cancelled" and final["message"].endswith("was cancelled.")
        assert not docker_client.images.list(name=big.rsplit(":", 1)[0])
    finally:
        private_registry.remove_local(big)


@pytest.mark.server_config(
    lambda tmp_path: {"ContainerPolicy": {"allowed_images": ["jgc/*", "jgc-test/*"]}}
)
async def test_allow_list_refuses_a_pull(jp_fetch: Any, private_registry: PrivateRegistry) -> None:
    with pytest.raises(HTTPClientError) as e:
        await start_pull(jp_fetch, {"image": private_registry.ref("jgc/pullable:1")})
    assert e.value.code == 403
    message = json.loads(e.value.response.body)["message"]
    assert "not in this server's allow-list" in message and "jgc/*" in message


async def test_pull_requests_are_checked(jp_fetch: Any) -> None:
    for body in ({}, {"image": "Not A Reference"}, {"image": "x:1", "auth": {"username": 1}}, [1]):
        with pytest.raises(HTTPClientError) as e:
            await start_pull(jp_fetch, body)
        assert e.value.code == 400, body
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("gpu-containers", "pulls", "0" * 32)
    assert e.value.code == 404


@pytest.mark.server_config(
    lambda tmp_path: {
        "ContainerPolicy": {
            "pinned_digests": {"127.0.0.1:*/jgc/pullable:*": ["sha256:" + "0" * 64]}
        }
    }
)
async def test_a_pull_whose_digest_is_not_pinned_is_undone(
    jp_fetch: Any, private_registry: PrivateRegistry, pushed: str, docker_client: Any
) -> None:
    auth = {"username": private_registry.username, "password": private_registry.password}
    pull = await start_pull(jp_fetch, {"image": pushed, "auth": auth})
    stream, request = watch(jp_fetch, pull["id"])
    await stream.until(ended)
    await request
    name, final = stream.events[-1]
    assert name == "error" and final["error_status"] == 403, final
    assert "but an administrator pinned it to sha256:" in final["message"]
    assert not docker_client.images.list(name=pushed.rsplit(":", 1)[0])
