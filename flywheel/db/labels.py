"""The label rules every reader shares: which row is a sample's current label, and which
label sources count as what. Written once here; every query and check uses these.

A label row is never edited: a newer row for the same sample supersedes it, and a row with
``retracted`` set withdraws the sample's label. So a sample's *current* label is its newest
row, unless that row is a retraction (then it has none).
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.sql import Select

from flywheel.db.models import Label, LabelSource

# Given directly by a person who knows the class: seed labels and reviewers' decisions.
# Consensus anchors annotators on these; corrections may only use their classes.
GOLD_SOURCES: tuple[str, ...] = (LabelSource.SEED.value, LabelSource.HUMAN.value)
# From people, directly or through the consensus of users' feedback: a cycle trains on
# these as labeled data, and the label audit checks them.
HUMAN_MADE_SOURCES: tuple[str, ...] = (*GOLD_SOURCES, LabelSource.FEEDBACK.value)
# Decided by Flywheel (users' consensus, a model's pseudo-label), not given by a person:
# a reviewer's reject withdraws them.
DERIVED_SOURCES: tuple[str, ...] = (LabelSource.FEEDBACK.value, LabelSource.PSEUDO.value)


def newest_label_ids(sample_ids: Collection[str] | Select | None = None) -> Select:
    """The id of each sample's newest label row (retraction or not); only for
    ``sample_ids`` (ids or a query of them) when given."""
    query = select(func.max(Label.id))
    if sample_ids is not None:
        query = query.where(Label.sample_id.in_(sample_ids))
    return query.group_by(Label.sample_id)


def is_current(sample_ids: Collection[str] | Select | None = None) -> ColumnElement[bool]:
    """A ``where`` clause true for current labels (of ``sample_ids`` only, when given)."""
    newest = newest_label_ids(sample_ids).scalar_subquery()
    return and_(Label.id.in_(newest), Label.retracted.is_(False))


def current_labels_query(
    sample_ids: Collection[str] | Select | None = None,
    sources: Collection[str] | None = None,
) -> Select:
    """``select(Label)`` of the current labels (of ``sample_ids``, from ``sources``)."""
    query = select(Label).where(is_current(sample_ids))
    if sources is not None:
        query = query.where(Label.source.in_(tuple(sources)))
    return query
