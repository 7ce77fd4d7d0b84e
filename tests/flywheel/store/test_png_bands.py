"""PNGs decoded a band of rows at a time are pixel-for-pixel what PIL decodes whole."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from flywheel.store.png_bands import (
    PngStreamError,
    band_edges,
    decode_bands,
    raw_bands,
    read_layout,
)

CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _chunk(ctype: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(body, zlib.crc32(ctype))
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", crc)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def encode(
    pixels: np.ndarray, colour: int, extra: list[tuple[bytes, bytes]] | None = None
) -> bytes:
    """An 8-bit PNG whose row ``y`` uses filter ``y % 5``: every filter, and every filter
    after every other, so a band may start after any of them."""
    height, width = pixels.shape[:2]
    bpp = CHANNELS[colour]
    rows = pixels.reshape(height, width * bpp).astype(int).tolist()
    out, above = bytearray(), [0] * (width * bpp)
    for y, row in enumerate(rows):
        kind = y % 5
        out.append(kind)
        for i, x in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b, c = above[i], above[i - bpp] if i >= bpp else 0
            predictor = [0, a, b, (a + b) // 2, _paeth(a, b, c)][kind]
            out.append((x - predictor) % 256)
        above = row
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    idat = zlib.compress(bytes(out))
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            *(_chunk(t, body) for t, body in extra or []),
            _chunk(b"IDAT", idat[:50]),  # the stream split over two chunks, as encoders do
            _chunk(b"IDAT", idat[50:]),
            _chunk(b"IEND", b""),
        ]
    )


def _stitched(data: bytes, first: int, rows: int) -> Image.Image:
    layout = read_layout(data)
    bands = list(decode_bands(layout, band_edges(layout.height, first, rows)))
    out = Image.new(bands[0][1].mode, (layout.width, layout.height))
    for top, band in bands:
        out.paste(band, (0, top))
    return out


PALETTE = [(b"PLTE", bytes(range(48))), (b"tRNS", bytes([0, 128]))]


@pytest.mark.parametrize(
    ("colour", "extra"),
    [(0, []), (2, []), (4, []), (6, []), (3, PALETTE), (2, [(b"tRNS", bytes(6))])],
)
@pytest.mark.parametrize(("first", "rows"), [(0, 1), (5, 4), (0, 100)])
def test_bands_match_a_whole_decode(colour: int, extra: list, first: int, rows: int) -> None:
    rng = np.random.default_rng(colour)
    high = 16 if colour == 3 else 256  # palette indices within the 16-colour palette
    pixels = rng.integers(0, high, (23, 17, CHANNELS[colour]), dtype=np.uint8)
    data = encode(pixels, colour, extra)
    assert read_layout(data).streamable
    with Image.open(io.BytesIO(data)) as whole:
        whole.load()
        got = _stitched(data, first, rows)
        assert got.mode == whole.mode
        assert got.tobytes() == whole.tobytes()


def test_band_edges() -> None:
    assert list(band_edges(10, 0, 4)) == [4, 8, 10]
    assert list(band_edges(10, 5, 2)) == [2, 4, 5, 7, 9, 10]  # a band starts at row 5
    assert list(band_edges(6, 0, 100)) == [6]


def _bands(data: bytes) -> None:
    """Inflate and check every row of ``data``, three rows a band."""
    layout = read_layout(data)
    for _ in raw_bands(layout, band_edges(layout.height, 0, 3)):
        pass


def test_broken_streams_are_refused() -> None:
    data = encode(np.zeros((12, 9, 1), np.uint8) + 7, 0)
    idat = data.index(b"IDAT")
    _bands(data)  # whole: fine
    with pytest.raises(PngStreamError, match="truncated"):
        read_layout(data[: idat + 20])
    flipped = bytearray(data)
    flipped[idat + 6] ^= 0xFF
    with pytest.raises(PngStreamError, match="bad CRC"):
        read_layout(bytes(flipped))
    rows = b"".join(b"\x00" + bytes(9) for _ in range(12))
    with pytest.raises(PngStreamError, match="pixel data ends at row 10"):
        _bands(_with_idat(data, zlib.compress(rows[:-20])))
    with pytest.raises(PngStreamError, match="unknown row filter"):
        _bands(_with_idat(data, zlib.compress(rows[:10] + b"\x07" + rows[11:])))
    with pytest.raises(PngStreamError, match="does not inflate"):
        _bands(_with_idat(data, b"\x78\x9c" + bytes(40)))


def _with_idat(data: bytes, stream: bytes) -> bytes:
    layout = read_layout(data)
    return b"".join([b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", layout.header), _chunk(b"IDAT", stream)])


def test_16_bit_and_interlaced_pngs_are_not_streamed() -> None:
    buf = io.BytesIO()
    Image.new("I;16", (4, 4)).save(buf, format="PNG")
    assert not read_layout(buf.getvalue()).streamable
    data = bytearray(encode(np.zeros((4, 4, 1), np.uint8), 0))
    header = struct.pack(">IIBBBBB", 4, 4, 8, 0, 0, 0, 1)
    data[8:33] = _chunk(b"IHDR", header)
    assert not read_layout(bytes(data)).streamable
