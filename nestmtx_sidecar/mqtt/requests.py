"""The request API over MQTT: `<base>/requests` in, `<base>/responses/<requestId>` out.

Requests run on the shared dispatcher, as on every door; the caller's bearer travels in the
request as `token`. Logging in is refused here, since every subscriber could read the reply.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import aiomqtt

from ..errors import BadRequest, Forbidden, Invalid, SidecarError, field_error
from ..modules import Caller
from ..modules.auth import Auth
from ..modules.dispatch import Dispatcher, Request, RequestError, parse_request, request_json
from ..wire import dumps

logger = logging.getLogger(__name__)

MAX_REQUEST = 1024 * 1024
REQUEST_FIELDS = frozenset({"command", "module", "requestId", "entity", "payload", "token"})
LOGIN_REFUSED = ("Logging in over MQTT is refused: every subscriber of the responses topic "
                 "could read the token. Log in over HTTP (POST /api/auth) and send its bearer "
                 "as `token`.")
_UNROUTABLE = re.compile(r"[+#\x00]")  # MQTT wildcards and NUL cannot appear in a topic name
_CONCURRENT_REQUESTS = 16


class MqttRequests:
    """Answers request messages, at most 16 at a time, each parsed once."""

    def __init__(self, base: str, group: str, dispatcher: Dispatcher, auth: Auth) -> None:
        self.topic = f"{base}/requests"
        # A shared subscription: with several replicas on one broker, one of them answers.
        self.subscription = f"$share/{group}/{self.topic}"
        self._base = base
        self._dispatcher = dispatcher
        self._auth = auth
        self._slots = asyncio.Semaphore(_CONCURRENT_REQUESTS)
        self._running: set[asyncio.Task[None]] = set()

    async def handle(self, client: aiomqtt.Client, body: bytes) -> None:
        """Start answering one request; waits while 16 are running (backpressure)."""
        await self._slots.acquire()
        task = asyncio.create_task(self._reply(client, body))
        self._running.add(task)
        task.add_done_callback(self._done)

    async def cancel(self) -> None:
        """The connection is gone: its replies cannot be sent."""
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def answer(self, body: bytes) -> tuple[str | None, Any]:
        """(requestId or None, reply) for one request message, as the Socket.IO door answers."""
        try:
            request, token = _parse(body)
            try:
                caller = await self._caller(token)
            except SidecarError as exc:
                raise RequestError(exc, request.request_id) from None
            if request.module == "auth":
                raise RequestError(Forbidden(LOGIN_REFUSED), request.request_id)
        except RequestError as exc:
            return exc.request_id, exc.to_dict()
        return request.request_id, await self._dispatcher.reply(request, caller)

    async def _caller(self, token: Any) -> Caller | None:
        if token is None:
            return None
        if not isinstance(token, str):
            raise Invalid("token must be a string", [field_error("token", "must be a string")])
        return await self._auth.authenticate(token)

    async def _reply(self, client: aiomqtt.Client, body: bytes) -> None:
        request_id, reply = await self.answer(body)
        topic = f"{self._base}/failures" if request_id is None else \
            f"{self._base}/responses/{request_id}"
        try:
            await client.publish(topic, dumps(reply), qos=1)
        except aiomqtt.MqttError as exc:
            logger.warning("could not answer MQTT request %r: %s", request_id, exc)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()


def _parse(body: bytes) -> tuple[Request, Any]:
    """The request and its token; RequestError (with the requestId once known) otherwise."""
    if len(body) > MAX_REQUEST:
        raise RequestError(BadRequest(f"Request larger than {MAX_REQUEST} bytes"), None)
    raw = request_json(body)
    request = parse_request(raw, REQUEST_FIELDS)  # first: later errors go to its id
    if _UNROUTABLE.search(request.request_id):
        raise RequestError(Invalid(
            "requestId must not contain +, # or NUL: it names the reply topic",
            [field_error("requestId", "not usable in a topic name")]), None)
    return request, raw.get("token")
