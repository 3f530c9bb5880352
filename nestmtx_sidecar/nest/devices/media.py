"""An event's picture and clip: fetched from Google at once (its links live 30 s), kept in the
media store, and named by the URLs DESIGN.md pins.

Each fetch is bounded by `within` seconds in all (quota wait, GenerateImage, download): past
it the event goes out with `image: null` (or `clip: null`) rather than late.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import httpx

from ...wire import read_bounded
from ..google.sdm import SdmClient, TokenSource
from .media_store import MediaStore

logger = logging.getLogger(__name__)

EVENT_IMAGE = "sdm.devices.traits.CameraEventImage"
CLIP_PREVIEW = "sdm.devices.traits.CameraClipPreview"
MAX_FILE_BYTES = 20 * 1024 * 1024  # Google's pictures are ~100 KB, its previews ~1 MB

Fetch = Callable[[float], Awaitable[bytes]]  # deadline (monotonic) -> the file's bytes


class MediaTooLarge(Exception):
    pass


def media_url(camera_id: int, kind: str, key: str) -> str:
    """`/api/cameras/<id>/events/<eventId>/image` or `.../<eventSessionId>/clip`."""
    return f"/api/cameras/{camera_id}/events/{quote(key, safe='')}/{kind}"


class EventMedia:
    def __init__(self, store: MediaStore, sdm: SdmClient, tokens: TokenSource,
                 http: httpx.AsyncClient, within: float) -> None:
        self.store = store
        self._sdm = sdm
        self._tokens = tokens
        self._http = http
        self.within = within

    async def image(self, credential_id: int, camera_id: int, device: str,
                    event_id: str) -> str | None:
        """The image URL once the event's JPEG is kept; None if it cannot be had in time."""
        async def fetch(deadline: float) -> bytes:
            url, token = await self._sdm.generate_image(credential_id, device, event_id,
                                                        deadline - time.monotonic())
            return await self._download(url, f"Basic {token}", deadline)
        return await self._keep(camera_id, "image", event_id, fetch)

    async def clip(self, credential_id: int, camera_id: int, session_id: str,
                   preview_url: str) -> str | None:
        """The clip URL once the session's mp4 preview is kept; None if not had in time."""
        async def fetch(deadline: float) -> bytes:
            token = await self._tokens(credential_id)
            return await self._download(preview_url, f"Bearer {token}", deadline)
        return await self._keep(camera_id, "clip", session_id, fetch)

    async def _keep(self, camera_id: int, kind: str, key: str, fetch: Fetch) -> str | None:
        if self.store.find(camera_id, kind, key):  # e.g. a thread update of the same event
            return media_url(camera_id, kind, key)
        try:
            async with asyncio.timeout(self.within):
                data = await fetch(time.monotonic() + self.within)
                kept = await self.store.put(camera_id, kind, key, data)
        except Exception as exc:  # quota, token, Google, disk: the event goes out regardless
            logger.warning("camera %d: the %s of event %s not had within %.1f s: %s",
                           camera_id, kind, key, self.within, _why(exc))
            return None
        return media_url(camera_id, kind, key) if kept else None

    async def _download(self, url: str, authorization: str, deadline: float) -> bytes:
        timeout = max(0.1, deadline - time.monotonic())
        async with self._http.stream("GET", url, headers={"Authorization": authorization},
                                     timeout=timeout) as response:
            response.raise_for_status()
            return await read_bounded(
                response.aiter_bytes(), MAX_FILE_BYTES,
                lambda: MediaTooLarge(f"larger than {MAX_FILE_BYTES} bytes"))


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return str(exc) or type(exc).__name__
