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
import datetime as dt
import logging
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ...errors import (
    GoogleError,
    GoogleFailedPrecondition,
    GoogleUnreachable,
    PublisherError,
    Unavailable,
)
from ...events import EventBus
from ...storage.store import as_utc
from ..google.sdm import COMMAND_PREFIX, SdmClient
from .lifecycle import StreamLifecycle, StreamSession

if TYPE_CHECKING:
    from ..relay.publisher import Answer, Failure, Generate, WebRtcPublisher

logger = logging.getLogger(__name__)

RECOVERY_ATTEMPTS = 3  # new sessions tried after a failure before the publication ends
RECOVERY_BACKOFF = 1.0  # seconds before the second attempt, doubling


def _webrtc() -> ModuleType:
    """The publisher: aiortc and av (~40 MiB resident) load with the first WebRTC stream."""
    from ..relay import publisher

    return publisher


GENERATE_WEBRTC = COMMAND_PREFIX + "GenerateWebRtcStream"
EXTEND_WEBRTC = COMMAND_PREFIX + "ExtendWebRtcStream"
STOP_WEBRTC = COMMAND_PREFIX + "StopWebRtcStream"


@dataclass
class WebRtcSession(StreamSession):
    publisher: WebRtcPublisher | None = None
    media_session_id: str = ""
    extendable: bool = True  # False once Google said FAILED_PRECONDITION (battery devices)
    # Every Nest session Google gave and was not asked to stop yet: also one a regeneration
    # got just as the stream was stopped, or one the publisher could not use.
    granted: set[str] = field(default_factory=set)

    def alive(self) -> bool:
        return self.publisher is not None


