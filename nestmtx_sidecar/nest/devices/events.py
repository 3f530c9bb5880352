"""Device events: per credential, pull its Pub/Sub subscription and put `camera:motion`,
`camera:person`, `camera:sound` and `camera:chime` on the bus, each SDM event once.

Runs on the Nest lease holder only. Each credential's loop sets up (with gcp_project_id),
then long-polls: pull, parse, emit, acknowledge. Any failure is logged and the loop goes on
after an exponential backoff; a pull never follows another without Google's long poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy as sa
import tenacity

from ...errors import GoogleAuthError, GoogleNotFound
from ...events import Event, EventBus
from ...modules.credential_pubsub import NO_EVENTS_WARNING, pubsub_names
from ...modules.credentials import Credentials
from ...storage.store import Store, credentials_table
from ..google.oauth import TokenKeeper
from ..google.pubsub import PubSubClient
from ..leadership import Leadership
from .media import EventMedia
from .message_handling import DeviceMessages
from .sync import DeviceSync

logger = logging.getLogger(__name__)

REAUTHORIZE = ("Google refused Pub/Sub for this credential ({error}). Re-authorize it "
               "(`credentials update` with {{origin}}): the new consent includes the Pub/Sub "
               "scope, which must also be listed on your OAuth consent screen.")
NO_ACCESS = ("Google refused Pub/Sub for this credential ({error}): the Google account needs "
             "the Pub/Sub Editor role on {where}.")
GONE = ("The subscription {subscription} does not exist ({error}); create it again, or give "
        "gcp_project_id so the sidecar manages it.")
MIN_EMPTY_PULL = 1.0  # seconds: an empty pull that returns sooner waits out the rest

T = TypeVar("T")


@dataclass(frozen=True)
class _Config:
    """What a credential's loop pulls; a change restarts it."""

    credential_id: int
    subscription: str
    topic: str | None  # set: the sidecar manages topic and subscription in gcp_project_id
    project: str | None


@dataclass
class _Loop:
    config: _Config
    task: asyncio.Task[None] | None = None
    set_up_at: float | None = None  # monotonic
    heard: bool = False  # a message arrived since set-up
    error: str | None = None  # as stored in pubsub_error
    failing: bool = False  # the last try of its current step failed: it is backing off


