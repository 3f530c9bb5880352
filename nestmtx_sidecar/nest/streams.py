"""The stream supervisor: one session per camera; generate, extend before expiry, recover, stop."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..errors import GoogleError, GoogleUnreachable, Invalid, Unavailable
from ..events import Event, EventBus, isoformat
from ..hooks.camera_details import camera_details
from ..hooks.receiver import StreamSource
from ..modules.cameras import CameraRef, Cameras
from ..security import Redactor, SecretBox
from ..store import Store, as_utc, stream_sessions_table, utcnow
from .sdm import EXTEND_RTSP, GENERATE_RTSP, STOP_RTSP, SdmClient

logger = logging.getLogger(__name__)

# Extend a fifth of the stream's life before expiry (a minute at most for Google's 5 minutes),
# and never send an extension this close to expiry: a late one would be for a dead stream.
MARGIN_FRACTION, MARGIN_MAX = 0.2, 60.0
GUARD_FRACTION, GUARD_MAX = 0.05, 5.0
STOP_WITHIN = 10.0


@dataclass
class _Session:
    camera: CameraRef
    wanted: bool = True
    url: str | None = None
    extension_token: str | None = None
    expires_at: dt.datetime | None = None
    lifetime: float = 300.0
    generation: int = 0
    task: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def seconds_left(self) -> float:
        return (self.expires_at - utcnow()).total_seconds() if self.expires_at else 0.0

    @property
    def margin(self) -> float:
        return min(MARGIN_MAX, self.lifetime * MARGIN_FRACTION)

    @property
    def guard(self) -> float:
        return min(GUARD_MAX, self.lifetime * GUARD_FRACTION)

    def alive(self) -> bool:
        return self.url is not None and self.seconds_left() > self.guard


class StreamSupervisor:
    """Implements receiver.StreamSource for Nest RTSP cameras."""

    def __init__(self, store: Store, box: SecretBox, redactor: Redactor, bus: EventBus,
                 sdm: SdmClient, cameras: Cameras, start_timeout: float,
                 webrtc: StreamSource) -> None:
        self._store = store
        self._box = box
        self._redactor = redactor
        self._bus = bus
        self._sdm = sdm
        self._cameras = cameras
        self._start_timeout = start_timeout
        self._webrtc = webrtc  # WebRTC-only cameras: the sidecar publishes them itself
        self._sessions: dict[int, _Session] = {}
        # Only the replica holding the Nest lease extends; the others start and stop streams
        # from the session state in the store.
        self.active = True

    async def source_for(self, camera: CameraRef) -> str:
        if "RTSP" not in camera.protocols:
            if "WEB_RTC" in camera.protocols:
                return await self._webrtc.source_for(camera)
            await self._unsupported(camera)
        session = self._sessions.setdefault(camera.id, _Session(camera))
        session.camera, session.wanted = camera, True
        async with session.lock:
            if not self.active:
                await self._load(session)  # the lease holder may have extended or ended it
            if not session.alive():
                try:
                    await self._generate(session)
                except GoogleError as exc:
                    raise Unavailable(f"Google could not start the stream of camera "
                                      f"{camera.name!r}: {exc.message}") from None
        if self.active and (session.task is None or session.task.done()):
            session.task = asyncio.create_task(self._keep_alive(session))
        assert session.url is not None
        return f"rtsp {session.url}"

    async def _unsupported(self, camera: CameraRef) -> None:
        message = f"camera {camera.name!r} has no live stream Google can serve"
        logger.error(message)
        await self._bus.publish(Event("camera", "error", camera.id,
                                      camera_details(camera.mtx_path, camera, error=message,
                                                     reason="no_live_stream")))
        raise Invalid(message)

    async def _generate(self, session: _Session) -> None:
        camera = session.camera
        results = await self._sdm.execute(camera.credential_id, camera.uid, GENERATE_RTSP, {},
                                          within=self._start_timeout)
        try:
            url = str(results["streamUrls"]["rtspUrl"])
        except (KeyError, TypeError):
            raise GoogleUnreachable("GenerateRtspStream answered without streamUrls.rtspUrl"
                                 ) from None
        session.url = url
        session.generation += 1
        await self._renewed(session, results)
        logger.info("camera %d (%s): stream %d generated, expires at %s", camera.id, camera.name,
                    session.generation, isoformat(session.expires_at or utcnow()))

    async def _renewed(self, session: _Session, results: dict[str, Any]) -> None:
        """Take a Generate/Extend answer: new tokens, new expiry, saved encrypted."""
        try:
            token = str(results["streamExtensionToken"])
            expires_at = dt.datetime.fromisoformat(str(results["expiresAt"]))
        except (KeyError, ValueError):
            raise GoogleUnreachable("stream command answered without a token or expiresAt"
                                 ) from None
        self._redactor.hold(("stream", session.camera.id), token, results.get("streamToken"),
                            session.url)
        expires_at = as_utc(expires_at)
        session.extension_token, session.expires_at = token, expires_at
        session.lifetime = max(1.0, session.seconds_left())
        async with self._store.begin() as conn:
            await conn.execute(stream_sessions_table.delete().where(
                stream_sessions_table.c.camera_id == session.camera.id))
            await conn.execute(stream_sessions_table.insert().values(
                camera_id=session.camera.id, protocol="RTSP",
                source_url=self._box.encrypt(session.url),
                extension_token=self._box.encrypt(token), expires_at=expires_at,
                generation=session.generation))

    async def _keep_alive(self, session: _Session) -> None:
        """Extend before each expiry; when that fails for good, regenerate while demand lasts."""
        while session.wanted:
            await asyncio.sleep(max(0.0, session.seconds_left() - session.margin))
            generation = session.generation
            if await self._extend(session):
                continue
            async with session.lock:
                if session.generation != generation or not session.wanted:
                    continue  # a demand regenerated it meanwhile, or it is being stopped
                try:
                    await self._generate(session)
                except GoogleError as exc:
                    logger.error("camera %d (%s): could not regenerate the stream: %s; the next "
                                 "demand will try again", session.camera.id, session.camera.name,
                                 exc.message)
                    return

    async def _extend(self, session: _Session) -> bool:
        camera = session.camera
        generation, attempt = session.generation, 0
        while True:
            attempt += 1
            budget = session.seconds_left() - session.guard
            if budget <= 0:
                await self._failed(session, "the stream expired before it could be extended",
                                   "expired", attempt, will_retry=False)
                return False
            try:
                async with session.lock:
                    if session.generation != generation:
                        return True  # regenerated on demand in the meantime
                    results = await self._sdm.execute(
                        camera.credential_id, camera.uid, EXTEND_RTSP,
                        {"streamExtensionToken": session.extension_token}, within=budget)
                    await self._renewed(session, results)
            except GoogleError as exc:
                retry_in = min(10.0, max(0.1, budget / 4))
                will_retry = exc.retryable and budget - retry_in > 0
                await self._failed(session, exc.message, exc.reason, attempt, will_retry)
                if not will_retry:
                    return False
                await asyncio.sleep(retry_in)
                continue
            expires_at = isoformat(session.expires_at or utcnow())
            logger.info("camera %d (%s): stream extended until %s", camera.id, camera.name,
                        expires_at)
            await self._bus.publish(Event("camera", "extended", camera.id, camera_details(
                camera.mtx_path, camera, expiresAt=expires_at, generation=session.generation)))
            return True

    async def _failed(self, session: _Session, error: str, reason: str, attempt: int,
                      will_retry: bool) -> None:
        camera = session.camera
        extra: dict[str, Any] = {}
        if not will_retry:
            extra["regenerating"] = session.wanted
        logger.warning("camera %d (%s): extending the stream failed (attempt %d, %s): %s%s",
                       camera.id, camera.name, attempt, reason, error,
                       "; retrying" if will_retry else
                       "; generating a new stream" if session.wanted else "")
        await self._bus.publish(Event("camera", "failed-extension", camera.id, camera_details(
            camera.mtx_path, camera, error=error, reason=reason, attempt=attempt,
            willRetry=will_retry, **extra)))

    async def stop_stream(self, camera_id: int, why: str) -> None:
        """End a camera's session: cancel its timers and tell Google (StopRtspStream) once."""
        session = self._sessions.pop(camera_id, None)
        if session is None or not self.active:
            # Started or extended by another replica, maybe: the store has its live token.
            session = session or await self._stored(camera_id)
            if session is not None:
                await self._load(session)
            if session is None or session.url is None:
                return
        session.wanted = False
        if session.task is not None and session.task is not asyncio.current_task():
            session.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await session.task
        async with session.lock:
            if session.extension_token and session.seconds_left() > 0:
                try:
                    await self._sdm.execute(
                        session.camera.credential_id, session.camera.uid, STOP_RTSP,
                        {"streamExtensionToken": session.extension_token}, within=STOP_WITHIN)
                except GoogleError as exc:
                    logger.warning("camera %d: StopRtspStream failed: %s", camera_id, exc.message)
            async with self._store.begin() as conn:
                await conn.execute(stream_sessions_table.delete().where(
                    stream_sessions_table.c.camera_id == camera_id))
        logger.info("camera %d (%s): stream stopped (%s)", camera_id, session.camera.name, why)

    async def on_event(self, event: Event) -> None:
        """Bus subscriber: the end of demand stops the camera's stream."""
        if event.domain == "camera" and event.event == "unDemand" and event.entity:
            await self.stop_stream(event.entity, "no more demand")

    async def on_camera_change(self, before: CameraRef | None, after: CameraRef | None) -> None:
        if before is None or before.id not in self._sessions:
            return
        if after is None or not after.enabled:
            await self.stop_stream(before.id, "camera disabled")
        else:
            self._sessions[before.id].camera = after

    async def on_credential_deleted(self, credential_id: int) -> None:
        for camera_id, session in list(self._sessions.items()):
            if session.camera.credential_id == credential_id:
                await self.stop_stream(camera_id, "credential deleted")

    async def resume(self) -> None:
        """Keep extending stored streams that are still alive and not extended here yet (after
        a restart, on taking the Nest lease, or started by another replica); drop the ones
        another replica stopped.

        Demand is assumed to continue: a stored stream that expired meanwhile is not extended
        but regenerated (the same path as a failed extension: `failed-extension` with reason
        `expired`, then a new stream); an unDemand spooled while the sidecar was down is
        replayed after this and stops the stream.
        """
        if not self.active:
            return  # not the lease holder, or shutting down
        async with self._store.begin() as conn:
            rows = (await conn.execute(sa.select(stream_sessions_table))).all()
        stored = {row.camera_id for row in rows}
        for camera_id, session in list(self._sessions.items()):
            if camera_id not in stored and session.task is not None:
                self._sessions.pop(camera_id)
                session.task.cancel()
        for row in rows:
            known = self._sessions.get(row.camera_id)
            if known is not None and (known.task is not None or known.lock.locked()):
                continue  # extended here already, or being started right now
            camera = await self._cameras.get_ref(row.camera_id)
            if camera is None or not camera.enabled:
                async with self._store.begin() as conn:
                    await conn.execute(stream_sessions_table.delete().where(
                        stream_sessions_table.c.camera_id == row.camera_id))
                continue
            session = _Session(camera)
            self._restore(session, row)
            self._sessions[row.camera_id] = session
            session.task = asyncio.create_task(self._keep_alive(session))
            logger.info("camera %d (%s): resumed stream %d%s", camera.id, camera.name,
                        session.generation, "" if session.alive() else
                        ", which expired meanwhile: generating a new one")

    def _restore(self, session: _Session, row: Any) -> None:
        """Take a stored session's state (decrypted) into memory."""
        session.url = self._box.decrypt(row.source_url)
        session.extension_token = self._box.decrypt(row.extension_token)
        session.expires_at = as_utc(row.expires_at)
        session.generation = row.generation
        session.lifetime = max(1.0, (session.expires_at - as_utc(row.updated_at)
                                     ).total_seconds()) if session.expires_at else 300.0
        self._redactor.hold(("stream", session.camera.id), session.url, session.extension_token)

    async def _load(self, session: _Session) -> None:
        """Refresh a session from the store; no stored row means no stream."""
        async with self._store.begin() as conn:
            row = (await conn.execute(sa.select(stream_sessions_table).where(
                stream_sessions_table.c.camera_id == session.camera.id))).first()
        if row is None:
            session.url = session.extension_token = session.expires_at = None
        else:
            self._restore(session, row)

    async def _stored(self, camera_id: int) -> _Session | None:
        camera = await self._cameras.get_ref(camera_id)
        return _Session(camera) if camera is not None else None

    def is_live(self, camera_id: int) -> bool:
        """Whether this replica holds a running stream session of the camera."""
        session = self._sessions.get(camera_id)
        return session is not None and session.wanted and session.alive()

    @property
    def live(self) -> int:
        """Sessions this replica keeps alive: on the lease holder, every replica's."""
        return sum(1 for s in self._sessions.values() if s.task is not None and s.alive())

    async def stop_all(self, why: str) -> None:
        """Shutdown: end every stream this replica runs (StopRtspStream each), concurrently."""
        self.active = False  # adopt and extend nothing from now on
        await asyncio.gather(*(self.stop_stream(camera_id, why)
                               for camera_id in list(self._sessions)))

    async def close(self) -> None:
        """Hand-over: cancel timers, keep sessions stored for the next lease holder."""
        tasks = [s.task for s in self._sessions.values() if s.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._sessions.clear()
