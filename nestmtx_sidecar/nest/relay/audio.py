"""Opus -> AAC-LC for the `aac` audio mode: for RTSP consumers that cannot play Opus.

The only decode and encode the WebRTC path ever runs (video stays untouched). It runs on the
publication's mux thread, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import av

AUDIO_RATE = 48000
_TIME_BASE = Fraction(1, AUDIO_RATE)


class AacTranscoder:
    """Decodes the camera's Opus frames and encodes them into `stream` (an AAC output)."""

    def __init__(self, stream: av.audio.stream.AudioStream) -> None:
        self._stream = stream
        # Nest sends 48 kHz stereo Opus; the SDP says so, no OpusHead arrives in-band.
        self._opus = av.CodecContext.create("opus", "r")
        self._opus.sample_rate = AUDIO_RATE
        self._opus.layout = "stereo"

    def packets(self, opus: bytes, pts: int) -> Iterator[av.Packet]:
        """The AAC packets that one Opus frame (at `pts`, 1/48000 s) completes."""
        try:
            frames = self._opus.decode(av.Packet(opus))
        except av.error.InvalidDataError:
            return  # a damaged Opus frame is a moment of silence, not a broken publication
        for frame in frames:
            # The encoder's own FIFO regroups 960-sample Opus frames into 1024-sample AAC ones
            # and follows a jump in pts (a new session) with a jump of its own.
            frame.pts, frame.time_base = pts, _TIME_BASE
            pts += frame.samples
            yield from self._stream.encode(frame)
