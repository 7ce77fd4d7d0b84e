"""Web UI pages on a large project against the same pages on a nearly empty one.

For each database (SQLite, and PostgreSQL when it answers), one workspace gets 100 real
digits, 20 open review items and an engineer key, and the real app (FastAPI TestClient,
logged in through the form) loads each page: one warm-up load, then the median of
``--loads`` timed loads and the SQL statements of one load. Then the workspace grows by
100,000 pool samples, 50,000 labels and 5,000 open review items (``ui_project.py``), and
the same pages are measured again in the same run. The ratio large / small is the figure: a
page that read every row would cost hundreds of times more.

    .venv/bin/python bench/bench_ui_pages.py            # about a minute
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from harness.cli import RESULTS, add_out, parser
from harness.databases import postgres_schema, postgres_up, sqlite_url
from harness.results import markdown_table, read_json, write_json
from harness.stats import Stopwatch, median_seconds
from harness.workspaces import ingest_digits, scratch
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from ui_project import LABELED, OPEN_ITEMS, POOL, grow, open_review_items

from api.app import create_app
from flywheel.config import Settings
from flywheel.serve.api_keys import create_key
from flywheel.workspace import open_workspace

PAGES = ("/ui/review", "/ui/review?label=3", "/ui/")
HIDDEN_INPUT = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def log_in(client: TestClient, key: str) -> None:
    """Submit the login form as a browser does: its hidden fields, and the key."""
    form = dict(HIDDEN_INPUT.findall(client.get("/ui/login").text))
    r = client.post("/ui/login", data={**form, "key": key}, follow_redirects=False)
    if r.status_code != 303:
        raise RuntimeError(f"log-in answered {r.status_code}: {r.text[:500]}")


class StatementCounter:
    """Counts the SQL statements run on the project's database (``db_url``) by any engine
    of this process while in a ``with`` block: the app's, not MLflow's (a database of its
    own). Listens on SQLAlchemy's Engine class, so the app's internals stay untouched."""

    def __init__(self, db_url: str) -> None:
        self.url = make_url(db_url)
        self.count = 0

    def __call__(self, conn: Any, *args: Any) -> None:
        if conn.engine.url == self.url:
            self.count += 1

    def __enter__(self) -> StatementCounter:
        event.listen(Engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(Engine, "before_cursor_execute", self)


def load(client: TestClient, path: str) -> None:
    """One page load, which must succeed."""
    r = client.get(path)
    if r.status_code != 200:
        raise RuntimeError(f"{path} answered {r.status_code}")


def statements_of(client: TestClient, db_url: str, path: str) -> int:
    """SQL statements one load of ``path`` runs, after a warm-up load (caches filled)."""
    load(client, path)
    with StatementCounter(db_url) as counter:
        load(client, path)
    return counter.count


def measure(client: TestClient, db_url: str, loads: int) -> dict[str, dict[str, float | int]]:
    """Per page: median seconds of ``loads`` loads, and the statements of one."""
    return {
        p: {
            "seconds": median_seconds(lambda p=p: load(client, p), loads),
            "statements": statements_of(client, db_url, p),
        }
        for p in PAGES
    }


def run_one(db_url: str, data_dir: Path, loads: int) -> dict:
    """The pages on one database: small project, then grown large."""
    settings = Settings(data_dir=data_dir, database={"url": db_url})
    ws = open_workspace(settings)
    try:
        ingest_digits(ws, 100)
        open_review_items(ws, [str(i % 10) for i in range(20)])
        key = create_key(ws.db, "engineer", "ml", "bench")[1]
        with TestClient(create_app(settings)) as client:
            log_in(client, key)
            small = measure(client, db_url, loads)
            with Stopwatch() as filling:
                grow(ws)
            large = measure(client, db_url, loads)
    finally:
        ws.close()
    return {"small": small, "large": large, "fill_seconds": filling.seconds}


def report(results: dict) -> str:
    """The markdown table of BENCHMARKS.md: small against large, per database and page."""
    rows = []
    for db, r in results.items():
        for page in PAGES:
            s, big = r["small"][page], r["large"][page]
            same = "yes" if s["statements"] == big["statements"] else "NO"
            rows.append(
                [
                    db,
                    f"`{page}`",
                    f"{1000 * s['seconds']:.1f}",
                    f"{1000 * big['seconds']:.1f}",
                    f"{big['seconds'] / s['seconds']:.2f}",
                    f"{s['statements']} ({same})",
                ]
            )
    columns = ["db", "page", "small ms", "100k ms", "100k / small"]
    return markdown_table([*columns, "SQL statements (small = 100k)"], "llrrrl", rows)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--loads", type=int, default=15, help="timed loads per page")
    add_out(ap, RESULTS / "ui_pages.json")
    ap.add_argument("--report", type=Path, help="print the table of a saved result and stop")
    args = ap.parse_args()
    if args.report:
        print(report(read_json(args.report)["results"]))
        return
    results = {}
    with scratch() as root, ExitStack() as stack:
        results["SQLite"] = run_one(sqlite_url(root / "sqlite.db"), root / "sqlite", args.loads)
        if postgres_up():
            url = stack.enter_context(postgres_schema())
            results["PostgreSQL"] = run_one(url, root / "pg", args.loads)
    meta = {"pool": POOL, "labeled": LABELED, "open_items": OPEN_ITEMS, "loads": args.loads}
    write_json(args.out, {"setup": meta, "results": results})
    print(report(results))


if __name__ == "__main__":
    main()
