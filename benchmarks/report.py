"""RESULTS.md and results.json from one run's numbers: tables, and a reading computed from them
(so that a regenerated file never says what its numbers no longer show)."""

from __future__ import annotations

import math
from typing import Any


def ms(seconds: float) -> str:
    return "–" if seconds is None or math.isnan(seconds) else f"{seconds * 1000:.0f}"


def ms1(seconds: float) -> str:
    return "–" if seconds is None or math.isnan(seconds) else f"{seconds * 1000:.1f}"


def ratio(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.2f}×"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    rule = "| " + " | ".join("-" * w for w in widths) + " |"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join([line, rule, *body])


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    out = [
        "# Benchmark results",
        "",
        f"Regenerate with `{results['command']}` (see benchmarks/README.md).",
        "",
        f"**Run:** {m['date']}, {results['duration_s']:.0f} s in all. **Machine:** {m['cpu']}, "
        f"{m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, Linux {m['kernel']}; Docker "
        f"engine {m['docker_engine']} ({m['storage_driver']}, cgroup {m['cgroup']}); Python "
        f"{m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items())
        + f". **Image:** `{results['image']}`.",
        "",
        "Absolute times vary from machine to machine; the ratios, measured side by side in this "
        "one run, are what to compare. Times in milliseconds.",
        "",
    ]
    earlier = results.get("earlier") or {}
    if earlier:
        kept = [name for name in results["sections"] if name in earlier]
        fresh = [name for name in results["sections"] if name not in earlier]
        out += [
            f"This run measured {', '.join(fresh) or 'nothing'}; {', '.join(kept)} "
            f"{'was' if len(kept) == 1 else 'were'} kept from earlier runs on the same machine "
            "and image, each marked below with its own date and command (ratios compare only "
            "within a section).",
            "",
        ]
    sections = results["sections"]
    for key, title, render in (
        ("kernel_start", "1. Kernel start", _kernel_start),
        ("kernel_start", "2. Where the time goes", _phases),
        ("concurrency", "3. Concurrency", _concurrency),
        ("rest", "4. REST latency, NVML, event loop", _rest),
        ("lifecycle", "5. Shutdown and restart", _lifecycle),
        ("warm_pool", "6. Warm pool", _warm_pool),
        ("service", "7. Kernel service (multi-user) against direct mode", _service),
        ("lab", "8. A teaching lab: students sharing 8 GPUs through the kernel service", _lab),
        ("k8s", "9. Kernels as pods on Kubernetes", _k8s),
        ("podman", "10. Kernels on a user's rootless Podman", _podman),
        ("slurm", "11. Kernels as Slurm jobs", _slurm),
        ("scale", "12. How the cost of a decision grows with the work", _scale),
        ("restart", "13. The kernel service killed and started again", _restart),
        ("k8s", "14. The kernel service's failover on Kubernetes", _failover),
        ("k8s", "15. The kernel service with up to 1,000 kernel pods (KWOK)", _k8s_scale),
    ):
        if key not in sections:
            continue
        out += [f"## {title}", ""]
        if key in earlier:
            out += [
                f"*Measured in an earlier run: {earlier[key]['date']}, "
                f"`{earlier[key]['command']}`.*",
                "",
            ]
        section = sections[key]
        if "error" in section:
            out += [f"Failed: {section['error']}", ""]
            continue
        out += [*render(section, results), ""]
    return "\n".join(out).rstrip() + "\n"


def _kernel_start(s: dict[str, Any], results: dict[str, Any]) -> list[str]:
    rows = [
        [
            r["variant"],
            ms(r["p50"]),
            ms(r["p95"]),
            ms(r["min"]),
            ratio(r.get("ratio_p50")),
            ratio(r.get("ratio_min")),
            str(r["failures"]),
        ]
        for r in s["rows"]
    ]
    headline = next(r for r in s["rows"] if r["variant"] == "ours: ipc, network bridge")
    ours = [r for r in s["rows"] if "ratio_p50" in r]
    worst = max(ours, key=lambda r: r["ratio_p50"])
    best = min(ours, key=lambda r: r["ratio_p50"])
    local = next(r for r in s["rows"] if r["variant"].endswith("jupyter_client"))
    local_rest = next(r for r in s["rows"] if r["variant"].endswith("REST API"))
    gpus = "with one GPU each from the NVML double" if s["gpus_per_kernel"] else "without GPUs"
    return [
        f"From `POST /api/kernels` to the first `kernel_info_reply` on the kernel's websocket, "
        f"through a real Jupyter server and engine ({gpus}), against a bare container running "
        f"ipykernel (the floor), {s['runs']} runs each, interleaved. Ratios are over the floor "
        "of the same transport and network.",
        "",
        table(
            ["variant", "p50", "p95", "min", "p50 / floor", "min / floor", "failed"],
            rows,
        ),
        "",
        f"**Reading.** With the defaults (ipc, bridge) a kernel answers "
        f"{ratio(headline['ratio_p50'])} the floor at the median "
        f"({ms(headline['p50'])} ms against {_floor_p50(s, 'ipc', 'bridge')} ms). Across "
        f"transports and networks the ratio runs from {ratio(best['ratio_p50'])} "
        f"({best['variant'][6:]}) to {ratio(worst['ratio_p50'])} ({worst['variant'][6:]}). "
        f"A local ipykernel, with no container at all, takes {ms(local['p50'])} ms through "
        f"jupyter_client and {ms(local_rest['p50'])} ms through the same server's REST API.",
    ]


def _floor_p50(s: dict[str, Any], transport: str, network: str) -> str:
    name = f"floor: {transport}, network {network}"
    return ms(next(r["p50"] for r in s["rows"] if r["variant"] == name))


