"""The live snapshot: one JPEG of a camera's live picture, made on request only.

RTSP cameras: ffmpeg reads one frame from the camera's live MediaMTX path (a subprocess, so
its RTSP client and decoder stay out of the process and a stuck read is killed at the
deadline). WebRTC cameras: the publisher's last keyframe is decoded with PyAV on a thread;
the pass-through itself never decodes.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from fractions import Fraction

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...errors import Conflict, NotFound, SidecarError, Unavailable
from ...http.api import bearer_caller, error_response
from ...modules import MAX_ID
from ...modules.auth import Auth
from ...modules.cameras import CameraRef, Cameras
from ...security import safe_url
from .source import NestStreams

logger = logging.getLogger(__name__)

SNAPSHOT_PATH = "/api/cameras/{camera:int}/snapshot"
# The whole RTSP read: connect, DESCRIBE/SETUP/PLAY, wait for a keyframe, decode one frame.
RTSP_SECONDS = 10.0
MAX_JPEG_BYTES = 16 * 1024 * 1024  # ffmpeg's output is read into memory: a bound, not a limit
# Snapshots made at once (each an ffmpeg process or a decoding thread); the rest wait their turn.
CONCURRENT = 2


def keyframe_jpeg(access_unit: bytes, parameter_sets: bytes) -> bytes:
    """One H.264 IDR access unit (SPS/PPS in-band or in `parameter_sets`) as a JPEG.

    Blocks for a few milliseconds to tens of them: call it off the event loop.
    """
    import av  # with the first WebRTC snapshot, like the publisher itself

    try:
        decoder = av.CodecContext.create("h264", "r")
        if parameter_sets:
            decoder.extradata = parameter_sets
        frames = [*decoder.decode(av.Packet(access_unit)), *decoder.decode(None)]
        if not frames:
            raise ValueError("the keyframe decoded to no picture")
        encoder = av.CodecContext.create("mjpeg", "w")
        encoder.width, encoder.height = frames[0].width, frames[0].height
        encoder.pix_fmt, encoder.time_base = "yuvj420p", Fraction(1, 1)
        picture = frames[0].reformat(format="yuvj420p")
        return bytes([*encoder.encode(picture), *encoder.encode(None)][0])
    except av.FFmpegError as exc:
        raise ValueError(f"cannot decode the keyframe: {exc}") from exc


async def rtsp_jpeg(url: str, seconds: float = RTSP_SECONDS) -> bytes:
    """One frame of the RTSP stream at `url` as a JPEG, within `seconds` or Unavailable."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise Unavailable("Snapshots of RTSP cameras need ffmpeg, which is not installed")
    proc = await asyncio.create_subprocess_exec(
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-rtsp_transport", "tcp",
        "-timeout", str(int(seconds * 1e6)), "-i", url, "-frames:v", "1", "-f", "image2",
        "-c:v", "mjpeg", "-fs", str(MAX_JPEG_BYTES), "pipe:1",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(seconds):
            jpeg, errors = await proc.communicate()
    except TimeoutError:
        raise Unavailable(f"No frame from the live path within {seconds:g} s") from None
    finally:
        if proc.returncode is None:  # timed out, or the request was cancelled
            proc.kill()
            await proc.wait()
    if proc.returncode != 0 or not jpeg:
        logger.warning("snapshot of %s failed (ffmpeg exit %s): %s", safe_url(url),
                       proc.returncode, safe_url(errors.decode(errors="replace").strip()[-500:]))
        raise Unavailable("Could not read a frame from the live path (see the sidecar's log)")
    return jpeg


class Snapshots:
    """The snapshot route: a camera's live picture, for a caller with a bearer token."""

    def __init__(self, auth: Auth, cameras: Cameras, streams: NestStreams, rtsp_url: str
                 ) -> None:
        self._auth = auth
        self._cameras = cameras
        self._streams = streams
        self._rtsp_url = rtsp_url.rstrip("/")
        self._slots = asyncio.Semaphore(CONCURRENT)

    @property
    def routes(self) -> list[Route]:
        return [Route(SNAPSHOT_PATH, self.snapshot, methods=["GET"])]

    async def snapshot(self, request: Request) -> Response:
        """The camera's live picture (JPEG); 409 while its path is not live."""
        camera_id = request.path_params["camera"]
        try:
            if await bearer_caller(self._auth, request) is None:
                await self._auth.authenticate(None)  # raises: a token is required
            # An id past the column's range names no camera (and must not reach the database).
            camera = await self._cameras.get_ref(camera_id) if 0 < camera_id <= MAX_ID else None
            if camera is None:
                raise NotFound(f"No camera with id {camera_id}")
            async with self._slots:
                jpeg = await self._jpeg(camera)
        except SidecarError as exc:
            return error_response(exc)
        # Private (it shows the home) and never cached: it is the picture of now.
        return Response(jpeg, media_type="image/jpeg",
                        headers={"Cache-Control": "private, no-store"})

    async def _jpeg(self, camera: CameraRef) -> bytes:
        if "RTSP" in camera.protocols:
            if not self._streams.is_live(camera.id):
                raise _not_live(camera)
            return await rtsp_jpeg(f"{self._rtsp_url}/{camera.mtx_path}")
        keyframe = self._streams.keyframe(camera.id)
        if keyframe is None:
            raise _not_live(camera)
        try:
            return await asyncio.to_thread(keyframe_jpeg, *keyframe)
        except ValueError as exc:
            logger.warning("snapshot of camera %d: cannot decode its keyframe: %s",
                           camera.id, exc)
            raise Unavailable("Could not decode the camera's last keyframe") from None


def _not_live(camera: CameraRef) -> Conflict:
    return Conflict(f"Camera {camera.name!r} is not live: a snapshot needs a reader on its "
                    f"path {camera.mtx_path!r} (the stream starts on demand)")
