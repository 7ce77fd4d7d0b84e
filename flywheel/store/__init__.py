"""Stage: the store. Filesystems (local, s3 and other remote backends), content-addressed
blobs, bounded image decoding, remote sources and reads, ingest, and the quarantine."""