def _phases(s: dict[str, Any], results: dict[str, Any]) -> list[str]:
    rows = [[r["description"], ms1(r["p50"]), ms1(r["p95"])] for r in s["phases"]]
    phases = {r["phase"]: r for r in s["phases"] if r["phase"] not in ("total", "provisioner")}
    provisioner = next(r for r in s["phases"] if r["phase"] == "provisioner")["p50"]
    floor = next(r for r in s["rows"] if r["variant"] == "floor: ipc, network bridge")["p50"]
    ranked = sorted(phases.values(), key=lambda r: r["p50"], reverse=True)
    total = next(r for r in s["phases"] if r["phase"] == "total")["p50"]
    engine_and_kernel = sum(phases[k]["p50"] for k in ("create", "start", "ready"))
    return [
        "Ours with the defaults (ipc, bridge), split at the provisioner's stamps and the "
        "client's, which share one clock. p50 and p95 of each phase (they need not add up).",
        "",
        table(["phase", "p50", "p95"], rows),
        "",
        f"Looking the spec up alone takes {s['spec_lookup_median'] * 1e6:.0f} µs (median, in "
        "the server).",
        "",
        f"**Reading.** The engine and ipykernel (create, start, ready) take "
        f"{engine_and_kernel / total:.0%} of the median launch; the largest phases are "
        + ", ".join(f"{r['description'].split(':')[0]} ({ms1(r['p50'])} ms)" for r in ranked[:3])
        + ". The provisioner's own steps before the engine (prepare, image, gpus) take "
        + f"{ms1(sum(phases[k]['p50'] for k in ('prepare', 'image', 'gpus')))} ms. The provisioner "
        f"alone, from pre_launch to the kernel's first answer, takes {ms(provisioner)} ms: "
        f"{ratio(provisioner / floor)} the floor; the rest is the Jupyter server's request, "
        "session and websocket handling, which every kernel pays (see the local ipykernel "
        "through the same server above).",
    ]


def _concurrency(s: dict[str, Any], results: dict[str, Any]) -> list[str]:
    rows = [
        [
            str(r["kernels"]),
            r["what"],
            ms(r["total_p50"]),
            ms(r["per_kernel_p50"]),
            ms(r["per_kernel_p95"]),
            str(r["failures"]),
        ]
        for r in s["rows"]
    ]
    by = {(r["kernels"], r["what"]): r for r in s["rows"]}
    sizes = sorted({r["kernels"] for r in s["rows"]})
    ratios = ", ".join(
        f"{n}: {ratio(by[(n, 'ours')]['total_p50'] / by[(n, 'bare')]['total_p50'])}" for n in sizes
    )
    failures = sum(r["failures"] for r in s["rows"] if r["what"] == "ours")
    lag = s["loop_lag"]
    gpus = (
        "one GPU each, so launches also queue on the allocator's host lock"
        if s["gpus_per_kernel"]
        else "no GPUs"
    )
    return [
        f"n kernels started at once through the REST API ({gpus}), "
        "against n bare containers started at once; total is until the last one answered. "
        f"{s['rows'][0]['rounds']} rounds each.",
        "",
        table(["n", "what", "total p50", "per-kernel p50", "per-kernel p95", "failed"], rows),
        "",
        f"**Reading.** Total time, ours over bare: {ratios}. Failed launches of ours: "
        f"{failures}. During the 10-kernel launches the server's event loop lagged "
        f"{ms1(lag['p50'])} ms at the median, {ms1(lag['p95'])} ms at p95, {ms1(lag['max'])} ms "
        f"at worst ({lag['over_100ms']} of {lag['samples']} samples over 100 ms).",
    ]


def _rest(s: dict[str, Any], results: dict[str, Any]) -> list[str]:
    rows = [
        [
            str(r["cheap_images"]),
            str(r["catalog_rows"]),
            r["endpoint"],
            ms1(r["p50"]),
            ms1(r["p95"]),
        ]
        for r in s["rows"]
    ]
    top = max(r["cheap_images"] for r in s["rows"])
    at_top = {r["endpoint"]: r for r in s["rows"] if r["cheap_images"] == top}
    nvml = s["nvml_poll"]
    return [
        f"{s['requests']} sequential requests per endpoint, after cheap images (tags) were added "
        "on top of the host's own images; the catalog lists every tag, and every one added is "
        "a kernel spec.",
        "",
        table(["cheap images", "catalog rows", "endpoint", "p50", "p95"], rows),
        "",
        f"One GPU inventory read through the NVML double ({nvml['gpus']} GPUs, cache off): "
        f"{nvml['p50'] * 1e6:.0f} µs p50, {nvml['p95'] * 1e6:.0f} µs p95.",
        "",
        f"**Reading.** With {top} cheap images the catalog answers in "
        f"{ms1(at_top['/gpu-containers/images']['p95'])} ms at p95 and the GPU endpoint in "
        f"{ms1(at_top['/gpu-containers/gpus']['p95'])} ms; the panel polls these every few "
        "seconds.",
    ]


def _lifecycle(s: dict[str, Any], results: dict[str, Any]) -> list[str]:
    rows = [[r["what"], ms(r["p50"]), ms(r["p95"]), ms(r["min"])] for r in s["rows"]]
    return [
        f"{s['runs']} runs each.",
        "",
        table(["what", "p50", "p95", "min"], rows),
    ]


def _warm_pool(s: dict[str, Any], results: dict[str, Any]) -> list[str]:
    rows = [[r["variant"], ms(r["p50"]), ms(r["p95"]), ms(r["min"])] for r in s["rows"]]
    return [
        s.get("description", ""),
        "",
        table(["variant", "p50", "p95", "min"], rows),
        "",
        f"**Reading.** {s.get('reading', '')}",
    ]


