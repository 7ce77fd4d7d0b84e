"""Decoding and validating image bytes before anything is stored."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

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
