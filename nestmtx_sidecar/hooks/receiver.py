"""`POST /hooks/<hook>`: MediaMTX hook variables in, camera events out on the bus."""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import PlainTextResponse

from ..errors import (
    BadRequest,
    Invalid,
    NotFound,
    SidecarError,
    Unauthorized,
    Unavailable,
    field_error,
)
from ..events import Event, EventBus
from ..metrics import HOOK_CALLS
from ..modules.cameras import DOT_SEGMENTS, CameraRef, Cameras, has_dot_segment
from ..modules.dispatch import parse_json
from ..security import bearer
from ..wire import ApiResponse, read_body
from .camera_details import camera_details
from .idempotency import DeliveredIds

logger = logging.getLogger(__name__)

# MediaMTX hook name (and the older names it still accepts) -> camera event.
HOOKS = {"demand": "demand", "unDemand": "unDemand", "ready": "ready", "notReady": "notReady",
         "read": "read", "unread": "unread", "available": "ready", "unavailable": "notReady"}
MAX_BODY = 64 * 1024
SPOOL_SWEEP_SECONDS = 5.0
_EVENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_VARIABLE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_EXTRA_DETAILS = {
    "ready": {"sourceType": "MTX_SOURCE_TYPE", "sourceId": "MTX_SOURCE_ID"},
    "notReady": {"sourceType": "MTX_SOURCE_TYPE", "sourceId": "MTX_SOURCE_ID"},
    "read": {"readerType": "MTX_READER_TYPE", "readerId": "MTX_READER_ID"},
    "unread": {"readerType": "MTX_READER_TYPE", "readerId": "MTX_READER_ID"},
}


