"""A fake Google (OAuth consent page + token endpoint + SDM API) on loopback, in the reference's
shapes.

The consent page (`consent_url`) stands in for Partner Connections: it checks the OAuth client
and its authorized redirect URIs, then sends the browser back with a one-time code bound to the
PKCE challenge, or with `error=access_denied` when `deny_consent` is set (the user's Cancel).

Tokens and streams are real state: access tokens expire, streams expire at `expiresAt` and
cannot be extended afterwards, quotas are enforced with 429 RESOURCE_EXHAUSTED. Every call
is recorded in `calls`, so tests assert what Google was asked and how often. Failures are
scripted per endpoint with `fail_next`; `hold` keeps a command's reply back after Google has
acted on it (a reply still on its way). A WebRTC device's sessions are a fake Nest peer's
(`webrtc_peers`): Generate/Extend/Stop go to that peer, so Stop really closes the session and a
battery peer answers FAILED_PRECONDITION to every Extend, as Google does for battery devices.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import datetime as dt
import fractions
import hashlib
import html
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import av
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.fakes.nest_webrtc import FakeNestWebRtc, NestApiError
from tests.services import free_port, serving

SDM_SCOPE = "https://www.googleapis.com/auth/sdm.service"
PUBSUB_SCOPE = "https://www.googleapis.com/auth/pubsub"
PREFIX = "sdm.devices.commands.CameraLiveStream."
STREAM_COMMANDS = {PREFIX + name for name in (
    "GenerateRtspStream", "ExtendRtspStream", "StopRtspStream",
    "GenerateWebRtcStream", "ExtendWebRtcStream", "StopWebRtcStream")}
GENERATE_IMAGE = "sdm.devices.commands.CameraEventImage.GenerateImage"
EVENT_LIFETIME = 30.0  # seconds: an event's image can be generated and fetched this long


def jpeg(width: int = 64, height: int = 48, shade: int = 128) -> bytes:
    """A small real JPEG (one flat frame through libav's MJPEG encoder)."""
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuvj420p"
    codec.time_base = fractions.Fraction(1, 25)
    frame = av.VideoFrame(width, height, "yuvj420p")
    for plane in frame.planes:
        plane.update(bytes([shade]) * plane.buffer_size)
    return b"".join(bytes(packet) for packet in [*codec.encode(frame), *codec.encode(None)])


def google_error(code: int, status: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "status": status}},
                        status_code=code)


def _no_stream() -> JSONResponse:
    """Google's answer to an extension token it does not (or no longer) know."""
    return google_error(400, "FAILED_PRECONDITION", "The stream has expired or does not exist.")


def _invalid_grant(description: str) -> JSONResponse:
    return JSONResponse({"error": "invalid_grant", "error_description": description},
                        status_code=400)


def rate_limited(scope: str) -> JSONResponse:
    return google_error(429, "RESOURCE_EXHAUSTED",
                        f"Rate limited for the ExecuteDeviceCommand API for the {scope}.")


def camera(device_id: str, custom_name: str = "", room: str = "Front door",
           protocols: tuple[str, ...] = ("RTSP",), project: str = "project-1",
           traits: tuple[str, ...] = ()) -> dict[str, Any]:
    """A device of devices.list, as Google sends it; `traits` adds empty ones, such as
    "CameraEventImage" or "CameraClipPreview"."""
    device: dict[str, Any] = {
        "name": f"enterprises/{project}/devices/{device_id}",
        "type": "sdm.devices.types.CAMERA",
        "assignee": f"enterprises/{project}/structures/s1/rooms/r1",
        "traits": {
            "sdm.devices.traits.Info": {"customName": custom_name},
            "sdm.devices.traits.CameraLiveStream": {
                "maxVideoResolution": {"width": 640, "height": 480},
                "videoCodecs": ["H264"], "audioCodecs": ["AAC"],
                "supportedProtocols": list(protocols)},
        },
        "parentRelations": [{"parent": f"enterprises/{project}/structures/s1/rooms/r1",
                             "displayName": room}],
    }
    device["traits"].update({f"sdm.devices.traits.{name}": {} for name in traits})
    return device


@dataclass
class EventImage:
    """An event's picture, as the camera took it."""

    device: str
    data: bytes
    at: float  # monotonic: when the event happened
    token: str = ""  # GenerateImage's Basic token, once generated


@dataclass
class Call:
    at: float  # time.monotonic()
    endpoint: str  # "token", "devices.list" or the short command name
    status: int
    device: str = ""
    grant: str = ""


