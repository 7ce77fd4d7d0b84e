"""Pages stay fast on a large project: with 100,000 pool samples, 50,000 labels and 5,000
open review items a page runs the same SQL statements as on a nearly empty queue (paged
queries, no per-row queries, cached insights). The seconds are measured in
``bench/bench_ui_pages.py`` (BENCHMARKS.md), not here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, insert

from flywheel.config import Settings
from flywheel.db import Label, ReviewItem, Sample
from flywheel.workspace import Workspace
from tests.web.conftest import queue_items

POOL = 100_000
LABELED = 50_000
OPEN_ITEMS = 5_000
CHUNK = 10_000
PAGES = ("/ui/review", "/ui/review?label=3", "/ui/")


@pytest.fixture
def web_settings(web_settings: Settings) -> Settings:
    """Insights that never expire during the test: past ``web.insight_cache_seconds`` (which
    filling a slow machine's database can take) a page refreshes them in a background thread,
    whose statements would be counted against whichever page is being measured then."""
    web = web_settings.web.model_copy(update={"insight_cache_seconds": 1e9})
    return web_settings.model_copy(update={"web": web})


def _fake_id(n: int) -> str:
    return f"{n:064x}"  # never a real sha256 of an image: these rows have no blob


def fill_large_project(ws: Workspace) -> None:
    """Adds POOL pool samples (no blobs), LABELED pseudo-labels and OPEN_ITEMS review items."""
    samples = [
        {
            "id": _fake_id(i),
            "blob_uri": "x",
            "source": "scale",
            "split": "pool",
            "format": "PNG",
            "width": 8,
            "height": 8,
            "size_bytes": 1,
        }
        for i in range(1, POOL + 1)
    ]
    labels = [
        {
            "sample_id": _fake_id(i),
            "label": str(i % 10),
            "source": "pseudo",
            "confidence": 0.99,
            "method": "scale",
        }
        for i in range(POOL - LABELED + 1, POOL + 1)
    ]
    items = [
        {
            "sample_id": _fake_id(i),
            "reason": "uncertain",
            "proposed_label": str(i % 10),
            "score": (i % 997) / 997,
            "evidence": {
                "classifier_prob": 0.5,
                "neighbors": [[_fake_id(POOL - j - (i % 50)), 0.9] for j in range(8)],
            },
        }
        for i in range(1, OPEN_ITEMS + 1)
    ]
    with ws.db.session() as s:
        for table, rows in ((Sample, samples), (Label, labels), (ReviewItem, items)):
            for start in range(0, len(rows), CHUNK):
                s.execute(insert(table), rows[start : start + CHUNK])


@contextmanager
def _count_statements(client: TestClient) -> Iterator[list[str]]:
    engine = client.app.state.ctx.ws.db.engine  # type: ignore[attr-defined]
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def statements_of(client: TestClient, path: str) -> int:
    """SQL statements one load of ``path`` runs, after a warm-up load (caches filled)."""
    assert client.get(path).status_code == 200
    with _count_statements(client) as statements:
        assert client.get(path).status_code == 200
    return len(statements)


def test_pages_cost_the_same_with_100k_samples(
    engineer_client: TestClient, web_workspace: Workspace
) -> None:
    queue_items(web_workspace, [str(i % 10) for i in range(20)])
    small = {p: statements_of(engineer_client, p) for p in PAGES}

    fill_large_project(web_workspace)
    page = engineer_client.get("/ui/review")
    assert f"{OPEN_ITEMS + 20} open" in page.text
    assert page.text.count('class="detail"') == web_workspace.settings.web.page_size
    large = {p: statements_of(engineer_client, p) for p in PAGES}
    assert large == small  # the same statements: nothing is read row by row
