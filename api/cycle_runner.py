"""Runs cycles for ``POST /v1/cycles`` in a background thread of the API process.

Only used when no broker is configured (and ``api.run_cycles_in_process`` is on): one
cycle at a time per process. Routes use only ``submit`` / ``active`` / ``close``, so a
Celery-backed runner with a distributed lock can replace this one behind the same calls.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import ExitStack

from flywheel.config import LearningSettings
from flywheel.cycle import run_cycle, start_cycle
from flywheel.cycle_guard import exclusive_cycles, holder_id
from flywheel.db.models import CycleState
from flywheel.errors import ConflictError
from flywheel.registry import ModelRegistry
from flywheel.workspace import Workspace

log = logging.getLogger("flywheel.api.cycles")

# (cycle id, learning settings) -> the cycle's final state
RunFn = Callable[[int, LearningSettings], str]


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
        self.on_promoted = on_promoted
        self._run: RunFn = run or (
            lambda cycle_id, learning: run_cycle(ws, registry, learning, cycle_id=cycle_id).state
        )
        self._lock = threading.Lock()
        self._active: int | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.holder = holder_id("api")

    def active(self) -> int | None:
        """The cycle queued or running in this process, if any."""
        with self._lock:
            return self._active

    def submit(self, learning: LearningSettings) -> int:
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
            lease.enter_context(exclusive_cycles(self.ws.db, self.holder))
            try:
                cycle_id = start_cycle(self.ws, learning)
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
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
