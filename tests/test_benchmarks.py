"""The benchmark command works end to end (python -m benchmarks --quick): every section runs
against the real engine, writes its numbers, and leaves nothing behind. Its numbers are not
checked: a quick run's two samples mean nothing, and benchmarks are not timed tests.

Two runs, one per pytest part (tests/conftest.py, _engines_part): the Docker sections', whose
servers run kernels as root on the Docker engine, in the rest's session, never beside it (the
rest's tests read the host's ledger: root's kernels with GPUs, the queue's turns by GPUs held);
the other engines' sections (Kubernetes, rootless Podman, Slurm) in the engines' session."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import docker
import pytest
from stale_runs import image_tags

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # benchmarks/ is a package of the repository, not installed

from benchmarks import report  # noqa: E402
from benchmarks.__main__ import SECTIONS, merge_earlier  # noqa: E402
from benchmarks.harness import kernel_ports  # noqa: E402


def bench_homes() -> set[Path]:
    """The benchmark command's temporary directories (its servers' homes, the floors' files)."""
    return {p for d in {Path("/tmp"), Path(tempfile.gettempdir())} for p in d.glob("jgc-bench-*")}


def rows_of(section: dict[str, Any]) -> list[dict[str, Any]]:
    rows = list(section.get("rows", []))
    for part in ("starts", "round_trips"):  # the kernel service's section
        rows += section.get(part, {}).get("rows", [])
    rows += section.get("students_rows", [])  # the lab's
    rows += [r for curve in section.get("curves", {}).values() for r in curve["rows"]]  # scale's
    return rows + list(section.get("phases", []))


OTHER_ENGINES_SECTIONS = ("k8s", "podman", "slurm")
DOCKER_SECTIONS = tuple(name for name in SECTIONS if name not in OTHER_ENGINES_SECTIONS)


