import io

import pytest
from PIL import Image

from flywheel.errors import InvalidInputError
from flywheel.images import decode_image, inspect_image

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


def test_truncated_png_is_rejected(make_png) -> None:
    data = make_png(3, size=64)
    with pytest.raises(InvalidInputError, match="corrupt or truncated"):
        check(data[: len(data) // 2])


def test_corrupted_pixel_data_is_rejected(make_png) -> None:
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
