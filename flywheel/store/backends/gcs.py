"""Google Cloud Storage, through pyarrow's own client."""

from __future__ import annotations

from datetime import timedelta

import pyarrow.fs as pafs

from flywheel.config import IngestSettings
from flywheel.store.remote_sources import SourceRoot, option_flag


def open_filesystem(root: SourceRoot, settings: IngestSettings) -> pafs.FileSystem:
    # GCS's client retries for 15 minutes by default: that froze request threads. It takes
    # only an overall budget (no connect or read timeout of its own).
    opts = root.options
    return pafs.GcsFileSystem(
        anonymous=option_flag(opts.get("anonymous")),
        endpoint_override=opts.get("endpoint_override"),
        scheme=opts.get("scheme"),
        retry_time_limit=timedelta(seconds=settings.remote_total_timeout_s),
    )