def _service(s: dict[str, Any], results: dict[str, Any]) -> list[str]:
    goals = s["goals"]
    starts = s["starts"]["rows"]
    trips = s["round_trips"]["rows"]
    by = {r["key"]: r for r in starts}
    direct, alone, gateway = by["direct"], by["service"], by["gateway"]
    by = {r["key"]: r for r in trips}
    t_alone, t_gateway = by["service"], by["gateway"]
    race = s["race"]
    gpus = (
        "one GPU each, of four static ones"
        if s["gpus_per_kernel"]
        else "no GPUs (the engine cannot attach them)"
    )
    start_rows = [
        [
            r["variant"],
            ms(r["p50"]),
            ms(r["p95"]),
            ms(r["min"]),
            ms(r["post_p50"]),
            ms1(r["first_reply_p50"]),
            ratio(r["ratio_p50"]),
            ratio(r["paired_ratio_p50"]),
            ms(r["paired_added_post_p50"]),
            ms1(r["paired_added_first_reply_p50"]),
            str(r["failures"]),
        ]
        for r in starts
    ]
    trip_rows = [
        [r["variant"], ms1(r["p50"]), ms1(r["p95"]), ms1(r["added_p50"]), ms1(r["added_p95"])]
        for r in trips
    ]
    if "not_measured" in race:
        crowd = f"**Many users at once**: not measured. {race['not_measured']}"
    else:
        crowd = _race(race)
    start_met = gateway["ratio_p50"] <= goals["start_ratio"]
    hop_met = t_gateway["added_p50"] < goals["hop_added_s"]
    return [
        "A direct-mode Jupyter server with the extension, the kernel service (`jupyter "
        "gpu-containers serve`, as root, users from its administrator's map with tokens from its "
        "token file) and one user's `jupyter server --gateway-url` (Jupyter Server's stock "
        "gateway client, with the extension in gateway mode), side by side in this one run: the "
        f"same image and kernel spec (ipc, network bridge, {gpus}), no warm pool on either side, "
        f"so every start is cold. {s['runs']} starts per variant, interleaved with the order "
        "rotating. *The service alone* is the service called with the user's token and no "
        "user's server: the difference between it and direct mode is the service's own cost, "
        "the rest is the user's server's hop.",
        "",
        "**Kernel start**: `POST /api/kernels` until the kernel answers `kernel_info` on its "
        "websocket, as JupyterLab starts one; *POST* is until the POST answered, *first reply* "
        "from then to the `kernel_info_reply` (medians). *p50 / direct* is the ratio of the "
        "medians; the *paired* columns are taken round by round against the direct start of "
        "the same round (the median of the ratios, and of what the POST and the first reply "
        "added), which a host's passing load disturbs less.",
        "",
        table(
            [
                *("variant", "p50", "p95", "min", "POST", "first reply", "p50 / direct"),
                *("paired ratio", "paired + POST", "paired + first reply", "failed"),
            ],
            start_rows,
        ),
        "",
        f"**Execute round trip**: a tiny `execute_request` (`{s['round_trips']['code']}`) to its "
        f"`execute_reply` on an open kernel websocket, {s['round_trips']['n']} per path, "
        "interleaved one by one; *added* is over direct mode.",
        "",
        table(["variant", "p50", "p95", "added p50", "added p95"], trip_rows),
        "",
        crowd,
        "",
        f"**Reading.** Through the service a kernel answers in {ms(gateway['p50'])} ms at the "
        f"median against {ms(direct['p50'])} ms in direct mode: "
        f"{ratio(gateway['ratio_p50'])}, the goal is at most {ratio(goals['start_ratio'])} "
        f"({'met' if start_met else 'missed'}); round by round the ratio's median is "
        f"{ratio(gateway['paired_ratio_p50'])}: over direct mode, the POST through the user's "
        f"server and the service adds {ms(gateway['paired_added_post_p50'])} ms and the first "
        f"reply over the user's server's websocket "
        f"{ms1(gateway['paired_added_first_reply_p50'])} ms. The service alone takes "
        f"{ratio(alone['ratio_p50'])} direct mode ({ratio(alone['paired_ratio_p50'])} round "
        "by round). An execute round trip through the user's "
        f"server and the service adds {ms1(t_gateway['added_p50'])} ms at the median and "
        f"{ms1(t_gateway['added_p95'])} ms at p95 (the goal: under "
        f"{goals['hop_added_s'] * 1000:.0f} ms at the median, "
        f"{'met' if hop_met else 'missed'}); the service alone adds "
        f"{ms1(t_alone['added_p50'])} ms.",
    ]


def _race(race: dict[str, Any]) -> str:
    outcomes = race["outcomes"]
    won = ", ".join(str(o["won"]) for o in outcomes)
    refused = sum(o["refused"].get("409", 0) for o in outcomes)
    other = sum(n for o in outcomes for code, n in o["refused"].items() if code != "409")
    return (
        f"**Many users at once**: {race['users'] * race['starts_each']} starts from "
        f"{race['users']} users ({race['starts_each']} each) at once, straight to the service, "
        f"for {race['gpus']} GPUs with `GPUAllocator.max_gpus_per_user = "
        f"{race['max_gpus_per_user']}`; rounds: {race['rounds']}. Until every request had its "
        f"answer: {ms(race['wall']['p50'])} ms at the median (worst "
        f"{ms(race['wall']['p95'])} ms); each answer came after {ms(race['answer']['p50'])} ms "
        f"at the median, {ms(race['answer']['p95'])} ms at p95. Won per round: {won} (expected "
        f"{race['expected_winners']}, on distinct GPUs, one per user); refused with 409 No free "
        f"GPU: {refused}; other answers: {other}; requests with no answer (timeouts): "
        f"{race['timeouts']}. "
        + ("As expected." if race["as_expected"] else "**Not as expected**: see results.json.")
    )


def s1(seconds: float | None) -> str:
    """Seconds with one decimal."""
    return "–" if seconds is None or math.isnan(seconds) else f"{seconds:.1f}"


def mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"


def share(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.0%}"


