"""TTLCache: blocking refresh for key checks, stale-while-refreshing for the label set."""

from __future__ import annotations

import threading

from api.context import TTLCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_blocking_mode_recomputes_after_expiry() -> None:
    clock, values = Clock(), iter([1, 2])
    cache = TTLCache(5, clock)
    assert cache.get("k", lambda: next(values)) == 1
    assert cache.peek("k") == (True, 1)
    clock.now = 5
    assert cache.peek("k") == (False, None)
    assert cache.get("k", lambda: next(values)) == 2


def test_background_mode_serves_stale_value_while_refreshing() -> None:
    clock = Clock()
    cache = TTLCache(5, clock, refresh_in_background=True)
    assert cache.get("k", lambda: "old") == "old"
    clock.now = 6
    release, done = threading.Event(), threading.Event()

    def slow() -> str:
        release.wait(5)
        done.set()
        return "new"

    assert cache.get("k", slow) == "old"  # answered at once, refresh runs in a thread
    assert cache.get("k", slow) == "old"  # a second caller does not start a second refresh
    release.set()
    assert done.wait(5)
    for _ in range(100):
        if cache.peek("k") == (True, "new"):
            break
        threading.Event().wait(0.01)
    assert cache.get("k", lambda: "unused") == "new"


def test_zero_lifetime_recomputes_in_the_caller_even_in_background_mode() -> None:
    # With api.auth_cache_seconds 0 (as in the tests), a background refresh served the last
    # request's label set and queried from a thread after the request had ended: the stray
    # statement made tests/web/test_scale.py count 8 statements instead of 7 now and then.
    cache, values = TTLCache(0, Clock(), refresh_in_background=True), iter(["old", "new"])
    assert cache.get("k", lambda: next(values)) == "old"
    before = threading.active_count()
    assert cache.get("k", lambda: next(values)) == "new"
    assert threading.active_count() == before
