"""Persistent cameras applied to a running MediaMTX through its control API.

Without `NESTMTX_MEDIAMTX_API_URL`, `nestmtx-sidecar mediamtx-config` has to be re-run after
a camera becomes persistent; with it, the sidecar adds, moves and removes those paths live
(`/v3/config/paths/add|patch|delete/<name>`), so MediaMTX needs no restart.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import httpx

from ..modules.cameras import CameraRef
from .config import persistent_path

logger = logging.getLogger(__name__)


def _persistent(camera: CameraRef | None) -> str | None:
    """The path MediaMTX should stream without readers for this camera, if any."""
    if camera and camera.enabled and camera.persistent and camera.mtx_path:
        return camera.mtx_path
    return None


class MediaMtxPaths:
    def __init__(self, api_url: str, client: httpx.AsyncClient | None = None) -> None:
        self._client = client or httpx.AsyncClient(base_url=api_url.rstrip("/"), timeout=5)

    async def apply(self, paths: list[str]) -> None:
        """At start: make sure every persistent camera's path exists in MediaMTX."""
        for path in paths:
            await self._put(path)

    async def on_camera_change(self, before: CameraRef | None, after: CameraRef | None) -> None:
        old, new = _persistent(before), _persistent(after)
        if old and old != new:
            await self._call("delete", old, ok=(200, 404))
        if new and new != old:
            await self._put(new)

    async def reachable(self) -> str:
        """How the API answers right now, in words for the console's status page."""
        try:
            reply = await self._client.get("/v3/config/global/get")
        except httpx.HTTPError as exc:
            return f"unreachable ({type(exc).__name__})"
        return "ok" if reply.status_code == 200 else f"answered HTTP {reply.status_code}"

    async def close(self) -> None:
        await self._client.aclose()

    async def _put(self, path: str) -> None:
        # add answers 400 when the path is already configured; then patch it into shape.
        if await self._call("add", path, ok=(200, 400)) == 400:
            await self._call("patch", path, ok=(200,))

    async def _call(self, action: str, path: str, ok: tuple[int, ...]) -> int | None:
        url = f"/v3/config/paths/{action}/{quote(path, safe='/')}"
        try:
            if action == "delete":
                reply = await self._client.delete(url)
            else:
                method = self._client.post if action == "add" else self._client.patch
                reply = await method(url, json=persistent_path())
        except httpx.HTTPError as exc:
            logger.warning("MediaMTX API unreachable (%s %s): %s", action, path, exc)
            return None
        if reply.status_code not in ok:
            logger.warning("MediaMTX API refused to %s path %s: HTTP %d %s", action, path,
                           reply.status_code, reply.text[:200])
        elif reply.status_code == 200:
            logger.info("MediaMTX path %s: %s", path, action)
        return reply.status_code