def _lab(s: dict[str, Any], results: dict[str, Any]) -> list[str]:
    if "not_measured" in s:
        return [f"Not measured: {s['not_measured']}"]
    plan = s["plan"]
    w = s["waits"]
    u = s["utilisation"]
    r = s["reclaims"]
    m = s["memory"]
    h = s["handoff"]
    d = s["double_bookings"]
    starts = s["gpu_starts"]
    refused = ", ".join(f"{n} × {code}" for code, n in starts["refused"].items()) or "none"
    wait_rows = [
        [what, str(st["n"]), s1(st["p50"]), s1(st["p95"]), s1(st["max"])]
        for what, st in (
            ("every GPU start", w["overall"]),
            ("per student: their mean wait", w["per_student_mean"]),
            ("per student: their longest wait", w["per_student_max"]),
            ("a CPU kernel's start (no queue), for scale", w["cpu_start"]),
        )
    ]
    handoff_rows = [
        [what, str(st["n"]), ms(st["p50"]), ms(st["p95"]), ms(st["max"])]
        for what, st in (
            ("DELETE answered → the next waiting start's container seen", h["after_delete_booked"]),
            ("DELETE answered → the next waiting start's 201", h["after_delete"]),
            ("DELETE answered → its first kernel_info_reply", h["after_delete_to_reply"]),
            ("reclaim → the next waiting start's container seen", h["after_reclaim_booked"]),
            ("reclaim (container gone) → the next waiting start's 201", h["after_reclaim"]),
            ("reclaim (container gone) → its first kernel_info_reply", h["after_reclaim_to_reply"]),
        )
    ]
    student_rows = [
        [row["student"], str(row["n"]), str(row["failures"]), s1(row["p50"]), s1(row["max"])]
        for row in s["students_rows"]
    ]
    released = r["released_after_warning"]
    done = r["done_after_warning"]
    reclaim_text = (
        f"{r['reclaimed']} of {r['idle']} idle notebooks were reclaimed. Warned within idle "
        f"time + one check interval (≤ {r['warn_bound_s']:.1f} s after going idle, by the "
        f"service's whole-second `idle_since`): {r['warned_within']} of {r['reclaimed']}. "
        f"GPU given back (the container stopped, seen by the monitor) within grace + one check "
        f"interval (≤ {r['release_bound_s']:.1f} s after the warning, the monitor's look "
        f"included): **{r['released_within']} of {r['reclaimed']}**; after the warning: "
        f"{s1(released['p50'])} s at the median, {s1(released['max'])} s at most (the release "
        "is decided at a check, then the kernel's shutdown takes its time). The service's "
        f'"reclaimed" line, once the shutdown is done: {s1(done["p50"])} s after the warning '
        f"at the median, {s1(done['max'])} s at most. Working notebooks reclaimed by mistake: "
        f"{r['working_notebooks_reclaimed']}."
        if r["idle"]
        else "No notebook of this round was left idle: no reclaim to measure."
    )
    verdict = "none" if d["count"] == 0 else f"**{d['count']}** (see results.json)"
    return [
        f"{s['students']} students ({s['accounts']}), each with a token of the service's "
        f"token file and a workspace of their own, against {s['gpus']} GPUs (the NVML double, "
        "per-process use driven by the benchmark: a working kernel shows "
        "SM utilisation, an idle one only memory), through the kernel service on loopback. "
        f"Seed **{s['seed']}** (`--seed {s['seed']}` repeats the draw). Each student arrives "
        f"within {plan['arrival_window']:.0f} s, opens a CPU kernel held until the end, then "
        f"1 to 3 notebooks {plan['notebook_gap'][0]:.0f} to {plan['notebook_gap'][1]:.0f} s "
        "apart, each asking for one GPU and to wait for it (`KERNEL_GPU_CONTAINERS_REQUEST=1`, "
        "`KERNEL_GPU_CONTAINERS_WAIT=true`); a notebook works for "
        f"{plan['run_seconds'][0]:.0f} to {plan['run_seconds'][1]:.0f} s and is shut down, or "
        f"(a chance of {plan['idle_share']:.0%}) is left idle until `GPUReclaim` (idle "
        f"{plan['idle_minutes'] * 60:.0f} s, grace {plan['grace_minutes'] * 60:.0f} s, checks "
        f"every {plan['check_interval']:.0f} s, action shutdown) takes its GPU. "
        f"{s['notebooks']} GPU notebooks ({s['idle_notebooks']} left idle); the round took "
        f"{s['round_s']:.0f} s.",
        "",
        f"- **Double bookings**: {verdict}, in {d['looks']} looks at the engine's kernel "
        f"containers, one every {d['every_s']} s (a GPU UUID in the labels of two live "
        "kernel containers).",
        f"- **GPU utilisation**: {share(u['booked'])} of the {s['gpus']} GPUs' seconds were "
        f"booked over the round ({u['window_s']:.0f} s); {share(u['while_waiting'])} while some "
        f"start waited ({u['waiting_s']:.0f} s of the round).",
        f"- **GPU starts**: {starts['answered_201']} answered 201; refused: {refused}.",
        f"- **Reclaims**: {reclaim_text}",
        f"- **The service's memory** (resident, its process; its children's apart): "
        f"{mib(m['before_rss'])} before any kernel; {mib(m['at_most_kernels_rss'])} with "
        f"{m['most_kernels']} kernels running ({m['most_gpu_kernels']} with a GPU), children "
        f"{mib(m['at_most_kernels_children_rss'])}; at most {mib(m['peak_rss'])}.",
        "",
        "**Waits** (seconds): a GPU start's POST until its answer, queue and launch together. "
        "The spread between students: Jain's fairness index of the per-student mean waits "
        f"(1: all alike, 1/n: one student did all the waiting) is **{w['jain_index']:.2f}**; "
        "the largest per-student mean over the smallest is "
        f"{ratio(w['max_over_min_mean']) or '–'}.",
        "",
        table(["what", "n", "p50", "p95", "max"], wait_rows),
        "",
        "**A GPU freed to the next waiting start** (ms): from a student's DELETE answered, or "
        "a reclaim's container gone (the monitor's look, up to "
        f"{d['every_s']} s late: those read short), to the first start that had waited and got "
        "that GPU.",
        "",
        table(["what", "n", "p50", "p95", "max"], handoff_rows),
        "",
        "<details><summary>Per student: GPU starts, refused, median and longest wait (s)</summary>",
        "",
        table(["student", "starts", "refused", "p50", "max"], student_rows),
        "",
        "</details>",
    ]


