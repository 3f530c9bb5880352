"""One stream session lifecycle for every Nest protocol: start on demand, keep alive before
expiry, recover, stop with Google, hand over.

`StreamLifecycle` owns the sessions, the verbs and the bus handlers; a protocol part
(rtsp_streams.RtspStreams, webrtc_streams.WebRtcStreams) fills in how a session starts, how
it is kept alive and how it ends, as python-socketio's managers fill in a transport.

Every Google command of a session goes through `_command`: it runs to its answer even when
the task that sent it is cancelled, and `stop`/`hand_over` wait for it, so a stream Google
generated or extended while a stop was on its way is still stopped (or stored).
"""

from __future__ import annotations

import abc
import asyncio
import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ...errors import GoogleError, Unavailable
from ...events import Event, EventBus, isoformat
from ...hooks.camera_details import camera_details
from ...modules.cameras import CameraRef
from ...storage.store import utcnow
from ..google.sdm import SdmClient

logger = logging.getLogger(__name__)

# Renew a fifth of the stream's life before expiry (a minute at most for Google's 5 minutes).
MARGIN_FRACTION, MARGIN_MAX = 0.2, 60.0
STOP_WITHIN = 10.0  # seconds a Stop*Stream command may take

T = TypeVar("T")


@dataclass
class StreamSession(abc.ABC):
    """One camera's session; a protocol part adds what its streams carry."""

    camera: CameraRef
    wanted: bool = True  # False once it is being stopped
    expires_at: dt.datetime | None = None
    lifetime: float = 300.0
    task: asyncio.Task[None] | None = None  # keeps it alive
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    calls: set[asyncio.Future[Any]] = field(default_factory=set)  # Google commands in flight

    def seconds_left(self) -> float:
        return (self.expires_at - utcnow()).total_seconds() if self.expires_at else 0.0

    @property
    def margin(self) -> float:
        return min(MARGIN_MAX, self.lifetime * MARGIN_FRACTION)

    @property
    def expiry(self) -> str:
        return isoformat(self.expires_at or utcnow())

    @abc.abstractmethod
    def alive(self) -> bool:
        """Whether the session is running now."""


S = TypeVar("S", bound=StreamSession)


