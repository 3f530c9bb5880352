"""aiortc without decoding: its depacketized frames handed on untouched, on the event loop.

aiortc always decodes what it receives. Two ways round it, both process-wide for H.264 and
Opus (the sidecar only receives media to republish it):
  - the stock path: aiortc's decoder lookup returns a pass-through, so the decoder thread
    hands the encoded frame to `track.recv()` unchanged;
  - the direct path (what runs on the aiortc this was written for): the receiver's decoder
    queue is replaced, so each frame goes from aiortc's packet handler to the publisher at
    once, never to the decoder thread and back. The profile showed those two thread hops per
    frame to cost more than everything else the publisher does.
Both keep aiortc's jitter buffer, NACK and RTX, and wait for an IDR with PLIs.
"""

from __future__ import annotations

import errno
import queue
import re
import threading
from collections.abc import Callable
from typing import Any

import aiortc.rtcrtpreceiver
import av
from aiortc import RTCRtpReceiver
from aiortc.codecs import get_decoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

VIDEO_RATE = 90000
NAL_IDR, NAL_SPS, NAL_PPS = 5, 7, 8
_START_CODE = re.compile(b"\x00\x00\x01")
_PLI_INTERVAL = VIDEO_RATE  # while waiting for a keyframe, ask at most once a second

# The private attributes of aiortc's RTCRtpReceiver (1.16) the direct path replaces/uses:
# its packet handler puts `(codec, frame)` on the queue, a decoder thread gets them, and a
# set event makes the handler send a PLI. tests/test_webrtc.py fails if they change.
DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
DECODER_ERROR = "_RTCRtpReceiver__decoder_error"

FrameSink = Callable[[str, JitterFrame], None]


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
            if NAL_IDR not in nal_types(encoded_frame.data):
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
    """Swap aiortc's decoder lookup for H.264 and Opus, process-wide (the stock path).

    aiortc has no switch to skip decoding; its receiver thread looks the decoder up through the
    module-level `get_decoder`.
    """
    aiortc.rtcrtpreceiver.get_decoder = _pass_through_or_decoder  # type: ignore[attr-defined]


class DirectFrames:
    """Takes the place of an aiortc receiver's decoder queue: frames go to `sink` on the loop.

    aiortc puts `(codec, frame)` here from its packet handler, on the event loop; the frame
    goes through the pass-through (IDR wait, PLI) and to `sink` at once. The decoder thread
    aiortc still starts gets `None` (its stop signal) and ends; aiortc's `put(None)` when the
    receiver stops is ignored. An exception from `sink` ends aiortc's DTLS transport (it
    logs it): the session then fails like a dropped connection, and is recovered as one.
    """

    def __init__(self, kind: str, sink: FrameSink, decode_error: threading.Event) -> None:
        self._kind = kind
        self._decoder = PassThroughDecoder(kind)
        self._sink = sink
        self._decode_error = decode_error

    def put(self, task: tuple[RTCRtpCodecParameters, JitterFrame] | None) -> None:
        if task is None:
            return
        try:
            frames = self._decoder.decode(task[1])
        except KeyframeNeeded:
            self._decode_error.set()  # aiortc sends a PLI with the next packet
            return
        for frame in frames:
            self._sink(self._kind, frame)

    def get(self) -> None:
        return None


def deliver_directly(receiver: RTCRtpReceiver, kind: str, sink: FrameSink) -> bool:
    """Have `receiver` hand its frames to `sink` on the loop, skipping its decoder thread.

    Call before the receiver starts (before setRemoteDescription). Returns False, leaving
    the stock path, when aiortc's internals are not the ones this was written against.
    """
    decoder_queue = getattr(receiver, DECODER_QUEUE, None)
    error = getattr(receiver, DECODER_ERROR, None)
    if not isinstance(decoder_queue, queue.Queue) or not isinstance(error, threading.Event):
        return False
    setattr(receiver, DECODER_QUEUE, DirectFrames(kind, sink, error))
    return True