def _k8s(s: dict[str, Any], results: dict[str, Any]) -> list[str]:
    by = {r["key"]: r for r in s["rows"]}
    pod, floor, shm = by["pod"], by["floor"], by["floor_shm"]
    floor_text = f"{ms(floor['p50'])} ms for the bare pod and {ms(shm['p50'])} ms with /dev/shm"
    node = {r["step"]: r for r in s["node_timeline"]}
    volume_wait = node["to_sandbox"]["floor_shm_p50"] - node["to_sandbox"]["floor_p50"]
    rows = [
        [
            r["variant"],
            ms(r["p50"]),
            ms(r["p95"]),
            ms(r["mean"]),
            ms(r["min"]),
            ratio(r.get("ratio_p50")),
            ratio(r.get("paired_ratio_p50")),
            str(r["failures"]),
        ]
        for r in s["rows"]
    ]
    phases = {r["phase"]: r for r in s["phases"]}
    phase_rows = [
        [
            r["description"],
            ms1(r["p50"]),
            ms1(r["p95"]),
            r["floor_description"] or "",
            ms1(r["floor_p50"]) if r["floor_p50"] is not None else "",
        ]
        for r in s["phases"]
    ]
    # What the kernel pays over the floor, phase by phase (the floor has no prepare, image,
    # gpus or service phases: all of theirs is added).
    added = {
        key: phases[key]["p50"] - (phases[key]["floor_p50"] or 0.0)
        for key in ("prepare", "image", "gpus", "create", "start", "ready", "service")
        if key in phases and not math.isnan(phases[key]["p50"])
    }
    ranked = sorted(added.items(), key=lambda kv: kv[1], reverse=True)
    met = pod["ratio_p50"] <= s["goal"]
    v = s["versions"]
    return [
        f"A real control plane and one real node (Kubernetes {v['kubernetes']} built from "
        f"source, containerd {v['containerd']}, runc, cgroupfs; the node advertises "
        f"{s['node_gpus']} `nvidia.com/gpu` without a device plugin), the image imported from "
        "the local Docker engine. *Pod kernel*: `POST /api/kernels` to the kernel service "
        '(`ServiceApp.backend = "kubernetes"`, as the service account of '
        "deploy/kubernetes/rbac.yaml) until its 201, which the service answers once the kernel "
        "answered `kernel_info` on the pod's IP; the pod has its connection Secret, the user's "
        "workspace claim, /dev/shm and the restricted security context. *Floor*: a bare pod of "
        "the same image on the same node, same namespace, same security context, running "
        "ipykernel, from its creation through a watch to the first `kernel_info_reply` from this "
        "host on its IP; no Secret, no service, no workspace. *Floor with /dev/shm*: the same "
        "bare pod with one memory-backed emptyDir, the one volume every kernel pod (and most GPU "
        f"framework pods) has. All ask for {s['gpus_per_kernel']} GPU. {s['runs']} rounds "
        f"after {s['warmups']} uncounted, the order rotating; after each start the run waits, "
        "untimed, until no container of that pod runs on the node. Ratios are over the bare "
        "pod; *paired* is the median of the rounds' ratios.",
        "",
        table(["variant", "p50", "p95", "mean", "min", "p50 / floor", "paired", "failed"], rows),
        "",
        f"After the 201, the first `kernel_info_reply` over the kernel's websocket (through the "
        f"service) takes {ms1(pod['first_reply_p50'])} ms more at the median (not in the "
        "ratio).",
        "",
        '**Where the time goes**: the phases the service logs for each kernel ("Kernel … '
        'answers from container … (prepare, image, gpus, create, start, ready)"), beside the '
        "floor's own; medians and p95 (they need not add up).",
        "",
        table(["kernel phase", "p50", "p95", "floor phase", "floor p50"], phase_rows),
        "",
        "**Seen from the node**: containerd's own times of each pod's sandbox and container "
        "(the API's times have a resolution of a second), against the request's start and its "
        "answer on this host's wall clock; medians.",
        "",
        table(
            ["step", "pod kernel", "floor", "floor + /dev/shm", "kernel − floor", "kernel − shm"],
            [
                [
                    r["description"],
                    ms1(r["pod_p50"]),
                    ms1(r["floor_p50"]),
                    ms1(r["floor_shm_p50"]),
                    ms1(r["pod_p50"] - r["floor_p50"]),
                    ms1(r["pod_p50"] - r["floor_shm_p50"]),
                ]
                for r in s["node_timeline"]
            ],
        ),
        "",
        f"**Reading.** A kernel pod answers in {ms(pod['p50'])} ms at the median against "
        f"{floor_text}: {ratio(pod['ratio_p50'])} the bare pod (round by round "
        f"{ratio(pod['paired_ratio_p50'])}); the goal is at most {ratio(s['goal'])} "
        f"({'met' if met else 'missed'}). Against the floor with /dev/shm, the kernel takes "
        f"{ratio(pod['ratio_over_shm_p50'])}: one memory-backed volume alone makes the floor's "
        f"sandbox {ms(volume_wait)} ms later (the kubelet mounts a pod's volumes before it makes "
        "its sandbox, and checks whether they are mounted every 300 ms), and a kernel pod "
        "needs volumes (its connection Secret, /dev/shm, its workspace). "
        "Over the floor, the largest additions of the kernel's own phases are "
        + ", ".join(f"{key} ({ms1(value)} ms)" for key, value in ranked[:3])
        + ". On both sides the start phase is most of the time "
        f"({share(phases['start']['p50'] / pod['p50'])} of the kernel's median): the scheduler "
        "binds the pod, the kubelet makes the sandbox (pause container, CNI bridge) and the "
        "container, and reports it running only at its next relist of the runtime (the "
        "kubelet's generic PLEG, once a second), by which time ipykernel has mostly booted: "
        "hence the short ready phase of both. Where the relist's tick falls in a start is "
        "chance, so each start of either variant moves by up to a second with it: read the "
        "ratio with the min and p95 beside it, over many rounds.",
    ]


