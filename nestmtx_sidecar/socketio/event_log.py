"""The replayable event log: every event once, in order, under an offset a client resumes from.

Offsets have the shape of Redis stream ids (`<ms>-<seq>`), whichever log made them, so a
client's offset means the same thing on every replica. Each replica keeps the recent part of
the log (`Window`, bounded in age and count) in memory: recovering a socket is then a
synchronous read, with no await in which a live event could slip between replay and live.

- `MemoryLog` (one process, no Redis): appending numbers the event and delivers it at once.
- `RedisStreamLog`: appending is an `XADD` (retried until Redis takes it); every replica reads
  the stream with `XREAD BLOCK` from the last id it delivered, so a Redis restart or a short
  partition delays events but loses none, and all replicas deliver them in one order.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

logger = logging.getLogger(__name__)

Offset = tuple[int, int]  # (milliseconds, sequence), ordered as Redis orders stream ids

WINDOW_SECONDS = 120.0  # how long an event stays replayable
WINDOW_EVENTS = 10_000  # and at most this many of the newest
STREAM_KEY = "nestmtx:events"
READ_BLOCK_MS = 1000  # below the Redis client's 3 s socket timeout
RETRY_SECONDS = (0.05, 0.1, 0.2, 0.5, 1.0)  # backoff while Redis is unreachable


def parse_offset(text: Any) -> Offset | None:
    """The offset a client sent, or None when it is not one (then nothing is recovered)."""
    if not isinstance(text, str) or len(text) > 41:
        return None
    ms, dash, seq = text.partition("-")
    if not (dash and ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit()):
        return None
    return int(ms), int(seq)


def format_offset(offset: Offset) -> str:
    return f"{offset[0]}-{offset[1]}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Entry:
    offset: Offset
    topics: tuple[str, ...]  # the Socket.IO event names it goes out under
    payload: dict[str, Any]
    uid: str = ""  # unique per append: a retried XADD that had landed is delivered once

    @property
    def key(self) -> str:
        return format_offset(self.offset)


Deliver = Callable[[Entry], Awaitable[None]]


class Window:
    """The newest entries, oldest out past `seconds` or `limit`; knows from where it is whole."""

    def __init__(self, seconds: float = WINDOW_SECONDS, limit: int = WINDOW_EVENTS) -> None:
        self.seconds = seconds
        self._limit = limit
        self._entries: collections.deque[Entry] = collections.deque()
        self._uids: set[str] = set()
        # Every entry after `floor` is held. At start nothing earlier is known to this process.
        self.floor: Offset = (_now_ms(), 0)

    @property
    def last(self) -> Offset:
        return self._entries[-1].offset if self._entries else self.floor

    def __len__(self) -> int:
        return len(self._entries)

    def holds(self, uid: str) -> bool:
        return uid in self._uids

    def add(self, entry: Entry) -> None:
        self._entries.append(entry)
        if entry.uid:
            self._uids.add(entry.uid)
        self._trim()

    def load(self, entries: list[Entry]) -> None:
        """Entries read back at start, oldest first: the window is whole from the oldest of
        them on (and from wherever trimming them leaves it)."""
        if entries:
            self.floor = min(self.floor, entries[0].offset)
        for entry in entries:
            self.add(entry)

    def after(self, offset: Offset) -> list[Entry] | None:
        """Every entry after `offset`, oldest first; None when some of them are gone."""
        self._trim()
        if offset < self.floor:
            return None
        newer: list[Entry] = []
        for entry in reversed(self._entries):
            if entry.offset <= offset:
                break
            newer.append(entry)
        newer.reverse()
        return newer

    def _trim(self) -> None:
        oldest = (_now_ms() - int(self.seconds * 1000), 0)
        entries = self._entries
        while entries and (len(entries) > self._limit or entries[0].offset < oldest):
            gone = entries.popleft()
            self._uids.discard(gone.uid)
            self.floor = max(self.floor, gone.offset)


class EventLog(Protocol):
    window: Window

    def deliver_to(self, deliver: Deliver) -> None: ...

    async def open(self) -> None: ...

    async def append(self, topics: tuple[str, ...], payload: dict[str, Any]) -> None: ...

    async def run(self) -> None: ...


async def _ignore(entry: Entry) -> None:
    """Delivery before the Socket.IO door took the log over: nowhere to deliver to yet."""


class MemoryLog:
    """One process: the log is the window, and appending delivers."""

    def __init__(self, window: Window | None = None) -> None:
        self.window = window or Window()
        self._deliver: Deliver = _ignore
        self._last = self.window.floor

    def deliver_to(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def open(self) -> None:
        """Nothing to read back: a process starts with an empty log."""

    async def append(self, topics: tuple[str, ...], payload: dict[str, Any]) -> None:
        ms = _now_ms()  # ids as Redis makes them: time first, a sequence within a millisecond
        self._last = (ms, 0) if ms > self._last[0] else (self._last[0], self._last[1] + 1)
        entry = Entry(self._last, topics, payload)
        self.window.add(entry)
        await self._deliver(entry)

    async def run(self) -> None:
        """Nothing to follow."""


class RedisStreamLog:
    """A Redis stream every replica appends to and follows from its own last id."""

    def __init__(self, redis: Any, window: Window | None = None, key: str = STREAM_KEY,
                 max_length: int = WINDOW_EVENTS) -> None:
        self.window = window or Window()
        self._redis = redis
        self._key = key
        self._max_length = max_length
        self._deliver: Deliver = _ignore
        self._last_id = format_offset(self.window.floor)

    def deliver_to(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def open(self) -> None:
        """Read back the replayable part of the stream, and follow it from its end."""
        try:
            rows = await self._redis.xrevrange(self._key, count=self._max_length)
        except Exception as exc:  # start anyway: follow from now once Redis answers
            logger.warning("cannot read the event stream %s: %s", self._key, exc)
            return
        entries = [e for e in (_decode(i, f) for i, f in reversed(rows)) if e is not None]
        self.window.load(entries)
        if rows:
            self._last_id = _text(rows[0][0])

    async def append(self, topics: tuple[str, ...], payload: dict[str, Any]) -> None:
        body = json.dumps({"t": topics, "p": payload, "u": secrets.token_hex(8)},
                          separators=(",", ":"))
        await _retrying("append to", self._key, lambda: self._redis.xadd(
            self._key, {"e": body}, maxlen=self._max_length, approximate=True))

    async def run(self) -> None:
        """Deliver every entry, in stream order, once; resume from the last id after errors."""
        while True:
            batches = await _retrying("read", self._key, lambda: self._redis.xread(
                {self._key: self._last_id}, block=READ_BLOCK_MS, count=500))
            for _, rows in batches or ():
                for raw_id, fields in rows:
                    self._last_id = _text(raw_id)
                    entry = _decode(raw_id, fields)
                    if entry is None or self.window.holds(entry.uid):
                        continue
                    self.window.add(entry)
                    await self._deliver(entry)


async def _retrying(what: str, key: str, command: Callable[[], Awaitable[Any]]) -> Any:
    """Run a Redis command until it succeeds; one warning per outage, not one per try."""
    failures = 0
    while True:
        try:
            result = await command()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if failures == 0:
                logger.warning("cannot %s the event stream %s, retrying: %s", what, key, exc)
            await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
            failures += 1
            continue
        if failures:
            logger.info("event stream %s reachable again after %d tries", key, failures)
        return result


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(raw_id: bytes | str, fields: dict[Any, Any]) -> Entry | None:
    offset = parse_offset(_text(raw_id))
    try:
        body = json.loads(fields.get(b"e") or fields.get("e") or b"")
        entry = Entry(offset or (0, 0), tuple(body["t"]), body["p"], str(body["u"]))
    except (ValueError, KeyError, TypeError):
        logger.warning("skipping malformed entry %s of the event stream", _text(raw_id))
        return None
    return entry if offset is not None else None
