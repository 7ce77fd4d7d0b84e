"""The learning profile a data set needs, derived from the data when no config gives it.

Two choices depend on the data, each kept with a reason a person can read in the cycle's
params. Channels: colour when any sampled image has colour that is not just noise (a grey
photo saved as RGB, or JPEG chroma noise, stays grey). Augmentation: the two presets differ
mainly in flips, which help photos and hurt digits (a mirrored 2 is not a 2), so the choice
asks that question of held-out labels: a classifier trained without flips, on one half of
the labels, predicts the other half plain and mirrored; if mirroring significantly loses
correct answers (exact one-sided sign test) flips change the class and "digits" is used,
otherwise "natural". With too few labels, or a classifier that learned too little to ask
(no better than always answering the largest class), a stated prior decides.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy.stats import binomtest

from flywheel.errors import IntegrityError, InvalidInputError, NotFoundError
from flywheel.learn.backbones import AugmentConfig, stem_stride_for
from flywheel.learn.training import TrainConfig, train_classifier
from flywheel.store.blobs import BlobStore
from flywheel.store.images import decode_image, to_model_input

THUMB = 64  # images are compared at most this many pixels a side
COLOUR_LEVELS = 8  # a pixel is coloured when max - min over R, G, B exceeds this
COLOUR_FRACTION = 0.01  # an image is colour when more than this fraction of pixels are
# One-sided: mirroring loses more than it gains (sign test on lost vs gained), and the
# classifier beats always answering the largest class (else it cannot tell).
P_SIGNIFICANT = 0.05
MIN_DECIDED = 10  # labels, and held-out images correct plain or mirrored, for a test
PRIOR_NATURAL_SIDE = 24  # prior: colour, or grey at least this many pixels a side -> natural
PRESETS = ("digits", "natural")
# Store errors, then what PIL raises on bad bytes (UnidentifiedImageError is an OSError).
_SKIP = (NotFoundError, IntegrityError, InvalidInputError, OSError, ValueError, SyntaxError)
_SKIP += (EOFError, Image.DecompressionBombError)


def _is_colour(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as img:
        small = max(img.size) <= THUMB
    # to_model_input reduces a large image while decoding it (bounded memory, cheap).
    rgb = np.asarray(decode_image(data) if small else to_model_input(data, THUMB, 3), np.int16)
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    return float((spread > COLOUR_LEVELS).mean()) > COLOUR_FRACTION


def detect_channels(blobs: BlobStore, ids: list[str], max_samples: int = 64) -> tuple[int, str]:
    """(1 or 3, reason): 3 when at least one of up to ``max_samples`` images, spread evenly
    over ``ids``, is colour. Unreadable images are skipped."""
    if not ids:
        return 1, "1 channel: there are no images to look at"
    picks = np.unique(np.linspace(0, len(ids) - 1, min(max_samples, len(ids))).round())
    read = colour = 0
    for i in picks.astype(int):
        try:
            is_colour = _is_colour(blobs.get(ids[i]))
        except _SKIP:
            continue
        read += 1
        colour += is_colour
    skipped = len(picks) - read
    note = f" ({skipped} unreadable skipped)" if skipped else ""
    rule = f"over {COLOUR_FRACTION:.0%} of pixels with channels over {COLOUR_LEVELS} levels apart"
    if read == 0:
        return 1, f"1 channel: none of the {len(picks)} sampled images could be read"
    if colour:
        return 3, f"3 channels: {colour} of {read} sampled images are colour ({rule}){note}"
    return 1, f"1 channel: none of {read} sampled images is colour ({rule}){note}"


@dataclass(frozen=True)
class AugmentChoice:
    preset: str  # "digits" or "natural"
    reason: str
    evidence: dict[str, float | int]


def _prior(images: np.ndarray, channels: int, why: str, evidence: dict) -> AugmentChoice:
    side = min(images.shape[1:3]) if images.ndim >= 3 else 0
    preset = "natural" if channels == 3 or side >= PRIOR_NATURAL_SIDE else "digits"
    basis = "colour images" if channels == 3 else f"grey images {side} px a side"
    rule = f"colour or >= {PRIOR_NATURAL_SIDE} px: natural; small grey: digits"
    reason = f"{preset} by prior ({basis}; {rule}): {why}"
    return AugmentChoice(preset, reason, {**evidence, "prior": 1, "side": int(side)})


def _folds(labels: np.ndarray, seed: int) -> np.ndarray:
    """A fold (0 or 1) per label, stratified: each class's labels alternate after a shuffle."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        fold[idx[1::2]] = 1
    return fold


