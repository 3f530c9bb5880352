"""MQTT door: bus events and retained state out, the request API in, Home Assistant discovery.

Topics under the base (default `nestmtx`): `status` (online/offline, retained, also the will),
`events/<domain>/<entity|null>/<event>`, `state/<domain>/<id>` (retained), `requests`,
`responses/<requestId>`, `failures`. Everything to publish goes through one ordered outbox, so
a broker outage delays messages instead of losing them or blocking the service.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import logging
import random
import re
import secrets
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt

from .config import ConfigError, Settings
from .dispatch import Dispatcher, RequestError, parse_request
from .errors import BadRequest, Forbidden, Invalid, NotFound, SidecarError, field_error
from .events import Event, isoformat
from .ha_discovery import COMPONENTS, OFFLINE, ONLINE, Discovery
from .modules import COMMANDS, Caller, Module
from .modules.auth import Auth
from .modules.cameras import CameraRef, Cameras
from .modules.credentials import Credentials
from .security import Redactor
from .wire import dumps

logger = logging.getLogger(__name__)

BUFFER_SIZE = 10_000  # events kept while the broker is away; the oldest go first
MAX_REQUEST = 1024 * 1024
REQUEST_FIELDS = frozenset({"command", "module", "requestId", "entity", "payload", "token"})
LOGIN_REFUSED = ("Logging in over MQTT is refused: every subscriber of the responses topic "
                 "could read the token. Log in over HTTP (POST /api/auth) and send its bearer "
                 "as `token`.")
_UNROUTABLE = re.compile(r"[+#\x00]")  # MQTT wildcards and NUL cannot appear in a topic name
_BACKOFF_MIN, _BACKOFF_MAX = 0.5, 30.0
_STOP_TIMEOUT = 5.0
_DRAIN_ON_STOP = 2.0
_CONCURRENT_REQUESTS = 16
_CREDENTIAL_EVENTS = {"authenticated", "reauthenticated", "unauthenticated"}


@dataclass(frozen=True)
class Broker:
    """Where the broker is, from NESTMTX_MQTT_URL; str() never shows the credentials."""

    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)
    tls: bool

    @classmethod
    def from_url(cls, url: str) -> Broker:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise ConfigError("NESTMTX_MQTT_URL: the port must be a number from 1 to 65535"
                              ) from None
        if not parts.hostname:
            raise ConfigError("NESTMTX_MQTT_URL: a host is required (mqtt://host:1883)")
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname, port or (8883 if tls else 1883),
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password is not None else None, tls)

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


@dataclass
class CameraState:
    """What a late subscriber needs to know of a camera, kept up to date from its events."""

    id: int
    credential_id: int
    name: str
    path: str | None
    demand: bool = False
    ready: bool = False
    readers: int = 0
    stream_expires_at: str | None = None
    last_error: dict[str, Any] | None = None
    updated_at: str = field(default_factory=lambda: isoformat(dt.datetime.now(dt.UTC)))

    def apply(self, event: Event) -> None:
        details = event.details
        if event.event in ("demand", "unDemand"):
            self.demand = event.event == "demand"
        elif event.event == "ready":
            self.ready = True
        elif event.event == "notReady":
            # The source is gone: so are its readers and the Nest stream behind it.
            self.ready, self.readers, self.stream_expires_at = False, 0, None
        elif event.event == "read":
            self.readers += 1
        elif event.event == "unread":
            self.readers = max(0, self.readers - 1)
        elif event.event == "extended":
            self.stream_expires_at = details.get("expiresAt")
        elif event.event in ("failed-extension", "error"):
            self.last_error = {"error": details.get("error"), "reason": details.get("reason"),
                               "at": isoformat(event.at)}
        self.updated_at = isoformat(event.at)

    def payload(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "path": self.path, "demand": self.demand,
                "ready": self.ready, "readers": self.readers,
                "streamExpiresAt": self.stream_expires_at, "lastError": self.last_error,
                "updatedAt": self.updated_at}


class _Refused(Module):
    """Stands in for a module that must not be reachable over MQTT, and says why."""

    public_commands = frozenset(COMMANDS)

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self._reason = reason

    def supports(self, command: str) -> bool:
        return True

    async def call(self, command: str, caller: Caller | None, entity: str | None,
                   payload: Any) -> Any:
        raise Forbidden(self._reason)


class MqttBridge:
    """Mirrors the bus and the request API onto an MQTT broker; survives broker outages."""

    def __init__(self, settings: Settings, dispatcher: Dispatcher, auth: Auth, cameras: Cameras,
                 credentials: Credentials, redactor: Redactor,
                 buffer_size: int = BUFFER_SIZE) -> None:
        self.broker = Broker.from_url(settings.mqtt_url)
        if self.broker.password:
            redactor.pin(self.broker.password)
        self.discovery = Discovery(settings.mqtt_base, settings.mqtt_discovery_prefix)
        self.base = settings.mqtt_base
        self.status_topic = f"{self.base}/status"
        self.dropped = 0  # events lost at the buffer bound since start
        self.connected = asyncio.Event()  # set while connected with every subscription in place
        self._auth = auth
        self._cameras = cameras
        self._credentials = credentials
        # The same modules as every other door, except that logging in is refused.
        self._dispatcher = Dispatcher([
            *(module for module in dispatcher.modules.values() if module.name != "auth"),
            _Refused("auth", LOGIN_REFUSED),
        ])
        self._buffer_size = buffer_size
        self._events: collections.deque[tuple[str, bytes]] = collections.deque()
        self._retained: dict[str, bytes] = {}  # topic -> what the broker should keep (b"": clear)
        self._dirty: dict[str, None] = {}  # retained topics still to publish, in order
        self._owned: dict[tuple[str, int], list[str]] = {}  # entity -> its retained topics
        self._camera_states: dict[int, CameraState] = {}
        self._credential_states: dict[int, dict[str, Any]] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(_CONCURRENT_REQUESTS)
        self._requests: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        cameras.on_change(self._camera_changed)
        credentials.on_change(self._credential_changed)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Publish `offline` and disconnect cleanly, so the broker does not send the will."""
        if self._task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(self._task, _STOP_TIMEOUT)
        except TimeoutError:
            logger.warning("MQTT bridge did not stop within %s s", _STOP_TIMEOUT)
        self._task = None

    async def publish(self, event: Event) -> None:
        """Bus subscriber: the event into the outbox, and the retained state it changes."""
        entity = "null" if event.entity is None else str(event.entity)
        self._queue_event(f"{self.base}/events/{event.domain}/{entity}/{event.event}",
                          dumps(event.payload()))
        if event.entity is None:
            return
        if event.domain == "camera":
            await self._camera_event(event.entity, event)
        elif event.domain == "credentials" and event.event in _CREDENTIAL_EVENTS:
            self._credential_event(event.entity, event)

    async def answer(self, body: bytes) -> tuple[str | None, Any]:
        """(requestId or None, reply) for one request message, as the Socket.IO door answers."""
        try:
            if len(body) > MAX_REQUEST:
                raise RequestError(BadRequest(f"Request larger than {MAX_REQUEST} bytes"), None)
            request = parse_request(body, REQUEST_FIELDS)  # first: later errors go to its id
            if _UNROUTABLE.search(request.request_id):
                raise RequestError(Invalid(
                    "requestId must not contain +, # or NUL: it names the reply topic",
                    [field_error("requestId", "not usable in a topic name")]), None)
            raw = json.loads(body)
            try:
                caller = await self._caller(raw.get("token"))
            except SidecarError as exc:
                raise RequestError(exc, request.request_id) from None
        except RequestError as exc:
            return exc.request_id, exc.to_dict()
        return await self._dispatcher.answer(raw, caller, REQUEST_FIELDS)

    async def _caller(self, token: Any) -> Caller | None:
        if token is None:
            return None
        if not isinstance(token, str):
            raise Invalid("token must be a string", [field_error("token", "must be a string")])
        return await self._auth.authenticate(token)

    # -- connection -------------------------------------------------------------------------

    async def _run(self) -> None:
        delay, failing = _BACKOFF_MIN, False
        while not self._stopping.is_set():
            try:
                await self._load()
                async with self._client() as client:
                    logger.info("connected to MQTT broker %s", self.broker)
                    delay, failing = _BACKOFF_MIN, False
                    await self._session(client)
                return
            except aiomqtt.MqttError as exc:
                log = logger.debug if failing else logger.warning
                log("MQTT broker %s unreachable (%s); retrying with backoff", self.broker, exc)
            except Exception:
                logger.exception("MQTT bridge failed; restarting it")
            failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, _BACKOFF_MAX)

    def _client(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            self.broker.host, self.broker.port,
            username=self.broker.username, password=self.broker.password,
            identifier=f"nestmtx-sidecar-{secrets.token_hex(6)}",
            will=aiomqtt.Will(self.status_topic, OFFLINE, qos=1, retain=True),
            tls_context=ssl.create_default_context() if self.broker.tls else None,
            keepalive=30,
        )

    async def _session(self, client: aiomqtt.Client) -> None:
        """One connection: until it breaks (raises) or the bridge stops (returns)."""
        await client.publish(self.status_topic, ONLINE, qos=1, retain=True)
        # A restarted broker may have lost every retained message: send them all again.
        self._dirty = dict.fromkeys(self._retained)
        if self._events or self.dropped:
            logger.info("delivering %d buffered MQTT events (%d dropped at the bound of %d)",
                        len(self._events), self.dropped, self._buffer_size)
        # A shared subscription: with several replicas on one broker, one of them answers.
        await client.subscribe(f"$share/{self.discovery.node}/{self.base}/requests", qos=1)
        # Retained configs and states left from before (a camera deleted while we were away).
        for component in COMPONENTS:
            await client.subscribe(f"{self.discovery.prefix}/{component}/+/config", qos=1)
        await client.subscribe(f"{self.base}/state/+/+", qos=1)
        await client.subscribe(self.status_topic, qos=1)
        self.connected.set()
        tasks = {asyncio.create_task(self._flush(client)),
                 asyncio.create_task(self._receive(client)),
                 asyncio.create_task(self._stopping.wait())}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.connected.clear()
            pending = tasks | self._requests
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()  # the reason the connection ended, if it broke
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drain(client), _DRAIN_ON_STOP)
        await client.publish(self.status_topic, OFFLINE, qos=1, retain=True, timeout=2)

    async def _flush(self, client: aiomqtt.Client) -> None:
        while True:
            await self._drain(client)
            self._wake.clear()  # no await since the outbox was seen empty: nothing slips by
            await self._wake.wait()

    async def _drain(self, client: aiomqtt.Client) -> None:
        """Publish the outbox: events in order first, then changed retained topics."""
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

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if message.topic.matches(f"{self.base}/requests"):
                await self._slots.acquire()
                task = asyncio.create_task(self._reply(client, payload))
                self._requests.add(task)
                task.add_done_callback(self._request_done)
            elif message.topic.value == self.status_topic:
                if payload == OFFLINE.encode():
                    # Another replica's goodbye or will: this one is still here.
                    self._publish_retained(self.status_topic, ONLINE.encode())
            elif message.retain:
                self._sweep(message.topic.value, payload)

    async def _reply(self, client: aiomqtt.Client, body: bytes) -> None:
        request_id, reply = await self.answer(body)
        topic = f"{self.base}/failures" if request_id is None else \
            f"{self.base}/responses/{request_id}"
        try:
            await client.publish(topic, dumps(reply), qos=1)
        except aiomqtt.MqttError as exc:
            logger.warning("could not answer MQTT request %r: %s", request_id, exc)

    def _request_done(self, task: asyncio.Task[None]) -> None:
        self._requests.discard(task)
        self._slots.release()

    def _sweep(self, topic: str, payload: bytes) -> None:
        """A retained message older than this connection: clear it if it is ours and stale."""
        if not payload or topic in self._retained:
            return
        if self.discovery.owns(topic) or topic.startswith(f"{self.base}/state/"):
            logger.info("clearing stale retained MQTT topic %s", topic)
            self._retain(topic, None)

    # -- outbox -----------------------------------------------------------------------------

    def _queue_event(self, topic: str, data: bytes) -> None:
        if len(self._events) >= self._buffer_size:
            self._events.popleft()
            self._count_drop()
        self._events.append((topic, data))
        self._wake.set()

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

    def _retain(self, topic: str, payload: Mapping[str, Any] | None) -> None:
        data = b"" if payload is None else dumps(payload)
        if self._retained.get(topic) != data:
            self._publish_retained(topic, data)

    def _publish_retained(self, topic: str, data: bytes) -> None:
        self._retained[topic] = data
        self._dirty[topic] = None
        self._wake.set()

    def _own(self, key: tuple[str, int], configs: Mapping[str, Mapping[str, Any]],
             state: Mapping[str, Any]) -> None:
        state_topic = self.discovery.state_topic(*key)
        for topic, config in configs.items():
            self._retain(topic, config)
        self._retain(state_topic, state)
        self._owned[key] = [*configs, state_topic]

    def _disown(self, key: tuple[str, int]) -> None:
        for topic in self._owned.pop(key, ()):
            self._retain(topic, None)

    # -- cameras and credentials ------------------------------------------------------------

    async def _load(self) -> None:
        """Align discovery and state with the database: things changed while we were away."""
        every = {"itemsPerPage": -1}
        enabled = {item["id"]: item for item in
                   (await self._cameras.list(None, every))["items"] if item["is_enabled"]}
        for camera_id in set(self._camera_states) - set(enabled):
            self._forget_camera(camera_id)
        for item in enabled.values():
            self._track_camera(item)
        credentials = {item["id"]: item for item in
                       (await self._credentials.list(None, every))["items"]}
        for credential_id in set(self._credential_states) - set(credentials):
            self._forget_credential(credential_id)
        for item in credentials.values():
            self._track_credential(item)

    def _track_camera(self, item: Mapping[str, Any]) -> None:
        state = self._camera_states.get(item["id"])
        if state is None:
            state = self._camera_states[item["id"]] = CameraState(
                item["id"], item["credential_id"], item["name"], item["mtx_path"])
        else:
            state.credential_id, state.name, state.path = \
                item["credential_id"], item["name"], item["mtx_path"]
        self._own(("camera", item["id"]), self.discovery.camera_configs(item), state.payload())

    def _forget_camera(self, camera_id: int) -> None:
        self._camera_states.pop(camera_id, None)
        self._disown(("camera", camera_id))

    def _track_credential(self, item: Mapping[str, Any]) -> None:
        state = self._credential_states[item["id"]] = {
            "id": item["id"], "description": item["description"],
            "authenticated": item["authenticated"], "error": item["auth_error"],
            "updatedAt": item["updated_at"]}
        self._own(("credentials", item["id"]), self.discovery.credential_configs(item), state)

    def _forget_credential(self, credential_id: int) -> None:
        self._credential_states.pop(credential_id, None)
        self._disown(("credentials", credential_id))

    async def _camera_event(self, camera_id: int, event: Event) -> None:
        if camera_id not in self._camera_states and event.details.get("enabled"):
            await self._refresh_camera(camera_id)  # enabled elsewhere (another replica)
        state = self._camera_states.get(camera_id)
        if state is not None:
            state.apply(event)
            self._retain(self.discovery.state_topic("camera", camera_id), state.payload())

    def _credential_event(self, credential_id: int, event: Event) -> None:
        state = self._credential_states.get(credential_id)
        if state is None:
            return
        authenticated = event.event != "unauthenticated"
        state.update(authenticated=authenticated,
                     error=None if authenticated else event.details.get("error"),
                     updatedAt=isoformat(event.at))
        self._retain(self.discovery.state_topic("credentials", credential_id), state)

    async def _refresh_camera(self, camera_id: int) -> None:
        try:
            item = await self._cameras.read(None, camera_id)
        except NotFound:
            item = None
        if item is not None and item["is_enabled"]:
            self._track_camera(item)
        else:
            self._forget_camera(camera_id)

    async def _camera_changed(self, before: CameraRef | None, after: CameraRef | None) -> None:
        ref = after or before
        try:
            if ref is None:
                return
            if after is None or not after.enabled:
                self._forget_camera(ref.id)
            else:
                await self._refresh_camera(ref.id)
        except Exception:
            # MQTT must never fail the change that caused it; the next connect re-syncs.
            logger.exception("MQTT bridge could not follow a camera change")

    async def _credential_changed(self, credential_id: int, change: str) -> None:
        try:
            if change == "deleted":  # its cameras go with it (ON DELETE CASCADE)
                self._forget_credential(credential_id)
                for state in list(self._camera_states.values()):
                    if state.credential_id == credential_id:
                        self._forget_camera(state.id)
            else:
                self._track_credential(await self._credentials.read(None, credential_id))
        except Exception:
            logger.exception("MQTT bridge could not follow a credentials change")

