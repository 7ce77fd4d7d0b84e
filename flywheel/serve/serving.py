"""Serving predictions from the current champion, and recording each one.

``ChampionCache`` holds the loaded champion and looks at the registry's ``champion`` alias
at most every ``refresh_seconds``: a promotion (by a cycle, an engineer, or another
process) reaches serving without a restart, and requests do not each pay a registry call.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flywheel.config import IngestSettings, LearningSettings
from flywheel.db import Database, Prediction, Sample
from flywheel.db.models import Split, utcnow
from flywheel.errors import FlywheelError, InvalidInputError, NotFoundError
from flywheel.learn.backbones import images_to_tensor
from flywheel.learn.registry import ModelRegistry, classes_of
from flywheel.store.blobs import BlobStore, sha256_hex
from flywheel.store.images import RESIZE_POLICIES, inspect_image, to_model_input


class NoModelError(FlywheelError):
    """Nothing to serve yet: no model has been promoted to champion."""


# The input size for a model registered before models recorded theirs, when the settings
# name none either: a fixed size keeps memory per request bounded (an upload's own size
# would not), and the models of that time adapt their pooling to any size.
LEGACY_INPUT_SIZE = 32


@dataclass(frozen=True)
class ServingModel:
    version: str
    classes: tuple[str, ...]
    model: nn.Module = field(repr=False)
    # The transform the model was trained with (registry tags); None: not recorded.
    input_size: int | None = None
    channels: int | None = None
    resize: str | None = None

    @classmethod
    def from_tags(cls, version: str, model: nn.Module, tags: dict[str, str]) -> ServingModel:
        def number(key: str) -> int | None:
            return int(tags[key]) if tags.get(key, "").isdigit() else None

        classes = classes_of(tags)
        channels = number("channels")
        resize = tags.get("resize")
        return cls(
            version,
            classes,
            model,
            number("input_size") or None,
            channels if channels in (1, 3) else None,
            resize if resize in RESIZE_POLICIES else None,
        )


@dataclass(frozen=True)
class PredictionRecord:
    id: str
    sample_id: str
    model_version: str
    label: str
    confidence: float
    top_k: list[dict[str, float | str]]
    app_id: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: Prediction) -> PredictionRecord:
        return cls(
            row.id,
            row.sample_id,
            row.model_version,
            row.label,
            row.confidence,
            list(row.top_k),
            row.app_id,
            row.created_at,
        )


class ChampionCache:
    """The champion model, reloaded when the registry's alias moves (thread-safe)."""

    def __init__(
        self,
        registry: ModelRegistry,
        refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._current: ServingModel | None = None
        self._checked_at = -float("inf")

    @property
    def loaded_version(self) -> str | None:
        """The version in memory now, without asking the registry."""
        current = self._current
        return current.version if current is not None else None

    def invalidate(self) -> None:
        """Look at the registry on the next request (after a promotion in this process)."""
        with self._lock:
            self._checked_at = -float("inf")

    def current(self) -> ServingModel:
        """The champion to serve; NoModelError while there is none."""
        with self._lock:
            now = self._clock()
            if now - self._checked_at >= self.refresh_seconds:
                self._checked_at = now
                champion = self.registry.champion()
                if champion is None:
                    self._current = None
                elif self._current is None or self._current.version != champion.version:
                    model = self.registry.load(champion.version)
                    self._current = ServingModel.from_tags(champion.version, model, champion.tags)
            if self._current is None:
                raise NoModelError("no champion model yet: run a cycle first")
            return self._current


def prepare_image(data: bytes, serving: ServingModel, learning: LearningSettings) -> np.ndarray:
    """The model's input, by the model's own transform: uint8 (S, S) or (S, S, 3).

    What the model did not record (older models) comes from ``learning``, and the size,
    failing that, is ``LEGACY_INPUT_SIZE``: never the upload's own resolution.
    """
    size = serving.input_size or learning.image_size or LEGACY_INPUT_SIZE
    channels = serving.channels or learning.channels or 1  # older models: grey
    return to_model_input(data, size, channels, serving.resize or learning.resize)


@torch.no_grad()
def classify(serving: ServingModel, image: np.ndarray, top_k: int) -> list[tuple[str, float]]:
    """The ``top_k`` (label, probability) pairs for one image, most probable first."""
    x = images_to_tensor(image[None]).float() / 255.0
    try:
        probs = F.softmax(serving.model(x).float(), dim=1)[0]
    except RuntimeError as exc:  # e.g. an image size the model cannot take
        raise InvalidInputError(f"the model cannot take this image: {exc}") from None
    k = min(top_k, probs.numel())
    values, indices = torch.topk(probs, k)
    names = serving.classes
    return [
        (names[int(i)] if int(i) < len(names) else str(int(i)), float(v))
        for v, i in zip(values, indices, strict=True)
    ]


def store_input(
    db: Database, blobs: BlobStore, data: bytes, ingest: IngestSettings, source: str
) -> str:
    """Validate and store an uploaded input in the pool (content-addressed); its sample id.

    Uploading the same bytes twice stores them once. Bad bytes raise InvalidInputError and
    store nothing.
    """
    info = inspect_image(
        data, ingest.allowed_formats, ingest.max_image_bytes, ingest.max_image_pixels
    )
    sample_id = sha256_hex(data)
    with db.session() as s:
        if s.get(Sample, sample_id) is not None:
            return sample_id
    stored = blobs.put(data)
    with db.session() as s:
        if s.get(Sample, sample_id) is None:  # a concurrent upload of the same bytes
            s.add(
                Sample(
                    id=sample_id,
                    blob_uri=stored.uri,
                    source=source,
                    split=Split.POOL.value,
                    format=info.format,
                    width=info.width,
                    height=info.height,
                    size_bytes=len(data),
                )
            )
    return sample_id


def predict_sample(
    db: Database,
    blobs: BlobStore,
    serving: ServingModel,
    sample_id: str,
    learning: LearningSettings,
    top_k: int,
    app_id: str | None,
    data: bytes | None = None,
) -> PredictionRecord:
    """Classify a stored sample with ``serving`` and record the prediction."""
    if data is None:
        with db.session() as s:
            if s.get(Sample, sample_id) is None:
                raise NotFoundError(f"no sample {sample_id!r}")
        data = blobs.get(sample_id)
    ranked = classify(serving, prepare_image(data, serving, learning), top_k)
    row = Prediction(
        id=str(uuid.uuid4()),
        sample_id=sample_id,
        model_version=serving.version,
        label=ranked[0][0],
        confidence=ranked[0][1],
        top_k=[{"label": name, "probability": p} for name, p in ranked],
        app_id=app_id,
        created_at=utcnow(),
    )
    with db.session() as s:
        s.add(row)
        s.flush()
        return PredictionRecord.from_row(row)
