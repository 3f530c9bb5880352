"""The Nest side assembled: token keeper, SDM client, device sync, stream supervisor."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from starlette.routing import Route

from ..config import Settings
from ..events import EventBus
from ..modules.cameras import Cameras
from ..modules.credentials import CALLBACK_PATH, Credentials
from ..security import Redactor, SecretBox
from ..store import Store
from .oauth import ConsentCallback, TokenKeeper
from .sdm import SdmClient
from .streams import StreamSupervisor
from .sync import DeviceSync
from .webrtc_streams import WebRtcStreams


class Nest:
    """Builds the parts from settings and wires them to the bus and the modules' listeners."""

    def __init__(self, settings: Settings, store: Store, box: SecretBox, redactor: Redactor,
                 bus: EventBus, cameras: Cameras, credentials: Credentials) -> None:
        self.http = httpx.AsyncClient(timeout=30.0)
        self.tokens = TokenKeeper(store, box, redactor, bus, settings.google_token_uri)
        self.sdm = SdmClient(settings.sdm_api_url, self.tokens.access_token, self.http)
        self.sync = DeviceSync(store, self.sdm, self.tokens, cameras,
                               settings.device_sync_interval)
        self.webrtc = WebRtcStreams(bus, self.sdm, settings.mediamtx_rtsp_url,
                                    settings.stream_start_timeout)
        self.streams = StreamSupervisor(store, box, redactor, bus, self.sdm, cameras,
                                        settings.stream_start_timeout, self.webrtc)
        self.routes = [Route(CALLBACK_PATH, ConsentCallback(self.tokens, self.http).endpoint)]
        bus.subscribe(self.streams.on_event)
        bus.subscribe(self.webrtc.on_event)
        bus.subscribe(self.sync.on_event)
        cameras.on_change(self.streams.on_camera_change)
        cameras.on_change(self.webrtc.on_camera_change)
        credentials.on_change(self._credentials_changed)
        self._tasks: list[asyncio.Task[Any]] = []

    async def _credentials_changed(self, credential_id: int, change: str) -> None:
        if change == "deleted":
            await self.streams.on_credential_deleted(credential_id)  # needs the token: first
            await self.webrtc.on_credential_deleted(credential_id)
        await self.tokens.on_credentials_change(credential_id, change)

    async def start(self) -> None:
        await self.tokens.start()
        await self.streams.resume()
        self._tasks.append(asyncio.create_task(self.sync.run_periodically()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.streams.close()
        await self.webrtc.close()  # before the tokens: StopWebRtcStream needs one
        await self.tokens.stop()
        await self.http.aclose()
