"""Pool samples lost from the store: a blob deleted, corrupted or replaced by undecodable
bytes, before or while the cycle runs.

No step reads the whole pool up front (at a million images that is one process reading
them all); each step finds lost images as it reads. No single sample fails a cycle: a lost
sample is quarantined under the cycle (:mod:`flywheel.store.quarantine`) and the step goes
on without it. Every later load of the cycle's data leaves quarantined samples out, so the
merge and the train step agree on the pool. A shard checks its images as it reads them
(:func:`checked_shard_images`); the plan (SSL) and the train step, which read pool images
while they train, run again without the lost samples (:func:`run_without_lost_samples`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flywheel.config import LearningSettings
from flywheel.cycle.state import load_data
from flywheel.learn.data import ModelInput, stream_pool
from flywheel.learn.pool_images import BlobImages, UnreadableSampleError
from flywheel.store import quarantine
from flywheel.workspace import Workspace

T = TypeVar("T")
# Runs of a step that meet a lost sample before it gives up: each run first quarantines every
# lost image of the pool, so a second loss means samples keep vanishing while it runs.
MAX_RUNS = 3


def checked_shard_images(
    ws: Workspace, cycle_id: int, ids: list[str], spec: ModelInput, cache_bytes: int
) -> BlobImages:
    """``ids``' images, each read and checked now (and kept in the cache up to
    ``cache_bytes``); those that can no longer be used are quarantined and left out."""
    images, lost = stream_pool(ws.blobs, ids, spec, cache_bytes)
    quarantine.record(ws.db, lost, cycle_id)
    return images


def quarantine_lost_pool(ws: Workspace, cycle_id: int, learning: LearningSettings) -> int:
    """Read the cycle's whole pool once and quarantine what can no longer be used; returns
    how many were lost. The cached decodes are dropped: only the verdict is wanted."""
    data = load_data(ws, cycle_id, learning)
    if data.input is None:
        return 0
    _, lost = stream_pool(ws.blobs, data.pool_ids, data.input, 0)
    return quarantine.record(ws.db, lost, cycle_id)


def run_without_lost_samples(
    ws: Workspace, cycle_id: int, learning: LearningSettings, run: Callable[[], T]
) -> T:
    """``run()``; when it meets a pool image that can no longer be used, every such image
    of the cycle's pool is quarantined in one pass and ``run()`` starts again (it loads the
    cycle's data anew, now without them)."""
    for _ in range(MAX_RUNS - 1):
        try:
            return run()
        except UnreadableSampleError:
            quarantine_lost_pool(ws, cycle_id, learning)
    return run()
