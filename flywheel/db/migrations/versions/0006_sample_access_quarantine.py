"""Samples scoped to tenants (sample_access); samples a cycle could not use (quarantine)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sample_access",
        sa.Column("sample_id", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["sample_id"], ["samples.id"], name=op.f("fk_sample_access_sample_id_samples")
        ),
        sa.PrimaryKeyConstraint("sample_id", "tenant", name=op.f("pk_sample_access")),
    )
    op.create_table(
        "quarantine",
        sa.Column("sample_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("cycle_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["sample_id"], ["samples.id"], name=op.f("fk_quarantine_sample_id_samples")
        ),
        sa.PrimaryKeyConstraint("sample_id", name=op.f("pk_quarantine")),
    )
    # Samples stored before tenants were recorded: the tenant named in their source
    # ("upload:<tenant>", "predict:<tenant>") and every tenant that predicted on them.
    bind = op.get_bind()
    pairs = {
        (sid, source.split(":", 1)[1])
        for sid, source in bind.execute(sa.text("SELECT id, source FROM samples"))
        if source.split(":", 1)[0] in ("upload", "predict") and ":" in source
    }
    pairs |= set(
        bind.execute(
            sa.text("SELECT DISTINCT sample_id, app_id FROM predictions WHERE app_id IS NOT NULL")
        )
    )
    if pairs:
        access = sa.table(
            "sample_access",
            sa.column("sample_id", sa.String),
            sa.column("tenant", sa.String),
            sa.column("created_at", sa.DateTime(timezone=True)),
        )
        now = datetime.now(UTC)
        op.bulk_insert(
            access, [{"sample_id": s, "tenant": t, "created_at": now} for s, t in sorted(pairs)]
        )


def downgrade() -> None:
    op.drop_table("quarantine")
    op.drop_table("sample_access")
