"""Socket.IO door: token-checked connections, `request` dispatch, events and logs out.

Events go out through the event log (event_log.py), which numbers them; sockets that opt
in to connection state recovery (recovery.py) get the numbers, and what they missed when
they come back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from contextvars import ContextVar
from typing import Any
from urllib.parse import parse_qs

import socketio

from ..errors import Invalid, Unauthorized
from ..events import Event
from ..modules import Caller
from ..modules.auth import Auth
from ..modules.dispatch import Dispatcher
from ..security import bearer, client_address, new_token
from ..storage.store import utcnow
from .event_log import Entry, EventLog, MemoryLog, Offset, parse_offset
from .fanout import MAX_QUEUED_PACKETS, FastManager, Tagged, emit_in_order, emit_logged
from .recovery import (
    MAX_PID_LENGTH,
    MemorySessions,
    RecoveringServer,
    Session,
    Sessions,
    wants_recovery,
)

logger = logging.getLogger(__name__)

AUTHENTICATED = "authenticated"  # every accepted socket
EVERYTHING = "everything"  # sockets that never chose topics get every event (NestMTX's way)
TOPIC_ROOM = "topic:"  # prefix of the room of each topic a socket subscribed to
MAX_TOPIC_LENGTH = 200
TOKEN_SWEEP_SECONDS = 10.0
DROP_GRACE_SECONDS = 0.5  # a socket that revoked its own token gets its answer this long
NAMESPACE = "/"
# Missed frames a resuming socket may be sent: what fits its queue (the CONNECT reply too).
MAX_REPLAY = MAX_QUEUED_PACKETS - 1
_REVOKED = Unauthorized("This socket's token was revoked or has expired")

# The socket and request running in this task, so a revocation knows its own cause.
_requesting: ContextVar[tuple[str, object] | None] = ContextVar("requesting", default=None)


def token_from_handshake(environ: dict[str, Any], auth: Any) -> str | None:
    """The token from `Authorization: Bearer`, `auth.token` or `?token=`, in NestMTX's order."""
    token = bearer(environ.get("HTTP_AUTHORIZATION", ""))
    if token:
        return token
    if isinstance(auth, dict) and isinstance(auth.get("token"), str) and auth["token"]:
        return auth["token"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    tokens = [t for t in query.get("token", []) if t]
    return tokens[0] if tokens else None


class SocketIoDoor:
    """Owns the python-socketio server; knows nothing of where events come from."""

    def __init__(self, auth: Auth, dispatcher: Dispatcher, recent_logs: Any,
                 client_manager: FastManager | None = None,
                 trusted_proxies: Sequence[client_address.Network] = (),
                 log: EventLog | None = None, sessions: Sessions | None = None) -> None:
        self._auth = auth
        self._dispatcher = dispatcher
        self._recent_logs = recent_logs
        self._trusted_proxies = trusted_proxies
        self._log = MemoryLog() if log is None else log
        self._log.deliver_to(self._deliver)
        # `is None`: an empty store is falsy.
        self._sessions = MemorySessions() if sessions is None else sessions
        # Sockets that opted in to recovery: sid -> (pid, where its session began) ...
        self._resumable: dict[str, tuple[str, Offset]] = {}
        # ... and sid -> the offset up to which it has every event (replayed or live).
        self._through: dict[str, Offset] = {}
        self.sio = RecoveringServer(
            lambda sid: self._resumable[sid][0] if sid in self._resumable else None,
            async_mode="asgi", cors_allowed_origins="*",
            client_manager=FastManager() if client_manager is None else client_manager,
            logger=False, engineio_logger=False,
        )
        self._callers: dict[str, Caller] = {}  # sockets whose token is valid, and only those
        self._addresses: dict[str, str] = {}  # sid -> client address
        self._expiry_timers: dict[str, asyncio.TimerHandle] = {}
        # Sockets that revoked their own token: (the request that did, its deadline to drop).
        self._answering: dict[str, tuple[object, asyncio.TimerHandle]] = {}
        # Tokens revoked while each connect in progress checks its token.
        self._connecting: list[set[int]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("request", self._on_request)
        self.sio.on("subscribe", self._on_subscribe)
        self.sio.on("unsubscribe", self._on_unsubscribe)
        auth.on_revoke(self._drop_tokens)

    @property
    def connected(self) -> int:
        return len(self._callers)

    async def publish(self, event: Event) -> None:
        """Bus subscriber: the event into the log, which delivers it on every replica."""
        await self._log.append(event.topics, event.payload())

    async def _deliver(self, entry: Entry) -> None:
        """One logged event out under its three topics, to this replica's sockets."""
        emits = [(topic, entry.payload, [EVERYTHING, TOPIC_ROOM + topic])
                 for topic in entry.topics]
        tagged = Tagged(emits, entry.offset, entry.key, self._through) if self._through else None
        await emit_logged(self.sio, emits, tagged)

    async def send_logs(self, entries: list[dict[str, Any]]) -> None:
        await emit_in_order(self.sio, [("log", entry, [EVERYTHING, TOPIC_ROOM + "log"])
                                       for entry in entries])

    async def sweep_tokens(self) -> None:
        """Drop sockets whose token was revoked elsewhere (another replica, the CLI)."""
        while True:
            await asyncio.sleep(TOKEN_SWEEP_SECONDS)
            valid = await self._auth.valid_token_ids({c.token_id for c in self._callers.values()})
            stale = {c.token_id for c in self._callers.values()} - valid
            if stale:
                self._drop_tokens(list(stale))

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        revoked: set[int] = set()
        self._connecting.append(revoked)
        # Replay needs FastManager; python-socketio's own managers (bench baselines) cannot.
        recovery = wants_recovery(environ, auth) and isinstance(self.sio.manager, FastManager)
        try:
            try:
                caller = await self._auth.authenticate(token_from_handshake(environ, auth))
            finally:  # a session offered with a refused token is spent all the same
                session = await self._take_session(auth) if recovery else None
        except Unauthorized as exc:
            raise socketio.exceptions.ConnectionRefusedError(exc.message) from None
        finally:
            self._connecting.remove(revoked)
        if caller.token_id in revoked:  # revoked while we were checking it
            raise socketio.exceptions.ConnectionRefusedError("Invalid or revoked token")
        # From here to the end, no await: a revocation either came before (refused above)
        # or finds the socket in `_callers` and takes it out of the rooms entered here; and
        # no event is logged between the replay of what it missed and its entering the rooms.
        self._callers[sid] = caller
        self._addresses[sid] = client_address.from_scope(environ.get("asgi.scope", {}),
                                                         self._trusted_proxies)
        topics: tuple[str, ...] | None = None
        resumed = self._resume(sid, caller, session, auth) if session is not None else None
        if resumed is not None:
            topics = resumed.topics
        elif recovery:
            start = self._log.window.last
            self._resumable[sid] = (new_token(), start)
            self._through[sid] = start
        rooms = [AUTHENTICATED, EVERYTHING] if topics is None else [
            AUTHENTICATED, *(TOPIC_ROOM + topic for topic in topics)]
        for room in rooms:
            self.sio.manager.basic_enter_room(sid, NAMESPACE, room)
        delay = (caller.expires_at - utcnow()).total_seconds()
        loop = asyncio.get_running_loop()
        self._expiry_timers[sid] = loop.call_later(max(delay, 0), self._revoke, sid)
        if resumed is None:  # a resumed socket had these lines before it dropped
            # Runs after the CONNECT packet is queued, so the client sees these as events.
            self._background(self._replay_logs(sid))

    async def _take_session(self, auth: Any) -> Session | None:
        pid = auth.get("pid") if isinstance(auth, dict) else None
        if not isinstance(pid, str) or not 0 < len(pid) <= MAX_PID_LENGTH:
            return None
        return await self._sessions.take(pid)

    def _resume(self, sid: str, caller: Caller, session: Session, auth: dict[str, Any]
                ) -> Session | None:
        """The session back, and what it missed sent, if it is the caller's and still whole."""
        if session.user_id != caller.user_id:
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
        manager = self.sio.manager
        assert isinstance(manager, FastManager)  # recovery is offered with it only
        manager.send_now(sid, frames)
        self._resumable[sid] = (session.pid, session.start)
        # Its client may have seen events this replica has not read from Redis yet.
        self._through[sid] = max(self._log.window.last, since)
        return session

    async def _replay_logs(self, sid: str) -> None:
        for entry in list(self._recent_logs):
            if sid not in self._callers:  # revoked meanwhile
                return
            await self.sio.emit("log", entry, to=sid)

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        caller = self._callers.pop(sid, None)
        resumable = self._resumable.pop(sid, None)
        self._through.pop(sid, None)
        self._addresses.pop(sid, None)
        timer = self._expiry_timers.pop(sid, None)
        if timer:
            timer.cancel()
        answering = self._answering.pop(sid, None)
        if answering:
            answering[1].cancel()
        if caller is not None and resumable is not None:  # a revoked socket resumes nothing
            # Its rooms are left only after this handler: they are what it gets back.
            topics = (None if EVERYTHING in self.sio.rooms(sid, NAMESPACE)
                      else tuple(self._topics(sid)))
            await self._sessions.save(Session(resumable[0], caller.user_id, topics,
                                              resumable[1]))

    async def _on_request(self, sid: str, *args: Any) -> Any:
        caller = self._callers.get(sid)
        if caller is None:
            return _REVOKED.to_dict()  # on the ack only: a revoked socket gets no event
        # Extra arguments are ignored as NestMTX does; none at all is a malformed request.
        data = args[0] if args else None
        request = object()
        context = _requesting.set((sid, request))
        try:
            request_id, reply = await self._dispatcher.answer(
                data, caller, client=self._addresses.get(sid, client_address.UNKNOWN))
        finally:
            _requesting.reset(context)
        if sid in self._callers:
            await self.sio.emit(request_id or "failure", reply, to=sid)
            return reply  # python-socketio answers the acknowledgement callback, if any
        answering = self._answering.get(sid)
        if answering is None or answering[0] is not request:
            return None  # revoked while this ran, by something else: the answer is withheld
        # This request revoked its own token (`auth delete current`): answer it, then drop.
        del self._answering[sid]
        answering[1].cancel()
        await self.sio.emit(request_id or "failure", reply, to=sid)
        # Queued after this task returns, so the ack goes out before the drop.
        self._background(self.sio.disconnect(sid))
        return reply

    async def _on_subscribe(self, sid: str, topics: Any = None) -> dict[str, Any]:
        """Opt in to chosen topics (event names such as `camera:ready`, `camera:*`, `log`).

        The first subscribe takes the socket off the everything-feed; the reply (ack) lists
        the topics the socket now receives.
        """
        return self._change_topics(sid, topics, self.sio.manager.basic_enter_room)

    async def _on_unsubscribe(self, sid: str, topics: Any = None) -> dict[str, Any]:
        return self._change_topics(sid, topics, self.sio.manager.basic_leave_room)

    def _change_topics(self, sid: str, topics: Any,
                       change: Callable[[str, str, str], None]) -> dict[str, Any]:
        """Synchronous, so that no revocation can land between the check and the change."""
        if sid not in self._callers:
            return _REVOKED.to_dict()
        names = _topic_list(topics)
        if isinstance(names, dict):
            return names
        self.sio.manager.basic_leave_room(sid, NAMESPACE, EVERYTHING)
        for name in names:
            change(sid, NAMESPACE, TOPIC_ROOM + name)
        return {"topics": self._topics(sid)}

    def _topics(self, sid: str) -> list[str]:
        return sorted(room.removeprefix(TOPIC_ROOM) for room in self.sio.rooms(sid)
                      if room.startswith(TOPIC_ROOM))

    def _drop_tokens(self, token_ids: list[int]) -> None:
        dropped = set(token_ids)
        for revoked in self._connecting:
            revoked |= dropped
        for sid, caller in list(self._callers.items()):
            if caller.token_id in dropped:
                self._revoke(sid)

    def _revoke(self, sid: str) -> None:
        """The token of `sid` stopped being valid: out of every room now, disconnected soon.

        Out of the rooms at once, so no event or log line reaches it from this moment; its
        own sid room stays, which is how python-socketio still knows and disconnects it.
        """
        if self._callers.pop(sid, None) is None:
            return
        timer = self._expiry_timers.pop(sid, None)
        if timer:
            timer.cancel()
        manager = self.sio.manager
        for room in manager.get_rooms(sid, NAMESPACE):
            if room != sid:
                manager.basic_leave_room(sid, NAMESPACE, room)
        cause = _requesting.get()
        if cause is not None and cause[0] == sid:
            # Its own request revoked it: that request answers, then drops it, but no later
            # than DROP_GRACE_SECONDS whatever the request does.
            self._answering[sid] = (cause[1], asyncio.get_running_loop().call_later(
                DROP_GRACE_SECONDS, self._drop, sid))
        else:
            self._drop(sid)

    def _drop(self, sid: str) -> None:
        self._answering.pop(sid, None)
        self._background(self.sio.disconnect(sid))

    def _background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _topic_list(topics: Any) -> list[str] | dict[str, Any]:
    """A topic or a list of topics, else the error reply saying what is wrong."""
    if isinstance(topics, str):
        topics = [topics]
    if not isinstance(topics, list) or not topics or not all(
            isinstance(t, str) and 0 < len(t) <= MAX_TOPIC_LENGTH for t in topics):
        return Invalid(
            f"topics must be a topic name or a non-empty list of names of at most "
            f"{MAX_TOPIC_LENGTH} characters").to_dict()
    return topics
