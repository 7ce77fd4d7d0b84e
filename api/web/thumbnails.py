"""Sample thumbnails for the pages: a PNG of a few fixed sizes, or a placeholder that says
the sample's bytes are gone (``?``) or undecodable (``!``), so a page never breaks on one.
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

from api.context import ApiContext
from flywheel.db import Sample
from flywheel.errors import IntegrityError, NotFoundError
from flywheel.store.images import decode_for_display


def thumbnail_png(data: bytes, size: int) -> bytes:
    """A PNG whose longer side is ``size``: small images are scaled up by a whole factor
    with nearest-neighbour (so an 8x8 digit shows crisp pixels), large ones down smoothly."""
    img = decode_for_display(data, size)  # a large upload is never decoded whole
    longer = max(img.size)
    if longer < size:
        factor = max(1, size // longer)
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    elif longer > size:
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def placeholder_png(size: int, text: str = "?") -> bytes:
    """Shown for a sample whose bytes cannot be read: the page stays usable."""
    img = Image.new("RGB", (size, size), (230, 230, 230))
    ImageDraw.Draw(img).text((size // 2 - 3, size // 2 - 6), text, fill=(120, 120, 120))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def render_thumbnail(ctx: ApiContext, sample_id: str, size: int) -> tuple[bytes, bool] | None:
    """(png, cacheable); None for an unknown sample."""
    try:
        data = ctx.ws.blobs.get(sample_id)
    except (NotFoundError, IntegrityError, OSError):
        with ctx.ws.db.session() as s:
            if s.get(Sample, sample_id) is None:
                return None
        return placeholder_png(size), False  # a known sample whose bytes are gone
    try:
        return thumbnail_png(data, size), True
    except Exception:  # undecodable stored bytes: say so in the picture, not with a 500
        return placeholder_png(size, "!"), False
