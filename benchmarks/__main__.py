"""Run every benchmark in one go and write RESULTS.md and results.json.

    python -m benchmarks [--image IMAGE] [--runs N] [--out DIR] [--quick]

See benchmarks/README.md for what each section measures and how to read it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from . import (
    concurrency,
    failover,
    k8s,
    k8s_scale,
    kernel_start,
    lab,
    lifecycle,
    podman,
    report,
    rest,
    restart,
    scale,
    service,
    slurm,
    warm_pool,
)
from .bench import Bench, ensure_image
from .harness import REPO, machine, step

SECTIONS = (
    "kernel_start",
    "concurrency",
    "rest",
    "lifecycle",
    "warm_pool",
    "service",
    "lab",
    "k8s",
    "podman",
    "slurm",
    "scale",
    "restart",
)
# The sections that measure the shared server (Bench.start_server); "service" and "lab" start
# their own, "k8s" a Kubernetes cluster of its own, "podman" a server as the Podman user,
# "slurm" a Slurm cluster and a kernel service of its own.
SHARED_SERVER = ("kernel_start", "concurrency", "rest", "lifecycle", "warm_pool")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--image", default="jgc/demo:bookworm", help="a kernel-ready image")
    parser.add_argument("--runs", type=int, default=15, help="runs per variant (default 15)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds of each concurrency size, and of the kernel service's race",
    )
    parser.add_argument("--requests", type=int, default=30, help="requests per REST endpoint")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help="comma-separated; the other sections of an earlier results.json in --out (same "
        "machine, image and kind of run) are kept in RESULTS.md, marked with their own date",
    )
    parser.add_argument("--out", default=str(REPO / "benchmarks"), help="where results go")
    parser.add_argument(
        "--podman-user",
        default=podman.DEFAULT_USER,
        help="the account whose rootless Podman the podman and slurm sections measure",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="the lab's random seed, to repeat a round (default: a new one each run, which "
        "RESULTS.md gives)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run (1 run, small sizes): checks that every section works; its numbers "
        "mean nothing",
    )
    return parser.parse_args(argv)


async def run_all(args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    quick = args.quick
    runs = 1 if quick else args.runs
    wanted = wanted_sections(args)
    sections: dict[str, Any] = {}
    jobs = {
        "kernel_start": lambda: kernel_start.run(bench, runs, warmup=not quick),
        "concurrency": lambda: concurrency.run(
            bench, 1 if quick else args.rounds, (2, 3) if quick else concurrency.SIZES
        ),
        "rest": lambda: rest.run(
            bench, 3 if quick else args.requests, (2, 4) if quick else rest.TIERS
        ),
        "lifecycle": lambda: lifecycle.run(bench, runs),
        "warm_pool": lambda: warm_pool.run(bench, runs),
        "service": lambda: service.run(
            bench,
            runs,
            5 if quick else service.ROUND_TRIPS,
            service.RACE_QUICK if quick else service.RACE,
            1 if quick else args.rounds,
        ),
        "lab": lambda: lab.run(bench, lab.QUICK if quick else lab.FULL, args.seed),
        "k8s": lambda: k8s.run(
            bench,
            runs,
            1 if quick else k8s.WARMUPS,
            failover.QUICK_SIZES if quick else failover.SIZES,
            quick,
            k8s_scale.QUICK_SIZES if quick else k8s_scale.SIZES,
        ),
        "podman": lambda: podman.run(bench, runs, args.podman_user, warmup=not quick),
        "slurm": lambda: slurm.run(bench, runs, args.podman_user, warmup=not quick),
        "scale": lambda: scale.run(bench, quick),
        "restart": lambda: restart.run(bench, restart.QUICK_SIZES if quick else restart.SIZES),
    }
    for name in SECTIONS:
        if name not in wanted:
            continue
        with step(name):
            try:
                sections[name] = await jobs[name]()
            except Exception as e:  # the other sections still run; the exit code says so
                sections[name] = {"error": f"{type(e).__name__}: {e}"}
                print(f"[benchmarks] {name} failed: {e}", file=sys.stderr)
    return sections


def wanted_sections(args: argparse.Namespace) -> list[str]:
    wanted = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in SECTIONS]
    if unknown:
        raise SystemExit(
            f"python -m benchmarks: no section {', '.join(unknown)}; the sections are "
            f"{', '.join(SECTIONS)}."
        )
    return wanted


def merge_earlier(results: dict[str, Any], out: Path) -> None:
    """Keep the sections this run did not measure from the earlier results.json in ``out``,
    when that run was of the same kind (full or quick) and image on the same machine; each
    kept section says in ``earlier`` when and by which command it was measured."""
    try:
        old = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        return
    same = ("cpu", "cores", "memory_gib", "kernel", "docker_engine", "storage_driver")
    if (
        old.get("quick") != results["quick"]
        or old.get("image") != results["image"]
        or any(old.get("machine", {}).get(k) != results["machine"][k] for k in same)
    ):
        print(
            f"[benchmarks] {out / 'results.json'} is of another machine, image or kind of run: "
            "its sections are not kept.",
            file=sys.stderr,
        )
        return
    earlier = old.get("earlier", {})
    for name in SECTIONS:
        if name in results["sections"] or name not in old.get("sections", {}):
            continue
        results["sections"][name] = old["sections"][name]
        results["earlier"][name] = earlier.get(name) or {
            "date": old["machine"]["date"],
            "command": old["command"],
        }


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    wanted = wanted_sections(args)
    started = time.monotonic()
    ensure_image(args.image)
    bench = Bench(args.image)
    try:
        if any(name in SHARED_SERVER for name in wanted):
            with step("server"):
                bench.start_server(warm_pool.server_config(bench))
        sections = asyncio.run(run_all(args, bench))
    finally:
        bench.close()
    command = "python -m benchmarks " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    results = {
        "command": command.strip(),
        "image": args.image,
        "run_id": bench.run_id,
        "quick": args.quick,
        "machine": machine(),
        "duration_s": time.monotonic() - started,
        "sections": sections,
        "earlier": {},
    }
    failed = any("error" in s for s in sections.values())  # of this run, before any merge
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if len(wanted) < len(SECTIONS):
        merge_earlier(results, out)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "RESULTS.md").write_text(report.markdown(results))
    print(f"[benchmarks] wrote {out / 'RESULTS.md'} and results.json", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
