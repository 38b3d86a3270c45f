"""A benchmark-only Jupyter server extension: what can only be seen from inside the server.

- ``GET /bench/launch/<kernel_id>``: the provisioner's launch stamps (time.monotonic(), which is
  one clock for every process on the host, so they line up with the client's own stamps).
- ``GET /bench/lag``: the event loop's lag since the last call (and resets it). A coroutine asks
  to sleep 10 ms at a time; how much later it wakes is time the loop spent on something else.
- ``GET /bench/pool?ref=``: whether the warm pool holds a ready container of the image.
- ``GET /bench/spec-lookup?name=&n=``: how long the kernel spec manager takes to look a spec up,
  the median of n lookups, done as the kernel manager does it (synchronously, on the loop).

Loaded only by the benchmark's own server (``ServerApp.jpserver_extensions``).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

from jupyter_server.base.handlers import APIHandler
from tornado import web

INTERVAL = 0.01


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "benchmarks.server_probe"}]


class LoopLag:
    def __init__(self) -> None:
        self.lags: list[float] = []
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(INTERVAL)
            self.lags.append(max(0.0, time.monotonic() - asked - INTERVAL))

    def take(self) -> list[float]:
        lags, self.lags = self.lags, []
        return lags


def _load_jupyter_server_extension(serverapp: Any) -> None:
    lag = LoopLag()
    serverapp.io_loop.add_callback(lag.start)
    serverapp._jgc_bench_lag = lag  # the loop holds its task weakly
    base = serverapp.web_app.settings["base_url"].rstrip("/")
    serverapp.web_app.add_handlers(
        ".*$",
        [
            (f"{base}/bench/launch/(?P<kernel_id>[^/]+)", LaunchHandler),
            (f"{base}/bench/lag", LagHandler, {"lag": lag}),
            (f"{base}/bench/spec-lookup", SpecLookupHandler),
            (f"{base}/bench/pool", PoolHandler),
        ],
    )


class LaunchHandler(APIHandler):
    @web.authenticated
    def get(self, kernel_id: str) -> None:
        km = self.kernel_manager.get_kernel(kernel_id)
        stamps = getattr(km.provisioner, "launch_stamps", None)
        if stamps is None:
            raise web.HTTPError(404, "no launch stamps for this kernel")
        self.finish(json.dumps({"stamps": stamps}))


class LagHandler(APIHandler):
    def initialize(self, lag: LoopLag) -> None:
        self.lag = lag

    @web.authenticated
    def get(self) -> None:
        self.finish(json.dumps({"lags": self.lag.take()}))


class SpecLookupHandler(APIHandler):
    @web.authenticated
    def get(self) -> None:
        name = self.get_query_argument("name")
        n = int(self.get_query_argument("n", "50"))
        ksm = self.kernel_spec_manager
        times = []
        for _ in range(n):
            started = time.monotonic()
            ksm.get_kernel_spec(name)
            times.append(time.monotonic() - started)
        self.finish(json.dumps({"median": statistics.median(times)}))


class PoolHandler(APIHandler):
    @web.authenticated
    def get(self) -> None:
        from jupyter_gpu_containers.services import services_for

        services = services_for(self.serverapp)
        pool = services.warm_pool if services else None
        ref = self.get_query_argument("ref")
        self.finish(json.dumps({"ready": bool(pool and pool.has_ready(ref))}))
