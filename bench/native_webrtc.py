"""The native floor: GStreamer's webrtcbin receiving a fake Nest stream, forwarding it to RTSP.

`measure_native` (bench/webrtc_cpu.py's side) plays the clip from the fake Nest peer to
bench/native_webrtc_child.py, run under Debian's /usr/bin/python3 (PyGObject is Debian's):
what the publisher does, the GStreamer way (webrtcbin, depayload, parse, rtspclientsink):
the same H.264 and Opus, untouched, to the same kind of RTSP receiver (bench/rtsp_record.py;
ffmpeg's listener refuses rtspclientsink). The answer is repaired as the sidecar repairs
Google's. libnice gathers host candidates on this machine's interfaces (never loopback,
never anything remote: no STUN/TURN is set).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aioice.ice

from bench.rtsp_record import SYSTEM_PYTHON, record_receiver
from bench.webrtc_cpu import Run, received
from nestmtx_sidecar.nest.relay.peer import repair_answer
from tests.fakes.nest_webrtc import Clip, FakeNestWebRtc

CHILD = Path(__file__).with_name("native_webrtc_child.py")


async def measure_native(clip: Path, seconds: float) -> Run:
    """webrtcbin's CPU for `seconds` of the clip, forwarding to bench/rtsp_record.py's
    receiver, as a bench/webrtc_cpu.py Run."""
    async with record_receiver(["native"]) as receiver:
        run = await _run_child(FakeNestWebRtc(Clip.load(clip)), seconds, receiver.urls[0])
        run.received = await received(receiver, run.sent)
    return run


async def _run_child(fake: FakeNestWebRtc, seconds: float, target_url: str) -> Run:
    proc = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON, str(CHILD), target_url, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None

    async def expect(key: str) -> Any:
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if not line:
                raise RuntimeError("the native receiver exited")
            message = json.loads(line)
            if key in message:
                return message

    try:
        offer = (await expect("offer"))["offer"]
        # Linux drops loopback-sourced packets to other addresses, and libnice never
        # gathers loopback: the fake answers from the interface addresses libnice offered
        # (this machine's own, as the offer's host candidates say).
        own = sorted(set(re.findall(r"^a=candidate:\S+ 1 UDP \d+ (\d+\.\d+\.\d+\.\d+) ",
                                    offer, flags=re.MULTILINE)))
        gather = aioice.ice.get_host_addresses
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: own
        try:
            # GStreamer's DTLS certificate is RSA, aiortc offers ECDSA ciphers only: with
            # aiortc as the DTLS server (its ECDSA certificate) the two agree.
            answer_sdp, _, _ = await fake.generate(
                offer.replace("a=setup:actpass", "a=setup:active"))
        finally:
            aioice.ice.get_host_addresses = gather
        proc.stdin.write(json.dumps({"answer": repair_answer(answer_sdp)}).encode() + b"\n")
        await expect("streaming")
        await asyncio.sleep(seconds)
        proc.stdin.write(b"stop\n")
        result = await expect("cpu")
        sent = (await expect("sent"))["sent"]
        await asyncio.wait_for(proc.wait(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await fake.close()
    return Run(result["cpu"], result["wall"], [result["frames"]], sent=[sent])

