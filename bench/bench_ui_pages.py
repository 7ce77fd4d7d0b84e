"""Web UI pages on a large project against the same pages on a nearly empty one.

For each database (SQLite, and PostgreSQL when it answers), one workspace gets 100 real
digits, 20 open review items and an engineer key, and the real app (FastAPI TestClient,
logged in through the form) loads each page: one warm-up load, then the median of
``--loads`` timed loads and the SQL statements of one load. Then the workspace grows by
100,000 pool samples, 50,000 labels and 5,000 open review items
(``tests/web/test_scale.py``'s ``fill_large_project``), and the same pages are measured
again in the same run. The ratio large / small is the figure: a page that read every row
would cost hundreds of times more.

    .venv/bin/python bench/bench_ui_pages.py            # about a minute
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the test suite's fixtures build the same project

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from api.app import create_app  # noqa: E402
from flywheel.config import Settings  # noqa: E402
from flywheel.serve.api_keys import create_key  # noqa: E402
from flywheel.workspace import open_workspace  # noqa: E402
from tests.api.conftest import add_digits  # noqa: E402
from tests.conftest import PG_URL, postgres_schema_url  # noqa: E402
from tests.web.conftest import log_in, queue_items  # noqa: E402
from tests.web.test_scale import (  # noqa: E402
    LABELED,
    OPEN_ITEMS,
    PAGES,
    POOL,
    fill_large_project,
    statements_of,
)


def page_seconds(client: TestClient, path: str, loads: int) -> float:
    """Median seconds of ``loads`` loads of ``path``, after a warm-up load."""
    assert client.get(path).status_code == 200
    times = []
    for _ in range(loads):
        start = time.perf_counter()
        r = client.get(path)
        times.append(time.perf_counter() - start)
        assert r.status_code == 200
    return statistics.median(times)


def measure(client: TestClient, loads: int) -> dict[str, dict[str, float | int]]:
    return {
        p: {"seconds": page_seconds(client, p, loads), "statements": statements_of(client, p)}
        for p in PAGES
    }


def run_one(db_url: str, data_dir: Path, loads: int) -> dict:
    settings = Settings(data_dir=data_dir, database={"url": db_url})
    ws = open_workspace(settings)
    try:
        add_digits(ws, 100)
        queue_items(ws, [str(i % 10) for i in range(20)])
        key = create_key(ws.db, "engineer", "ml", "bench")[1]
        with TestClient(create_app(settings)) as client:
            assert log_in(client, key).status_code == 303
            small = measure(client, loads)
            start = time.perf_counter()
            fill_large_project(ws)
            fill_s = time.perf_counter() - start
            large = measure(client, loads)
    finally:
        ws.close()
    return {"small": small, "large": large, "fill_seconds": fill_s}


def postgres_up() -> bool:
    try:
        with create_engine(PG_URL).connect() as conn:
            conn.execute(text("select 1"))
        return True
    except Exception:  # any failure to connect: measure SQLite only
        return False


def report(results: dict) -> str:
    lines = [
        "| db | page | small ms | 100k ms | 100k / small | SQL statements (small = 100k) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for db, r in results.items():
        for page in PAGES:
            s, big = r["small"][page], r["large"][page]
            same = "yes" if s["statements"] == big["statements"] else "NO"
            lines.append(
                f"| {db} | `{page}` | {1000 * s['seconds']:.1f} | {1000 * big['seconds']:.1f} "
                f"| {big['seconds'] / s['seconds']:.2f} | {s['statements']} ({same}) |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loads", type=int, default=15, help="timed loads per page")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ui_pages.json")
    ap.add_argument("--report", type=Path, help="print the table of a saved result and stop")
    args = ap.parse_args()
    if args.report:
        print(report(json.loads(args.report.read_text())["results"]))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        root = Path(tmp)
        results["SQLite"] = run_one(f"sqlite:///{root / 'sqlite.db'}", root / "sqlite", args.loads)
        if postgres_up():
            url = stack.enter_context(postgres_schema_url())
            results["PostgreSQL"] = run_one(url, root / "pg", args.loads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"pool": POOL, "labeled": LABELED, "open_items": OPEN_ITEMS, "loads": args.loads}
    args.out.write_text(json.dumps({"setup": meta, "results": results}, indent=2))
    print(report(results))


if __name__ == "__main__":
    main()
