"""WebRTC cameras end to end through the real pieces: the demand hook run the MediaMTX way ->
the in-process sidecar (real uvicorn) -> fake Google's GenerateWebRtcStream, answered by the
fake Nest peer -> the sidecar's publisher -> `ffmpeg -rtsp_flags listen` standing in for
MediaMTX's RTSP port at Settings.mediamtx_rtsp_url. ICE stays on 127.0.0.1 (loopback_ice).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import av
import httpx
import pytest

from nestmtx_sidecar.events import EventBus
from nestmtx_sidecar.nest.relay.audio import AUDIO_RATE
from nestmtx_sidecar.nest.relay.passthrough import nal_types
from nestmtx_sidecar.nest.relay.publisher import HOLD_INTERVAL
from tests.conftest import RunningSidecar
from tests.fakes.google import FakeGoogle, camera
from tests.fakes.nest_webrtc import Clip, FakeNestWebRtc
from tests.mediamtx import HookProcess, MediaMTX, hook_settings
from tests.nest_support import Events, add_credential, enable, nest_sidecar
from tests.services import wait_until
from tests.test_events_e2e import PySubscriber
from tests.test_webrtc import (
    Receiver,
    _resources,
    access_unit_key,
    clip,
    clip_path,
    finished,
    loopback_ice,
    received,
    rtsp_receiver,
)

__all__ = ["clip", "clip_path", "loopback_ice"]  # fixtures shared with test_webrtc

PATH = "doorbell"


@dataclass
class Rig:
    google: FakeGoogle
    events: Events
    receiver: Receiver
    mediamtx: MediaMTX
    bus: EventBus
    client: httpx.AsyncClient
    running: RunningSidecar


@contextlib.asynccontextmanager
async def webrtc_rig(tmp_path: Path, peer: FakeNestWebRtc) -> AsyncIterator[Rig]:
    """A synced, enabled WebRTC-only camera whose sidecar publishes into a listening ffmpeg."""
    google = FakeGoogle(webrtc_peers={PATH: peer}, devices={
        "project-1": [camera(PATH, "Doorbell", protocols=("WEB_RTC",))]})
    async with (google.serve(), rtsp_receiver(tmp_path, PATH) as receiver,
                nest_sidecar(tmp_path, google, stream_start_timeout=15.0,
                             mediamtx_rtsp_url=receiver.url.rsplit("/", 1)[0]) as (
                    running, events, client)):
        await add_credential(client, google, google.issue_refresh_token())
        await events.wait("credentials", "authenticated")
        await running.sidecar.nest.sync.sync(1)
        (item,) = (await client.get("/api/cameras")).json()["items"]
        assert item["protocols"] == ["WEB_RTC"]
        await enable(client, item["id"], PATH)
        mediamtx = MediaMTX(hook_settings(), {
            "PATH": "/usr/local/bin:/usr/bin:/bin", "NESTMTX_URL": running.url,
            "NESTMTX_HOOK_SECRET": running.hook_secret})
        try:
            yield Rig(google, events, receiver, mediamtx, running.sidecar.bus, client, running)
        finally:
            await peer.close()


async def end_demand(rig: Rig, hook: HookProcess) -> None:
    """What MediaMTX does when the last reader left: SIGINT to the hook's group, then unDemand."""
    result = await hook.stop()
    assert result.returncode == 0 and not result.left_running, result.stderr_lines
    undemand = await rig.mediamtx.run("unDemand", PATH)
    assert undemand.returncode == 0, undemand.stderr_lines
    await rig.events.wait("camera", "unDemand")
    await rig.bus.drain()  # the POST was answered at once; the WebRTC streams stop after it


def video_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [float(p.pts * p.time_base) for p in container.demux(stream) if p.size]


