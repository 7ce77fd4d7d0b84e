"""Timing and summary statistics: a stopwatch, percentiles of latencies, best-of and median
timings of a call, and the precision of accepting the top of a ranking at each coverage."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


class Stopwatch:
    """Wall seconds of a ``with`` block (``perf_counter``); ``seconds`` is set on exit and
    reads the running time inside the block."""

    def __init__(self) -> None:
        self.start = 0.0
        self._end: float | None = None

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self._end = None
        return self

    def __exit__(self, *exc: object) -> None:
        self._end = time.perf_counter()

    @property
    def seconds(self) -> float:
        return (self._end if self._end is not None else time.perf_counter()) - self.start


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0..1) of already sorted values; NaN when empty."""
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def latency_summary_ms(latencies: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max in milliseconds of latencies in seconds; the percentiles are
    interpolated between ranks (``statistics.quantiles``, exclusive method)."""
    q = statistics.quantiles(latencies, n=100)
    return {"p50_ms": 1000 * q[49], "p99_ms": 1000 * q[98], "max_ms": 1000 * max(latencies)}


def best_of(fn: Callable[[], T], repeat: int = 5) -> tuple[T, float]:
    """The last result of ``repeat`` calls and the fastest call's seconds (the least
    disturbed by other jobs on a shared machine)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` calls, after one untimed warm-up call (caches filled)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def precision_coverage(score: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, precision) of accepting the top j samples by ``score``, for every j: how
    pseudo-label selection is judged against the hidden truth."""
    order = np.argsort(-score, kind="stable")
    hits = np.cumsum(correct[order])
    n = np.arange(1, len(order) + 1)
    return n / len(order), hits / n