def quick_run(
    out: Path, docker_client: docker.DockerClient, sections: tuple[str, ...]
) -> dict[str, Any]:
    """``python -m benchmarks --quick`` of ``sections`` into ``out``: its results, each section
    without an error, with rows, no failures and finite numbers; nothing of the run is left
    (containers by the benchmark's label, its image tags, its temporary directories)."""
    before = image_tags(docker_client)
    homes_before = bench_homes()
    done = subprocess.run(
        # The image the test suite builds (the command's default, the demo image, is what the
        # set-up command builds).
        [
            *(sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)),
            *("--sections", ",".join(sections)),
            *("--image", "jgc/debian-ipykernel:bookworm"),
            *("--podman-user", os.environ.get("JGC_TEST_PODMAN_USER") or "jgc-podman-user"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=850,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    assert set(results["sections"]) == set(sections)
    # What the run said of each failure it counted (a failure is said, and the run goes on).
    said = [line for line in done.stdout.splitlines() if " failed: " in line]
    for name, section in results["sections"].items():
        assert "error" not in section, (name, section)
        rows = rows_of(section)
        assert rows, name
        for row in rows:
            assert row.get("failures", 0) == 0, (name, row, said)
            for key in ("p50", "p95", "min", "total_p50", "per_kernel_p95"):
                if key in row:
                    assert math.isfinite(row[key]) and row[key] >= 0, (name, row)
    assert "Failed:" not in (out / "RESULTS.md").read_text()

    # Nothing of the run is left: containers (by the benchmark's label) and its image tags.
    run = results["run_id"]
    assert not docker_client.containers.list(
        all=True, filters={"label": f"org.jupyter.gpu-containers.benchmark={run}"}
    )
    after = image_tags(docker_client)
    assert not {t for t in after - before if t.startswith(f"jgc-bench-{run}/")}
    # Nor the servers' homes and the floors' directories (the command's own temporary files).
    assert bench_homes() <= homes_before
    return results


@pytest.mark.timeout(900)
def test_quick_run_writes_the_docker_sections(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    results = quick_run(tmp_path, docker_client, DOCKER_SECTIONS)
    start = {r["variant"]: r for r in results["sections"]["kernel_start"]["rows"]}
    assert all(
        math.isfinite(start[f"ours: {t}, network {n}"]["ratio_p50"])
        for t, n in [("ipc", "none"), ("ipc", "bridge"), ("ipc", "host"), ("tcp", "bridge")]
    )
    assert results["machine"]["docker_engine"]

    # The kernel service against direct mode: every path measured, the race as the issue says
    # (as many winners as GPUs, distinct GPUs, one per user, the rest refused, no timeouts).
    service = results["sections"]["service"]
    for part in ("starts", "round_trips"):
        assert {r["key"] for r in service[part]["rows"]} == {"direct", "service", "gateway"}
        assert all(r["n"] > 0 for r in service[part]["rows"]), service[part]
    assert all(math.isfinite(r["ratio_p50"]) for r in service["starts"]["rows"])
    race = service["race"]
    assert race["timeouts"] == 0 and race["as_expected"], race
    assert [o["won"] for o in race["outcomes"]] == [4] * race["rounds"], race

    # The lab: every student's GPU starts answered (they waited in the queue, none refused), no
    # GPU ever on two kernels, every idle notebook's GPU reclaimed and no working one's, and
    # every number the report gives measured (its values are not checked: timings).
    lab = results["sections"]["lab"]
    assert lab["double_bookings"]["count"] == 0, lab["double_bookings"]
    assert lab["double_bookings"]["looks"] > 0 and lab["double_bookings"]["monitor_errors"] == 0
    assert lab["gpu_starts"] == {"answered_201": lab["notebooks"], "refused": {}}, lab["refusals"]
    assert len(lab["students_rows"]) == lab["students"] and not lab["cpu_kernels_refused"]
    assert lab["problems"] == [], lab["problems"]
    reclaims = lab["reclaims"]
    assert reclaims["reclaimed"] == reclaims["idle"] == lab["idle_notebooks"], reclaims
    assert reclaims["working_notebooks_reclaimed"] == 0, reclaims
    assert reclaims["warned_from_log"] == reclaims["idle"], lab["service_log"]
    assert 0 < lab["utilisation"]["booked"] <= 1
    assert lab["memory"]["most_kernels"] >= lab["students"], lab["memory"]
    assert lab["memory"]["at_most_kernels_rss"] > 0
    assert lab["handoff"]["frees"] > 0, lab["handoff"]
    assert isinstance(lab["seed"], int)

    # The scale curves: each decision timed at every size, and a fit stated.
    scale = results["sections"]["scale"]
    assert set(scale["curves"]) == {
        *("queue", "queue_changed", "quota", "booking", "ledger_by_list"),
        *(f"rest_{e}" for e in ("gpus", "images", "allocations", "queue", "admin")),
        "rest_images_changed",
    }, scale
    for name, curve in scale["curves"].items():
        assert [r["n_items"] for r in curve["rows"]] == scale["sizes"], name
        assert all(r["n"] > 0 for r in curve["rows"]) and curve["fit"]["shape"], (name, curve)

    # The service killed and started again: every kernel kept, in its own container.
    restart = results["sections"]["restart"]
    assert [r["n_items"] for r in restart["rows"]] == [1, 2], restart
    for row in restart["rows"]:
        assert row["kernels_lost"] == row["containers_replaced"] == 0, row
        assert 0 < row["answers"] <= row["all_listed"] <= row["cell_again"], row
        assert row["service_rss"] > 0 and 0 < row["list_p50"] <= row["list_p95"], row

    markdown = (tmp_path / "RESULTS.md").read_text()
    for title in (
        "1. Kernel start",
        "2. Where the time goes",
        "3. Concurrency",
        "6. Warm pool",
        "7. Kernel service (multi-user) against direct mode",
        "8. A teaching lab: students sharing 8 GPUs through the kernel service",
        "12. How the cost of a decision grows with the work",
        "13. The kernel service killed and started again",
    ):
        assert f"## {title}" in markdown
    assert f"Seed **{lab['seed']}**" in markdown

    # A run of some sections keeps the others of the earlier run in the same --out, each marked
    # with its own date and command; one of another kind (full, not quick) keeps none.
    partial = {**results, "command": "python -m benchmarks --sections service", "earlier": {}}
    partial["sections"] = {"service": service}
    merge_earlier(partial, tmp_path)
    assert set(partial["sections"]) == set(results["sections"])
    assert set(partial["earlier"]) == set(results["sections"]) - {"service"}
    assert partial["sections"]["rest"] == results["sections"]["rest"]
    merged = report.markdown(partial)
    assert f"*Measured in an earlier run: {results['machine']['date']}, `" in merged
    assert merged.count("*Measured in an earlier run") == 9  # sections 1 to 6, 8, 12 and 13
    other = {**partial, "quick": False, "earlier": {}, "sections": {"service": service}}
    merge_earlier(other, tmp_path)
    assert set(other["sections"]) == {"service"}


@pytest.mark.timeout(900)
def test_quick_run_writes_the_other_engines_sections(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    results = quick_run(tmp_path, docker_client, OTHER_ENGINES_SECTIONS)

    # Kubernetes: kernel pods through the service and bare pods, both measured on a real node,
    # each kernel's phases read from the service's log; the cluster and the node are gone.
    k8s = results["sections"]["k8s"]
    by = {r["key"]: r for r in k8s["rows"]}
    assert set(by) == {"pod", "floor", "floor_shm"}, k8s["rows"]
    assert all(r["n"] == 1 for r in by.values()), k8s["rows"]  # --quick: one sample
    assert math.isfinite(by["pod"]["ratio_p50"]) and math.isfinite(by["pod"]["first_reply_p50"])
    phases = {r["phase"]: r for r in k8s["phases"]}
    assert {"create", "start", "ready", "provisioner", "service"} <= set(phases)
    assert all(phases[p]["n"] == 1 for p in ("create", "start", "ready")), k8s["phases"]
    assert k8s["versions"]["kubernetes"].startswith("v1.")
    node = k8s["node_id"]
    assert node and not Path(f"/var/lib/jgc-k8s-{node}").exists()
    assert not Path(f"/run/jgc-k8s-{node}").exists()
    assert not Path(f"/sys/class/net/jgc{node}").exists()
    # Its failover: the active replica killed, the standby took over, every kernel kept.
    handover = k8s["failover"]
    assert "error" not in handover, handover
    (row,) = handover["rows"]
    assert row["n_items"] == 1 and row["kernels_lost"] == row["pods_replaced"] == 0, row
    assert 0 < row["took_over"] <= row["answers"] <= row["all_listed"] <= row["cell_again"], row
    # Its scale curves: stand-in kernel pods on nodes KWOK simulates, each size's every stand-in
    # reattached by the standby after a kill (the failover's kernel and the template too), no
    # real kernel lost; a real start, the user's list and the cluster view at each size.
    scale = k8s["scale"]
    assert "error" not in scale, scale
    curves = scale["curves"]
    assert set(curves) == {"reattach", "start", "rest_kernels", "rest_cluster", "memory"}
    for name, curve in curves.items():
        assert [r["n_items"] for r in curve["rows"]] == scale["sizes"] == [5, 10], (name, curve)
    for r in curves["reattach"]["rows"]:
        assert r["reattached"] == r["n_items"] + 2 and r["kernels_lost"] == 0, r
        assert r["reattach"] >= 0 and r["nodes"] == math.ceil(r["n_items"] / 8), r
    for name in ("start", "rest_kernels", "rest_cluster"):
        assert all(r["n"] > 0 and r["failures"] == 0 for r in curves[name]["rows"]), curves[name]
    assert all(r["rss_bytes"] > 0 and r["idle_cpu"] >= 0 for r in curves["memory"]["rows"])

    # Rootless Podman: our kernel, Podman's floor and Docker's, as the test set-up's account.
    podman = results["sections"]["podman"]
    assert "skipped" not in podman, podman
    assert podman["storage_driver"] == "overlay"
    assert {r["variant"] for r in podman["rows"]} >= {
        "floor, rootless Podman: ipc, no network",
        "ours on rootless Podman: ipc, no network",
    }
    assert math.isfinite(podman["ours_over_podman_floor"])
    assert math.isfinite(podman["podman_floor_over_docker_floor"])
    podman_phases = {r["phase"]: r for r in podman["phases"]}
    assert {"server", "image", "create", "start", "ready", "first_reply"} <= set(podman_phases)
    assert all(podman_phases[p]["n"] == 1 for p in ("create", "start", "ready"))
    assert podman["floor_run_d"]["n"] == 1

    # Slurm: our kernel as a job through the kernel service, the bare srun floor, and Slurm's
    # own wait for a batch job given apart.
    slurm = results["sections"]["slurm"]
    assert "skipped" not in slurm, slurm
    assert {r["variant"] for r in slurm["rows"]} == {
        "srun --gres=gpu:1 true",
        "floor: srun of podman run ipykernel, 1 GPU",
        "ours: the kernel service on Slurm, 1 GPU",
    }
    assert slurm["slurm_scheduling"]["n"] == 1 and slurm["ours_without_scheduling"]["n"] == 1
    assert math.isfinite(slurm["ours_over_floor"])
    assert math.isfinite(slurm["ours_without_scheduling_over_floor"])

    markdown = (tmp_path / "RESULTS.md").read_text()
    for title in (
        "9. Kernels as pods on Kubernetes",
        "14. The kernel service's failover on Kubernetes",
        "15. The kernel service with up to 1,000 kernel pods (KWOK)",
        "10. Kernels on a user's rootless Podman",
        "11. Kernels as Slurm jobs",
    ):
        assert f"## {title}" in markdown


def test_a_bare_kernels_five_ports_are_always_different() -> None:
    """The floors' kernels get their ports from the benchmark (harness.kernel_ports): asked for
    one after the other they repeated for one kernel in a thousand, and a kernel whose two
    channels share a port (over ipc: one socket file replacing the other) never replied, which
    failed a quick run. Held at once, they cannot repeat; asked for 2,000 times here."""
    channels = {"shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"}
    for _ in range(2000):
        ports = kernel_ports()
        assert set(ports) == channels
        assert len(set(ports.values())) == 5, ports
