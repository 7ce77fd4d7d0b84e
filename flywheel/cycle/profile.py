"""The cycle's data profile: what the settings leave to the data, decided once and recorded.

``learning.channels: null`` and ``learning.augment: auto`` (the defaults) are resolved here,
before the select step loads any image: channels from the images themselves, the
augmentation preset from held-out human labels (:mod:`flywheel.learn.profile`). The choice
and its reason are kept as ``outputs["profile"]``, and :func:`flywheel.cycle.state.cycle_learning`
lays it over the queued settings, so every step of the cycle (and a retried one) learns
with the same profile. A project decides once: later cycles reuse the newest recorded
profile, so that a champion and its successors take the same input.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from flywheel.config import LearningSettings
from flywheel.cycle.state import PROFILE, load_cycle, load_data, record_output
from flywheel.db import Cycle, Sample
from flywheel.db.models import Split
from flywheel.learn.profile import DataProfile, choose_augment, detect_channels
from flywheel.store import quarantine
from flywheel.workspace import Workspace


def earlier_profile(ws: Workspace, cycle_id: int) -> dict[str, Any] | None:
    """The newest profile an earlier cycle recorded, if any."""
    with ws.db.session() as s:
        rows = s.scalars(
            select(Cycle.outputs).where(Cycle.id < cycle_id).order_by(Cycle.id.desc())
        ).all()
    return next((o[PROFILE] for o in rows if o and PROFILE in o), None)


def learning_ids(ws: Workspace) -> list[str]:
    """The samples a cycle learns from (not the test split, not quarantined), by id."""
    with ws.db.session() as s:
        return list(
            s.scalars(
                select(Sample.id)
                .where(Sample.split != Split.TEST)
                .where(Sample.id.not_in(quarantine.quarantined_ids()))
                .order_by(Sample.id)
            )
        )


REUSED = "as decided before: "


def reused(reason: str) -> str:
    """An earlier cycle's reason, marked as reused once (not once per cycle)."""
    return reason if reason.startswith(REUSED) else REUSED + reason


def resolve_profile(ws: Workspace, cycle_id: int, learning: LearningSettings) -> dict[str, Any]:
    """Decide (or reuse) the cycle's profile and record it; returns the recorded dict."""
    recorded = (load_cycle(ws, cycle_id).outputs or {}).get(PROFILE)
    if recorded is not None:
        return recorded
    earlier = DataProfile.from_dict(earlier_profile(ws, cycle_id))
    if learning.channels is not None:
        channels, channels_reason = learning.channels, "set in learning.channels"
    elif earlier is not None:
        channels, channels_reason = earlier.channels, reused(earlier.channels_reason)
    else:
        channels, channels_reason = detect_channels(ws.blobs, learning_ids(ws))
    if learning.augment != "auto":
        augment, augment_reason = learning.augment, "set in learning.augment"
    elif earlier is not None:
        augment, augment_reason = earlier.augment, reused(earlier.augment_reason)
    else:
        data = load_data(ws, cycle_id, learning.model_copy(update={"channels": channels}))
        choice = choose_augment(
            data.labeled.images, data.labeled.labels, data.num_classes, channels, learning.seed
        )
        augment, augment_reason = choice.preset, choice.reason
    profile = DataProfile(channels, channels_reason, augment, augment_reason).as_dict()
    record_output(ws, cycle_id, PROFILE, profile)
    return profile