def choose_augment(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    channels: int,
    seed: int = 0,
    epochs: int = 8,
) -> AugmentChoice:
    """The "digits" preset when mirroring significantly hurts held-out predictions, else
    "natural"; with too little evidence, the prior (colour or large: natural).

    ``images`` uint8 (N, H, W) or (N, H, W, 3), ``labels`` int (N,) in [0, num_classes).
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    counts = np.unique(labels, return_counts=True)[1]  # labeled classes only
    base: dict[str, float | int] = {"n_labels": n, "n_classes": len(counts)}
    if len(counts) < 2:
        return _prior(images, channels, f"{len(counts)} labeled class(es), need 2", base)
    if min(counts) < 2:
        why = f"a class has {min(counts)} label, so no 2-fold split"
        return _prior(images, channels, why, base)
    if n < MIN_DECIDED:
        return _prior(images, channels, f"only {n} labels (need {MIN_DECIDED})", base)
    fold = _folds(labels, seed)
    plain_ok = np.zeros(n, dtype=bool)
    mirror_ok = np.zeros(n, dtype=bool)
    for k in (0, 1):
        train, test = fold != k, fold == k
        cfg = TrainConfig(
            in_channels=channels,
            stem_stride=stem_stride_for(images.shape[1]),
            epochs=epochs,
            steps_per_epoch=8,
            weak=AugmentConfig.for_digits("weak"),
            strong=AugmentConfig.for_digits("strong"),
            seed=seed,
        )
        model = train_classifier(images[train], labels[train], None, cfg, num_classes)
        held = images[test]
        mirrored = np.ascontiguousarray(held[:, :, ::-1])  # the width axis, for (H, W[, 3])
        plain_ok[test] = model.predict_proba(held).argmax(1) == labels[test]
        mirror_ok[test] = model.predict_proba(mirrored).argmax(1) == labels[test]
    lost = int((plain_ok & ~mirror_ok).sum())
    gained = int((~plain_ok & mirror_ok).sum())
    decided = int((plain_ok | mirror_ok).sum())
    p = binomtest(lost, lost + gained, 0.5, alternative="greater").pvalue if lost + gained else 1.0
    # A classifier no better than always answering the largest class has nothing to say
    # about flips: lost = gained = 0 would otherwise read as "flips are harmless".
    majority = float(counts.max() / n)
    p_learned = binomtest(int(plain_ok.sum()), n, majority, alternative="greater").pvalue
    acc, acc_m = float(plain_ok.mean()), float(mirror_ok.mean())
    evidence = {
        **base,
        "heldout_n": n,
        "accuracy_plain": round(acc, 4),
        "accuracy_mirrored": round(acc_m, 4),
        "majority_rate": round(majority, 4),
        "flips_lost": lost,
        "flips_gained": gained,
        "p_value": round(float(p), 6),
        "p_above_majority": round(float(p_learned), 6),
    }
    if decided < MIN_DECIDED:
        why = f"only {decided} of {n} held-out images correct either way (need {MIN_DECIDED})"
        return _prior(images, channels, why, evidence)
    if p_learned >= P_SIGNIFICANT:
        why = (
            f"held-out accuracy {acc:.0%} is not significantly above the {majority:.0%} of "
            f"always answering the largest class (p={p_learned:.3g})"
        )
        return _prior(images, channels, why, evidence)
    numbers = (
        f"held-out accuracy {acc:.0%} plain vs {acc_m:.0%} mirrored over {n} images; "
        f"mirroring lost {lost}, gained {gained}, sign test p={p:.3g}"
    )
    if p < P_SIGNIFICANT:
        return AugmentChoice("digits", f"digits: flips change the class ({numbers})", evidence)
    reason = f"natural: flips keep the class ({numbers}, not below {P_SIGNIFICANT})"
    return AugmentChoice("natural", reason, evidence)


@dataclass(frozen=True)
class DataProfile:
    channels: int
    channels_reason: str
    augment: str
    augment_reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "channels": int(self.channels),
            "channels_reason": str(self.channels_reason),
            "augment": str(self.augment),
            "augment_reason": str(self.augment_reason),
        }

    @classmethod
    def from_dict(cls, d: Any) -> DataProfile | None:
        """The profile recorded by ``as_dict``; None when absent, incomplete or invalid."""
        if not isinstance(d, dict):
            return None
        ch, aug = d.get("channels"), d.get("augment")
        reasons = d.get("channels_reason"), d.get("augment_reason")
        if ch not in (1, 3) or isinstance(ch, bool) or aug not in PRESETS:
            return None
        if not all(isinstance(r, str) for r in reasons):
            return None
        return cls(int(ch), reasons[0], str(aug), reasons[1])
