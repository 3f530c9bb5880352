"""WebRTC-only Nest cameras: receive with aiortc, remux H.264 + Opus to MediaMTX, no transcoding.

The publisher ties the parts together: Nest sessions (webrtc_peer) whose depacketized access
units and Opus frames arrive undecoded on the loop (webrtc_passthrough), placed on one
timeline (webrtc_forward) and muxed into one RTSP publication over TCP (webrtc_rtsp; Opus can
become AAC there, webrtc_audio). No video encoder or decoder ever runs.

One RTSP publication outlives the Nest sessions that feed it: renewals and recoveries after a
failure swap sessions underneath, so MediaMTX's readers see at worst a frozen picture.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiortc.jitterbuffer import JitterFrame

from ...errors import PublisherError
from ...security import safe_url
from .forward import Forwarder, Stats
from .peer import Answer, Generate, PeerSession
from .rtsp_output import RtspOutput

logger = logging.getLogger(__name__)

# While Nest sends nothing, the last keyframe is repeated this often: MediaMTX closes an RTSP
# publisher that sends nothing for its readTimeout (10 s), and readers would go with it.
HOLD_INTERVAL = 1.0


@dataclass(frozen=True)
class Failure:
    """Why a running publisher stopped delivering; the WebRTC stream lifecycle recovers from it."""

    reason: str  # "connection-failed" | "silence" | "publish-failed" | "regeneration-failed"
    message: str


class WebRtcPublisher:
    """Publishes one WebRTC-only Nest camera to `target_url` (MediaMTX's RTSP path).

    `audio` is the camera's audio mode (see RtspOutput), fixed for the publication's life.

    `start` opens a session and returns once the first keyframe is on its way to MediaMTX;
    `regenerate` swaps in a new Nest session under the same RTSP publication (battery devices
    cannot extend); `wait_failure` resolves when the connection fails or media stops for
    `silence_timeout` seconds, and `recover` then replaces the failed session, again under the
    same publication (meanwhile the last keyframe is repeated: a freeze, not a disconnect);
    `stop` closes every task, socket and port.
    """

    def __init__(self, target_url: str, *, audio: str = "opus", silence_timeout: float = 10.0,
                 start_timeout: float = 20.0, io_timeout: float = 10.0) -> None:
        self.target_url = target_url
        self.stats = Stats()
        self._silence_timeout = silence_timeout
        self._start_timeout = start_timeout
        self._output = RtspOutput(target_url, io_timeout, audio)
        self._forwarder = Forwarder(self._output, self.stats, self._fail)
        self._active: PeerSession | None = None
        self._pending: PeerSession | None = None
        self._opening: list[JitterFrame] | None = None  # video while the publication opens
        self._switched: asyncio.Future[None] | None = None
        self._failure: asyncio.Future[Failure] = asyncio.get_running_loop().create_future()
        self._watchdog: asyncio.Task[None] | None = None
        self._closers: set[asyncio.Task[None]] = set()

    async def start(self, generate: Generate) -> Answer:
        """Open the first Nest session and the RTSP publication."""
        if self._watchdog is not None:
            raise RuntimeError("publisher already started")
        answer = await self._open_session(generate)
        self._watchdog = asyncio.create_task(self._watch())
        return answer

    async def regenerate(self, generate: Generate) -> Answer:
        """Replace the Nest session without closing the RTSP publication.

        The old session keeps feeding MediaMTX until the new one delivers its first keyframe,
        so the path sees no gap beyond Google's own set-up time.
        """
        if self._active is None:
            raise RuntimeError("publisher not started")
        return await self._open_session(generate)

    async def recover(self, generate: Generate) -> Answer:
        """After a failure: a new Nest session under the same RTSP publication.

        The failed session is closed; until the new one's first keyframe, MediaMTX gets the
        last keyframe again every HOLD_INTERVAL, so its readers stay connected and resume.
        """
        if self.stats.started_at is None:
            raise RuntimeError("publisher not started")
        failed, self._active = self._active, None
        if not self._failure.done():
            self._failure.cancel()
        self._failure = asyncio.get_running_loop().create_future()
        if failed is not None:
            self._close_later(failed)
        return await self._open_session(generate)

    async def _open_session(self, generate: Generate) -> Answer:
        session = PeerSession(self._on_frame, self._on_lost)
        self._pending = session
        self._switched = asyncio.get_running_loop().create_future()
        try:
            answer = await session.connect(generate)
            async with asyncio.timeout(self._start_timeout):
                await self._switched
        except TimeoutError:
            await session.close()
            raise PublisherError(
                f"no keyframe from Nest within {self._start_timeout:g} s") from None
        except BaseException:
            await session.close()
            raise
        finally:
            if self._pending is session:
                self._pending = None
        self.stats.sessions += 1
        logger.info("WebRTC session %s publishing to %s", _short(answer.media_session_id),
                    safe_url(self.target_url))
        return answer

    def _on_frame(self, session: PeerSession, kind: str, frame: JitterFrame) -> None:
        if session is self._pending and kind == "video":
            self._switch_to(session, frame.data)
        if session is not self._active or self.stats.started_at is None:
            return  # a retired session's last frames, or audio before the first keyframe
        if kind == "video" and self._opening is not None:
            self._opening.append(frame)
            return
        self._forwarder.forward(session, kind, frame, asyncio.get_running_loop().time())

    def _switch_to(self, session: PeerSession, keyframe: bytes) -> None:
        retired, self._active, self._pending = self._active, session, None
        if self.stats.started_at is not None:
            self._switched_to(retired)
            return
        # The first keyframe opens the publication. Audio posted while FFmpeg connects queues
        # behind the open on the mux thread; video (this keyframe first) waits for the open
        # and is placed in time then, as the stock path did: with the keyframe muxed ahead
        # of audio that came before it, ffmpeg's RTSP reader misplaced the next video frame.
        self.stats.started_at = asyncio.get_running_loop().time()
        self._opening = []
        self._output.open(keyframe).add_done_callback(
            lambda opened: self._opened(opened, retired))

    def _opened(self, opened: asyncio.Future[None], retired: PeerSession | None) -> None:
        exc = PublisherError("stopped") if opened.cancelled() else opened.exception()
        held, self._opening = self._opening or [], None
        if exc is None:
            self._switched_to(retired)
            for frame in held:
                if self._active is not None:
                    self._on_frame(self._active, "video", frame)
            return
        self._active, self.stats.started_at = None, None
        if self._switched is not None and not self._switched.done():
            self._switched.set_exception(PublisherError(
                f"cannot publish to {safe_url(self.target_url)}: {exc}"))

    def _switched_to(self, retired: PeerSession | None) -> None:
        # Silence counts from here.
        self._forwarder.last_media = asyncio.get_running_loop().time()
        if self._switched is not None and not self._switched.done():
            self._switched.set_result(None)
        if retired is not None:
            self._close_later(retired)

    def _close_later(self, session: PeerSession) -> None:
        # Closing waits on aiortc's transports; the frame that triggered it must not wait.
        task = asyncio.create_task(session.close())
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    def _on_lost(self, session: PeerSession, message: str) -> None:
        if session is self._active:
            self._fail("connection-failed", message)

    async def _watch(self) -> None:
        """Until stop: report silence of the active session; hold the picture in any outage."""
        loop = asyncio.get_running_loop()
        forwarder = self._forwarder
        forwarder.last_media = forwarder.last_video = max(forwarder.last_media, loop.time())
        while True:
            await asyncio.sleep(min(self._silence_timeout / 4, HOLD_INTERVAL / 2))
            now = loop.time()
            if self._active is not None and now - forwarder.last_media >= self._silence_timeout:
                self._fail("silence", f"no media from Nest for {now - forwarder.last_media:.1f} s")
            if now - forwarder.last_video >= HOLD_INTERVAL:
                forwarder.hold(now)

    def _fail(self, reason: str, message: str) -> None:
        if not self._failure.done():
            logger.warning("WebRTC publisher for %s: %s", safe_url(self.target_url), message)
            self._failure.set_result(Failure(reason, message))

    async def wait_failure(self) -> Failure:
        """Resolves once, with the first failure seen; the caller then stops or regenerates."""
        return await asyncio.shield(self._failure)

    @property
    def keyframe(self) -> tuple[bytes, bytes] | None:
        """The last keyframe sent to MediaMTX and the SPS/PPS to decode it, once publishing."""
        access_unit = self._output.last_keyframe
        return None if access_unit is None else (access_unit, self._output.parameter_sets)

    @property
    def media_session_id(self) -> str | None:
        return self._active.answer.media_session_id if self._active and self._active.answer \
            else None

    async def stop(self) -> None:
        """Close sessions, the RTSP publication, the watchdog and the muxer thread."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        sessions = [s for s in (self._active, self._pending) if s is not None]
        self._active = self._pending = None
        await asyncio.gather(*(s.close() for s in sessions), *self._closers,
                             return_exceptions=True)
        await self._output.close()
        if not self._failure.done():
            self._failure.cancel()


def _short(media_session_id: str) -> str:
    return media_session_id[:8] + "..." if len(media_session_id) > 8 else media_session_id
