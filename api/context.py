"""What the routes share, opened once at start-up and closed at shutdown."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from api.cycle_runner import BrokerCycleRunner, CycleRunner
from api.metrics import Metrics
from flywheel.config import Settings
from flywheel.feedback.review import label_set
from flywheel.feedback.writer import FeedbackWriter
from flywheel.learn.registry import ModelRegistry
from flywheel.serve.api_keys import AuthenticationError, KeyInfo, authenticate
from flywheel.serve.serving import ChampionCache
from flywheel.store.remote_reads import RemoteReader
from flywheel.store.remote_sources import RemoteSourcePolicy
from flywheel.workspace import Workspace


class TTLCache:
    """A small thread-safe memo whose values are recomputed after ``seconds``.

    With ``refresh_in_background``, an expired value is still returned while one thread
    recomputes it: for values where a few seconds' staleness is fine (the label set), so
    no request waits on the database for them. Key checks use the blocking mode, so a
    revocation is never served from a stale entry.
    """

    def __init__(
        self,
        seconds: float,
        clock: Callable[[], float] = time.monotonic,
        refresh_in_background: bool = False,
    ) -> None:
        self.seconds = seconds
        # A zero lifetime caches nothing: refreshing in the background would serve each caller
        # the previous caller's value and leave a thread querying after its request ended.
        self.refresh_in_background = refresh_in_background and seconds > 0
        self._clock = clock
        self._lock = threading.Lock()
        self._items: dict[str, tuple[float, object]] = {}
        self._refreshing: set[str] = set()

    def peek(self, key: str) -> tuple[bool, object]:
        """(found, value) for a fresh entry, without computing anything (safe on the loop)."""
        with self._lock:
            hit = self._items.get(key)
        if hit is not None and self._clock() - hit[0] < self.seconds:
            return True, hit[1]
        return False, None

    def get(self, key: str, compute: Callable[[], object]) -> object:
        now = self._clock()
        with self._lock:
            hit = self._items.get(key)
            stale = hit is not None and now - hit[0] >= self.seconds
            start_refresh = stale and self.refresh_in_background and key not in self._refreshing
            if start_refresh:
                self._refreshing.add(key)
        if hit is not None and not stale:
            return hit[1]
        if hit is not None and self.refresh_in_background:
            if start_refresh:
                threading.Thread(target=self._refresh, args=(key, compute), daemon=True).start()
            return hit[1]
        value = compute()
        self._store(key, now, value)
        return value

    def _refresh(self, key: str, compute: Callable[[], object]) -> None:
        try:
            self._store(key, self._clock(), compute())
        except Exception:  # keep serving the old value; the next expiry tries again
            pass
        finally:
            with self._lock:
                self._refreshing.discard(key)

    def _store(self, key: str, at: float, value: object) -> None:
        with self._lock:
            if len(self._items) > 10_000:  # bounded: unknown tokens must not grow it forever
                self._items.clear()
            self._items[key] = (at, value)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class ApiContext:
    settings: Settings
    ws: Workspace
    registry: ModelRegistry
    champion: ChampionCache
    writer: FeedbackWriter
    auth_cache: TTLCache
    labels_cache: TTLCache
    metrics: Metrics
    remote_policy: RemoteSourcePolicy  # which URIs clients may register
    remote_reader: RemoteReader  # reads them off the request threads, with timeouts
    cycles: CycleRunner | BrokerCycleRunner | None = None  # None: cycles are off here
    extras: dict[str, object] = field(default_factory=dict)

    def cached_key(self, token: str) -> KeyInfo | None:
        """The key for ``token`` if its check is cached (no I/O: safe on the event loop);
        raises AuthenticationError for a cached refusal."""
        found, value = self.auth_cache.peek(_digest(token))
        if isinstance(value, AuthenticationError):
            raise value
        return value if found else None  # type: ignore[return-value]

    def authenticate(self, token: str) -> KeyInfo:
        """The key for ``token`` (cached briefly: hashing is cheap, a DB trip is not)."""
        digest = _digest(token)

        def lookup() -> KeyInfo | AuthenticationError:
            try:
                return authenticate(self.ws.db, token)
            except AuthenticationError as exc:
                return exc

        found = self.auth_cache.get(digest, lookup)
        if isinstance(found, AuthenticationError):
            raise found
        assert isinstance(found, KeyInfo)
        return found

    def labels(self) -> list[str]:
        found = self.labels_cache.get("labels", lambda: label_set(self.ws.db))
        assert isinstance(found, list)
        return found

    def close(self) -> None:
        if self.cycles is not None:  # before the workspace closes under a running cycle
            self.cycles.close()
        self.writer.close()
        self.remote_reader.close()
        self.ws.close()
