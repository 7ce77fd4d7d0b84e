"""What the routes share, opened once at start-up and closed at shutdown."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from api.cycle_runner import CycleRunner
from api.metrics import Metrics
from flywheel.api_keys import AuthenticationError, KeyInfo, authenticate
from flywheel.config import Settings
from flywheel.feedback import FeedbackWriter
from flywheel.registry import ModelRegistry
from flywheel.review import label_set
from flywheel.serving import ChampionCache
from flywheel.workspace import Workspace


class TTLCache:
    """A tiny thread-safe memo with expiry: values are recomputed after ``seconds``."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._items: dict[str, tuple[float, object]] = {}

    def get(self, key: str, compute: Callable[[], object]) -> object:
        now = self._clock()
        with self._lock:
            hit = self._items.get(key)
        if hit is not None and now - hit[0] < self.seconds:
            return hit[1]
        value = compute()
        with self._lock:
            if len(self._items) > 10_000:  # bounded: unknown tokens must not grow it forever
                self._items.clear()
            self._items[key] = (now, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


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
    cycles: CycleRunner | None = None  # None: cycles need a worker layer
    extras: dict[str, object] = field(default_factory=dict)

    def authenticate(self, token: str) -> KeyInfo:
        """The key for ``token`` (cached briefly: hashing is cheap, a DB trip is not)."""
        digest = hashlib.sha256(token.encode()).hexdigest()

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
        self.ws.close()
