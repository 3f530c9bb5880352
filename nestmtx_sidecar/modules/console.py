"""`console`: what the web console needs to show that lives in settings (stream URL bases)."""

from __future__ import annotations

from typing import Any

from ..config import Settings
from . import Caller, Module


class ConsoleSettings(Module):
    name = "console"

    def __init__(self, settings: Settings) -> None:
        self._urls = {"rtsp_url": settings.public_rtsp_url,
                      "webrtc_url": settings.public_webrtc_url,
                      "hls_url": settings.public_hls_url,
                      "preview_url": settings.mediamtx_webrtc_url}

    async def list(self, caller: Caller | None, payload: Any) -> dict[str, str]:
        # Bases without a trailing slash; empty ones the console fills from its own host.
        return {key: value.rstrip("/") for key, value in self._urls.items()}