@dataclass
class Grant:
    """What an authorization code was issued for."""

    redirect_uri: str
    code_challenge: str = ""  # PKCE S256 challenge of the consent request, if it had one
    scope: str = SDM_SCOPE  # what the consent asked for (space-separated)


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _error_page(title: str) -> HTMLResponse:
    """Google's own error page: the browser stays on Google, nothing goes back to the app."""
    return HTMLResponse(f"<!doctype html><title>Error</title><h1>{html.escape(title)}</h1>",
                        status_code=400)


@dataclass
class Hold:
    """A command's reply kept back (`FakeGoogle.hold`): Google has acted, the caller waits."""

    reached: asyncio.Event = field(default_factory=asyncio.Event)  # the command has arrived
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self.released.set()


@dataclass
class Stream:
    device: str
    extension_token: str
    expires_at: float  # monotonic
    stopped: bool = False


@dataclass
class FakeGoogle:
    rtsp_url: str = "rtsp://127.0.0.1:1/live"  # where streamUrls.rtspUrl points (plus ?auth=)
    token_lifetime: int = 3600
    stream_lifetime: float = 300.0
    client_id: str = "fake-client.apps.googleusercontent.com"
    client_secret: str = "GOCSPX-fake-secret-0123456789"
    quota_window: float = 60.0
    commands_per_user: int = 10
    commands_per_device: int = 5
    lists_per_user: int = 5
    devices: dict[str, list[dict[str, Any]]] = field(  # project -> its devices
        default_factory=lambda: {"project-1": []})
    webrtc_peers: dict[str, FakeNestWebRtc] = field(default_factory=dict)  # device id -> peer
    calls: list[Call] = field(default_factory=list)
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # token -> its scopes
    codes: dict[str, Grant] = field(default_factory=dict)  # code -> what it was issued for
    redirect_uris: set[str] = field(default_factory=set)  # the client's authorized ones
    deny_consent: bool = False  # the user clicks Cancel on the consent page
    access_tokens: dict[str, float] = field(default_factory=dict)  # token -> monotonic expiry
    access_scopes: dict[str, str] = field(default_factory=dict)  # token -> its scopes
    streams: dict[str, Stream] = field(default_factory=dict)  # extension token -> stream
    event_images: dict[str, EventImage] = field(default_factory=dict)  # inner eventId -> it
    clips: dict[str, bytes] = field(default_factory=dict)  # clip id -> mp4 of a preview URL
    _failures: dict[str, collections.deque[Any]] = field(
        default_factory=lambda: collections.defaultdict(collections.deque))
    _holds: dict[str, collections.deque[Hold]] = field(
        default_factory=lambda: collections.defaultdict(collections.deque))
    url: str = ""

    # -- scripting -------------------------------------------------------------------------

    def issue_refresh_token(self, scope: str = SDM_SCOPE) -> str:
        token = "1//fake-refresh-" + secrets.token_urlsafe(24)
        self.refresh_tokens[token] = scope
        return token

    def issue_code(self, redirect_uri: str, code_challenge: str = "", scope: str = SDM_SCOPE
                   ) -> str:
        code = "4/fake-code-" + secrets.token_urlsafe(16)
        self.codes[code] = Grant(redirect_uri, code_challenge, scope)
        return code

    def token_scopes(self, authorization: str) -> set[str] | None:
        """The scopes of a live access token in an Authorization header; None: no such token."""
        scheme, _, token = authorization.partition(" ")
        if scheme != "Bearer" or self.access_tokens.get(token, 0) < time.monotonic():
            return None
        return set(self.access_scopes.get(token, "").split())

    def camera_event(self, device_id: str, event_id: str, data: bytes,
                     project: str = "project-1") -> None:
        """The camera saw something now: its picture can be had for EVENT_LIFETIME s."""
        name = f"enterprises/{project}/devices/{device_id}"
        self.event_images[event_id] = EventImage(name, data, time.monotonic())

    def preview_url(self, data: bytes) -> str:
        """A clip preview URL (as in a ClipPreview event) serving `data` to a Bearer token."""
        clip_id = secrets.token_urlsafe(12)
        self.clips[clip_id] = data
        return f"{self.url}/clips/{clip_id}/preview.mp4"

    def fail_next(self, endpoint: str, *failures: Any) -> None:
        """Script answers for the next calls of an endpoint ("token", "devices.list", or a
        short command name): an int HTTP status (5xx in Google's shape, 429), "invalid_grant",
        "FAILED_PRECONDITION", "NOT_FOUND", or ("slow", seconds) to delay a normal answer."""
        self._failures[endpoint].extend(failures)

    def hold(self, endpoint: str) -> Hold:
        """The next call of a command (short name) is carried out and recorded, but its reply
        waits until `release()`."""
        hold = Hold()
        self._holds[endpoint].append(hold)
        return hold

    def heal(self, endpoint: str) -> None:
        """Drop the failures still scripted for an endpoint."""
        self._failures[endpoint].clear()

    def count(self, endpoint: str, status: int | None = None, device: str = "") -> int:
        return sum(1 for c in self.calls if c.endpoint == endpoint and
                   (status is None or c.status == status) and (not device or c.device == device))

    @property
    def token_endpoint(self) -> str:
        return self.url + "/token"

    @property
    def sdm_url(self) -> str:
        return self.url + "/v1"

    @property
    def consent_url(self) -> str:
        """The fake's NESTMTX_GOOGLE_CONSENT_URL."""
        return self.url + "/partnerconnections"

    # -- serving ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serve(self, port: int | None = None) -> AsyncIterator[FakeGoogle]:
        port = port or free_port()
        app = Starlette(routes=[
            Route("/token", self._token, methods=["POST"]),
            Route("/partnerconnections/{project}/auth", self._consent),
            Route("/v1/enterprises/{project}/devices", self._devices_list),
            Route("/v1/enterprises/{project}/devices/{device}:executeCommand", self._execute,
                  methods=["POST"]),
            Route("/images/{event_id:path}", self._image),
            Route("/clips/{clip_id}/preview.mp4", self._clip),
        ])
        self.url = f"http://127.0.0.1:{port}"
        async with serving(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                          lifespan="off")):
            yield self

    async def _scripted(self, endpoint: str) -> Any:
        queue = self._failures.get(endpoint)
        failure = queue.popleft() if queue else None
        if isinstance(failure, tuple) and failure[0] == "slow":
            await asyncio.sleep(failure[1])
            return None
        return failure

    def _record(self, endpoint: str, response: Response, **extra: str) -> Response:
        self.calls.append(Call(time.monotonic(), endpoint, response.status_code, **extra))
        return response

    async def _consent(self, request: Request) -> Response:
        return self._record("consent", self._consent_answer(request))

    def _consent_answer(self, request: Request) -> Response:
        query = request.query_params
        redirect_uri, state = query.get("redirect_uri", ""), query.get("state", "")
        if query.get("client_id") != self.client_id:
            return _error_page("Error 401: invalid_client. The OAuth client was not found.")
        if redirect_uri not in self.redirect_uris:
            return _error_page("Error 400: redirect_uri_mismatch")
        if request.path_params["project"] not in self.devices:
            return _error_page("Error 400: invalid project")
        if query.get("response_type") != "code":
            return _error_page("Error 400: unsupported_response_type")
        challenge, method = query.get("code_challenge", ""), query.get("code_challenge_method")
        if challenge and method != "S256":  # "plain" exists, but nothing here should use it
            return _error_page("Error 400: invalid_request (code_challenge_method)")
        if self.deny_consent:
            answer = {"error": "access_denied", "state": state}
        else:
            scope = query.get("scope", "")
            answer = {"code": self.issue_code(redirect_uri, challenge, scope), "state": state,
                      "scope": scope}
        return RedirectResponse(f"{redirect_uri}?{urlencode(answer)}", status_code=302)

    async def _token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        grant = str(form.get("grant_type", ""))
        return self._record("token", await self._token_answer(form), grant=grant)

    async def _token_answer(self, form: Any) -> Response:
        failure = await self._scripted("token")
        if isinstance(failure, int):
            return JSONResponse({"error": "internal_failure"}, status_code=failure)
        if failure == "invalid_grant" or (
                form.get("grant_type") == "refresh_token" and
                form.get("refresh_token") not in self.refresh_tokens):
            return _invalid_grant("Token has been expired or revoked.")
        if form.get("client_id") != self.client_id or \
                form.get("client_secret") != self.client_secret:
            return JSONResponse({"error": "invalid_client",
                                 "error_description": "The OAuth client was not found."},
                                status_code=401)
        body: dict[str, Any] = {}
        scope = self.refresh_tokens.get(str(form.get("refresh_token")), SDM_SCOPE)
        if form.get("grant_type") == "authorization_code":
            grant = self.codes.pop(str(form.get("code")), None)  # a code works once
            if grant is None or grant.redirect_uri != form.get("redirect_uri"):
                return _invalid_grant("Bad Request")
            verifier = str(form.get("code_verifier", ""))
            if grant.code_challenge and not verifier:
                return _invalid_grant("Missing code verifier.")
            if grant.code_challenge and pkce_challenge(verifier) != grant.code_challenge:
                return _invalid_grant("Invalid code verifier.")
            scope = grant.scope
            body["refresh_token"] = self.issue_refresh_token(scope)
        elif form.get("grant_type") != "refresh_token":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        access = "ya29.fake-" + secrets.token_urlsafe(24)
        self.access_tokens[access] = time.monotonic() + self.token_lifetime
        self.access_scopes[access] = scope
        body.update(access_token=access, expires_in=self.token_lifetime, token_type="Bearer",
                    scope=scope)
        return JSONResponse(body)

    def _unauthorized(self, request: Request) -> Response | None:
        if self.token_scopes(request.headers.get("authorization", "")) is None:
            return google_error(401, "UNAUTHENTICATED",
                                "Request had invalid authentication credentials.")
        return None

    def _over_quota(self, endpoint: str, device: str, limit: int) -> bool:
        since = time.monotonic() - self.quota_window
        used = sum(1 for c in self.calls if c.at > since and c.status != 429 and
                   c.endpoint == endpoint and (not device or c.device == device))
        return used >= limit

    async def _devices_list(self, request: Request) -> Response:
        failure = await self._scripted("devices.list")
        project = request.path_params["project"]
        if (error := self._unauthorized(request)) is not None:
            response: Response = error
        elif isinstance(failure, int):
            response = google_error(failure, "UNAVAILABLE", "The service is unavailable.")
        elif self._over_quota("devices.list", "", self.lists_per_user):
            response = rate_limited("user")
        elif project not in self.devices:
            response = google_error(404, "NOT_FOUND", "Enterprise not found.")
        else:
            response = JSONResponse({"devices": self.devices[project]})
        return self._record("devices.list", response)

    async def _execute(self, request: Request) -> Response:
        project, device_id = request.path_params["project"], request.path_params["device"]
        name = f"enterprises/{project}/devices/{device_id}"
        try:
            body = await request.json()
            command, params = body["command"], body.get("params", {})
        except (ValueError, KeyError, TypeError):
            return self._record("?", google_error(400, "INVALID_ARGUMENT", "Invalid JSON."))
        short = str(command).rsplit(".", 1)[-1]
        response = self._record(short, await self._command(request, name, command, short,
                                                           params), device=name)
        holds = self._holds.get(short)
        if holds:
            hold = holds.popleft()
            hold.reached.set()
            await hold.released.wait()
        return response

    async def _command(self, request: Request, name: str, command: str, short: str,
                       params: dict[str, Any]) -> Response:
        failure = await self._scripted(short)
        if (error := self._unauthorized(request)) is not None:
            return error
        if command not in STREAM_COMMANDS and command != GENERATE_IMAGE:
            return google_error(400, "INVALID_ARGUMENT", f"Command {command} not supported.")
        since = time.monotonic() - self.quota_window
        recent = [c for c in self.calls if c.at > since and c.status != 429 and c.device]
        if len(recent) >= self.commands_per_user:
            return rate_limited("user")
        if sum(1 for c in recent if c.device == name and c.endpoint == short) >= \
                self.commands_per_device:
            return rate_limited("device")
        if isinstance(failure, int):
            if failure == 429:
                return rate_limited("user")
            return google_error(failure, "UNAVAILABLE", "The service is currently unavailable.")
        if failure in ("FAILED_PRECONDITION", "NOT_FOUND"):
            code = 400 if failure == "FAILED_PRECONDITION" else 404
            return google_error(code, failure, f"Scripted {failure} for {short}.")
        if not any(d["name"] == name for ds in self.devices.values() for d in ds):
            return google_error(404, "NOT_FOUND", "Device not found.")
        if short.endswith("WebRtcStream"):
            return await self._webrtc(name, params, short)
        handler = getattr(self, "_" + short, None)
        if handler is None:
            return google_error(400, "INVALID_ARGUMENT", f"Command {command} not supported.")
        return await handler(name, params)

    def _expires_at(self, at: float) -> str:
        moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=at - time.monotonic())
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def _new_stream(self, name: str) -> Stream:
        stream = Stream(name, secrets.token_urlsafe(16),
                        time.monotonic() + self.stream_lifetime)
        self.streams[stream.extension_token] = stream
        return stream

    def _live(self, token: Any, device: str) -> Stream | None:
        """The device's stream behind an extension token, while Google would still know it."""
        stream = self.streams.get(str(token))
        if stream is None or stream.stopped or stream.expires_at <= time.monotonic() \
                or stream.device != device:
            return None
        return stream

    async def _GenerateRtspStream(self, name: str, params: dict[str, Any]) -> Response:
        stream = self._new_stream(name)
        stream_token = secrets.token_urlsafe(16)
        return JSONResponse({"results": {
            "streamUrls": {"rtspUrl": f"{self.rtsp_url}?auth={stream_token}"},
            "streamExtensionToken": stream.extension_token, "streamToken": stream_token,
            "expiresAt": self._expires_at(stream.expires_at)}})

    async def _ExtendRtspStream(self, name: str, params: dict[str, Any]) -> Response:
        old = self._live(params.get("streamExtensionToken"), name)
        if old is None:
            return _no_stream()
        old.stopped = True  # the old extension token is spent
        stream = self._new_stream(name)
        return JSONResponse({"results": {
            "streamExtensionToken": stream.extension_token,
            "streamToken": secrets.token_urlsafe(16),
            "expiresAt": self._expires_at(stream.expires_at)}})

    async def _StopRtspStream(self, name: str, params: dict[str, Any]) -> Response:
        stream = self._live(params.get("streamExtensionToken"), name)
        if stream is None:
            return _no_stream()
        stream.stopped = True
        return JSONResponse({"results": {}})

    async def _GenerateImage(self, name: str, params: dict[str, Any]) -> Response:
        event_id = params.get("eventId")
        if not isinstance(event_id, str) or not event_id:
            return google_error(400, "INVALID_ARGUMENT", "eventId is required.")
        image = self.event_images.get(event_id)
        if image is None or image.device != name:
            return google_error(404, "NOT_FOUND", "Event not found.")
        if time.monotonic() - image.at > EVENT_LIFETIME:
            return google_error(400, "FAILED_PRECONDITION", "The event has expired.")
        image.token = secrets.token_urlsafe(24)
        return JSONResponse({"results": {"url": f"{self.url}/images/{quote(event_id, safe='')}",
                                         "token": image.token}})

    async def _image(self, request: Request) -> Response:
        """The URL GenerateImage gave: the JPEG, to its Basic token, while the event is new."""
        image = self.event_images.get(request.path_params["event_id"])
        failure = await self._scripted("image")
        if image is None or not image.token or \
                request.headers.get("authorization") != f"Basic {image.token}":
            response: Response = google_error(401, "UNAUTHENTICATED",
                                              "Request had invalid authentication credentials.")
        elif isinstance(failure, int):
            response = google_error(failure, "UNAVAILABLE", "The service is unavailable.")
        elif time.monotonic() - image.at > EVENT_LIFETIME:
            response = google_error(404, "NOT_FOUND", "The image has expired.")
        else:
            response = Response(image.data, media_type="image/jpeg")
        return self._record("image", response)

    async def _clip(self, request: Request) -> Response:
        data = self.clips.get(request.path_params["clip_id"])
        if (error := self._unauthorized(request)) is not None:
            response: Response = error
        elif data is None:
            response = google_error(404, "NOT_FOUND", "Clip not found.")
        else:
            response = Response(data, media_type="video/mp4")
        return self._record("clip", response)

    def _peer(self, name: str) -> FakeNestWebRtc:
        peer = self.webrtc_peers.get(name.rsplit("/", 1)[1])
        if peer is None:
            raise NestApiError(400, "FAILED_PRECONDITION", "The device does not stream WebRTC.")
        return peer

    async def _webrtc(self, name: str, params: dict[str, Any], short: str) -> Response:
        """A WebRTC command, answered by the device's fake Nest peer."""
        try:
            peer = self._peer(name)
            if short == "GenerateWebRtcStream":
                offer = params.get("offerSdp")
                if not isinstance(offer, str) or not offer.startswith("v=0"):
                    return google_error(400, "INVALID_ARGUMENT", "offerSdp is required.")
                answer, expires_at, media_session_id = await peer.generate(offer)
                results = {"answerSdp": answer, "mediaSessionId": media_session_id}
            elif short == "ExtendWebRtcStream":
                expires_at, media_session_id = await peer.extend(
                    str(params.get("mediaSessionId")))
                results = {"mediaSessionId": media_session_id}
            else:
                await peer.stop(str(params.get("mediaSessionId")))
                return JSONResponse({"results": {}})
        except NestApiError as exc:
            return JSONResponse(exc.body(), status_code=exc.code)
        results["expiresAt"] = expires_at.isoformat(timespec="milliseconds").replace(
            "+00:00", "Z")
        return JSONResponse({"results": results})
