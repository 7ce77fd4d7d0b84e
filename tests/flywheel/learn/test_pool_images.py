import io
import pickle
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

from flywheel.errors import NotFoundError
from flywheel.learn.backbones import images_to_tensor
from flywheel.learn.data import ModelInput, stream_pool
from flywheel.learn.pool_images import (
    CACHE_ENTRY_BYTES,
    BlobImages,
    UnreadableSampleError,
    source_fingerprint,
    stack_images,
    torch_view,
)
from flywheel.store.blobs import BlobStore
from flywheel.store.images import to_model_input

SPEC = ModelInput(8, 1, "stretch")


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def pool(tmp_path):
    """12 distinct 8x8 grey images in a blob store, and the array they decode to."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(12, 8, 8), dtype=np.uint8)
    blobs = BlobStore(str(tmp_path / "store"))
    ids = [blobs.put(png(p)).sha256 for p in pixels]
    return blobs, ids, pixels


def lazy(blobs, ids, cache_bytes=1 << 20) -> BlobImages:
    decode = partial(to_model_input, size=8, channels=1, policy="stretch")
    return BlobImages(blobs, ids, (8, 8), decode, cache_bytes)


def test_indexing_reads_like_the_array(pool):
    blobs, ids, pixels = pool
    images = lazy(blobs, ids)
    assert images.shape == pixels.shape and len(images) == 12
    np.testing.assert_array_equal(images[3], pixels[3])
    np.testing.assert_array_equal(images[-1], pixels[-1])
    np.testing.assert_array_equal(images[2:7], pixels[2:7])
    mask = np.arange(12) % 3 == 0
    np.testing.assert_array_equal(images[mask][0:4], pixels[mask])
    picked = np.array([5, 0, 5])
    np.testing.assert_array_equal(images[picked][0:3], pixels[picked])
    assert images[np.zeros(12, bool)][0:0].shape == (0, 8, 8)


def test_stacked_and_reordered_sources_match_numpy(pool):
    blobs, ids, pixels = pool
    head = pixels[:2].copy()  # an in-memory part, like the human-labeled images
    both = stack_images([head, lazy(blobs, ids)])
    expected = np.concatenate([head, pixels])
    order = np.array([13, 0, 7, 1, 2])
    np.testing.assert_array_equal(both[order][0:5], expected[order])
    np.testing.assert_array_equal(both[order][1], expected[0])
    np.testing.assert_array_equal(both[-1], expected[-1])
    assert isinstance(stack_images([head, head]), np.ndarray)  # arrays stay arrays


def test_torch_view_gives_what_images_to_tensor_gives(pool):
    blobs, ids, pixels = pool
    view, whole = torch_view(lazy(blobs, ids)), images_to_tensor(pixels)
    assert len(view) == 12
    assert torch.equal(view[4], whole[4])
    assert torch.equal(view[3:9], whole[3:9])
    assert torch.equal(torch_view(pixels), whole)


def test_the_cache_stays_within_its_budget_and_reads_again_after(pool, monkeypatch):
    blobs, ids, pixels = pool
    entry = 64 + CACHE_ENTRY_BYTES  # an 8x8 image and its bookkeeping
    images = lazy(blobs, ids, cache_bytes=3 * entry)  # three images
    reads: list[int] = []
    original = blobs.get_many
    monkeypatch.setattr(blobs, "get_many", lambda shas: reads.append(len(shas)) or original(shas))
    np.testing.assert_array_equal(images[0:12], pixels)
    assert reads == [12]  # one batched read
    assert images._cached == 3 * entry and list(images._cache) == ids[-3:]  # LRU kept the last
    images[11]
    assert reads == [12]  # a hit
    images[0]
    assert reads == [12, 1]  # evicted, read again
    subset = images[np.array([0, 1])]
    subset[0:2]
    assert images._cached <= 3 * entry  # a subset spends its pool's budget


def test_pickled_for_a_worker_it_reopens_the_store_without_the_cache(pool):
    blobs, ids, pixels = pool
    images = lazy(blobs, ids)
    images[0:12]
    copy = pickle.loads(pickle.dumps(images))
    assert copy._cached == 0 and copy.ids == ids
    np.testing.assert_array_equal(copy[5], pixels[5])


def test_a_blob_gone_after_validation_fails_loudly(pool):
    blobs, ids, _ = pool
    images = lazy(blobs, ids)
    blobs.delete(ids[2])
    with pytest.raises(UnreadableSampleError, match=ids[2]):
        images[2]


def test_get_many_returns_failures_in_their_place(pool):
    blobs, ids, _ = pool
    got = blobs.get_many([ids[1], "0" * 64, ids[0]])
    assert isinstance(got[1], NotFoundError)
    assert got[0] == blobs.get(ids[1]) and got[2] == blobs.get(ids[0])


def test_stream_pool_keeps_the_good_ids_in_order_and_names_the_bad(pool):
    blobs, ids, pixels = pool
    broken = blobs.put(b"\x89PNG not really").sha256
    ids_in = [ids[0], broken, ids[1], "0" * 64, ids[2]]
    images, failed = stream_pool(blobs, ids_in, SPEC, cache_bytes=1 << 20)
    assert images.ids == [ids[0], ids[1], ids[2]]
    assert failed["0" * 64] == "blob missing from the store"
    assert failed[broken].startswith("undecodable image")
    assert images._cached == 3 * (64 + CACHE_ENTRY_BYTES)  # validated once, into the cache
    np.testing.assert_array_equal(images[0:3], pixels[:3])


def test_fingerprint_names_ids_and_shape_without_reading(pool, monkeypatch):
    blobs, ids, _ = pool
    monkeypatch.setattr(blobs, "get_many", lambda shas: pytest.fail("read"))
    a, b = lazy(blobs, ids), lazy(blobs, ids[::-1])
    assert source_fingerprint(a) == source_fingerprint(lazy(blobs, ids))
    assert source_fingerprint(a) != source_fingerprint(b)
    assert source_fingerprint(a[np.array([0, 1])]) != source_fingerprint(a[np.array([1, 0])])


def test_dataloader_worker_processes_decode_the_pool(pool):
    from torch.utils.data import DataLoader

    from flywheel.learn.backbones import ViewDataset

    blobs, ids, pixels = pool
    dataset = ViewDataset(torch_view(lazy(blobs, ids)), [torch.clone])
    loader = DataLoader(dataset, batch_size=4, num_workers=2, multiprocessing_context="spawn")
    got = torch.cat([batch[0] for batch in loader])
    assert torch.equal(got, images_to_tensor(pixels))


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def test_learning_from_the_lazy_pool_gives_the_same_weights_as_from_the_array(pool):
    """Streaming changes where pixels come from, never what is learned."""
    from flywheel.learn.ssl.embed import embed
    from flywheel.learn.ssl.loop import SSLConfig, train_ssl
    from flywheel.learn.training import TrainConfig, train_classifier

    blobs, ids, pixels = pool
    ssl = SSLConfig(width=8, hidden_dim=16, embedding_dim=8, epochs=2, batch_size=4)
    a, b = train_ssl(pixels, ssl), train_ssl(lazy(blobs, ids), ssl)
    assert_same_weights(a.backbone, b.backbone)
    np.testing.assert_array_equal(embed(a.encoder, pixels), embed(b.encoder, lazy(blobs, ids)))

    cfg = TrainConfig(width=8, epochs=2, steps_per_epoch=2, batch_size=4, fixmatch=True)
    labels = np.arange(4) % 2
    one = train_classifier(pixels[:4], labels, None, cfg, 2, unlabeled_images=pixels)
    head = stack_images([pixels[:2], lazy(blobs, ids)[np.array([2, 3])]])
    two = train_classifier(head, labels, None, cfg, 2, unlabeled_images=lazy(blobs, ids))
    assert_same_weights(one.model, two.model)


def test_remembering_an_image_twice_counts_it_once(pool):
    blobs, ids, pixels = pool
    images = lazy(blobs, ids)
    images.remember(ids[0], pixels[0])
    images[np.array([0, 1])].remember(ids[0], pixels[0])  # through a subset: the pool's cache
    assert images._cached == 64 + CACHE_ENTRY_BYTES and list(images._cache) == [ids[0]]


def test_dropping_the_cache_frees_it_and_reads_again(pool):
    blobs, ids, pixels = pool
    images = lazy(blobs, ids)
    images[0:4]
    images[np.array([0, 1])].drop_cache()  # through a subset: the pool's cache
    assert images._cached == 0 and not images._cache
    np.testing.assert_array_equal(images[2], pixels[2])
