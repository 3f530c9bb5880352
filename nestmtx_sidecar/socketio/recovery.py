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

from .event_log import WINDOW_SECONDS, Offset, format_offset, parse_offset

logger = logging.getLogger(__name__)

MAX_SESSIONS = 10_000  # dropped sockets remembered at once (in memory), oldest out first
SESSION_KEY = "nestmtx:recovery:"  # + pid, in Redis
MAX_PID_LENGTH = 64  # ours are 43 characters; anything much longer is not one


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
