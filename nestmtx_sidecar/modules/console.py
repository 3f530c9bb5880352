"""`console`: what the web console needs to show that lives in settings (stream URL bases)."""

from __future__ import annotations

from typing import Any

from ..config import Settings
from . import Caller, Contract, Module
from .schema import record


def _base(setting: str, used_for: str) -> dict[str, Any]:
    return {"type": "string", "description": f"`{setting}` without a trailing slash, or empty "
            f"when not set; {used_for}."}


REPLY = record({
    "rtsp_url": _base("NESTMTX_PUBLIC_RTSP_URL", "RTSP URLs are `<it>/<path>`"),
    "webrtc_url": _base("NESTMTX_PUBLIC_WEBRTC_URL", "WebRTC URLs are `<it>/<path>`"),
    "hls_url": _base("NESTMTX_PUBLIC_HLS_URL", "HLS URLs are `<it>/<path>/index.m3u8`"),
    "preview_url": _base("NESTMTX_MEDIAMTX_WEBRTC_URL", "the console previews `<it>/<path>`"),
}, "Where readers reach MediaMTX, as the web console shows it.")


class ConsoleSettings(Module):
    name = "console"
    contract = Contract(replies={"list": REPLY})

    def __init__(self, settings: Settings) -> None:
        self._urls = {"rtsp_url": settings.public_rtsp_url,
                      "webrtc_url": settings.public_webrtc_url,
                      "hls_url": settings.public_hls_url,
                      "preview_url": settings.mediamtx_webrtc_url}

    async def list(self, caller: Caller | None, payload: Any) -> dict[str, str]:
        """The stream URL bases the web console shows (empty: it uses its own host)."""
        return {key: value.rstrip("/") for key, value in self._urls.items()}
