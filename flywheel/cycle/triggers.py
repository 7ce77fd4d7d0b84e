"""What starts a cycle by itself: enough new feedback, or drifted inputs.

Each check starts a cycle through the caller's ``start`` when its trigger is due: queued for
the workers (:func:`flywheel.cycle.runner.queue_cycle`) or run in the caller's process. The
schedule (beat's cron) and engineers start cycles directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import suppress

from sqlalchemy import func, select

from flywheel.config import Settings
from flywheel.cycle.lease import current
from flywheel.cycle.runner import queue_cycle
from flywheel.db import Cycle, Feedback
from flywheel.db.models import CycleTrigger
from flywheel.errors import ConflictError
from flywheel.insights import drift
from flywheel.insights.drift import DriftReport
from flywheel.learn.registry import ModelRegistry
from flywheel.workspace import Workspace

# Starts a cycle with this trigger and returns its id; ConflictError while another runs.
Start = Callable[[str], int]


def feedback_since_last_cycle(ws: Workspace) -> int:
    """Feedback items accepted since the newest cycle was created (all, before any cycle)."""
    with ws.db.session() as s:
        since = s.scalar(select(func.max(Cycle.created_at)))
        query = select(func.count()).select_from(Feedback)
        if since is not None:
            query = query.where(Feedback.created_at > since)
        return int(s.scalar(query) or 0)


def feedback_trigger_due(ws: Workspace, threshold: int) -> bool:
    """True when ``threshold`` (> 0) new feedback items arrived and no cycle is running."""
    if threshold <= 0 or current(ws.db) is not None:
        return False
    return feedback_since_last_cycle(ws) >= threshold


def check_feedback_and_trigger(ws: Workspace, settings: Settings, start: Start) -> int | None:
    """Start a cycle (trigger ``"feedback"``) when ``triggers.feedback_count`` new feedback
    items arrived; its id, or None when not due or another cycle started first."""
    if not feedback_trigger_due(ws, settings.triggers.feedback_count):
        return None
    return _started(start, CycleTrigger.FEEDBACK)


def check_drift_and_trigger(
    ws: Workspace, registry: ModelRegistry, settings: Settings, start: Start | None = None
) -> tuple[DriftReport | None, int | None]:
    """Measure drift; when drifted and ``drift.trigger_cycle`` is on, start a cycle (trigger
    ``"drift"``) through ``start``, by default queued for the workers without relaying. The
    cycle id is None when none started, also when another cycle is running (the next check
    tries again)."""
    report = drift.measure_drift(ws, registry, settings.drift)
    if report is None or not report.drifted or not settings.drift.trigger_cycle:
        return report, None
    if start is None:
        return report, _started(
            lambda trigger: queue_cycle(ws, settings, trigger, None)[0], CycleTrigger.DRIFT
        )
    return report, _started(start, CycleTrigger.DRIFT)


def _started(start: Start, trigger: str) -> int | None:
    with suppress(ConflictError):  # a cycle started elsewhere meanwhile
        return start(trigger)
    return None


class Every:
    """True from ``due()`` at most once per ``interval_s`` (never when not ``enabled``): how
    often a long-running process measures drift."""

    def __init__(self, interval_s: float, enabled: bool = True) -> None:
        self.interval_s = interval_s
        self.enabled = enabled
        self._last = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if not self.enabled or now - self._last < self.interval_s:
            return False
        self._last = now
        return True
