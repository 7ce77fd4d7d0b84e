"""What bench_feedback.py makes of a measured window: throughput, latency percentiles and
CPU by process; from the Flywheel server's own statistics, its group commits, stalls (and
the slow answers they explain), garbage collections and CPU by thread. Then the printed
summary of a phase, cProfile output by package, and the markdown table of BENCHMARKS.md."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from feedback_load import Load
from harness.cli import ROOT
from harness.results import markdown_table
from harness.stats import percentile


def window_result(load: Load, samples: dict[str, tuple], seconds: float) -> dict[str, Any]:
    """The window's figures from the load's answers and the samples at its two ends."""
    (s0, g0, (b0, bt0), p0, w0, t0, _) = samples["start"]
    (s1, g1, (b1, bt1), p1, w1, t1, _) = samples["end"]
    window = t1 - t0
    cpu = {
        "server": 100 * (s1 - s0) / window,
        "generator": 100 * (g1 - g0) / window,
        "postgres": 100 * (p1 - p0) / window,
        "box": 100 * (b1 - b0) / ((bt1 - bt0) / (os.cpu_count() or 1)),
    }
    lat = sorted(load.latencies)
    ms = 1000.0
    out: dict[str, Any] = {
        "requests": len(lat),
        "rps": len(lat) / seconds,
        "p50_ms": percentile(lat, 0.50) * ms,
        "p95_ms": percentile(lat, 0.95) * ms,
        "p99_ms": percentile(lat, 0.99) * ms,
        "max_ms": (lat[-1] if lat else float("nan")) * ms,
        "statuses": {str(k): v for k, v in sorted(load.statuses.items())},
        "errors": load.errors,
        # CPU in % of one core over the window (the box has os.cpu_count() cores);
        # "other" is everything else on the box: kernel, and jobs that are not ours.
        "server_cpu_pct": cpu["server"],
        # Robust to other jobs on the box: the server's CPU per answered request.
        "server_cpu_ms_per_request": 1000 * (s1 - s0) / max(len(lat), 1),
        "generator_cpu_pct": cpu["generator"],
        "postgres_cpu_pct": cpu["postgres"],
        "box_cpu_pct": cpu["box"],
        "other_cpu_pct": cpu["box"] - cpu["server"] - cpu["generator"] - cpu["postgres"],
    }
    if w0 is not None and w1 is not None:
        epochs = (samples["start"][-1], samples["end"][-1])
        out |= server_result(w0, w1, window, epochs, load.slow, len(lat))
    return out


def server_result(
    w0: dict[str, Any],
    w1: dict[str, Any],
    window: float,
    epochs: tuple[float, float],
    slow_answers: list[tuple[float, float]],
    answered: int,
) -> dict[str, Any]:
    """Group commits, stalls, GC and CPU by thread between two server stats readings."""
    commits = w1["commits"] - w0["commits"]
    items = w1["items"] - w0["items"]
    out: dict[str, Any] = {}
    out["group_commit"] = {
        "commits_per_s": commits / window,
        "mean_batch": items / commits if commits else 0.0,
        "max_batch": w1["max_batch"],
        "max_commit_ms": 1000 * w1["max_commit_s"],
        "mean_commit_ms": 1000 * (w1["commit_s"] - w0["commit_s"]) / max(commits, 1),
        "writer_busy_pct": 100 * (w1["commit_s"] - w0["commit_s"]) / window,
        "mean_db_commit_ms": 1000
        * (w1.get("db_commit_s", 0.0) - w0.get("db_commit_s", 0.0))
        / max(w1.get("db_commits", 0) - w0.get("db_commits", 0), 1),
    }
    # Server stalls in the window, and the answers over 50 ms they explain.
    e0, e1 = epochs
    stalls = [(what, at, d) for what, at, d in w1["slow"] if e0 <= at + d and at <= e1]
    slow = [(at, d) for at, d in slow_answers if at >= e0]
    explained = sum(1 for at, d in slow if any(a <= at + d and at <= a + sd for _, a, sd in stalls))
    out["stalls"] = {
        "events": [
            {"what": what, "at_s": round(at - e0, 3), "ms": round(1000 * d, 1)}
            for what, at, d in stalls
        ],
        "answers_over_50ms": len(slow),
        "of_which_during_a_stall": explained,
    }
    out["gc"] = {
        f"gen{g}": {
            "count": w1.get(f"gc{g}_n", 0) - w0.get(f"gc{g}_n", 0),
            "total_ms": 1000 * (w1.get(f"gc{g}_s", 0.0) - w0.get(f"gc{g}_s", 0.0)),
            "max_ms_whole_run": 1000 * w1.get(f"gc{g}_max_s", 0.0),
        }
        for g in range(3)
    }
    # Server CPU by thread, in ms per answered request.
    out["server_cpu_ms_per_request_by_thread"] = {
        name: 1000 * (w1["threads"][name] - w0["threads"].get(name, 0.0)) / max(answered, 1)
        for name in w1["threads"]
    }
    return out


def print_phase(r: dict[str, Any]) -> None:
    """One server's figures, as the run goes."""
    if "gc" in r:
        print(f"  gc: {r['gc']}")
    if "stalls" in r:
        st = r["stalls"]
        print(
            f"  stalls: {st['answers_over_50ms']} answers > 50 ms, "
            f"{st['of_which_during_a_stall']} during one of: {st['events'][:12]}"
        )
    for key in ("group_commit", "server_cpu_ms_per_request_by_thread"):
        if key in r:
            print(f"  {key}: " + ", ".join(f"{k} {v:.3g}" for k, v in r[key].items()))
    print(
        f"  {r['rps']:,.0f} req/s  p50 {r['p50_ms']:.1f}  p95 {r['p95_ms']:.1f}  "
        f"p99 {r['p99_ms']:.1f} ms  CPU: server {r['server_cpu_pct']:.0f} %  "
        f"generator {r['generator_cpu_pct']:.0f} %  "
        f"postgres {r['postgres_cpu_pct']:.0f} %  other {r['other_cpu_pct']:.0f} %  "
        f"server CPU/request {r['server_cpu_ms_per_request']:.3f} ms  "
        f"statuses {r['statuses']}"
    )


