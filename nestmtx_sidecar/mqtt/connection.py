"""The MQTT transport: one aiomqtt client at a time, reconnecting with backoff, status and will.

It knows nothing of events or requests: a `Session` says what to do on each connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import ssl
from collections.abc import Sequence
from typing import Protocol

import aiomqtt

from ..config import Broker
from .discovery import OFFLINE, ONLINE

logger = logging.getLogger(__name__)

_BACKOFF_MIN, _BACKOFF_MAX = 0.5, 30.0
_DRAIN_ON_STOP = 2.0


class Session(Protocol):
    """What runs over each connection."""

    async def prepare(self) -> None:
        """Before connecting (catch up with what changed while away)."""

    async def serve(self, client: aiomqtt.Client) -> None:
        """While connected: returns never, raises when the connection breaks."""

    async def handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        """One message from the subscriptions."""

    async def drain(self, client: aiomqtt.Client) -> None:
        """On a clean stop, before `offline`: publish what is still waiting."""


class Connection:
    """Keeps a connection to the broker until stopped; `status` is online while it is up."""

    def __init__(self, broker: Broker, status_topic: str, subscriptions: Sequence[str]) -> None:
        self.broker = broker
        self.status_topic = status_topic
        self.connected = asyncio.Event()  # set while connected with every subscription in place
        self._subscriptions = [*subscriptions, status_topic]
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, session: Session) -> None:
        """Connect, serve, and on any failure reconnect with jittered exponential backoff."""
        delay, failing = _BACKOFF_MIN, False
        while not self._stopping.is_set():
            try:
                await session.prepare()
                async with self._client() as client:
                    logger.info("connected to MQTT broker %s", self.broker)
                    delay, failing = _BACKOFF_MIN, False
                    await self._connected(client, session)
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

    async def _connected(self, client: aiomqtt.Client, session: Session) -> None:
        """One connection: until it breaks (raises) or the bridge stops (returns)."""
        await client.publish(self.status_topic, ONLINE, qos=1, retain=True)
        for topic in self._subscriptions:
            await client.subscribe(topic, qos=1)
        self.connected.set()
        tasks = {asyncio.create_task(session.serve(client)),
                 asyncio.create_task(self._receive(client, session)),
                 asyncio.create_task(self._stopping.wait())}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.connected.clear()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # the reason the connection ended, if it broke
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session.drain(client), _DRAIN_ON_STOP)
        await client.publish(self.status_topic, OFFLINE, qos=1, retain=True, timeout=2)

    async def _receive(self, client: aiomqtt.Client, session: Session) -> None:
        async for message in client.messages:
            await session.handle(client, message)
