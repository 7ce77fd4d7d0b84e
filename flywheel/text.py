"""Text from outside (ids, labels, names): which characters it may not carry, and how to
show text stored before that rule on a terminal."""

from __future__ import annotations

import re

# Characters that a terminal or a page acts on instead of showing, as a regex class body
# (valid for Python's re and pydantic's Rust engine alike):
# - Cc: C0/C1 controls, DEL (ANSI escapes, carriage returns, NUL, which PostgreSQL's text
#   cannot hold);
# - U+2028/2029, line and paragraph separators;
# - the invisible Cf characters that reorder or hide text: bidi marks, embeddings,
#   overrides and isolates (U+061C, U+200E/F, U+202A-E, U+2066-9), zero-width space and
#   word joiners (U+200B, U+2060-4), deprecated format controls (U+206A-F), the BOM,
#   interlinear annotation controls and the tag characters (invisible ASCII look-alikes).
# ZWNJ/ZWJ (U+200C/D) and the other Cf characters stay allowed: Persian, Indic scripts and
# emoji need them, and they move no text around.
UNSAFE_CHARS = (
    r"\u0000-\u001f\u007f-\u009f\u061c\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064"
    r"\u2066-\u206f\ufeff\ufff9-\ufffb\U000e0001\U000e0020-\U000e007f"
)
SAFE_TEXT_PATTERN = rf"^[^{UNSAFE_CHARS}]*$"
_UNSAFE = re.compile(f"[{UNSAFE_CHARS}]")


def is_safe_text(text: str) -> bool:
    return _UNSAFE.search(text) is None


def printable(text: str) -> str:
    """``text`` with each unsafe character written as its escape (``\\x1b``, ``\\u202e``),
    so stored input is shown, never obeyed."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def replace_unsafe(text: str) -> str:
    """``text`` with each unsafe character replaced by U+FFFD: for names worth keeping (an
    upload's file name) rather than refusing."""
    return _UNSAFE.sub("\ufffd", text)
