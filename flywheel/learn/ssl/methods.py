"""The self-supervised methods by name: ``learning.ssl_method`` picks one.

A method is a module in ``flywheel/learn/ssl/`` with a class ``Head(cfg)``: an ``nn.Module``
whose ``loss(z)`` turns the projections of two views (float (2B, D), first half the first
views) into a scalar loss, and whose ``start_epoch(epoch)`` may change what trains. Adding
one is that file plus its line in ``METHODS``. The table names modules instead of importing
them, so reading the settings (which validate the name against it) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from flywheel.learn.ssl.loop import SSLConfig

METHODS: dict[str, str] = {
    "swav": "flywheel.learn.ssl.swav",  # SEER's method; the default
    "simclr": "flywheel.learn.ssl.simclr",
}


def check_method(name: str) -> str:
    """``name`` if it is a known method; ValueError naming the known ones otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown SSL method {name!r}: use one of {sorted(METHODS)}")
    return name


def method_head(cfg: SSLConfig) -> nn.Module:
    """A new head for ``cfg.method``, built from ``cfg``."""
    return importlib.import_module(METHODS[check_method(cfg.method)]).Head(cfg)
