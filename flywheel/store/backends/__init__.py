"""The filesystem clients remote source roots are read through, by URI scheme.

A backend is a module here with ``open_filesystem(root, settings) -> pyarrow.fs.FileSystem``
that builds its client from the root's trusted options (never from a client's URI) and
applies the read budget of ``IngestSettings``; adding one is that file plus its line in
``BACKENDS``. A scheme without a line is served by any installed fsspec protocol
(:mod:`flywheel.store.backends.fsspec_any`) with that protocol's defaults.
"""

from __future__ import annotations

import importlib

import pyarrow.fs as pafs

from flywheel.config import IngestSettings
from flywheel.store.remote_sources import SourceRoot

BACKENDS: dict[str, str] = {
    "s3": "flywheel.store.backends.s3",
    "gs": "flywheel.store.backends.gcs",
    "gcs": "flywheel.store.backends.gcs",
}
FALLBACK = "flywheel.store.backends.fsspec_any"


def open_root_filesystem(root: SourceRoot, settings: IngestSettings) -> pafs.FileSystem:
    """The filesystem for ``root``, built from settings only, with the read budget applied."""
    backend = importlib.import_module(BACKENDS.get(root.scheme, FALLBACK))
    return backend.open_filesystem(root, settings)
