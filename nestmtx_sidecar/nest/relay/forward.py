"""The active session's frames into the RTSP publication, on one timeline across sessions.

Each WebRTC session's clock starts anywhere; the publication's timestamps must only move on,
through renewals and outages alike, so MediaMTX's readers never see time jump back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiortc.jitterbuffer import JitterFrame

from ...security import safe_url
from .audio import AUDIO_RATE
from .passthrough import VIDEO_RATE
from .rtsp_output import RtspOutput

# Frames queued for the mux thread beyond which the RTSP target counts as stuck (~10 s of
# 30 fps video and 50 fps audio): the queue stays bounded.
MAX_BACKLOG = 800


@dataclass
class Stats:
    video_frames: int = 0
    audio_frames: int = 0
    bytes_in: int = 0
    sessions: int = 0
    started_at: float | None = None


class Timeline:
    """Output timestamps for one track: monotonic across sessions, anchored to wall time.

    A session's first frame is placed at the time elapsed since the output opened (and at
    least one frame interval after the last one), so audio and video stay together and a new
    session continues where the last one ended.
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


class Forwarder:
    """Stamps, counts and posts frames; `on_failure(reason, message)` if the output is stuck
    or broke."""

    def __init__(self, output: RtspOutput, stats: Stats,
                 on_failure: Callable[[str, str], None]) -> None:
        self._output = output
        self._stats = stats
        self._on_failure = on_failure
        self._timelines = {"video": Timeline(VIDEO_RATE, VIDEO_RATE // 30),
                           "audio": Timeline(AUDIO_RATE, AUDIO_RATE // 50)}
        self.last_media = 0.0  # loop time of the last frame forwarded
        self.last_video = 0.0  # ... of the last video frame, real or held

    def forward(self, session: object, kind: str, frame: JitterFrame, now: float) -> None:
        """A frame of the active session, at loop time `now`."""
        assert self._stats.started_at is not None
        self.last_media = now
        if kind == "video":
            self.last_video = now
            self._stats.video_frames += 1
        else:
            self._stats.audio_frames += 1
        self._stats.bytes_in += len(frame.data)
        if self._output.carries(kind):
            self._post(kind, frame.data, self._timelines[kind].pts(
                session, frame.timestamp, now - self._stats.started_at))

    def hold(self, now: float) -> None:
        """In an outage: the last keyframe again, so readers keep a (frozen) picture."""
        keyframe = self._output.last_keyframe
        if keyframe is not None and self._stats.started_at is not None:
            self.last_video = now
            self._post("video", keyframe,
                       self._timelines["video"].hold(now - self._stats.started_at))

    def _post(self, kind: str, data: bytes, pts: int) -> None:
        if self._output.backlog >= MAX_BACKLOG:
            self._on_failure("publish-failed", f"RTSP publication to "
                             f"{safe_url(self._output.url)} is not keeping up "
                             f"({MAX_BACKLOG} frames behind)")
            return
        self._output.post(kind, data, pts, self._broke)

    def _broke(self, exc: BaseException) -> None:
        self._on_failure("publish-failed", f"RTSP publication to {safe_url(self._output.url)} "
                                           f"broke: {exc}")
