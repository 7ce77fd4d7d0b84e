"""CPU and memory accounting (Linux): what a process, its threads and its children, the
PostgreSQL server and the whole box used, read from /proc and getrusage. On a shared
machine other jobs run with the benchmark; these let it tell its own cost from theirs."""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat_cpu(stat_text: str) -> float:
    """user + system seconds from the text of a /proc/<pid>/stat file (the fields after the
    command name, which may itself hold spaces and parentheses)."""
    fields = stat_text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def proc_cpu(pid: int | str) -> float:
    """CPU seconds (user + system) used by process ``pid`` and its threads; ``pid`` may
    also be ``"<pid>/task/<tid>"`` for one thread."""
    return _stat_cpu(Path(f"/proc/{pid}/stat").read_text())


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its descendants (a server's worker processes)."""
    total = proc_cpu(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):  # the child ended
                total += tree_cpu(int(child))
    return total


def thread_cpu() -> dict[str, float]:
    """CPU seconds per kind of thread of this process (event loop, named threads, the
    AnyIO thread pool as one)."""
    out: dict[str, float] = {}
    for t in threading.enumerate():
        name = "event loop" if t is threading.main_thread() else t.name.split(" (")[0]
        name = "thread pool" if "AnyIO" in name else name
        with contextlib.suppress(OSError):  # the thread ended
            out[name] = out.get(name, 0.0) + proc_cpu(f"{os.getpid()}/task/{t.native_id}")
    return out


def box_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds over all cores since boot."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / TICKS, sum(v[:8]) / TICKS


def postgres_cpu() -> float:
    """CPU seconds used by the PostgreSQL server's processes (0 where there is none)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended
            continue
        if text[text.index("(") + 1 : text.rindex(")")] == "postgres":
            total += _stat_cpu(text)
    return total


def wait_for_quiet(threshold: float, patience: float) -> float:
    """Wait (up to ``patience`` s) until the box's CPU use over 1 s is below ``threshold``
    (% of one core): other jobs on a 2-core box would otherwise be measured with us. The
    last reading."""
    deadline = time.monotonic() + patience
    while True:
        b0, _ = box_cpu()
        time.sleep(1.0)
        busy = 100 * (box_cpu()[0] - b0)
        if busy < threshold or time.monotonic() > deadline:
            return busy
        print(f"  box busy ({busy:.0f} % of a core): waiting for other jobs", flush=True)


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB (``ru_maxrss``: sees C++ allocations,
    unlike tracemalloc)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def status_kb(field: str) -> int:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``...) in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def reset_peak_rss() -> None:
    """Reset this process's VmHWM to its VmRSS, so the next peak is one step's alone."""
    Path("/proc/self/clear_refs").write_text("5")


class StepMemoryTrace:
    """Samples this process's VmRSS and RssAnon every ``interval`` s from a thread, with the
    cycle step (the innermost frame of ``flywheel/cycle/steps``) and the innermost flywheel
    function the main thread is in. ``peaks()`` gives each step's highest reading and where
    it was: the figures that say which step grows with a pool's size, not only that one does.

    RssAnon is the heap and the arrays; VmRSS adds the shared libraries' resident pages,
    which move with the machine's page cache between otherwise equal runs."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self._peaks: dict[str, dict[str, float | str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory trace", daemon=True)
        self._main = threading.main_thread().ident

    def __enter__(self) -> StepMemoryTrace:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _where(self) -> tuple[str, str]:
        import sys

        frame = sys._current_frames().get(self._main)
        step, inner = "outside a step", ""
        while frame is not None:
            path = frame.f_code.co_filename
            if "/flywheel/" in path:
                if not inner:
                    inner = f"{Path(path).stem}.{frame.f_code.co_name}"
                if "/flywheel/cycle/steps/" in path and step == "outside a step":
                    step = Path(path).stem  # the innermost: select_shard, not select
            frame = frame.f_back
        return step, inner

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            rss, anon = status_kb("VmRSS"), status_kb("RssAnon")
            step, inner = self._where()
            top = self._peaks.setdefault(
                step, {"rss_mib": 0.0, "anon_mib": 0.0, "at": "", "seconds": 0.0}
            )
            top["seconds"] = round(float(top["seconds"]) + self.interval, 2)  # about
            top["rss_mib"] = max(float(top["rss_mib"]), round(rss / 1024, 1))
            if anon / 1024 > float(top["anon_mib"]):
                top.update(anon_mib=round(anon / 1024, 1), at=inner)

    def peaks(self) -> dict[str, dict[str, float | str]]:
        """{step: {"rss_mib": its highest VmRSS, "anon_mib": its highest RssAnon, "at": the
        innermost flywheel function when RssAnon peaked, "seconds": about how long it ran}}."""
        return {step: dict(p) for step, p in self._peaks.items()}