async def test_wired_camera_from_demand_hook_to_rtsp_and_back(clip: Clip, tmp_path: Path
                                                              ) -> None:
    peer = FakeNestWebRtc(clip, lifetime=2.0)
    async with webrtc_rig(tmp_path, peer) as rig:
        before = _resources()
        hook = await rig.mediamtx.start("demand", PATH)
        await rig.events.wait("camera", "extended", count=2, within=20)
        assert hook.proc.returncode is None  # holds the demand while the sidecar publishes
        assert rig.google.count("GenerateWebRtcStream") == 1
        (session,) = peer.sessions.values()
        assert session.extensions == 2 and not session.stopped

        await end_demand(rig, hook)
        stops = [c for c in rig.google.calls if c.endpoint == "StopWebRtcStream"]
        assert len(stops) == 1 and stops[0].status == 200
        # Google's Stop closed the peer's session, before it could expire by itself.
        assert session.stopped and session.expires_at > dt.datetime.now(dt.UTC)
        await finished(rig.receiver)  # the publication ended with the demand

        # Every task, thread and socket of the session is freed (nothing above the baseline).
        def settled() -> bool:
            return all(now <= then for now, then in zip(_resources(), before, strict=True))

        with contextlib.suppress(TimeoutError):
            await wait_until(settled, seconds=5)
        assert settled(), (_resources(), before)
        assert rig.google.count("StopWebRtcStream") == 1  # exactly once, nothing after
        assert not rig.events.named("camera", "failed-extension")

    counts = {kind: len(frames) for kind, frames in received(rig.receiver.output).items()}
    assert counts["video"] >= 2 * 25 and counts["audio"] > 0  # over 2 s of both kinds


async def test_battery_camera_is_regenerated_seamlessly_through_the_hook(
        clip: Clip, tmp_path: Path) -> None:
    lifetime = 3.0
    peer = FakeNestWebRtc(clip, battery=True, lifetime=lifetime)
    async with webrtc_rig(tmp_path, peer) as rig:
        hook = await rig.mediamtx.start("demand", PATH)
        failed = await rig.events.wait("camera", "failed-extension", within=20)
        assert failed.details["reason"] == "failed_precondition"
        assert failed.details["regenerating"] is True
        await rig.events.wait("camera", "extended", count=2, within=20,
                              where=lambda e: e.details.get("regenerated") is True)
        assert hook.proc.returncode is None  # MediaMTX's demand never saw a gap
        await end_demand(rig, hook)
        await finished(rig.receiver)
        assert rig.google.count("GenerateWebRtcStream") == 3
        # Asked once; a device known not to extend goes straight to a new session.
        assert rig.google.count("ExtendWebRtcStream") == 1
        assert rig.google.count("ExtendWebRtcStream", status=400) == 1
        assert rig.google.count("StopWebRtcStream", status=200) == 3  # 2 replaced + unDemand
        assert all(s.stopped for s in peer.sessions.values())

    times = video_times(rig.receiver.output)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # One publication across three Nest sessions, frames flowing all along.
    assert times[-1] - times[0] > 2 * lifetime * 0.8 - 1
    assert max(gaps) < 0.25 and min(gaps) > 0


def stream_codecs(path: Path) -> dict[str, str]:
    """Codec of each kind in the receiver's copy, and that its audio decodes."""
    with av.open(str(path)) as container:
        codecs = {s.type: s.codec_context.name for s in container.streams}
        if container.streams.audio:
            decoded = [f for p in container.demux(container.streams.audio[0])
                       for f in p.decode()]
            assert sum(f.samples for f in decoded) > AUDIO_RATE  # over a second of sound
            assert {f.sample_rate for f in decoded} == {AUDIO_RATE}
    return codecs


