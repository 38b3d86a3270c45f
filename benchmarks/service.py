"""Section 7: the kernel service (`jupyter gpu-containers serve`) against direct mode, side by
side in one run, on the same image and machine.

Three processes besides the benchmark: a direct-mode Jupyter server with this project's
extension (as root, like the other sections' server); the kernel service (as root, as an
administrator runs it), whose users are accounts of its administrator's map
(``UserDirectory.accounts``) with workspaces they own and tokens from the service's token file;
and one user's ``jupyter server --gateway-url=…`` with that user's token: Jupyter Server's stock
gateway client, with this project's extension in its gateway mode, as a student's server runs.
Both the direct server and the service run with the same kernel spec (ipc, network bridge, one
GPU of four static ones when the engine can attach GPUs) and without a warm pool, so every start
is cold on both sides.

1. **Kernel start**: ``POST /api/kernels`` until the kernel answers ``kernel_info`` over its
   websocket, as JupyterLab does it: on the direct server, and on the user's server (which
   forwards both to the service). The service alone, called with the user's token (no user's
   server in between), splits the difference into the service's own cost and the gateway hop's.
2. **Round trip**: a tiny ``execute_request`` to its ``execute_reply`` on an open websocket, on
   the same three paths; what the user's server and the service add.
3. **Many users at once**: 20 starts from 5 users at once (4 each) against 4 GPUs and
   ``GPUAllocator.max_gpus_per_user = 1``, straight to the service: how long until every request
   has its answer (a kernel, or 409 No free GPU), how many won, on which GPUs.

Every container carries the run's label and is removed at the end (Bench.close), whatever
happened; this section stops its processes by their pids and removes its directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from jupyter_gpu_containers.base import labels as L

from .bench import Bench
from .harness import LABEL, Stats, step
from .server import BenchServer, ServerFailed, request_reply

DIRECT = "direct mode: jupyter server with the extension"
SERVICE = "the service alone: its REST API with the user's token"
GATEWAY = "through the service: the user's server (--gateway-url) → the service"
VARIANTS = (DIRECT, SERVICE, GATEWAY)
# The rows' short names, which report.py reads.
KEYS = {DIRECT: "direct", SERVICE: "service", GATEWAY: "gateway"}

# The goals of issue #16.
START_GOAL = 1.15  # through the service over direct, at the median
HOP_GOAL = 0.002  # seconds added per execute round trip, at the median

# The race: (users, starts each), against GPUS static GPUs, one per user at most.
GPUS = 4
RACE = (5, 4)
RACE_QUICK = (5, 1)
ROUND_TRIPS = 300

STATIC_GPUS = [
    {
        "index": i,
        "uuid": f"GPU-bench-{i}",
        "name": "Tesla T4",
        "brand": "tesla",
        "compute_capability": "7.5",
        "memory_total": 16 * 2**30,
    }
    for i in range(GPUS)
]
TOKEN = re.compile(r"\bjgc_[A-Za-z0-9_-]+")
# uids of the administrator's map: no system account needed, none of the host's users.
FIRST_UID = 23101


class BenchService(BenchServer):
    """`jupyter gpu-containers serve` with its configuration file, token file and one workspace
    per user under ``home/ws``. Requests carry a user's token (``token=``)."""

    ready_markers: tuple[str, ...] = (
        "Kernel containers at start",
        "Kernel containers were not checked at start",
    )

    def write_config(self, config: dict[str, Any]) -> None:
        self.config_file = self.home / "service_config.json"
        self.config_file.write_text(json.dumps(config))

    def argv(self) -> list[str]:
        return [
            _script("jupyter-gpu-containers"),
            "serve",
            f"--config={self.config_file}",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.home}",
        ]

    def add_user(self, name: str, tokens_file: Path) -> str:
        """A token for ``name`` from the service's own command (printed once); returns it."""
        out = subprocess.run(
            [
                *(_script("jupyter-gpu-containers"), "token", "add", name),
                f"--tokens-file={tokens_file}",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        found = TOKEN.findall(out)
        if not found:
            raise ServerFailed(f"`jupyter gpu-containers token add {name}` printed no token: {out}")
        return found[-1]


def _script(name: str) -> str:
    """A console script of the environment the benchmark runs in."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name) or name


class World:
    """The three servers, the users and their tokens; ``close`` stops them by their pids."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.ref = bench.tag("service")  # untagged by Bench.close
        self.spec = bench.kernel(self.ref)
        self.home = Path(tempfile.mkdtemp(prefix="jgc-bench-service-", dir="/tmp"))
        self.home.chmod(0o755)  # the users' workspaces lie below it
        self.gpus = 1 if bench.gpus else 0
        self.users = [f"bench{i}" for i in range(RACE[0])]
        self.accounts = {u: f"{FIRST_UID + i}:{FIRST_UID + i}" for i, u in enumerate(self.users)}
        self.tokens: dict[str, str] = {}
        self.servers: list[BenchServer] = []
        self.direct: BenchServer | None = None
        self.service: BenchService | None = None
        self.user: BenchServer | None = None

    def common_config(self, name: str) -> dict[str, Any]:
        labels = {LABEL: self.bench.run_id}
        return {
            "ContainerKernelSpecManager": {
                "image_include": [f"{self.bench.repo}/service:*"],
                "image_overrides": {
                    self.ref: {
                        "provisioner": {
                            "transport": "ipc",
                            "network_mode": "bridge",
                            "gpus": self.gpus,
                        }
                    }
                },
            },
            "ContainerProvisioner": {"extra_labels": labels},
            "KernelReadinessProbe": {"extra_labels": labels},
            "ContainerPolicy": {
                "state_dir": str(self.home / name / "state"),
                "allowed_network_modes": ["bridge", "none", "host"],
            },
            "GPUInventory": {"source": "static", "static_gpus": STATIC_GPUS if self.gpus else []},
            "GPUAllocator": {"attach_mode": "runtime"},
        }

    def start(self) -> None:
        direct_config = self.common_config("direct")
        direct_config["ContainerPolicy"]["allow_root"] = os.getuid() == 0
        self.direct = BenchServer(self.home / "direct", direct_config)
        self.servers.append(self.direct)
        self.service = self.make_service()
        with step("service: direct server, kernel service"):
            self.direct.start()
            self.service.start()
        # The first user's own server: root here (what it runs as costs nothing per message),
        # its root_dir that user's workspace, so the gateway client sends it as the kernel's
        # working directory, which the service checks is inside the workspace.
        self.user = BenchServer(
            self.home / "user",
            {},
            args=(
                f"--gateway-url={self.service.url}",
                f"--GatewayClient.auth_token={self.tokens[self.users[0]]}",
                "--GatewayClient.request_timeout=120",
            ),
            workspace=self.home / "ws" / self.users[0],
        )
        self.servers.append(self.user)
        with step("service: the user's server (--gateway-url)"):
            self.user.start()

    def make_service(self, extra: dict[str, Any] | None = None) -> BenchService:
        """The kernel service (not started), its users' workspaces and tokens made; ``extra``:
        configuration sections merged into its own."""
        tokens_file = self.home / "service" / "etc" / "tokens"
        service_config = self.common_config("service")
        service_config["ContainerPolicy"]["connection_dir_root"] = str(self.home / "kernels")
        service_config["ServiceTokens"] = {"tokens_file": str(tokens_file)}
        # The race's cap. Not in direct mode: a cap counts the uid's GPUs on the whole engine,
        # and the direct server's kernels run as root, as other servers' on this host may.
        service_config["GPUAllocator"]["max_gpus_per_user"] = 1
        service_config["UserDirectory"] = {
            "workspace_template": str(self.home / "ws" / "{username}"),
            "accounts": self.accounts,
        }
        for section, values in (extra or {}).items():
            service_config[section] = {**service_config.get(section, {}), **values}
        service = BenchService(self.home / "service", service_config)
        self.servers.append(service)
        for name, ids in self.accounts.items():
            workspace = self.home / "ws" / name
            workspace.mkdir(parents=True)
            uid, gid = (int(i) for i in ids.split(":"))
            os.chown(workspace, uid, gid)
            self.tokens[name] = service.add_user(name, tokens_file)
        return service

    def close(self) -> None:
        # The user's server first: it forwards its shutdowns to the service.
        for server in reversed(self.servers):
            server.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    # ------------------------------------------------------------------ the three paths

    async def clear(self, variant: str) -> None:
        """Shut down every kernel a variant's user has, wherever a failed start left it (a
        start the client gave up on may still finish): each user may hold one GPU."""
        assert self.direct and self.service
        if variant == DIRECT:
            await self.direct.delete_all_kernels()
        else:
            token = self.tokens[self.users[1 if variant == SERVICE else 0]]
            await self.service.delete_all_kernels(token)

    def path(self, variant: str) -> tuple[BenchServer, str | None]:
        """The server a variant talks to, and the token it sends (None: the server's own)."""
        assert self.direct and self.service and self.user
        if variant == DIRECT:
            return self.direct, None
        if variant == SERVICE:
            # Another user than the user's server's: each has one GPU at most.
            return self.service, self.tokens[self.users[1]]
        return self.user, None


async def run(
    bench: Bench, runs: int, round_trips: int, race: tuple[int, int], rounds: int
) -> dict[str, Any]:
    """``runs`` starts per variant, ``round_trips`` per path, ``rounds`` races of ``race``
    (users, starts each)."""
    world = World(bench)
    try:
        world.start()
        with step("service: kernel starts"):
            starts = await _starts(world, runs)
        with step("service: round trips"):
            trips = await _round_trips(world, round_trips)
        with step("service: many users at once"):
            crowd = await _race(world, race, rounds)
    except Exception as e:
        logs = "\n".join(
            f"--- {type(s).__name__} {s.url}:\n{s.output()[-2000:]}" for s in world.servers
        )
        print(f"[benchmarks] service section failed: {e}\n{logs}", file=sys.stderr)
        raise
    finally:
        world.close()
    return {
        "image_ref": world.ref,
        "gpus_per_kernel": world.gpus,
        "runs": runs,
        "starts": starts,
        "round_trips": trips,
        "race": crowd,
        "goals": {"start_ratio": START_GOAL, "hop_added_s": HOP_GOAL},
    }


# ---------------------------------------------------------------------- 1. kernel start


async def _starts(world: World, runs: int) -> dict[str, Any]:
    """Each variant once per round, the order rotating; one warm-up round, uncounted.

    Besides each variant's own median, what it adds over direct mode is taken round by round
    (the median of the per-round ratios and differences): the rounds' three starts run within
    seconds of each other, so a neighbour's load that comes and goes on a shared host weighs on
    the pair alike."""
    total = {v: Stats() for v in VARIANTS}
    post = {v: Stats() for v in VARIANTS}  # until POST /api/kernels answered
    reply = {v: Stats() for v in VARIANTS}  # from then until the first kernel_info_reply
    rounds: list[dict[str, tuple[float, float, float]]] = []

    async def one(variant: str) -> tuple[float, float, float]:
        server, token = world.path(variant)
        started = time.monotonic()
        kernel_id, answered, replied = await server.start_kernel(world.spec, token=token)
        try:
            return replied - started, answered - started, replied - answered
        finally:
            await server.delete_kernel(kernel_id, token=token)

    for round_ in range(runs + 1):
        shift = round_ % len(VARIANTS)
        this: dict[str, tuple[float, float, float]] = {}
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            try:
                this[variant] = await one(variant)
            except Exception as e:  # counted and said; the run goes on
                total[variant].failures += 1
                print(f"[benchmarks] a start, {variant}, failed: {e!r}", file=sys.stderr)
                await world.clear(variant)
        if round_ == 0:
            continue
        rounds.append(this)
        for variant, (whole, until_post, after) in this.items():
            total[variant].add(whole)
            post[variant].add(until_post)
            reply[variant].add(after)
    direct = total[DIRECT].p50
    rows = []
    for v in VARIANTS:
        pairs = [(r[v], r[DIRECT]) for r in rounds if v in r and DIRECT in r]
        rows.append(
            {
                "variant": v,
                "key": KEYS[v],
                **total[v].to_dict(),
                "post_p50": post[v].p50,
                "first_reply_p50": reply[v].p50,
                "ratio_p50": total[v].p50 / direct if direct else float("nan"),
                # Round by round, over direct mode.
                "paired_ratio_p50": _median([a[0] / b[0] for a, b in pairs]),
                "paired_added_post_p50": _median([a[1] - b[1] for a, b in pairs]),
                "paired_added_first_reply_p50": _median([a[2] - b[2] for a, b in pairs]),
            }
        )
    return {"rows": rows}


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------------- 2. round trips


EXECUTE = {
    "code": "pass",
    "silent": False,
    "store_history": False,
    "user_expressions": {},
    "allow_stdin": False,
    "stop_on_error": True,
}


async def _round_trips(world: World, n: int) -> dict[str, Any]:
    """One kernel per path, its websocket open; n execute round trips on each, interleaved one
    by one (the order rotating), after 10 uncounted ones each."""
    opened: dict[str, tuple[BenchServer, str | None, str, Any]] = {}
    stats = {v: Stats() for v in VARIANTS}
    try:
        for variant in VARIANTS:
            server, token = world.path(variant)
            kernel_id, _, _ = await server.start_kernel(world.spec, token=token)
            opened[variant] = (server, token, kernel_id, None)
            ws = await server.channels(kernel_id, token)
            opened[variant] = (server, token, kernel_id, ws)
        for i in range(n + 10):
            shift = i % len(VARIANTS)
            for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                ws = opened[variant][3]
                started = time.monotonic()
                answer = await request_reply(ws, "execute_request", EXECUTE, timeout=30)
                elapsed = time.monotonic() - started
                if answer["content"].get("status") != "ok":
                    raise ServerFailed(f"execute_request answered {answer['content']}")
                if i >= 10:
                    stats[variant].add(elapsed)
    finally:
        for server, token, kernel_id, ws in opened.values():
            if ws is not None:
                ws.close()
            try:
                await server.delete_kernel(kernel_id, token=token)
            except Exception as e:  # its container goes with the run's label at the end
                print(f"[benchmarks] could not delete kernel {kernel_id}: {e}", file=sys.stderr)
    direct = stats[DIRECT]
    return {
        "n": n,
        "code": EXECUTE["code"],
        "rows": [
            {
                "variant": v,
                "key": KEYS[v],
                **stats[v].to_dict(),
                "added_p50": stats[v].p50 - direct.p50,
                "added_p95": stats[v].p95 - direct.p95,
            }
            for v in VARIANTS
        ],
    }


# ---------------------------------------------------------------------- 3. many users at once


async def _race(world: World, race: tuple[int, int], rounds: int) -> dict[str, Any]:
    if not world.gpus:
        return {
            "not_measured": "The race for GPUs needs an engine that can attach them (a runtime "
            "named nvidia; scripts/ensure-docker.sh sets one up)."
        }
    service = world.service
    assert service is not None
    users, each = race
    names = world.users[:users]
    expected = min(users, GPUS)
    walls, answers = Stats(), Stats()
    outcomes: list[dict[str, Any]] = []
    timeouts = 0
    for _ in range(rounds):
        started = time.monotonic()

        async def one(name: str, started: float = started) -> tuple[str, int, Any, float]:
            code, body = await _post(service, world.tokens[name], world.spec)
            return name, code, body, time.monotonic() - started

        results = await asyncio.gather(
            *(one(name) for name in names for _ in range(each)), return_exceptions=True
        )
        walls.add(time.monotonic() - started)
        answered = [r for r in results if isinstance(r, tuple)]
        failed = [r for r in results if not isinstance(r, tuple)]
        for r in failed:
            print(f"[benchmarks] a start of the race had no answer: {r}", file=sys.stderr)
        timeouts += len(failed)
        for _, _, _, seconds in answered:
            answers.add(seconds)
        won = [(name, body["id"]) for name, code, body, _ in answered if code == 201]
        # By status, as text: what results.json keeps.
        refused = Counter(str(code) for _, code, _, _ in answered if code != 201)
        gpus = await asyncio.to_thread(_gpus_of, world.bench, [k for _, k in won])
        # Each winner is a real kernel: it answers on its user's websocket (untimed).
        await asyncio.gather(*(service.kernel_info(k, token=world.tokens[name]) for name, k in won))
        outcomes.append(
            {
                "won": len(won),
                "refused": dict(refused),
                "distinct_gpus": len(set(gpus)),
                "most_per_user": max(Counter(n for n, _ in won).values(), default=0),
            }
        )
        await asyncio.gather(
            *(service.delete_kernel(k, token=world.tokens[name]) for name, k in won)
        )
    return {
        "users": users,
        "starts_each": each,
        "gpus": GPUS,
        "max_gpus_per_user": 1,
        "expected_winners": expected,
        "rounds": rounds,
        "wall": walls.to_dict(),
        "answer": answers.to_dict(),
        "timeouts": timeouts,
        "outcomes": outcomes,
        "as_expected": timeouts == 0
        and all(
            o["won"] == expected
            and o["distinct_gpus"] == expected
            and o["most_per_user"] == 1
            and set(o["refused"]) <= {"409"}
            for o in outcomes
        ),
    }


async def _post(service: BenchService, token: str, spec: str) -> tuple[int, Any]:
    """POST /api/kernels with a user's token: the status and the answer, whatever it is."""
    request = HTTPRequest(
        f"{service.url}/api/kernels",
        method="POST",
        headers={"Authorization": f"token {token}"},
        body=json.dumps({"name": spec, "env": {}}),
        request_timeout=120,
    )
    try:
        response = await AsyncHTTPClient().fetch(request)
    except HTTPClientError as e:
        if e.response is None:  # a timeout: no answer at all
            raise
        return e.code, json.loads(e.response.body or b"null")
    return response.code, json.loads(response.body)


def _gpus_of(bench: Bench, kernel_ids: list[str]) -> list[str]:
    gpus: list[str] = []
    for kernel_id in kernel_ids:
        found = bench.client.containers.list(
            all=True, filters={"label": [f"{L.KERNEL_ID}={kernel_id}", f"{LABEL}={bench.run_id}"]}
        )
        gpus.extend(c.labels.get(L.GPUS, "") for c in found)
    return gpus
