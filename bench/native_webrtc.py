"""The native floor: GStreamer's webrtcbin receiving a fake Nest stream, forwarding it to RTSP.

Two halves. `measure_native` (bench/webrtc_cpu.py's side) plays the clip from the fake Nest
peer and runs this file as a child under Debian's /usr/bin/python3 (PyGObject is Debian's),
which is the receiver:

    webrtcbin (recvonly Opus, recvonly H.264, a data channel: the offer Google requires)
      -> rtph264depay ! h264parse ! rtspclientsink (RTSP RECORD over TCP)
      -> rtpopusdepay ! opusparse ! (the same rtspclientsink)

What the publisher does, the GStreamer way: the same H.264 and Opus, untouched, to the same
kind of RTSP receiver (bench/rtsp_record.py; ffmpeg's listener refuses rtspclientsink).

The child speaks JSON lines: it prints {"offer"}, reads {"answer"} (repaired as the sidecar
repairs Google's), prints {"streaming"} at the first video access unit, and on "stop" prints
{"cpu", "wall", "frames"}. libnice gathers host candidates on this machine's interfaces
(never loopback, never anything remote: no STUN/TURN is set).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

SYSTEM_PYTHON = "/usr/bin/python3"


# -- the child (Debian's python3 with gi) -----------------------------------------------------

def _child(target_url: str) -> None:
    import threading

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstWebRTC", "1.0")
    gi.require_version("GstSdp", "1.0")
    from gi.repository import GLib, Gst, GstSdp, GstWebRTC

    Gst.init(None)
    pipeline = Gst.parse_launch(
        "webrtcbin name=w bundle-policy=max-compat latency=200 "
        "h264parse name=vparse ! s.sink_0 opusparse name=aparse ! s.sink_1 "
        f"rtspclientsink name=s protocols=tcp location={target_url}")
    webrtc = pipeline.get_by_name("w")
    loop = GLib.MainLoop()
    frames = [0]
    streaming = threading.Event()

    def say(message: dict[str, Any]) -> None:
        print(json.dumps(message), flush=True)

    def count(pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        frames[0] += 1
        if not streaming.is_set():
            streaming.set()
            say({"streaming": True})
        return Gst.PadProbeReturn.OK

    def on_pad(_: Gst.Element, pad: Gst.Pad) -> None:
        if pad.direction != Gst.PadDirection.SRC:
            return
        media = pad.get_current_caps().get_structure(0).get_string("media")
        depay = Gst.ElementFactory.make("rtph264depay" if media == "video" else "rtpopusdepay")
        pipeline.add(depay)
        depay.sync_state_with_parent()
        pad.link(depay.get_static_pad("sink"))
        parse = pipeline.get_by_name("vparse" if media == "video" else "aparse")
        depay.link(parse)
        if media == "video":
            parse.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, count)

    def gathered(element: Gst.Element, _: Any) -> None:
        state = element.get_property("ice-gathering-state")
        if state == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            say({"offer": element.get_property("local-description").sdp.as_text()})

    def offered(promise: Gst.Promise, _: Any) -> None:
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None else None
        if offer is None:
            sys.stderr.write(f"create-offer failed: {reply and reply.to_string()}\n")
            return
        webrtc.emit("set-local-description", offer, Gst.Promise.new())

    webrtc.connect("pad-added", on_pad)
    webrtc.connect("notify::ice-gathering-state", gathered)
    for caps in ("application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,payload=111",
                 "application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,payload=102,"
                 "packetization-mode=(string)1,profile-level-id=(string)42e01f"):
        webrtc.emit("add-transceiver", GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY,
                    Gst.Caps.from_string(caps))
    pipeline.set_state(Gst.State.READY)
    webrtc.emit("create-data-channel", "dataSendChannel", None)
    pipeline.set_state(Gst.State.PLAYING)
    webrtc.emit("create-offer", None, Gst.Promise.new_with_change_func(offered, None))

    def commands() -> None:
        answer = json.loads(sys.stdin.readline())["answer"]
        _, sdp = GstSdp.SDPMessage.new_from_text(answer)
        description = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        GLib.idle_add(lambda: webrtc.emit("set-remote-description", description,
                                          Gst.Promise.new()) and False)
        streaming.wait()
        cpu0, t0, frames0 = time.process_time(), time.monotonic(), frames[0]
        sys.stdin.readline()  # "stop"
        say({"cpu": time.process_time() - cpu0, "wall": time.monotonic() - t0,
             "frames": frames[0] - frames0})
        GLib.idle_add(loop.quit)

    threading.Thread(target=commands, daemon=True).start()
    loop.run()
    pipeline.send_event(Gst.Event.new_eos())
    pipeline.get_bus().timed_pop_filtered(5 * Gst.SECOND, Gst.MessageType.EOS)
    pipeline.set_state(Gst.State.NULL)
    say({"sent": frames[0]})


# -- the parent (the bench) -------------------------------------------------------------------

async def measure_native(clip: Any, seconds: float) -> Any:
    """webrtcbin's CPU for `seconds` of the clip, forwarding to bench/rtsp_record.py's
    receiver, as a bench/webrtc_cpu.py Run."""
    from bench.rtsp_record import record_receiver
    from bench.webrtc_cpu import received
    from tests.fakes.nest_webrtc import Clip, FakeNestWebRtc

    async with record_receiver(["native"]) as receiver:
        run = await _run_child(FakeNestWebRtc(Clip.load(clip)), seconds, receiver.urls[0])
        run.received = await received(receiver, run.sent)
    return run


async def _run_child(fake: Any, seconds: float, target_url: str) -> Any:
    import asyncio
    import re
    from pathlib import Path

    import aioice.ice

    from bench.webrtc_cpu import Run
    from nestmtx_sidecar.nest.webrtc_peer import repair_answer

    proc = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON, str(Path(__file__)), target_url, stdin=asyncio.subprocess.PIPE,
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


if __name__ == "__main__":
    _child(sys.argv[1])
