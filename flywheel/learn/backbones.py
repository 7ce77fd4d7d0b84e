"""Backbones, the classifier head, and the image input pipeline they share.

Images cross the library boundary as numpy ``uint8`` arrays, (N, H, W) grayscale or
(N, H, W, C). ``images_to_tensor`` turns them into a ``uint8`` (N, C, H, W) tensor; the
augmentations and ``Backbone.forward`` take float (N, C, H, W) in [0, 1]. Resizing to the
backbone's working size and normalisation live *inside* ``Backbone`` so that the SSL
embedder, the classifier and serving can never disagree about preprocessing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import Dataset
from torchvision.transforms import v2

BACKBONES = ("small_cnn", "resnet18", "resnet50")


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) -> uint8 tensor (N, C, H, W) (no copy of values)."""
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[:, :, :, None]
    if arr.ndim != 4:
        raise ValueError(f"images must be (N, H, W) or (N, H, W, C), got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def stem_stride_for(side: int) -> int:
    """The small CNN's first-conv stride for ``side`` px inputs: it works at ~16 px, where
    the rest of the net was measured, whatever the input (8 -> 1, 32 -> 2, 48 -> 3, cap 4).
    Full-resolution 32 px costs ~5x the compute of strided on 2 cores (BENCHMARKS §17)."""
    return max(1, min(4, round(side / 16)))


class SmallCNN(nn.Module):
    """Four conv blocks sized for small (8x8 .. 64x64) images; a few ms per batch on CPU.

    float (N, C, H, W) -> float (N, 4 * width) after global average pooling.
    ``stem_stride`` > 1 downsamples in the first conv (see :func:`stem_stride_for`).
    """

    def __init__(self, in_channels: int = 1, width: int = 32, stem_stride: int = 1) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
            conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
            return [conv, nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(
            *block(in_channels, width, stem_stride),
            *block(width, 2 * width),
            nn.MaxPool2d(2),
            *block(2 * width, 4 * width),
            *block(4 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.out_dim = 4 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _resnet(name: str, in_channels: int, small_input: bool) -> tuple[nn.Module, int]:
    net = getattr(torchvision.models, name)(weights=None)  # never download weights
    if small_input or in_channels != 3:
        # CIFAR-style stem: a 7x7/2 conv + max-pool would throw away most of a tiny image.
        net.conv1 = nn.Conv2d(
            in_channels,
            64,
            3 if small_input else 7,
            1 if small_input else 2,
            1 if small_input else 3,
            bias=False,
        )
        if small_input:
            net.maxpool = nn.Identity()
    out_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, out_dim


class Backbone(nn.Module):
    """Resize to ``input_size`` (if set), normalise, then run the trunk.

    float (N, C, H, W) in [0, 1] -> float (N, out_dim) features.
    """

    def __init__(
        self,
        name: str,
        in_channels: int = 1,
        input_size: int | None = None,
        width: int = 32,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONES}")
        self.name, self.in_channels, self.input_size = name, in_channels, input_size
        if name == "small_cnn":
            self.trunk: nn.Module = SmallCNN(in_channels, width, stem_stride)
            self.out_dim = self.trunk.out_dim
        else:
            small = input_size is None or input_size <= 64
            self.trunk, self.out_dim = _resnet(name, in_channels, small)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size is not None and x.shape[-1] != self.input_size:
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False
            )
        return self.trunk((x - 0.5) / 0.5)


def build_backbone(
    name: str,
    in_channels: int = 1,
    input_size: int | None = None,
    width: int = 32,
    stem_stride: int = 1,
) -> Backbone:
    """Backbone by config name: ``small_cnn`` (CPU, small images), ``resnet18``/``resnet50``.
    ``stem_stride`` applies to ``small_cnn`` only."""
    return Backbone(name, in_channels, input_size, width, stem_stride)


class Classifier(nn.Module):
    """Backbone + linear head: float (N, C, H, W) in [0, 1] -> logits (N, num_classes)."""

    def __init__(self, backbone: Backbone, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@dataclass
class AugmentConfig:
    """Per-data-set augmentation choices (geometry in pixels of the resized image).

    Flips are off by default: a mirrored 2 is not a 2. ``for_digits`` / ``for_natural``
    give the presets the experiments in ``bench/LEARNING_NOTES.md`` settled on.
    """

    resize: int | None = None  # work at this size (upsampling tiny images smooths warps)
    degrees: float = 10.0
    translate: float = 0.1  # fraction of the side
    scale: tuple[float, float] = (0.9, 1.1)
    shear: float = 5.0
    elastic_alpha: float = 0.0  # 0 = off; displacement magnitude as in torchvision
    elastic_sigma: float = 3.0
    hflip: bool = False
    crop_scale: float | None = None  # RandomResizedCrop min area; None = off
    brightness: float = 0.0  # random gain in [1 - b, 1 + b]
    noise_std: float = 0.0
    erase_prob: float = 0.0

    @classmethod
    def for_digits(cls, strength: str = "weak") -> AugmentConfig:
        # Native 8x8: resize=16 cost 4x the compute for no kNN gain in our measurements.
        if strength == "weak":
            return cls(degrees=8, translate=0.1, scale=(0.92, 1.08), shear=4)
        return cls(
            degrees=15,
            translate=0.15,
            scale=(0.8, 1.15),
            shear=10,
            brightness=0.3,
            noise_std=0.05,
            erase_prob=0.25,
        )

    @classmethod
    def for_natural(cls, strength: str = "weak") -> AugmentConfig:
        if strength == "weak":
            return cls(resize=None, degrees=0, translate=0.1, scale=(1, 1), shear=0, hflip=True)
        return cls(
            resize=None,
            degrees=10,
            translate=0.1,
            scale=(0.9, 1.1),
            hflip=True,
            crop_scale=0.3,
            brightness=0.4,
            noise_std=0.02,
            erase_prob=0.5,
        )


class _Gain(nn.Module):
    def __init__(self, amount: float, noise_std: float) -> None:
        super().__init__()
        self.amount, self.noise_std = amount, noise_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.amount > 0:
            x = x * (1 + (torch.rand(()) * 2 - 1) * self.amount)
        if self.noise_std > 0:
            x = x + torch.randn_like(x) * self.noise_std
        return x.clamp(0, 1)


def build_augment(cfg: AugmentConfig | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 (C, H, W) -> float (C, H', W') in [0, 1]; random draws use torch's RNG."""
    ops: list[nn.Module] = [v2.ToDtype(torch.float32, scale=True)]
    if cfg is None:
        return v2.Compose(ops)
    if cfg.resize is not None:
        ops.append(v2.Resize((cfg.resize, cfg.resize), antialias=True))
    if cfg.crop_scale is not None:
        side = cfg.resize
        ops.append(
            v2.RandomResizedCrop(side, scale=(cfg.crop_scale, 1.0))
            if side
            else _LazyCrop(cfg.crop_scale)
        )
    if cfg.degrees or cfg.translate or cfg.shear or tuple(cfg.scale) != (1, 1):
        ops.append(
            v2.RandomAffine(
                cfg.degrees,
                (cfg.translate, cfg.translate),
                tuple(cfg.scale),
                cfg.shear or None,
                interpolation=v2.InterpolationMode.BILINEAR,
            )
        )
    if cfg.elastic_alpha > 0:
        ops.append(v2.ElasticTransform(alpha=cfg.elastic_alpha, sigma=cfg.elastic_sigma))
    if cfg.hflip:
        ops.append(v2.RandomHorizontalFlip())
    ops.append(_Gain(cfg.brightness, cfg.noise_std))
    if cfg.erase_prob > 0:
        ops.append(v2.RandomErasing(p=cfg.erase_prob, scale=(0.02, 0.15), value=0))
    return v2.Compose(ops)


class _LazyCrop(nn.Module):
    """RandomResizedCrop back to the input's own size (when no ``resize`` is configured)."""

    def __init__(self, min_scale: float) -> None:
        super().__init__()
        self.min_scale = min_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return v2.RandomResizedCrop(tuple(x.shape[-2:]), scale=(self.min_scale, 1.0))(x)


class ViewDataset(Dataset):
    """Item i -> (view_1(x_i), ..., view_k(x_i), *[t[i] for t in targets]).

    ``images`` is uint8 (N, C, H, W); each view is a transform from ``build_augment``.
    """

    def __init__(
        self, images: torch.Tensor, views: Sequence[Callable], targets: Sequence[torch.Tensor] = ()
    ) -> None:
        self.images, self.views, self.targets = images, list(views), list(targets)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple:
        x = self.images[i]
        return (*(view(x) for view in self.views), *(t[i] for t in self.targets))
