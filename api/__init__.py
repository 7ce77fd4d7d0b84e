"""The HTTP service (FastAPI): the ``/v1`` JSON API and the ``/ui`` pages, over ``flywheel``."""
