"""WebRTC cameras under supervision: real SdmClient -> fake Google (HTTP on loopback), whose
GenerateWebRtcStream is answered by the fake Nest peer; published to a real RTSP receiver."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import av
import httpx

from nestmtx_sidecar.events import Event, EventBus
from nestmtx_sidecar.modules.cameras import CameraRef
from nestmtx_sidecar.nest.streaming.webrtc import WebRtcStreams
from tests.conftest import Events
from tests.fakes.google import FakeGoogle, camera
from tests.fakes.nest_webrtc import Clip, FakeNestWebRtc, NestApiError
from tests.nest_support import sdm_client
from tests.services import wait_until
from tests.test_webrtc import Receiver, clip, clip_path, finished, loopback_ice, rtsp_receiver

__all__ = ["clip", "clip_path", "loopback_ice"]  # fixtures shared with test_webrtc

DEVICE = "enterprises/project-1/devices/doorbell"
CAMERA = CameraRef(id=7, credential_id=1, uid=DEVICE, name="Doorbell", enabled=True,
                   persistent=False, protocols=("WEB_RTC",), mtx_path="doorbell")


@contextlib.asynccontextmanager
async def _google(peer: FakeNestWebRtc) -> AsyncIterator[FakeGoogle]:
    google = FakeGoogle(commands_per_user=100, webrtc_peers={"doorbell": peer},
                        devices={"project-1": [camera("doorbell", "Doorbell",
                                                      protocols=("WEB_RTC",))]})
    async with google.serve():
        yield google


@contextlib.asynccontextmanager
async def _running(peer: FakeNestWebRtc, tmp_path: Path, bus: EventBus
                   ) -> AsyncIterator[tuple[WebRtcStreams, FakeGoogle, Receiver]]:
    """WebRTC streams on a real SdmClient to the fake Google, publishing to an RTSP receiver;
    every session stopped and the fake peer closed at the end."""
    async with (httpx.AsyncClient() as http,
                rtsp_receiver(tmp_path, CAMERA.mtx_path) as receiver,
                _google(peer) as google):
        streams = WebRtcStreams(bus, sdm_client(google, http), receiver.url.rsplit("/", 1)[0],
                                start_timeout=15, silence_timeout=3)
        bus.subscribe(streams.on_event)  # as nest.service wires it
        try:
            yield streams, google, receiver
        finally:
            await streams.stop_all("shutting down")
            await peer.close()


async def test_battery_device_is_regenerated_seamlessly(clip: Clip, tmp_path: Path) -> None:
    bus = EventBus()
    events = Events.subscribed(bus)
    lifetime = 3.0
    peer = FakeNestWebRtc(clip, battery=True, lifetime=lifetime)
    async with _running(peer, tmp_path, bus) as (streams, google, receiver):
        assert await streams.source_for(CAMERA) == "wait"
        failed = await events.wait("camera", "failed-extension")
        assert failed.details["reason"] == "failed_precondition"
        assert failed.details["regenerating"] is True
        extended = await events.wait("camera", "extended")
        assert extended.details["regenerated"] is True
        # Once known not to extend, the next renewal goes straight to a new session.
        await events.wait("camera", "extended", count=2)
        await bus.publish(Event("camera", "unDemand", CAMERA.id, {}))
        await bus.drain()
        await finished(receiver)  # the publication ended with the demand
    assert google.count("GenerateWebRtcStream") == 3
    assert google.count("ExtendWebRtcStream") == 1
    assert google.count("StopWebRtcStream") == 3  # two replaced, one at unDemand

    with av.open(str(receiver.output)) as container:
        stream = container.streams.video[0]
        times = [float(p.pts * p.time_base) for p in container.demux(stream) if p.size]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert times[-1] - times[0] > 2 * lifetime * 0.8 - 1  # one publication across 3 sessions
    assert max(gaps) < 0.25 and min(gaps) > 0  # frames kept flowing


async def test_wired_device_is_extended_and_stopped_on_undemand(clip: Clip,
                                                                tmp_path: Path) -> None:
    bus = EventBus()
    events = Events.subscribed(bus)
    peer = FakeNestWebRtc(clip, lifetime=2.0)
    async with _running(peer, tmp_path, bus) as (streams, google, receiver):
        await streams.source_for(CAMERA)
        extended = await events.wait("camera", "extended")
        assert "regenerated" not in extended.details
        assert extended.details["expiresAt"].endswith("Z")
        await bus.publish(Event("camera", "unDemand", CAMERA.id, {}))
        await bus.drain()
        await finished(receiver)  # the publication ended with the demand
    assert google.count("GenerateWebRtcStream") == 1
    assert google.count("StopWebRtcStream") == 1
    assert not [e for e in events.seen if e.event == "failed-extension"]


async def test_recovery_gives_up_after_three_refusals_and_the_next_demand_starts_again(
        clip: Clip, tmp_path: Path) -> None:
    bus = EventBus()
    events = Events.subscribed(bus)
    peer = FakeNestWebRtc(clip, lifetime=120.0)
    async with _running(peer, tmp_path, bus) as (streams, google, receiver):
        await streams.source_for(CAMERA)
        (first,) = peer.sessions.values()
        peer.refusal = NestApiError(503, "UNAVAILABLE", "The service is unavailable.")
        await peer.stop(first.media_session_id)
        stalled = await events.wait("camera", "stalled")
        assert stalled.details["reason"] in ("connection-failed", "silence")
        # Three refused attempts later the publication ends: the receiver sees the
        # publisher leave, and no `recovered` was claimed.
        await finished(receiver)
        assert google.count("GenerateWebRtcStream") == 1 + 3
        assert not [e for e in events.seen if e.event == "recovered"]
        # The next demand starts from scratch once Google answers again (ffmpeg's
        # listener took its one publication: a new one, on its own port).
        peer.refusal = None
        async with rtsp_receiver(tmp_path, CAMERA.mtx_path) as again:
            streams._rtsp_url = again.url.rsplit("/", 1)[0]
            assert await streams.source_for(CAMERA) == "wait"
            await bus.publish(Event("camera", "unDemand", CAMERA.id, {}))
            await finished(again)
    assert google.count("GenerateWebRtcStream") == 1 + 3 + 1


async def test_a_stop_while_a_regeneration_is_answered_stops_the_new_session_too(
        clip: Clip, tmp_path: Path) -> None:
    # The soak's one session never stopped: Google generated it as demand ended, and its
    # answer arrived after the stop had begun.
    bus = EventBus()
    peer = FakeNestWebRtc(clip, battery=True, lifetime=3.0)
    async with _running(peer, tmp_path, bus) as (streams, google, receiver):
        await streams.source_for(CAMERA)
        held = google.hold("GenerateWebRtcStream")  # the battery device's regeneration
        async with asyncio.timeout(15):
            await held.reached.wait()
        stopping = asyncio.create_task(streams.stop(CAMERA.id, "no more demand"))
        await wait_until(lambda: not streams.is_live(CAMERA.id))  # the stop has begun
        held.release()
        await stopping
        assert len(peer.sessions) == 2  # the first, and the one Google had generated
        assert [s.stopped for s in peer.sessions.values()] == [True, True]
        assert google.count("StopWebRtcStream", status=200) == 2
        await finished(receiver)
