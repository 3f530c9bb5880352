"""A Nest WebRTC session relayed to MediaMTX as RTSP, without transcoding (aiortc)."""
