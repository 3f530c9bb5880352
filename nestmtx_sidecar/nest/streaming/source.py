"""Nest live streams: the demand hook's StreamSource, choosing each camera's protocol part.

RTSP cameras get Google's stream URL (rtsp.py); WebRTC-only ones are published by the
sidecar itself (webrtc.py, with the relay of
`nest/relay/`). Both share one session lifecycle (lifecycle.py) and
one vocabulary: `stop(camera_id, why)`, `stop_all(why)` at shutdown, `hand_over()` when the
Nest lease moves away.
"""

from __future__ import annotations

import logging

from ...errors import Invalid
from ...events import Event, EventBus
from ...hooks.camera_details import camera_details
from ...modules.cameras import CameraRef
from .rtsp import RtspStreams
from .webrtc import WebRtcStreams

logger = logging.getLogger(__name__)


class NestStreams:
    """Implements receiver.StreamSource for Nest cameras; forwards the lifecycle's verbs."""

    def __init__(self, bus: EventBus, rtsp: RtspStreams, webrtc: WebRtcStreams) -> None:
        self._bus = bus
        self.rtsp = rtsp
        self.webrtc = webrtc

    async def source_for(self, camera: CameraRef) -> str:
        if "RTSP" in camera.protocols:
            return await self.rtsp.source_for(camera)
        if "WEB_RTC" in camera.protocols:
            return await self.webrtc.source_for(camera)
        message = f"camera {camera.name!r} has no live stream Google can serve"
        logger.error(message)
        await self._bus.publish(Event("camera", "error", camera.id,
                                      camera_details(camera.mtx_path, camera, error=message,
                                                     reason="no_live_stream")))
        raise Invalid(message)

    def is_live(self, camera_id: int) -> bool:
        """Whether this replica runs a stream session of the camera."""
        return self.rtsp.is_live(camera_id) or self.webrtc.is_live(camera_id)

    def keyframe(self, camera_id: int) -> tuple[bytes, bytes] | None:
        """A WebRTC camera's last published keyframe and its SPS/PPS (None when not live)."""
        return self.webrtc.keyframe(camera_id)

    @property
    def live(self) -> int:
        """Sessions this replica keeps alive: on the lease holder, every replica's RTSP ones."""
        return self.rtsp.live + self.webrtc.live

    async def stop(self, camera_id: int, why: str) -> None:
        await self.rtsp.stop(camera_id, why)
        await self.webrtc.stop(camera_id, why)

    async def hand_over(self) -> None:
        """The Nest lease moved away: RTSP sessions stay stored for the next holder.

        WebRTC publications are this replica's own: they go on.
        """
        await self.rtsp.hand_over()

    async def resume(self) -> None:
        await self.rtsp.resume()

    async def on_event(self, event: Event) -> None:
        """Bus subscriber: the end of demand stops the camera's stream."""
        await self.rtsp.on_event(event)
        await self.webrtc.on_event(event)

    async def on_camera_change(self, before: CameraRef | None, after: CameraRef | None) -> None:
        await self.rtsp.on_camera_change(before, after)
        await self.webrtc.on_camera_change(before, after)

    async def on_credential_deleted(self, credential_id: int) -> None:
        await self.rtsp.on_credential_deleted(credential_id)  # needs the token: first
        await self.webrtc.on_credential_deleted(credential_id)

