"""The data profile: channels seen in the images, augmentation chosen on held-out labels."""

import io

import numpy as np
import torch
from PIL import Image

from flywheel.errors import IntegrityError, NotFoundError
from flywheel.learn.profile import DataProfile, choose_augment, detect_channels

torch.set_num_threads(1)


class FakeBlobs:
    """The part of BlobStore that detect_channels uses."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs

    def get(self, sid: str) -> bytes:
        if sid == "tampered":
            raise IntegrityError(f"blob {sid} does not match its checksum")
        if sid not in self.blobs:
            raise NotFoundError(f"no such file: {sid}")
        return self.blobs[sid]


def encode(arr: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def grey(seed: int, size: tuple[int, int] = (20, 20)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)


def colour(size: tuple[int, int] = (20, 20)) -> np.ndarray:
    img = np.zeros((*size, 3), dtype=np.uint8)
    img[..., 0], img[..., 2] = 200, 40  # red-ish everywhere
    return img


def as_rgb(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[..., None], 3, axis=-1)


def test_grey_images_give_one_channel():
    blobs = FakeBlobs({f"g{i}": encode(grey(i)) for i in range(5)})
    channels, reason = detect_channels(blobs, sorted(blobs.blobs))
    assert channels == 1
    assert "none of 5 sampled images is colour" in reason


def test_grey_stored_as_rgb_and_jpeg_chroma_noise_stay_grey():
    photo = grey(0, (300, 200))  # large: read reduced
    blobs = FakeBlobs(
        {
            "a": encode(as_rgb(grey(1))),
            "b": encode(as_rgb(photo), "JPEG", quality=70),
            "c": encode(as_rgb(grey(2)), "JPEG", quality=50),
        }
    )
    assert detect_channels(blobs, ["a", "b", "c"])[0] == 1


def test_one_colour_image_gives_three_channels_with_the_count():
    blobs = {f"g{i}": encode(as_rgb(grey(i))) for i in range(4)}
    blobs["z"] = encode(colour((400, 300)), "JPEG")  # a large colour photo
    channels, reason = detect_channels(FakeBlobs(blobs), sorted(blobs))
    assert channels == 3
    assert "1 of 5 sampled images are colour" in reason


def test_samples_are_spread_over_the_ids():
    ids = [f"{i:02d}" for i in range(10)]
    blobs = {s: encode(grey(i)) for i, s in enumerate(ids)}
    blobs["01"] = encode(colour())  # between the samples 0 and 4 (of 0, 4 or 5, 9)
    assert detect_channels(FakeBlobs(blobs), ids, max_samples=3)[0] == 1
    blobs["09"] = encode(colour())  # the last id is always sampled
    assert detect_channels(FakeBlobs(blobs), ids, max_samples=3)[0] == 3


def test_unreadable_images_are_skipped():
    blobs = {"bad": b"not an image", "cut": encode(colour())[:40], "ok": encode(grey(0))}
    ids = ["bad", "cut", "missing", "ok", "tampered"]
    channels, reason = detect_channels(FakeBlobs(blobs), ids)
    assert channels == 1
    assert "none of 1 sampled images is colour" in reason and "4 unreadable skipped" in reason


def test_nothing_readable_gives_one_channel_and_says_so():
    channels, reason = detect_channels(FakeBlobs({"bad": b"x"}), ["bad", "missing"])
    assert (channels, reason) == (1, "1 channel: none of the 2 sampled images could be read")
    assert detect_channels(FakeBlobs({}), [])[0] == 1


def bars(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """16x16: a bright vertical bar in the left half (class 0) or the right half (class 1)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in (0, 1):
        for _ in range(per_class):
            img = rng.integers(0, 40, (16, 16)).astype(np.uint8)
            x = int(rng.integers(1, 5)) + 10 * c
            img[2:14, x : x + 3] = rng.integers(200, 256)
            images.append(img)
            labels.append(c)
    return np.stack(images), np.array(labels, dtype=np.int64)


