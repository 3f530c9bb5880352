"""WebRTC-only Nest cameras under supervision: the sidecar itself publishes them to MediaMTX.

For such a camera the demand hook just waits (`wait`); the sidecar generates the WebRTC
session, publishes it to `<mediamtx_rtsp_url>/<path>`, extends it before each `expiresAt`
(`camera:extended` / `camera:failed-extension`), replaces it with a fresh session where Google
refuses to extend (battery devices: FAILED_PRECONDITION), replaces it under the same RTSP
publication when the connection fails or falls silent (`camera:stalled` / `camera:recovered`:
MediaMTX's readers see a freeze, not a disconnect), and stops it (StopWebRtcStream) when
demand ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..errors import GoogleError, GoogleFailedPrecondition, GoogleUnreachable, Unavailable
from ..events import Event, EventBus, isoformat
from ..hooks.camera_details import camera_details
from ..modules.cameras import CameraRef
from ..store import as_utc, utcnow
from .sdm import COMMAND_PREFIX, SdmClient
from .streams import MARGIN_FRACTION, MARGIN_MAX, STOP_WITHIN

if TYPE_CHECKING:
    from .webrtc import Answer, Failure, Generate, WebRtcPublisher

logger = logging.getLogger(__name__)

RECOVERY_ATTEMPTS = 3  # new sessions tried after a failure before the publication ends
RECOVERY_BACKOFF = 1.0  # seconds before the second attempt, doubling


def _webrtc() -> ModuleType:
    """The publisher: aiortc and av (~40 MiB resident) load with the first WebRTC stream."""
    from . import webrtc

    return webrtc


GENERATE_WEBRTC = COMMAND_PREFIX + "GenerateWebRtcStream"
EXTEND_WEBRTC = COMMAND_PREFIX + "ExtendWebRtcStream"
STOP_WEBRTC = COMMAND_PREFIX + "StopWebRtcStream"


@dataclass
class _Session:
    camera: CameraRef
    publisher: WebRtcPublisher | None = None
    media_session_id: str = ""
    expires_at: dt.datetime = field(default_factory=utcnow)
    lifetime: float = 300.0
    extendable: bool = True  # False once Google said FAILED_PRECONDITION (battery devices)
    task: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def seconds_left(self) -> float:
        return (self.expires_at - utcnow()).total_seconds()

    @property
    def margin(self) -> float:
        return min(MARGIN_MAX, self.lifetime * MARGIN_FRACTION)


class WebRtcStreams:
    """One publisher per WebRTC camera in demand; implements receiver.StreamSource."""

    def __init__(self, bus: EventBus, sdm: SdmClient, rtsp_url: str, start_timeout: float,
                 silence_timeout: float = 10.0) -> None:
        self._bus = bus
        self._sdm = sdm
        self._rtsp_url = rtsp_url.rstrip("/")
        self._start_timeout = start_timeout
        self._silence_timeout = silence_timeout
        self._sessions: dict[int, _Session] = {}

    async def source_for(self, camera: CameraRef) -> str:
        """Start publishing the camera (once); the hook then waits for MediaMTX to stop it."""
        session = self._sessions.setdefault(camera.id, _Session(camera))
        session.camera = camera
        async with session.lock:
            if session.publisher is None:
                try:
                    await self._start(session)
                except (GoogleError, _webrtc().PublisherError) as exc:
                    self._sessions.pop(camera.id, None)
                    raise Unavailable(f"could not start the WebRTC stream of camera "
                                      f"{camera.name!r}: {_message(exc)}") from None
        if session.task is None or session.task.done():
            session.task = asyncio.create_task(self._supervise(session))
        return "wait"

    def keyframe(self, camera_id: int) -> tuple[bytes, bytes] | None:
        """The camera's last published keyframe and its SPS/PPS; None when it is not live."""
        session = self._sessions.get(camera_id)
        return session.publisher.keyframe if session and session.publisher else None

    async def _start(self, session: _Session) -> None:
        publisher = _webrtc().WebRtcPublisher(
            f"{self._rtsp_url}/{session.camera.mtx_path}", audio=session.camera.audio,
            silence_timeout=self._silence_timeout, start_timeout=self._start_timeout)
        try:
            answer = await publisher.start(self._generator(session.camera))
        except BaseException:
            await publisher.stop()
            raise
        session.publisher = publisher
        self._took(session, answer)

    def _generator(self, camera: CameraRef) -> Generate:
        async def generate(offer_sdp: str) -> tuple[str, dt.datetime, str]:
            results = await self._sdm.execute(camera.credential_id, camera.uid, GENERATE_WEBRTC,
                                              {"offerSdp": offer_sdp}, within=self._start_timeout)
            try:
                return (str(results["answerSdp"]), _parse_time(results["expiresAt"]),
                        str(results["mediaSessionId"]))
            except (KeyError, ValueError):
                raise GoogleUnreachable("GenerateWebRtcStream answered without answerSdp, "
                                     "expiresAt or mediaSessionId") from None
        return generate

    def _took(self, session: _Session, answer: Answer) -> None:
        session.media_session_id, session.expires_at = answer.media_session_id, answer.expires_at
        session.lifetime = max(1.0, session.seconds_left())
        logger.info("camera %d (%s): WebRTC session started, expires at %s", session.camera.id,
                    session.camera.name, isoformat(session.expires_at))

    async def _supervise(self, session: _Session) -> None:
        """Renew before each expiry; restart on failure or silence; until demand ends."""
        while session.publisher is not None:
            publisher = session.publisher
            failure = asyncio.ensure_future(publisher.wait_failure())
            try:
                await asyncio.wait_for(asyncio.shield(failure),
                                       max(0.0, session.seconds_left() - session.margin))
            except TimeoutError:
                failure.cancel()
                async with session.lock:
                    await self._renew(session)
                continue
            async with session.lock:
                await self._recover(session, failure.result())

    async def _renew(self, session: _Session) -> None:
        camera = session.camera
        if session.extendable:
            try:
                results = await self._sdm.execute(
                    camera.credential_id, camera.uid, EXTEND_WEBRTC,
                    {"mediaSessionId": session.media_session_id},
                    within=max(0.1, session.seconds_left()))
                session.expires_at = _parse_time(results["expiresAt"])
                session.media_session_id = str(results.get("mediaSessionId")
                                               or session.media_session_id)
                await self._publish(session, "extended", expiresAt=isoformat(session.expires_at))
                return
            except (GoogleError, KeyError, ValueError) as exc:
                # Battery devices never extend: from now on go straight to a new session.
                session.extendable = not isinstance(exc, GoogleFailedPrecondition)
                reason = exc.reason if isinstance(exc, GoogleError) else "bad_answer"
                await self._publish(session, "failed-extension", error=_message(exc),
                                    reason=reason, regenerating=True)
        await self._regenerate(session)

    async def _regenerate(self, session: _Session) -> None:
        """A new Nest session under the same RTSP publication: MediaMTX's path stays up."""
        assert session.publisher is not None
        old = session.media_session_id
        try:
            answer = await session.publisher.regenerate(self._generator(session.camera))
        except (GoogleError, _webrtc().PublisherError) as exc:
            await self._recover(session, _webrtc().Failure("regeneration-failed", _message(exc)))
            return
        self._took(session, answer)
        await self._stop_at_google(session.camera, old)
        await self._publish(session, "extended", expiresAt=isoformat(session.expires_at),
                            regenerated=True)

    async def _recover(self, session: _Session, failure: Failure) -> None:
        """A new Nest session under the same RTSP publication, so MediaMTX's readers stay.

        `camera:stalled {reason, error}` when it starts, `camera:recovered {reason, outage,
        expiresAt}` once the new session's first keyframe is published. A broken RTSP
        publication cannot be kept: that one restarts everything.
        """
        camera, publisher = session.camera, session.publisher
        assert publisher is not None
        logger.warning("camera %d (%s): WebRTC %s (%s); replacing the session", camera.id,
                       camera.name, failure.reason, failure.message)
        await self._publish(session, "stalled", reason=failure.reason, error=failure.message)
        if failure.reason == "publish-failed":
            await self._restart(session, failure)
            return
        loop = asyncio.get_running_loop()
        began = loop.time()
        await self._stop_at_google(camera, session.media_session_id)
        for attempt in range(RECOVERY_ATTEMPTS):
            if attempt:
                await asyncio.sleep(RECOVERY_BACKOFF * 2 ** (attempt - 1))
            try:
                answer = await publisher.recover(self._generator(camera))
            except (GoogleError, _webrtc().PublisherError) as exc:
                logger.error("camera %d (%s): new WebRTC session %d of %d failed: %s",
                             camera.id, camera.name, attempt + 1, RECOVERY_ATTEMPTS,
                             _message(exc))
                continue
            self._took(session, answer)
            await self._publish(session, "recovered", reason=failure.reason,
                                outage=round(loop.time() - began, 2),
                                expiresAt=isoformat(session.expires_at))
            return
        await self._give_up(session)

    async def _restart(self, session: _Session, failure: Failure) -> None:
        """Stop everything and start again; on failure, leave it to the next demand."""
        publisher, session.publisher = session.publisher, None
        if publisher is not None:
            await publisher.stop()
        await self._stop_at_google(session.camera, session.media_session_id)
        try:
            await self._start(session)
        except (GoogleError, _webrtc().PublisherError) as exc:
            logger.error("camera %d (%s): could not restart the WebRTC stream: %s",
                         session.camera.id, session.camera.name, _message(exc))
            await self._give_up(session)
            return
        await self._publish(session, "recovered", reason=failure.reason,
                            expiresAt=isoformat(session.expires_at), republished=True)

    async def _give_up(self, session: _Session) -> None:
        """The publication ends; the next demand tries again."""
        logger.error("camera %d (%s): WebRTC stream ended; the next demand will try again",
                     session.camera.id, session.camera.name)
        publisher, session.publisher = session.publisher, None
        if publisher is not None:
            await publisher.stop()
        self._sessions.pop(session.camera.id, None)

    async def _stop_at_google(self, camera: CameraRef, media_session_id: str) -> None:
        try:
            await self._sdm.execute(camera.credential_id, camera.uid, STOP_WEBRTC,
                                    {"mediaSessionId": media_session_id}, within=STOP_WITHIN)
        except GoogleError as exc:
            logger.warning("camera %d: StopWebRtcStream failed: %s", camera.id, exc.message)

    async def _publish(self, session: _Session, event: str, **extra: Any) -> None:
        await self._bus.publish(Event("camera", event, session.camera.id,
                                      camera_details(session.camera.mtx_path, session.camera,
                                                     **extra)))

    async def stop(self, camera_id: int, why: str) -> None:
        session = self._sessions.pop(camera_id, None)
        if session is None:
            return
        if session.task is not None and session.task is not asyncio.current_task():
            session.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await session.task
        async with session.lock:
            publisher, session.publisher = session.publisher, None
            if publisher is not None:
                await publisher.stop()
                await self._stop_at_google(session.camera, session.media_session_id)
        logger.info("camera %d (%s): WebRTC stream stopped (%s)", camera_id,
                    session.camera.name, why)

    async def on_event(self, event: Event) -> None:
        """Bus subscriber: the end of demand stops the camera's session."""
        if event.domain == "camera" and event.event == "unDemand" and event.entity:
            await self.stop(event.entity, "no more demand")

    async def on_camera_change(self, before: CameraRef | None, after: CameraRef | None) -> None:
        if before is not None and before.id in self._sessions and (
                after is None or not after.enabled):
            await self.stop(before.id, "camera disabled")

    async def on_credential_deleted(self, credential_id: int) -> None:
        for camera_id, session in list(self._sessions.items()):
            if session.camera.credential_id == credential_id:
                await self.stop(camera_id, "credential deleted")

    async def close(self) -> None:
        """Shutdown: a peer connection cannot outlive the process, so stop every session."""
        for camera_id in list(self._sessions):
            await self.stop(camera_id, "shutting down")


def _parse_time(value: Any) -> dt.datetime:
    return as_utc(dt.datetime.fromisoformat(str(value)))


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, GoogleError) else str(exc)
