"""WebRTC-only Nest cameras: receive with aiortc, remux H.264 + Opus to MediaMTX, no transcoding.

The publisher offers what Google requires (recvonly audio, recvonly H.264-only video, a data
channel, in that order, every candidate inline, no STUN/TURN), repairs Google's answer, and
hands aiortc's depacketized access units straight to an FFmpeg RTSP muxer over TCP. aiortc's
jitter buffer, NACK and RTX keep working; its decoder is swapped for a pass-through, and the
video stream is built from a template, so no video encoder or decoder ever runs (only the
`aac` audio mode decodes and encodes audio).

One RTSP publication outlives the Nest sessions that feed it: renewals and recoveries after a
failure swap sessions underneath, so MediaMTX's readers see at worst a frozen picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import io
import itertools
import logging
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

import aiortc.rtcrtpreceiver
import av
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.codecs import get_decoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from ..security import safe_url

logger = logging.getLogger(__name__)

VIDEO_RATE = 90000
AUDIO_RATE = 48000
# Codecs offered: everything else would need a decoder and an encoder.
_VIDEO_MIMES = ("video/H264", "video/rtx")
_AUDIO_MIMES = ("audio/opus",)
_NAL_IDR, _NAL_SPS, _NAL_PPS = 5, 7, 8
_START_CODE = re.compile(b"\x00\x00\x01")
_PLI_INTERVAL = VIDEO_RATE  # while waiting for a keyframe, ask at most once a second
# While Nest sends nothing, the last keyframe is repeated this often: MediaMTX closes an RTSP
# publisher that sends nothing for its readTimeout (10 s), and readers would go with it.
HOLD_INTERVAL = 1.0
# Frames queued for the mux thread beyond which the RTSP target counts as stuck (~10 s of
# 30 fps video and 50 fps audio): the queue stays bounded.
MAX_BACKLOG = 800


class Answer(NamedTuple):
    """What `GenerateWebRtcStream` returns."""

    answer_sdp: str
    expires_at: dt.datetime
    media_session_id: str


Generate = Callable[[str], Awaitable[tuple[str, dt.datetime, str]]]


@dataclass(frozen=True)
class Failure:
    """Why a running publisher stopped delivering; the supervisor recovers from it."""

    reason: str  # "connection-failed" | "silence" | "publish-failed" | "regeneration-failed"
    message: str


class PublisherError(Exception):
    """A session could not be established (bad answer, no keyframe, RTSP target refused)."""


# -- Google's answer --------------------------------------------------------------------------

def repair_answer(sdp: str) -> str:
    """Make Google's answer acceptable to aiortc.

    Google sends candidates without a foundation (`a=candidate: 1 udp ...`), which aiortc's
    parser rejects, and `a=sendrecv` for media the offer asked to receive only.
    """
    foundations = itertools.count(1)
    lines = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate: "):
            line = f"a=candidate:{next(foundations)}{line[len('a=candidate:'):]}"
        elif line == "a=sendrecv":
            line = "a=sendonly"
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


# -- aiortc without decoding ------------------------------------------------------------------

class KeyframeNeeded(av.FFmpegError):
    """Raised from the pass-through decoder: aiortc answers it with a PLI (keyframe request)."""


def nal_types(access_unit: bytes) -> list[int]:
    """NAL unit types of an Annex-B access unit, in order."""
    return [access_unit[m.end()] & 0x1F for m in _START_CODE.finditer(access_unit)
            if m.end() < len(access_unit)]


class PassThroughDecoder:
    """Stands in for aiortc's decoder: hands the encoded frame on untouched.

    Video is held back until the first IDR access unit, so every session starts decodable;
    until then each (rate-limited) refusal makes aiortc send a PLI.
    """

    def __init__(self, kind: str) -> None:
        self._waiting = kind == "video"
        self._last_request: int | None = None

    def decode(self, encoded_frame: JitterFrame) -> list[JitterFrame]:
        if self._waiting:
            if _NAL_IDR not in nal_types(encoded_frame.data):
                now = encoded_frame.timestamp
                if self._last_request is None or now - self._last_request >= _PLI_INTERVAL:
                    self._last_request = now
                    raise KeyframeNeeded(errno.EAGAIN, "waiting for an IDR picture")
                return []
            self._waiting = False
        return [encoded_frame]


def _pass_through_or_decoder(codec: RTCRtpCodecParameters) -> Any:
    if codec.mimeType.lower() in ("video/h264", "audio/opus"):
        return PassThroughDecoder(codec.mimeType.split("/")[0].lower())
    return get_decoder(codec)


def install_pass_through() -> None:
    """Swap aiortc's decoder lookup for H.264 and Opus, process-wide.

    aiortc has no switch to skip decoding; its receiver thread looks the decoder up through the
    module-level `get_decoder`. The sidecar only receives media to republish it, so every
    aiortc receiver in this process wants the pass-through.
    """
    aiortc.rtcrtpreceiver.get_decoder = _pass_through_or_decoder  # type: ignore[attr-defined]


# -- RTSP output ------------------------------------------------------------------------------

class RtspOutput:
    """One RTSP publication (ANNOUNCE/RECORD over TCP) fed with encoded packets.

    `audio` is what the publication carries: `opus` (the camera's frames untouched), `aac`
    (Opus decoded and encoded to AAC-LC, for consumers that cannot play Opus) or `none`.
    FFmpeg's socket calls (and the AAC transcode) block, so they run on one private thread, in
    order, off the loop. Frames are handed over with `post`, without waiting for the thread:
    the profile showed each awaited hand-over (two loop wake-ups per frame) costing more
    than the muxing itself.
    """

    def __init__(self, url: str, io_timeout: float, audio: str = "opus") -> None:
        if audio not in ("opus", "aac", "none"):
            raise ValueError(f"unknown audio mode {audio!r}")
        self.url = url
        self.audio = audio
        self._io_timeout = io_timeout
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="nest-webrtc-mux")
        self._container: av.container.OutputContainer | None = None
        self._streams: dict[str, av.stream.Stream] = {}
        self._opus: av.audio.codeccontext.AudioCodecContext | None = None
        self.last_keyframe: bytes | None = None  # what a freeze shows; set on the mux thread
        self.parameter_sets = b""  # the first keyframe's SPS/PPS, for a later one without them
        self._posted = 0  # written by the loop's thread only
        self._muxed = 0  # written by the mux thread only
        self._on_error: Callable[[BaseException], None] | None = None
        self._time_bases = {"video": Fraction(1, VIDEO_RATE), "audio": Fraction(1, AUDIO_RATE)}

    def carries(self, kind: str) -> bool:
        """Whether frames of this kind go into the publication (not with audio `none`)."""
        return kind == "video" or self.audio != "none"

    async def open(self, keyframe: bytes) -> None:
        await self._run(self._open, keyframe)

    def _open(self, keyframe: bytes) -> None:
        # A template demuxed from the keyframe carries SPS/PPS as extradata and the picture
        # size, and its stream has no encoder: start_encoding opens nothing.
        with av.open(io.BytesIO(keyframe), format="h264") as probe:
            self.parameter_sets = bytes(probe.streams.video[0].codec_context.extradata or b"")
            container = av.open(self.url, "w", format="rtsp", options={
                "rtsp_transport": "tcp", "timeout": str(int(self._io_timeout * 1e6))})
            try:
                self._streams = {"video": container.add_stream_from_template(
                    probe.streams.video[0])}
                if self.audio == "opus":
                    self._streams["audio"] = container.add_mux_stream("opus", rate=AUDIO_RATE)
                elif self.audio == "aac":
                    self._streams["audio"] = container.add_stream(
                        "aac", rate=AUDIO_RATE, layout="stereo")
                    self._opus = _opus_decoder()
                container.start_encoding()
            except BaseException:
                container.close()
                raise
        self._container = container

    @property
    def backlog(self) -> int:
        """Frames posted and not yet muxed."""
        return self._posted - self._muxed

    def post(self, kind: str, data: bytes, pts: int,
             on_error: Callable[[BaseException], None]) -> None:
        """Queue a frame for the mux thread; `on_error` is called on the loop if it fails."""
        self._on_error = on_error
        self._posted += 1
        self._executor.submit(self._write_reporting, asyncio.get_running_loop(), kind, data,
                              pts)

    def _write_reporting(self, loop: asyncio.AbstractEventLoop, kind: str, data: bytes,
                         pts: int) -> None:
        try:
            self._write(kind, data, pts)
        except (av.FFmpegError, OSError) as exc:
            if self._on_error is not None:
                loop.call_soon_threadsafe(self._on_error, exc)
        finally:
            self._muxed += 1

    def _write(self, kind: str, data: bytes, pts: int) -> None:
        if self._container is None:
            return  # the open failed; the publisher reports that
        if kind == "audio" and self._opus is not None:
            self._transcode(data, pts)
            return
        packet = av.Packet(data)
        packet.stream = self._streams[kind]
        packet.time_base = self._time_bases[kind]
        packet.pts = packet.dts = pts
        if kind == "video" and _NAL_IDR in nal_types(data):
            packet.is_keyframe = True
            self.last_keyframe = data
        self._container.mux_one(packet)

    def _transcode(self, data: bytes, pts: int) -> None:
        assert self._opus is not None and self._container is not None
        try:
            frames = self._opus.decode(av.Packet(data))
        except av.error.InvalidDataError:
            return  # a damaged Opus frame is a moment of silence, not a broken publication
        stream = self._streams["audio"]
        for frame in frames:
            # The encoder's own FIFO regroups 960-sample Opus frames into 1024-sample AAC ones
            # and follows a jump in pts (a new session) with a jump of its own.
            frame.pts, frame.time_base = pts, self._time_bases["audio"]
            pts += frame.samples
            for packet in stream.encode(frame):
                self._container.mux_one(packet)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._run(self._close)
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            container.close()

    async def _run(self, function: Callable[..., None], *args: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)


def _opus_decoder() -> av.audio.codeccontext.AudioCodecContext:
    # Nest sends 48 kHz stereo Opus; the SDP says so, no OpusHead arrives in-band.
    decoder = av.CodecContext.create("opus", "r")
    decoder.sample_rate = AUDIO_RATE
    decoder.layout = "stereo"
    return decoder


class _Timeline:
    """Output timestamps for one track: monotonic across sessions, anchored to wall time.

    Each WebRTC session's clock starts anywhere; its first frame is placed at the time elapsed
    since the output opened (and at least one frame interval after the last one), so audio
    and video stay together and a new session continues where the last one ended.
    """

    def __init__(self, rate: int, step: int) -> None:
        self._rate = rate
        self._step = step  # the last frame interval seen
        self._session: object | None = None
        self._offset = 0
        self._last: int | None = None

    def pts(self, session: object, timestamp: int, elapsed: float) -> int:
        if session is not self._session:
            self._session = session
            follow = -1 if self._last is None else self._last + self._step
            self._offset = max(round(elapsed * self._rate), follow) - timestamp
        pts = timestamp + self._offset
        if self._last is not None:
            if pts <= self._last:
                pts = self._last + 1  # a muxer refuses time going backwards
            else:
                self._step = pts - self._last
        self._last = pts
        return pts

    def hold(self, elapsed: float) -> int:
        """A repeated frame during an outage: at wall time, after the last one.

        The next real frame is placed afresh (its session's clock may have moved on, or it is
        a new session), without taking the outage for a frame interval.
        """
        self._session = None
        pts = max(round(elapsed * self._rate), -1 if self._last is None else self._last + 1)
        self._last = pts
        return pts


# -- One peer connection ----------------------------------------------------------------------

class _PeerSession:
    """One Nest media session: a peer connection and the tasks reading its two tracks."""

    def __init__(self, on_frame: Callable[[_PeerSession, str, JitterFrame], Awaitable[None]],
                 on_lost: Callable[[_PeerSession, str], None]) -> None:
        self.answer: Answer | None = None
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._readers: list[asyncio.Task[None]] = []
        self._closing = False
        self._pc.on("track", self._start_reader)
        self._pc.on("connectionstatechange", self._state_changed)

    async def connect(self, generate: Generate) -> Answer:
        offer = await self._offer()
        answer = Answer(*await generate(offer))
        try:
            await self._pc.setRemoteDescription(
                RTCSessionDescription(repair_answer(answer.answer_sdp), "answer"))
        except ValueError as exc:
            raise PublisherError(f"Nest's SDP answer is unusable: {exc}") from None
        self.answer = answer
        return answer

    async def _offer(self) -> str:
        audio = self._pc.addTransceiver("audio", direction="recvonly")
        video = self._pc.addTransceiver("video", direction="recvonly")
        audio.setCodecPreferences(_codecs("audio", _AUDIO_MIMES))
        video.setCodecPreferences(_codecs("video", _VIDEO_MIMES))
        # Google rejects an offer without a data channel after audio and video.
        self._pc.createDataChannel("dataSendChannel")
        # aiortc gathers every candidate before setLocalDescription returns: all inline.
        await self._pc.setLocalDescription(await self._pc.createOffer())
        return self._pc.localDescription.sdp

    def _start_reader(self, track: MediaStreamTrack) -> None:
        self._readers.append(asyncio.create_task(self._read(track)))

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            await self._on_frame(self, track.kind, frame)

    def _state_changed(self) -> None:
        state = self._pc.connectionState
        if state in ("failed", "closed") and not self._closing:
            self._on_lost(self, f"WebRTC connection {state}")

    async def close(self) -> None:
        self._closing = True
        await self._pc.close()
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        self._readers.clear()


def _codecs(kind: str, mimes: tuple[str, ...]) -> list[Any]:
    return [c for c in RTCRtpReceiver.getCapabilities(kind).codecs if c.mimeType in mimes]


# -- The publisher ----------------------------------------------------------------------------

@dataclass
class Stats:
    video_frames: int = 0
    audio_frames: int = 0
    bytes_in: int = 0
    sessions: int = 0
    started_at: float | None = None


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
        install_pass_through()
        self.target_url = target_url
        self.stats = Stats()
        self._silence_timeout = silence_timeout
        self._start_timeout = start_timeout
        self._output = RtspOutput(target_url, io_timeout, audio)
        self._timelines = {"video": _Timeline(VIDEO_RATE, VIDEO_RATE // 30),
                           "audio": _Timeline(AUDIO_RATE, AUDIO_RATE // 50)}
        self._active: _PeerSession | None = None
        self._pending: _PeerSession | None = None
        self._switched: asyncio.Future[None] | None = None
        self._failure: asyncio.Future[Failure] = asyncio.get_running_loop().create_future()
        self._last_media = 0.0
        self._last_video = 0.0
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
        session = _PeerSession(self._on_frame, self._on_lost)
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

    async def _on_frame(self, session: _PeerSession, kind: str, frame: JitterFrame) -> None:
        if session is self._pending and kind == "video":
            await self._switch_to(session, frame.data)
        if session is not self._active or self.stats.started_at is None:
            return  # a retired session's last frames, or audio before the first keyframe
        loop = asyncio.get_running_loop()
        self._last_media = loop.time()
        if kind == "video":
            self._last_video = self._last_media
            self.stats.video_frames += 1
        else:
            self.stats.audio_frames += 1
        self.stats.bytes_in += len(frame.data)
        if not self._output.carries(kind):
            return
        elapsed = loop.time() - self.stats.started_at
        self._write(kind, frame.data, self._timelines[kind].pts(
            session, frame.timestamp, elapsed))

    def _write(self, kind: str, data: bytes, pts: int) -> None:
        if self._output.backlog >= MAX_BACKLOG:
            self._fail("publish-failed", f"RTSP publication to {safe_url(self.target_url)} "
                                         f"is not keeping up ({MAX_BACKLOG} frames behind)")
            return
        self._output.post(kind, data, pts, self._broke)

    def _broke(self, exc: BaseException) -> None:
        self._fail("publish-failed", f"RTSP publication to {safe_url(self.target_url)} "
                                     f"broke: {exc}")

    async def _switch_to(self, session: _PeerSession, keyframe: bytes) -> None:
        assert self._switched is not None
        retired, self._active, self._pending = self._active, session, None
        if self.stats.started_at is None:
            # Frames that arrive while FFmpeg connects queue behind the open on the mux
            # thread, so none is lost.
            self.stats.started_at = asyncio.get_running_loop().time()
            try:
                await self._output.open(keyframe)
            except (av.FFmpegError, OSError) as exc:
                self._active, self.stats.started_at = None, None
                self._switched.set_exception(PublisherError(
                    f"cannot publish to {safe_url(self.target_url)}: {exc}"))
                return
        self._last_media = asyncio.get_running_loop().time()  # silence counts from here
        self._switched.set_result(None)
        if retired is not None:
            self._close_later(retired)

    def _close_later(self, session: _PeerSession) -> None:
        # Closing waits on aiortc's transports; the frame that triggered it must not wait.
        task = asyncio.create_task(session.close())
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    def _on_lost(self, session: _PeerSession, message: str) -> None:
        if session is self._active:
            self._fail("connection-failed", message)

    async def _watch(self) -> None:
        """Until stop: report silence of the active session; hold the picture in any outage."""
        loop = asyncio.get_running_loop()
        self._last_media = self._last_video = max(self._last_media, loop.time())
        while True:
            await asyncio.sleep(min(self._silence_timeout / 4, HOLD_INTERVAL / 2))
            now = loop.time()
            if self._active is not None and now - self._last_media >= self._silence_timeout:
                self._fail("silence", f"no media from Nest for {now - self._last_media:.1f} s")
            keyframe = self._output.last_keyframe
            if keyframe is not None and now - self._last_video >= HOLD_INTERVAL:
                assert self.stats.started_at is not None
                self._last_video = now
                self._write("video", keyframe,
                            self._timelines["video"].hold(now - self.stats.started_at))

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
