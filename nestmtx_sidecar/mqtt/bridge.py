"""The MQTT door, assembled: bus events and retained state out, the request API in.

Topics under the base (default `nestmtx`): `status` (online/offline, retained, also the will),
`events/<domain>/<entity|null>/<event>`, `state/<domain>/<id>` (retained), `requests`,
`responses/<requestId>`, `failures`. Everything to publish goes through one ordered outbox, so
a broker outage delays messages instead of losing them or blocking the service.
"""

from __future__ import annotations

import asyncio
import logging

import aiomqtt

from ..config import ConfigError, Settings
from ..events import Event
from ..modules.auth import Auth
from ..modules.cameras import Cameras
from ..modules.credentials import Credentials
from ..modules.dispatch import Dispatcher
from ..security import Redactor
from ..wire import dumps
from .connection import Connection
from .discovery import OFFLINE, ONLINE, Discovery
from .outbox import BUFFER_SIZE, Outbox
from .requests import MqttRequests
from .state import Pictures, StateMirror

logger = logging.getLogger(__name__)

_STOP_TIMEOUT = 5.0


class MqttBridge:
    """Mirrors the bus and the request API onto an MQTT broker; survives broker outages."""

    def __init__(self, settings: Settings, dispatcher: Dispatcher, auth: Auth, cameras: Cameras,
                 credentials: Credentials, redactor: Redactor,
                 buffer_size: int = BUFFER_SIZE, pictures: Pictures | None = None) -> None:
        broker = settings.mqtt_broker
        if broker is None:
            raise ConfigError("NESTMTX_MQTT_URL: not set, so there is no broker to bridge to")
        if broker.password:
            redactor.pin(broker.password)
        base = settings.mqtt_base
        discovery = Discovery(base, settings.mqtt_discovery_prefix)
        self.outbox = Outbox(buffer_size)
        self.state = StateMirror(self.outbox, discovery, cameras, credentials, pictures)
        self.requests = MqttRequests(base, discovery.node, dispatcher, auth)
        self.connection = Connection(broker, f"{base}/status",
                                     [self.requests.subscription, *self.state.sweep_filters])
        self._base = base
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> asyncio.Event:
        """Set while connected with every subscription in place."""
        return self.connection.connected

    @property
    def dropped(self) -> int:
        """Events lost at the outbox bound since start."""
        return self.outbox.dropped

    def start(self) -> None:
        self._task = asyncio.create_task(self.connection.run(self))

    async def stop(self) -> None:
        """Publish `offline` and disconnect cleanly, so the broker does not send the will."""
        if self._task is None:
            return
        self.connection.stop()
        try:
            await asyncio.wait_for(self._task, _STOP_TIMEOUT)
        except TimeoutError:
            logger.warning("MQTT bridge did not stop within %s s", _STOP_TIMEOUT)
        self._task = None

    async def publish(self, event: Event) -> None:
        """Bus subscriber: the event into the outbox, and the retained state it changes."""
        entity = "null" if event.entity is None else str(event.entity)
        self.outbox.event(f"{self._base}/events/{event.domain}/{entity}/{event.event}",
                          dumps(event.payload()))
        await self.state.on_event(event)

    # -- the connection's Session -------------------------------------------------------------

    async def prepare(self) -> None:
        await self.state.load()

    async def serve(self, client: aiomqtt.Client) -> None:
        self.outbox.connected()
        try:
            await self.outbox.flush(client)
        finally:
            await self.requests.cancel()

    async def handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        payload = message.payload if isinstance(message.payload, bytes) else b""
        if message.topic.matches(self.requests.topic):
            await self.requests.handle(client, payload)
        elif message.topic.value == self.connection.status_topic:
            if payload == OFFLINE.encode():
                # Another replica's goodbye or will: this one is still here.
                self.outbox.republish(self.connection.status_topic, ONLINE.encode())
        elif message.retain:
            self.state.sweep(message.topic.value, payload)

    async def drain(self, client: aiomqtt.Client) -> None:
        await self.outbox.drain(client)
