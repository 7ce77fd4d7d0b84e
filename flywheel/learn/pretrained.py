"""Pretrained starts: a backbone's first weights from a checkpoint on disk or in storage.

SEER's recipe is to pretrain broadly and adapt on your own data; ``learning.pretrained``
names the broad part and SSL on the pool is the adaptation. Nothing is downloaded: the
source is a local path, a storage URI (``s3://...``, any scheme the storage layer opens) or
``blob:<sha256>`` in the project's blob store.

What is understood: a state dict saved with ``torch.save``, bare or inside the usual
containers (``state_dict``, ``model``, DINO's ``teacher``/``student``, ``backbone``);
torchvision ResNet weights (``conv1.weight``, ``layer1.0...``, ``fc`` dropped); an earlier
Flywheel model's or SSL checkpoint's backbone (``backbone.trunk...``). Key prefixes such as
``module.``, ``backbone.``, ``encoder.`` and ``trunk.`` are ignored. A 3-channel first
convolution starts a grey model as the sum over its colour channels. Files are read with
``weights_only=True``: a checkpoint cannot run code.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from flywheel.errors import InvalidInputError, NotFoundError
from flywheel.learn.backbones import Backbone
from flywheel.store import storage
from flywheel.store.blobs import BlobStore, sha256_hex

# Containers a checkpoint's weights are found under, in the order they are preferred
# (DINO's teacher is its better model).
CONTAINER_KEYS = ("teacher", "state_dict", "model", "model_state", "student", "backbone")
IGNORED_PREFIXES = ("module.", "_orig_mod.", "backbone.", "encoder.", "model.", "trunk.")
# A start that sets fewer of the backbone's weights than this is most likely the wrong
# file (another architecture): refused rather than silently mostly random.
MIN_MATCHED_SHARE = 0.5


@dataclass(frozen=True)
class PretrainedStart:
    source: str
    digest: str  # sha256 of the file: part of every key built on these weights
    state: dict[str, torch.Tensor]  # a full state dict for the template backbone
    matched: int  # the backbone's weight tensors taken from the file
    total: int  # of its weight tensors
    notes: list[str] = field(default_factory=list)  # adapted or skipped tensors, why

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "sha256": self.digest,
            "matched": f"{self.matched}/{self.total} tensors",
            "notes": "; ".join(self.notes[:5]) + (" ..." if len(self.notes) > 5 else ""),
        }


def read_source(source: str, blobs: BlobStore | None) -> bytes:
    """The checkpoint's bytes: ``blob:<sha256>``, a storage URI, or a local path."""
    if source.startswith("blob:"):
        if blobs is None:
            raise InvalidInputError("a blob: pretrained source needs the project's blob store")
        return blobs.get(source.removeprefix("blob:"))
    if "://" in source:
        parent, _, name = source.rstrip("/").rpartition("/")
        loc = storage.open_location(parent)
        return storage.read_bytes(loc.fs, loc.path(name))
    path = Path(source).expanduser()
    if not path.is_file():
        raise NotFoundError(f"no pretrained checkpoint at {source}")
    return path.read_bytes()


def _tensors(obj: Any) -> dict[str, torch.Tensor]:
    """The weights in a loaded checkpoint: the first container holding tensors."""
    if isinstance(obj, Mapping):
        flat = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if flat and len(flat) * 2 >= len(obj):
            return flat
        for key in CONTAINER_KEYS:
            if key in obj:
                found = _tensors(obj[key])
                if found:
                    return found
    return {}


def _plain(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in IGNORED_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def match_backbone(
    template: Backbone, weights: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """``template``'s state dict with every tensor ``weights`` has for it (same name after
    prefixes, same shape, or a colour first conv for a grey model): (state, the keys set from
    ``weights``, notes on what was adapted or skipped)."""
    by_name = {_plain(k): v for k, v in weights.items()}
    state = template.state_dict()
    matched: list[str] = []
    notes: list[str] = []
    for key, mine in state.items():
        theirs = by_name.get(_plain(key))
        if theirs is None:
            continue
        if theirs.shape == mine.shape:
            state[key] = theirs.to(mine.dtype).clone()
            matched.append(key)
        elif (
            theirs.ndim == 4
            and theirs.shape[1] == 3
            and mine.shape
            == (
                theirs.shape[0],
                1,
                *theirs.shape[2:],
            )
        ):
            state[key] = theirs.sum(dim=1, keepdim=True).to(mine.dtype)
            matched.append(key)
            notes.append(f"{_plain(key)}: colour filters summed for grey input")
        else:
            notes.append(f"{_plain(key)}: shape {tuple(theirs.shape)} is not {tuple(mine.shape)}")
    return state, matched, notes


def load_pretrained(source: str, template: Backbone, blobs: BlobStore | None) -> PretrainedStart:
    """Read ``source`` and fit it to ``template``; InvalidInputError when it does not fit."""
    raw = read_source(source, blobs)
    try:
        loaded = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, or one that would need code to load
        raise InvalidInputError(f"{source} is not a readable weights file: {exc}") from exc
    state, matched, notes = match_backbone(template, _tensors(loaded))
    # Counted over tensors that hold weights (BatchNorm's step counters are bookkeeping).
    learnable = [k for k in state if not k.endswith("num_batches_tracked")]
    taken = len(set(matched) & set(learnable))
    if not learnable or taken / len(learnable) < MIN_MATCHED_SHARE:
        raise InvalidInputError(
            f"{source} sets {taken} of the {template.name} backbone's {learnable} weight "
            f"tensors; is it a checkpoint of this architecture? ({'; '.join(notes[:3])})"
        )
    return PretrainedStart(source, sha256_hex(raw), state, taken, len(learnable), notes)
