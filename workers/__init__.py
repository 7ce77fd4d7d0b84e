"""Celery workers: the app (``workers.app``) and thin tasks over ``flywheel`` (``workers.tasks``).

Start one with ``flywheel worker --queues cpu,gpu``; with no broker configured, the same
tasks run eagerly in-process.
"""
