"""One Nest WebRTC media session: the peer connection, the offer Google wants, its answer.

The offer is what Google requires (recvonly audio, recvonly H.264-only video, a data channel,
in that order, every candidate inline, no STUN/TURN); Google's answer is repaired before
aiortc reads it. Frames reach the caller's `on_frame` on the loop, without decoding
(webrtc_passthrough).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ...errors import PublisherError
from .passthrough import deliver_directly, install_pass_through

# Codecs offered: everything else would need a decoder and an encoder.
_VIDEO_MIMES = ("video/H264", "video/rtx")
_AUDIO_MIMES = ("audio/opus",)


class Answer(NamedTuple):
    """What `GenerateWebRtcStream` returns."""

    answer_sdp: str
    expires_at: dt.datetime
    media_session_id: str


Generate = Callable[[str], Awaitable[tuple[str, dt.datetime, str]]]


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


class PeerSession:
    """A peer connection whose two tracks' frames go to `on_frame(session, kind, frame)`."""

    def __init__(self, on_frame: Callable[[PeerSession, str, JitterFrame], None],
                 on_lost: Callable[[PeerSession, str], None]) -> None:
        install_pass_through()  # the stock path, should the direct one not apply
        self.answer: Answer | None = None
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._readers: list[asyncio.Task[None]] = []
        self._direct = False  # frames come straight from aiortc's receivers, no reader tasks
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
        self._direct = all([deliver_directly(t.receiver, t.kind, self._deliver)
                           for t in (audio, video)])
        # Google rejects an offer without a data channel after audio and video.
        self._pc.createDataChannel("dataSendChannel")
        # aiortc gathers every candidate before setLocalDescription returns: all inline.
        await self._pc.setLocalDescription(await self._pc.createOffer())
        return self._pc.localDescription.sdp

    def _deliver(self, kind: str, frame: JitterFrame) -> None:
        self._on_frame(self, kind, frame)

    def _start_reader(self, track: MediaStreamTrack) -> None:
        if not self._direct:
            self._readers.append(asyncio.create_task(self._read(track)))

    async def _read(self, track: MediaStreamTrack) -> None:
        """The stock path: frames through aiortc's decoder thread (the pass-through)."""
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self._on_frame(self, track.kind, frame)

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