def _podman(s: dict[str, Any], results: dict[str, Any]) -> list[str]:
    if "skipped" in s:
        return [f"Not measured: {s['skipped']}."]
    rows = [
        [r["variant"], ms(r["p50"]), ms(r["p95"]), ms(r["min"]), str(r["failures"])]
        for r in s["rows"]
    ]
    return [
        f"A kernel's cold start on the rootless Podman {s['podman']} of a user outside the docker "
        f"group ({s['user']}, storage on {s['storage_driver']}), from `POST /api/kernels` to "
        "the first `kernel_info_reply` on its websocket, against a bare container running "
        "ipykernel started with the `podman` command as the same user (Podman's floor) and "
        f"Docker's floor for the same image, {s['runs']} runs each, interleaved.",
        "",
        table(["variant", "p50", "p95", "min", "failed"], rows),
        "",
        f"**Reading.** A kernel on rootless Podman answers "
        f"{ratio(s['ours_over_podman_floor'])} Podman's own floor at the median "
        f"({ratio(s['ours_over_podman_floor_min'])} at the minimum); Podman's floor is "
        f"{ratio(s['podman_floor_over_docker_floor'])} Docker's.",
        *_podman_phases(s),
    ]


def _podman_phases(s: dict[str, Any]) -> list[str]:
    """Where ours spends its time on Podman, beside the floor's one ``podman run -d``."""
    if "phases" not in s:  # results of a run before the split was measured
        return []
    rows = [[r["description"], ms1(r["p50"]), ms1(r["p95"])] for r in s["phases"]]
    phases = {r["phase"]: r["p50"] for r in s["phases"]}
    floor = next(r for r in s["rows"] if r["variant"].startswith("floor, rootless"))["p50"]
    run_d = s["floor_run_d"]["p50"]
    return [
        "",
        "Ours split at the provisioner's stamps and the client's (one clock), p50 and p95 of "
        "each phase (they need not add up):",
        "",
        table(["phase", "p50", "p95"], rows),
        "",
        f"The floor's `podman run -d` returns after {ms1(run_d)} ms (median) and its kernel "
        f"answers {ms1(floor - run_d)} ms later. Ours creates and starts its container in "
        f"{ms1(phases['create'] + phases['start'])} ms (one `podman run --detach` as well: its "
        f"create phase holds the start) and its kernel answers {ms1(phases['ready'])} ms "
        "after that; its image's inspection is kept while Podman's image events are watched, "
        f"so the image phase takes {ms1(phases['image'])} ms.",
    ]


def _slurm(s: dict[str, Any], results: dict[str, Any]) -> list[str]:
    if "skipped" in s:
        return [f"Not measured: {s['skipped']}."]
    rows = [
        [r["variant"], ms(r["p50"]), ms(r["p95"]), ms(r["min"]), str(r["failures"])]
        for r in s["rows"]
    ]
    waited, after = s["slurm_scheduling"], s["ours_without_scheduling"]
    rows += [
        [
            "Slurm's wait for a batch job: submitted to running (ours' start phase)",
            ms(waited["p50"]),
            ms(waited["p95"]),
            ms(waited["min"]),
            "",
        ],
        ["ours without that wait", ms(after["p50"]), ms(after["p95"]), ms(after["min"]), ""],
    ]
    return [
        f"A kernel's cold start as a Slurm job ({s['slurm']}, one node, four GPUs as GRES) of a "
        f"user outside the docker group ({s['user']}), with one GPU, from `POST /api/kernels` "
        "to the kernel service to the first `kernel_info_reply` on its websocket, against the "
        "same container running ipykernel in a bare `srun` of the same user (the floor: ports "
        f"chosen beforehand, its first reply over ZMQ), {s['runs']} runs each, interleaved.",
        "",
        table(["variant", "p50", "p95", "min", "failed"], rows),
        "",
        f"**Reading.** Ours answers {ratio(s['ours_over_floor'])} the floor at the median. "
        "The difference is mostly Slurm's: a kernel's job is a batch job (`sbatch`: it must "
        "outlive the service, which a restarted service reattaches), and Slurm starts batch "
        "jobs at its next scheduling pass, where `srun` is allocated at once. Without that "
        f"wait, ours is {ratio(s['ours_without_scheduling_over_floor'])} the floor.",
    ]


SCALE_CURVES = {
    "queue": (
        "a waiting start's turn",
        "waiting tickets (of N/4 users)",
        "the host's queue read from the state directory (ticket files held by their waiters' "
        "flocks) and put in fair order, then the turn taken with all 8 GPUs held, the directory "
        "unchanged since the waiter's last check (the reading and the order kept: only the "
        "ticket the turn rests on is asked whether its waiter still holds it)",
    ),
    "queue_changed": (
        "a waiting start's turn after a change",
        "waiting tickets (of N/4 users)",
        "the same, just after one start left the queue and another joined it: every ticket "
        "file looked at again (a stat each, their flocks from /proc/locks), the order made again",
    ),
    "quota": (
        "a GPU start's quota check",
        "recorded GPU sessions of the user",
        "what the user's day files of the period say, as a server keeps it between checks "
        "(read again only where appended to; one more session ended before each check)",
    ),
    "booking": (
        "a GPU start's booking",
        "kernel containers holding GPUs (of N/4 users)",
        "the host's allocation lock, the ledger (kept between bookings from the engine's "
        "events) and the choice of the one free GPU of 8, on the Docker engine",
    ),
    "ledger_by_list": (
        "the ledger by a full list",
        "kernel containers holding GPUs (of N/4 users)",
        "the same ledger read from a list of every managed container, as a booking read it "
        "before the index: the reference, measured beside it",
    ),
    **{
        f"rest_{endpoint}": (
            f"GET /gpu-containers/{endpoint}",
            "kernel containers holding GPUs (of N/4 users)",
            f"{why}, from a server of the section's own (direct mode, its account an "
            "administrator, the same 8 GPUs), requests one after another",
        )
        for endpoint, why in (
            ("gpus", "the panel's GPUs and who holds each"),
            (
                "images",
                "the catalog: the images, their verdicts, and the engine's disk use (kept "
                "while the engine's events show no change)",
            ),
            ("allocations", "the kernels holding GPUs, as the panel lists them"),
            ("queue", "the host's wait queue (empty here: what N holders add to it)"),
            ("admin", "the admin view: every holder with its user, notebook and time held"),
        )
    },
    "rest_images_changed": (
        "GET /gpu-containers/images after a change",
        "kernel containers holding GPUs (of N/4 users)",
        "the catalog just after a container was created and removed (untimed): the engine's "
        "disk report, kept while the engine's events show no change, taken again",
    ),
}


