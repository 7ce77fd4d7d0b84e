"""Metadata database: records (models), engine/sessions (session), Alembic migrations."""

from flywheel.db.models import (
    ApiKey,
    Base,
    Cycle,
    CycleLease,
    DatasetVersion,
    Feedback,
    GroundTruth,
    Label,
    OutboxMessage,
    Prediction,
    Quarantine,
    ReviewItem,
    Sample,
    SampleAccess,
)
from flywheel.db.session import Database, open_database

__all__ = [
    "ApiKey",
    "Base",
    "Cycle",
    "CycleLease",
    "Database",
    "DatasetVersion",
    "Feedback",
    "GroundTruth",
    "Label",
    "OutboxMessage",
    "Prediction",
    "Quarantine",
    "ReviewItem",
    "Sample",
    "SampleAccess",
    "open_database",
]