class DeviceEvents:
    def __init__(self, store: Store, bus: EventBus, pubsub: PubSubClient, sync: DeviceSync,
                 keeper: TokenKeeper, media: EventMedia, credentials: Credentials,
                 leadership: Leadership, max_age: float, retry_initial: float = 1.0,
                 retry_max: float = 300.0) -> None:
        self._store = store
        self._credentials = credentials
        self._bus = bus
        self._pubsub = pubsub
        self._sync = sync
        self._keeper = keeper
        self._media = media
        self._messages = DeviceMessages(store, bus, sync, media, max_age)
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._loops: dict[int, _Loop] = {}
        self._adopting = asyncio.Lock()
        self._leadership = leadership  # loops run on the Nest leader only

    # -- which loops run -------------------------------------------------------------------

    async def adopt(self) -> None:
        """Start, restart or stop loops to match the store (changes made on any replica)."""
        if not self._leadership.held:
            return
        async with self._adopting:  # the periodic run and a change's may meet
            await self._adopt()

    async def _adopt(self) -> None:
        async with self._store.begin() as conn:
            rows = (await conn.execute(sa.select(
                credentials_table.c.id, credentials_table.c.dac_project_id,
                credentials_table.c.gcp_project_id, credentials_table.c.pubsub_topic,
                credentials_table.c.pubsub_subscription, credentials_table.c.pubsub_error))).all()
        wanted = {}
        for row in rows:
            topic, subscription = pubsub_names(row)
            if subscription and self._keeper.is_authenticated(row.id):
                wanted[row.id] = (_Config(row.id, subscription, topic if row.gcp_project_id
                                          else None, row.gcp_project_id), row.pubsub_error)
        for credential_id in set(self._loops) - set(wanted):
            await self._stop(credential_id)
        for credential_id, (config, error) in wanted.items():
            loop = self._loops.get(credential_id)
            if loop is None or loop.config != config:
                await self._start(config, error)

    async def on_event(self, event: Event) -> None:
        """Bus subscriber: a new grant (perhaps with the missing scope) starts a loop, or
        restarts one that is backing off, at once."""
        if event.domain == "credentials" and event.event == "authenticated" and event.entity:
            loop = self._loops.get(event.entity)
            if loop is not None and loop.failing:
                async with self._adopting:
                    await self._stop(event.entity)
            await self.adopt()

    async def on_credentials_change(self, credential_id: int, change: str) -> None:
        if change == "deleted":
            await self._stop(credential_id)
        else:
            await self.adopt()

    async def stop_all(self) -> None:
        for credential_id in list(self._loops):
            await self._stop(credential_id)

    async def _start(self, config: _Config, error: str | None) -> None:
        await self._stop(config.credential_id)
        loop = _Loop(config, error=error)
        loop.task = asyncio.create_task(self._run(loop))
        self._loops[config.credential_id] = loop

    async def _stop(self, credential_id: int) -> None:
        loop = self._loops.pop(credential_id, None)
        if loop is not None and loop.task is not None:
            loop.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop.task

    # -- one credential's loop -------------------------------------------------------------

    async def _run(self, loop: _Loop) -> None:
        if loop.config.topic is not None:
            await self._retrying(loop, self._set_up)
        while True:
            await self._retrying(loop, self._cycle)

    async def _retrying(self, loop: _Loop, step: Callable[[_Loop], Awaitable[T]]) -> T:
        """Run a step until it succeeds, backing off exponentially (with jitter) between tries;
        each step that succeeds starts the backoff over."""
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(Exception),
            # Jitter on top of the doubling, never instead of it: no try follows at once.
            wait=tenacity.wait_exponential(multiplier=self.retry_initial, max=self.retry_max)
            + tenacity.wait_random(0, self.retry_initial),
            before_sleep=functools.partial(self._failed, loop),
            stop=tenacity.stop_never, reraise=True)
        async for attempt in retrying:
            with attempt:
                result = await step(loop)
                loop.failing = False
                return result
        raise AssertionError("unreachable: tenacity retries forever")

    async def _failed(self, loop: _Loop, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        config = loop.config
        loop.failing = True
        message = None
        if isinstance(error, GoogleAuthError) and error.http_status == 403:
            template = REAUTHORIZE if error.missing_scope else NO_ACCESS
            where = f"project {config.project}" if config.project else config.subscription
            message = template.format(error=f"{error.http_status} {error.google_status}: "
                                      f"{error.message}", where=where)
        elif isinstance(error, GoogleNotFound) and config.topic is None:
            message = GONE.format(subscription=config.subscription, error=error.message)
        if message is not None:
            try:
                await self._set_error(loop, message)
            except Exception as exc:  # e.g. the database: the loop must go on regardless
                logger.warning("device events for credential %d: cannot store its status: %r",
                               config.credential_id, exc)
        logger.warning("device events for credential %d: %s; retrying (attempt %d)",
                       config.credential_id, message or repr(error), state.attempt_number)

    async def _set_up(self, loop: _Loop) -> None:
        config = loop.config
        assert config.topic is not None
        await self._pubsub.set_up(config.credential_id, config.topic, config.subscription)
        # Google starts publishing to a new subscription after one devices.list.
        await self._sync.sync(config.credential_id)
        await self._ready(loop)
        logger.info("device events for credential %d set up: topic %s, subscription %s. The "
                    "one step left: enter %s as the Pub/Sub topic in the Device Access "
                    "Console", config.credential_id, config.topic, config.subscription,
                    config.topic)

    async def _cycle(self, loop: _Loop) -> None:
        config = loop.config
        started = time.monotonic()
        try:
            received = await self._pubsub.pull(config.credential_id, config.subscription)
        except GoogleNotFound:
            if config.topic is None:
                raise
            logger.warning("device events for credential %d: subscription %s is gone (Pub/Sub "
                           "deletes unused ones after 31 days); setting it up again",
                           config.credential_id, config.subscription)
            # The whole set-up: the topic (or its grant) may have gone with it.
            await self._pubsub.set_up(config.credential_id, config.topic, config.subscription)
            return
        if loop.set_up_at is None:  # a subscription managed elsewhere: ready once it pulls
            await self._ready(loop)
        await self._set_error(loop, None)
        if not received:
            self._warn_if_silent(loop)
            # An empty answer is meant to come after Google's hold; one that comes at once
            # (a proxy, an outage) must not turn the long poll into a busy loop.
            await asyncio.sleep(max(0.0, MIN_EMPTY_PULL - (time.monotonic() - started)))
            return
        acks = [r.ack_id for r in received
                if await self._messages.handle(config.credential_id, r)]
        await self._heard(loop)
        await self._pubsub.acknowledge(config.credential_id, config.subscription, acks)

    # -- status ----------------------------------------------------------------------------

    async def _ready(self, loop: _Loop) -> None:
        """Set up (or first pulled): the no-events warning counts from the first time."""
        await self._credentials.pubsub_ready(loop.config.credential_id)
        loop.set_up_at = time.monotonic()
        await self._set_error(loop, None)

    async def _heard(self, loop: _Loop) -> None:
        loop.heard = True
        await self._credentials.pubsub_heard(loop.config.credential_id)

    def _warn_if_silent(self, loop: _Loop) -> None:
        if loop.heard or loop.set_up_at is None or \
                time.monotonic() - loop.set_up_at < NO_EVENTS_WARNING.total_seconds():
            return
        loop.heard = True  # warned: once per set-up
        logger.warning("device events for credential %d: no event in the %d minutes since "
                       "set-up; is %s entered as the Pub/Sub topic in the Device Access "
                       "Console, with events enabled?", loop.config.credential_id,
                       NO_EVENTS_WARNING.total_seconds() // 60,
                       loop.config.topic or f"the topic of {loop.config.subscription}")

    async def _set_error(self, loop: _Loop, message: str | None) -> None:
        if loop.error != message:
            loop.error = message
            await self._credentials.pubsub_failing(loop.config.credential_id, message)
