"""The short form of the WebRTC soak (tests/webrtc_soak.py): a minute of 6 s Nest sessions.

The long form is `python bench/webrtc_soak.py --minutes N` (20 s sessions by default).
"""

from __future__ import annotations

from pathlib import Path

from tests.test_webrtc import clip_path
from tests.webrtc_soak import KINDS, run_apart

__all__ = ["clip_path"]  # fixture shared with test_webrtc

SECONDS = 75.0
LIFETIME = 6.0
RSS_BOUND_MIB = 4.0


async def test_a_minute_of_renewals_leaks_nothing_and_never_gaps(clip_path: Path,
                                                                 tmp_path: Path) -> None:
    result = await run_apart(clip_path, tmp_path, SECONDS, LIFETIME)
    renewals = int(SECONDS / LIFETIME)
    # The battery camera is regenerated about once a lifetime, the wired one extended.
    assert result.generated >= 1 + renewals - 2, result
    assert result.extended >= renewals - 2, result
    # Every session was stopped with Google: replaced ones, and both at the end.
    assert result.stopped == result.generated and result.all_sessions_stopped, result
    growth = result.growth()
    # The shared HTTP client may keep one more connection to the in-process fake Google per
    # camera renewing at once (a client and a server socket each): the pool's bound, not a
    # leak, which would grow with each of the dozen renewals.
    pool_growth = 2 * (len(KINDS) - 1)
    assert growth.tasks <= 0 and growth.threads <= 0 and growth.fds <= pool_growth, (
        result.samples)
    # Each replaced session's peer connection is freed, the sidecar's and the fake's: at rest
    # one per camera on each side, however many sessions came before.
    assert growth.peer_connections <= 0, result.samples
    assert min(s.peer_connections for s in result.samples[1:]) == 2 * len(KINDS), result.samples
    # RSS (this process also runs the fake peers and fake Google): about 0.3 MiB per renewal
    # while closed peer connections were kept, a few hundredths now (warm-up included).
    assert growth.rss_mib < RSS_BOUND_MIB, result.samples
    for path, gap in result.max_gap.items():
        assert gap < 0.25, (path, gap)  # one publication, frames flowing across renewals
        assert result.span[path] > SECONDS - 5, (path, result.span)
