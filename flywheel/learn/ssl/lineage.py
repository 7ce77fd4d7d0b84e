"""An SSL model that follows a growing pool instead of restarting each time it changes.

A lineage is one project's SSL setup: the method and backbone config, the input and the
pretrained start. Its last finished run is recorded in ``<cache>/lineage/<key>.json``. A
cycle whose pool is the recorded one reuses that run; a pool that changed continues from
it for a budget counted in samples seen: ``ssl_epochs`` views of every sample that is new,
spent as whole epochs over the current pool (at least one), so that a pool grown by 1 %
costs about 1 % of a full training, and older samples are seen again as the new ones are
learned. The first run of a lineage trains ``ssl_epochs`` epochs from its start.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from flywheel.datasets.fingerprint import fingerprint
from flywheel.learn.ssl.loop import CHECKPOINT_NAME, SSL_VERSION

LINEAGE_VERSION = 1


@dataclass(frozen=True)
class SSLRun:
    """One run of a lineage: where its checkpoint is and what it was trained on."""

    key: str  # checkpoint folder name under the cache
    images: str  # fingerprint of the ordered sample ids it trained on
    samples: int  # pool size it trained on
    epochs: int  # epochs over that pool
    parent: str | None  # key of the run it continued from
    samples_seen: int  # views of samples over the whole lineage, this run included


def lineage_file(cache_dir: Path, setup: str) -> Path:
    key = fingerprint("ssl-lineage", LINEAGE_VERSION, str(SSL_VERSION), setup, length=24)
    return cache_dir / "lineage" / f"{key}.json"


def last_run(path: Path) -> SSLRun | None:
    if not path.exists():
        return None
    return SSLRun(**json.loads(path.read_text()))


def record_run(path: Path, run: SSLRun) -> None:
    """The lineage's last finished run is now ``run`` (atomic: a reader sees old or new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(asdict(run)))
    os.replace(tmp, path)


def plan_run(
    lineage: Path, last: SSLRun | None, images: str, samples: int, full_epochs: int
) -> SSLRun:
    """The run this pool needs in ``lineage``: its last run again, a continuation of it, or
    a first run. Keys are named by the lineage too: two setups never share a checkpoint."""
    if last is not None and last.images == images:
        return last
    if last is None:
        epochs, parent, seen_before = full_epochs, None, 0
    else:
        new = max(samples - last.samples, 0)
        epochs = max(1, math.ceil(full_epochs * new / max(samples, 1)))
        parent, seen_before = last.key, last.samples_seen
    parts = (lineage.stem, images, str(epochs), parent or "")
    key = fingerprint("ssl-run-key", LINEAGE_VERSION, *parts, length=24)
    return SSLRun(key, images, samples, epochs, parent, seen_before + epochs * samples)


def parent_state(cache_dir: Path, run: SSLRun) -> dict[str, torch.Tensor] | None:
    """The whole model of the run ``run`` continues from; None for a first run or when the
    parent's checkpoint is gone (another node's cache): then the run starts afresh."""
    if run.parent is None:
        return None
    path = cache_dir / run.parent / CHECKPOINT_NAME
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)["model"]
