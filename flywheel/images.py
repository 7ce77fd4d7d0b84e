"""Decoding and validating image bytes before anything is stored."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from flywheel.errors import InvalidInputError, UnsupportedMediaError


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
    """Fully decode ``data`` once and describe it; raise InvalidInputError with the reason.

    Decoding the whole image (not just the header) is what catches truncated files.
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
                img.load()
                mode = img.mode
    except InvalidInputError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise UnsupportedMediaError("not a decodable image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInputError(f"corrupt or truncated image ({exc})") from None
    return ImageInfo(fmt, width, height, mode)


def decode_image(data: bytes, mode: str = "RGB") -> Image.Image:
    """Decode stored bytes (already validated at ingest) to a PIL image in ``mode``."""
    with Image.open(io.BytesIO(data)) as img:
        return img.convert(mode)


RESIZE_POLICIES = ("stretch", "crop", "pad")


def fit_to_size(img: Image.Image, size: int, policy: str) -> Image.Image:
    """``img`` brought to ``size`` x ``size`` by ``policy`` (``RESIZE_POLICIES``).

    stretch: resize both sides; crop: scale the short side to ``size``, centre-crop the
    long one; pad: scale the long side to ``size``, pad the short one with black.
    """
    if policy not in RESIZE_POLICIES:
        raise InvalidInputError(f"unknown resize policy {policy!r}")
    w, h = img.size
    if (w, h) == (size, size):
        return img
    if policy == "stretch":
        return img.resize((size, size), Image.Resampling.BILINEAR)
    scale = size / (min(w, h) if policy == "crop" else max(w, h))
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    scaled = img.resize((nw, nh), Image.Resampling.BILINEAR)
    if policy == "crop":
        left, top = (nw - size) // 2, (nh - size) // 2
        return scaled.crop((left, top, left + size, top + size))
    canvas = Image.new(img.mode, (size, size))
    canvas.paste(scaled, ((size - nw) // 2, (size - nh) // 2))
    return canvas


def to_model_input(data: bytes, size: int, channels: int, policy: str = "stretch") -> np.ndarray:
    """Stored bytes as the model's input: uint8 (size, size) for 1 channel, else (size, size, 3).

    Used wherever images are read for learning or serving, so a model always sees its own
    input size, whatever size was uploaded.
    """
    img = fit_to_size(decode_image(data, "L" if channels == 1 else "RGB"), size, policy)
    return np.array(img, dtype=np.uint8)  # a writable copy: torch.from_numpy needs one
