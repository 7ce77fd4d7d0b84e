"""Embedders travel as weights and are rebuilt from the cycle's settings: the same module,
the same vectors; a file that is not one, or does not fit, is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from flywheel.config import LearningSettings
from flywheel.errors import InvalidInputError
from flywheel.learn.data import ModelInput
from flywheel.learn.embedders import (
    PCA_NAME,
    PRETRAINED,
    SSL,
    embedder_bytes,
    fit_pixel_pca,
    load_embedder,
)
from flywheel.learn.recipe import ssl_config_for, ssl_shaped_backbone_for
from flywheel.learn.ssl.embed import embed
from flywheel.learn.ssl.loop import build_encoder

LEARNING = LearningSettings(augment="natural", width=8, backbone="small_cnn")
SPEC = ModelInput(16, 3, "stretch")


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)


def test_pixel_pca_projects_like_sklearn() -> None:
    """The module's vectors are sklearn's transform of the same pixels, in HWC order."""
    pool, labeled = _images(60), _images(10, 1)
    module = fit_pixel_pca(pool, labeled, dim=5)
    flat = pool.reshape(60, -1).astype(np.float32) / 255.0
    pca = PCA(n_components=5, random_state=0).fit(flat)
    reference = pca.transform(labeled.reshape(10, -1).astype(np.float32) / 255.0)
    unit = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    np.testing.assert_allclose(embed(module, labeled), unit, atol=1e-5)


@pytest.mark.parametrize("name", [SSL, PRETRAINED, PCA_NAME])
def test_an_embedder_rebuilt_from_its_file_embeds_the_same(name: str) -> None:
    torch.manual_seed(0)
    if name == SSL:
        module = build_encoder(ssl_config_for(LEARNING, SPEC)).eval()
    elif name == PRETRAINED:
        module = ssl_shaped_backbone_for(LEARNING, SPEC).eval()
    else:
        module = fit_pixel_pca(_images(40), _images(5), dim=8)
    images = _images(12, 2)
    rebuilt = load_embedder(embedder_bytes(name, module), LEARNING, SPEC)
    np.testing.assert_array_equal(embed(rebuilt, images), embed(module, images))


def test_a_file_that_is_not_an_embedder_or_does_not_fit_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="not an embedder file"):
        load_embedder(b"not a torch file", LEARNING, SPEC)
    encoder = build_encoder(ssl_config_for(LEARNING, SPEC))
    grey = ModelInput(16, 1, "stretch")  # one channel: the first conv does not fit
    with pytest.raises(InvalidInputError, match="does not fit"):
        load_embedder(embedder_bytes(SSL, encoder), LEARNING, grey)
    with pytest.raises(InvalidInputError, match="no way to rebuild"):
        embedder_bytes("champion", encoder)
