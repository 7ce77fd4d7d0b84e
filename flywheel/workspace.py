"""Everything one project's code needs, opened once from the settings at the edge."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from flywheel.config import Settings
from flywheel.datasets.versions import DatasetVersions
from flywheel.db import Database, open_database
from flywheel.store.blobs import BlobStore
from flywheel.store.storage import open_location

# Marks a folder as a Flywheel data dir, so `--fresh` never wipes a folder it did not make.
MARKER = ".flywheel"


@dataclass
class Workspace:
    settings: Settings
    db: Database
    blobs: BlobStore
    versions: DatasetVersions

    def cycle_file(self, cycle_id: int, name: str) -> tuple[pafs.FileSystem, str]:
        """Where cycle ``cycle_id`` keeps its file ``name`` in the store: ``cycles/<id>/``."""
        loc = open_location(self.settings.storage_root)
        return loc.fs, loc.path("cycles", str(cycle_id), name)

    def close(self) -> None:
        self.db.dispose()


def open_workspace(settings: Settings) -> Workspace:
    """Create the data dir if needed, open (and migrate) the DB, open the stores."""
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / MARKER).touch()
    db = open_database(
        settings.database_url,
        auto_migrate=settings.database.auto_migrate,
        echo=settings.database.echo,
    )
    return Workspace(
        settings=settings,
        db=db,
        blobs=BlobStore(settings.storage_root),
        versions=DatasetVersions(db, settings.storage_root),
    )
