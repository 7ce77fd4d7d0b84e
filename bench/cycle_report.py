"""The tables and the figure of bench_cycle_workers.py's result (BENCHMARKS.md): per cycle,
eager against two workers with the overhead split into enqueue, in-task, hops and the CLI's
poll; the mean overheads of the first and the steady cycles; step seconds; whether both
paths produced the same results; and the empty-task rates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cycle_timers import STEPS
from harness.results import markdown_table, pyplot, save_figure, table_header, table_row


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:,.0f}"


def report(run: dict[str, Any]) -> None:
    """Print every table of a result."""
    st = run["settings"]
    print(
        f"\nlearning: ssl_epochs {st['ssl_epochs']}, train_epochs {st['train_epochs']}, "
        f"fixmatch_epochs {st['fixmatch_epochs']}; {st['data']}; OMP_NUM_THREADS=1; "
        f"{run['cpus']} CPUs\n"
    )
    print_cycles(run["results"])
    print()
    print_overheads(run["results"])
    print_steps(run["results"])
    print_same_results(run["results"])
    p = run["ping"]
    print()
    rows = [
        ["eager (in-process)", f"{p['eager_tasks_per_s']:,.0f}", f"{p['eager_ms_per_task']:.2f}"],
        [
            f"Redis, {p['workers']} worker processes",
            f"{p['broker_tasks_per_s']:,.0f}",
            f"{p['broker_ms_per_task']:.2f}",
        ],
    ]
    print(markdown_table(["empty task", "tasks/s", "ms per task"], "lrr", rows))


def print_cycles(results: dict[str, Any]) -> None:
    """Per cycle: eager and workers' wall, step CPU, overheads, same results."""
    columns = ["db", "cycle", "eager s", "2 workers s", "workers / eager"]
    columns += ["step CPU s eager / workers", "overhead eager ms", "overhead workers ms"]
    columns += ["enqueue / in-task / hops / CLI poll ms", "same results"]
    print(table_header(columns, "lrrrrrrrrl"))
    for db, res in results.items():
        e_cycles, b_cycles = res["eager"]["cycles"], res["broker"]["cycles"]
        for e, b in zip(e_cycles, b_cycles, strict=True):
            o = b["overhead"]
            parts = " / ".join(_ms(o[k]) for k in ("enqueue", "in_task", "hops", "cli_poll"))
            mine = [d for d in res["diffs"] if d.startswith(f"cycle {e['cycle_id']} ")]
            print(
                f"| {db} | {e['cycle_id']} | {e['wall_s']:.1f} | {b['wall_s']:.1f} "
                f"| {b['wall_s'] / e['wall_s']:.2f} | {sum(e['step_cpu_s'].values()):.1f} / "
                f"{sum(b['step_cpu_s'].values()):.1f} | {_ms(e['overhead_s'])} "
                f"| {_ms(b['overhead_s'])} | {parts} | {'NO' if mine else 'yes'} |"
            )
        te = sum(c["wall_s"] for c in e_cycles)
        tb = sum(c["wall_s"] for c in b_cycles)
        print(f"| {db} | all | {te:.1f} | {tb:.1f} | {tb / te:.2f} | | | | | |")


def print_overheads(results: dict[str, Any]) -> None:
    """The workers' mean overhead per cycle: the first cycle, then the steady ones."""
    columns = ["db", "cycles", "workers' overhead per cycle ms", "of which CLI poll ms"]
    columns += ["per step without poll ms", "enqueue ms", "in-task ms per task", "hop ms"]
    columns += ["of the eager cycle", "ratio at equal step times"]
    print(table_header(columns, "llrrrrrrrr"))
    for db, res in results.items():
        pairs = list(zip(res["eager"]["cycles"], res["broker"]["cycles"], strict=True))
        for label, chosen in (("1 (first tasks)", pairs[:1]), ("2+ (steady)", pairs[1:])):
            if not chosen:
                continue
            n = len(chosen)

            def mean(fn: Any, chosen: list = chosen, n: int = n) -> float:
                return sum(fn(e, b) for e, b in chosen) / n

            ob = mean(lambda e, b: b["overhead_s"])
            oe = mean(lambda e, b: e["overhead_s"])
            we = mean(lambda e, b: e["wall_s"])
            poll = mean(lambda e, b: b["overhead"]["cli_poll"])
            enqueue = mean(lambda e, b: b["overhead"]["enqueue"])
            in_task = mean(lambda e, b: b["overhead"]["in_task"] / b["tasks"])
            hop = mean(lambda e, b: b["overhead"]["hops"] / (b["tasks"] - 1))
            per_step = (ob - poll) / len(STEPS)
            cells = [db, label, _ms(ob), _ms(poll), _ms(per_step), _ms(enqueue), _ms(in_task)]
            share, ratio = f"{100 * ob / we:.1f} %", f"{1 + (ob - oe) / we:.3f}"
            print(table_row([*cells, _ms(hop), share, ratio]))


