"""What the web UI keeps between requests: the cookie signer and its caches, and the
cached insights pages show (``insight``: a value, how old it is, or why there is none).

Pages must stay fast on a large pool, so anything that reads a whole table or fits a model
(label audit, annotator statistics, drift, charts, diffs, thumbnails) is computed once per
*signature* (the newest cycle, the champion version, the two version ids) and then served
from memory until the signature changes or, for what also depends on new traffic, until
``web.insight_cache_seconds`` pass.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from api.context import ApiContext, TTLCache
from api.web.session import SessionSigner, load_or_create_secret
from flywheel.db import ApiKey
from flywheel.serve.api_keys import KeyInfo

T = TypeVar("T")
log = logging.getLogger("flywheel.api.web")


class LRU(Generic[T]):
    """A bounded, thread-safe least-recently-used map."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self._items: OrderedDict[Hashable, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> T | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: T) -> None:
        if self.max_items <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class Computed(Generic[T]):
    value: T
    signature: Hashable
    at: float  # time.time() when computed: pages show how old a result is
    stale: bool = False  # served while a newer one is computed in the background


class Memo:
    """One value per name, recomputed when its signature changes, when it is older than
    ``ttl_s`` (if given) or when forced. One computation per name at a time: a second
    request for the same expensive result waits for the first instead of repeating it.

    With ``stale_ok``, an outdated value is returned at once and the new one is computed in
    a background thread: after the first computation no page waits for an expensive one.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._values: dict[str, Computed[Any]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def peek(self, name: str) -> Computed[Any] | None:
        return self._values.get(name)

    def _fresh(self, name: str, signature: Hashable, ttl_s: float | None) -> Computed[Any] | None:
        hit = self._values.get(name)
        if hit is None or hit.signature != signature:
            return None
        if ttl_s is not None and self._clock() - hit.at >= ttl_s:
            return None
        return hit

    def get(
        self,
        name: str,
        signature: Hashable,
        compute: Callable[[], T],
        ttl_s: float | None = None,
        force: bool = False,
        stale_ok: bool = False,
    ) -> Computed[T]:
        if not force and (hit := self._fresh(name, signature, ttl_s)) is not None:
            return hit
        old = self._values.get(name)
        if stale_ok and not force and old is not None:
            self._refresh(name, signature, compute)
            return replace(old, stale=True)
        lock = self._lock_for(name)
        with lock:
            # Someone else may have computed it while this request waited for the lock.
            if not force and (hit := self._fresh(name, signature, ttl_s)) is not None:
                return hit
            done = Computed(compute(), signature, self._clock())
            self._values[name] = done
            return done

    def _lock_for(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def _refresh(self, name: str, signature: Hashable, compute: Callable[[], Any]) -> None:
        lock = self._lock_for(name)
        if not lock.acquire(blocking=False):
            return  # being computed already (by a request or an earlier refresh)

        def work() -> None:
            try:
                self._values[name] = Computed(compute(), signature, self._clock())
            except Exception:  # the stale value stays; the next page view tries again
                log.exception("refreshing %s failed", name)
            finally:
                lock.release()  # a plain Lock may be released by another thread

        threading.Thread(target=work, name=f"web-refresh-{name}", daemon=True).start()

    def forget(self, name: str) -> None:
        self._values.pop(name, None)


@dataclass
class Insight:
    """A cached result or why there is none."""

    value: Any = None
    computed_at: Any = None
    error: str | None = None  # computing it failed
    refreshing: bool = False  # an outdated value, while the new one is computed


def insight(
    memo: Memo,
    name: str,
    signature: Hashable,
    compute: Callable[[], Any],
    ttl_s: float | None,
    force: bool = False,
    stale_ok: bool = True,
) -> Insight:
    """``compute()``'s value through ``memo``; a failure is shown on the page, not raised."""
    try:
        done: Computed[Any] = memo.get(name, signature, compute, ttl_s, force, stale_ok)
    except Exception as exc:  # an insight that fails must not take the page down
        log.exception("computing %s failed", name)
        return Insight(error=f"{type(exc).__name__}: {exc}")
    return Insight(done.value, done.at, refreshing=done.stale)


class WebState:
    """Created with the app's context; lives in ``ctx.extras["web"]``."""

    def __init__(self, ctx: ApiContext) -> None:
        settings = ctx.settings
        self.signer = SessionSigner(
            load_or_create_secret(settings.web.session_secret, Path(settings.data_dir)),
            settings.web.session_hours * 3600,
        )
        self.keys = TTLCache(settings.api.auth_cache_seconds)
        self.thumbnails: LRU[bytes] = LRU(settings.web.thumbnail_cache_items)
        self.diffs: LRU[Any] = LRU(8)  # versions are immutable: a diff never goes stale
        self.memo = Memo()
        # Matplotlib's pyplot (used by library plots) keeps global state: one figure at a time.
        self.plot_lock = threading.Lock()
        self.cache_dir = Path(settings.data_dir) / "cache" / "web"
        self._ctx = ctx

    def key(self, key_id: str) -> KeyInfo | None:
        """The key a session names, re-read (revocation, role) after the cache expires."""

        def lookup() -> KeyInfo | None:
            with self._ctx.ws.db.session() as s:
                row = s.get(ApiKey, key_id)
                return KeyInfo.from_row(row) if row is not None else None

        found = self.keys.get(key_id, lookup)
        return found if isinstance(found, KeyInfo) else None

    def cached_key(self, key_id: str) -> tuple[bool, KeyInfo | None]:
        """(found, key) without I/O: safe on the event loop."""
        found, value = self.keys.peek(key_id)
        return found, value if isinstance(value, KeyInfo) else None


_lock = threading.Lock()


def web_state(ctx: ApiContext) -> WebState:
    """The context's web state, made on first use (the secret file is read once)."""
    state = ctx.extras.get("web")
    if state is None:
        with _lock:
            state = ctx.extras.get("web")
            if state is None:
                state = ctx.extras["web"] = WebState(ctx)
    assert isinstance(state, WebState)
    return state
