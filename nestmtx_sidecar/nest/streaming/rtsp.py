"""RTSP Nest cameras: Google's stream URL goes to the demand hook, extended before each expiry
(ExtendRtspStream) by the Nest lease holder.

Each session is stored encrypted in `stream_sessions_table`, so any replica can stop it, and the
next lease holder (or the restarted sidecar) resumes extending it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ...errors import GoogleError, GoogleUnreachable, SecretUnreadable, Unavailable
from ...events import EventBus
from ...modules.cameras import Cameras
from ...security import Redactor, SecretBox
from ...storage.store import Store, as_utc, stream_sessions_table
from ..google.sdm import EXTEND_RTSP, GENERATE_RTSP, STOP_RTSP, SdmClient
from ..leadership import Leadership
from .lifecycle import StreamLifecycle, StreamSession

logger = logging.getLogger(__name__)

# Never send an extension this close to expiry: a late one would be for a dead stream.
GUARD_FRACTION, GUARD_MAX = 0.05, 5.0


@dataclass
class RtspSession(StreamSession):
    url: str | None = None
    extension_token: str | None = None
    generation: int = 0

    @property
    def guard(self) -> float:
        return min(GUARD_MAX, self.lifetime * GUARD_FRACTION)

    def alive(self) -> bool:
        return self.url is not None and self.seconds_left() > self.guard


class StoredSessions:
    """The `stream_sessions_table` rows: a session's URL and extension token, encrypted."""

    def __init__(self, store: Store, box: SecretBox, redactor: Redactor) -> None:
        self._store = store
        self._box = box
        self._redactor = redactor

    async def save(self, session: RtspSession) -> None:
        assert session.url is not None and session.extension_token is not None
        async with self._store.begin() as conn:
            await conn.execute(stream_sessions_table.delete().where(
                stream_sessions_table.c.camera_id == session.camera.id))
            await conn.execute(stream_sessions_table.insert().values(
                camera_id=session.camera.id, protocol="RTSP",
                source_url=self._box.encrypt(session.url),
                extension_token=self._box.encrypt(session.extension_token),
                expires_at=session.expires_at, generation=session.generation))

    async def delete(self, camera_id: int) -> None:
        async with self._store.begin() as conn:
            await conn.execute(stream_sessions_table.delete().where(
                stream_sessions_table.c.camera_id == camera_id))

    async def rows(self) -> list[Any]:
        async with self._store.begin() as conn:
            return list((await conn.execute(sa.select(stream_sessions_table))).all())

    async def load(self, session: RtspSession) -> None:
        """Refresh a session from the store; no stored row means no stream."""
        async with self._store.begin() as conn:
            row = (await conn.execute(sa.select(stream_sessions_table).where(
                stream_sessions_table.c.camera_id == session.camera.id))).first()
        if row is None or not self.restore(session, row):
            session.url = session.extension_token = session.expires_at = None

    def restore(self, session: RtspSession, row: Any) -> bool:
        """Take a stored session's state (decrypted) into memory; False if it cannot be."""
        try:
            session.url = self._box.decrypt(row.source_url)
            session.extension_token = self._box.decrypt(row.extension_token)
        except SecretUnreadable as exc:
            # Encrypted under another app key: neither extensible nor stoppable from here,
            # so it is left to expire at Google; the next demand generates a new stream.
            logger.warning("camera %d (%s): its stored stream session is dropped: %s",
                           session.camera.id, session.camera.name, exc.message)
            return False
        session.expires_at = as_utc(row.expires_at)
        session.generation = row.generation
        session.lifetime = max(1.0, (session.expires_at - as_utc(row.updated_at)
                                     ).total_seconds()) if session.expires_at else 300.0
        self._redactor.hold(("stream", session.camera.id), session.url, session.extension_token)
        return True


