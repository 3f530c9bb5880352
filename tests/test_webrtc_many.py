"""Four WebRTC cameras published at once by one WebRtcStreams (the sidecar's), each from its
own fake Nest peer through fake Google to its own RTSP receiver: no frame lost on any."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path

import httpx

from nestmtx_sidecar.events import Event, EventBus
from nestmtx_sidecar.modules.cameras import CameraRef
from nestmtx_sidecar.nest.streaming.webrtc import WebRtcStreams
from tests.fakes.google import FakeGoogle, camera
from tests.fakes.nest_webrtc import Clip, FakeNestWebRtc
from tests.nest_support import sdm_client
from tests.test_webrtc import (
    access_unit_key,
    clip,
    clip_path,
    finished,
    loopback_ice,
    received,
    rtsp_receiver,
)

__all__ = ["clip", "clip_path", "loopback_ice"]  # fixtures shared with test_webrtc

CAMERAS = 4
LOOPS = 3


def _ref(index: int) -> CameraRef:
    return CameraRef(id=index + 1, credential_id=1, uid=f"enterprises/project-1/devices/cam{index}",
                     name=f"Cam {index}", enabled=True, persistent=False, protocols=("WEB_RTC",),
                     mtx_path=f"cam{index}")


async def test_four_cameras_at_once_lose_no_frame(clip: Clip, tmp_path: Path) -> None:
    peers = [FakeNestWebRtc(clip, loops=LOOPS) for _ in range(CAMERAS)]
    google = FakeGoogle(commands_per_user=100,
                        webrtc_peers={f"cam{i}": peer for i, peer in enumerate(peers)},
                        devices={"project-1": [camera(f"cam{i}", f"Cam {i}", protocols=(
                            "WEB_RTC",)) for i in range(CAMERAS)]})
    refs = [_ref(i) for i in range(CAMERAS)]
    bus = EventBus()
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient())
        await stack.enter_async_context(google.serve())
        # One RTSP server per camera path, as MediaMTX has one path per camera.
        receivers = [await stack.enter_async_context(rtsp_receiver(tmp_path, ref.mtx_path))
                     for ref in refs]
        streams = WebRtcStreams(bus, sdm_client(google, http), "unused", start_timeout=15,
                                silence_timeout=5)
        bus.subscribe(streams.on_event)  # as nest.service wires it
        try:
            # ffmpeg's RTSP listener takes one publication, so each camera gets its own
            # receiver port; the base URL is read when a camera's publisher starts.
            for ref, receiver in zip(refs, receivers, strict=True):
                streams._rtsp_url = receiver.url.rsplit("/", 1)[0]
                assert await streams.source_for(ref) == "wait"
            sessions = [next(iter(peer.sessions.values())) for peer in peers]
            async with asyncio.timeout(LOOPS * clip.duration + 20):
                await asyncio.gather(*(session.played() for session in sessions))
            for ref in refs:
                await bus.publish(Event("camera", "unDemand", ref.id, {}))
            for receiver in receivers:
                await finished(receiver)
        finally:
            await streams.stop_all("shutting down")
            for peer in peers:
                await peer.close()
        assert google.count("GenerateWebRtcStream") == CAMERAS
        assert google.count("StopWebRtcStream") == CAMERAS
        assert all(s.plis == 0 for s in sessions)  # nothing lost that needed a new keyframe

    source_video = [access_unit_key(unit) for unit in clip.payloads("video")]
    source_audio = [hashlib.sha256(frame).hexdigest() for frame in clip.payloads("audio")]
    for receiver in receivers:
        got = received(receiver.output)
        video = [access_unit_key(unit) for unit in got["video"]]
        audio = [hashlib.sha256(frame).hexdigest() for frame in got["audio"]]
        # Every loop whole and in order (the very last frame stays in aiortc's jitter buffer:
        # no later packet completes it).
        assert video == (source_video * LOOPS)[:len(video)], receiver.url
        assert len(video) >= LOOPS * len(source_video) - 1, receiver.url
        assert audio[:len(source_audio)] == source_audio, receiver.url
        assert len(audio) >= LOOPS * len(source_audio) - 5, receiver.url
