"""A fake Nest WebRTC camera: an aiortc answerer that plays an MPEG-TS clip without decoding.

It reproduces what a Python peer must survive from Google: the m-line order check (400
INVALID_ARGUMENT), candidates without a foundation, `a=sendrecv` in the answer, sessions that
end at `expiresAt` unless extended, and FAILED_PRECONDITION on extend for battery devices.
The clip's packets are sent paced in real time, with timestamps that keep increasing when it
loops (aiortc's MediaPlayer would restart them and burst).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

RATES = {"video": 90000, "audio": 48000}


class NestApiError(Exception):
    """Google's error body: `{"error": {"code", "status", "message"}}`."""

    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(f"{code} {status}: {message}")
        self.code, self.status, self.message = code, status, message

    def body(self) -> dict[str, dict[str, object]]:
        return {"error": {"code": self.code, "status": self.status, "message": self.message}}


def make_clip(path: Path, *, size: str = "640x360", fps: int = 25, seconds: float = 2,
              gop: int | None = None, bitrate: str | None = None,
              preset: str = "ultrafast") -> Path:
    """A Constrained Baseline H.264 + 48 kHz stereo Opus MPEG-TS clip, as Nest sends them
    (an IDR every `gop` frames, one a second by default; no B-frames)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("ffmpeg is needed to make the clip (apt-get install ffmpeg)")
    subprocess.run([
        ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", f"{seconds:g}", "-c:v", "libx264", "-profile:v", "baseline", "-preset", preset,
        *(["-b:v", bitrate] if bitrate else []), "-g", str(gop or fps), "-bf", "0",
        "-pix_fmt", "yuv420p", "-c:a", "libopus", "-b:a", "32k", "-ac", "2",
        "-f", "mpegts", str(path),
    ], check=True)
    return path


@dataclass(frozen=True)
class Clip:
    """The clip's packets in file order: (kind, payload, seconds from the start)."""

    packets: tuple[tuple[str, bytes, float], ...]
    duration: float

    @classmethod
    def load(cls, path: Path) -> Clip:
        packets = []
        with av.open(str(path)) as container:
            for packet in container.demux():
                if packet.size and packet.pts is not None:
                    packets.append((packet.stream.type, bytes(packet),
                                    float(packet.pts * packet.time_base)))
        start = min(t for _, _, t in packets)
        video = sorted(t for kind, _, t in packets if kind == "video")
        frame = video[1] - video[0]
        return cls(tuple((k, d, t - start) for k, d, t in packets), video[-1] - start + frame)

    def payloads(self, kind: str) -> list[bytes]:
        return [data for k, data, _ in self.packets if k == kind]


class _ClipTrack(MediaStreamTrack):
    """One kind of the clip as pre-encoded av.Packets, paced against a shared wall clock."""

    def __init__(self, kind: str, clip: Clip, clock: list[float], loops: int | None) -> None:
        super().__init__()
        self.kind = kind
        self._items = [(data, t) for k, data, t in clip.packets if k == kind]
        self._duration = clip.duration
        self._clock = clock  # [start]: shared so audio and video stay together
        self._loops = loops
        self.done = asyncio.Event()
        self._index = 0
        self.sent = 0

    async def recv(self) -> av.Packet:
        loop_number, position = divmod(self._index, len(self._items))
        if self._loops is not None and loop_number >= self._loops:
            self.done.set()
            self.stop()
            raise MediaStreamError
        if not self._clock:
            self._clock.append(time.monotonic())
        data, offset = self._items[position]
        due = offset + loop_number * self._duration
        await asyncio.sleep(max(0.0, self._clock[0] + due - time.monotonic()))
        self._index += 1
        self.sent += 1
        rate = RATES[self.kind]
        packet = av.Packet(data)
        packet.pts = round(due * rate)
        packet.time_base = Fraction(1, rate)
        return packet


@dataclass
class FakeSession:
    media_session_id: str
    pc: RTCPeerConnection | None  # dropped once stopped: a soak makes hundreds of sessions
    tracks: dict[str, _ClipTrack]
    expires_at: dt.datetime
    plis: int = 0
    extensions: int = 0
    stopped: bool = False
    expiry: asyncio.TimerHandle | None = field(default=None, repr=False)

    async def played(self) -> None:
        """Every loop of the clip has been sent (only with a finite `loops`)."""
        await asyncio.gather(*(track.done.wait() for track in self.tracks.values()))


