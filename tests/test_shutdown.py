"""SIGTERM on a real `nestmtx-sidecar serve`: stop taking work, drain, stop Nest streams, exit
within 10 s."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

import httpx
import socketio
from cryptography.fernet import Fernet

from tests.fakes.google import FakeGoogle, camera
from tests.process_support import enable_cameras, source
from tests.services import SidecarProcess, create_database, start_sidecar, wait_until

EXIT_WITHIN = 10.0


def terminate(replica: SidecarProcess) -> float:
    """Send SIGTERM; returns when it was sent."""
    replica.proc.send_signal(signal.SIGTERM)
    return time.monotonic()


async def exit_time(replica: SidecarProcess, since: float) -> float:
    """Seconds from `since` until the process exited cleanly (the loop serves meanwhile)."""
    returncode = await asyncio.to_thread(replica.proc.wait, EXIT_WITHIN + 5)
    # uvicorn re-raises the signal once it has shut down cleanly: 143 in Docker.
    assert returncode in (0, -signal.SIGTERM), replica.log()[-3000:]
    return time.monotonic() - since


async def refused(replica: SidecarProcess) -> bool:
    try:
        async with httpx.AsyncClient(base_url=replica.url) as client:
            await client.get("/healthz")
    except httpx.ConnectError:
        return True
    return False


async def test_sigterm_with_redis_and_sockets_connected_exits_in_time(
        tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    replica = start_sidecar(tmp_path, {
        "NESTMTX_DATABASE_URL": await create_database(postgres_url, f"sd{uuid.uuid4().hex}"),
        "NESTMTX_REDIS_URL": redis_url, "NESTMTX_APP_KEY": Fernet.generate_key().decode()})
    client = socketio.AsyncClient(reconnection=False)
    dropped = asyncio.Event()
    client.on("disconnect", lambda *_: dropped.set())
    try:
        await client.connect(replica.url, auth={"token": await replica.login()},
                             transports=["websocket"])
        assert await exit_time(replica, terminate(replica)) < EXIT_WITHIN
        await asyncio.wait_for(dropped.wait(), 5)
        assert "Application shutdown complete" in replica.log()
    finally:
        await client.disconnect()
        replica.stop(signal.SIGKILL)


async def test_sigterm_drains_then_stops_every_nest_stream(tmp_path: Path) -> None:
    google = FakeGoogle()
    google.devices["project-1"] = [camera(name) for name in ("front", "back", "side")]
    async with google.serve():
        replica = start_sidecar(tmp_path, {"NESTMTX_GOOGLE_TOKEN_URI": google.token_endpoint,
                                           "NESTMTX_SDM_API_URL": google.sdm_url})
        try:
            assert sorted(await enable_cameras(replica, google)) == ["back", "front", "side"]
            for path in ("front", "back"):
                assert (await source(replica, path)).status_code == 200
            # A demand still in flight when SIGTERM comes: Google takes 2 s to answer it.
            google.fail_next("GenerateRtspStream", ("slow", 2.0))
            in_flight = asyncio.create_task(source(replica, "side"))
            await wait_until(lambda: not google._failures["GenerateRtspStream"])  # arrived

            signalled = terminate(replica)
            await wait_until(lambda: refused(replica), 1.5)  # no new work...
            assert not in_flight.done()
            reply = await in_flight  # ...but the request already taken is answered
            assert reply.status_code == 200 and reply.text.startswith("rtsp "), reply.text
            assert await exit_time(replica, signalled) < EXIT_WITHIN
        finally:
            await asyncio.to_thread(replica.stop, signal.SIGKILL)

    stops = {c.device.rsplit("/", 1)[1] for c in google.calls
             if c.endpoint == "StopRtspStream" and c.status == 200}
    assert stops == {"front", "back", "side"}
    assert google.count("StopRtspStream") == 3
