"""`cameras`: the Nest devices found by device sync, and which MediaMTX path serves each."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..errors import Conflict, Invalid, NotFound, field_error
from ..events import isoformat
from ..storage.store import Store, cameras_table, list_page, utcnow
from . import ID_SCHEMA, Caller, Contract, Module, entity_id, entity_replies
from .listing import ListQuery
from .schema import DATE_TIME, Body, Field, nullable, record

# MediaMTX's own rule for path names (internal/conf/path.go); a leading ~ marks a regex path.
_MTX_PATH = re.compile(r"^[0-9A-Za-z_\-/.~:]+$")
_SORTABLE = {key: cameras_table.c[key] for key in (
    "id", "uid", "name", "room", "mtx_path", "is_enabled", "is_persistent", "audio",
    "created_at", "updated_at")}
AUDIO_MODES = ("opus", "aac", "none")  # what a WebRTC camera's publication carries as audio
_CACHE_SECONDS = 2.0  # bounds staleness when another replica changes a camera


@dataclass(frozen=True)
class CameraRef:
    """What a hook needs to know of the camera behind a path."""

    id: int
    credential_id: int
    uid: str
    name: str
    enabled: bool
    persistent: bool
    protocols: tuple[str, ...]
    mtx_path: str
    audio: str = "opus"


CameraChange = Callable[[CameraRef | None, CameraRef | None], Awaitable[None]]


DOT_SEGMENTS = "must not have . or .. segments"


def has_dot_segment(path: str) -> bool:
    """A `.` or `..` segment lets a path name another (`public/../../source/cam1`, as curl
    resolves it), past MediaMTX's per-path permissions."""
    return any(segment in (".", "..") for segment in path.split("/"))


def validate_mtx_path(value: Any) -> str | None:
    if value is None or value == "":
        return None
    problem = None
    if not isinstance(value, str):
        problem = "must be a string or null"
    elif len(value) > 255:
        problem = "must be at most 255 characters"
    elif not _MTX_PATH.match(value):
        problem = ("may contain only letters, digits and _ - / . ~ : "
                   "(MediaMTX's path characters)")
    elif value.startswith(("/", "~")) or value.endswith("/"):
        problem = "must not start with / or ~, nor end with /"
    elif has_dot_segment(value):
        problem = DOT_SEGMENTS
    if problem:
        raise Invalid(f"mtx_path {problem}", [field_error("mtx_path", problem)])
    return value


def validate_audio(value: Any) -> str:
    if value not in AUDIO_MODES:
        problem = f"must be one of {', '.join(AUDIO_MODES)}"
        raise Invalid(f"audio {problem}", [field_error("audio", problem)])
    return str(value)


_UPDATE = Body((
    Field("mtx_path", "string", nullable=True, check=validate_mtx_path,
          description="The MediaMTX path that serves the camera: MediaMTX's path characters "
          "(A-Z a-z 0-9 _ - / . ~ :), not starting with / or ~, not ending with /; unique. "
          "null or an empty string clears it.",
          schema_extra={"maxLength": 255,
                        "pattern": r"^$|^[0-9A-Za-z_.:-]([0-9A-Za-z_\-/.~:]*[0-9A-Za-z_.~:-])?$"}),
    Field("is_enabled", "boolean",
          description="Whether MediaMTX may stream the camera; needs an mtx_path."),
    Field("is_persistent", "boolean",
          description="Whether the stream runs always, not only while someone watches."),
    Field("audio", "string", check=validate_audio,
          description="WebRTC cameras only, from the next stream start: `opus` forwards "
          "the camera's audio untouched, `aac` transcodes it to AAC-LC (for RTSP consumers "
          "that cannot play Opus; video stays untouched), `none` publishes no audio.",
          schema_extra={"enum": list(AUDIO_MODES), "default": "opus"}),
))
_STRINGS = {"type": "array", "items": {"type": "string"}}
ITEM = record({
    "id": ID_SCHEMA, "credential_id": ID_SCHEMA,
    "uid": {"type": "string", "description": "The SDM device name."},
    "name": {"type": "string"}, "room": {"type": "string"}, "type": {"type": "string"},
    "protocols": {**_STRINGS, "description": "RTSP and/or WEB_RTC."},
    "resolution": nullable({"type": "object", "description": "maxVideoResolution from SDM."}),
    "video_codecs": _STRINGS, "audio_codecs": _STRINGS,
    "traits": {**_STRINGS, "description": "The device's SDM traits (which events and media it "
                                          "has), e.g. sdm.devices.traits.CameraMotion."},
    "mtx_path": nullable({"type": "string"}),
    "is_enabled": {"type": "boolean"}, "is_persistent": {"type": "boolean"},
    "audio": {"type": "string", "enum": list(AUDIO_MODES)},
    "is_missing": {"type": "boolean", "description": "Gone from the last device sync."},
    "created_at": DATE_TIME, "updated_at": DATE_TIME,
}, "A Nest camera found by device sync, and the MediaMTX path that serves it.")


def _item(row: Any) -> dict[str, Any]:
    info = dict(row.info or {})
    return {
        "id": row.id, "credential_id": row.credential_id, "uid": row.uid, "name": row.name,
        "room": row.room, "type": row.type, "protocols": list(row.protocols or []),
        "resolution": info.get("resolution"), "video_codecs": info.get("videoCodecs", []),
        "audio_codecs": info.get("audioCodecs", []), "traits": info.get("traits", []),
        "mtx_path": row.mtx_path,
        "is_enabled": row.is_enabled, "is_persistent": row.is_persistent,
        "audio": row.audio, "is_missing": row.is_missing,
        "created_at": isoformat(row.created_at), "updated_at": isoformat(row.updated_at),
    }


