"""bench/native_webrtc.py's child: GStreamer's webrtcbin forwarding to RTSP, under Debian's
/usr/bin/python3 (PyGObject is Debian's).

    python3 native_webrtc_child.py rtsp://127.0.0.1:<port>/<path>

    webrtcbin (recvonly Opus, recvonly H.264, a data channel: the offer Google requires)
      -> rtph264depay ! h264parse ! rtspclientsink (RTSP RECORD over TCP)
      -> rtpopusdepay ! opusparse ! (the same rtspclientsink)

JSON lines: prints {"offer"}, reads {"answer"}, prints {"streaming"} at the first video
access unit, on "stop" prints {"cpu", "wall", "frames"}, then {"sent"} (every access unit
forwarded) once the pipeline has drained.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

_TRANSCEIVERS = (
    "application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,payload=111",
    "application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,payload=102,"
    "packetization-mode=(string)1,profile-level-id=(string)42e01f",
)


def say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


class NativeReceiver:
    def __init__(self, target_url: str) -> None:
        self.pipeline = Gst.parse_launch(
            "webrtcbin name=w bundle-policy=max-compat latency=200 "
            "h264parse name=vparse ! s.sink_0 opusparse name=aparse ! s.sink_1 "
            f"rtspclientsink name=s protocols=tcp location={target_url}")
        self.webrtc = self.pipeline.get_by_name("w")
        self.loop = GLib.MainLoop()
        self.frames = 0
        self.streaming = threading.Event()
        self.webrtc.connect("pad-added", self._on_pad)
        self.webrtc.connect("notify::ice-gathering-state", self._gathered)

    def offer(self) -> None:
        for caps in _TRANSCEIVERS:
            self.webrtc.emit("add-transceiver", GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY,
                             Gst.Caps.from_string(caps))
        self.pipeline.set_state(Gst.State.READY)
        self.webrtc.emit("create-data-channel", "dataSendChannel", None)
        self.pipeline.set_state(Gst.State.PLAYING)
        self.webrtc.emit("create-offer", None,
                         Gst.Promise.new_with_change_func(self._offered, None))

    def _offered(self, promise: Gst.Promise, _: Any) -> None:
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None else None
        if offer is None:
            sys.stderr.write(f"create-offer failed: {reply and reply.to_string()}\n")
            return
        self.webrtc.emit("set-local-description", offer, Gst.Promise.new())

    def _gathered(self, element: Gst.Element, _: Any) -> None:
        state = element.get_property("ice-gathering-state")
        if state == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            say({"offer": element.get_property("local-description").sdp.as_text()})

    def _on_pad(self, _: Gst.Element, pad: Gst.Pad) -> None:
        if pad.direction != Gst.PadDirection.SRC:
            return
        media = pad.get_current_caps().get_structure(0).get_string("media")
        depay = Gst.ElementFactory.make("rtph264depay" if media == "video" else "rtpopusdepay")
        self.pipeline.add(depay)
        depay.sync_state_with_parent()
        pad.link(depay.get_static_pad("sink"))
        parse = self.pipeline.get_by_name("vparse" if media == "video" else "aparse")
        depay.link(parse)
        if media == "video":
            parse.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self._count)

    def _count(self, _: Gst.Pad, __: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        self.frames += 1
        if not self.streaming.is_set():
            self.streaming.set()
            say({"streaming": True})
        return Gst.PadProbeReturn.OK

    def commands(self) -> None:
        """On its own thread: the answer, then the measured stretch until "stop"."""
        _, sdp = GstSdp.SDPMessage.new_from_text(json.loads(sys.stdin.readline())["answer"])
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        GLib.idle_add(lambda: self.webrtc.emit("set-remote-description", answer,
                                               Gst.Promise.new()) and False)
        self.streaming.wait()
        cpu0, t0, frames0 = time.process_time(), time.monotonic(), self.frames
        sys.stdin.readline()  # "stop"
        say({"cpu": time.process_time() - cpu0, "wall": time.monotonic() - t0,
             "frames": self.frames - frames0})
        GLib.idle_add(self.loop.quit)

    def run(self) -> None:
        self.offer()
        threading.Thread(target=self.commands, daemon=True).start()
        self.loop.run()
        self.pipeline.send_event(Gst.Event.new_eos())
        self.pipeline.get_bus().timed_pop_filtered(5 * Gst.SECOND, Gst.MessageType.EOS)
        self.pipeline.set_state(Gst.State.NULL)
        say({"sent": self.frames})


if __name__ == "__main__":
    Gst.init(None)
    NativeReceiver(sys.argv[1]).run()