def stripes(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """16x16: horizontal (class 0) or vertical (class 1) stripes: a mirror keeps the class."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in (0, 1):
        for _ in range(per_class):
            wave = (np.arange(16) + rng.integers(0, 4)) % 4 < 2
            pattern = np.tile(wave[:, None], (1, 16))
            img = np.where(pattern if c == 0 else pattern.T, 220, 30)
            img = img + rng.integers(-20, 20, (16, 16))
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(c)
    return np.stack(images), np.array(labels, dtype=np.int64)


def test_mirroring_that_changes_the_class_chooses_digits():
    images, labels = bars(10, seed=0)
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    choice = choose_augment(images, labels, num_classes=2, channels=1, epochs=2)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist()
    assert choice.preset == "digits"
    ev = choice.evidence
    assert ev["heldout_n"] == 20 and ev["flips_lost"] > ev["flips_gained"]
    assert ev["accuracy_plain"] > ev["accuracy_mirrored"] and ev["p_value"] < 0.05
    assert choice.reason.startswith("digits: flips change the class")


def test_mirroring_that_keeps_the_class_chooses_natural():
    images, labels = stripes(10, seed=1)
    choice = choose_augment(images, labels, num_classes=2, channels=1, epochs=2)
    assert choice.preset == "natural"
    assert choice.evidence["p_above_majority"] < 0.05  # the classifier had something to say
    assert "prior" not in choice.evidence
    assert choice.reason.startswith("natural: flips keep the class")


def test_colour_images_are_mirrored_along_their_width():
    images, labels = bars(10, seed=0)
    rgb = np.repeat(images[..., None], 3, axis=-1)
    rgb[..., 0] //= 2  # tinted, so a flip of the channel axis would show
    choice = choose_augment(rgb, labels, num_classes=2, channels=3, epochs=2)
    assert choice.preset == "digits"
    assert choice.evidence["flips_lost"] > choice.evidence["flips_gained"]


def test_too_few_labels_fall_back_to_the_prior():
    images, labels = bars(3, seed=2)
    images, labels = images[2:], labels[2:]  # class 0 keeps one label
    choice = choose_augment(images, labels, num_classes=2, channels=1)
    assert choice.preset == "digits"  # small grey
    assert "by prior" in choice.reason and "a class has 1 label" in choice.reason
    assert choice.evidence["prior"] == 1
    rgb = np.repeat(images[..., None], 3, axis=-1)
    choice = choose_augment(rgb, labels, num_classes=2, channels=3)
    assert choice.preset == "natural" and "colour images" in choice.reason
    big = np.zeros((4, 32, 32), dtype=np.uint8)
    choice = choose_augment(big, np.array([0, 0, 0, 0]), 2, 1)
    assert choice.preset == "natural" and "1 labeled class" in choice.reason
    choice = choose_augment(big, np.array([0, 0, 1, 1]), 2, 1)
    assert choice.preset == "natural" and "only 4 labels" in choice.reason


def test_a_classifier_that_learned_nothing_falls_back_to_the_prior():
    # Pure noise: held-out accuracy is about chance, so lost = gained says nothing.
    images = np.random.default_rng(3).integers(0, 256, (20, 16, 16)).astype(np.uint8)
    labels = np.repeat([0, 1], 10)
    choice = choose_augment(images, labels, 2, 1, seed=1, epochs=1)
    assert choice.preset == "digits" and "by prior" in choice.reason
    assert "not significantly above" in choice.reason
    assert choose_augment(images, labels, 2, 1, seed=1, epochs=1) == choice  # deterministic


def test_profile_round_trips_through_a_dict():
    profile = DataProfile(3, "3 channels: 2 of 9 ...", "natural", "natural: flips keep ...")
    d = profile.as_dict()
    assert set(d) == {"channels", "channels_reason", "augment", "augment_reason"}
    assert DataProfile.from_dict(d) == profile
    assert DataProfile.from_dict(None) is None
    assert DataProfile.from_dict({"channels": 1}) is None
    assert DataProfile.from_dict({**d, "augment": "fancy"}) is None
    assert DataProfile.from_dict({**d, "channels": 2}) is None
