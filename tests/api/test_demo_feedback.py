"""The demo's feedback turn (lives here for the served-champion fixtures)."""

from __future__ import annotations

from sqlalchemy import func, select

from flywheel.cli.demo_feedback import USERS, simulate_feedback
from flywheel.db import Feedback, Prediction
from flywheel.learn.registry import ModelRegistry


def test_simulated_users_feedback_becomes_consensus_labels(api_workspace, api_settings) -> None:
    registry = ModelRegistry.from_settings(api_settings)
    result = simulate_feedback(api_workspace, registry, n_predictions=40, seed=0)
    with api_workspace.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Prediction)) == 40
        assert s.scalar(select(func.count()).select_from(Feedback)) == result.feedback == 120
        users = set(s.scalars(select(Feedback.user_id).distinct()))
    assert users <= set(USERS)
    assert result.labels_written + result.review_opened > 0
    # Mostly reliable users: most consensus labels are right, even with a troll among them.
    assert result.labels_correct >= 0.8 * result.labels_written
