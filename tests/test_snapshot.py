"""GET /api/cameras/<id>/snapshot through the real server: a live RTSP camera (GStreamer's
RTSP server standing in for MediaMTX's live path) and a live WebRTC camera (the fake Nest peer
-> the sidecar's publisher, as in test_nest_e2e_webrtc) both give a JPEG PyAV decodes; a camera
that is not live gives 409, no token 401."""

from __future__ import annotations

import io
from pathlib import Path

import av
import httpx
import pytest

from nestmtx_sidecar.nest.relay.passthrough import NAL_IDR, nal_types
from nestmtx_sidecar.nest.streaming.snapshot import keyframe_jpeg
from tests.fakes.google import FakeGoogle, camera
from tests.fakes.nest_webrtc import Clip, FakeNestWebRtc
from tests.nest_support import add_credential, enable, nest_sidecar, rtsp_camera
from tests.services import require_binary, wait_until
from tests.test_nest_e2e_webrtc import PATH, clip, clip_path, end_demand, loopback_ice, webrtc_rig
from tests.test_webrtc import FPS

__all__ = ["clip", "clip_path", "loopback_ice"]  # fixtures shared with test_webrtc


def decoded_size(reply: httpx.Response) -> tuple[int, int]:
    """The reply is a JPEG: PyAV's mjpeg decoder gives its one picture's size."""
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "image/jpeg"
    assert reply.content[:2] == b"\xff\xd8"  # SOI
    with av.open(io.BytesIO(reply.content), format="jpeg_pipe") as container:
        (frame,) = list(container.decode(video=0))
        assert container.streams.video[0].codec_context.name == "mjpeg"
    return frame.width, frame.height


def assert_not_live(reply: httpx.Response) -> None:
    assert reply.status_code == 409, reply.text
    assert "is not live" in reply.json()["error"]["message"]


async def test_live_rtsp_camera_snapshot_is_a_jpeg(tmp_path: Path) -> None:
    require_binary("ffmpeg", "apt-get install ffmpeg")
    with rtsp_camera() as source:  # rtsp://127.0.0.1:P/live: a camera Google serves...
        google = FakeGoogle(rtsp_url=source)
        google.devices["project-1"] = [camera("d0", "Porch")]
        # ...and, as the path "live" of MediaMTX's RTSP port, what MediaMTX republishes.
        async with google.serve(), nest_sidecar(
                tmp_path, google, mediamtx_rtsp_url=source.rsplit("/", 1)[0]) as (
                running, events, client):
            await add_credential(client, google, google.issue_refresh_token())
            await events.wait("credentials", "authenticated")
            await running.sidecar.nest.sync.sync(1)
            (item,) = (await client.get("/api/cameras")).json()["items"]
            await enable(client, item["id"], "live")
            url = f"/api/cameras/{item['id']}/snapshot"
            assert_not_live(await client.get(url))  # no reader yet: no stream session

            # A reader arrived: MediaMTX's demand hook asks the sidecar for the source.
            source_reply = await client.get(
                "/hooks/source/live", headers={"Authorization": f"Bearer {running.hook_secret}"})
            assert source_reply.status_code == 200 and source_reply.text.startswith("rtsp ")
            assert decoded_size(await client.get(url)) == (320, 240)

            anonymous = await httpx.AsyncClient(base_url=running.url).get(url)
            assert anonymous.status_code == 401 and "error" in anonymous.json()
            for unknown in ("999", str(2**100)):  # the second is past any id column
                missing = await client.get(f"/api/cameras/{unknown}/snapshot")
                assert missing.status_code == 404 and "error" in missing.json()

            await running.sidecar.nest.streams.stop(item["id"], "test")
            assert_not_live(await client.get(url))


async def test_live_webrtc_camera_snapshot_is_its_last_keyframe(clip: Clip,
                                                               tmp_path: Path) -> None:
    peer = FakeNestWebRtc(clip, lifetime=120.0)
    async with webrtc_rig(tmp_path, peer) as rig:
        (item,) = (await rig.client.get("/api/cameras")).json()["items"]
        url = f"/api/cameras/{item['id']}/snapshot"
        assert_not_live(await rig.client.get(url))

        hook = await rig.mediamtx.start("demand", PATH)
        webrtc = rig.running.sidecar.nest.streams.webrtc
        await wait_until(lambda: webrtc.keyframe(item["id"]) is not None, seconds=20)
        first = decoded_size(await rig.client.get(url))
        assert first == (640, 360)  # make_clip's size
        # Later keyframes too (the publisher keeps the newest one).
        await wait_until(lambda: any(s.tracks["video"].sent >= 2 * FPS
                                     for s in peer.sessions.values()), seconds=20)
        assert decoded_size(await rig.client.get(url)) == first

        anonymous = await httpx.AsyncClient(base_url=rig.running.url).get(url)
        assert anonymous.status_code == 401

        await end_demand(rig, hook)
        assert_not_live(await rig.client.get(url))


def test_keyframe_without_in_band_parameter_sets_decodes_with_the_kept_ones(clip: Clip
                                                                            ) -> None:
    """Cameras need not repeat SPS/PPS on every IDR: the publisher keeps the first ones."""
    keyframe = next(data for data in clip.payloads("video") if NAL_IDR in nal_types(data))
    units = [b"\x00\x00\x01" + unit for unit in keyframe.split(b"\x00\x00\x01")[1:]]
    parameter_sets = b"".join(u for u in units if u[3] & 0x1F in (7, 8))
    bare = b"".join(u for u in units if u[3] & 0x1F not in (7, 8))
    assert parameter_sets and 7 not in nal_types(bare)
    with pytest.raises(ValueError):
        keyframe_jpeg(bare, b"")
    jpeg = keyframe_jpeg(bare, parameter_sets)
    with av.open(io.BytesIO(jpeg), format="jpeg_pipe") as container:
        (frame,) = list(container.decode(video=0))
    assert (frame.width, frame.height) == (640, 360)