def print_profile(path: Path, name: str, top: int) -> None:
    """Own time by package (where the time goes), then the top functions."""
    import pstats

    stats = pstats.Stats(str(path))
    by_package: Counter[str] = Counter()
    total = 0.0
    for (file, _, func), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        total += tottime
        if "site-packages/" in file:
            package = file.split("site-packages/")[1].split("/")[0]
        elif file.startswith(str(ROOT)):
            package = str(Path(file).relative_to(ROOT))
        elif file == "~":
            package = f"builtin {func}"
        else:
            package = "stdlib " + Path(file).stem
        by_package[package] += tottime
    print(f"\n## {name}: own time by package ({total:.2f} s profiled)")
    for package, t in by_package.most_common(top):
        print(f"{100 * t / total:6.1f} %  {package}")
    print(f"\n## {name}: top functions by own time")
    stats.sort_stats("tottime").print_stats(top)


def markdown(runs: list[dict[str, Any]]) -> str:
    """Both servers of every run, as-is runs first, then by how many patches applied."""
    rows = []
    for run in sorted(runs, key=lambda r: (r["database"], len(r.get("patches", [])), r["label"])):
        d = run["durability"]
        for kind in ("flywheel", "baseline"):
            r = run[kind]
            cells = [
                f"{run['label']} ({run['clients']} clients, {run['seconds']:g} s"
                + (f", {run['workers']} workers)" if run.get("workers", 1) > 1 else ")"),
                "Flywheel" if kind == "flywheel" else "bare FastAPI",
                f"{r['rps']:,.0f}",
                f"{r['p50_ms']:.1f}",
                f"{r['p95_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                f"{r['server_cpu_pct']:.0f} / {r['postgres_cpu_pct']:.0f} / "
                f"{r['other_cpu_pct']:.0f}",
                f"{r['server_cpu_ms_per_request']:.3f}",
            ]
            if kind == "flywheel":
                cells += [
                    f"{run['ratio_rps']:.2f}",
                    f"{d['rows']:,} / {d['ok_answers']:,}",
                    "met" if run["target"]["met"] else "missed",
                ]
            else:
                cells += ["1", "-", "-"]
            rows.append(cells)
    columns = ["run", "server", "req/s", "p50 ms", "p95 ms", "p99 ms"]
    columns += ["CPU % server / pg / other", "server CPU ms/req", "vs bare", "rows / 2xx"]
    return markdown_table([*columns, "target"], "llrrrrrrrll", rows)
