"""Decoding a large PNG a band of rows at a time, so its pixels are never all in memory.

PIL decodes a PNG into one image (4 bytes per pixel for RGB: 144 MB at 6000x6000). Here
the compressed stream is inflated incrementally and each band of rows is handed to PIL as
a small PNG of its own. PNG filters may refer to the row above, so each band's PNG starts
with the previous band's last row, already reconstructed and stored unfiltered; that row
is dropped from the result. The bands are therefore pixel-for-pixel what PIL would decode.

Streamable: 8-bit, non-interlaced PNGs of every colour type (grey, RGB, palette, with or
without alpha), where a pixel's stored bytes are its reconstructed bytes in PIL's own
mode. Other PNGs (16-bit, 1/2/4-bit, interlaced) are left to a whole-image decode.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Bytes per pixel of an 8-bit PNG, by colour type (grey, RGB, palette, grey+alpha, RGBA).
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_INPUT_PIECE = 64 * 1024  # compressed bytes inflated per step: bounds zlib's own copies


class PngStreamError(ValueError):
    """The PNG's structure or pixel stream is broken (truncated, bad CRC, bad filter)."""


@dataclass(frozen=True)
class PngLayout:
    width: int
    height: int
    bit_depth: int
    colour_type: int
    interlaced: bool
    header: bytes  # IHDR's data
    palette_chunks: tuple[tuple[bytes, bytes], ...]  # (type, data) of PLTE and tRNS
    idat: tuple[memoryview, ...]  # the compressed stream, in pieces, without copies

    @property
    def streamable(self) -> bool:
        return self.bit_depth == 8 and not self.interlaced and self.colour_type in _CHANNELS

    @property
    def row_bytes(self) -> int:
        return self.width * _CHANNELS[self.colour_type]


def read_layout(data: bytes) -> PngLayout:
    """The chunks of a PNG that decoding needs; PngStreamError if they are broken."""
    if not data.startswith(SIGNATURE):
        raise PngStreamError("not a PNG")
    view, pos = memoryview(data), len(SIGNATURE)
    header, palette, idat = b"", [], []
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", view[pos : pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise PngStreamError(f"chunk {ctype!r} is truncated")
        body = view[pos + 8 : end - 4]
        if zlib.crc32(body, zlib.crc32(ctype)) != struct.unpack(">I", view[end - 4 : end])[0]:
            raise PngStreamError(f"chunk {ctype!r} has a bad CRC")
        if ctype == b"IHDR":
            header = bytes(body)
        elif ctype in (b"PLTE", b"tRNS"):
            palette.append((ctype, bytes(body)))
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
        pos = end
    if len(header) != 13 or not idat:
        raise PngStreamError("no image header or no pixel data")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    return PngLayout(
        width, height, depth, colour, interlace != 0, header, tuple(palette), tuple(idat)
    )


def raw_bands(layout: PngLayout, edges: Iterator[int]) -> Iterator[bytes]:
    """The stored (filtered) bytes of each band of rows, a band ending at each edge.

    Checks as it goes what a full decode would: the stream inflates, every row has a
    valid filter type, and no row is missing.
    """
    stride = layout.row_bytes + 1
    inflater = zlib.decompressobj()
    pieces = (p[i : i + _INPUT_PIECE] for p in layout.idat for i in range(0, len(p), _INPUT_PIECE))
    pending, tail, y = bytearray(), b"", 0
    for edge in edges:
        need = (edge - y) * stride
        while len(pending) < need:
            if not tail:
                tail = next(pieces, b"")
                if not tail:
                    raise PngStreamError(f"pixel data ends at row {y + len(pending) // stride}")
            try:
                pending += inflater.decompress(tail, need - len(pending))
            except zlib.error as exc:
                raise PngStreamError(f"pixel data does not inflate: {exc}") from None
            tail = inflater.unconsumed_tail
        band = bytes(pending[:need])
        del pending[:need]
        if band and max(band[::stride]) > 4:
            raise PngStreamError("unknown row filter type")
        y = edge
        yield band


def band_edges(stop: int, start: int, rows: int) -> Iterator[int]:
    """Band ends down to ``stop``, ``rows`` apart, with one band starting at ``start``."""
    yield from range(rows, start, rows)
    if 0 < start < stop:
        yield start
    yield from range(start + rows, stop, rows)
    yield stop


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body))
        + ctype
        + body
        + struct.pack(">I", zlib.crc32(body, zlib.crc32(ctype)))
    )


def decode_bands(layout: PngLayout, edges: Iterator[int]) -> Iterator[tuple[int, Image.Image]]:
    """``(top row, band)`` for each band, each a PIL image in the PNG's own mode."""
    previous: bytes | None = None  # the last row above this band, reconstructed
    top = 0
    for raw in raw_bands(layout, edges):
        rows = len(raw) // (layout.row_bytes + 1)
        if rows == 0:
            continue
        lead = b"" if previous is None else b"\x00" + previous
        header = struct.pack(">II", layout.width, rows + bool(lead)) + layout.header[8:]
        png = b"".join(
            [
                SIGNATURE,
                _chunk(b"IHDR", header),
                *(_chunk(t, body) for t, body in layout.palette_chunks),
                _chunk(b"IDAT", zlib.compress(lead + raw, 0)),  # stored: PIL inflates it at once
                _chunk(b"IEND", b""),
            ]
        )
        with Image.open(io.BytesIO(png)) as img:
            img.load()
            band = img.crop((0, 1, img.width, img.height)) if lead else img.copy()
        previous = band.crop((0, rows - 1, band.width, rows)).tobytes()
        yield top, band
        top += rows