class StreamLifecycle(abc.ABC, Generic[S]):
    """One session per camera in demand; implements receiver.StreamSource for one protocol."""

    noun = "stream"  # what the log calls a session
    session_type: type[S]

    def __init__(self, bus: EventBus, sdm: SdmClient, start_timeout: float) -> None:
        self._bus = bus
        self._sdm = sdm
        self._start_timeout = start_timeout
        self._sessions: dict[int, S] = {}

    # -- what a protocol part fills in ------------------------------------------------------

    @abc.abstractmethod
    async def _begin(self, session: S) -> None:
        """Start the session unless it runs (its lock held); raise errors.Unavailable."""

    @abc.abstractmethod
    def _source_line(self, session: S) -> str:
        """The demand hook's answer for a started session."""

    @abc.abstractmethod
    async def _keep_alive(self, session: S) -> None:
        """Renew before each expiry and recover from failures, while the session is wanted."""

    @abc.abstractmethod
    async def _end(self, session: S) -> None:
        """Tell Google the session is over and let go of what it holds (its lock held)."""

    def _keeps_alive(self) -> bool:
        """Whether this replica keeps its sessions alive."""
        return True

    async def _take(self, camera_id: int) -> S | None:
        """The session `stop` ends, no longer registered."""
        return self._sessions.pop(camera_id, None)

    # -- the verbs -------------------------------------------------------------------------

    async def source_for(self, camera: CameraRef) -> str:
        session = self._sessions.setdefault(camera.id, self.session_type(camera))
        session.camera, session.wanted = camera, True
        async with session.lock:
            # Dropped while this waited: stopped (that demand has ended), or handed over or
            # given up (taken back, unless another demand has a session of its own by now).
            if not session.wanted or self._sessions.setdefault(camera.id, session) is not session:
                raise Unavailable(f"the stream of camera {camera.name!r} was stopped while "
                                  "it started")
            await self._begin(session)
        if self._keeps_alive() and (session.task is None or session.task.done()):
            session.task = asyncio.create_task(self._keep_alive(session))
        return self._source_line(session)

    def is_live(self, camera_id: int) -> bool:
        """Whether this replica runs a session of the camera."""
        session = self._sessions.get(camera_id)
        return session is not None and session.wanted and session.alive()

    @property
    def live(self) -> int:
        """Sessions this replica keeps alive."""
        return sum(1 for s in self._sessions.values() if s.task is not None and s.alive())

    async def stop(self, camera_id: int, why: str) -> None:
        """End a camera's session: its keep-alive, what Google was asked meanwhile, then Google."""
        session = await self._take(camera_id)
        if session is None:
            return
        session.wanted = False
        await self._settle(session)
        async with session.lock:
            await self._end(session)
        logger.info("camera %d (%s): %s stopped (%s)", camera_id, session.camera.name,
                    self.noun, why)

    async def stop_all(self, why: str) -> None:
        """End every session this replica runs, concurrently."""
        await asyncio.gather(*(self.stop(camera_id, why) for camera_id in list(self._sessions)))

    async def _settle(self, session: S) -> None:
        """Cancel the keep-alive, then wait for the answers to the commands it had sent."""
        task = session.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*session.calls, return_exceptions=True)

    async def _command(self, session: S, command: str, params: dict[str, Any], within: float,
                      take: Callable[[dict[str, Any]], Awaitable[T]]) -> T:
        """Send a command for the session; `take` handles Google's answer even when the
        caller is cancelled meanwhile (see the module's doc)."""
        camera = session.camera

        async def call() -> T:
            results = await self._sdm.execute(camera.credential_id, camera.uid, command, params,
                                              within=within)
            return await take(results)

        future = asyncio.ensure_future(call())
        session.calls.add(future)
        future.add_done_callback(functools.partial(_finished, session.calls))
        return await asyncio.shield(future)

    async def _stop_command(self, session: S, command: str, params: dict[str, Any]) -> None:
        """A Stop*Stream command; a refusal is only logged (the stream expires anyway)."""
        try:
            await self._command(session, command, params, STOP_WITHIN, _ignore)
        except GoogleError as exc:
            logger.warning("camera %d: %s failed: %s", session.camera.id,
                           command.rsplit(".", 1)[-1], exc.message)

    # -- bus and module listeners ----------------------------------------------------------

    async def on_event(self, event: Event) -> None:
        """Bus subscriber: the end of demand stops the camera's session."""
        if event.domain == "camera" and event.event == "unDemand" and event.entity:
            await self.stop(event.entity, "no more demand")

    async def on_camera_change(self, before: CameraRef | None, after: CameraRef | None) -> None:
        if before is None or before.id not in self._sessions:
            return
        if after is None or not after.enabled:
            await self.stop(before.id, "camera disabled")
        else:
            self._sessions[before.id].camera = after

    async def on_credential_deleted(self, credential_id: int) -> None:
        for camera_id, session in list(self._sessions.items()):
            if session.camera.credential_id == credential_id:
                await self.stop(camera_id, "credential deleted")

    async def _publish(self, session: S, event: str, **extra: Any) -> None:
        camera = session.camera
        await self._bus.publish(Event("camera", event, camera.id,
                                      camera_details(camera.mtx_path, camera, **extra)))


async def _ignore(results: dict[str, Any]) -> None:
    """`take` for a command whose answer carries nothing (Stop*Stream)."""


def _finished(calls: set[asyncio.Future[Any]], future: asyncio.Future[Any]) -> None:
    calls.discard(future)
    if not future.cancelled():
        future.exception()  # retrieved: a cancelled caller is gone, and `_settle` only waits
