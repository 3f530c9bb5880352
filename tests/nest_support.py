"""Helpers for the Nest tests: the sidecar pointed at the fake Google, and an event recorder."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx

from nestmtx_sidecar.nest.google.quota import QuotaLimiter
from nestmtx_sidecar.nest.google.sdm import SdmClient
from tests.conftest import Events, RunningSidecar, make_settings, serve_in_loop
from tests.fakes.google import FakeGoogle
from tests.services import ROOT, require, require_binary


@contextlib.asynccontextmanager
async def nest_sidecar(tmp_path: Path, google: FakeGoogle, **overrides: Any
                       ) -> AsyncIterator[tuple[RunningSidecar, Events, httpx.AsyncClient]]:
    """The in-process sidecar on the fake Google; yields it, its events and a logged-in client."""
    overrides = {"google_token_uri": google.token_endpoint, "sdm_api_url": google.sdm_url,
                 **overrides}
    settings = make_settings(tmp_path, **overrides)
    async with serve_in_loop(settings) as running:
        events = Events.subscribed(running.sidecar.bus)
        token = await running.login()
        async with httpx.AsyncClient(base_url=running.url, timeout=30,
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            yield running, events, client


async def add_credential(client: httpx.AsyncClient, google: FakeGoogle,
                         refresh_token: str | None = None, project: str = "project-1",
                         **fields: Any) -> dict[str, Any]:
    payload = {"description": "Home", "oauth_client_id": google.client_id,
               "oauth_client_secret": google.client_secret, "dac_project_id": project, **fields}
    if refresh_token:
        payload["refresh_token"] = refresh_token
    reply = await client.post("/api/credentials", json=payload)
    assert reply.status_code == 201, reply.text
    return reply.json()


async def enable(client: httpx.AsyncClient, camera_id: int, path: str) -> None:
    reply = await client.put(f"/api/cameras/{camera_id}",
                             json={"mtx_path": path, "is_enabled": True})
    assert reply.status_code == 200, reply.text


@contextlib.contextmanager
def rtsp_camera() -> Iterator[str]:
    """A real RTSP source on loopback (GStreamer); yields its rtsp:// URL."""
    python = "/usr/bin/python3"
    probe = subprocess.run([python, "-c", "import gi; gi.require_version('GstRtspServer', "
                            "'1.0'); from gi.repository import GstRtspServer"],
                           capture_output=True) if os.path.exists(python) else None
    require(probe is not None and probe.returncode == 0, "GStreamer RTSP server for python3",
            "apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good "
            "gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav")
    proc = subprocess.Popen([python, str(ROOT / "tests" / "fakes" / "rtsp_source.py")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().decode().strip()  # printed once it serves
        assert port.isdigit(), "the RTSP source did not start"
        yield f"rtsp://127.0.0.1:{port}/live"
    finally:
        proc.terminate()
        proc.wait(10)


class RtspReceiver:
    """Stands in for MediaMTX's RTSP port: `ffmpeg -rtsp_flags listen` counting video packets."""

    def __init__(self, port: int, path: str) -> None:
        self.url = f"rtsp://127.0.0.1:{port}/{path}"
        self.frames = 0
        self._got_frames = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ffmpeg = require_binary("ffmpeg", "apt-get install ffmpeg")
        self._proc = await asyncio.create_subprocess_exec(
            ffmpeg, "-hide_banner", "-loglevel", "error", "-rtsp_flags", "listen",
            "-i", self.url, "-map", "0:v", "-c", "copy", "-f", "framecrc", "pipe:1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            stdin=asyncio.subprocess.DEVNULL)
        self._reader = asyncio.create_task(self._count())

    async def _count(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for line in self._proc.stdout:
            if line[:1].isdigit():  # "0, dts, pts, duration, size, crc" per packet
                self.frames += 1
                if self.frames >= 30:
                    self._got_frames.set()

    async def wait_frames(self, within: float = 20.0) -> int:
        await asyncio.wait_for(self._got_frames.wait(), within)
        return self.frames

    async def stop(self) -> None:
        if self._proc and self._proc.returncode is None:
            self._proc.terminate()
            await self._proc.wait()
        if self._reader:
            await self._reader


def sdm_client(google: FakeGoogle, http: httpx.AsyncClient, limiter: QuotaLimiter | None = None,
               valid_for: float = 3600.0) -> SdmClient:
    """The real SdmClient on the fake Google, with an access token it accepts for `valid_for`
    seconds, for tests that drive the stream parts without a token keeper."""
    token = "fake-access-token"
    google.access_tokens[token] = time.monotonic() + valid_for

    async def tokens(credential_id: int) -> str:
        return token

    return SdmClient(google.sdm_url, tokens, http, limiter)
