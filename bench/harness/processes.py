"""Child processes of a benchmark: the flywheel CLI, servers and workers. Each child starts
in a session (process group) of its own, so stopping it reaches its children too (uvicorn's
and Celery's worker processes), and a benchmark stops its children even when it fails."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path


def flywheel_command(*args: str, entry: str | None = None) -> list[str]:
    """The flywheel CLI with ``args``: ``python -m flywheel.cli``, or a benchmark script
    ``entry`` whose ``child`` mode wraps functions with timers, then hands over to the CLI."""
    head = [sys.executable, entry, "child"] if entry else [sys.executable, "-m", "flywheel.cli"]
    return [*head, *args]


def spawn(
    cmd: list[str],
    *,
    env: Mapping[str, str] | None = None,
    out: Path | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen:
    """Start ``cmd`` in a session of its own; stdout and stderr go to ``out`` (a file),
    or nowhere."""
    if out is None:
        return subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    with out.open("w") as f:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(procs: list[subprocess.Popen], grace: float = 30) -> None:
    """SIGTERM each process group (a worker and its pool), wait up to ``grace`` seconds
    for all of them, then SIGKILL what is left."""
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)  # the pool children too, if any outlived it
        p.wait()


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the process group at once: no graceful shutdown may flush anything."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def run_logged(
    cmd: list[str], out: Path, env: Mapping[str, str] | None = None, timeout: float = 900
) -> tuple[float, str]:
    """Run ``cmd`` to completion with its output in ``out``; its wall seconds and output.
    Fails with the output's tail when it exits non-zero; stopped when it overruns
    ``timeout`` or the benchmark is interrupted."""
    t0 = time.perf_counter()
    proc = spawn(cmd, env=env, out=out)
    try:
        rc = proc.wait(timeout)
    except BaseException:
        stop([proc])
        raise
    seconds = time.perf_counter() - t0
    text = out.read_text()
    if rc != 0:
        raise RuntimeError(f"`{' '.join(cmd[1:])}` exited {rc}:\n{text[-3000:]}")
    return seconds, text


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that ``finally`` blocks stop the children."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