def parse_variables(body: bytes) -> dict[str, str]:
    """The hook body: a JSON object of MediaMTX variables, every value a string."""
    if len(body) > MAX_BODY:
        raise BadRequest(f"Body larger than {MAX_BODY} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        # A path or query in another encoding still names an event worth delivering.
        text = body.decode("utf-8", errors="replace")
    data = parse_json(text)  # deep nesting too: a 400, not a RecursionError
    if not isinstance(data, dict):
        raise Invalid("Body must be a JSON object of MediaMTX variables")
    errors = []
    for key, value in data.items():
        if not _VARIABLE.match(key):
            errors.append(field_error(key[:80], "not a MediaMTX variable name"))
        elif not isinstance(value, str):
            errors.append(field_error(key, "must be a string"))
    if errors:
        raise Invalid("Invalid hook variables", errors)
    if not data.get("MTX_PATH"):
        raise Invalid("MTX_PATH is required", [field_error("MTX_PATH", "required")])
    _refuse_dot_segments(data["MTX_PATH"])
    return data


def _refuse_dot_segments(path: str) -> None:
    if has_dot_segment(path):
        raise Invalid(f"MTX_PATH {DOT_SEGMENTS}", [field_error("MTX_PATH", DOT_SEGMENTS)])


class StreamSource(Protocol):
    """Starts (or joins) the live stream behind a camera for the demand hook."""

    async def source_for(self, camera: CameraRef) -> str:
        """`rtsp <url>` for the hook to exec ffmpeg on, or `wait` when the sidecar publishes."""
        ...


class HookReceiver:
    """Turns hook calls into camera events; the spool replay goes through the same path."""

    def __init__(self, hook_secret: str, cameras: Cameras, bus: EventBus,
                 streams: StreamSource | None = None, redis: Any = None) -> None:
        self._secret = hook_secret.encode()
        self._cameras = cameras
        self._bus = bus
        self._delivered = DeliveredIds(redis)
        self.streams = streams

    async def source_endpoint(self, request: Request) -> PlainTextResponse:
        """`GET /hooks/source/<path>`: what the demand hook should run, as one plain-text line.

        Plain text because the hook is POSIX sh with no JSON parser: the first line is the
        action on success, or the error message to print on failure.
        """
        try:
            self._check_secret(request.headers.get("authorization", ""))
            path = request.path_params["path"]
            _refuse_dot_segments(path)
            camera = await self._cameras.by_path(path)
            if camera is None or not camera.enabled:
                raise NotFound(f"no enabled camera serves path {path!r}")
            if self.streams is None:
                raise Unavailable("Nest streaming is not running in this sidecar")
            line = await self.streams.source_for(camera)
        except SidecarError as exc:
            return PlainTextResponse(exc.message + "\n", status_code=exc.status)
        return PlainTextResponse(line + "\n")

    async def endpoint(self, request: Request) -> ApiResponse:
        hook = request.path_params["hook"]
        try:
            self._check_secret(request.headers.get("authorization", ""))
            if hook not in HOOKS:
                raise NotFound(f"Unknown hook {hook!r}; known: {', '.join(HOOKS)}")
            event_id = _event_id(request.headers.get("idempotency-key"))
            # Refused while it streams in, with the 400 of every other bad hook body.
            variables = parse_variables(await read_body(request, MAX_BODY, too_large=BadRequest))
            event = await self.deliver(hook, variables, event_id=event_id)
        except SidecarError as exc:
            # Unknown names share one label: callers must not grow the metric without bound.
            HOOK_CALLS.labels(hook if hook in HOOKS else "unknown", exc.code).inc()
            return ApiResponse(exc.to_dict(), status_code=exc.status)
        if event is None:
            HOOK_CALLS.labels(hook, "duplicate").inc()
            return ApiResponse({"accepted": True, "duplicate": True}, status_code=202)
        HOOK_CALLS.labels(hook, "accepted").inc()
        return ApiResponse({"accepted": True, "event": event.event, "entity": event.entity},
                           status_code=202)

    def _check_secret(self, header: str) -> None:
        token = bearer(header)
        if token is None or not hmac.compare_digest(token.encode(), self._secret):
            raise Unauthorized("A valid hook secret is required (Authorization: Bearer ...)")

    async def deliver(self, hook: str, variables: Mapping[str, str],
                      at: dt.datetime | None = None, replayed: bool = False,
                      event_id: str | None = None) -> Event | None:
        """Publish the hook's camera event; None when `event_id` was delivered already."""
        if event_id is not None and not await self._delivered.claim(event_id):
            return None
        try:
            return await self._publish(hook, variables, at, replayed)
        except BaseException:
            if event_id is not None:
                await self._delivered.release(event_id)  # let the hook's retry through
            raise

    async def _publish(self, hook: str, variables: Mapping[str, str], at: dt.datetime | None,
                       replayed: bool) -> Event:
        name = HOOKS[hook]
        path = variables["MTX_PATH"]
        camera = await self._cameras.by_path(path)
        extra: dict[str, Any] = {key: variables.get(variable, "")
                                 for key, variable in _EXTRA_DETAILS.get(name, {}).items()}
        if replayed:
            extra["replayed"] = True
        details = camera_details(path, camera, variables.get("MTX_QUERY", ""), **extra)
        event = Event("camera", name, camera.id if camera else None, details,
                      at or dt.datetime.now(dt.UTC))
        await self._bus.publish(event)
        return event

    async def drain_spool(self, spool_dir: Path, delay: float,
                          interval: float = SPOOL_SWEEP_SECONDS) -> None:
        """Replay the spool after `delay`, then sweep it every `interval` until cancelled.

        The delay lets subscribers that lost their socket when the sidecar went down
        reconnect first (Socket.IO clients retry within a few seconds): replaying to nobody
        would lose the events the spool kept. The sweeps catch events spooled during a
        restart, after the first look.
        """
        await asyncio.sleep(delay)
        while True:
            try:
                await self.replay_spool(spool_dir)
            except OSError as exc:
                logger.error("cannot read hook spool %s: %s", spool_dir, exc)
            except Exception:
                # The sweep must outlive anything (a database outage): later events wait on it.
                logger.exception("hook spool replay failed; retrying in %.0f s", interval)
            await asyncio.sleep(interval)

    async def replay_spool(self, spool_dir: Path) -> int:
        """Deliver events the hook script spooled while the sidecar was down, then delete them.

        Spool files are named `<unix-ms>.<seq>.<pid>.<hook>.json` so names sort in firing
        order; each is claimed by an atomic rename first, so it is delivered exactly once
        even when two sidecars share the directory.
        """
        if not spool_dir.is_dir():  # noqa: ASYNC240 (a few small files, start-up path)
            return 0
        delivered = 0
        for file in sorted(spool_dir.glob("*.json"), key=_spool_order):  # noqa: ASYNC240
            claimed = file.with_name(file.name + ".replaying")
            try:
                file.rename(claimed)
            except FileNotFoundError:
                continue  # another sidecar took it
            except OSError as exc:  # a name too long to take the suffix, say
                logger.warning("setting aside unclaimable spool file %s as .bad: %s",
                               file.name, exc)
                _set_aside(file, file.with_suffix(".bad"))
                continue
            try:
                hook, at, variables = _read_spooled(file.name, claimed)
            except (ValueError, ArithmeticError, RecursionError, SidecarError, OSError) as exc:
                # One bad file must not hold up the ones after it: set it aside, go on.
                logger.warning("setting aside unreadable spool file %s as .bad: %s",
                               file.name, exc)
                _set_aside(claimed, file.with_suffix(".bad"))
                continue
            try:
                await self.deliver(hook, variables, at=at, replayed=True,
                                   event_id=file.name.removesuffix(".json"))
            except BaseException:
                _set_aside(claimed, file)  # not the file's fault: the next sweep retries it
                raise
            claimed.unlink()
            delivered += 1
        if delivered:
            logger.info("replayed %d spooled hook events from %s", delivered, spool_dir)
        return delivered


def _read_spooled(name: str, file: Path) -> tuple[str, dt.datetime, dict[str, str]]:
    """(hook, firing time, variables) of a spool file named `<unix-ms>.<seq>.<pid>.<hook>.json`."""
    millis, _seq, _pid, hook = name.removesuffix(".json").split(".", 3)
    at = dt.datetime.fromtimestamp(int(millis) / 1000, dt.UTC)  # Overflow- or ValueError
    if hook not in HOOKS:
        raise ValueError(f"unknown hook {hook!r}")
    return hook, at, parse_variables(file.read_bytes())


def _set_aside(file: Path, target: Path) -> None:
    try:
        file.rename(target)
    except OSError as exc:
        logger.error("cannot rename spool file %s to %s: %s", file.name, target.name, exc)


def _spool_order(file: Path) -> tuple[int, int, str]:
    parts = file.name.split(".")
    try:
        return int(parts[0]), int(parts[1]), file.name
    except (ValueError, IndexError):
        return 0, 0, file.name


def _event_id(header: str | None) -> str | None:
    """The call's Idempotency-Key, if it sent one."""
    if header is None:
        return None
    if not _EVENT_ID.match(header):
        raise BadRequest("Idempotency-Key must be 1 to 128 letters, digits, '.', '_', ':' or '-'")
    return header
