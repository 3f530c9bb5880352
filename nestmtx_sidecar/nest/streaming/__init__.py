"""Nest live streams behind on-demand paths: one lifecycle, an RTSP and a WebRTC part."""
