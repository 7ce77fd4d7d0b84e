"""Alembic environment: the engine comes from ``flywheel.db.session`` (never a global URL)."""

from alembic import context

from flywheel.db.models import Base

engine = context.config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER much
        compare_type=True,
    )
    context.run_migrations()
