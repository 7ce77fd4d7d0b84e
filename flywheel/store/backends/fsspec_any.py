"""Any other installed fsspec protocol (``abfs``, ``hdfs``, ``memory``...), with the
protocol's defaults: nothing is taken from the URI."""

from __future__ import annotations

import pyarrow.fs as pafs

from flywheel.config import IngestSettings
from flywheel.errors import InvalidInputError
from flywheel.store.remote_sources import SourceRoot


def open_filesystem(root: SourceRoot, settings: IngestSettings) -> pafs.FileSystem:
    import fsspec

    try:
        fs = fsspec.filesystem(root.scheme)
    except (ValueError, ImportError) as exc:
        raise InvalidInputError(f"no filesystem for scheme {root.scheme!r}: {exc}") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))
