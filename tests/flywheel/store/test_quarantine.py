"""No single sample fails a cycle: odd sizes are resized, unusable samples quarantined.

Real SQLite/PostgreSQL, a real MLflow store and tiny real training (TINY settings).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.config import Settings
from flywheel.cycle.runner import run_cycle
from flywheel.cycle.state import load_cycle
from flywheel.db import Sample
from flywheel.errors import InvalidInputError, NotFoundError
from flywheel.learn.data import ModelInput, derive_input_size, load_cycle_data
from flywheel.learn.registry import ModelRegistry
from flywheel.store.blobs import sha256_hex
from flywheel.store.ingest import Candidate, SplitPlan, ingest_candidates
from flywheel.store.quarantine import list_quarantine, record, release
from flywheel.workspace import Workspace
from tests.flywheel.cycle.test_runner import ingest_digits

N_DIGITS = 200


def add(ws: Workspace, data: bytes, label: str | None = None, split: str | None = None) -> str:
    """Ingest one image the way an upload does; its sample id."""
    report = ingest_candidates(
        ws.db, ws.blobs, [Candidate("x.png", lambda: data, label, split)], "upload:shop",
        ws.settings.ingest, SplitPlan(),
    )  # fmt: skip
    assert report.added == 1, report.rejected
    return sha256_hex(data)


def blob_file(ws: Workspace, sid: str) -> Path:
    return Path(ws.settings.storage_root) / "blobs" / sid[:2] / sid[2:4] / sid


def test_input_size_is_the_longer_side_of_the_most_common_shape() -> None:
    assert derive_input_size([(8, 8)] * 5 + [(9, 9)]) == 8
    assert derive_input_size([(32, 24)] * 3 + [(8, 8)] * 2) == 32
    assert derive_input_size([(9, 9), (8, 8)]) == 8  # a tie: the smaller shape
    assert derive_input_size([(4000, 3000)] * 3) == 224  # photos: a model-sized input
    with pytest.raises(InvalidInputError, match="no samples"):
        derive_input_size([])


def test_one_image_of_another_size_does_not_stop_the_cycle(
    ws: Workspace, registry: ModelRegistry, make_png: Callable[..., bytes]
) -> None:
    ingest_digits(ws, N_DIGITS)
    odd = [add(ws, make_png(1, size=9)), add(ws, make_png(2, size=9), label="3", split="train")]
    result = run_cycle(ws, registry, ws.settings.learning)
    assert result.state == "promoted"

    cycle = load_cycle(ws, result.cycle_id)
    recorded = {"input_size": 8, "channels": 1, "resize": "stretch"}
    assert cycle.outputs["selection"]["input"] == recorded
    assert cycle.metrics["input"] == recorded
    tags = registry.get(result.model_version).tags
    assert {k: tags[k] for k in recorded} == {
        "input_size": "8",
        "channels": "1",
        "resize": "stretch",
    }
    assert ModelInput.from_dict(tags) == ModelInput(8, 1, "stretch")
    data = load_cycle_data(ws.db, ws.blobs, None, 1)
    assert odd[0] in data.pool_ids and odd[1] in data.labeled.ids  # used, at 8x8
    assert data.pool_images.shape[1:] == (8, 8)
    assert list_quarantine(ws.db) == ([], 0)


def test_unusable_samples_are_quarantined_and_the_cycle_goes_on(
    ws: Workspace, registry: ModelRegistry
) -> None:
    ingest_digits(ws, N_DIGITS)
    before = load_cycle_data(ws.db, ws.blobs, None, 1)
    corrupt, deleted = before.labeled.ids[0], before.test.ids[0]
    blob_file(ws, corrupt).write_bytes(b"\x89PNG not the stored bytes")
    ws.blobs.delete(deleted)
    # Bytes that match their checksum but do not decode (stored before ingest checked).
    junk = b"not an image at all"
    ws.blobs.put(junk)
    with ws.db.session() as s:
        s.add(Sample(id=sha256_hex(junk), blob_uri=ws.blobs.uri(sha256_hex(junk)),
                     source="test", split="pool", format="PNG", width=8, height=8,
                     size_bytes=len(junk)))  # fmt: skip
    undecodable = sha256_hex(junk)

    result = run_cycle(ws, registry, ws.settings.learning)
    assert result.state == "promoted"
    items, total = list_quarantine(ws.db)
    assert total == 3 and {q.cycle_id for q in items} == {result.cycle_id}
    reasons = {q.sample_id: q.reason for q in items}
    assert reasons[corrupt] == "blob does not match its checksum"
    assert reasons[deleted] == "blob missing from the store"
    assert reasons[undecodable].startswith("undecodable image: ")

    # Later reads skip them: not tried again, so their first record stays.
    later = load_cycle_data(ws.db, ws.blobs, None, 1)
    used = set(later.labeled.ids + later.test.ids + later.pool_ids)
    assert not used & set(reasons)
    assert list_quarantine(ws.db) == (items, 3)

    # Released, a sample is tried again: still broken, it is quarantined again.
    assert release(ws.db, corrupt).reason == reasons[corrupt]
    assert list_quarantine(ws.db)[1] == 2
    with pytest.raises(NotFoundError):
        release(ws.db, corrupt)
    load_cycle_data(ws.db, ws.blobs, None, 1, cycle_id=None)
    again = {q.sample_id: q for q in list_quarantine(ws.db)[0]}
    assert again[corrupt].cycle_id is None and set(again) == set(reasons)


def test_project_level_errors_still_fail_the_cycle(ws: Workspace) -> None:
    """Quarantine leaves only project-level failures: here every test sample is unusable."""
    ingest_digits(ws, N_DIGITS)
    data = load_cycle_data(ws.db, ws.blobs, None, 1)
    for sid in data.test.ids:
        ws.blobs.delete(sid)
    with pytest.raises(InvalidInputError, match="labeled test split"):
        load_cycle_data(ws.db, ws.blobs, None, 1)
    assert list_quarantine(ws.db)[1] == len(data.test.ids)


def test_cli_lists_and_releases_quarantined_samples(ws: Workspace, tiny_settings: Settings) -> None:
    ingest_digits(ws, 20)
    sid = load_cycle_data(ws.db, ws.blobs, None, 1).labeled.ids[0]
    record(ws.db, {sid: "blob missing from the store"}, 7)
    # The same database (SQLite file or PostgreSQL schema) through its environment form.
    runner = CliRunner(env={"FLYWHEEL_DATABASE__URL": tiny_settings.database_url, "COLUMNS": "200"})
    base = ["--data-dir", str(tiny_settings.data_dir)]

    r = runner.invoke(app, [*base, "data", "quarantine"])
    assert r.exit_code == 0, r.output
    assert sid in r.output and "blob missing from the store" in r.output and " 7 " in r.output
    r = runner.invoke(app, [*base, "data", "quarantine", "--release", sid])
    assert r.exit_code == 0 and "released" in r.output
    assert list_quarantine(ws.db) == ([], 0)
    r = runner.invoke(app, [*base, "data", "quarantine"])
    assert r.exit_code == 0 and "no samples in quarantine" in r.output
    r = runner.invoke(app, [*base, "data", "quarantine", "--release", sid])
    # main() prints a FlywheelError as one line; the runner sees the exception itself.
    assert isinstance(r.exception, NotFoundError) and "not in quarantine" in str(r.exception)
