"""CPU per WebRTC camera: pass-through, `aac`, N cameras at once, against NestMTX's transcode.

    python bench/webrtc_cpu.py [--seconds 30] [--cameras 4] [--native]

Makes a 1080p30 4 Mb/s H.264 + Opus clip and plays it from fake Nest peers (in this process)
to WebRtcPublishers running in a child process (its CPU alone is measured), each publishing
to its own mount point of one RTSP RECORD receiver on loopback (bench/rtsp_record.py, which
counts what arrives). Rows, all from one run:
  - pass-through (audio `opus`) and `aac`, one camera: CPU s per camera-minute;
  - with `--cameras N` (N > 1): N cameras at once in one child, CPU per camera, and the p99 of
    hook-to-Socket.IO latency with the N streaming vs idle: the child then also serves the
    real sidecar on the same event loop, and bench/run.py's poster and socket.io-client
    subscriber measure it;
  - with `--native`: GStreamer's webrtcbin (bench/native_webrtc.py, Debian's PyGObject under
    /usr/bin/python3) fed by the same fake peer, forwarding the same streams untouched to the
    same kind of receiver (rtspclientsink): the floor the pass-through is held to;
  - NestMTX's double ffmpeg transcode of the same clip.
Loopback only: ICE is restricted to 127.0.0.1 in every process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rtsp_record import RecordReceiver, record_receiver  # noqa: E402

LATENCY_EVENTS = 500
LATENCY_RATE = 50.0  # hook POSTs per second: steady, far below capacity


def _loopback_only() -> None:
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def _publishers(urls: list[str], audio: str, env: dict[str, str] | None,
                conn: Connection) -> None:
    """Child process: the sidecar's side, one publisher per URL, and the sidecar itself if
    `env` is given. Streams from "streaming" until the parent says "stop", then sends back
    its CPU seconds, the wall time, each publisher's video frame count in that time and its
    total (what the receiver must have got)."""
    _loopback_only()
    import uvloop

    from nestmtx_sidecar.cli import tune_gc
    from nestmtx_sidecar.config import load_settings
    from nestmtx_sidecar.nest.relay.publisher import WebRtcPublisher
    from tests.conftest import serve_in_loop

    async def run() -> None:
        loop = asyncio.get_running_loop()

        async def generate(offer: str) -> Any:
            conn.send(offer)
            return await loop.run_in_executor(None, conn.recv)

        server = serve_in_loop(load_settings(environ=env)) if env else contextlib.nullcontext()
        async with server:
            publishers = [WebRtcPublisher(url, audio=audio) for url in urls]
            for publisher in publishers:  # one offer at a time over the one pipe
                await publisher.start(generate)
            frames0 = [p.stats.video_frames for p in publishers]
            cpu0, t0 = time.process_time(), time.monotonic()
            conn.send("streaming")
            await loop.run_in_executor(None, conn.recv)  # "stop"
            cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
            frames = [p.stats.video_frames - f for p, f in zip(publishers, frames0, strict=True)]
            for publisher in publishers:
                await publisher.stop()
        conn.send((cpu, wall, frames, [p.stats.video_frames for p in publishers]))

    # As `serve` runs: uvicorn's loop="auto" is uvloop (uvicorn[standard]), GC tuned.
    tune_gc()
    uvloop.run(run())


@dataclass
class Run:
    cpu: float
    wall: float
    frames: list[int]
    p99_ms: float | None = None
    sent: list[int] = field(default_factory=list)  # video access units forwarded, in all
    received: list[int] = field(default_factory=list)  # ... and counted at the receiver

    @property
    def per_camera_minute(self) -> float:
        return self.cpu / self.wall * 60 / max(len(self.frames), 1)

    @property
    def fps(self) -> float:
        return sum(self.frames) / self.wall / max(len(self.frames), 1)

    @property
    def delivery(self) -> str:
        """What the RTSP receiver counted, against what was forwarded."""
        return f"receiver got {sum(self.received)} of {sum(self.sent)} access units"


async def received(receiver: RecordReceiver, sent: list[int]) -> list[int]:
    """Video access units at each mount point, once all `sent` are in (or 5 s have passed:
    a shortfall is then what the row reports)."""
    deadline = time.monotonic() + 5
    while True:
        counts = [c["video"] for c in (await receiver.counts()).values()]
        if time.monotonic() > deadline or all(
                got >= want for got, want in zip(counts, sent, strict=True)):
            return counts
        await asyncio.sleep(0.1)


async def _measure(clip: Path, workdir: Path, *, cameras: int, audio: str = "opus",
                   seconds: float, latency: bool = False) -> Run:
    """`cameras` publishers (0: the sidecar alone) for `seconds`, or for the latency run."""
    from tests.fakes.nest_webrtc import Clip, FakeNestWebRtc

    env = await _sidecar_env(workdir) if latency else None
    source = Clip.load(clip)
    async with record_receiver([f"cam{n}" for n in range(cameras)]) as receiver:
        fakes = [FakeNestWebRtc(source) for _ in receiver.urls]
        parent, child = multiprocessing.Pipe()
        process = multiprocessing.get_context("spawn").Process(
            target=_publishers, args=(receiver.urls, audio, env, child))
        process.start()
        loop = asyncio.get_running_loop()
        try:
            for fake in fakes:
                offer = await loop.run_in_executor(None, parent.recv)
                parent.send(await fake.generate(offer))
            assert await loop.run_in_executor(None, parent.recv) == "streaming"
            p99 = await _latency(env, process.pid) if env else None
            if not latency:
                await asyncio.sleep(seconds)
            parent.send("stop")
            cpu, wall, frames, sent = await loop.run_in_executor(None, parent.recv)
        finally:
            await loop.run_in_executor(None, process.join, 30)
            for fake in fakes:
                await fake.close()
        return Run(cpu, wall, frames, p99, sent, await received(receiver, sent))


async def _sidecar_env(workdir: Path) -> dict[str, str]:
    """The settings bench/run.py gives its sidecar, with its seeded camera rows."""
    from cryptography.fernet import Fernet

    from bench.run import ADMIN_PASSWORD, free_port, seed_sidecar

    data = workdir / f"sidecar-{time.monotonic_ns()}"
    data.mkdir(mode=0o700)
    env = {**os.environ, "NESTMTX_HOST": "127.0.0.1", "NESTMTX_PORT": str(free_port()),
           "NESTMTX_DATA_DIR": str(data), "NESTMTX_ADMIN_PASSWORD": ADMIN_PASSWORD,
           "NESTMTX_LOG_LEVEL": "warning", "NESTMTX_APP_KEY": Fernet.generate_key().decode(),
           "NESTMTX_HOOK_SECRET": "bench-hook-secret"}
    await seed_sidecar(env)
    return env


async def _latency(env: dict[str, str], pid: int) -> float | None:
    """bench/run.py's latency scenario against the child's sidecar: one JS subscriber."""
    import httpx

    from bench.run import ADMIN_PASSWORD, Fleet, Server, latency, wait_healthy

    class _Child:  # what Server needs of a process: its pid, and that it is running
        def __init__(self, pid: int) -> None:
            self.pid = pid

        def poll(self) -> None:
            return None

    url = f"http://127.0.0.1:{env['NESTMTX_PORT']}"
    await wait_healthy(url, "/healthz", _Child(pid))  # type: ignore[arg-type]
    async with httpx.AsyncClient() as client:
        reply = await client.post(url + "/api/auth", json={"username": "admin",
                                                           "password": ADMIN_PASSWORD})
    token = reply.raise_for_status().json()["bearer"]
    server = Server("sidecar", url, _Child(pid), token)  # type: ignore[arg-type]
    fleet = Fleet(server, node_modules=ROOT / "tests" / "js" / "node_modules")
    try:
        await fleet.grow_to(1)
        return (await latency(fleet, LATENCY_EVENTS, LATENCY_RATE))["p99_ms"]
    finally:
        await fleet.stop()


def _transcode_nestmtx(clip: Path, workdir: Path) -> float:
    """NestMTX's way: decode + re-encode (1080p, 10 fps, 100 kb/s), then again to publish."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    first, second = workdir / "t1.ts", workdir / "t2.ts"
    for source, target in ((clip, first), (first, second)):
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(source),
                        "-c:v", "libx264", "-preset", "veryfast", "-s", "1920x1080", "-r", "10",
                        "-b:v", "100k", "-c:a", "libopus", "-f", "mpegts", str(target)],
                       check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


