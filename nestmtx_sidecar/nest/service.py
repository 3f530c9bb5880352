"""The Nest side assembled: token keeper, SDM client, device sync, streams, device events."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
from starlette.routing import Route

from ..config import Settings
from ..events import EventBus
from ..modules.auth import Auth
from ..modules.cameras import Cameras
from ..modules.credentials import CALLBACK_PATH, Credentials
from ..security import Redactor, SecretBox
from ..storage.lease import Lease, LocalLease
from ..storage.store import Store
from .devices.events import DeviceEvents
from .devices.media import EventMedia
from .devices.media_routes import MediaRoutes
from .devices.media_store import MediaStore
from .devices.sync import DeviceSync
from .google.consent import ConsentCallback
from .google.oauth import TokenKeeper
from .google.pubsub import PubSubClient
from .google.sdm import SdmClient
from .leadership import Leadership
from .streaming.rtsp import RtspStreams
from .streaming.snapshot import Snapshots
from .streaming.source import NestStreams
from .streaming.webrtc import WebRtcStreams

logger = logging.getLogger(__name__)


# How often the lease holder looks for streams and credentials other replicas added or removed.
ADOPT_SECONDS = 2.0
# An event waits at most this long for its picture (and clip) before it goes out without.
MEDIA_WAIT_SECONDS = 3.0
# Shutdown: how long StopRtspStream calls may take, inside the process's 10 s.
SHUTDOWN_STOP_SECONDS = 3.0


class Nest:
    """Builds the parts from settings and wires them to the bus and the modules' listeners.

    Token refresh, device sync, stream extension and device events are singletons: they run
    on the one replica holding `lease` (always this one on SQLite); each asks `leadership`.
    """

    def __init__(self, settings: Settings, store: Store, box: SecretBox, redactor: Redactor,
                 bus: EventBus, cameras: Cameras, credentials: Credentials,
                 auth: Auth, lease: Lease | None = None) -> None:
        self.http = httpx.AsyncClient(timeout=30.0)
        self.lease = lease or LocalLease("nest")
        self.leadership = Leadership(self.lease)
        self.tokens = TokenKeeper(store, credentials, redactor, bus, settings.google_token_uri,
                                  self.leadership)
        self.sdm = SdmClient(settings.sdm_api_url, self.tokens.access_token, self.http)
        self.sync = DeviceSync(store, self.sdm, self.tokens, cameras,
                               settings.device_sync_interval)
        self.streams = NestStreams(
            bus, RtspStreams(store, box, redactor, bus, self.sdm, cameras,
                             settings.stream_start_timeout, self.leadership),
            WebRtcStreams(bus, self.sdm, settings.mediamtx_rtsp_url,
                          settings.stream_start_timeout))
        self.media = EventMedia(
            MediaStore(settings.data_dir / "media", settings.media_max_mb * 1024 * 1024),
            self.sdm, self.tokens.access_token, self.http, MEDIA_WAIT_SECONDS)
        self.device_events = DeviceEvents(
            store, bus, PubSubClient(settings.pubsub_api_url, self.tokens.access_token,
                                     self.http),
            self.sync, self.tokens, self.media, credentials, self.leadership,
            settings.event_max_age)
        callback = ConsentCallback(self.tokens, credentials, self.http)
        self.routes = [Route(CALLBACK_PATH, callback.endpoint),
                       *MediaRoutes(auth, self.media.store).routes,
                       *Snapshots(auth, cameras, self.streams, settings.mediamtx_rtsp_url).routes]
        bus.subscribe(self.streams.on_event)
        bus.subscribe(self.sync.on_event)
        bus.subscribe(self.device_events.on_event)
        cameras.on_change(self.streams.on_camera_change)
        credentials.on_change(self._credentials_changed)
        self._tasks: list[asyncio.Task[Any]] = []

    async def _credentials_changed(self, credential_id: int, change: str) -> None:
        if change == "deleted":
            await self.streams.on_credential_deleted(credential_id)  # needs the token: first
        await self.tokens.on_credentials_change(credential_id, change)
        await self.device_events.on_credentials_change(credential_id, change)

    async def start(self) -> None:
        await self.media.store.start()
        await self.tokens.start()  # every replica: the stored tokens, for its own SDM calls
        self._tasks.append(asyncio.create_task(self.leadership.run(self._lead,
                                                                   self._step_down)))

    async def _lead(self) -> None:
        """The singletons, while this replica holds the lease."""
        await self.tokens.adopt()  # refreshed here from now on, read afresh from the store
        async with asyncio.TaskGroup() as group:
            group.create_task(self.sync.run_periodically())
            group.create_task(self._adopt_periodically())

    async def _step_down(self) -> None:
        """The lease is lost or given up: hand the singletons over."""
        await self.device_events.stop_all()  # pulls end before another replica's start
        await self.streams.hand_over()  # stop extending; the sessions stay in the store
        await self.tokens.pause()

    async def _adopt_periodically(self) -> None:
        while True:
            await self.streams.resume()
            await self.tokens.adopt()
            await self.device_events.adopt()
            await asyncio.sleep(ADOPT_SECONDS)

    async def stop(self) -> None:
        """Shutdown: end this replica's Nest streams with Google, then hand the lease over."""
        try:
            await asyncio.wait_for(self.streams.rtsp.stop_all("shutting down"),
                                   SHUTDOWN_STOP_SECONDS)
        except TimeoutError:
            logger.warning("stopping Nest streams took longer than %.0f s; left to expire",
                           SHUTDOWN_STOP_SECONDS)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # A peer connection cannot outlive the process, so these stop in full; before the
        # tokens: StopWebRtcStream needs one.
        await self.streams.webrtc.stop_all("shutting down")
        await self.tokens.stop()
        await self.http.aclose()
