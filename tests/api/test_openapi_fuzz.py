"""Property-based requests over the whole OpenAPI document against a real uvicorn server.

schemathesis draws valid and invalid requests for every operation and checks each answer:
no 5xx, status codes and bodies as documented, auth enforced. Examples are bounded and
derandomized so the run is repeatable and fits in ``make test``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from api.app import create_app
from flywheel.serve.api_keys import create_key
from flywheel.workspace import open_workspace
from tests.api.conftest import ModelStore, add_digits, api_settings_for, serve_in_thread
from tests.conftest import postgres_schema_url

pytestmark = pytest.mark.integration
# Examples per operation: enough to find unhandled input, bounded for `make test`.
MAX_EXAMPLES = 10


@dataclass(frozen=True)
class FuzzTarget:
    url: str
    token: str


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def fuzz_target(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    model_store: ModelStore,
) -> Iterator[FuzzTarget]:
    with ExitStack() as stack:
        data_dir: Path = tmp_path_factory.mktemp("fuzz") / "data"
        if request.param == "sqlite":
            db_url = f"sqlite:///{data_dir.parent / 'flywheel.db'}"
        else:
            db_url = stack.enter_context(postgres_schema_url())
        # No in-process cycles: a fuzzed POST /v1/cycles must not start real training.
        settings_ = api_settings_for(data_dir, db_url, model_store, run_cycles_in_process=False)
        ws = open_workspace(settings_)
        stack.callback(ws.close)
        add_digits(ws, 100)
        _, token = create_key(ws.db, "engineer", "fuzz", "schemathesis")
        url = stack.enter_context(serve_in_thread(create_app(settings_)))
        yield FuzzTarget(url, token)


def test_every_operation_answers_as_documented(fuzz_target: FuzzTarget, tmp_path: Path) -> None:
    """schemathesis' own runner (a subprocess) over every operation; fails on any finding."""
    cmd = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{fuzz_target.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {fuzz_target.token}",
        "--checks",
        "all",
        # "Valid data is accepted" counts any 4xx on a schema-valid request as a failure,
        # but bytes that are not an image, or a URI the server may not read, are
        # schema-valid and must be refused. Every other check runs.
        "--exclude-checks",
        "positive_data_acceptance",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "7",
        # One worker thread: CPython 3.11.7's ast.parse, which hypothesis calls to describe
        # its filters, can fail with "AST constructor recursion depth mismatch" when two
        # threads parse at once (python/cpython#106905), an error of the tool, not the API.
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    # cwd: schemathesis keeps a cache folder in its working directory.
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]
    assert "No issues found" in proc.stdout or "passed" in proc.stdout
