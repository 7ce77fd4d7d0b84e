"""bench_cycle_workers.py's child mode: the real flywheel CLI with timers around the
functions it measures. Each timed call appends one JSON line (kind, name, cycle id, wall
clock, CPU, pid) to the log named by BENCH_CYCLE_LOG.

Timed: the four step functions ``run_<step>_step``, the worker's task body
(``workers.tasks._run_step``), the eager per-cycle call (``flywheel.cycle.runner.run_cycle``)
and the CLI's broker path (``flywheel.cli.cycles.queue_cycle`` .. ``wait_for_cycle``).
A function is wrapped wherever its name is bound in an imported flywheel or workers module,
found by identity, so the timers hold wherever the core defines it and whoever imports it
(the runner calls steps by their module-level names, as ``workers.tasks`` does)."""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from flywheel.cycle.state import STEPS

LOG_ENV = "BENCH_CYCLE_LOG"


def _log(event: dict[str, Any]) -> None:
    line = json.dumps({**event, "pid": os.getpid()}) + "\n"
    fd = os.open(os.environ[LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one O_APPEND write: lines of processes never interleave
    finally:
        os.close(fd)


def _timed(kind: str, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` logging each call; the cycle id is its ``cycle_id`` argument, or what it
    returns (the id from ``queue``, a result with ``cycle_id`` from ``run_cycle``)."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0, c0 = time.time(), time.process_time()
        ok = False
        result = None
        try:
            result = fn(*args, **kwargs)
            ok = True
            return result
        finally:
            bound = signature.bind_partial(*args, **kwargs).arguments
            cycle_id = bound.get("cycle_id")
            if kind == "queue":
                cycle_id = result
            elif kind == "run_cycle":
                cycle_id = getattr(result, "cycle_id", None)
            _log(
                {
                    "kind": kind,
                    "name": bound["step"] if kind == "task" else name,
                    "cycle_id": cycle_id,
                    "t0": t0,
                    "t1": time.time(),
                    "cpu_s": time.process_time() - c0,  # this process, all its threads
                    "ok": ok,
                }
            )

    return wrapper


def _loaded() -> list[ModuleType]:
    """The imported modules of the project (where a timed function may be bound)."""
    return [
        m
        for name, m in list(sys.modules.items())
        if isinstance(m, ModuleType) and name.split(".")[0] in ("flywheel", "workers")
    ]


def _wrap(attr: str, original: Callable[..., Any], timed: Callable[..., Any]) -> int:
    """Rebind ``attr`` to ``timed`` in every loaded module where it is ``original``."""
    count = 0
    for module in _loaded():
        if getattr(module, attr, None) is original:
            setattr(module, attr, timed)
            count += 1
    return count


def _original(module: ModuleType, attr: str) -> Callable[..., Any]:
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise RuntimeError(f"{module.__name__} has no {attr}: the bench's timers need updating")
    return fn


def install_timers() -> None:
    """Wrap the step functions where both paths look them up, then the per-cycle calls."""
    import flywheel.cli.cycles as cli_cycles
    import flywheel.cycle.runner as runner
    import workers.tasks as tasks

    for step in STEPS:
        attr = f"run_{step}_step"
        original = _original(runner, attr)
        if getattr(tasks, attr, original) is not original:
            raise RuntimeError(f"the runner and workers.tasks call different {attr}")
        _wrap(attr, original, _timed("step", step, original))
    for module, attr, kind, name in (
        (tasks, "_run_step", "task", "task"),
        (runner, "run_cycle", "run_cycle", "eager"),
        (cli_cycles, "queue_cycle", "queue", "queue"),
        (cli_cycles, "wait_for_cycle", "wait", "wait"),
    ):
        original = _original(module, attr)
        _wrap(attr, original, _timed(kind, name, original))


def child(argv: list[str]) -> None:
    """Install the timers, then run the flywheel CLI with ``argv``."""
    install_timers()
    from flywheel.cli import main as cli_main

    sys.argv = ["flywheel", *argv]
    cli_main()
