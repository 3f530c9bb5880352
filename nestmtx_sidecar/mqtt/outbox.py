"""The MQTT outbox: QoS-1 publishes waiting for the broker, kept across reconnections.

Events wait in one bounded, ordered queue (the oldest go first at the bound); retained topics
are kept as the latest payload of each, so a reconnection sends every one again.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..wire import dumps

if TYPE_CHECKING:
    import aiomqtt

logger = logging.getLogger(__name__)

BUFFER_SIZE = 10_000  # events kept while the broker is away; the oldest go first


class Outbox:
    """What is still to be published: events in order first, then changed retained topics."""

    def __init__(self, buffer_size: int = BUFFER_SIZE) -> None:
        self.dropped = 0  # events lost at the buffer bound since start
        self._buffer_size = buffer_size
        self._events: collections.deque[tuple[str, bytes]] = collections.deque()
        self._retained: dict[str, bytes] = {}  # topic -> what the broker should keep (b"": clear)
        self._dirty: dict[str, None] = {}  # retained topics still to publish, in order
        self._wake = asyncio.Event()

    def event(self, topic: str, data: bytes) -> None:
        if len(self._events) >= self._buffer_size:
            self._events.popleft()
            self._count_drop()
        self._events.append((topic, data))
        self._wake.set()

    def retain(self, topic: str, payload: Mapping[str, Any] | None) -> None:
        """Keep `payload` on `topic` at the broker (None: clear the topic), if it changed."""
        data = b"" if payload is None else dumps(payload)
        if self._retained.get(topic) != data:
            self.republish(topic, data)

    def republish(self, topic: str, data: bytes) -> None:
        """Keep `data` on `topic`, sent again even if unchanged (someone overwrote it)."""
        self._retained[topic] = data
        self._dirty[topic] = None
        self._wake.set()

    def holds(self, topic: str) -> bool:
        """A retained topic this outbox keeps (so one seen at the broker is not stale)."""
        return topic in self._retained

    def connected(self) -> None:
        """A new connection: a restarted broker may have lost every retained message."""
        self._dirty = dict.fromkeys(self._retained)
        if self._events or self.dropped:
            logger.info("delivering %d buffered MQTT events (%d dropped at the bound of %d)",
                        len(self._events), self.dropped, self._buffer_size)

    async def flush(self, client: aiomqtt.Client) -> None:
        """Publish whatever arrives, until cancelled or the connection breaks (raises)."""
        while True:
            await self.drain(client)
            self._wake.clear()  # no await since the outbox was seen empty: nothing slips by
            await self._wake.wait()

    async def drain(self, client: aiomqtt.Client) -> None:
        """Publish everything waiting; what fails stays in the outbox."""
        while self._events or self._dirty:
            if self._events:
                item = self._events.popleft()
                try:
                    await client.publish(*item, qos=1)
                except BaseException:
                    self._requeue(item)
                    raise
                continue
            topic = next(iter(self._dirty))
            del self._dirty[topic]
            data = self._retained[topic]
            try:
                await client.publish(topic, data, qos=1, retain=True)
            except BaseException:
                self._dirty[topic] = None
                raise
            if data == b"" and self._retained.get(topic) == b"":
                del self._retained[topic]  # cleared for good; nothing to send again

    def _requeue(self, item: tuple[str, bytes]) -> None:
        """Put an event that could not be sent back at the front, unless the buffer is full."""
        if len(self._events) < self._buffer_size:
            self._events.appendleft(item)
        else:
            self._count_drop()

    def _count_drop(self) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            logger.warning("MQTT broker away: %d events dropped so far (buffer holds %d)",
                           self.dropped, self._buffer_size)
