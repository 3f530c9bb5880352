"""The web console: `/` and its static assets, sent with a strict Content-Security-Policy.

Every asset ships inside the package (no CDN, no build step), so the console works offline.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).parent / "static"
ASSETS_PATH = "/console"
# A Host header that is a plain host[:port]; anything else is left out of the policy.
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


def content_security_policy(host: str, preview_url: str) -> str:
    """Only the sidecar's own scripts, styles and sockets; frames only from MediaMTX's page;
    images also from blob: URLs (event pictures, fetched with the bearer token)."""
    sockets = f" ws://{host} wss://{host}" if _HOST.match(host) else ""
    preview = urlsplit(preview_url) if preview_url else None
    frames = f"{preview.scheme}://{preview.netloc}" if preview and preview.netloc else "'none'"
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
            f"connect-src 'self'{sockets}; frame-src {frames}; frame-ancestors 'none'; "
            "base-uri 'none'; form-action 'self'; object-src 'none'")


class _SecurityHeaders:
    """Adds the console's headers to every response of the wrapped app."""

    def __init__(self, app: ASGIApp, preview_url: str) -> None:
        self._app = app
        self._preview_url = preview_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        host = Request(scope).headers.get("host", "")
        policy = content_security_policy(host, self._preview_url)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *[
                    (name.encode(), value.encode()) for name, value in (
                        ("content-security-policy", policy),
                        ("x-content-type-options", "nosniff"),
                        ("referrer-policy", "no-referrer"),
                        ("x-frame-options", "DENY"),
                        # Revalidated on every load, so an upgrade is never half old files.
                        ("cache-control", "no-cache"))]]
            await send(message)

        await self._app(scope, receive, send_with_headers)


async def _index(scope: Scope, receive: Receive, send: Send) -> None:
    page = FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")
    await page(scope, receive, send)


class Console:
    """Routes for `/` (the page) and `/console/*` (its scripts, styles, vendored client)."""

    def __init__(self, preview_url: str) -> None:
        self._preview_url = preview_url

    @property
    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", _SecurityHeaders(_index, self._preview_url),
                  methods=["GET", "HEAD"]),
            Mount(ASSETS_PATH, _SecurityHeaders(StaticFiles(directory=STATIC),
                                                self._preview_url)),
        ]
