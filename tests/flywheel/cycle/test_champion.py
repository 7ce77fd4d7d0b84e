"""Moving the champion by hand moves its labels with it: a rollback or a promotion makes the
pseudo-labels of the model's own dataset version current again, and never touches a label a
person made. Real cycles (SQLite and PostgreSQL, MLflow store, tiny torch models)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from flywheel.cycle.champion import promote_champion, restore_labels, rollback_champion
from flywheel.cycle.guard import exclusive_cycles
from flywheel.cycle.runner import run_cycle
from flywheel.db import Label
from flywheel.db.labels import current_labels_query
from flywheel.db.models import LabelSource
from flywheel.errors import ConflictError
from flywheel.learn.registry import ModelRegistry
from flywheel.workspace import Workspace
from tests.flywheel.cycle.test_runner import ingest_digits

PSEUDO = LabelSource.PSEUDO.value


def champion_after(ws: Workspace, registry: ModelRegistry, learning) -> tuple[str, str]:
    """Run a cycle and make its model the champion; (model version, its dataset version)."""
    result = run_cycle(ws, registry, learning)
    model = registry.get(result.model_version)
    if registry.champion().version != model.version:  # the gate said no: by hand
        registry.promote(model.version, "test")
    return model.version, model.tags["dataset_version"]


def current_pseudo(ws: Workspace) -> dict[str, str]:
    with ws.db.session() as s:
        return {
            lab.sample_id: lab.label for lab in s.scalars(current_labels_query(sources=[PSEUDO]))
        }


def test_rollback_and_promote_restore_the_champion_s_own_labels(ws, registry) -> None:
    ingest_digits(ws, 300)
    # A bootstrap cycle (no pseudo-labels), then two that accept a growing share.
    learning = ws.settings.learning.model_copy(
        update={"selection": "agreement", "fixmatch": "first"}
    )
    m1, v1 = champion_after(ws, registry, learning)
    m2, v2 = champion_after(ws, registry, learning)
    m3, v3 = champion_after(ws, registry, learning)
    assert len({v1, v2, v3}) == 3
    _, t2 = ws.versions.read(v2)
    pseudo_v2 = {r["sample_id"]: r["label"] for r in t2.to_pylist() if r["source"] == PSEUDO}
    assert pseudo_v2 and len(current_pseudo(ws)) > len(pseudo_v2)

    back = rollback_champion(ws, registry, "test")
    assert back.model.version == m2 and back.labels is not None
    assert (back.labels.version, back.labels.moved_from) == (v2, v3)
    assert back.labels.retracted > 0 and back.labels.kept_human == 0
    assert current_pseudo(ws) == pseudo_v2
    assert ws.versions.snapshot("after rollback")[0].id == v2
    with ws.db.session() as s:  # the retractions say why, and from which version
        retraction = s.scalars(
            select(Label).where(Label.retracted.is_(True)).order_by(Label.id.desc())
        ).first()
        assert retraction.evidence["retracted_by"]["reason"] == "rollback"
        assert retraction.evidence["retracted_by"]["moved_from"] == v3

    # Back to the bootstrap's model: no pseudo-labels at all; then forward to the newest.
    assert rollback_champion(ws, registry, "test").model.version == m1
    assert current_pseudo(ws) == {}
    assert ws.versions.snapshot("at cycle 1")[0].id == v1
    forward = promote_champion(ws, registry, m3, "test")
    assert forward.labels.restored == len(current_pseudo(ws)) > 0
    assert ws.versions.snapshot("forward again")[0].id == v3
    with ws.db.session() as s:  # a restored label keeps its evidence, and says it came back
        restored = s.scalars(select(Label).order_by(Label.id.desc())).first()
        assert restored.evidence["restored_by"]["reason"] == "promote"
        assert "label_id" in restored.evidence["restored_by"]

    # A reviewer labels a sample that both later versions pseudo-labeled: no move retracts it.
    sid = sorted(set(pseudo_v2) & set(current_pseudo(ws)))[0]
    with ws.db.session() as s:
        s.add(
            Label(sample_id=sid, label="7", source=LabelSource.HUMAN.value, method="review",
                  annotator="engineer:ann")
        )  # fmt: skip
    still_pseudo = current_pseudo(ws)
    assert sid not in still_pseudo
    back = rollback_champion(ws, registry, "test")
    assert back.model.version == m1 and back.labels.kept_human == 0
    assert back.labels.retracted == len(still_pseudo) and current_pseudo(ws) == {}
    assert restore_labels(ws, v2, "promote", v1).kept_human == 1  # forward: it still wins
    with ws.db.session() as s:
        (current,) = s.scalars(current_labels_query(sample_ids=[sid]))
        assert (current.source, current.label) == (LabelSource.HUMAN.value, "7")
    assert set(current_pseudo(ws)) == set(pseudo_v2) - {sid}


def test_no_move_while_a_cycle_runs(ws, registry) -> None:
    ingest_digits(ws, 300)
    with exclusive_cycles(ws.db, "a running cycle"), pytest.raises(ConflictError):
        rollback_champion(ws, registry, "test")