def _scale(s: dict[str, Any], results: dict[str, Any]) -> list[str]:
    sizes = s["sizes"]
    rows = []
    measured = {k: v for k, v in SCALE_CURVES.items() if k in s["curves"]}
    for key, (what, items, _) in measured.items():
        curve = s["curves"][key]
        by_n = {r["n_items"]: r for r in curve["rows"]}
        fit = curve["fit"]
        rows.append(
            [
                what,
                items,
                *(
                    f"{ms1(by_n[n]['p50'])} / {ms1(by_n[n]['p95'])}" if n in by_n else ""
                    for n in sizes
                ),
                f"{fit['shape']} (N^{fit['exponent']})" if fit["exponent"] is not None else "",
            ]
        )
    out = [
        "One decision's cost (p50 / p95, milliseconds) as the work on the host grows, each "
        "curve measured in this one run; the fit is the exponent k of cost ∝ N^k from the "
        "smallest N to the largest (0 flat, about 0.2 logarithmic over these sizes, 1 linear).",
        "",
        table(["decision", "N is", *(f"N = {n:,}" for n in sizes), "fit"], rows),
        "",
    ]
    out += [f"- **{what}**: {how}." for what, _, how in measured.values()]
    top = sizes[-1]
    firsts = [
        f"{what} {ms1(r['first'])} ms"
        for key, (what, _, _) in measured.items()
        for r in s["curves"][key]["rows"]
        if r["n_items"] == top and "first" in r  # a curve after a change has no first apart
    ]
    out += [
        "",
        f"A server's first decision after its start, at N = {top:,} (what it reads once): "
        + "; ".join(firsts)
        + ".",
    ]
    return out


def _restart(s: dict[str, Any], results: dict[str, Any]) -> list[str]:
    measured = all("service_rss" in r for r in s["rows"])
    rows = [
        [
            f"{r['n_items']:,}",
            ms(r["answers"]),
            ms(r["all_listed"]),
            ms(r["cell_again"]),
            str(r["kernels_lost"]),
            str(r["containers_replaced"]),
            *(
                (
                    f"{ms1(r['list_p50'])} / {ms1(r['list_p95'])}",
                    mib(r["service_rss"]),
                    mib(r["service_rss_pages"]),
                )
                if measured
                else ()
            ),
        ]
        for r in s["rows"]
    ]
    out = [
        "`kill -9` of the kernel service with N kernels running on it (spread over five users, "
        "each kernel's websocket open), then its start at once (the systemd unit waits "
        "`RestartSec=2` first). Milliseconds from the kill until the service answers (its "
        "start polled every 0.1 s), until every user's list holds all their kernels, and until a "
        "page that reconnects runs a cell on a kernel (its variables kept); then every kernel is "
        "checked: the same container, its variables kept."
        + (
            " Before each kill, a user's `GET /api/kernels` (milliseconds, p50 / p95 of 20) and "
            "the service's resident memory (its process's VmRSS; the kernels are containers of "
            "their own) with its N kernels and no page connected, then with each kernel's page "
            "connected."
            if measured
            else ""
        ),
        "",
        table(
            [
                "kernels",
                "answers",
                "all listed",
                "a cell again",
                "kernels lost",
                "containers replaced",
                *(
                    ("GET /api/kernels p50 / p95", "service memory", "with the pages")
                    if measured
                    else ()
                ),
            ],
            rows,
        ),
    ]
    first, last = s["rows"][0], s["rows"][-1]
    if measured and last["n_items"] > first["n_items"]:
        per_kernel = (last["service_rss"] - first["service_rss"]) / (
            last["n_items"] - first["n_items"]
        )
        per_page = (last["service_rss_pages"] - last["service_rss"]) / last["n_items"]
        out += [
            "",
            f"**Memory.** Each kernel adds {per_kernel / 1024:,.0f} KiB to the service (from "
            f"{first['n_items']:,} to {last['n_items']:,} kernels), each connected page "
            f"{per_page / 1024:,.0f} KiB more (at {last['n_items']:,}): per 100 kernels with "
            f"their pages, {100 * (per_kernel + per_page) / 2**20:,.1f} MiB.",
        ]
    return out


def _kill_times(r: dict[str, Any]) -> list[str]:
    """A kill's milliseconds (failover.py's row): until the standby held the Lease, answered,
    listed the user's kernels, ran a cell again, and had every kernel back (runs before that
    was measured: blank)."""
    times = [ms(r[k]) for k in ("took_over", "answers", "all_listed", "cell_again")]
    return [*times, ms(r["all_reattached"]) if "all_reattached" in r else ""]


def _failover(s: dict[str, Any], results: dict[str, Any]) -> list[str]:
    handover = s.get("failover")
    if not handover:
        return ["Not measured in this run."]
    if "error" in handover:
        return [f"Failed: {handover['error']}"]
    rows = [
        [
            f"{r['n_items']:,}",
            f"{r['lease_duration']:g} s",
            *_kill_times(r),
            str(r["kernels_lost"]),
            str(r["pods_replaced"]),
        ]
        for r in handover["rows"]
    ]
    short = handover["short"]
    return [
        "Two replicas of the kernel service behind the Lease (`ActiveLease`), on section 9's "
        "control plane and node, N kernel pods running (each kernel's websocket open): "
        "`kill -9` of the active replica's process. Milliseconds from the kill until the "
        "standby holds the Lease, until it answers, until the user's list holds every kernel "
        "again, until a page that reconnects runs a cell (its variables kept), and until the "
        "new replica has reattached every kernel (a user's requests wait for their own kernels "
        "only); then every kernel is checked: the same pod, its variables kept. The replicas "
        "run as processes of "
        "this host: the standby cannot see one end, so it waits for the Lease to lapse "
        "(`lease_duration`), the path of a node lost or a frozen process. In a pod, the kubelet "
        "reports a killed replica's container exited and the standby takes over at once "
        "(tests/test_k8s_deployment.py). The rows with a "
        f"{short['lease_duration']:g} s lease: `lease_duration` {short['lease_duration']:g} s, "
        f"`renew_deadline` {short['renew_deadline']:g} s, `retry_period` "
        f"{short['retry_period']:g} s; the others: the defaults (15, 10 and 2 s).",
        "",
        table(
            [
                "kernels",
                "lease",
                "took over",
                "answers",
                "all listed",
                "a cell again",
                "every kernel back",
                "kernels lost",
                "pods replaced",
            ],
            rows,
        ),
    ]


