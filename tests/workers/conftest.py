"""Real deployments for the worker tests: a data dir, a settings file, CLI calls, and
``celery worker`` processes (each in its own session, so a test can SIGKILL a whole one).
Every process a test starts is killed at teardown, whatever happened."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from flywheel.config import Settings
from flywheel.cycle.state import FINISHED, load_cycle
from flywheel.db import Cycle
from flywheel.workspace import Workspace, open_workspace

# Small but real: the whole digits set, a few SSL epochs, a train step of a few seconds
# (long enough to be killed in the middle of).
LEARNING = {
    "ssl_epochs": 2,
    "train_epochs": 60,
    # Cycle 2 continues from the champion for 60 plain epochs (no consistency term: every
    # step stays far shorter than the visibility timeout below, yet a worker can be killed
    # mid-training).
    "continue_epochs": 60,
    "fixmatch": "first",
    "fixmatch_epochs": 1,
    "augment": "digits",
    "steps_per_epoch": 4,
    "width": 8,
    "batch_size": 32,
}
# Short leases and a short visibility timeout, so redelivery after a killed worker happens
# within seconds; a step here is usually far shorter than the visibility timeout, and one
# that runs past it on a loaded machine is delivered again and finds its step done.
CYCLES = {"lease_s": 4.0, "heartbeat_s": 0.5, "relay_interval_s": 0.5, "shard_size": 400}
BROKER = {"visibility_timeout_s": 12, "restore_interval_s": 1, "max_retries": 2}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# How long a test waits for a process or a cycle to reach a state: a bound on liveness, not
# a measure of speed (each wait returns as soon as the state is reached). On two cores that
# also ran two benchmark processes, a worker took over 180 s to reach a cycle's third
# training epoch, so the bound is generous; the worker tests' pytest timeout is above it.
LIVENESS_S = 600.0
TEST_TIMEOUT_S = 3 * LIVENESS_S


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def received(self, task: str) -> int:
        """Deliveries of ``task`` messages: a message the broker delivers again (its worker
        died, or it ran past the visibility timeout) counts each time."""
        return len(re.findall(rf"Task workers\.tasks\.{task}\[[^\]]+\] received", self.text()))

    def messages(self, task: str) -> set[str]:
        """The ids of the ``task`` messages this worker received, however often each came:
        a slow machine may see a message delivered again, which the steps shrug off."""
        return set(re.findall(rf"Task workers\.tasks\.{task}\[([^\]]+)\] received", self.text()))

    def owns(self, pid: int) -> bool:
        """Whether ``pid`` (a pool process) belongs to this worker (its own session)."""
        try:
            return os.getsid(pid) == self.proc.pid
        except ProcessLookupError:
            return False

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool): a node that died."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)


@dataclass
class Deployment:
    root: Path
    settings: Settings
    config: Path
    workers: list[Worker] = field(default_factory=list)
    others: list[subprocess.Popen] = field(default_factory=list)
    _ws: Workspace | None = None

    @property
    def ws(self) -> Workspace:
        if self._ws is None:
            self._ws = open_workspace(self.settings)
        return self._ws

    def cli(self, *args: str, timeout: float = LIVENESS_S) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "flywheel.cli", "-c", str(self.config), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)

    def popen(self, *args: str, log: Path) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "flywheel.cli", "-c", str(self.config), *args]
        out = log.open("w")
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=ENV, start_new_session=True
        )
        self.others.append(proc)
        return proc

    def start_worker(self, name: str, queues: str = "cpu,gpu", wait: bool = True) -> Worker:
        log = self.root / f"worker-{name}.log"
        proc = self.popen("worker", "--queues", queues, "--name", name, log=log)
        self.others.remove(proc)
        worker = Worker(name, proc, log)
        self.workers.append(worker)
        if wait:
            self.wait_ready(worker)
        return worker

    def start_workers(self, *names: str, queues: str = "cpu,gpu") -> list[Worker]:
        """Start several workers at once (their imports overlap), then wait for each."""
        workers = [self.start_worker(name, queues, wait=False) for name in names]
        for worker in workers:
            self.wait_ready(worker)
        return workers

    def wait_ready(self, worker: Worker, timeout: float = LIVENESS_S) -> None:
        def ready() -> bool:
            if worker.proc.poll() is not None:
                raise AssertionError(f"worker {worker.name} exited:\n{worker.text()}")
            return " ready." in worker.text()

        wait_until(ready, timeout, f"worker {worker.name}", every=0.2)

    def cycle(self, cycle_id: int) -> Cycle:
        return load_cycle(self.ws, cycle_id)

    def wait_cycle(self, cycle_id: int, timeout: float = LIVENESS_S) -> Cycle:
        def done() -> Cycle | None:
            c = self.cycle(cycle_id)
            return c if c.state in FINISHED else None

        try:
            return wait_until(done, timeout, f"cycle {cycle_id} to finish", every=0.2)
        except AssertionError:
            logs = "\n".join(f"--- {w.name}\n{w.text()[-4000:]}" for w in self.workers)
            state = self.cycle(cycle_id).state
            raise AssertionError(f"cycle {cycle_id}: {state}\n{logs}") from None

    def stop(self) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                w.kill()
        for p in self.others:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(30)
        if self._ws is not None:
            self._ws.close()


def write_config(path: Path, settings: Settings) -> Path:
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    return path


@pytest.fixture
def make_deployment(tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    """``make_deployment(name, database_url=None, broker_url=None, **settings)``: a data dir
    with the digits ingested; no broker means the embedded default (eager)."""
    made: list[Deployment] = []
    brokers: list[str] = []

    def make(
        name: str,
        database_url: str | None = None,
        broker_url: str | None = None,
        ingest: bool = True,
        **overrides: Any,
    ) -> Deployment:
        root = tmp_path / name
        root.mkdir()
        settings = Settings(
            data_dir=root / "data",
            database={"url": database_url},
            broker={"url": broker_url, **BROKER},
            cycles={**CYCLES, **overrides.pop("cycles", {})},
            learning=LEARNING,
            **overrides,
        )
        if broker_url:
            redis.Redis.from_url(broker_url).flushdb()
            brokers.append(broker_url)
        dep = Deployment(root, settings, write_config(root / "flywheel.yaml", settings))
        made.append(dep)
        if ingest:
            out = dep.cli("ingest", "digits", "--labels-per-class", "5")
            assert out.returncode == 0, out.stderr
        return dep

    yield make
    for dep in made:
        dep.stop()
    for url in brokers:
        with contextlib.suppress(redis.ConnectionError):
            redis.Redis.from_url(url).flushdb()


@pytest.fixture(scope="session")
def eager_reference(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Two cycles in the embedded default (no broker): what the workers must reproduce."""
    root = tmp_path_factory.mktemp("eager")
    settings = Settings(data_dir=root / "data", broker=BROKER, cycles=CYCLES, learning=LEARNING)
    dep = Deployment(root, settings, write_config(root / "flywheel.yaml", settings))
    try:
        for args in (("ingest", "digits", "--labels-per-class", "5"), ("cycle", "run", "-n", "2")):
            out = dep.cli(*args)
            assert out.returncode == 0, out.stderr
        return [cycle_summary(dep, c) for c in (1, 2)]
    finally:
        dep.stop()


def cycle_summary(dep: Deployment, cycle_id: int) -> dict[str, Any]:
    """What must not depend on where a cycle ran: its data, labels and model quality."""
    from sqlalchemy import func, select

    from flywheel.db import Label

    c = dep.cycle(cycle_id)
    with dep.ws.db.session() as s:
        labels = s.scalar(select(func.count()).where(Label.cycle_id == cycle_id))
    m = c.metrics or {}
    return {
        "state": c.state,
        "dataset_version": c.dataset_version_out,
        "labels_written_by_cycle": labels,
        "model_version": m.get("model_version"),
        **{k: m.get(k) for k in ("test_accuracy", "accepted", "needs_review", "labels_written")},
    }
