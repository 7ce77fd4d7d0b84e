"""A select step's plan: what its shard tasks do, and the files they read.

The plan is recorded as the cycle's ``outputs["select_plan"]``; beside it in the store, under
``cycles/<id>/select/``, are the chosen embedder's weights (``embedder.pt``) and the pool's
ids, one file per shard (``shard-00000.ids``, one id per line). A shard task needs nothing
else: not the pool, not the SSL cache of the node that planned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from flywheel.datasets.fingerprint import fingerprint
from flywheel.db import Cycle
from flywheel.errors import InvalidInputError
from flywheel.learn.data import ModelInput
from flywheel.store.id_index import IdIndex, SampleIds
from flywheel.store.storage import read_bytes, write_atomic
from flywheel.workspace import Workspace

SELECT_PLAN = "select_plan"  # the cycle output holding the plan
PLAN_VERSION = 1
EMBEDDER_FILE = "select/embedder.pt"


@dataclass(frozen=True)
class SelectPlan:
    embedder: str  # the chosen candidate's name ("ssl", "pretrained", "pca")
    fingerprint: str  # the embedding store key of its vectors
    scores: dict[str, float]  # every candidate's leave-one-out kNN accuracy on the labels
    shard_size: int
    shards: int
    pool: int  # pool samples, over all shards
    input: dict[str, Any]  # ModelInput.as_dict(): what the images are brought to
    classes: list[str]
    # role ("champion", "latest") -> model version whose pool probabilities the shards store:
    # only the opinions the strategy asks for, of models that predict these classes.
    models: dict[str, str]
    bootstrap: bool  # no champion yet: nothing is selected, the pool is only embedded
    ssl: dict[str, Any] | None  # the SSL lineage run (flywheel.learn.ssl.lineage.SSLRun)
    pretrained: dict[str, Any] | None
    version: int = PLAN_VERSION

    @property
    def spec(self) -> ModelInput:
        spec = ModelInput.from_dict(self.input)
        assert spec is not None  # a plan always records its input
        return spec

    def probs_fingerprint(self, version: str) -> str:
        """The store key of model ``version``'s class probabilities at this input: a model
        version never changes, so its scores of a sample are kept like embeddings."""
        return fingerprint("classifier-probs", version, repr(self.spec), length=24)

    def shard_bounds(self, shard: int) -> tuple[int, int]:
        if not 0 <= shard < self.shards:
            raise InvalidInputError(f"the plan has shards 0..{self.shards - 1}, not {shard}")
        start = shard * self.shard_size
        return start, min(start + self.shard_size, self.pool)


def plan_of(cycle: Cycle) -> SelectPlan | None:
    """The cycle's recorded plan; None before its select step planned."""
    raw = (cycle.outputs or {}).get(SELECT_PLAN)
    if not raw or raw.get("version") != PLAN_VERSION:
        return None
    return SelectPlan(**raw)


def _shard_file(shard: int) -> str:
    return f"select/shard-{shard:05d}.ids"


def write_plan_files(
    ws: Workspace, cycle_id: int, plan: SelectPlan, pool_ids: Sequence[str], embedder: bytes
) -> None:
    """The files the plan's shard tasks read. Overwritten by a retried plan, which writes the
    same bytes: the same data and models give the same plan."""
    fs, path = ws.cycle_file(cycle_id, EMBEDDER_FILE)
    write_atomic(fs, path, embedder)
    for shard in range(plan.shards):
        start, end = plan.shard_bounds(shard)
        fs, path = ws.cycle_file(cycle_id, _shard_file(shard))
        write_atomic(fs, path, SampleIds(pool_ids[start:end]).lines())


def read_shard_ids(ws: Workspace, cycle_id: int, shard: int) -> list[str]:
    fs, path = ws.cycle_file(cycle_id, _shard_file(shard))
    return read_bytes(fs, path).decode().split("\n")


def read_embedder_file(ws: Workspace, cycle_id: int) -> bytes:
    fs, path = ws.cycle_file(cycle_id, EMBEDDER_FILE)
    return read_bytes(fs, path)


def planned_pool_index(ws: Workspace, cycle_id: int, plan: SelectPlan) -> IdIndex:
    """The plan's pool, to look ids up in, read a shard at a time: a million ids never
    become Python strings at once."""
    parts = []
    for shard in range(plan.shards):
        fs, path = ws.cycle_file(cycle_id, _shard_file(shard))
        parts.append(np.array(read_bytes(fs, path).split(b"\n"), dtype=np.bytes_))
    return IdIndex(np.concatenate(parts) if parts else np.zeros(0, dtype="S1"))
