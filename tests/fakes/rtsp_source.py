"""A real RTSP camera on loopback: GStreamer's RTSP server with a live H.264 test pattern.

Run with Debian's /usr/bin/python3 (python3-gi, gir1.2-gst-rtsp-server-1.0): the project's
Python has no GObject bindings. Prints the port on stdout once it serves rtsp://127.0.0.1:P/live.
Each client gets its own pipeline, as a Nest RTSP URL serves one client.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PIPELINE = ("( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,"
            "framerate=15/1 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 "
            "! rtph264pay name=pay0 pt=96 config-interval=1 )")


def main() -> None:
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service("0")
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    server.get_mount_points().add_factory("/live", factory)
    server.attach(None)
    print(server.get_bound_port(), flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    sys.exit(main())
