"""What bench_cycle_workers.py makes of one path's run: per cycle, the wall time, the step
functions' seconds and where the rest went (from the timer log of ``cycle_timers.py``),
the rows the cycles table holds afterwards, and every field the two paths disagree on."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from cycle_timers import STEPS

# Fields of the cycles row that both paths must agree on.
COMPARED = (
    "state",
    "dataset_version_in",
    "dataset_version_out",
    "test_accuracy",
    "test_ece",
    "champion_accuracy",
    "model_version",
    "accepted",
    "needs_review",
    "pseudo_precision",
    "pseudo_coverage",
    "labels_by_source",
    "gate",
)


def read_cycles(cfg: Path) -> dict[int, dict[str, Any]]:
    """The cycles table of the project configured by ``cfg``: the compared fields."""
    from sqlalchemy import select

    from flywheel.config import load_settings
    from flywheel.db import Cycle
    from flywheel.workspace import open_workspace

    ws = open_workspace(load_settings(cfg))
    try:
        with ws.db.session() as s:
            rows = s.scalars(select(Cycle).order_by(Cycle.id)).all()
            out = {}
            for c in rows:
                m = c.metrics or {}
                row = {"state": c.state, "error": c.error}
                row["dataset_version_in"] = c.dataset_version_in
                row["dataset_version_out"] = c.dataset_version_out
                for key in COMPARED[3:]:
                    row[key] = m.get(key)
                out[c.id] = row
    finally:
        ws.close()
    return out


def timings(path: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per cycle: wall, step function seconds, and where the rest went."""
    by_cycle: dict[int, list[dict[str, Any]]] = {}
    for e in events:
        if e["cycle_id"] is not None:
            by_cycle.setdefault(int(e["cycle_id"]), []).append(e)
    out = []
    for cycle_id in sorted(by_cycle):
        evs = by_cycle[cycle_id]
        steps = {e["name"]: e for e in evs if e["kind"] == "step" and e["ok"]}
        step_s = {name: steps[name]["t1"] - steps[name]["t0"] for name in STEPS}
        step_cpu_s = {name: steps[name]["cpu_s"] for name in STEPS}
        pids = {name: steps[name]["pid"] for name in STEPS}
        row: dict[str, Any] = {"cycle_id": cycle_id, "step_s": step_s, "step_cpu_s": step_cpu_s}
        row["step_pids"] = pids
        if path == "eager":
            run = next(e for e in evs if e["kind"] == "run_cycle")
            row["wall_s"] = run["t1"] - run["t0"]
            row["overhead"] = {"eager": row["wall_s"] - sum(step_s.values())}
        else:
            row |= broker_overheads(evs, step_s)
        row["overhead_s"] = row["wall_s"] - sum(step_s.values())
        out.append(row)
    return out


def broker_overheads(evs: list[dict[str, Any]], step_s: dict[str, float]) -> dict[str, Any]:
    """One cycle on the workers: enqueue, in-task, hops and the CLI's poll."""
    queued = next(e for e in evs if e["kind"] == "queue")
    waited = next(e for e in evs if e["kind"] == "wait")
    tasks = sorted((e for e in evs if e["kind"] == "task"), key=lambda e: e["t0"])
    ends = {e["name"]: e for e in evs if e["kind"] == "step"}
    in_task = sum(t["t1"] - t["t0"] for t in tasks) - sum(step_s.values())
    hops = sum(b["t0"] - a["t1"] for a, b in itertools.pairwise(tasks))
    row: dict[str, Any] = {
        "wall_s": waited["t1"] - queued["t0"],
        "done_in_db_s": tasks[-1]["t1"] - queued["t0"],
        "tasks": len(tasks),
        "overhead": {
            "enqueue": tasks[0]["t0"] - queued["t0"],
            "in_task": in_task,
            "hops": hops,
            "cli_poll": waited["t1"] - tasks[-1]["t1"],
        },
        "in_task_by_step": {},
    }
    for t in tasks:
        # a task contains exactly one step function call of its own pid and window
        inner = [
            e
            for e in ends.values()
            if e["pid"] == t["pid"] and t["t0"] <= e["t0"] and e["t1"] <= t["t1"]
        ]
        if inner:
            name = inner[0]["name"]
            row["in_task_by_step"][name] = (t["t1"] - t["t0"]) - step_s[name]
    return row


def compare(eager: dict[str, Any], broker: dict[str, Any]) -> list[str]:
    """Every field of every cycle that differs between the two paths."""
    diffs = []
    rows_e, rows_b = eager["rows"], broker["rows"]
    if sorted(rows_e) != sorted(rows_b):
        diffs.append(f"cycle ids differ: eager {sorted(rows_e)} broker {sorted(rows_b)}")
    for cid in sorted(set(rows_e) & set(rows_b), key=int):
        for key in COMPARED:
            if rows_e[cid].get(key) != rows_b[cid].get(key):
                diffs.append(
                    f"cycle {cid} {key}: eager {rows_e[cid].get(key)!r} "
                    f"broker {rows_b[cid].get(key)!r}"
                )
    return diffs