async def _bench(args: argparse.Namespace, workdir: Path, clip: Path) -> list[str]:
    seconds = args.seconds
    passthrough = await _measure(clip, workdir, cameras=1, seconds=seconds)
    aac = await _measure(clip, workdir, cameras=1, audio="aac", seconds=seconds)
    base = passthrough.per_camera_minute
    rows = [f"pass-through, 1 camera:   {passthrough.per_camera_minute:5.2f} CPU s per "
            f"camera-minute ({passthrough.fps:.1f} frames/s in, {passthrough.delivery})",
            f"aac audio, 1 camera:      {aac.per_camera_minute:5.2f} CPU s per camera-minute "
            f"({aac.per_camera_minute / base:.2f}x pass-through, {aac.delivery})"]
    if args.native:
        from bench.native_webrtc import measure_native

        native = await measure_native(clip, seconds)
        rows.append(f"native webrtcbin floor:   {native.per_camera_minute:5.2f} CPU s per "
                    f"camera-minute ({native.fps:.1f} frames/s, {native.delivery}); "
                    f"pass-through is {base / native.per_camera_minute:.2f}x native, aac "
                    f"{aac.per_camera_minute / native.per_camera_minute:.2f}x")
    if args.cameras > 1:
        many = await _measure(clip, workdir, cameras=args.cameras, seconds=seconds)
        rows.append(f"pass-through, {args.cameras} cameras:  {many.per_camera_minute:5.2f} CPU s "
                    f"per camera-minute ({many.per_camera_minute / base:.2f}x one camera), "
                    f"frames/s in per camera {min(many.frames) / many.wall:.1f} (lowest), "
                    f"{many.delivery}")
        idle = await _measure(clip, workdir, cameras=0, seconds=seconds, latency=True)
        busy = await _measure(clip, workdir, cameras=args.cameras, seconds=seconds,
                              latency=True)
        rows.append(f"hook -> Socket.IO p99:    {idle.p99_ms} ms idle, {busy.p99_ms} ms with "
                    f"{args.cameras} cameras streaming ({LATENCY_EVENTS} hooks at "
                    f"{LATENCY_RATE:g}/s)")
    transcode = _transcode_nestmtx(clip, workdir) / 10 * 60  # the clip is 10 s long
    rows.append(f"NestMTX double transcode: {transcode:5.2f} CPU s per camera-minute "
                f"({transcode / base:.0f}x pass-through)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--cameras", type=int, default=1,
                        help="also measure this many cameras at once, and hook latency")
    parser.add_argument("--native", action="store_true",
                        help="also measure GStreamer webrtcbin (Debian's python3-gi)")
    args = parser.parse_args()
    _loopback_only()
    from tests.fakes.nest_webrtc import make_clip

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        clip = workdir / "clip.ts"
        make_clip(clip, size="1920x1080", fps=30, seconds=10, gop=60, bitrate="4M",
                  preset="veryfast")
        rows = asyncio.run(_bench(args, workdir, clip))
    print(f"1080p30 4 Mb/s H.264 + Opus, {args.seconds:g} s per row, {os.cpu_count()} cores")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
