"""Socket.IO door: token-checked connections, `request` dispatch, events and logs out.

Events go out through the event log (event_log.py), which numbers them; sockets that opt
in to connection state recovery (recovery.py) get the numbers, and what they missed when
they come back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from contextvars import ContextVar
from typing import Any
from urllib.parse import parse_qs

import socketio

from ..errors import Unauthorized
from ..events import Event
from ..modules import Caller
from ..modules.auth import Auth
from ..modules.dispatch import Dispatcher
from ..security import bearer, client_address, new_token
from ..storage.store import utcnow
from . import topics
from .event_log import Entry, EventLog, MemoryLog
from .fanout import FastManager, emit_in_order, emit_logged
from .recovery import MemorySessions, RecoveringServer, Recovery, Sessions, wants_recovery

logger = logging.getLogger(__name__)

TOKEN_SWEEP_SECONDS = 10.0
DROP_GRACE_SECONDS = 0.5  # a socket that revoked its own token gets its answer this long
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
        self._recovery = Recovery(self._log, MemorySessions() if sessions is None else sessions)
        self.sio = RecoveringServer(
            self._recovery.session_id,
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
        emits = [(topic, entry.payload, topics.rooms(topic)) for topic in entry.topics]
        await emit_logged(self.sio, emits, self._recovery.tagged(emits, entry))

    async def send_logs(self, entries: list[dict[str, Any]]) -> None:
        await emit_in_order(self.sio, [("log", entry, topics.rooms("log"))
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
                session = await self._recovery.take(auth) if recovery else None
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
        resumed = None
        if session is not None:
            manager = self.sio.manager
            assert isinstance(manager, FastManager)  # recovery is offered with it only
            resumed = self._recovery.resume(sid, caller.user_id, session, auth, manager)
        if resumed is None and recovery:
            self._recovery.begin(sid, new_token())
        topics.enter(self.sio.manager, sid, None if resumed is None else resumed.topics)
        delay = (caller.expires_at - utcnow()).total_seconds()
        loop = asyncio.get_running_loop()
        self._expiry_timers[sid] = loop.call_later(max(delay, 0), self._revoke, sid)
        if resumed is None:  # a resumed socket had these lines before it dropped
            # Runs after the CONNECT packet is queued, so the client sees these as events.
            self._background(self._replay_logs(sid))

    async def _replay_logs(self, sid: str) -> None:
        for entry in list(self._recent_logs):
            if sid not in self._callers:  # revoked meanwhile
                return
            await self.sio.emit("log", entry, to=sid)

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        caller = self._callers.pop(sid, None)
        self._addresses.pop(sid, None)
        timer = self._expiry_timers.pop(sid, None)
        if timer:
            timer.cancel()
        answering = self._answering.pop(sid, None)
        if answering:
            answering[1].cancel()
        # Its rooms are left only after this handler: they are what it gets back.
        await self._recovery.end(sid, None if caller is None else caller.user_id,
                                 lambda: topics.kept(self.sio.manager, sid))

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

    async def _on_subscribe(self, sid: str, names: Any = None) -> dict[str, Any]:
        """Opt in to chosen topics (event names such as `camera:ready`, `camera:*`, `log`)."""
        return self._change_topics(sid, names, subscribe=True)

    async def _on_unsubscribe(self, sid: str, names: Any = None) -> dict[str, Any]:
        return self._change_topics(sid, names, subscribe=False)

    def _change_topics(self, sid: str, names: Any, subscribe: bool) -> dict[str, Any]:
        """Synchronous, so that no revocation can land between the check and the change."""
        if sid not in self._callers:
            return _REVOKED.to_dict()
        return topics.change(self.sio.manager, sid, names, subscribe)

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
        for room in manager.get_rooms(sid, topics.NAMESPACE):
            if room != sid:
                manager.basic_leave_room(sid, topics.NAMESPACE, room)
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