class WebRtcStreams(StreamLifecycle[WebRtcSession]):
    """One publisher per WebRTC camera in demand."""

    noun = "WebRTC stream"
    session_type = WebRtcSession

    def __init__(self, bus: EventBus, sdm: SdmClient, rtsp_url: str, start_timeout: float,
                 silence_timeout: float = 10.0) -> None:
        super().__init__(bus, sdm, start_timeout)
        self._rtsp_url = rtsp_url.rstrip("/")
        self._silence_timeout = silence_timeout

    def _source_line(self, session: WebRtcSession) -> str:
        return "wait"  # the hook waits for MediaMTX to stop it

    async def _begin(self, session: WebRtcSession) -> None:
        """Start publishing the camera (once)."""
        if session.publisher is not None:
            return
        try:
            await self._start(session)
        except (GoogleError, PublisherError) as exc:
            self._sessions.pop(session.camera.id, None)
            await self._stop_granted(session)
            raise Unavailable(f"could not start the WebRTC stream of camera "
                              f"{session.camera.name!r}: {exc.message}") from None

    def keyframe(self, camera_id: int) -> tuple[bytes, bytes] | None:
        """The camera's last published keyframe and its SPS/PPS; None when it is not live."""
        session = self._sessions.get(camera_id)
        return session.publisher.keyframe if session and session.publisher else None

    async def _start(self, session: WebRtcSession) -> None:
        publisher = _webrtc().WebRtcPublisher(
            f"{self._rtsp_url}/{session.camera.mtx_path}", audio=session.camera.audio,
            silence_timeout=self._silence_timeout, start_timeout=self._start_timeout)
        try:
            answer = await publisher.start(self._generator(session))
        except BaseException:
            await publisher.stop()
            raise
        session.publisher = publisher
        self._took(session, answer)

    def _generator(self, session: WebRtcSession) -> Generate:
        async def take(results: dict[str, Any]) -> tuple[str, dt.datetime, str]:
            if results.get("mediaSessionId"):
                session.granted.add(str(results["mediaSessionId"]))
            try:
                return (str(results["answerSdp"]), _parse_time(results["expiresAt"]),
                        str(results["mediaSessionId"]))
            except (KeyError, ValueError):
                raise GoogleUnreachable("GenerateWebRtcStream answered without answerSdp, "
                                     "expiresAt or mediaSessionId") from None

        async def generate(offer_sdp: str) -> tuple[str, dt.datetime, str]:
            return await self._command(session, GENERATE_WEBRTC, {"offerSdp": offer_sdp},
                                      self._start_timeout, take)
        return generate

    def _took(self, session: WebRtcSession, answer: Answer) -> None:
        session.media_session_id, session.expires_at = answer.media_session_id, answer.expires_at
        session.lifetime = max(1.0, session.seconds_left())
        logger.info("camera %d (%s): WebRTC session started, expires at %s", session.camera.id,
                    session.camera.name, session.expiry)

    async def _keep_alive(self, session: WebRtcSession) -> None:
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

    async def _renew(self, session: WebRtcSession) -> None:
        if session.extendable:
            try:
                await self._command(session, EXTEND_WEBRTC,
                                   {"mediaSessionId": session.media_session_id},
                                   max(0.1, session.seconds_left()),
                                   lambda results: self._extended(session, results))
                await self._publish(session, "extended", expiresAt=session.expiry)
                return
            except (GoogleError, KeyError, ValueError) as exc:
                # Battery devices never extend: from now on go straight to a new session.
                session.extendable = not isinstance(exc, GoogleFailedPrecondition)
                reason = exc.reason if isinstance(exc, GoogleError) else "bad_answer"
                await self._publish(session, "failed-extension", error=exc.message,
                                    reason=reason, regenerating=True)
        await self._regenerate(session)

    async def _extended(self, session: WebRtcSession, results: dict[str, Any]) -> None:
        session.expires_at = _parse_time(results["expiresAt"])
        renewed = str(results.get("mediaSessionId") or session.media_session_id)
        if renewed != session.media_session_id:
            session.granted.discard(session.media_session_id)
            session.granted.add(renewed)
            session.media_session_id = renewed

    async def _regenerate(self, session: WebRtcSession) -> None:
        """A new Nest session under the same RTSP publication: MediaMTX's path stays up."""
        assert session.publisher is not None
        old = session.media_session_id
        try:
            answer = await session.publisher.regenerate(self._generator(session))
        except (GoogleError, PublisherError) as exc:
            await self._recover(session, _webrtc().Failure("regeneration-failed", exc.message))
            return
        self._took(session, answer)
        await self._stop_at_google(session, old)
        await self._publish(session, "extended", expiresAt=session.expiry, regenerated=True)

    async def _recover(self, session: WebRtcSession, failure: Failure) -> None:
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
        await self._stop_granted(session)
        for attempt in range(RECOVERY_ATTEMPTS):
            if attempt:
                await asyncio.sleep(RECOVERY_BACKOFF * 2 ** (attempt - 1))
            try:
                answer = await publisher.recover(self._generator(session))
            except (GoogleError, PublisherError) as exc:
                logger.error("camera %d (%s): new WebRTC session %d of %d failed: %s",
                             camera.id, camera.name, attempt + 1, RECOVERY_ATTEMPTS,
                             exc.message)
                continue
            self._took(session, answer)
            await self._publish(session, "recovered", reason=failure.reason,
                                outage=round(loop.time() - began, 2), expiresAt=session.expiry)
            return
        await self._give_up(session)

    async def _restart(self, session: WebRtcSession, failure: Failure) -> None:
        """Stop everything and start again; on failure, leave it to the next demand."""
        await self._end(session)
        try:
            await self._start(session)
        except (GoogleError, PublisherError) as exc:
            logger.error("camera %d (%s): could not restart the WebRTC stream: %s",
                         session.camera.id, session.camera.name, exc.message)
            await self._give_up(session)
            return
        await self._publish(session, "recovered", reason=failure.reason,
                            expiresAt=session.expiry, republished=True)

    async def _give_up(self, session: WebRtcSession) -> None:
        """The publication ends; the next demand tries again."""
        logger.error("camera %d (%s): WebRTC stream ended; the next demand will try again",
                     session.camera.id, session.camera.name)
        await self._end(session)  # also the Nest sessions the failed attempts got
        self._sessions.pop(session.camera.id, None)

    async def _stop_granted(self, session: WebRtcSession) -> None:
        for media_session_id in list(session.granted):
            await self._stop_at_google(session, media_session_id)

    async def _stop_at_google(self, session: WebRtcSession, media_session_id: str) -> None:
        session.granted.discard(media_session_id)  # asked once: `_command` sees it through
        await self._stop_command(session, STOP_WEBRTC, {"mediaSessionId": media_session_id})

    async def _end(self, session: WebRtcSession) -> None:
        """The publisher and every Nest session Google gave."""
        publisher, session.publisher = session.publisher, None
        if publisher is not None:
            await publisher.stop()
        await self._stop_granted(session)


def _parse_time(value: Any) -> dt.datetime:
    return as_utc(dt.datetime.fromisoformat(str(value)))
