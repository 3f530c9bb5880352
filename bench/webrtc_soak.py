"""The long WebRTC soak: hours of Nest sessions compressed into minutes.

    python bench/webrtc_soak.py [--minutes 60] [--lifetime 20]

Two cameras (a battery doorbell, regenerated every lifetime, and a wired camera, extended)
through the sidecar's WebRtcStreams, with fake Google and fake Nest peers on loopback
(tests/webrtc_soak.py; the CI test runs the same for about a minute). Prints the renewals,
the resting-level growth of RSS, fds, tasks, threads and live peer connections, the RSS
slope, the longest gap in each RTSP publication, and whether every session was stopped
with Google.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--lifetime", type=float, default=20.0,
                        help="seconds each fake Nest session lives (Google's: 300)")
    args = parser.parse_args()
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    from tests.fakes.nest_webrtc import Clip, make_clip
    from tests.webrtc_soak import NEST_LIFETIME, soak

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        clip = Clip.load(make_clip(workdir / "clip.ts"))
        result = asyncio.run(soak(clip, workdir, args.minutes * 60, lifetime=args.lifetime,
                                  sample_every=max(2.0, args.lifetime / 4)))
    growth = result.growth()
    compressed = args.minutes * NEST_LIFETIME / args.lifetime / 60
    print(f"{args.minutes:g} min with {args.lifetime:g} s sessions (about {compressed:.1f} h "
          f"of Nest sessions): {result.generated} generated, {result.extended} extended, "
          f"{result.stopped} stopped; every session stopped: {result.all_sessions_stopped}")
    print(f"growth (late vs early resting level): RSS {growth.rss_mib:+.1f} MiB, "
          f"fds {growth.fds:+d}, tasks {growth.tasks:+d}, threads {growth.threads:+d}, "
          f"live peer connections {growth.peer_connections:+d}; "
          f"RSS slope {result.rss_slope():+.1f} MiB/h")
    print("longest gap in the RTSP publication: " + ", ".join(
        f"{path} {gap * 1000:.0f} ms over {result.span[path]:.0f} s"
        for path, gap in result.max_gap.items()))


if __name__ == "__main__":
    main()
