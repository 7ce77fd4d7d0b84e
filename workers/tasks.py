"""Celery tasks: thin wrappers that take ids, call ``flywheel``, and return plain values."""

from __future__ import annotations

import os
import socket

from celery import shared_task


def _describe(queue: str) -> dict[str, str | int]:
    return {"queue": queue, "host": socket.gethostname(), "pid": os.getpid()}


@shared_task(name="workers.tasks.ping")
def ping() -> dict[str, str | int]:
    """An empty task: proves a CPU worker answers, and measures the broker's overhead."""
    return _describe("cpu")


@shared_task(name="workers.tasks.ping_gpu")
def ping_gpu() -> dict[str, str | int]:
    """The same for the GPU queue."""
    return _describe("gpu")