@pytest.mark.parametrize(("audio", "expected"), [
    ("opus", {"video": "h264", "audio": "opus"}),
    ("aac", {"video": "h264", "audio": "aac"}),
    ("none", {"video": "h264"}),
])
async def test_camera_audio_setting_decides_what_rtsp_consumers_get(
        clip: Clip, tmp_path: Path, audio: str, expected: dict[str, str]) -> None:
    peer = FakeNestWebRtc(clip, lifetime=2.0)
    async with webrtc_rig(tmp_path, peer) as rig:
        (item,) = (await rig.client.get("/api/cameras")).json()["items"]
        reply = await rig.client.put(f"/api/cameras/{item['id']}", json={"audio": audio})
        assert reply.status_code == 200 and reply.json()["audio"] == audio, reply.text
        hook = await rig.mediamtx.start("demand", PATH)
        await rig.events.wait("camera", "extended", within=20)
        await end_demand(rig, hook)
        await finished(rig.receiver)

    assert stream_codecs(rig.receiver.output) == expected
    source = {kind: len(frames) for kind, frames in received(rig.receiver.output).items()}
    assert source["video"] >= 25  # the picture is forwarded whatever the audio
    # Untouched video: every access unit as the camera sent it.
    got = [access_unit_key(unit) for unit in received(rig.receiver.output)["video"]]
    sent = [access_unit_key(unit) for unit in clip.payloads("video")]
    assert got[:len(sent)] == sent[:len(got)]


async def test_a_dead_session_is_a_freeze_for_rtsp_readers_not_a_disconnect(
        clip: Clip, tmp_path: Path) -> None:
    peer = FakeNestWebRtc(clip, lifetime=120.0)  # no renewal in this test
    async with webrtc_rig(tmp_path, peer) as rig:
        socket = PySubscriber()
        await socket.client.connect(rig.running.url, auth={"token": await rig.running.login()},
                                    transports=["websocket"])
        hook = await rig.mediamtx.start("demand", PATH)
        await wait_until(lambda: any(s.tracks["video"].sent >= 25
                                     for s in peer.sessions.values()), seconds=20)
        (first,) = peer.sessions.values()
        peer.answer_delay = 3 * HOLD_INTERVAL  # a slow answer: the readers see a freeze
        await peer.stop(first.media_session_id)  # the camera's session dies mid-stream
        killed_at = first.tracks["video"].sent

        async def camera_event(name: str) -> dict:
            while True:
                topic, payload = await asyncio.wait_for(socket.received.get(), 30)
                if topic == f"camera:{name}":
                    return payload

        stalled = await camera_event("stalled")
        assert stalled["details"]["reason"] in ("connection-failed", "silence")
        assert stalled["details"]["path"] == PATH and stalled["details"]["error"]
        recovered = await camera_event("recovered")
        assert recovered["details"]["reason"] == stalled["details"]["reason"]
        assert recovered["details"]["outage"] >= peer.answer_delay
        assert recovered["details"]["expiresAt"]
        second = next(s for s in peer.sessions.values() if s is not first)
        await wait_until(lambda: second.tracks["video"].sent >= 25, seconds=10)
        assert hook.proc.returncode is None  # MediaMTX's demand held all along
        await end_demand(rig, hook)
        await socket.client.disconnect()
        # ffmpeg accepts one publication and exits when it ends: exit 0 with everything in one
        # file means the RTSP session stayed up across the two Nest sessions.
        await finished(rig.receiver)
        assert rig.google.count("GenerateWebRtcStream") == 2
        assert first.stopped and second.stopped

    with av.open(str(rig.receiver.output)) as container:
        stream = container.streams.video[0]
        packets = [(float(p.pts * p.time_base), bytes(p)) for p in container.demux(stream)
                   if p.size]
    times = [t for t, _ in packets]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) > 0  # no timestamp ever goes backwards
    # The outage is held by repeating the last keyframe: no silence long enough for
    # MediaMTX's readTimeout, and every repeated frame decodes on its own.
    assert max(gaps) < HOLD_INTERVAL + 0.5
    held = [data for (t, data), gap in zip(packets[1:], gaps, strict=True) if gap > 0.5]
    assert held and all(5 in nal_types(data) for data in held)
    # Frames resumed: the second session's frames follow the first's in the same file.
    assert len(packets) >= killed_at - 5 + 25
