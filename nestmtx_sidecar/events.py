"""One event type and one bus: producers publish, adapters (Socket.IO, MQTT) subscribe."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .metrics import EVENTS_DROPPED
from .storage.store import as_utc

logger = logging.getLogger(__name__)

APP_WILDCARD = "nestmtx:*"


def isoformat(moment: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, as JavaScript's toISOString()."""
    moment = as_utc(moment).astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Event:
    domain: str
    event: str
    entity: int | None
    details: dict[str, Any] = field(default_factory=dict)
    at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def topics(self) -> tuple[str, str, str]:
        """The three Socket.IO event names this event goes out under."""
        return f"{self.domain}:{self.event}", f"{self.domain}:*", APP_WILDCARD

    def payload(self) -> dict[str, Any]:
        return {"domain": self.domain, "entity": self.entity, "event": self.event,
                "details": self.details, "at": isoformat(self.at)}


Subscriber = Callable[[Event], Awaitable[None]]

QUEUE_LIMIT = 1000  # events waiting per subscriber; beyond it a slow one misses events
DROP_LOG_SECONDS = 10.0  # at most one warning per subscriber this often while it drops


class _Mailbox:
    """One subscriber's bounded queue and its one worker: events in publish order, delivered
    without the publisher waiting. The worker exists only while events wait, so an idle bus
    holds no task."""

    def __init__(self, subscriber: Subscriber, limit: int) -> None:
        self.subscriber = subscriber
        self.name = getattr(subscriber, "__qualname__", type(subscriber).__qualname__)
        self.worker: asyncio.Task[None] | None = None
        self._limit = limit
        self._queue: collections.deque[Event] = collections.deque()
        self._dropped = 0
        self._warned_at = -DROP_LOG_SECONDS

    def put(self, event: Event) -> None:
        if len(self._queue) >= self._limit:
            self._drop(event)
            return
        self._queue.append(event)
        if self.worker is None:
            self.worker = asyncio.create_task(self._work(), name=f"bus:{self.name}")

    async def _work(self) -> None:
        try:
            while self._queue:
                event = self._queue.popleft()
                try:
                    await self.subscriber(event)
                except Exception:
                    # One broken adapter must not starve the others, nor its own later events.
                    logger.exception("event subscriber %s failed on %s", self.name,
                                     event.topics[0])
        finally:
            self.worker = None

    def _drop(self, event: Event) -> None:
        self._dropped += 1
        EVENTS_DROPPED.labels(self.name).inc()
        now = time.monotonic()
        if now - self._warned_at >= DROP_LOG_SECONDS:
            self._warned_at = now
            logger.warning("event subscriber %s is not keeping up: its queue of %d is full; "
                           "%d events dropped so far (latest %s)", self.name, self._limit,
                           self._dropped, event.topics[0])


class EventBus:
    """Delivers each event to every subscriber, in publish order, never making the publisher
    wait: each subscriber has its own queue and worker, as python-socketio's manager schedules
    its deliveries. A hook call therefore answers at once, and Socket.IO and MQTT hear of it
    while Google is still answering the Nest subscriber."""

    def __init__(self, queue_limit: int = QUEUE_LIMIT) -> None:
        self._queue_limit = queue_limit
        self._mailboxes: list[_Mailbox] = []
        self._closed = False

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        mailbox = _Mailbox(subscriber, self._queue_limit)
        self._mailboxes.append(mailbox)
        return lambda: self._mailboxes.remove(mailbox)

    async def publish(self, event: Event) -> None:
        """Queue the event for every subscriber; returns before any of them has it."""
        if self._closed:
            logger.debug("bus stopped: %s not delivered", event.topics[0])
            return
        for mailbox in self._mailboxes:
            mailbox.put(event)

    async def drain(self) -> None:
        """Wait until every event published so far (and any they caused) is delivered."""
        while workers := [m.worker for m in self._mailboxes if m.worker is not None]:
            await asyncio.wait(workers)

    async def stop(self, within: float) -> None:
        """Shutdown: deliver what is queued for up to `within` seconds, then cancel the rest.

        Publishing afterwards is a no-op, so no worker outlives the sidecar.
        """
        self._closed = True
        try:
            await asyncio.wait_for(self.drain(), within)
        except TimeoutError:
            busy = [m for m in self._mailboxes if m.worker is not None]
            logger.warning("event subscribers still busy after %.0f s, cancelled: %s",
                           within, ", ".join(m.name for m in busy))
            workers = [m.worker for m in busy if m.worker is not None]
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