class RtspStreams(StreamLifecycle[RtspSession]):
    """Generate, extend (lease holder), regenerate on failure, stop; hand over, resume."""

    session_type = RtspSession

    def __init__(self, store: Store, box: SecretBox, redactor: Redactor, bus: EventBus,
                 sdm: SdmClient, cameras: Cameras, start_timeout: float,
                 leadership: Leadership) -> None:
        super().__init__(bus, sdm, start_timeout)
        self._redactor = redactor
        self._cameras = cameras
        self._stored = StoredSessions(store, box, redactor)
        # Only the Nest leader extends; the others start and stop streams from the session
        # state in the store.
        self._leadership = leadership
        self._stopping = False

    def _leads(self) -> bool:
        return self._leadership.held and not self._stopping

    def _keeps_alive(self) -> bool:
        return self._leads()

    def _source_line(self, session: RtspSession) -> str:
        assert session.url is not None
        return f"rtsp {session.url}"

    async def _begin(self, session: RtspSession) -> None:
        if not self._leads():
            await self._stored.load(session)  # the lease holder may have extended or ended it
        if session.alive():
            return
        try:
            await self._generate(session)
        except GoogleError as exc:
            raise Unavailable(f"Google could not start the stream of camera "
                              f"{session.camera.name!r}: {exc.message}") from None

    async def _generate(self, session: RtspSession) -> None:
        async def take(results: dict[str, Any]) -> None:
            try:
                url = str(results["streamUrls"]["rtspUrl"])
            except (KeyError, TypeError):
                raise GoogleUnreachable("GenerateRtspStream answered without streamUrls.rtspUrl"
                                     ) from None
            session.url = url
            session.generation += 1
            await self._renewed(session, results)

        await self._command(session, GENERATE_RTSP, {}, self._start_timeout, take)
        logger.info("camera %d (%s): stream %d generated, expires at %s", session.camera.id,
                    session.camera.name, session.generation, session.expiry)

    async def _renewed(self, session: RtspSession, results: dict[str, Any]) -> None:
        """Take a Generate/Extend answer: new tokens, new expiry, saved encrypted."""
        try:
            token = str(results["streamExtensionToken"])
            expires_at = dt.datetime.fromisoformat(str(results["expiresAt"]))
        except (KeyError, ValueError):
            raise GoogleUnreachable("stream command answered without a token or expiresAt"
                                 ) from None
        self._redactor.hold(("stream", session.camera.id), token, results.get("streamToken"),
                            session.url)
        session.extension_token, session.expires_at = token, as_utc(expires_at)
        session.lifetime = max(1.0, session.seconds_left())
        await self._stored.save(session)

    async def _keep_alive(self, session: RtspSession) -> None:
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

    async def _extend(self, session: RtspSession) -> bool:
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
                    await self._command(session, EXTEND_RTSP,
                                       {"streamExtensionToken": session.extension_token},
                                       budget, lambda results: self._renewed(session, results))
            except GoogleError as exc:
                retry_in = min(10.0, max(0.1, budget / 4))
                will_retry = exc.retryable and budget - retry_in > 0
                await self._failed(session, exc.message, exc.reason, attempt, will_retry)
                if not will_retry:
                    return False
                await asyncio.sleep(retry_in)
                continue
            logger.info("camera %d (%s): stream extended until %s", session.camera.id,
                        session.camera.name, session.expiry)
            await self._publish(session, "extended", expiresAt=session.expiry,
                                generation=session.generation)
            return True

    async def _failed(self, session: RtspSession, error: str, reason: str, attempt: int,
                      will_retry: bool) -> None:
        extra: dict[str, Any] = {}
        if not will_retry:
            extra["regenerating"] = session.wanted
        logger.warning("camera %d (%s): extending the stream failed (attempt %d, %s): %s%s",
                       session.camera.id, session.camera.name, attempt, reason, error,
                       "; retrying" if will_retry else
                       "; generating a new stream" if session.wanted else "")
        await self._publish(session, "failed-extension", error=error, reason=reason,
                            attempt=attempt, willRetry=will_retry, **extra)

    async def _take(self, camera_id: int) -> RtspSession | None:
        session = self._sessions.pop(camera_id, None)
        if session is not None and self._leads():
            return session
        # Started or extended by another replica, maybe: the store has its live token.
        if session is None:
            camera = await self._cameras.get_ref(camera_id)
            session = RtspSession(camera) if camera is not None else None
        if session is not None:
            await self._stored.load(session)
        return session if session is not None and session.url is not None else None

    async def _end(self, session: RtspSession) -> None:
        """StopRtspStream once, while Google still knows the stream; the stored row goes."""
        if session.extension_token and session.seconds_left() > 0:
            await self._stop_command(session, STOP_RTSP,
                                     {"streamExtensionToken": session.extension_token})
        await self._stored.delete(session.camera.id)

    async def stop_all(self, why: str) -> None:
        """Shutdown: end every stream this replica runs (StopRtspStream each)."""
        self._stopping = True  # adopt and extend nothing from now on
        await super().stop_all(why)

    async def hand_over(self) -> None:
        """The lease moved away: cancel timers, keep sessions stored for the next holder."""
        sessions = list(self._sessions.values())
        self._sessions.clear()
        await asyncio.gather(*(self._settle(s) for s in sessions))

    async def resume(self) -> None:
        """Keep extending stored streams that are still alive and not extended here yet (after
        a restart, on taking the Nest lease, or started by another replica); drop the ones
        another replica stopped.

        Demand is assumed to continue: a stored stream that expired meanwhile is not extended
        but regenerated (the same path as a failed extension: `failed-extension` with reason
        `expired`, then a new stream); an unDemand spooled while the sidecar was down is
        replayed after this and stops the stream.
        """
        if not self._leads():
            return  # not the lease holder, or shutting down
        rows = await self._stored.rows()
        stored = {row.camera_id for row in rows}
        for camera_id, session in list(self._sessions.items()):
            if camera_id not in stored and session.task is not None:
                self._sessions.pop(camera_id)
                session.task.cancel()
        for row in rows:
            known = self._sessions.get(row.camera_id)
            if known is not None and (known.task is not None or known.lock.locked()):
                continue  # extended here already, or being started right now
            await self._resume(row)

    async def _resume(self, row: Any) -> None:
        camera = await self._cameras.get_ref(row.camera_id)
        if camera is None or not camera.enabled:
            await self._stored.delete(row.camera_id)
            return
        session = RtspSession(camera)
        if not self._stored.restore(session, row):
            await self._stored.delete(row.camera_id)
            return
        self._sessions[row.camera_id] = session
        session.task = asyncio.create_task(self._keep_alive(session))
        logger.info("camera %d (%s): resumed stream %d%s", camera.id, camera.name,
                    session.generation, "" if session.alive() else
                    ", which expired meanwhile: generating a new one")
