"""Backbones, classifier head and the shared input pipeline."""

import numpy as np
import pytest
import torch

from flywheel.learn.backbones import (
    AugmentConfig,
    Classifier,
    ViewDataset,
    build_augment,
    build_backbone,
    images_to_tensor,
)

torch.set_num_threads(1)


def test_images_to_tensor_grayscale_and_color_layouts():
    gray = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    t = images_to_tensor(gray)
    assert t.shape == (2, 1, 3, 4) and t.dtype == torch.uint8
    assert t[1, 0, 2, 3] == gray[1, 2, 3]
    color = np.zeros((2, 5, 6, 3), dtype=np.uint8)
    color[0, 1, 2, 2] = 7
    tc = images_to_tensor(color)
    assert tc.shape == (2, 3, 5, 6) and tc[0, 2, 1, 2] == 7


def test_images_to_tensor_rejects_wrong_dtype_and_rank():
    with pytest.raises(ValueError, match="uint8"):
        images_to_tensor(np.zeros((2, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        images_to_tensor(np.zeros((8, 8), dtype=np.uint8))


@pytest.mark.parametrize(
    ("name", "size"), [("small_cnn", None), ("small_cnn", 16), ("resnet18", 8)]
)
def test_backbone_output_dim_and_classifier_logits(name, size):
    bb = build_backbone(name, in_channels=1, input_size=size, width=8)
    x = torch.rand(3, 1, 8, 8)
    feats = bb.eval()(x)
    assert feats.shape == (3, bb.out_dim)
    logits = Classifier(bb, num_classes=4).eval()(x)
    assert logits.shape == (3, 4)


def test_unknown_backbone_is_refused():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg11")


def test_resnet_color_input_uses_given_channels():
    bb = build_backbone("resnet18", in_channels=3, input_size=32)
    assert bb.trunk.conv1.in_channels == 3
    assert bb.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 512)


def test_augment_outputs_float_in_unit_range_and_resizes():
    x = torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8)
    strong = AugmentConfig.for_digits("strong")
    strong.resize, strong.elastic_alpha = 16, 4.0
    out = build_augment(strong)(x)
    assert out.dtype == torch.float32 and out.shape == (1, 16, 16)
    assert out.min() >= 0.0 and out.max() <= 1.0
    plain = build_augment(None)(x)
    assert torch.allclose(plain, x.float() / 255)


def test_augment_is_random_but_seeded():
    x = torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8)
    aug = build_augment(AugmentConfig.for_digits("strong"))
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    b = aug(x)
    c = aug(x)
    assert torch.equal(a, b)
    assert not torch.equal(b, c)


def test_digit_presets_never_flip():
    assert not AugmentConfig.for_digits("weak").hflip
    assert not AugmentConfig.for_digits("strong").hflip
    assert AugmentConfig.for_natural("weak").hflip


def test_view_dataset_returns_views_then_targets():
    x = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    y = torch.tensor([5, 6, 7])
    ds = ViewDataset(x, [build_augment(None), build_augment(None)], [y])
    v1, v2, label = ds[2]
    assert len(ds) == 3 and v1.shape == (1, 4, 4) and v2.dtype == torch.float32
    assert label == 7
