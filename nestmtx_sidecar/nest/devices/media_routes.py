"""The media routes: an event's picture and clip, served from the media store to a caller
with a bearer token (the files stream from disk, off the event loop)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from ...errors import NotFound, SidecarError
from ...http.api import bearer_caller, error_response
from ...modules.auth import Auth
from .media_store import MediaStore

IMAGE_PATH = "/api/cameras/{camera:int}/events/{key:path}/image"
CLIP_PATH = "/api/cameras/{camera:int}/events/{key:path}/clip"
_TYPES = {"image": "image/jpeg", "clip": "video/mp4"}


class MediaRoutes:
    def __init__(self, auth: Auth, store: MediaStore) -> None:
        self._auth = auth
        self._store = store

    @property
    def routes(self) -> list[Route]:
        return [Route(IMAGE_PATH, self.image, methods=["GET"]),
                Route(CLIP_PATH, self.clip, methods=["GET"])]

    async def image(self, request: Request) -> Response:
        """An event's picture (JPEG)."""
        return await self._serve(request, "image")

    async def clip(self, request: Request) -> Response:
        """An event session's clip preview (mp4)."""
        return await self._serve(request, "clip")

    async def _serve(self, request: Request, kind: str) -> Response:
        camera, key = request.path_params["camera"], request.path_params["key"]
        try:
            if await bearer_caller(self._auth, request) is None:
                await self._auth.authenticate(None)  # raises: a token is required
            path = self._store.find(camera, kind, key)
            if path is None:
                raise NotFound(f"No {kind} of event {key[:200]!r} for camera {camera} (Google "
                               "had none, or it was removed to keep the media store bounded)")
        except SidecarError as exc:
            return error_response(exc)
        # Private: an event picture may show who was at the door.
        return FileResponse(path, media_type=_TYPES[kind],
                            headers={"Cache-Control": "private, max-age=86400"})
