"""One event type and one bus: producers publish, adapters (Socket.IO, MQTT) subscribe."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

APP_WILDCARD = "nestmtx:*"


def isoformat(moment: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, as JavaScript's toISOString()."""
    moment = moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
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


class EventBus:
    """Delivers each event to every subscriber, in publish order."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    async def publish(self, event: Event) -> None:
        for subscriber in list(self._subscribers):
            try:
                await subscriber(event)
            except Exception:
                # One broken adapter must not starve the others.
                logger.exception("event subscriber %r failed on %s", subscriber, event.topics[0])
