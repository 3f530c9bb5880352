"""The bench's RTSP receiver: GStreamer's gst-rtsp-server in RECORD mode, counting frames.

Both WebRTC rows of bench/webrtc_cpu.py publish to it (the publisher's FFmpeg muxer and the
native row's rtspclientsink), so they pay for the same RTSP muxing and TCP send and meet the
same receiver. `ffmpeg -rtsp_flags listen` (what the tests use) cannot be that receiver: it
compares the SETUP's `mode=record` case-sensitively, and rtspclientsink sends
`mode=RECORD` ("mode=record/receive not set or transport protocol not supported").

    async with record_receiver(["cam0", "cam1"]) as receiver:
        ... publish to receiver.urls ...
        counts = await receiver.counts()  # {"cam0": {"video": n, "audio": m}, ...}

Each mount point depayloads and parses what it receives (parsebin: H.264, Opus or AAC, in
whatever m-line order the publisher announces) and counts the access units and audio frames
that come out. The receiver runs under Debian's /usr/bin/python3 (PyGObject and
gir1.2-gst-rtsp-server-1.0 are Debian's), listening on 127.0.0.1 only, and its CPU is not
measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"


# -- the child (Debian's python3 with gi) -----------------------------------------------------

def _child(names: list[str]) -> None:
    import threading

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtsp", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtsp, GstRtspServer

    Gst.init(None)
    counts = {name: {"video": 0, "audio": 0} for name in names}
    server = GstRtspServer.RTSPServer.new()
    server.set_address("127.0.0.1")
    server.set_service("0")

    def counter(name: str, pad: Gst.Pad) -> None:
        caps = (pad.get_current_caps() or pad.query_caps(None)).to_string()
        kind = "video" if caps.startswith("video/") else "audio"

        def count(_: Gst.Pad, __: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
            counts[name][kind] += 1
            return Gst.PadProbeReturn.OK

        pad.add_probe(Gst.PadProbeType.BUFFER, count)

    def configured(name: str, media: GstRtspServer.RTSPMedia) -> None:
        bin_ = media.get_element()

        def added(_: Gst.Element, pad: Gst.Pad) -> None:
            sink = Gst.ElementFactory.make("fakesink")
            sink.set_property("sync", False)
            bin_.add(sink)
            sink.sync_state_with_parent()
            pad.link(sink.get_static_pad("sink"))
            counter(name, pad)

        for depay in ("depay0", "depay1"):
            bin_.get_by_name(depay).connect("pad-added", added)

    for name in names:
        factory = GstRtspServer.RTSPMediaFactory.new()
        factory.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
        factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
        # One parsebin per announced stream (video and audio): gst-rtsp-server hands the
        # n-th m-line to depay<n>, and the two publishers announce them in different orders.
        factory.set_launch("( parsebin name=depay0 parsebin name=depay1 )")
        factory.connect("media-configure", lambda _, media, name=name: configured(name, media))
        server.get_mount_points().add_factory(f"/{name}", factory)
    server.attach(None)
    print(json.dumps({"port": server.get_bound_port()}), flush=True)
    loop = GLib.MainLoop()

    def commands() -> None:
        for _ in sys.stdin:  # each line asks for the counts; end of input ends the receiver
            print(json.dumps(counts), flush=True)
        GLib.idle_add(loop.quit)

    threading.Thread(target=commands, daemon=True).start()
    loop.run()


# -- the parent (the bench) -------------------------------------------------------------------

class RecordReceiver:
    def __init__(self, proc: asyncio.subprocess.Process, port: int, names: list[str]) -> None:
        self._proc = proc
        self.urls = [f"rtsp://127.0.0.1:{port}/{name}" for name in names]

    async def counts(self) -> dict[str, dict[str, int]]:
        """What each mount point has received so far."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(b"counts\n")
        return json.loads(await asyncio.wait_for(self._proc.stdout.readline(), 30))


@contextlib.asynccontextmanager
async def record_receiver(names: list[str]) -> AsyncIterator[RecordReceiver]:
    """The receiver, with one mount point per name."""
    proc = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON, str(Path(__file__)), *names, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line:
            raise RuntimeError("the RTSP RECORD receiver exited (needs Debian's python3-gi "
                               "and gir1.2-gst-rtsp-server-1.0)")
        yield RecordReceiver(proc, json.loads(line)["port"], names)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


if __name__ == "__main__":
    _child(sys.argv[1:])
