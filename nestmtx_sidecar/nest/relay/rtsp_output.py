"""One RTSP publication (ANNOUNCE/RECORD over TCP) to MediaMTX, fed with encoded frames.

The video stream is built from a template demuxed from the first keyframe (it carries SPS/PPS
as extradata and opens no encoder), so H.264 is muxed untouched; so is Opus, unless the
publication's audio is `aac` (webrtc_audio) or `none`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import av

from .audio import AUDIO_RATE, AacTranscoder
from .passthrough import NAL_IDR, VIDEO_RATE, nal_types

AUDIO_MODES = ("opus", "aac", "none")
# Frames queued on the loop side before they go to the mux thread even without a video frame.
FLUSH_AT = 8

Frame = tuple[str, bytes, int]  # kind, data, pts


class RtspOutput:
    """One RTSP publication; `audio` is what it carries: `opus`, `aac` or `none`.

    FFmpeg's socket calls (and the AAC transcode) block, so they run on one private thread, in
    order, off the loop. Frames are handed over with `post`, without waiting for the thread,
    and in batches: one hand-over per video frame, with the audio posted since. The profile
    showed the hand-overs (each one wakes the thread, and an awaited one the loop too)
    costing more than the muxing itself.
    """

    def __init__(self, url: str, io_timeout: float, audio: str = "opus") -> None:
        if audio not in AUDIO_MODES:
            raise ValueError(f"unknown audio mode {audio!r}")
        self.url = url
        self.audio = audio
        self._io_timeout = io_timeout
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="nest-webrtc-mux")
        self._container: av.container.OutputContainer | None = None
        self._streams: dict[str, av.stream.Stream] = {}
        self._aac: AacTranscoder | None = None
        self.last_keyframe: bytes | None = None  # what a freeze shows; set on the mux thread
        self.parameter_sets = b""  # the first keyframe's SPS/PPS, for a later one without them
        self._pending: list[Frame] = []  # posted, not yet handed to the mux thread
        self._posted = 0  # written by the loop's thread only
        self._muxed = 0  # written by the mux thread only
        self._on_error: Callable[[BaseException], None] | None = None
        self._time_bases = {"video": Fraction(1, VIDEO_RATE), "audio": Fraction(1, AUDIO_RATE)}

    def carries(self, kind: str) -> bool:
        """Whether frames of this kind go into the publication (not with audio `none`)."""
        return kind == "video" or self.audio != "none"

    def open(self, keyframe: bytes) -> asyncio.Future[None]:
        """Connect and announce, on the mux thread; frames posted meanwhile queue behind it."""
        return asyncio.wrap_future(self._executor.submit(self._open, keyframe))

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
                    self._aac = AacTranscoder(self._streams["audio"])
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
        self._pending.append((kind, data, pts))
        if kind == "video" or len(self._pending) >= FLUSH_AT:
            self._hand_over()

    def _hand_over(self) -> None:
        batch, self._pending = self._pending, []
        self._executor.submit(self._write_batch, asyncio.get_running_loop(), batch)

    def _write_batch(self, loop: asyncio.AbstractEventLoop, batch: list[Frame]) -> None:
        for kind, data, pts in batch:
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
        if kind == "audio" and self._aac is not None:
            for packet in self._aac.packets(data, pts):
                self._container.mux_one(packet)
            return
        packet = av.Packet(data)
        packet.stream = self._streams[kind]
        packet.time_base = self._time_bases[kind]
        packet.pts = packet.dts = pts
        if kind == "video" and NAL_IDR in nal_types(data):
            packet.is_keyframe = True
            self.last_keyframe = data
        self._container.mux_one(packet)

    async def close(self) -> None:
        """Mux what is still queued, end the publication, and the thread."""
        loop = asyncio.get_running_loop()
        if self._pending:
            self._hand_over()
        with contextlib.suppress(Exception):
            await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            container.close()
