"""Step 1 (CPU): users' feedback becomes labels (or review items) before the cycle reads its
labels; output ``outputs["consensus"]``."""

from __future__ import annotations

from flywheel.cycle.state import Progress, load_cycle, record_output, update_cycle
from flywheel.feedback.consensus import resolve_feedback
from flywheel.workspace import Workspace


def run_consensus_step(ws: Workspace, cycle_id: int, progress: Progress | None = None) -> dict:
    """Users' feedback becomes labels (or review items) before the cycle reads its labels.

    ``progress`` is taken for the steps' common signature; this step reports no state.
    """
    done = (load_cycle(ws, cycle_id).outputs or {}).get("consensus")
    if done is not None:
        return done
    versions_before = ws.versions.list()
    version_in = versions_before[-1].id if versions_before else None
    # Not a state of its own: the cycle stays queued until it starts learning.
    update_cycle(ws, cycle_id, step="consensus", message="resolving users' feedback")
    report = resolve_feedback(ws.db, ws.settings.consensus)
    out = {
        "labels_written": report.labels_written,
        "review": report.review_opened + report.review_updated,
        "samples": report.samples,
        "annotators": report.annotators,
    }
    record_output(ws, cycle_id, "consensus", out, dataset_version_in=version_in)
    return out