def print_steps(results: dict[str, Any]) -> None:
    """Step seconds per cycle, the workers' in-task time by step, the CLI's wall."""
    print("\nstep wall s (CPU s), eager -> workers:")
    for db, res in results.items():
        for e, b in zip(res["eager"]["cycles"], res["broker"]["cycles"], strict=True):
            steps = ", ".join(
                f"{s} {e['step_s'][s]:.2f} ({e['step_cpu_s'][s]:.2f}) -> "
                f"{b['step_s'][s]:.2f} ({b['step_cpu_s'][s]:.2f})"
                for s in STEPS
            )
            print(f"  {db} cycle {e['cycle_id']}: {steps}")
            in_task = {k: round(1000 * v) for k, v in b["in_task_by_step"].items()}
            print(f"    workers' in-task ms by step: {in_task}")
        for path in ("eager", "broker"):
            r = res[path]
            print(
                f"  {db} {path}: CLI process wall {r['cli_wall_s']:.1f} s, "
                f"load average {r['loadavg_1m_before_after'][0]:.1f} -> "
                f"{r['loadavg_1m_before_after'][1]:.1f}"
            )


def print_same_results(results: dict[str, Any]) -> None:
    """Each cycle's dataset version, accuracy and state on both paths; any difference."""
    print("\nresults per cycle (dataset version out, test accuracy, state):")
    for db, res in results.items():
        print(f"  {db}: flywheel/ + workers/ sources {res.get('code', '?')}")
        for cid, row in res["eager"]["rows"].items():
            other = res["broker"]["rows"].get(cid, {})
            print(
                f"  {db} cycle {cid}: eager {row['dataset_version_out'][:12]} "
                f"{row['test_accuracy']:.6f} {row['state']} | workers "
                f"{(other.get('dataset_version_out') or '-')[:12]} "
                f"{other.get('test_accuracy') or float('nan'):.6f} {other.get('state')}"
            )
        for d in res["diffs"]:
            print(f"  DIFFERENT: {db} {d}")
        if res.get("code_changed_during_run"):
            print(
                f"  WARNING: {db}: these files changed while it ran, so the two paths may "
                f"have run different code: {', '.join(res['code_changed_during_run'])}"
            )


def plot(run: dict[str, Any], path: Path) -> None:
    """Stacked bars per cycle and path: the four steps and the overhead."""
    plt = pyplot()
    dbs = list(run["results"])
    fig, axes = plt.subplots(1, len(dbs), figsize=(5.5 * len(dbs), 3.8), sharey=True)
    axes = [axes] if len(dbs) == 1 else list(axes)
    colors = {"consensus": "#9ecae1", "select": "#3182bd", "train": "#31a354"}
    colors |= {"finish": "#a1d99b", "overhead": "#e6550d"}
    for ax, db in zip(axes, dbs, strict=True):
        res = run["results"][db]
        labels, x = [], 0
        for e, b in zip(res["eager"]["cycles"], res["broker"]["cycles"], strict=True):
            for name, c in (("eager", e), ("workers", b)):
                bottom = 0.0
                for part in (*STEPS, "overhead"):
                    h = c["overhead_s"] if part == "overhead" else c["step_s"][part]
                    ax.bar(x, h, bottom=bottom, color=colors[part], width=0.8,
                           label=part if x == 0 else None)  # fmt: skip
                    bottom += h
                ax.text(x, bottom, f"{c['wall_s']:.1f}", ha="center", va="bottom", fontsize=7)
                labels.append(f"{name}\n#{c['cycle_id']}")
                x += 1
            x += 0.5
        ax.set_xticks(_ticks(len(res["eager"]["cycles"])))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_title(f"{db}: cycle wall time, eager vs 2 workers")
        ax.set_ylabel("seconds")
    axes[0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def _ticks(n: int) -> list[float]:
    ticks, x = [], 0.0
    for _ in range(n):
        ticks += [x, x + 1]
        x += 2.5
    return ticks
