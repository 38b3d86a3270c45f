"""Section 13: the kernel service killed and started again, as its systemd unit restarts it.

With N kernels running on the service (1, 10, 50 and 200; a quick run: 1 and 2), spread over its
five users, each kernel's websocket open as a user's page holds it: ``kill -9`` of the service, then
its start at once (the unit waits ``RestartSec=2`` first, which this section leaves out: it is
the administrator's to choose). Timed from the kill:

- **answers**: the service answers ``GET /api/kernels`` (it reattaches its kernels before it
  answers anything about them);
- **all listed**: every user's list holds all of their kernels again;
- **a cell again**: a kernel's page reconnects (a new websocket, as JupyterLab's reconnects) and
  a cell runs and answers, its variables kept from before the kill.

Then every kernel is checked: the same container as before, its variables kept (no kernel lost,
none restarted). Before each kill, the service's resident memory (VmRSS) is read with its N kernels
and no page connected, then with each kernel's page connected (each websocket has had an answer):
what a kernel and what a connected page cost it. And a user's ``GET /api/kernels`` is timed
(p50 and p95 of 20) with the N kernels running. The service and its kernels are those of section
7's world (service.py), the service alone (no direct server, no user's server), every kernel
without a GPU (the kernels outnumber the GPUs, and a kernel's GPU is booked by its container's
labels, which a restart reads again).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from .bench import Bench
from .harness import LABEL, Stats, process_rss, step
from .server import request_reply
from .service import BenchService, World

SIZES = (1, 10, 50, 200)
QUICK_SIZES = (1, 2)
CPU = {"KERNEL_GPU_CONTAINERS_REQUEST": "0"}
LIST_REQUESTS = 20  # GET /api/kernels timed before each kill
WAIT = 120.0  # seconds after the start for the service to answer and list every kernel


async def run(bench: Bench, sizes: tuple[int, ...]) -> dict[str, Any]:
    world = World(bench)
    service = world.make_service({"ServiceApp": {"max_kernels_per_user": max(sizes)}})
    try:
        with step("restart: the kernel service"):
            await asyncio.to_thread(service.start)
        kernels: list[tuple[str, str]] = []  # (kernel id, its user's token)
        rows = []
        for n in sizes:
            while len(kernels) < n:
                token = world.tokens[world.users[len(kernels) % len(world.users)]]
                kernel_id, _, _ = await service.start_kernel(world.spec, CPU, token=token)
                await _run(service, kernel_id, token, f"mark = {kernel_id!r}")
                kernels.append((kernel_id, token))
            rows.append(await _restart(bench, world, service, kernels))
        return {"rows": rows}
    finally:
        # Through the service, which leaves its kernels running when it stops (as its unit's
        # restart needs): it removes each kernel's container and its private directory's mount.
        if service.process is not None and service.process.poll() is None:
            for token in world.tokens.values():
                with contextlib.suppress(Exception):
                    await service.delete_all_kernels(token)
        world.close()


async def _restart(
    bench: Bench, world: World, service: BenchService, kernels: list[tuple[str, str]]
) -> dict[str, Any]:
    """One kill and start with ``kernels`` running: the row."""
    containers = await asyncio.to_thread(_containers, bench)
    assert service.process is not None
    pid = service.process.pid
    rss_kernels, _ = await asyncio.to_thread(process_rss, pid)
    pages = [await service.channels(k, token) for k, token in kernels]
    # Each page's websocket answered a request: its channels are connected in the service.
    for page in pages:
        await request_reply(page, "kernel_info_request", {}, 60)
    rss_pages, _ = await asyncio.to_thread(process_rss, pid)
    # A user's kernel list with N kernels on the service (a fifth of them this user's).
    listing = Stats()
    for _ in range(LIST_REQUESTS):
        began = time.perf_counter()
        await service.call("GET", "api/kernels", token=kernels[0][1])
        listing.add(time.perf_counter() - began)
    killed = time.monotonic()
    service.process.kill()
    await asyncio.to_thread(service.process.wait)
    for page in pages:
        page.close()  # the page sees its websocket end; it opens a new one below
    await asyncio.to_thread(service.start)
    started = time.monotonic()
    # Bounded: a service that never answers, or a kernel never listed again (lost), ends the
    # section with a sentence instead of a wait for ever.
    deadline = started + WAIT
    answers = listed = 0.0
    while not answers:
        try:
            await service.call("GET", "api/kernels", token=kernels[0][1])
            answers = time.monotonic()
        except Exception as e:  # not answering yet: what is waited for
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the restarted service did not answer in {WAIT:.0f} s: {e}"
                ) from e
            await asyncio.sleep(0.05)
    wanted = {token: {k for k, t in kernels if t == token} for _, token in kernels}
    while not listed:
        seen = {
            token: {k["id"] for k in await service.call("GET", "api/kernels", token=token)}
            for token in wanted
        }
        missing = sorted(k for t in wanted for k in wanted[t] - seen[t])
        if not missing:
            listed = time.monotonic()
        elif time.monotonic() > deadline:
            raise RuntimeError(
                f"kernels lost in the restart (not listed in {WAIT:.0f} s): {missing}"
            )
        else:
            await asyncio.sleep(0.05)
    last_id, last_token = kernels[-1]
    kept = await _run(service, last_id, last_token, "")
    cell = time.monotonic()
    lost = [] if kept == repr(last_id) else [last_id]
    for kernel_id, token in kernels[:-1]:
        if await _run(service, kernel_id, token, "") != repr(kernel_id):
            lost.append(kernel_id)
    after = await asyncio.to_thread(_containers, bench)
    return {
        "n_items": len(kernels),
        "process_start": started - killed,
        "answers": answers - killed,
        "all_listed": listed - killed,
        "cell_again": cell - killed,
        "kernels_lost": len(lost) + len(set(containers) - set(after)),
        "containers_replaced": len(set(after) - set(containers)),
        "list_p50": listing.p50,
        "list_p95": listing.p95,
        "service_rss": rss_kernels,
        "service_rss_pages": rss_pages,
    }


async def _run(service: BenchService, kernel_id: str, token: str, code: str) -> str:
    """Run ``code`` on the kernel through a new websocket, as a page that reconnected runs a
    cell; the kernel's ``mark`` afterwards, as its repr ("" when it has none)."""
    ws = await service.channels(kernel_id, token)
    try:
        reply = await request_reply(
            ws,
            "execute_request",
            {"code": code, "silent": False, "user_expressions": {"mark": "mark"}},
            60,
        )
    finally:
        ws.close()
    content = reply["content"]
    if content["status"] != "ok":
        raise RuntimeError(f"a cell failed on kernel {kernel_id}: {content}")
    mark = content["user_expressions"]["mark"]
    return str(mark["data"]["text/plain"]) if mark.get("status") == "ok" else ""


def _containers(bench: Bench) -> list[str]:
    """This run's kernel containers, by id."""
    return [
        c.id
        for c in bench.client.containers.list(
            all=True, filters={"label": [f"{LABEL}={bench.run_id}"]}
        )
    ]
