"""Nest stream sessions across restarts, persistent cameras, and the RTSP lifecycle on PostgreSQL.

Restarts are real: `nestmtx-sidecar serve` processes stopped and started on one data dir. A crash
(SIGKILL) leaves the session at Google and in the store; SIGTERM would stop it (test_shutdown).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from cryptography.fernet import Fernet

from tests.fakes.google import FakeGoogle, camera
from tests.mediamtx import MediaMTX, hook_settings
from tests.nest_support import RtspReceiver, rtsp_camera
from tests.process_support import enable_cameras, source
from tests.services import (
    ROOT,
    SidecarProcess,
    free_port,
    require_binary,
    start_sidecar,
    wait_until,
)
from tests.test_nest_streams import cameras_ready

HOOK_PATH = "/usr/local/bin:/usr/bin:/bin"


def process_env(google: FakeGoogle, data_dir: Path, **extra: str) -> dict[str, str]:
    """One data dir and hook secret for every start: the restarted sidecar is the same one."""
    return {"NESTMTX_GOOGLE_TOKEN_URI": google.token_endpoint,
            "NESTMTX_SDM_API_URL": google.sdm_url, "NESTMTX_DATA_DIR": str(data_dir),
            "NESTMTX_HOOK_SECRET": secrets.token_urlsafe(24), **extra}


async def demanded(google: FakeGoogle, tmp_path: Path, env: dict[str, str]
                   ) -> tuple[SidecarProcess, str]:
    """A sidecar process serving camera `front`, with its stream demanded; returns its URL."""
    google.devices["project-1"] = [camera("front", "Front")]
    replica = start_sidecar(tmp_path, env)
    assert await enable_cameras(replica, google) == ["front"]
    reply = await source(replica, "front")
    assert reply.status_code == 200 and reply.text.startswith("rtsp "), reply.text
    return replica, reply.text


async def stop(replica: SidecarProcess) -> None:
    # Off the loop: the fake Google must answer the StopRtspStream of a SIGTERMed sidecar.
    await asyncio.to_thread(replica.stop)


def all_expired(google: FakeGoogle) -> bool:
    return all(s.expires_at <= time.monotonic() for s in google.streams.values())


async def test_restarted_sidecar_resumes_and_keeps_extending(tmp_path: Path) -> None:
    # Extended 2.4 s before expiry, every 9.6 s: a loaded machine has ~10 s to restart the
    # sidecar before the stream it must resume expires.
    lifetime = 12.0
    google = FakeGoogle(stream_lifetime=lifetime)
    async with google.serve():
        env = process_env(google, tmp_path / "data")
        first, url = await demanded(google, tmp_path, env)
        try:
            # Stored, not just answered: a crash between Google's answer and the store would
            # leave a spent extension token behind, and a regenerated stream.
            await wait_until(lambda: "stream extended until" in first.log(), lifetime + 5)
        finally:
            first.stop(signal.SIGKILL)  # a crash: the stream stays live at Google
        second = start_sidecar(tmp_path, env)
        try:
            await wait_until(lambda: google.count("ExtendRtspStream") == 3, 2 * lifetime + 5)
            again = await source(second, "front")
            assert again.text == url  # the next demand joins the resumed stream
            assert "resumed stream 1" in second.log()
        finally:
            await stop(second)

    extends = [c for c in google.calls if c.endpoint == "ExtendRtspStream"]
    assert [c.status for c in extends] == [200] * 3
    gaps = [b.at - a.at for a, b in itertools.pairwise(extends)]
    assert all(0.6 * lifetime < gap < lifetime for gap in gaps), gaps  # before each expiry
    assert google.count("GenerateRtspStream") == 1  # never a new stream
    assert google.count("StopRtspStream", status=200) == 1  # the second one's SIGTERM


async def test_a_stream_stored_under_another_app_key_is_dropped_and_the_sidecar_goes_on(
        tmp_path: Path) -> None:
    google = FakeGoogle(stream_lifetime=60)
    async with google.serve():
        env = process_env(google, tmp_path / "data")
        first, _ = await demanded(google, tmp_path, env)
        first.stop(signal.SIGKILL)  # the session stays stored, encrypted with the first key
        second = start_sidecar(tmp_path, {**env, "NESTMTX_APP_KEY": Fernet.generate_key().decode()})
        try:
            await wait_until(lambda: "its stored stream session is dropped" in second.log(), 15)
            assert "resumed stream" not in second.log()
            # The lease holder's loop lives on: a demand gets an answer saying what is wrong.
            reply = await source(second, "front")
            assert reply.status_code == 503, reply.text
            assert "credential 1 is not authenticated with Google" in reply.text
            assert "Traceback" not in second.log()
        finally:
            await stop(second)
    assert google.count("ExtendRtspStream") == 0


async def test_stream_expired_while_down_is_regenerated_not_extended(tmp_path: Path) -> None:
    lifetime = 4.0
    google = FakeGoogle(stream_lifetime=lifetime)
    async with google.serve():
        env = process_env(google, tmp_path / "data")
        first, url = await demanded(google, tmp_path, env)
        first.stop(signal.SIGKILL)
        await wait_until(lambda: all_expired(google), lifetime + 2)
        second = start_sidecar(tmp_path, env)
        try:
            # Demand remains (no unDemand came): a new stream, then extended on its schedule.
            await wait_until(lambda: google.count("GenerateRtspStream") == 2, 10)
            await wait_until(lambda: google.count("ExtendRtspStream") == 1, lifetime + 5)
            again = await source(second, "front")
            assert again.status_code == 200 and again.text != url
            assert "expired meanwhile: generating a new one" in second.log()
        finally:
            await stop(second)
    assert google.count("ExtendRtspStream", status=200) == 1  # the dead one was never asked
    assert google.count("GenerateRtspStream") == 2


async def test_stream_whose_demand_ended_while_down_is_dropped(tmp_path: Path) -> None:
    lifetime = 4.0
    google = FakeGoogle(stream_lifetime=lifetime)
    spool = tmp_path / "spool"
    async with google.serve():
        env = process_env(google, tmp_path / "data", NESTMTX_SPOOL_DIR=str(spool),
                          NESTMTX_SPOOL_REPLAY_DELAY="0.2")
        first, _url = await demanded(google, tmp_path, env)
        first.stop(signal.SIGKILL)
        # MediaMTX's unDemand while the sidecar is down: the hook spools it.
        mediamtx = MediaMTX(hook_settings(), {
            "PATH": HOOK_PATH, "NESTMTX_URL": first.url, "NESTMTX_SPOOL_DIR": str(spool),
            "NESTMTX_HOOK_SECRET": env["NESTMTX_HOOK_SECRET"]})
        undemand = await mediamtx.run("unDemand", "front")
        assert undemand.returncode == 0 and "spooled" in undemand.stderr_lines[-1]
        await wait_until(lambda: all_expired(google), lifetime + 2)
        second = start_sidecar(tmp_path, env)
        try:
            await wait_until(lambda: not list(spool.glob("*.json")), 15)  # replayed
            await wait_until(lambda: "stream stopped (no more demand)" in second.log(), 5)
            calls = len(google.calls)
            await asyncio.sleep(lifetime)  # a whole lifetime: nothing may still be armed
            assert len(google.calls) == calls
        finally:
            await stop(second)
    # Whether the replay came before the resumed stream was regenerated or after, no stream
    # is left: every new one was stopped, and the dead one was never extended.
    assert google.count("ExtendRtspStream") == 0
    assert google.count("StopRtspStream", status=200) == google.count("GenerateRtspStream") - 1


async def test_persistent_camera_streams_from_run_on_init_without_readers(tmp_path: Path
                                                                          ) -> None:
    require_binary("ffmpeg", "apt-get install ffmpeg")
    with rtsp_camera() as source_url:
        google = FakeGoogle(rtsp_url=source_url, stream_lifetime=4.0)
        async with google.serve(), cameras_ready(tmp_path, google) as (
                running, events, client, ids):
            reply = await client.put(f"/api/cameras/{ids[0]}", json={"is_persistent": True})
            assert reply.status_code == 200, reply.text
            paths = await mediamtx_config(running.settings.data_dir)
            assert "runOnInit" in paths["cam0"]

            rtsp_port = free_port()
            receiver = RtspReceiver(rtsp_port, "cam0")
            await receiver.start()
            mediamtx = MediaMTX(paths["cam0"], {
                "PATH": HOOK_PATH, "NESTMTX_URL": running.url,
                "NESTMTX_HOOK_SECRET": running.hook_secret}, rtsp_port=rtsp_port)
            hook = await mediamtx.start("init", "cam0")  # no reader, no runOnDemand
            try:
                assert await receiver.wait_frames() >= 30
                await events.wait("camera", "extended", count=2, within=15)
                assert hook.proc.returncode is None
                assert google.count("GenerateRtspStream") == 1
                assert not events.named("camera", "read")  # nobody read it meanwhile
            finally:
                await hook.stop()
                await receiver.stop()
            assert events.named("camera", "demand")[0].details["path"] == "cam0"


async def mediamtx_config(data_dir: Path) -> dict[str, Any]:
    """`nestmtx-sidecar mediamtx-config`'s paths, pointing at this checkout's hook script."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nestmtx_sidecar", "mediamtx-config",
        "--hook", str(ROOT / "hooks" / "nestmtx-hook"),
        env={"PATH": HOOK_PATH, "NESTMTX_DATA_DIR": str(data_dir)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    return yaml.safe_load(stdout)["paths"]
