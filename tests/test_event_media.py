"""Event pictures and clips: fetched from the fake Google when the event comes, kept in the
data dir, served at the event's URLs with the bearer token, bounded, surviving restarts."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import av
import httpx

from nestmtx_sidecar.events import isoformat
from nestmtx_sidecar.nest.devices.media_store import MediaStore
from nestmtx_sidecar.nest.service import MEDIA_WAIT_SECONDS
from tests.fakes.google import FakeGoogle, camera, jpeg
from tests.fakes.pubsub import FakePubSub
from tests.test_device_events import MOTION, connect, motion, porch, sidecar
from tests.test_sdm_events import fixture

CLIP = "sdm.devices.events.CameraClipPreview.ClipPreview"


@contextlib.asynccontextmanager
async def fakes(*traits: str) -> AsyncIterator[tuple[FakeGoogle, FakePubSub]]:
    google = FakeGoogle(devices={"project-1": [camera("cam-1", "Porch", traits=traits)]})
    async with google.serve():
        pubsub = FakePubSub(google.token_scopes)
        async with pubsub.serve():
            yield google, pubsub


def decoded_size(data: bytes) -> tuple[int, int]:
    """Width and height of the one picture in `data`, as libav decodes it."""
    with av.open(io.BytesIO(data)) as container:
        frame = next(container.decode(video=0))
        return frame.width, frame.height


async def test_an_event_image_is_served_as_the_jpeg_google_made_also_after_a_restart(
        tmp_path: Path) -> None:
    picture = jpeg(96, 64)
    async with fakes("CameraEventImage") as (google, pubsub):
        async with sidecar(tmp_path, google, pubsub) as e:
            await connect(e)
            camera_id = await porch(e)
            google.camera_event("cam-1", "ev/img+1", picture)
            e.pubsub.publish(motion("ev/img+1"))
            event = await e.events.wait("camera", "motion")
            url = f"/api/cameras/{camera_id}/events/ev%2Fimg%2B1/image"
            assert event.details["image"] == url and event.details["clip"] is None
            [generate] = [c for c in google.calls if c.endpoint == "GenerateImage"]
            assert (generate.status, google.count("image", 200)) == (200, 1)
            reply = await e.client.get(url)
            assert reply.status_code == 200, reply.text
            assert reply.headers["content-type"] == "image/jpeg"
            assert reply.content == picture and decoded_size(reply.content) == (96, 64)
            async with httpx.AsyncClient(base_url=e.running.url) as anonymous:
                refused = await anonymous.get(url)
            assert refused.status_code == 401 and refused.json()["error"]["code"] == \
                "unauthorized"
            [kept] = (tmp_path / "data" / "media").iterdir()
            assert stat.S_IMODE(kept.stat().st_mode) == 0o600
            assert stat.S_IMODE(kept.parent.stat().st_mode) == 0o700
            unknown = await e.client.get(f"/api/cameras/{camera_id}/events/nope/image")
            assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
        async with sidecar(tmp_path, google, pubsub) as after:  # same data dir
            reply = await after.client.get(url)
            assert reply.status_code == 200 and reply.content == picture


async def test_an_image_that_cannot_be_had_in_time_gives_null_without_delaying_the_event(
        tmp_path: Path) -> None:
    async with fakes("CameraEventImage") as (google, pubsub), \
            sidecar(tmp_path, google, pubsub) as e:
        await connect(e)
        await porch(e)
        google.camera_event("cam-1", "ev-slow", jpeg())
        google.fail_next("GenerateImage", ("slow", 30.0))  # Google hangs
        start = time.monotonic()
        e.pubsub.publish(motion("ev-slow"))
        event = await e.events.wait("camera", "motion")
        waited = time.monotonic() - start
        assert event.details["image"] is None
        assert waited < MEDIA_WAIT_SECONDS + 2.0, waited  # the bound, plus one long-poll turn
        # An event Google has no picture for (gone, or never there): null, at once.
        e.pubsub.publish(motion("ev-unknown"))
        event = await e.events.wait("camera", "motion", count=2)
        assert event.details["image"] is None
        assert google.count("GenerateImage", 404) == 1
        # The picture URL itself refusing: null too, nothing kept.
        google.camera_event("cam-1", "ev-broken", jpeg())
        google.fail_next("image", 503)
        e.pubsub.publish(motion("ev-broken"))
        event = await e.events.wait("camera", "motion", count=3)
        assert event.details["image"] is None and google.count("image", 503) == 1
        assert not (tmp_path / "data" / "media").exists()  # no picture was ever kept


async def test_a_clip_preview_is_kept_and_served_as_mp4(tmp_path: Path) -> None:
    clip = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8
    async with fakes("CameraClipPreview") as (google, pubsub), \
            sidecar(tmp_path, google, pubsub) as e:
        await connect(e)
        camera_id = await porch(e)
        update = fixture("person_thread")
        update["timestamp"] = isoformat(dt.datetime.now(dt.UTC))
        session = update["resourceUpdate"]["events"][MOTION]["eventSessionId"]
        update["resourceUpdate"]["events"][CLIP]["previewUrl"] = google.preview_url(clip)
        e.pubsub.publish(update)
        motion_event = await e.events.wait("camera", "motion")
        person = await e.events.wait("camera", "person")
        url = f"/api/cameras/{camera_id}/events/{session}/clip"
        assert motion_event.details["clip"] == person.details["clip"] == url
        assert motion_event.details["image"] is None  # no CameraEventImage trait
        assert google.count("clip", 200) == 1  # one download for the session's two events
        reply = await e.client.get(url)
        assert reply.status_code == 200 and reply.headers["content-type"] == "video/mp4"
        assert reply.content == clip


async def test_the_store_stays_under_its_bound_oldest_out_first(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "media", max_bytes=10_000)
    await store.start()
    for n in range(8):
        assert await store.put(1, "image", f"ev-{n}", bytes([n]) * 3000)
    assert store.total <= 10_000
    kept = [n for n in range(8) if store.find(1, "image", f"ev-{n}")]
    assert kept == [5, 6, 7]
    assert sum(p.stat().st_size for p in (tmp_path / "media").iterdir()) == store.total
    assert not await store.put(1, "clip", "huge", bytes(20_000))  # alone over the bound
    assert store.find(1, "clip", "huge") is None
    # A new process rebuilds the index from the files: the same ones, in the same order.
    again = MediaStore(tmp_path / "media", max_bytes=6_000)
    await again.start()
    assert [n for n in range(8) if again.find(1, "image", f"ev-{n}")] == [6, 7]
    path = again.find(1, "image", "ev-6")
    assert path is not None and path.read_bytes() == bytes([6]) * 3000
