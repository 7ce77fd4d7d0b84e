"""Metadata database: records (models), engine/sessions (session), Alembic migrations."""

from flywheel.db.models import (
    ApiKey,
    Base,
    Cycle,
    DatasetVersion,
    Feedback,
    GroundTruth,
    Label,
    Prediction,
    ReviewItem,
    Sample,
)
from flywheel.db.session import Database, open_database

__all__ = [
    "ApiKey",
    "Base",
    "Cycle",
    "Database",
    "DatasetVersion",
    "Feedback",
    "GroundTruth",
    "Label",
    "Prediction",
    "ReviewItem",
    "Sample",
    "open_database",
]