K8S_SCALE_CURVES = {
    "start": (
        "a kernel start",
        "POST /api/kernels until 201 of a real kernel with one GPU on the real node (the "
        "service's part, the pod and the kernel answering), then DELETE",
    ),
    "rest_kernels": ("GET /api/kernels", "the user's kernel list, requests one after another"),
    "rest_cluster": (
        "GET /gpu-containers/cluster",
        "the cluster view: every node, every kernel pod on it, the verdicts per pool",
    ),
}


def _k8s_scale(s: dict[str, Any], results: dict[str, Any]) -> list[str]:
    scale = s.get("scale")
    if not scale:
        return ["Not measured in this run."]
    if "error" in scale:
        return [f"Failed: {scale['error']}"]
    sizes = scale["sizes"]
    curves = scale["curves"]

    def fitted(key: str) -> str:
        fit = curves[key]["fit"]
        return f"{fit['shape']} (N^{fit['exponent']})" if fit["exponent"] is not None else ""

    def by_n(key: str) -> dict[int, dict[str, Any]]:
        return {r["n_items"]: r for r in curves[key]["rows"]}

    rows = [
        [
            what,
            *(
                f"{ms1(by_n(key)[n]['p50'])} / {ms1(by_n(key)[n]['p95'])}" if n in by_n(key) else ""
                for n in sizes
            ),
            fitted(key),
        ]
        for key, (what, _) in K8S_SCALE_CURVES.items()
    ]
    reattach = by_n("reattach")
    # Runs before the routes waited per kernel have one time: the first answer, after every pod.
    apart = any("reattach_all" in r for r in reattach.values())
    rows.append(
        [
            "reattach: the user's first answer" if apart else "reattach of every kernel pod",
            *(
                f"{ms(reattach[n]['reattach'])}"
                + ("" if apart else f" ({reattach[n]['reattached']:,} pods)")
                if n in reattach
                else ""
                for n in sizes
            ),
            fitted("reattach"),
        ]
    )
    if apart:
        fit_all = curves["reattach"].get("fit_all") or {}
        rows.append(
            [
                "reattach of every kernel pod",
                *(
                    f"{ms(reattach[n]['reattach_all'])} ({reattach[n]['reattached']:,} pods)"
                    if n in reattach
                    else ""
                    for n in sizes
                ),
                f"{fit_all['shape']} (N^{fit_all['exponent']})"
                if fit_all.get("exponent") is not None
                else "",
            ]
        )
    memory = by_n("memory")
    rows.append(
        [
            "the service's memory (VmRSS)",
            *(f"{mib(memory[n]['rss_bytes'])}" if n in memory else "" for n in sizes),
            fitted("memory"),
        ]
    )
    rows.append(
        [
            "the service's CPU while idle (share of a core)",
            *(f"{memory[n]['idle_cpu']:.1%}" if n in memory else "" for n in sizes),
            "",
        ]
    )
    failover_rows = [
        [
            f"{r['n_items']:,}",
            f"{r['nodes']:,}",
            *_kill_times(r),
            str(r["kernels_lost"]),
        ]
        for r in curves["reattach"]["rows"]
    ]
    return [
        "The kernel service of section 9 (the failover's two replicas, the active one answering) "
        "with N kernel pods in its namespace: stand-ins on simulated nodes (KWOK, eight GPUs "
        "each), copies of one of its real kernels' pods and Secrets, of N/4 users, which it "
        "cannot tell from its kernels, beside the user's real kernels on the real node. p50 / "
        "p95 in milliseconds, each curve measured in this one run; the fit is the exponent k of "
        "cost ∝ N^k from the smallest N to the largest (0 flat, about 0.2 logarithmic, 1 "
        "linear). A simulated node runs nothing: no kernel's own work is in these numbers "
        "(the kernel start is a real one, on the real node).",
        "",
        table(["", *(f"N = {n:,}" for n in sizes), "fit"], rows),
        "",
        *(f"- **{what}**: {how}." for what, how in K8S_SCALE_CURVES.values()),
        "- **reattach**: `kill -9` of the active replica; from the standby holding the Lease to "
        "the user's first answer, and to every kernel pod reattached (the stand-ins, and the "
        "user's real ones, from the pods and their Secrets). A request about a kernel waits "
        "for that kernel only, which recovery takes first; in runs before that, the first "
        "answer waited for every pod.",
        "- **memory** and **CPU**: the active replica's resident memory, every kernel pod one "
        "of its kernels (each reattached), and its CPU time over a while in which nothing was "
        "asked of it (its kernels' restarters, its pod watch, its activity sockets: those to "
        "the stand-ins fail at once, their addresses routed nowhere, and retry every 100 ms).",
        "",
        "The kills, milliseconds from each (as in section 14): until the standby holds the "
        "Lease, answers, lists the user's kernels, runs a cell in a real one again, and has "
        "reattached every kernel pod.",
        "",
        table(
            [
                "kernel pods",
                "simulated nodes",
                "took over",
                "answers",
                "all listed",
                "a cell again",
                "every pod back",
                "kernels lost",
            ],
            failover_rows,
        ),
    ]
