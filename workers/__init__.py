"""Celery tasks wrapping the cycle steps of ``flywheel.cycle`` (not built yet)."""
