"""Days of WebRTC streaming, compressed: short Nest stream lifetimes, many renewals.

Two cameras through one WebRtcStreams (the sidecar's), real SdmClient -> fake Google -> fake
Nest peers: a battery doorbell (every renewal is a new session under the same publication)
and a wired camera (extended). Samples this process's RSS, open fds, asyncio tasks and
threads as it goes, and checks the RTSP publications for gaps. Used by tests/test_webrtc_soak.py
(about a minute, in a process of its own: `run_apart`) and bench/webrtc_soak.py (`--minutes N`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import httpx
from aiortc import RTCPeerConnection

from nestmtx_sidecar.events import Event, EventBus
from nestmtx_sidecar.modules.cameras import CameraRef
from nestmtx_sidecar.nest.google.quota import QuotaLimiter, Quotas
from nestmtx_sidecar.nest.streaming.webrtc import WebRtcStreams
from tests.fakes.google import FakeGoogle, camera
from tests.fakes.nest_webrtc import Clip, FakeNestWebRtc
from tests.nest_support import sdm_client
from tests.services import ROOT
from tests.test_webrtc import _resources, finished, rtsp_receiver

KINDS = {"doorbell": True, "wired": False}  # path -> battery
NEST_LIFETIME = 300.0  # Google's WebRTC sessions last 5 minutes


@dataclass(frozen=True)
class Sample:
    at: float  # seconds into the soak
    rss_mib: float
    tasks: int
    threads: int
    fds: int
    peer_connections: int  # aiortc's, alive: the sidecar's and the fake peers' live ones


@dataclass
class SoakResult:
    samples: list[Sample] = field(default_factory=list)
    generated: int = 0
    extended: int = 0
    stopped: int = 0
    all_sessions_stopped: bool = False
    max_gap: dict[str, float] = field(default_factory=dict)  # path -> seconds
    span: dict[str, float] = field(default_factory=dict)  # path -> seconds published

    def growth(self) -> Sample:
        """The late half's resting level over the early half's (after the first sample).

        Resting levels (minimums): a sample taken while a session is being replaced sees both
        the old and the new one, which is a moment, not growth.
        """
        half = len(self.samples) // 2
        early, late = self.samples[1:half] or self.samples[:1], self.samples[half:]
        return Sample(late[-1].at, *(
            min(getattr(s, key) for s in late) - min(getattr(s, key) for s in early)
            for key in ("rss_mib", "tasks", "threads", "fds", "peer_connections")))

    def rss_slope(self) -> float:
        """MiB per hour, least squares over the samples after the first."""
        points = [(s.at, s.rss_mib) for s in self.samples[1:]]
        if len(points) < 2:
            return 0.0
        mean_t = sum(t for t, _ in points) / len(points)
        mean_r = sum(r for _, r in points) / len(points)
        spread = sum((t - mean_t) ** 2 for t, _ in points) or 1.0
        return sum((t - mean_t) * (r - mean_r) for t, r in points) / spread * 3600


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _peer_connections() -> int:
    return sum(isinstance(o, RTCPeerConnection) for o in gc.get_objects())


def _ref(index: int, path: str) -> CameraRef:
    return CameraRef(id=index + 1, credential_id=1, uid=f"enterprises/project-1/devices/{path}",
                     name=path, enabled=True, persistent=False, protocols=("WEB_RTC",),
                     mtx_path=path)


async def soak(clip: Clip, workdir: Path, seconds: float, lifetime: float = 20.0,
               sample_every: float = 2.0) -> SoakResult:
    peers = {path: FakeNestWebRtc(clip, battery=battery, lifetime=lifetime)
             for path, battery in KINDS.items()}
    # Google's quotas, compressed like the lifetime: the same calls per session allowed.
    quotas = Quotas(window=Quotas().window * lifetime / NEST_LIFETIME)
    google = FakeGoogle(quota_window=quotas.window, webrtc_peers=peers, devices={
        "project-1": [camera(path, path, protocols=("WEB_RTC",)) for path in KINDS]})
    refs = [_ref(i, path) for i, path in enumerate(KINDS)]
    bus = EventBus()
    result = SoakResult()
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient())
        await stack.enter_async_context(google.serve())
        receivers = [await stack.enter_async_context(rtsp_receiver(workdir, ref.mtx_path))
                     for ref in refs]
        sdm = sdm_client(google, http, QuotaLimiter(quotas), valid_for=10 * seconds + 3600)
        streams = WebRtcStreams(bus, sdm, "unused", start_timeout=15, silence_timeout=5)
        bus.subscribe(streams.on_event)
        try:
            # ffmpeg's RTSP listener takes one publication: each camera has its own port.
            for ref, receiver in zip(refs, receivers, strict=True):
                streams._rtsp_url = receiver.url.rsplit("/", 1)[0]
                await streams.source_for(ref)
            started = time.monotonic()
            while (now := time.monotonic() - started) < seconds:
                gc.collect()  # what is left is held, not merely not yet collected
                tasks, threads, fds = _resources()
                result.samples.append(Sample(round(now, 1), round(_rss_mib(), 1), tasks,
                                             threads, fds, _peer_connections()))
                await asyncio.sleep(min(sample_every, seconds - now))
            for ref in refs:
                await bus.publish(Event("camera", "unDemand", ref.id, {}))
            for receiver in receivers:
                await finished(receiver)
        finally:
            await streams.stop_all("shutting down")
            sessions = [s for peer in peers.values() for s in peer.sessions.values()]
            result.all_sessions_stopped = all(s.stopped for s in sessions)
            for peer in peers.values():
                await peer.close()
        result.generated = google.count("GenerateWebRtcStream")
        result.extended = google.count("ExtendWebRtcStream", status=200)
        result.stopped = google.count("StopWebRtcStream", status=200)
    for ref, receiver in zip(refs, receivers, strict=True):
        with av.open(str(receiver.output)) as container:
            stream = container.streams.video[0]
            times = [float(p.pts * p.time_base) for p in container.demux(stream) if p.size]
        result.max_gap[ref.mtx_path] = max(b - a for a, b in itertools.pairwise(times))
        result.span[ref.mtx_path] = times[-1] - times[0]
    return result


async def run_apart(clip_path: Path, workdir: Path, seconds: float, lifetime: float
                    ) -> SoakResult:
    """`soak` in a fresh interpreter, as the sidecar runs: in a process that has run other
    tests, each sample's full collection and heap walk stalls the event loop for as long as
    that process's heap takes, and the stall shows up as a gap in the publications."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.webrtc_soak", str(clip_path), str(workdir), str(seconds),
        str(lifetime), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE)
    out, _ = await child.communicate()
    assert child.returncode == 0, f"the soak process exited with {child.returncode}"
    fields = json.loads(out.decode().splitlines()[-1])
    return SoakResult(**{**fields, "samples": [Sample(**s) for s in fields["samples"]]})


def _main() -> None:
    parser = argparse.ArgumentParser(description="one soak, its result as JSON on stdout")
    parser.add_argument("clip", type=Path)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("seconds", type=float)
    parser.add_argument("lifetime", type=float)
    args = parser.parse_args()
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]  # loopback only
    result = asyncio.run(soak(Clip.load(args.clip), args.workdir, args.seconds,
                              lifetime=args.lifetime))
    print(json.dumps(dataclasses.asdict(result)))


if __name__ == "__main__":
    _main()
