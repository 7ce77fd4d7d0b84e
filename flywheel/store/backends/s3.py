"""S3 and S3-compatible stores (MinIO, Ceph...), through pyarrow's own client."""

from __future__ import annotations

import pyarrow.fs as pafs

from flywheel.config import IngestSettings
from flywheel.store.remote_sources import SourceRoot, option_flag


def open_filesystem(root: SourceRoot, settings: IngestSettings) -> pafs.FileSystem:
    opts = root.options
    return pafs.S3FileSystem(
        anonymous=option_flag(opts.get("anonymous")),
        region=opts.get("region"),
        endpoint_override=opts.get("endpoint_override"),
        scheme=opts.get("scheme"),
        force_virtual_addressing=option_flag(opts.get("force_virtual_addressing")),
        connect_timeout=settings.remote_connect_timeout_s,
        request_timeout=settings.remote_read_timeout_s,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=settings.remote_attempts),
    )
