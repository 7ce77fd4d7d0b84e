"""Decoding and validating image bytes before anything is stored.

Memory: an image of up to ``FULL_DECODE_PIXELS`` is decoded whole, exactly as PIL decodes
it. A larger one is validated and brought to a model's input size in bounded memory: an
8-bit non-interlaced PNG a band of rows at a time (``png_bands``), a JPEG at a reduced DCT
scale (1/8 to validate, down to its target for the model). Other formats and PNG variants
(16-bit, 1/2/4-bit, interlaced) are decoded whole: at most 4 bytes a pixel, so bounded by
``ingest.max_image_pixels`` (160 MB at the default 40 MP).
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from flywheel.errors import InvalidInputError, UnsupportedMediaError
from flywheel.store import png_bands

FULL_DECODE_PIXELS = 1 << 20  # 4 MB as RGB in PIL
BAND_PIXELS = 1 << 18  # pixels in one PNG band (about 12 MB with its copies)
# A large image is box-reduced to at least this many times its target before the final
# resample: PIL's ``reducing_gap``, where 3 is close to resampling the whole image.
REDUCING_GAP = 3


@dataclass(frozen=True)
class ImageInfo:
    format: str  # PIL format name, e.g. "PNG"
    width: int
    height: int
    mode: str


def inspect_image(
    data: bytes,
    allowed_formats: list[str] | tuple[str, ...],
    max_bytes: int,
    max_pixels: int,
) -> ImageInfo:
    """Decode ``data`` once and describe it; raise InvalidInputError with the reason.

    Decoding all the pixel data (not just the header) is what catches truncated files.
    """
    if not data:
        raise InvalidInputError("empty file")
    if len(data) > max_bytes:
        raise InvalidInputError(f"file is {len(data)} bytes, over the {max_bytes}-byte limit")
    try:
        with warnings.catch_warnings():
            # PIL warns (rather than raises) on some bombs; we check pixels ourselves below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt = (img.format or "").upper()
                if fmt not in allowed_formats:
                    raise UnsupportedMediaError(f"image format {fmt or 'unknown'} is not allowed")
                width, height = img.size
                if width * height > max_pixels:
                    raise InvalidInputError(
                        f"image is {width}x{height}, over the {max_pixels}-pixel limit"
                    )
                _check_decodes(img, data)
                mode = img.mode
    except InvalidInputError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise UnsupportedMediaError("not a decodable image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInputError(f"corrupt or truncated image ({exc})") from None
    return ImageInfo(fmt, width, height, mode)


def _check_decodes(img: Image.Image, data: bytes) -> None:
    """Decode all of ``img``'s pixel data, in bounded memory when it is large."""
    width, height = img.size
    if width * height > FULL_DECODE_PIXELS:
        if img.format == "PNG":
            layout = png_bands.read_layout(data)
            if layout.streamable:
                rows = max(1, BAND_PIXELS // width)
                for _ in png_bands.raw_bands(layout, png_bands.band_edges(height, 0, rows)):
                    pass
                return
        elif img.format == "JPEG":
            img.draft(None, (width // 8, height // 8))  # still reads every DCT block
    img.load()


def decode_image(data: bytes, mode: str = "RGB") -> Image.Image:
    """Decode stored bytes (already validated at ingest) to a PIL image in ``mode``."""
    with Image.open(io.BytesIO(data)) as img:
        return img.convert(mode)


RESIZE_POLICIES = ("stretch", "crop", "pad")


Box = tuple[float, float, float, float]


def fit_to_size(img: Image.Image, size: int, policy: str, box: Box | None = None) -> Image.Image:
    """``img`` (or its region ``box``) brought to ``size`` x ``size`` by ``policy``.

    stretch: resize both sides; crop: scale the short side to ``size``, centre-crop the
    long one; pad: scale the long side to ``size``, pad the short one with black.
    """
    if policy not in RESIZE_POLICIES:
        raise InvalidInputError(f"unknown resize policy {policy!r}")
    x0, y0, x1, y1 = box or (0, 0, *img.size)
    w, h = x1 - x0, y1 - y0
    if box is None and (w, h) == (size, size):
        return img
    if policy == "stretch":
        return img.resize((size, size), Image.Resampling.BILINEAR, box)
    scale = size / (min(w, h) if policy == "crop" else max(w, h))
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    scaled = img.resize((nw, nh), Image.Resampling.BILINEAR, box)
    if policy == "crop":
        left, top = (nw - size) // 2, (nh - size) // 2
        return scaled.crop((left, top, left + size, top + size))
    canvas = Image.new(img.mode, (size, size))
    canvas.paste(scaled, ((size - nw) // 2, (size - nh) // 2))
    return canvas


def to_model_input(data: bytes, size: int, channels: int, policy: str = "stretch") -> np.ndarray:
    """Stored bytes as the model's input: uint8 (size, size) for 1 channel, else (size, size, 3).

    Used wherever images are read for learning or serving, so a model always sees its own
    input size, whatever size was uploaded; a large upload never needs its full-resolution
    pixels in memory at once.
    """
    if policy not in RESIZE_POLICIES:
        raise InvalidInputError(f"unknown resize policy {policy!r}")
    img, box = _decode_reduced(data, "L" if channels == 1 else "RGB", size, policy)
    if box is not None and policy == "crop":
        policy = "stretch"  # the box is already the region that crop keeps
    return np.array(
        fit_to_size(img, size, policy, box), dtype=np.uint8
    )  # a writable copy: torch.from_numpy needs one


def decode_for_display(data: bytes, longest: int, mode: str = "RGB") -> Image.Image:
    """``data`` in ``mode``, for showing at most ``longest`` pixels on its longer side: a
    large image is reduced while it is decoded (as for ``to_model_input``), at least
    ``REDUCING_GAP`` times the target so a final resize still looks smooth."""
    with Image.open(io.BytesIO(data)) as header:
        width, height = header.size
    img, box = _decode_reduced(data, mode, longest, "pad")
    if box is None:
        return img
    img = img.crop((0, 0, max(1, math.floor(box[2])), max(1, math.floor(box[3]))))
    # The two sides may have been reduced by different whole factors: restore the aspect.
    scale = max(img.size) / max(width, height)
    shape = (max(1, round(width * scale)), max(1, round(height * scale)))
    return img if img.size == shape else img.resize(shape, Image.Resampling.BILINEAR)


def _reduction(
    width: int, height: int, size: int, policy: str
) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """The source box ``policy`` keeps, and the box-reduce factors that keep it >= gap x target."""
    box, target = (0, 0, width, height), (size, size)
    if policy == "crop":  # only what fit_to_size's centre crop keeps reaches the model
        scale = size / min(width, height)
        nw, nh = max(1, round(width * scale)), max(1, round(height * scale))
        left, top = (nw - size) // 2, (nh - size) // 2
        sx, sy = nw / width, nh / height  # the scales that resize really applies
        x0, y0 = round(left / sx), round(top / sy)
        box = (x0, y0, min(width, round((left + size) / sx)), min(height, round((top + size) / sy)))
    elif policy == "pad":
        scale = size / max(width, height)
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
    factors = (
        max(1, (box[2] - box[0]) // (REDUCING_GAP * target[0])),
        max(1, (box[3] - box[1]) // (REDUCING_GAP * target[1])),
    )
    return box, factors


def _decode_reduced(
    data: bytes, mode: str, size: int, policy: str
) -> tuple[Image.Image, Box | None]:
    """``data`` in ``mode``, whole when small. A large image comes box-reduced toward
    ``size``, with the region of the result that holds ``policy``'s source box (its last
    row and column may average fewer pixels than the others)."""
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        if width * height <= FULL_DECODE_PIXELS:
            return img.convert(mode), None
        box, (fx, fy) = _reduction(width, height, size, policy)
        if img.format == "JPEG":  # DCT scaling (1/2 to 1/8) while decoding
            img.draft(None, (math.ceil(width / fx), math.ceil(height / fy)))
            box, (fx, fy) = _reduction(*img.size, size, policy)
        layout = png_bands.read_layout(data) if img.format == "PNG" else None
        if layout is not None and layout.streamable:
            reduced = _reduce_png_bands(layout, mode, box, (fx, fy))
        else:
            reduced = img.convert(mode).reduce((fx, fy), box)
    return reduced, (0, 0, (box[2] - box[0]) / fx, (box[3] - box[1]) / fy)


def _reduce_png_bands(
    layout: png_bands.PngLayout, mode: str, box: tuple[int, int, int, int], factors: tuple[int, int]
) -> Image.Image:
    """``box`` of the PNG reduced by ``factors``, decoded in bands of whole reduce boxes."""
    left, top, right, bottom = box
    fx, fy = factors
    rows = fy * max(1, BAND_PIXELS // (layout.width * fy))
    out = Image.new(mode, (math.ceil((right - left) / fx), math.ceil((bottom - top) / fy)))
    for y, band in png_bands.decode_bands(layout, png_bands.band_edges(bottom, top, rows)):
        if y >= top:  # rows above the box are decoded only for the filters of the next row
            part = band.convert(mode).reduce(factors, (left, 0, right, band.height))
            out.paste(part, (0, (y - top) // fy))
    return out
