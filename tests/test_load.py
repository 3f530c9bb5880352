"""Load and soak: a real `nestmtx-sidecar serve` process, hook POSTs in, 1000 Node.js
socket.io-client sockets out (bench/subscriber.js, which checks order and counts per socket).

Sized to finish in a few minutes on two cores; the benchmark proper is bench/run.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets

from bench.run import Fleet, Server, percentile, rss_mib
from tests.services import ROOT, SidecarProcess, require, require_binary, start_sidecar

pytestmark = pytest.mark.node

NODE_MODULES = ROOT / "tests" / "js" / "node_modules"
CAMERAS = 8  # events spread over several paths; order is checked per path
POSTERS = 4  # each owns CAMERAS / POSTERS paths, so each path's events leave in seq order


@pytest.fixture
async def sidecar(tmp_path: Path) -> AsyncIterator[SidecarProcess]:
    require_binary("node", "apt-get install nodejs npm")
    require((NODE_MODULES / "socket.io-client").is_dir(), "socket.io-client for tests/js",
            "npm ci --prefix tests/js")
    # Warnings only: debug lines would themselves be streamed to every socket as `log`.
    process = start_sidecar(tmp_path, env={"NESTMTX_LOG_LEVEL": "warning"})
    yield process
    process.stop()


async def fleet_of(sidecar: SidecarProcess) -> Fleet:
    server = Server("sidecar", sidecar.url, sidecar.proc, await sidecar.login())
    return Fleet(server, node_modules=NODE_MODULES)


async def post_events(sidecar: SidecarProcess, first: int, count: int, pad: int = 0) -> None:
    """Hook POSTs `first` .. `first + count - 1` of each poster's share, round-robin over
    its cameras; MTX_QUERY carries each camera's sequence number and the send time."""
    per_camera = CAMERAS // POSTERS

    async def poster(index: int) -> None:
        async with httpx.AsyncClient(base_url=sidecar.url, headers={
                "authorization": f"Bearer {sidecar.hook_secret}"}) as client:
            for n in range(first, first + count // POSTERS):
                camera = index * per_camera + n % per_camera
                query = f"seq={n // per_camera}&t={time.time() * 1000:.3f}&pad={'x' * pad}"
                reply = await client.post("/hooks/ready", json={
                    "MTX_PATH": f"cam{camera}", "MTX_QUERY": query})
                assert reply.status_code == 202, reply.text

    await asyncio.gather(*(poster(i) for i in range(POSTERS)))


async def wait_delivered(fleet: Fleet, frames_per_socket: list[int], seconds: float) -> None:
    """Until each subscriber process has all the frames its sockets should have."""
    await asyncio.gather(*(
        proc.ask(f"wait {proc.sockets * frames}", "reached", seconds)
        for proc, frames in zip(fleet.procs, frames_per_socket, strict=True)))


async def test_1000_sockets_get_10000_events_exactly_once_in_order_with_flat_memory(
        sidecar: SidecarProcess) -> None:
    fleet = await fleet_of(sidecar)
    try:
        # Ten sockets take everything (3 frames per event, NestMTX's way); the other 990
        # chose one topic: 1000 sockets without 30 million frames on two cores.
        await fleet.grow_to(10)
        await fleet.grow_to(1000, subscribe=["camera:ready"])
        frames = [3 if proc.sockets == 10 else 1 for proc in fleet.procs]
        events, rounds = 10_000, 10
        per_round = events // rounds
        warm_rss = 0.0
        for round_ in range(rounds):
            await post_events(sidecar, round_ * per_round // POSTERS, per_round)
            await wait_delivered(fleet, [f * per_round * (round_ + 1) for f in frames], 120)
            if round_ == 0:  # after the first round: buffers and caches have their size
                warm_rss = rss_mib(sidecar.proc.pid)
        end_rss = rss_mib(sidecar.proc.pid)
        for proc, per_event in zip(fleet.procs, frames, strict=True):
            report = await proc.ask("report", "report")
            assert report["received"] == [events * per_event] * proc.sockets
            assert report["orderErrors"] == 0
            assert report["connected"] == proc.sockets
        assert end_rss - warm_rss < 25, (warm_rss, end_rss)
    finally:
        await fleet.stop()


async def stalled_socket(sidecar: SidecarProcess, token: str) -> websockets.ClientConnection:
    """A raw websocket client that completes the Socket.IO handshake, then stops reading."""
    stalled = await websockets.connect(
        sidecar.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket",
        max_size=None, compression=None)
    json.loads((await stalled.recv())[1:])  # engine.io OPEN
    await stalled.send("40" + json.dumps({"token": token}))
    assert (await stalled.recv()).startswith("40")
    stalled.transport.pause_reading()
    return stalled


async def test_a_stalled_client_neither_delays_the_others_nor_grows_memory(
        sidecar: SidecarProcess) -> None:
    fleet = await fleet_of(sidecar)
    try:
        await fleet.grow_to(10)
        before = rss_mib(sidecar.proc.pid)
        stalled = await stalled_socket(sidecar, fleet.server.token or "")
        # 2000 events of ~8 KiB, 3 frames each: ~48 MiB bound for the stalled socket, far
        # past its 8 MiB write bound plus what the kernel buffers on loopback.
        events, rounds = 2000, 10
        for round_ in range(rounds):
            await post_events(sidecar, round_ * events // rounds // POSTERS, events // rounds,
                              pad=8000)
            await wait_delivered(fleet, [3 * events // rounds * (round_ + 1)], 60)
        grown = rss_mib(sidecar.proc.pid) - before
        report = await fleet.report()
        assert report["received"] == [3 * events] * 10
        assert report["order_errors"] == 0
        assert "not reading its events" in sidecar.log()
        assert grown < 40, grown
        # The others never waited on it: 99% of their frames arrived well within a second.
        p99 = percentile(report["hist"], 0.99)
        assert p99 is not None and p99 < 1000, p99
        stalled.transport.abort()
    finally:
        await fleet.stop()
