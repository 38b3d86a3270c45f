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

from . import concurrency, kernel_start, lifecycle, report, rest, warm_pool
from .bench import Bench, ensure_image
from .harness import REPO, machine, step

SECTIONS = ("kernel_start", "concurrency", "rest", "lifecycle", "warm_pool")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--image", default="jgc/demo:bookworm", help="a kernel-ready image")
    parser.add_argument("--runs", type=int, default=15, help="runs per variant (default 15)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each concurrency size")
    parser.add_argument("--requests", type=int, default=30, help="requests per REST endpoint")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated")
    parser.add_argument("--out", default=str(REPO / "benchmarks"), help="where results go")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run (2 runs, small sizes): checks that every section works; its numbers "
        "mean nothing",
    )
    return parser.parse_args(argv)


async def run_all(args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    quick = args.quick
    runs = 2 if quick else args.runs
    wanted = args.sections.split(",")
    sections: dict[str, Any] = {}
    jobs = {
        "kernel_start": lambda: kernel_start.run(bench, runs),
        "concurrency": lambda: concurrency.run(
            bench, 1 if quick else args.rounds, (2, 3) if quick else concurrency.SIZES
        ),
        "rest": lambda: rest.run(
            bench, 3 if quick else args.requests, (2, 4) if quick else rest.TIERS
        ),
        "lifecycle": lambda: lifecycle.run(bench, runs),
        "warm_pool": lambda: warm_pool.run(bench, runs),
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


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    ensure_image(args.image)
    bench = Bench(args.image)
    try:
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
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "RESULTS.md").write_text(report.markdown(results))
    print(f"[benchmarks] wrote {out / 'RESULTS.md'} and results.json", file=sys.stderr)
    return 1 if any("error" in s for s in sections.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
