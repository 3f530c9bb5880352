"""SDM API client: devices.list and executeCommand; Google's error answers -> GoogleError.

Google's REST errors have one shape, so the Pub/Sub client (pubsub.py) reads them here too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ...errors import (
    GoogleAlreadyExists,
    GoogleApiError,
    GoogleAuthError,
    GoogleError,
    GoogleFailedPrecondition,
    GoogleInvalidArgument,
    GoogleNotFound,
    GoogleRateLimited,
    GoogleUnreachable,
)
from ...metrics import SDM_CALLS
from .json_body import json_object
from .quota import QuotaLimiter

logger = logging.getLogger(__name__)

COMMAND_PREFIX = "sdm.devices.commands.CameraLiveStream."
GENERATE_RTSP = COMMAND_PREFIX + "GenerateRtspStream"
EXTEND_RTSP = COMMAND_PREFIX + "ExtendRtspStream"
STOP_RTSP = COMMAND_PREFIX + "StopRtspStream"
GENERATE_IMAGE = "sdm.devices.commands.CameraEventImage.GenerateImage"

# After a 429, commands of that credential pause: 1 min, x1.5 per repeat, at most 10 min (HA).
BACKOFF_FIRST, BACKOFF_FACTOR, BACKOFF_MAX = 60.0, 1.5, 600.0

TokenSource = Callable[[int], Awaitable[str]]  # credential id -> a valid access token


_BY_STATUS: dict[str, type[GoogleError]] = {
    "UNAUTHENTICATED": GoogleAuthError, "PERMISSION_DENIED": GoogleAuthError,
    "NOT_FOUND": GoogleNotFound, "INVALID_ARGUMENT": GoogleInvalidArgument,
    "FAILED_PRECONDITION": GoogleFailedPrecondition, "RESOURCE_EXHAUSTED": GoogleRateLimited,
    "ALREADY_EXISTS": GoogleAlreadyExists, "UNAVAILABLE": GoogleUnreachable,
}
_BY_HTTP: dict[int, type[GoogleError]] = {401: GoogleAuthError, 403: GoogleAuthError,
                                          404: GoogleNotFound, 429: GoogleRateLimited}


def error_from_response(response: httpx.Response) -> GoogleError:
    """Google's `{"error": {code, message, status}}` body (or whatever came) -> GoogleError."""
    message, status = f"HTTP {response.status_code}", ""
    error = (json_object(response) or {}).get("error")
    if isinstance(error, dict):
        message = str(error.get("message") or message)[:500]
        status = str(error.get("status") or "")
    kind = _BY_STATUS.get(status) or _BY_HTTP.get(response.status_code)
    if kind is None:
        kind = GoogleUnreachable if response.status_code >= 500 else GoogleApiError
    return kind(message, status, response.status_code)


@dataclass
class _Backoff:
    until: float = 0.0
    delay: float = 0.0


class SdmClient:
    """Talks to SDM for any credential; quotas and 429 pauses are kept per credential."""

    def __init__(self, base_url: str, tokens: TokenSource, http: httpx.AsyncClient,
                 limiter: QuotaLimiter | None = None) -> None:
        self._base = base_url.rstrip("/")
        self._tokens = tokens
        self._http = http
        self.limiter = limiter or QuotaLimiter()
        self._backoff: dict[int, _Backoff] = {}

    async def list_devices(self, credential_id: int, project_id: str,
                           within: float = 30.0) -> list[dict[str, Any]]:
        body = await self._call(credential_id, None, "devices.list", within, "GET",
                                f"/enterprises/{project_id}/devices")
        devices = body.get("devices", [])
        return [d for d in devices if isinstance(d, dict) and isinstance(d.get("name"), str)]

    async def execute(self, credential_id: int, device: str, command: str,
                      params: dict[str, Any], within: float = 30.0) -> dict[str, Any]:
        """Run one device command; `within` (seconds) bounds quota waits and Google's answer."""
        body = await self._call(credential_id, device, command, within, "POST",
                                f"/{device}:executeCommand",
                                {"command": command, "params": params})
        results = body.get("results", {})
        return results if isinstance(results, dict) else {}

    async def generate_image(self, credential_id: int, device: str, event_id: str,
                             within: float) -> tuple[str, str]:
        """(url, token) of an event's picture: GET url with `Authorization: Basic <token>`."""
        results = await self.execute(credential_id, device, GENERATE_IMAGE,
                                     {"eventId": event_id}, within)
        url, token = results.get("url"), results.get("token")
        if not isinstance(url, str) or not isinstance(token, str):
            raise GoogleApiError("GenerateImage answered without url and token")
        return url, token

    async def _call(self, credential_id: int, device: str | None, command: str, within: float,
                    method: str, path: str, payload: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
        deadline = time.monotonic() + within
        backoff = self._backoff.setdefault(credential_id, _Backoff())
        paused = backoff.until - time.monotonic()
        if paused > 0:
            raise GoogleRateLimited(f"Google rate-limited this credential; commands pause for "
                                 f"{paused:.0f} more seconds", "RESOURCE_EXHAUSTED", 429)
        answered = await self.limiter.acquire(credential_id, device, command, deadline)
        token = await self._tokens(credential_id)
        short = command.rsplit(".", 1)[-1] if command.startswith("sdm.") else command
        try:
            response = await self._http.request(
                method, self._base + path, json=payload,
                headers={"Authorization": f"Bearer {token}"},
                timeout=max(0.1, deadline - time.monotonic()))
        except httpx.HTTPError as exc:
            SDM_CALLS.labels(short, "error").inc()
            raise GoogleUnreachable(f"SDM API unreachable ({type(exc).__name__})") from None
        finally:
            answered()
        SDM_CALLS.labels(short, str(response.status_code)).inc()
        if response.status_code == 200:
            backoff.delay = 0.0
            body = json_object(response)
            if body is None:
                raise GoogleUnreachable("SDM API answered with something other than JSON")
            return body
        error = error_from_response(response)
        if isinstance(error, GoogleRateLimited):
            backoff.delay = min(BACKOFF_MAX, backoff.delay * BACKOFF_FACTOR or BACKOFF_FIRST)
            backoff.until = time.monotonic() + backoff.delay
            logger.warning("Google rate-limited %s for credential %d: %s; pausing its commands "
                           "for %.0f s", short, credential_id, error.message, backoff.delay)
        else:
            logger.warning("SDM %s failed for credential %d: %s %s", short, credential_id,
                           error.http_status, error.message)
        raise error
