"""Device sync: SDM's devices.list -> the cameras module; gone devices are marked, not deleted."""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

import sqlalchemy as sa

from ...errors import GoogleError
from ...events import Event
from ...modules.cameras import Cameras
from ...storage.store import Store, credentials_table
from ..google.oauth import TokenKeeper
from ..google.sdm import SdmClient

logger = logging.getLogger(__name__)

_INFO = "sdm.devices.traits.Info"
_LIVE_STREAM = "sdm.devices.traits.CameraLiveStream"


def camera_values(device: dict[str, Any]) -> dict[str, Any]:
    """The columns a device's JSON sets: name, room, type, protocols, resolution, codecs."""
    traits = device.get("traits") or {}
    relations = device.get("parentRelations") or [{}]
    room = str((relations[0] or {}).get("displayName") or "")
    name = str((traits.get(_INFO) or {}).get("customName") or room or device["name"])
    live = traits.get(_LIVE_STREAM) or {}
    info = {"resolution": live.get("maxVideoResolution"),
            "videoCodecs": list(live.get("videoCodecs") or []),
            "audioCodecs": list(live.get("audioCodecs") or []),
            "traits": sorted(str(t) for t in traits)}  # which events and media it has
    return {"name": name[:255], "room": room[:255], "type": str(device.get("type") or ""),
            "protocols": [str(p) for p in live.get("supportedProtocols") or []], "info": info}


class DeviceSync:
    """Runs devices.list for a credential after it authenticates and every `interval` s."""

    def __init__(self, store: Store, sdm: SdmClient, keeper: TokenKeeper, cameras: Cameras,
                 interval: float) -> None:
        self._store = store
        self._sdm = sdm
        self._keeper = keeper
        self._cameras = cameras
        self._interval = interval
        self._running: dict[int, asyncio.Task[Any]] = {}
        self._locks: collections.defaultdict[int, asyncio.Lock] = collections.defaultdict(
            asyncio.Lock)

    async def on_event(self, event: Event) -> None:
        """Bus subscriber: a newly authenticated credential gets its cameras at once."""
        if event.domain == "credentials" and event.event == "authenticated" and event.entity:
            self.spawn(event.entity)

    def spawn(self, credential_id: int) -> None:
        if credential_id not in self._running:
            task: asyncio.Task[Any] = asyncio.create_task(self.sync(credential_id))
            self._running[credential_id] = task
            task.add_done_callback(lambda _: self._running.pop(credential_id, None))

    async def run_periodically(self) -> None:
        while True:
            async with self._store.begin() as conn:
                ids = (await conn.execute(sa.select(credentials_table.c.id))).scalars().all()
            for credential_id in ids:
                if self._keeper.is_authenticated(credential_id):
                    self.spawn(credential_id)
            await asyncio.sleep(self._interval or 3600)

    async def sync(self, credential_id: int) -> int:
        """Upsert the credential's cameras; returns how many devices Google listed (-1: failed)."""
        async with self._locks[credential_id]:  # the periodic and the post-auth run may meet
            return await self._sync(credential_id)

    async def _sync(self, credential_id: int) -> int:
        async with self._store.begin() as conn:
            project = (await conn.execute(sa.select(credentials_table.c.dac_project_id).where(
                credentials_table.c.id == credential_id))).scalar_one_or_none()
        if project is None:
            return -1
        try:
            devices = await self._sdm.list_devices(credential_id, project)
        except GoogleError as exc:
            logger.warning("device sync for credential %d failed: %s", credential_id, exc)
            return -1
        gone = await self._cameras.sync_devices(
            credential_id, {device["name"]: camera_values(device) for device in devices})
        for camera in gone:
            logger.warning("camera %d (%s) is no longer listed by Google; marked missing",
                           camera.id, camera.name)
        logger.info("device sync for credential %d: %d devices", credential_id, len(devices))
        return len(devices)
