"""CPU per WebRTC camera: this sidecar's pass-through vs. NestMTX's double ffmpeg transcode.

    python bench/webrtc_cpu.py [--seconds 30]

Makes a 1080p30 H.264 + Opus clip, plays it from the fake Nest peer (in this process) to a
WebRtcPublisher running in a child process (its CPU alone is measured), which publishes to
`ffmpeg -rtsp_flags listen` on loopback. Then transcodes the same clip the way NestMTX does
(re-encode to 1080p/10 fps/100 kb/s, then again to publish) and prints both, per minute of
stream, with the ratio. Loopback only: ICE is restricted to 127.0.0.1 in both processes.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _loopback_only() -> None:
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def _publisher(url: str, seconds: float, conn: Connection) -> None:
    """Child process: the sidecar's side; sends its CPU seconds and frame count back."""
    _loopback_only()
    from nestmtx_sidecar.nest.webrtc import WebRtcPublisher

    async def run() -> None:
        async def generate(offer: str):  # type: ignore[no-untyped-def]
            conn.send(offer)
            return await asyncio.get_running_loop().run_in_executor(None, conn.recv)

        publisher = WebRtcPublisher(url)
        await publisher.start(generate)
        cpu0, t0, frames0 = time.process_time(), time.monotonic(), publisher.stats.video_frames
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
        frames = publisher.stats.video_frames - frames0
        await publisher.stop()
        conn.send((cpu, wall, frames))

    asyncio.run(run())


async def _pass_through(clip: Path, seconds: float, workdir: Path) -> tuple[float, float, int]:
    from tests.fakes.nest_webrtc import Clip, FakeNestWebRtc
    from tests.services import free_port

    port = free_port()
    url = f"rtsp://127.0.0.1:{port}/cam"
    receiver = await asyncio.create_subprocess_exec(
        "ffmpeg", "-loglevel", "error", "-y", "-rtsp_flags", "listen", "-i", url,
        "-c", "copy", "-f", "mpegts", str(workdir / "out.ts"))
    await asyncio.sleep(1)  # let ffmpeg listen
    fake = FakeNestWebRtc(Clip.load(clip))
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=_publisher, args=(url, seconds, child))
    process.start()
    loop = asyncio.get_running_loop()
    offer = await loop.run_in_executor(None, parent.recv)
    parent.send(await fake.generate(offer))
    result = await loop.run_in_executor(None, parent.recv)
    process.join()
    await fake.close()
    await asyncio.wait_for(receiver.wait(), 10)
    return result


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    _loopback_only()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        clip = workdir / "clip.ts"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        "testsrc2=size=1920x1080:rate=30", "-f", "lavfi", "-i",
                        "sine=frequency=440:sample_rate=48000", "-t", "10", "-c:v", "libx264",
                        "-profile:v", "baseline", "-preset", "veryfast", "-b:v", "4M", "-g", "60",
                        "-bf", "0", "-pix_fmt", "yuv420p", "-c:a", "libopus", "-ac", "2",
                        "-f", "mpegts", str(clip)], check=True)
        cpu, wall, frames = asyncio.run(_pass_through(clip, args.seconds, workdir))
        transcode = _transcode_nestmtx(clip, workdir)
    ours = cpu / wall * 60
    theirs = transcode / 10 * 60  # the clip is 10 s long
    print(f"pass-through (this sidecar): {frames / wall:.1f} frames/s in, "
          f"{ours:.2f} CPU s per minute of 1080p30 stream")
    print(f"NestMTX double transcode:    {theirs:.2f} CPU s per minute of the same stream")
    print(f"ratio: transcoding costs {theirs / ours:.0f}x the pass-through")


if __name__ == "__main__":
    main()
