"""The UI's caches and cookie signer, without a server."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from api.web.session import SessionSigner, load_or_create_secret
from api.web.state import LRU, Memo


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memo_recomputes_on_a_new_signature_or_after_its_ttl() -> None:
    clock, calls = Clock(), []
    memo = Memo(clock)

    def compute() -> int:
        calls.append(1)
        return len(calls)

    assert memo.get("x", 1, compute, ttl_s=10).value == 1
    assert memo.get("x", 1, compute, ttl_s=10).value == 1  # cached
    assert memo.get("x", 2, compute, ttl_s=10).value == 2  # new signature
    clock.now += 10
    assert memo.get("x", 2, compute, ttl_s=10).value == 3  # expired
    assert memo.get("x", 2, compute, ttl_s=10, force=True).value == 4


def test_memo_serves_a_stale_value_while_refreshing_in_the_background() -> None:
    memo = Memo()
    release = threading.Event()

    def slow() -> str:
        release.wait(5)
        return "new"

    memo.get("x", 1, lambda: "old")
    stale = memo.get("x", 2, slow, stale_ok=True)  # answers at once
    assert (stale.value, stale.stale) == ("old", True)
    again = memo.get("x", 2, slow, stale_ok=True)  # one refresh at a time
    assert (again.value, again.stale) == ("old", True)
    release.set()
    deadline = time.monotonic() + 5
    while memo.peek("x").value != "new" and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.01)
    fresh = memo.get("x", 2, slow, stale_ok=True)
    assert (fresh.value, fresh.stale) == ("new", False)


def test_memo_computes_once_for_concurrent_requests() -> None:
    memo, calls = Memo(), []
    gate = threading.Event()

    def compute() -> int:
        calls.append(1)
        gate.wait(5)
        return 7

    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(memo.get("x", 1, compute).value))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    time.sleep(0.1)
    gate.set()
    for t in threads:
        t.join(5)
    assert results == [7, 7, 7, 7] and len(calls) == 1


def test_lru_keeps_the_most_recently_used() -> None:
    lru: LRU[int] = LRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # "a" is now the most recent
    lru.put("c", 3)
    assert (lru.get("a"), lru.get("b"), lru.get("c")) == (1, None, 3) and len(lru) == 2
    off: LRU[int] = LRU(0)
    off.put("a", 1)
    assert off.get("a") is None


def test_signer_rejects_other_secrets_and_expired_cookies() -> None:
    signer = SessionSigner(b"s" * 64, lifetime_s=60)
    cookie = signer.issue("key1", now=1000.0)
    key_id, expiry, csrf = signer.verify(cookie, now=1010.0)  # type: ignore[misc]
    assert (key_id, expiry) == ("key1", 1060.0) and len(csrf) == 64
    assert signer.verify(cookie, now=1061.0) is None
    assert SessionSigner(b"t" * 64, 60).verify(cookie, now=1010.0) is None
    other = signer.issue("key1", now=1000.0)
    assert signer.verify(other, now=1010.0)[2] != csrf  # type: ignore[index]  # per session


def test_generated_secret_is_made_once(tmp_path: Path) -> None:
    first = load_or_create_secret(None, tmp_path)
    assert load_or_create_secret(None, tmp_path) == first and len(first) == 64
    assert load_or_create_secret("configured", tmp_path) == b"configured"
    (tmp_path / ".session_secret").write_text("short")
    with pytest.raises(RuntimeError, match="truncated"):
        load_or_create_secret(None, tmp_path)
