"""What one pulled Pub/Sub message becomes: camera events, each SDM event once, with its
picture and clip; relation updates start a device sync."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from ...events import Event, EventBus
from ...storage.store import Store, cameras_table, utcnow
from ..google.pubsub import Received
from .ledger import EventLedger
from .media import CLIP_PREVIEW, EVENT_IMAGE, EventMedia
from .messages import DeviceEvent, MalformedMessage, parse_message
from .sync import DeviceSync

logger = logging.getLogger(__name__)

LOG_ONCE_MAX = 1000  # distinct "logged once" kinds remembered; beyond that, debug only


class DeviceMessages:
    """Turns messages into events; says which may be acknowledged."""

    def __init__(self, store: Store, bus: EventBus, sync: DeviceSync, media: EventMedia,
                 max_age: float) -> None:
        self._store = store
        self._bus = bus
        self._sync = sync
        self._media = media
        self._max_age = max_age
        self._ledger = EventLedger(store, max_age)
        self._logged: set[str] = set()

    async def handle(self, credential_id: int, received: Received) -> bool:
        """True when the message is done with (emitted, a duplicate, stale or unusable)."""
        try:
            message = parse_message(received.data)
        except MalformedMessage as exc:
            self._once(f"malformed:{exc.kind}", "device events for credential %d: message %s "
                       "is not an SDM event message (%s); acknowledged and dropped",
                       credential_id, received.message_id, exc)
            return True
        try:
            if message.relation is not None:
                logger.info("device events for credential %d: relation update %s; syncing "
                            "devices", credential_id, dict(message.relation))
                self._sync.spawn(credential_id)
            if message.traits is not None:
                logger.debug("device events for credential %d: %s traits changed: %s",
                             credential_id, message.device, sorted(message.traits))
            for key in message.unknown_events:
                self._once(f"unknown:{key}", "device events for credential %d: event type %s "
                           "is not known here; ignored", credential_id, key)
            for event in message.events:
                await self._emit(credential_id, event, message.clips.get(event.session_id or ""))
        except Exception:  # e.g. the database: not acknowledged, so Pub/Sub sends it again
            logger.exception("device events for credential %d: message %s failed; it will "
                             "come again", credential_id, received.message_id)
            return False
        return True

    async def _emit(self, credential_id: int, event: DeviceEvent, preview_url: str | None
                    ) -> None:
        age = (utcnow() - event.at).total_seconds()
        if self._max_age and age > self._max_age:
            logger.info("device events for credential %d: %s event of %s at %s is %.0f s old "
                        "(NESTMTX_EVENT_MAX_AGE %.0f); not emitted", credential_id,
                        event.kind, event.device, event.timestamp, age, self._max_age)
            return
        async with self._store.begin() as conn:
            camera = (await conn.execute(sa.select(cameras_table).where(
                cameras_table.c.credential_id == credential_id,
                cameras_table.c.uid == event.device))).first()
        if camera is None:
            self._once(f"device:{event.device}", "device events for credential %d: %s is not "
                       "a known camera (yet); its events are dropped until a device sync "
                       "finds it", credential_id, event.device)
            return
        if not await self._ledger.claim(f"{event.kind}:{event.event_id}"):
            logger.debug("device events: %s event %s already emitted", event.kind,
                         event.event_id)
            return
        traits = (camera.info or {}).get("traits", [])
        image = clip = None
        if EVENT_IMAGE in traits:
            image = await self._media.image(credential_id, camera.id, event.device,
                                            event.event_id)
        if preview_url and event.session_id and CLIP_PREVIEW in traits:
            clip = await self._media.clip(credential_id, camera.id, event.session_id,
                                          preview_url)
        await self._bus.publish(Event("camera", event.kind, camera.id, {
            "name": camera.name, "path": camera.mtx_path, "enabled": camera.is_enabled,
            "eventId": event.event_id, "eventSessionId": event.session_id,
            "threadState": event.thread_state, "timestamp": event.timestamp,
            "image": image, "clip": clip,
        }, event.at))

    def _once(self, kind: str, message: str, *args: Any) -> None:
        """Log a kind of problem once: a stream of broken messages must not flood the log."""
        if kind in self._logged or len(self._logged) >= LOG_ONCE_MAX:
            logger.debug(message, *args)
            return
        self._logged.add(kind)
        logger.warning(message, *args)