def camera_ref(row: Any) -> CameraRef:
    return CameraRef(id=row.id, credential_id=row.credential_id, uid=row.uid, name=row.name,
                     enabled=row.is_enabled, persistent=row.is_persistent,
                     protocols=tuple(row.protocols or ()), mtx_path=row.mtx_path,
                     audio=row.audio)


class Cameras(Module):
    name = "cameras"
    contract = Contract(
        bodies={"update": (_UPDATE,)},
        replies=entity_replies(ITEM),
        failures={"update": {409: "The mtx_path is already in use."}},
        sortable=frozenset(_SORTABLE),
    )

    def __init__(self, store: Store) -> None:
        self._store = store
        self._by_path: dict[str, tuple[float, CameraRef | None]] = {}
        self._listeners: list[CameraChange] = []

    def on_change(self, listener: CameraChange) -> None:
        """Called with (before, after) whenever a known camera changes here (an update, a
        device sync); not for cameras a sync adds, which start disabled."""
        self._listeners.append(listener)

    async def list(self, caller: Caller | None, payload: Any) -> dict[str, Any]:
        """List cameras."""
        query = ListQuery.parse(payload, _SORTABLE)
        searchable = [cameras_table.c.name, cameras_table.c.room, cameras_table.c.uid,
                      cameras_table.c.mtx_path]
        async with self._store.begin() as conn:
            return await list_page(conn, query, sa.select(cameras_table), searchable, _SORTABLE,
                                   _item)

    async def read(self, caller: Caller | None, entity: Any) -> dict[str, Any]:
        """Read a camera."""
        return _item(await self._row(entity_id(entity)))

    async def update(self, caller: Caller | None, entity: Any, payload: Any) -> dict[str, Any]:
        """Set a camera's MediaMTX path, enable it, make it persistent, or choose its audio."""
        camera_id = entity_id(entity)
        values = _UPDATE.parse(payload)
        before = await self._row(camera_id)
        # Checked on the resulting state: clearing the path of an enabled camera is refused too.
        if values.get("is_enabled", before.is_enabled) and \
                not values.get("mtx_path", before.mtx_path):
            raise Invalid("A camera needs an mtx_path before it can be enabled",
                          [field_error("mtx_path", "required to enable")])
        if values:
            try:
                async with self._store.begin() as conn:
                    await conn.execute(
                        cameras_table.update().where(cameras_table.c.id == camera_id).values(values)
                    )
            except IntegrityError:
                raise Conflict(f"mtx_path {values.get('mtx_path')!r} is already in use",
                               [field_error("mtx_path", "already in use")]) from None
        after = await self._row(camera_id)
        await self._changed(camera_ref(before), camera_ref(after))
        return _item(after)

    async def sync_devices(self, credential_id: int, devices: Mapping[str, Mapping[str, Any]]
                           ) -> list[CameraRef]:
        """Make the credential's cameras what Google lists (uid -> columns): new ones added,
        listed ones updated, the rest marked missing (kept: a glitch must not lose their
        settings). Returns the cameras not listed."""
        async with self._store.begin() as conn:
            existing = {row.uid: row for row in (await conn.execute(
                sa.select(cameras_table).where(cameras_table.c.credential_id == credential_id)
            )).all()}
            for uid, values in devices.items():
                if uid in existing:
                    await conn.execute(cameras_table.update().where(
                        cameras_table.c.id == existing[uid].id).values(
                            **values, is_missing=False, updated_at=utcnow()))
                else:
                    await conn.execute(cameras_table.insert().values(
                        credential_id=credential_id, uid=uid, **values, is_missing=False))
            gone = [row for uid, row in existing.items() if uid not in devices]
            if gone:
                await conn.execute(cameras_table.update().where(cameras_table.c.id.in_(
                    [row.id for row in gone])).values(is_missing=True, updated_at=utcnow()))
        for row in existing.values():
            await self._changed(camera_ref(row), await self.get_ref(row.id))
        return [camera_ref(row) for row in gone]

    async def _changed(self, before: CameraRef | None, after: CameraRef | None) -> None:
        """Forget cached paths and tell listeners (the Nest streams, MQTT) what changed."""
        for ref in (before, after):
            if ref and ref.mtx_path:
                self._by_path.pop(ref.mtx_path, None)
        for listener in self._listeners:
            await listener(before, after)

    async def by_path(self, path: str) -> CameraRef | None:
        """The camera serving a MediaMTX path, from a short-lived cache: hooks are hot."""
        now = time.monotonic()
        cached = self._by_path.get(path)
        if cached and now - cached[0] < _CACHE_SECONDS:
            return cached[1]
        async with self._store.begin() as conn:
            row = (await conn.execute(
                sa.select(cameras_table).where(cameras_table.c.mtx_path == path))).first()
        ref = camera_ref(row) if row else None
        if len(self._by_path) > 10_000:
            self._by_path.clear()
        self._by_path[path] = (now, ref)
        return ref

    async def get_ref(self, camera_id: int) -> CameraRef | None:
        row = await self._fetch(camera_id)
        return camera_ref(row) if row else None

    async def _row(self, camera_id: int) -> Any:
        row = await self._fetch(camera_id)
        if row is None:
            raise NotFound(f"No camera with id {camera_id}")
        return row

    async def _fetch(self, camera_id: int) -> Any:
        async with self._store.begin() as conn:
            return (await conn.execute(
                sa.select(cameras_table).where(cameras_table.c.id == camera_id)
            )).first()
