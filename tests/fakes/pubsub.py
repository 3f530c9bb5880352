"""A fake Cloud Pub/Sub REST API (v1) on loopback, in Google's shapes and errors.

Topics, IAM policies (read-modify-write with an etag), pull subscriptions, a real long-poll
pull (held open until a message arrives or `pull_hold` seconds pass), acknowledgement, and
redelivery of what was not acknowledged within the ack deadline. Tokens are the fake OAuth's:
an unknown one is 401, one without the pubsub scope 403 PERMISSION_DENIED. `publish(event)`
is how a test plays Google's SDM publisher; `fail_next("pull", 429, 503)` scripts failures.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.google import PUBSUB_SCOPE, google_error
from tests.services import free_port, serving

TokenScopes = Callable[[str], "set[str] | None"]  # Authorization header -> scopes, None: bad


@dataclass
class Message:
    message_id: str
    data: str  # base64, as on the wire
    publish_time: str
    delivery_attempt: int = 0


@dataclass
class Subscription:
    topic: str
    ack_deadline: float
    pending: collections.deque[Message] = field(default_factory=collections.deque)
    outstanding: dict[str, tuple[Message, float]] = field(default_factory=dict)  # ackId ->
    # (message, monotonic deadline)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    deleted: bool = False

    def due(self) -> None:
        """Messages whose ack deadline passed go back to be delivered again."""
        now = time.monotonic()
        for ack_id, (message, deadline) in list(self.outstanding.items()):
            if deadline <= now:
                del self.outstanding[ack_id]
                self.pending.append(message)

    def next_deadline(self) -> float | None:
        return min((d for _, d in self.outstanding.values()), default=None)


@dataclass
class PubSubCall:
    at: float  # time.monotonic()
    endpoint: str  # createTopic, getIamPolicy, setIamPolicy, createSubscription, pull, ...
    status: int
    resource: str = ""


@dataclass
class FakePubSub:
    token_scopes: TokenScopes
    pull_hold: float = 3.0  # seconds an empty pull is held open
    ack_deadline: float | None = None  # overrides the subscriptions' (>= 10 s) for quick tests
    topics: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> IAM policy
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    calls: list[PubSubCall] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)  # message ids, in acknowledgement order
    _failures: dict[str, collections.deque[int]] = field(
        default_factory=lambda: collections.defaultdict(collections.deque))
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))
    url: str = ""

    # -- scripting -------------------------------------------------------------------------

    def publish(self, event: dict[str, Any], topic: str | None = None) -> str:
        """Publish an SDM event message (JSON, base64-encoded as Google does); its message id."""
        return self.publish_raw(base64.b64encode(json.dumps(event).encode()).decode(), topic)

    def publish_raw(self, data: str, topic: str | None = None) -> str:
        """Publish `data` as it is (already base64, or deliberately not)."""
        message_id = str(next(self._ids))
        published = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        for subscription in self.subscriptions.values():
            if topic is None or subscription.topic == topic:
                subscription.pending.append(Message(message_id, data, published))
                subscription.wake.set()
        return message_id

    def delete_subscription(self, name: str) -> None:
        """What Pub/Sub does after 31 days without a pull."""
        subscription = self.subscriptions.pop(name)
        subscription.deleted = True
        subscription.wake.set()

    def fail_next(self, endpoint: str, *statuses: int) -> None:
        """The next calls of an endpoint answer 429 RESOURCE_EXHAUSTED or 503 UNAVAILABLE."""
        self._failures[endpoint].extend(statuses)

    def heal(self, endpoint: str) -> None:
        self._failures[endpoint].clear()

    def count(self, endpoint: str, status: int | None = None, since: float = 0.0) -> int:
        return sum(1 for c in self.calls if c.endpoint == endpoint and c.at >= since and
                   (status is None or c.status == status))

    def members(self, topic: str, role: str) -> list[str]:
        return [m for b in self.topics[topic].get("bindings", []) if b["role"] == role
                for m in b["members"]]

    # -- serving ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serve(self, port: int | None = None) -> AsyncIterator[FakePubSub]:
        port = port or free_port()
        app = Starlette(routes=[
            Route("/v1/projects/{project}/topics/{rest}", self._topic, methods=["PUT", "POST"]),
            Route("/v1/projects/{project}/subscriptions/{rest}", self._subscription,
                  methods=["PUT", "POST"]),
        ])
        self.url = f"http://127.0.0.1:{port}/v1"
        async with serving(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                          lifespan="off", timeout_graceful_shutdown=1)):
            yield self

    async def _topic(self, request: Request) -> Response:
        name, _, verb = f"projects/{request.path_params['project']}/topics/" \
            f"{request.path_params['rest']}".partition(":")
        endpoint = {"": "createTopic", "getIamPolicy": "getIamPolicy",
                    "setIamPolicy": "setIamPolicy"}.get(verb, "?")
        return self._record(endpoint, name, await self._answer(request, endpoint, name))

    async def _subscription(self, request: Request) -> Response:
        name, _, verb = f"projects/{request.path_params['project']}/subscriptions/" \
            f"{request.path_params['rest']}".partition(":")
        endpoint = {"": "createSubscription", "pull": "pull",
                    "acknowledge": "acknowledge"}.get(verb, "?")
        return self._record(endpoint, name, await self._answer(request, endpoint, name))

    def _record(self, endpoint: str, name: str, response: Response) -> Response:
        self.calls.append(PubSubCall(time.monotonic(), endpoint, response.status_code, name))
        return response

    async def _answer(self, request: Request, endpoint: str, name: str) -> Response:
        scopes = self.token_scopes(request.headers.get("authorization", ""))
        if scopes is None:
            return google_error(401, "UNAUTHENTICATED",
                                "Request had invalid authentication credentials. Expected OAuth "
                                "2 access token, login cookie or other valid authentication "
                                "credential.")
        if PUBSUB_SCOPE not in scopes:
            return google_error(403, "PERMISSION_DENIED",
                                "Request had insufficient authentication scopes.")
        queue = self._failures.get(endpoint)
        if queue:
            status = queue.popleft()
            if status == 429:
                return google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.")
            return google_error(status, "UNAVAILABLE", "The service is currently unavailable.")
        try:
            body = await request.json()
        except ValueError:
            return google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if not isinstance(body, dict):
            return google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        handler = getattr(self, "_" + endpoint, None)
        if handler is None:
            return google_error(404, "NOT_FOUND", "Method not found.")
        return await handler(name, body)

    @staticmethod
    def _not_found(name: str) -> Response:
        return google_error(404, "NOT_FOUND", f"Resource not found (resource={name}).")

    async def _createTopic(self, name: str, body: dict[str, Any]) -> Response:
        if name in self.topics:
            return google_error(409, "ALREADY_EXISTS", "Resource already exists in the project "
                                f"(resource={name.rsplit('/', 1)[1]}).")
        self.topics[name] = {"version": 1, "etag": "ACAB"}
        return JSONResponse({"name": name})

    async def _getIamPolicy(self, name: str, body: dict[str, Any]) -> Response:
        if name not in self.topics:
            return self._not_found(name)
        return JSONResponse(self.topics[name])

    async def _setIamPolicy(self, name: str, body: dict[str, Any]) -> Response:
        if name not in self.topics:
            return self._not_found(name)
        policy = body.get("policy")
        if not isinstance(policy, dict) or not isinstance(policy.get("bindings", []), list):
            return google_error(400, "INVALID_ARGUMENT", "Invalid policy.")
        current = self.topics[name]
        if policy.get("etag") and policy["etag"] != current["etag"]:
            return google_error(409, "ABORTED", "There were concurrent policy changes. Please "
                                "retry the whole read-modify-write with exponential backoff.")
        for binding in policy.get("bindings", []):
            for member in binding.get("members", []):
                if not str(member).startswith(("user:", "group:", "serviceAccount:",
                                               "domain:")):
                    return google_error(400, "INVALID_ARGUMENT",
                                        f"Invalid member {member!r} in the policy.")
        etag = base64.b64encode(str(next(self._ids)).encode()).decode()
        self.topics[name] = {"version": 1, "etag": etag, "bindings": policy.get("bindings", [])}
        return JSONResponse(self.topics[name])

    async def _createSubscription(self, name: str, body: dict[str, Any]) -> Response:
        if name in self.subscriptions:
            return google_error(409, "ALREADY_EXISTS", "Resource already exists in the project "
                                f"(resource={name.rsplit('/', 1)[1]}).")
        topic = body.get("topic")
        if topic not in self.topics:
            return self._not_found(str(topic))
        deadline = body.get("ackDeadlineSeconds", 10)
        if not isinstance(deadline, int) or not 10 <= deadline <= 600:
            return google_error(400, "INVALID_ARGUMENT", "Invalid ackDeadlineSeconds.")
        self.subscriptions[name] = Subscription(str(topic), self.ack_deadline or deadline)
        return JSONResponse({"name": name, "topic": topic, "ackDeadlineSeconds": deadline,
                             "messageRetentionDuration": "604800s",
                             "expirationPolicy": {"ttl": "2678400s"}})

    async def _pull(self, name: str, body: dict[str, Any]) -> Response:
        subscription = self.subscriptions.get(name)
        if subscription is None:
            return self._not_found(name)
        most = body.get("maxMessages")
        if not isinstance(most, int) or most < 1:
            return google_error(400, "INVALID_ARGUMENT", "maxMessages must be positive.")
        give_up = time.monotonic() + self.pull_hold
        while True:  # a long poll: woken by a publish, a redelivery due, or the hold's end
            subscription.due()
            if subscription.deleted:
                return self._not_found(name)
            if subscription.pending:
                break
            left = give_up - time.monotonic()
            if left <= 0:
                return JSONResponse({})
            due = subscription.next_deadline()
            wait = left if due is None else max(0.0, min(left, due - time.monotonic()))
            subscription.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(subscription.wake.wait(), wait)
        received = []
        while subscription.pending and len(received) < most:
            message = subscription.pending.popleft()
            message.delivery_attempt += 1
            ack_id = f"ack-{next(self._ids)}-{message.message_id}"
            subscription.outstanding[ack_id] = (
                message, time.monotonic() + subscription.ack_deadline)
            received.append({"ackId": ack_id, "message": {
                "data": message.data, "messageId": message.message_id,
                "publishTime": message.publish_time, "attributes": {}},
                "deliveryAttempt": message.delivery_attempt})
        return JSONResponse({"receivedMessages": received})

    async def _acknowledge(self, name: str, body: dict[str, Any]) -> Response:
        subscription = self.subscriptions.get(name)
        if subscription is None:
            return self._not_found(name)
        ack_ids = body.get("ackIds")
        if not isinstance(ack_ids, list) or not ack_ids:
            return google_error(400, "INVALID_ARGUMENT", "ackIds must not be empty.")
        for ack_id in ack_ids:  # expired or unknown ack ids are ignored, as Google does
            taken = subscription.outstanding.pop(str(ack_id), None)
            if taken is not None:
                self.acked.append(taken[0].message_id)
        return JSONResponse({})
