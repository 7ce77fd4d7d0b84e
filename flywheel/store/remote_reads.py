"""Reading remote objects with bounded time, bounded threads and nothing echoed back.

Every read has a connect timeout, a read timeout and a retry budget given to the storage
client itself, and runs on a few daemon threads of its source root, with one bounded queue
for all. A black-hole endpoint can therefore hold at most its root's ``remote_threads``
threads for at most one read's budget: never another root's, never a thread that serves
predict, feedback or health, and never the process's exit.
Failures come back as short generic reasons; the client library's own text (hosts, ports,
account ids) goes to the server log only.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from flywheel.config import IngestSettings
from flywheel.errors import BusyError, InvalidInputError, NotFoundError
from flywheel.store.backends import open_root_filesystem
from flywheel.store.remote_sources import RemoteObject, SourceRoot, parse_root

log = logging.getLogger(__name__)


class ReadFailed(InvalidInputError):
    """One object could not be read; the message is safe to show to the client."""


def _client_key(root: SourceRoot) -> tuple[str, frozenset[tuple[str, str]]]:
    return root.scheme, frozenset(root.options.items())


@dataclass
class _Lane:
    """The reads of one source root, on threads of its own: a dead root stalls only itself."""

    jobs: queue.SimpleQueue[tuple[Future[bytes], RemoteObject] | None] = field(
        default_factory=queue.SimpleQueue
    )
    threads: list[threading.Thread] = field(default_factory=list)


class RemoteReader:
    """Reads ``RemoteObject``s on ``settings.remote_threads`` daemon threads per source root.

    ``submit`` refuses (BusyError) rather than queue more than ``settings.remote_queue``
    reads in all; threads start on first use, so processes that never read remotely have
    none.
    """

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self._filesystems: dict[tuple[str, frozenset[tuple[str, str]]], pafs.FileSystem] = {}
        self._fs_lock = threading.Lock()
        self._prepared = False
        self._lanes: dict[SourceRoot, _Lane] = {}
        self._lock = threading.Lock()
        self._pending = 0  # queued or running

    @property
    def pending(self) -> int:
        """Reads queued or running now (exported as a metric)."""
        return self._pending

    def _filesystem(self, root: SourceRoot) -> pafs.FileSystem:
        # One client per set of options. pyarrow cannot create an S3 client while a request
        # of another is in flight (a process-wide lock), so the configured roots' clients
        # are all made at once, before the first read.
        with self._fs_lock:
            if not self._prepared:
                self._prepared = True
                for configured in map(parse_root, self.settings.uri_roots):
                    key = _client_key(configured)
                    if key not in self._filesystems:
                        self._filesystems[key] = open_root_filesystem(configured, self.settings)
            key = _client_key(root)
            if key not in self._filesystems:
                self._filesystems[key] = open_root_filesystem(root, self.settings)
            return self._filesystems[key]

    def read(self, obj: RemoteObject) -> bytes:
        """One object's bytes, on the calling thread; ReadFailed with a safe reason."""
        limit = self.settings.max_image_bytes
        try:
            fs = self._filesystem(obj.root)
            path = f"{obj.bucket}/{obj.key}"
            info = fs.get_file_info(path)
            if info.type != pafs.FileType.File:
                raise NotFoundError("not found")
            if info.size is not None and info.size > limit:  # refused before it is fetched
                raise ReadFailed(f"object is {info.size} bytes, over the {limit}-byte limit")
            with fs.open_input_stream(path) as f:
                data = f.read(limit + 1)
        except (ReadFailed, NotFoundError):
            raise
        except FileNotFoundError:
            raise NotFoundError("not found") from None
        except Exception as exc:  # the client's text names hosts and accounts: log it only
            log.warning("remote read of %s failed: %s", obj.uri, exc)
            reason = "timed out" if "timeout" in str(exc).lower() else "could not be read"
            raise ReadFailed(reason) from None
        if len(data) > limit:
            raise ReadFailed(f"object is over the {limit}-byte limit")
        return data

    def submit(self, objects: Sequence[RemoteObject]) -> list[Future[bytes]]:
        """Queue reads of ``objects`` (all or none); BusyError if the queue is full."""
        with self._lock:
            if self._pending + len(objects) > self.settings.remote_queue:
                raise BusyError(f"{self._pending} remote reads are in progress; try again shortly")
            self._pending += len(objects)
            lanes = [self._lane(obj.root) for obj in objects]
        futures: list[Future[bytes]] = []
        for obj, lane in zip(objects, lanes, strict=True):
            future: Future[bytes] = Future()
            futures.append(future)
            lane.jobs.put((future, obj))
        return futures

    def _lane(self, root: SourceRoot) -> _Lane:
        lane = self._lanes.setdefault(root, _Lane())
        while len(lane.threads) < self.settings.remote_threads:
            name = f"remote-read-{root.bucket}-{len(lane.threads)}"
            t = threading.Thread(target=self._work, args=(lane,), name=name, daemon=True)
            t.start()
            lane.threads.append(t)
        return lane

    def _work(self, lane: _Lane) -> None:
        while (job := lane.jobs.get()) is not None:
            future, obj = job
            run = future.set_running_or_notify_cancel()  # False: its caller gave up
            outcome: bytes | Exception = b""
            if run:
                try:
                    outcome = self.read(obj)
                except Exception as exc:
                    outcome = exc
            with self._lock:  # before the caller can see the outcome: pending is exact
                self._pending -= 1
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            elif run:
                future.set_result(outcome)

    def close(self) -> None:
        """Let idle threads end; a thread stuck in a read is a daemon and ends with it."""
        with self._lock:
            for lane in self._lanes.values():
                for _ in lane.threads:
                    lane.jobs.put(None)
            self._lanes.clear()
