"""Every log record of the service becomes a redacted `log` event for subscribers."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import os
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from ..events import isoformat
from ..metrics import LOG_RECORDS_DROPPED
from ..security import Redactor

REPLAY_SIZE = 100
QUEUE_SIZE = 10_000
SLICE_SIZE = 100
TRACE = 5  # below DEBUG, for the seed's `trace` level

# The seed's level numbers, which clients filter on.
_SEED_LEVELS = ((logging.CRITICAL, 70), (logging.ERROR, 60), (logging.WARNING, 50),
                (logging.INFO, 40), (logging.DEBUG, 30))

LogSink = Callable[[list[dict[str, Any]]], Awaitable[None]]


class _Ring:
    """The last entries, safe to read from the loop while other threads log.

    Iterating a plain deque while another thread appends raises "deque mutated during
    iteration"; this iterates over a copy taken under the lock.
    """

    def __init__(self, size: int, lock: threading.Lock) -> None:
        self._entries: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)
        self._lock = lock

    def append(self, entry: dict[str, Any]) -> None:  # caller holds the lock
        self._entries.append(entry)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


def seed_level(levelno: int) -> int:
    for threshold, number in _SEED_LEVELS:
        if levelno >= threshold:
            return number
    return 20


class LogStream(logging.Handler):
    """A logging handler that keeps the last 100 entries and streams new ones to a sink.

    Records can come from any thread; they are queued and sent from the event loop in
    batches, so a burst of logs never blocks the loop. The queue is bounded: when it is
    full, the newest records are dropped from the live stream (they still enter the replay
    ring), counted in `dropped` and reported in one warning per batch.
    """

    def __init__(self, redact: Redactor, queue_size: int = QUEUE_SIZE) -> None:
        super().__init__(level=TRACE)
        self._redact = redact
        self._hostname = socket.gethostname()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self.recent = _Ring(REPLAY_SIZE, self._lock)
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._queue_size = queue_size
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = self._entry(record)
        except Exception:
            self.handleError(record)
            return
        with self._lock:
            self.recent.append(entry)
            if len(self._pending) >= self._queue_size:
                self.dropped += 1
                LOG_RECORDS_DROPPED.inc()
                return
            self._pending.append(entry)
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wakeup.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._wakeup.set)

    def _entry(self, record: logging.LogRecord) -> dict[str, Any]:
        msg = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            msg = f"{msg}: {type(exc).__name__}: {exc}"
        service = record.name.removeprefix("nestmtx_sidecar.")
        millis = int(record.created * 1000)
        return {"hostname": self._hostname, "level": seed_level(record.levelno),
                "msg": self._redact(msg), "pid": self._pid, "service": service,
                "time": millis, "timestamp": _iso_from_millis(millis)}

    async def run(self, sink: LogSink) -> None:
        """Send queued entries to the sink until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        if self._pending:
            self._wakeup.set()
        reported = 0
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            with self._lock:
                batch = list(self._pending)
                self._pending.clear()
                dropped = self.dropped - reported
            if dropped:
                reported += dropped
                logging.getLogger(__name__).warning(
                    "%d log records were dropped: subscribers could not keep up", dropped)
            # In slices, yielding between them: one huge batch must not hold the loop.
            for start in range(0, len(batch), SLICE_SIZE):
                try:
                    await sink(batch[start:start + SLICE_SIZE])
                except Exception as exc:
                    # Not through logging: that would feed this very loop, failing forever.
                    print(f"log stream: sending logs failed: {type(exc).__name__}: {exc}",
                          file=sys.stderr)
                await asyncio.sleep(0)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError  # the sink (redis-py) swallowed our cancellation


def _iso_from_millis(millis: int) -> str:
    return isoformat(dt.datetime.fromtimestamp(millis / 1000, dt.UTC))
