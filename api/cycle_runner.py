"""Who runs the cycles ``POST /v1/cycles`` (and the feedback trigger) start.

- :class:`CycleRunner`: no broker configured (and ``api.run_cycles_in_process`` on): the
  cycle runs in a background thread of this process, one at a time.
- :class:`BrokerCycleRunner`: a broker is configured: the cycle is queued in the database
  with an outbox message and the workers run it; this process relays the outbox.

Both answer ``submit`` / ``active`` / ``close`` and run ``tick`` from a background thread
every ``cycles.relay_interval_s``: the feedback trigger, and for the broker the relay.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import ExitStack

from flywheel.config import LearningSettings, Settings
from flywheel.cycle.guard import holder_id
from flywheel.cycle.lease import current
from flywheel.cycle.runner import claim_cycle, queue_cycle, run_cycle
from flywheel.cycle.triggers import Every, check_drift_and_trigger, check_feedback_and_trigger
from flywheel.db.models import CycleState, CycleTrigger
from flywheel.errors import ConflictError
from flywheel.learn.registry import ModelRegistry
from flywheel.workspace import Workspace

log = logging.getLogger("flywheel.api.cycles")

# (cycle id, learning settings) -> the cycle's final state
RunFn = Callable[[int, LearningSettings], str]


class Ticker:
    """Calls ``tick`` every ``interval_s`` seconds (or at once after ``poke``) in a daemon
    thread until ``stop``: slow ticks (a broker that is down) never hold up a request."""

    def __init__(self, tick: Callable[[], object], interval_s: float, name: str) -> None:
        self._stop = threading.Event()
        self._wake = threading.Event()

        def loop() -> None:
            while not self._stop.is_set():
                self._wake.wait(interval_s)
                self._wake.clear()
                if self._stop.is_set():
                    return
                try:
                    tick()
                except Exception:  # a database or broker blip: the next tick tries again
                    log.exception("%s failed", name)

        self._thread = threading.Thread(target=loop, name=name, daemon=True)
        self._thread.start()

    def poke(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)


class CycleRunner:
    """One cycle at a time, each in its own daemon thread."""

    def __init__(
        self,
        ws: Workspace,
        registry: ModelRegistry,
        on_promoted: Callable[[], None],
        run: RunFn | None = None,
    ) -> None:
        self.ws = ws
        self.settings = ws.settings
        self.registry = registry
        self._drift = Every(self.settings.drift.check_interval_s, self.settings.drift.trigger_cycle)
        self.on_promoted = on_promoted
        self._run: RunFn = run or (
            lambda cycle_id, learning: run_cycle(ws, registry, learning, cycle_id=cycle_id).state
        )
        self._lock = threading.Lock()
        self._active: int | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.holder = holder_id("api")
        self._ticker = Ticker(self.tick, self.settings.cycles.relay_interval_s, "cycle-trigger")

    def tick(self) -> None:
        """The triggers: enough new feedback, or drifted inputs, start a cycle here."""
        if self.active() is not None:
            return

        def start(trigger: str) -> int:
            return self.submit(self.settings.learning, trigger=trigger)

        if check_feedback_and_trigger(self.ws, self.settings, start) is None and self._drift.due():
            check_drift_and_trigger(self.ws, self.registry, self.settings, start)

    def active(self) -> int | None:
        """The cycle queued or running in this process, if any."""
        with self._lock:
            return self._active

    def submit(self, learning: LearningSettings, trigger: str = CycleTrigger.MANUAL) -> int:
        """Record a queued cycle and start it; ConflictError while another one runs."""
        with self._lock:
            if self._closed:
                raise ConflictError("the server is shutting down: no new cycles")
            if self._active is not None:
                raise ConflictError(
                    f"cycle {self._active} is still running: one cycle at a time "
                    f"(GET /v1/cycles/{self._active})"
                )
            # The lease is shared with other processes (the CLI, other API processes): a
            # cycle running anywhere is a 409 here, and it is held until _work ends.
            lease = ExitStack()
            try:
                cycle_id = lease.enter_context(claim_cycle(self.ws, learning, self.holder, trigger))
                thread = threading.Thread(
                    target=self._work,
                    args=(cycle_id, learning, lease),
                    name=f"cycle-{cycle_id}",
                    daemon=True,
                )
                # Started before it is marked active: a thread that cannot start blocks nothing.
                thread.start()
            except BaseException:
                lease.close()
                raise
            self._active, self._thread = cycle_id, thread
            return cycle_id

    def _work(self, cycle_id: int, learning: LearningSettings, lease: ExitStack) -> None:
        try:
            state = self._run(cycle_id, learning)
            if state == CycleState.PROMOTED:
                self.on_promoted()  # serve the new champion from the next request on
        except Exception:  # run_cycle has marked the cycle failed, with the reason
            log.exception("cycle %s failed", cycle_id)
        finally:
            lease.close()
            with self._lock:
                self._active = None

    def close(self, timeout: float = 5.0) -> None:
        """Refuse new cycles and give a running one ``timeout`` seconds to finish.

        A cycle cannot be interrupted safely mid-step; one still running is left to die
        with the process, and its row stays in its last state.
        """
        self._ticker.stop()
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            thread.join(timeout)


class BrokerCycleRunner:
    """Cycles queued for the Celery workers; this process relays the outbox to the broker.

    ``publish`` hands one outbox message to the broker (``workers.tasks.publish``); the
    relay retries it with backoff while the broker is down, so a queued cycle is never lost.
    """

    def __init__(
        self,
        ws: Workspace,
        registry: ModelRegistry,
        relay_and_trigger: Callable[[Workspace, Settings], object],
    ) -> None:
        self.ws = ws
        self.settings = ws.settings
        self.registry = registry
        self._drift = Every(self.settings.drift.check_interval_s, self.settings.drift.trigger_cycle)
        self._relay_and_trigger = relay_and_trigger
        self._closed = False
        self._ticker = Ticker(self.tick, self.settings.cycles.relay_interval_s, "outbox-relay")

    def tick(self) -> None:
        if self._drift.due():
            check_drift_and_trigger(self.ws, self.registry, self.settings)
        self._relay_and_trigger(self.ws, self.settings)

    def active(self) -> int | None:
        lease = current(self.ws.db)
        return lease.cycle_id if lease else None

    def submit(self, learning: LearningSettings, trigger: str = CycleTrigger.MANUAL) -> int:
        if self._closed:
            raise ConflictError("the server is shutting down: no new cycles")
        cycle_id, _ = queue_cycle(self.ws, self.settings, trigger, publish=None)
        self._ticker.poke()  # relay it now, off the request; a broker that is down is retried
        return cycle_id

    def close(self, timeout: float = 5.0) -> None:
        self._closed = True
        self._ticker.stop(timeout)
