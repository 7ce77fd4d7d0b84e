"""One router per resource: a module here with an ``APIRouter`` named ``router``.

Adding a route is that file plus its name in ``RESOURCES`` (the order they are mounted in,
which is also the order of the OpenAPI document).
"""

from __future__ import annotations

import importlib

from fastapi import APIRouter

RESOURCES = (
    "health",
    "predict",
    "feedback",
    "samples",
    "cycles",
    "datasets",
    "models",
    "review",
    "annotators",
    "quarantine",
)


def routers() -> list[APIRouter]:
    """Every resource's router, in ``RESOURCES`` order."""
    return [importlib.import_module(f"{__name__}.{name}").router for name in RESOURCES]
