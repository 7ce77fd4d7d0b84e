"""The Celery app, configured from the one settings object.

No broker configured (the embedded default) means eager mode: the same task code runs
in-process when called. With a broker (Redis), tasks are acknowledged only after they
finish (``acks_late``) and re-queued if their worker dies (``reject_on_worker_lost``), so a
task may run more than once: every task must be idempotent (DESIGN.md, habit 4).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Celery
from celery.schedules import crontab
from kombu import Queue

from flywheel.config import Settings
from flywheel.errors import InvalidInputError

# CPU workers: ingest, versioning, consensus, bookkeeping. GPU workers: embedding,
# pseudo-labeling, training. A GPU node can serve both queues.
QUEUES = ("cpu", "gpu")
TASK_ROUTES = {
    "workers.tasks.ping": {"queue": "cpu"},
    "workers.tasks.ping_gpu": {"queue": "gpu"},
    "workers.tasks.cycle_consensus": {"queue": "cpu"},
    "workers.tasks.cycle_select": {"queue": "gpu"},
    "workers.tasks.cycle_select_shard": {"queue": "gpu"},
    "workers.tasks.cycle_select_merge": {"queue": "gpu"},
    "workers.tasks.cycle_train": {"queue": "gpu"},
    "workers.tasks.cycle_finish": {"queue": "cpu"},
    "workers.tasks.relay_outbox": {"queue": "cpu"},
    "workers.tasks.scheduled_cycle": {"queue": "cpu"},
    "workers.tasks.watch_drift": {"queue": "cpu"},
}


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Celery beat's entries: the outbox relay (with the feedback trigger) and, when
    configured, scheduled cycles and the drift watch. Relays expire unrun: no backlog piles
    up without workers."""
    relay_every = settings.cycles.relay_interval_s
    entries: dict[str, dict[str, Any]] = {
        "relay-outbox": {
            "task": "workers.tasks.relay_outbox",
            "schedule": timedelta(seconds=relay_every),
            "options": {"expires": max(relay_every, 1.0)},
        }
    }
    triggers = settings.triggers
    if triggers.schedule_cron:
        fields = triggers.schedule_cron.split()
        if len(fields) != 5:
            raise InvalidInputError(
                f"triggers.schedule_cron {triggers.schedule_cron!r}: need 5 fields "
                "(minute hour day-of-month month day-of-week)"
            )
        minute, hour, day_of_month, month, day_of_week = fields
        entries["scheduled-cycle"] = {
            "task": "workers.tasks.scheduled_cycle",
            "schedule": crontab(minute, hour, day_of_week, day_of_month, month),
        }
    if settings.drift.trigger_cycle:
        entries["drift-watch"] = {
            "task": "workers.tasks.watch_drift",
            "schedule": timedelta(seconds=settings.drift.check_interval_s),
        }
    if triggers.schedule_interval_s:
        entries["scheduled-cycle-interval"] = {
            "task": "workers.tasks.scheduled_cycle",
            "schedule": timedelta(seconds=triggers.schedule_interval_s),
        }
    return entries


def create_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings``; it becomes the default app, so tasks bind to it."""
    broker = settings.broker
    app = Celery("flywheel", set_as_current=True)
    app.flywheel_settings = settings  # read by tasks in the worker: only ids cross the queue
    # A broker that is down fails a publish within seconds (the outbox retries it later).
    transport = {
        "visibility_timeout": broker.visibility_timeout_s,
        # A dead worker's unacknowledged task goes back to the queue once it is older than
        # the visibility timeout; the sweep runs every restore_interval_s (no throttling).
        "unacked_restore_interval": broker.restore_interval_s,
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": 5,
    }
    app.conf.update(
        broker_url=broker.url or "memory://",
        result_backend=broker.result_backend or broker.url,
        task_always_eager=broker.url is None,
        task_eager_propagates=True,
        task_store_eager_result=False,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="cpu",
        task_routes=TASK_ROUTES,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=7 * 24 * 3600,
        worker_hijack_root_logger=False,
        task_track_started=True,
        beat_schedule=beat_schedule(settings),
    )
    app.set_default()
    # Importing registers the tasks on the default app just set.
    import workers.tasks  # noqa: F401

    return app
