"""The HTTP service (FastAPI): a thin layer over ``flywheel`` (not built yet)."""