class FakeNestWebRtc:
    """Answers `GenerateWebRtcStream` offers for one camera.

    `sessions` keeps every session's record (counters, `stopped`); a stopped one's peer
    connection is let go, so what a soak measures is the sidecar's memory, not the fake's.
    """

    def __init__(self, clip: Clip, *, battery: bool = False, lifetime: float = 300.0,
                 loops: int | None = None) -> None:
        self.clip = clip
        self.battery = battery
        self.lifetime = lifetime
        self.loops = loops
        self.sessions: dict[str, FakeSession] = {}
        self.offers: list[str] = []
        self.answer_delay = 0.0  # how long Google takes to answer an offer
        self.refusal: NestApiError | None = None  # while set, every offer is refused with it

    async def generate(self, offer_sdp: str) -> tuple[str, dt.datetime, str]:
        self.offers.append(offer_sdp)
        await asyncio.sleep(self.answer_delay)
        if self.refusal is not None:
            raise self.refusal
        kinds = re.findall(r"^m=(\w+) ", offer_sdp, flags=re.MULTILINE)
        if kinds != ["audio", "video", "application"]:
            raise NestApiError(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        clock: list[float] = []
        session = FakeSession(uuid.uuid4().hex, pc, {}, self._expiry())
        await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        for kind in ("audio", "video"):
            track = _ClipTrack(kind, self.clip, clock, self.loops)
            sender = pc.addTrack(track)
            session.tracks[kind] = track
            if kind == "video":
                _count_plis(sender, session)
        await pc.setLocalDescription(await pc.createAnswer())
        self.sessions[session.media_session_id] = session
        self._arm_expiry(session)
        return _googlify(pc.localDescription.sdp), session.expires_at, session.media_session_id

    async def extend(self, media_session_id: str) -> tuple[dt.datetime, str]:
        session = self._live(media_session_id)
        if self.battery:
            raise NestApiError(400, "FAILED_PRECONDITION",
                               "Extending a stream is not supported on battery-powered "
                               "doorbells. Stop the existing stream and generate a new one.")
        session.expires_at = self._expiry()
        session.extensions += 1
        self._arm_expiry(session)
        return session.expires_at, media_session_id

    async def stop(self, media_session_id: str) -> None:
        await self._close(self._live(media_session_id))

    async def close(self) -> None:
        await asyncio.gather(*(self._close(s) for s in self.sessions.values() if not s.stopped))

    def _live(self, media_session_id: str) -> FakeSession:
        session = self.sessions.get(media_session_id)
        if session is None or session.stopped:
            raise NestApiError(404, "NOT_FOUND", "Stream not found or expired.")
        return session

    def _expiry(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.lifetime)

    def _arm_expiry(self, session: FakeSession) -> None:
        # As Google does: a session not extended by expiresAt is closed.
        if session.expiry is not None:
            session.expiry.cancel()
        delay = (session.expires_at - dt.datetime.now(dt.UTC)).total_seconds()
        loop = asyncio.get_running_loop()
        session.expiry = loop.call_later(delay, lambda: loop.create_task(self._close(session)))

    async def _close(self, session: FakeSession) -> None:
        if session.stopped:
            return
        session.stopped = True
        if session.expiry is not None:
            session.expiry.cancel()
        pc, session.pc, session.expiry = session.pc, None, None
        if pc is not None:
            await pc.close()


def _count_plis(sender: object, session: FakeSession) -> None:
    # aiortc's sender turns each PLI it receives into a _send_keyframe() call.
    original = sender._send_keyframe  # type: ignore[attr-defined]

    def counted() -> None:
        session.plis += 1
        original()

    sender._send_keyframe = counted  # type: ignore[attr-defined]


def _googlify(sdp: str) -> str:
    """aiortc's answer with Google's quirks: no candidate foundations, `a=sendrecv`."""
    sdp = re.sub(r"^a=candidate:\S+ ", "a=candidate: ", sdp, flags=re.MULTILINE)
    return re.sub(r"^a=sendonly\r?$", "a=sendrecv\r", sdp, flags=re.MULTILINE)
