import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from flywheel.errors import InvalidInputError
from flywheel.store import images
from flywheel.store.images import (
    RESIZE_POLICIES,
    decode_image,
    fit_to_size,
    inspect_image,
    to_model_input,
)

ALLOWED = ["PNG", "JPEG"]


def check(data: bytes, max_bytes: int = 10_000_000, max_pixels: int = 10_000_000):
    return inspect_image(data, ALLOWED, max_bytes, max_pixels)


def test_valid_png_and_jpeg(make_png) -> None:
    info = check(make_png(1, size=16))
    assert (info.format, info.width, info.height, info.mode) == ("PNG", 16, 16, "L")
    assert check(make_png(2, mode="RGB", fmt="JPEG")).format == "JPEG"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"hello, I am a text file", "not a decodable image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a decodable image"),
    ],
)
def test_bad_bytes_are_rejected_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        check(data)


@pytest.fixture(params=["whole", "bounded"])
def decoding(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with small images decoded whole, and again as if they were large."""
    if request.param == "bounded":
        monkeypatch.setattr(images, "FULL_DECODE_PIXELS", 0)
        monkeypatch.setattr(images, "BAND_PIXELS", 100)  # a few rows a band
    return request.param


def test_truncated_png_is_rejected(make_png, decoding) -> None:
    data = make_png(3, size=64)
    with pytest.raises(InvalidInputError, match="corrupt or truncated"):
        check(data[: len(data) // 2])


def test_truncated_jpeg_is_rejected(make_png, decoding) -> None:
    data = make_png(3, size=256, mode="RGB", fmt="JPEG")
    assert check(data).format == "JPEG"
    with pytest.raises(InvalidInputError, match="corrupt or truncated"):
        check(data[: len(data) // 2])


def test_corrupted_pixel_data_is_rejected(make_png, decoding) -> None:
    data = bytearray(make_png(6, size=64))
    idat = data.index(b"IDAT") + 8
    data[idat : idat + 200] = bytes(200)  # zero out the start of the compressed stream
    with pytest.raises(InvalidInputError, match="corrupt or truncated"):
        check(bytes(data))


def test_limits_and_formats(make_png) -> None:
    data = make_png(4, size=32)
    with pytest.raises(InvalidInputError, match="byte limit"):
        check(data, max_bytes=10)
    with pytest.raises(InvalidInputError, match="pixel limit"):
        check(data, max_pixels=100)
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, format="BMP")
    with pytest.raises(InvalidInputError, match="format BMP is not allowed"):
        check(buf.getvalue())


def test_decode_converts_mode(make_png) -> None:
    img = decode_image(make_png(5, size=8), mode="RGB")
    assert img.mode == "RGB" and img.size == (8, 8)


def _png(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def test_a_large_truncated_png_is_rejected_without_a_whole_decode(monkeypatch) -> None:
    data = _png(np.zeros((1000, 1100), np.uint8))  # over FULL_DECODE_PIXELS: decoded in bands
    assert check(data).width == 1100
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded whole"))
    with pytest.raises(InvalidInputError, match="corrupt or truncated"):
        check(data[:-40])  # the end of the pixel data is cut off


def test_small_images_reach_the_model_exactly_as_pil_resizes_them(make_png) -> None:
    data = make_png(9, size=40, mode="RGB")
    for policy in RESIZE_POLICIES:
        expected = np.asarray(fit_to_size(decode_image(data, "L"), 8, policy))
        assert np.array_equal(to_model_input(data, 8, 1, policy), expected)


def _smooth(height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) * 127 / (height + width)], -1)
    noise = np.random.default_rng(0).normal(0, 3, rgb.shape)
    return np.clip(rgb + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("fmt", "tolerance"), [("PNG", 4), ("JPEG", 8)])  # JPEG: DCT scaling
@pytest.mark.parametrize("policy", RESIZE_POLICIES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("shape", [(300, 400), (257, 1000)])
def test_a_large_image_reaches_the_model_close_to_a_whole_resize(
    fmt: str, tolerance: int, policy: str, channels: int, shape: tuple[int, int], monkeypatch
) -> None:
    data = _png(_smooth(*shape), fmt)
    whole = to_model_input(data, 16, channels, policy).astype(int)
    monkeypatch.setattr(images, "FULL_DECODE_PIXELS", 0)  # decode as if it were large
    monkeypatch.setattr(images, "BAND_PIXELS", 2000)
    bounded = to_model_input(data, 16, channels, policy).astype(int)
    assert bounded.shape == whole.shape
    assert np.abs(bounded - whole).max() <= tolerance


def test_unknown_resize_policy_is_refused(make_png) -> None:
    with pytest.raises(InvalidInputError, match="unknown resize policy"):
        to_model_input(make_png(1), 8, 1, "squash")


def test_display_decoding_reduces_large_images_on_the_way(monkeypatch) -> None:
    data = _png(_smooth(1500, 1000))  # 1.5 MP: over FULL_DECODE_PIXELS
    loaded: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def recording_load(self: ImageFile.ImageFile):  # type: ignore[no-untyped-def]
        loaded.append(self.size)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    img = images.decode_for_display(data, 100)
    assert loaded and max(w * h for w, h in loaded) < 1000 * 1500  # bands, never whole
    # Reduced by whole factors to at least REDUCING_GAP x the target, aspect kept.
    assert 300 <= max(img.size) < 1500 and abs(img.width / img.height - 1000 / 1500) < 0.02
    monkeypatch.undo()
    small = _png(_smooth(40, 30))
    assert images.decode_for_display(small, 100).size == (30, 40)  # small: as decoded
