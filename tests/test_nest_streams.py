"""Device sync and live streams against the fake Google, through the real demand hook."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nestmtx_sidecar.nest.google.quota import QuotaLimiter, Quotas
from tests.conftest import RunningSidecar
from tests.fakes.google import FakeGoogle, camera
from tests.mediamtx import MediaMTX, hook_settings
from tests.nest_support import (
    Events,
    RtspReceiver,
    add_credential,
    enable,
    nest_sidecar,
    rtsp_camera,
)
from tests.services import create_database, free_port, require_binary, wait_until


@contextlib.asynccontextmanager
async def cameras_ready(tmp_path: Path, google: FakeGoogle, count: int = 1, **overrides: Any
                        ) -> AsyncIterator[tuple[RunningSidecar, Events, httpx.AsyncClient,
                                                 list[int]]]:
    """Sidecar + authenticated credential + `count` synced cameras enabled as cam0, cam1..."""
    google.devices["project-1"] = [camera(f"d{i}", f"Cam {i}") for i in range(count)]
    async with nest_sidecar(tmp_path, google, **overrides) as (running, events, client):
        await add_credential(client, google, google.issue_refresh_token())
        await events.wait("credentials", "authenticated")
        await running.sidecar.nest.sync.sync(1)
        items = (await client.get("/api/cameras", params={"itemsPerPage": "100",
                                                         "sortBy": "uid"})).json()["items"]
        ids = [item["id"] for item in items]
        for i, camera_id in enumerate(ids):
            await enable(client, camera_id, f"cam{i}")
        yield running, events, client, ids


def _source(running: RunningSidecar, client: httpx.AsyncClient, path: str
            ) -> Any:
    return client.get(f"/hooks/source/{path}",
                      headers={"Authorization": f"Bearer {running.hook_secret}"})


async def test_device_sync_upserts_and_marks_missing(tmp_path):
    google = FakeGoogle()
    google.devices["project-1"] = [
        camera("d1", "Porch cam", room="Porch"), camera("d2", "", room="Garden"),
        camera("d3", "Doorbell", protocols=("WEB_RTC",))]
    async with google.serve(), nest_sidecar(tmp_path, google) as (running, events, client):
        await add_credential(client, google, google.issue_refresh_token())
        await events.wait("credentials", "authenticated")
        await running.sidecar.nest.sync.sync(1)  # also runs by itself: this one is awaited
        items = {i["uid"].rsplit("/", 1)[1]: i for i in
                 (await client.get("/api/cameras")).json()["items"]}
        assert items["d1"]["name"] == "Porch cam" and items["d1"]["room"] == "Porch"
        assert items["d2"]["name"] == "Garden"  # no customName: the room's display name
        assert items["d1"]["protocols"] == ["RTSP"] and items["d3"]["protocols"] == ["WEB_RTC"]
        assert items["d1"]["resolution"] == {"width": 640, "height": 480}
        assert items["d1"]["video_codecs"] == ["H264"]
        assert not any(i["is_missing"] for i in items.values())

        google.devices["project-1"] = google.devices["project-1"][:2]
        await running.sidecar.nest.sync.sync(1)
        after = {i["uid"].rsplit("/", 1)[1]: i for i in
                 (await client.get("/api/cameras")).json()["items"]}
        assert after["d3"]["is_missing"] is True and after["d1"]["is_missing"] is False



@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
async def test_stream_lifecycle_through_the_demand_hook(tmp_path, store, request):
    require_binary("ffmpeg", "apt-get install ffmpeg")
    database_url = ""
    if store == "postgresql":
        database_url = await create_database(request.getfixturevalue("postgres_url"),
                                             f"n{uuid.uuid4().hex}")
    with rtsp_camera() as source:
        # Google's 5-minute streams and 1-minute quota window, both scaled down alike
        google = FakeGoogle(rtsp_url=source, stream_lifetime=4.0, quota_window=6.0)
        async with google.serve(), cameras_ready(tmp_path, google,
                                                 database_url=database_url) as (
                running, events, _client, _ids):
            running.sidecar.nest.sdm.limiter = QuotaLimiter(Quotas(window=6.0))
            rtsp_port = free_port()
            receiver = RtspReceiver(rtsp_port, "cam0")
            await receiver.start()
            mediamtx = MediaMTX(hook_settings(), {
                "PATH": "/usr/local/bin:/usr/bin:/bin", "NESTMTX_URL": running.url,
                "NESTMTX_HOOK_SECRET": running.hook_secret}, rtsp_port=rtsp_port)
            hook = await mediamtx.start("demand", "cam0")
            try:
                # real frames: GStreamer -> hook's ffmpeg (-c copy) -> the listening receiver
                assert await receiver.wait_frames() >= 30
                # extensions on schedule, several in a row, each re-armed from expiresAt
                third = await events.wait("camera", "extended", count=3, within=20)
                extends = [c for c in google.calls if c.endpoint == "ExtendRtspStream"]
                assert all(c.status == 200 for c in extends)
                gaps = [b.at - a.at for a, b in itertools.pairwise(extends)]
                assert all(2.5 < gap < 4.0 for gap in gaps), gaps
                assert third.details["expiresAt"].endswith("Z")
                assert hook.proc.returncode is None  # still streaming
                frames = receiver.frames

                # a forced failure: Google refuses to extend -> failed-extension, then a new stream
                google.fail_next("ExtendRtspStream", "FAILED_PRECONDITION")
                failed = await events.wait("camera", "failed-extension", within=10)
                assert failed.details["reason"] == "failed_precondition"
                assert failed.details["willRetry"] is False and failed.details["attempt"] == 1
                assert failed.details["regenerating"] is True
                assert isinstance(failed.details["error"], str)
                await events.wait("camera", "extended", within=10,
                                  where=lambda e: e.details["generation"] == 2)
                assert google.count("GenerateRtspStream") == 2
                # never an extension for a stream that had already expired
                assert google.count("ExtendRtspStream", status=400) == 1  # the scripted one
                assert receiver.frames > frames

                # transient failures are retried before expiry and say so
                google.fail_next("ExtendRtspStream", 503)
                retried = await events.wait("camera", "failed-extension", count=2, within=10)
                assert retried.details["willRetry"] is True
                assert retried.details["reason"] == "unavailable"
                extended = len(events.named("camera", "extended"))
                await events.wait("camera", "extended", count=extended + 1, within=10)
            finally:
                result = await hook.stop()
                await receiver.stop()
            assert result.returncode in (0, 255)  # ffmpeg's exit on SIGINT

            undemand = await mediamtx.run("unDemand", "cam0")
            assert undemand.returncode == 0
            await events.wait("camera", "unDemand")
            await running.sidecar.bus.drain()  # the POST is answered before Google is told
            stops = [c for c in google.calls if c.endpoint == "StopRtspStream"]
            assert len(stops) == 1 and stops[0].status == 200
            calls = len(google.calls)
            await asyncio.sleep(4.5)  # a whole stream lifetime: no timer may still be armed
            assert len(google.calls) == calls


async def test_a_stop_while_an_extension_is_answered_stops_the_extended_stream(tmp_path):
    google = FakeGoogle(stream_lifetime=3.0)
    async with google.serve(), cameras_ready(tmp_path, google) as (
            running, _events, client, ids):
        held = google.hold("ExtendRtspStream")
        assert (await _source(running, client, "cam0")).status_code == 200
        async with asyncio.timeout(10):
            await held.reached.wait()  # Google has extended; its answer is on its way
        mediamtx = MediaMTX(hook_settings(), {
            "PATH": "/usr/local/bin:/usr/bin:/bin", "NESTMTX_URL": running.url,
            "NESTMTX_HOOK_SECRET": running.hook_secret})
        assert (await mediamtx.run("unDemand", "cam0")).returncode == 0
        streams = running.sidecar.nest.streams
        await wait_until(lambda: not streams.is_live(ids[0]))  # the stop has begun
        held.release()
        await running.sidecar.bus.drain()
        # The extended stream was stopped, with the token of Google's late answer.
        assert [c.status for c in google.calls if c.endpoint == "StopRtspStream"] == [200]
        assert all(stream.stopped for stream in google.streams.values())


async def test_concurrent_demand_never_breaches_quotas(tmp_path):
    window = 3.0  # Google's minute, scaled down; the fake enforces the same limits
    google = FakeGoogle(quota_window=window, stream_lifetime=60)
    async with google.serve(), cameras_ready(tmp_path, google, count=12) as (
            running, _events, client, _ids):
        running.sidecar.nest.sdm.limiter = QuotaLimiter(Quotas(window=window))
        started = time.monotonic()
        replies = await asyncio.gather(*(_source(running, client, f"cam{i}")
                                         for i in range(12)))
        assert [r.status_code for r in replies] == [200] * 12, [r.text for r in replies]
        urls = {r.text for r in replies}
        assert len(urls) == 12  # separate sessions per camera, one credential
        generates = [c for c in google.calls if c.endpoint == "GenerateRtspStream"]
        assert len(generates) == 12 and all(c.status == 200 for c in generates)
        assert time.monotonic() - started >= window  # two had to wait for a slot
        assert not [c for c in google.calls if c.status == 429]
        # a second demand for a live stream reuses it: no Google call
        again = await _source(running, client, "cam0")
        assert again.text in urls and google.count("GenerateRtspStream") == 12


async def test_rate_limit_is_reported_and_not_retried(tmp_path):
    google = FakeGoogle()
    async with google.serve(), cameras_ready(tmp_path, google, count=2) as (
            running, _events, client, _ids):
        google.fail_next("GenerateRtspStream", 429)
        first = await _source(running, client, "cam0")
        assert first.status_code == 503 and "Rate limited" in first.text
        second = await _source(running, client, "cam1")  # same credential: paused, fast
        assert second.status_code == 503 and "pause" in second.text
        assert google.count("GenerateRtspStream") == 1


async def test_slow_google_hits_the_start_timeout(tmp_path):
    google = FakeGoogle()
    async with google.serve(), cameras_ready(tmp_path, google, stream_start_timeout=1.0) as (
            running, _events, client, _ids):
        google.fail_next("GenerateRtspStream", ("slow", 5))
        started = time.monotonic()
        reply = await _source(running, client, "cam0")
        assert reply.status_code == 503 and "camera" in reply.text
        assert time.monotonic() - started < 3


async def test_unknown_path_exits_at_once_without_google(tmp_path):
    google = FakeGoogle()
    async with google.serve(), cameras_ready(tmp_path, google) as (running, *_):
        mediamtx = MediaMTX(hook_settings(), {
            "PATH": "/usr/local/bin:/usr/bin:/bin", "NESTMTX_URL": running.url,
            "NESTMTX_HOOK_SECRET": running.hook_secret})
        calls = len(google.calls)
        result = await mediamtx.run("demand", "nobody-here", within=10)
        assert result.returncode != 0
        assert len(result.stderr_lines) == 1 and "nobody-here" in result.stderr_lines[0]
        assert len(google.calls) == calls


async def test_disabling_or_deleting_the_credential_stops_streams(tmp_path):
    google = FakeGoogle()
    async with google.serve(), cameras_ready(tmp_path, google, count=2) as (
            running, _events, client, ids):
        assert (await _source(running, client, "cam0")).status_code == 200
        assert (await _source(running, client, "cam1")).status_code == 200
        reply = await client.put(f"/api/cameras/{ids[0]}", json={"is_enabled": False})
        assert reply.status_code == 200
        assert [c.device for c in google.calls if c.endpoint == "StopRtspStream"] == [
            "enterprises/project-1/devices/d0"]
        reply = await client.delete("/api/credentials/1")
        assert reply.status_code == 200
        stops = [c for c in google.calls if c.endpoint == "StopRtspStream"]
        assert [c.device for c in stops] == ["enterprises/project-1/devices/d0",
                                             "enterprises/project-1/devices/d1"]
        assert all(c.status == 200 for c in stops)
