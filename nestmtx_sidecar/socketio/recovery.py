"""Socket.IO connection state recovery (socket.io v4.6+): sessions a dropped socket resumes.

The protocol: the CONNECT reply of a recovering socket carries a private session id (`pid`);
each event it receives carries the event's offset as last argument; a client reconnecting
sends `pid` and its last `offset` in its CONNECT auth and, within the window, gets its
session back (`recovered`): the same pid, its topics, and every event after its offset.

python-socketio has no such thing. The one internal it is taught here is the CONNECT reply
(`RecoveringServer._send_packet`); tests/test_recovery.py fails if that stops working.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import socketio
from socketio import packet as sio_packet

from .event_log import WINDOW_SECONDS, Entry, EventLog, Offset, format_offset, parse_offset
from .fanout import MAX_QUEUED_PACKETS, FastManager, Tagged

logger = logging.getLogger(__name__)

MAX_SESSIONS = 10_000  # dropped sockets remembered at once (in memory), oldest out first
SESSION_KEY = "nestmtx:recovery:"  # + pid, in Redis
MAX_PID_LENGTH = 64  # ours are 47 characters; anything much longer is not one
# Missed frames a resuming socket may be sent: what fits its queue (the CONNECT reply too).
MAX_REPLAY = MAX_QUEUED_PACKETS - 1


@dataclass(frozen=True, slots=True)
class Session:
    """What a dropped socket gets back, and whose it is."""

    pid: str
    user_id: int
    topics: tuple[str, ...] | None  # None: the everything-feed
    start: Offset  # the log's position when the session began: nothing older is replayed

    def to_json(self) -> str:
        body = asdict(self)
        body["start"] = format_offset(self.start)
        return json.dumps(body)

    @classmethod
    def from_json(cls, text: str | bytes) -> Session | None:
        try:
            body = json.loads(text)
            start = parse_offset(body["start"])
            topics = body["topics"]
            if start is None:
                return None
            return cls(str(body["pid"]), int(body["user_id"]),
                       None if topics is None else tuple(map(str, topics)), start)
        except (ValueError, KeyError, TypeError):
            return None


def wants_recovery(environ: dict[str, Any], auth: Any) -> bool:
    """Opted in with `auth.recovery: true` or `?recovery=1` (today's clients see no change)."""
    if isinstance(auth, dict) and auth.get("recovery") is True:
        return True
    query = environ.get("QUERY_STRING", "")
    return any(part in ("recovery=1", "recovery=true") for part in query.split("&"))


class Sessions(Protocol):
    seconds: float  # how long a dropped socket's session is kept

    async def save(self, session: Session) -> None: ...

    async def take(self, pid: str) -> Session | None: ...


class MemorySessions:
    """One process: sessions of dropped sockets for `seconds`, at most MAX_SESSIONS."""

    def __init__(self, seconds: float = WINDOW_SECONDS, limit: int = MAX_SESSIONS) -> None:
        self.seconds = seconds
        self._limit = limit
        # Insertion order is expiry order: every session lives the same time.
        self._sessions: collections.OrderedDict[str, tuple[Session, float]] = (
            collections.OrderedDict())

    def __len__(self) -> int:
        return len(self._sessions)

    async def save(self, session: Session) -> None:
        now = time.monotonic()
        self._sessions.pop(session.pid, None)
        self._sessions[session.pid] = (session, now + self.seconds)
        while self._sessions and (len(self._sessions) > self._limit
                                  or next(iter(self._sessions.values()))[1] <= now):
            self._sessions.popitem(last=False)

    async def take(self, pid: str) -> Session | None:
        kept = self._sessions.pop(pid, None)
        if kept is None or kept[1] <= time.monotonic():
            return None
        return kept[0]


class RedisSessions:
    """Sessions every replica sees: a client that dropped on one resumes on another."""

    def __init__(self, redis: Any, seconds: float = WINDOW_SECONDS) -> None:
        self._redis = redis
        self.seconds = seconds

    async def save(self, session: Session) -> None:
        try:
            await self._redis.set(SESSION_KEY + session.pid, session.to_json(),
                                  ex=max(1, round(self.seconds)))
        except Exception as exc:  # the socket is gone either way; it reconnects as new
            logger.warning("cannot keep the recovery session in Redis: %s", exc)

    async def take(self, pid: str) -> Session | None:
        try:  # GETDEL: two replicas racing for one session cannot both resume it
            text = await self._redis.getdel(SESSION_KEY + pid)
        except Exception as exc:
            logger.warning("cannot read the recovery session from Redis: %s", exc)
            return None
        return None if text is None else Session.from_json(text)


class RecoveringServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server, whose CONNECT reply names the session of recovering sockets.

    `session_id` (sid -> pid, or None) answers from what the connect handler recorded:
    python-socketio runs the handler before it sends the CONNECT reply.
    """

    def __init__(self, session_id: Callable[[str], str | None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._session_id = session_id

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:
        if pkt.packet_type == sio_packet.CONNECT and isinstance(pkt.data, dict):
            pid = self._session_id(pkt.data.get("sid", ""))
            if pid is not None:
                pkt.data = {**pkt.data, "pid": pid}
        await super()._send_packet(eio_sid, pkt)


class Recovery:
    """The sockets that opted in to recovery: their sessions, and how far each has events.

    Begun or resumed at connect, saved at disconnect (what a socket revoked meanwhile never
    is); the door tells it which sockets those are and what they subscribed to.
    """

    def __init__(self, log: EventLog, sessions: Sessions) -> None:
        self._log = log
        self._sessions = sessions
        # sid -> (pid, where its session began) ...
        self._resumable: dict[str, tuple[str, Offset]] = {}
        # ... and sid -> the offset up to which it has every event (replayed or live).
        self._through: dict[str, Offset] = {}

    def session_id(self, sid: str) -> str | None:
        """The pid the CONNECT reply names (RecoveringServer asks)."""
        return self._resumable[sid][0] if sid in self._resumable else None

    async def take(self, auth: Any) -> Session | None:
        """The dropped session the CONNECT auth names; spent whether or not it resumes."""
        pid = auth.get("pid") if isinstance(auth, dict) else None
        if not isinstance(pid, str) or not 0 < len(pid) <= MAX_PID_LENGTH:
            return None
        return await self._sessions.take(pid)

    def begin(self, sid: str, pid: str) -> None:
        """A new session, from the newest event on."""
        start = self._log.window.last
        self._resumable[sid] = (pid, start)
        self._through[sid] = start

    def resume(self, sid: str, user_id: int, session: Session, auth: dict[str, Any],
               manager: FastManager) -> Session | None:
        """The session back, and what it missed sent, if it is the caller's and still whole."""
        if session.user_id != user_id:
            return None
        offset = parse_offset(auth["offset"]) if "offset" in auth else session.start
        if offset is None:
            return None
        since = max(offset, session.start)  # an offset from an older session replays less
        missed = self._log.window.after(since)
        if missed is None:
            return None  # some of it is no longer kept: the client starts afresh
        frames = [(topic, entry.payload, entry.key) for entry in missed
                  for topic in entry.topics if session.topics is None or topic in session.topics]
        if len(frames) > MAX_REPLAY:
            return None  # more than a socket may have waiting: it starts afresh instead
        manager.send_now(sid, frames)
        self._resumable[sid] = (session.pid, session.start)
        # Its client may have seen events this replica has not read from Redis yet.
        self._through[sid] = max(self._log.window.last, since)
        return session

    def tagged(self, emits: list[tuple[str, Any, list[str]]], entry: Entry) -> Tagged | None:
        """The frames with offsets, for the resumable sockets, if there are any."""
        return Tagged(emits, entry.offset, entry.key, self._through) if self._through else None

    async def end(self, sid: str, user_id: int | None,
                  topics: Callable[[], tuple[str, ...] | None]) -> None:
        """A socket left: its session saved to resume, unless it was revoked (no user)."""
        resumable = self._resumable.pop(sid, None)
        self._through.pop(sid, None)
        if user_id is not None and resumable is not None:
            await self._sessions.save(Session(resumable[0], user_id, topics(), resumable[1]))
