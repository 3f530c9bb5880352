"""Assembles the sidecar: store, modules, bus, doors, background tasks, one ASGI app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
import socketio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .config import Settings
from .console import Console
from .events import EventBus
from .hooks import HookReceiver
from .http import HttpApi, IgnoreTrailingSlash, http_error, server_error
from .logs.stream import LogStream
from .mediamtx.config import persistent_paths
from .mediamtx.paths import MediaMtxPaths
from .metrics import Metrics, count_event
from .modules.auth import Auth
from .modules.cameras import Cameras
from .modules.console import ConsoleSettings
from .modules.credentials import Credentials
from .modules.dispatch import Dispatcher
from .modules.health import Health
from .modules.users import Users
from .modules.version import VERSION, Version
from .nest.service import Nest
from .security import PasswordHasher, Redactor, SecretBox
from .security.login_guard import LoginGuard
from .socketio import (
    EventLog,
    FastManager,
    MemoryLog,
    MemorySessions,
    RedisSessions,
    RedisStreamLog,
    Sessions,
    SocketIoDoor,
    fast_manager_class,
)
from .storage.lease import make_lease
from .storage.store import Store

if TYPE_CHECKING:
    from .mqtt import MqttBridge

logger = logging.getLogger(__name__)

TASK_STOP_SECONDS = 1.0
# Shutdown: events already published (an unDemand's StopRtspStream, say) get this long to be
# delivered while everything still works; the rest of the 10 s is for the parts below.
BUS_STOP_SECONDS = 2.0


class Sidecar:
    """Every long-lived part of the service, wired together once."""

    def __init__(self, settings: Settings, redactor: Redactor | None = None) -> None:
        self.settings = settings
        self.redactor = redactor or Redactor()
        self.redactor.pin(settings.app_key, settings.hook_secret, settings.admin_password)
        self.log_stream = LogStream(self.redactor)
        self.store = Store(settings.resolved_database_url)
        self.box = SecretBox(settings.app_key)
        self.bus = EventBus()
        self.hasher = PasswordHasher()
        self.login_guard = LoginGuard()
        self.auth = Auth(self.store, settings.token_ttl, self.hasher, self.login_guard)
        self.users = Users(self.store, self.auth, self.hasher)
        self.cameras = Cameras(self.store)
        self.credentials = Credentials(self.store, self.box, self.redactor,
                                       settings.google_consent_url)
        # Timeouts: an unreachable Redis must fail readiness checks and lease renewals, not hang.
        self.redis = (aioredis.from_url(settings.redis_url, socket_timeout=3,
                                        socket_connect_timeout=3)
                      if settings.redis_url else None)
        checks = {"database": self.store.ping}
        if self.redis is not None:
            checks["redis"] = self._ping_redis
        self.dispatcher = Dispatcher([
            self.auth, self.users, self.cameras, self.credentials,
            Health(checks, self._status), Version(), ConsoleSettings(settings),
        ])
        self.socketio_door = self._socketio_door()
        self.nest = Nest(settings, self.store, self.box, self.redactor, self.bus, self.cameras,
                         self.credentials, self.auth, make_lease("nest", self.store, self.redis))
        self.receiver = HookReceiver(settings.hook_secret, self.cameras, self.bus,
                                     streams=self.nest.streams, redis=self.redis)
        self.bus.subscribe(self.socketio_door.publish)
        self.bus.subscribe(count_event)
        self.mqtt: MqttBridge | None = None
        if settings.mqtt_url:
            from .mqtt import MqttBridge  # aiomqtt loads only when MQTT is configured

            self.mqtt = MqttBridge(settings, self.dispatcher, self.auth, self.cameras,
                                   self.credentials, self.redactor,
                                   pictures=lambda camera_id, event_id:
                                   self.nest.media.store.read(camera_id, "image", event_id))
            self.bus.subscribe(self.mqtt.publish)
        self.mediamtx = (MediaMtxPaths(settings.mediamtx_api_url)
                         if settings.mediamtx_api_url else None)
        if self.mediamtx is not None:
            self.cameras.on_change(self.mediamtx.on_camera_change)
        self.metrics = Metrics()
        self.metrics.gauge("nestmtx_connected_sockets", "Socket.IO clients on this replica",
                           lambda: self.socketio_door.connected)
        self.metrics.gauge("nestmtx_stream_sessions", "Nest stream sessions this replica "
                           "keeps alive", lambda: self.nest.streams.live)
        self.metrics.lease("nest", lambda: self.nest.lease.held)
        self._tasks: list[asyncio.Task[Any]] = []
        self._log_reader: asyncio.Task[None] | None = None

    def _socketio_door(self) -> SocketIoDoor:
        """On Redis, events cross replicas in a Redis stream (ordered, replayable), logs and
        other emits on python-socketio's Redis pub/sub (best effort), and dropped sockets'
        sessions are kept there for any replica to resume."""
        if self.redis is None:
            self.event_log: EventLog = MemoryLog()
            self.sessions: Sessions = MemorySessions()
            manager = FastManager()
        else:
            self.event_log = RedisStreamLog(self.redis)
            self.sessions = RedisSessions(self.redis)
            manager = fast_manager_class(socketio.AsyncRedisManager)(self.settings.redis_url)
        return SocketIoDoor(self.auth, self.dispatcher, self.log_stream.recent, manager,
                            self.settings.trusted_proxy_networks, self.event_log, self.sessions)

    async def start(self) -> None:
        await self.store.migrate()
        await self._ensure_admin()
        await self.event_log.open()  # before anything publishes: it is where reading starts
        self._log_reader = asyncio.create_task(self.event_log.run())
        self._spawn(self.log_stream.run(self.socketio_door.send_logs))
        self._spawn(self.socketio_door.sweep_tokens())
        await self.nest.start()  # before spool replay: a spooled unDemand stops a resumed stream
        if self.mqtt is not None:
            self.mqtt.start()
        if self.mediamtx is not None:
            self._spawn(self.mediamtx.apply(await persistent_paths(self.store)))
        if self.settings.spool_dir:
            self._spawn(self.receiver.drain_spool(Path(self.settings.spool_dir),
                                                  self.settings.spool_replay_delay))
        logger.info("nestmtx-sidecar ready")

    async def stop(self) -> None:
        for task in self._tasks:  # first: the spool replay publishes nothing more
            task.cancel()
        if self._tasks:
            # Bounded: redis-py can swallow a cancel that lands mid-command, and the process
            # must still exit within its 10 s.
            _, stuck = await asyncio.wait(self._tasks, timeout=TASK_STOP_SECONDS)
            for task in stuck:
                logger.warning("background task %s did not stop in time", task.get_coro())
        self._tasks.clear()
        await self.bus.stop(BUS_STOP_SECONDS)  # then MQTT's outbox takes the last events
        if self._log_reader is not None:  # and the event log, which other replicas read
            self._log_reader.cancel()
            await asyncio.wait([self._log_reader], timeout=TASK_STOP_SECONDS)
        if self.mqtt is not None:  # and `offline` goes out while everything still works
            await self.mqtt.stop()
        await self.nest.stop()
        if self.mediamtx is not None:
            await self.mediamtx.close()
        await self.store.close()
        if self.redis is not None:
            await self.redis.aclose()
        self.login_guard.close()
        self.hasher.close()

    async def _status(self) -> dict[str, Any]:
        """This replica, for logged-in users of `health list` (the console's Status page)."""
        return {
            "version": VERSION, "connected_sockets": self.socketio_door.connected,
            "lease": {"name": self.nest.lease.name, "held_here": self.nest.lease.held,
                      "replica": self.nest.lease.holder_id},
            "mediamtx": await self.mediamtx.reachable() if self.mediamtx else "not configured",
        }

    async def _ping_redis(self) -> None:
        assert self.redis is not None  # the check is registered only with Redis
        await self.redis.ping()

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        self._tasks.append(asyncio.create_task(coroutine))

    async def _ensure_admin(self) -> None:
        """Create or update the configured admin; with none configured and no users, make one."""
        username = self.settings.admin_username
        made = await self.users.ensure_admin(username, self.settings.admin_password)
        if made is not None:
            self.redactor.pin(made)  # shown once below, never in a log line
            _announce(f"Created user {username!r} with password {made} "
                      "(shown once; set NESTMTX_ADMIN_PASSWORD to choose your own)")


def _announce(message: str) -> None:
    """Printed straight to the terminal, never through logging: logs are streamed and kept."""
    print(message, file=sys.stderr, flush=True)


def create_app(sidecar: Sidecar) -> socketio.ASGIApp:
    http = HttpApi(sidecar.dispatcher, sidecar.auth, sidecar.settings.trusted_proxy_networks)
    console = Console(sidecar.settings.mediamtx_webrtc_url)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        result = await sidecar.dispatcher.modules["health"].call("list", None, None, None)
        return JSONResponse(result, status_code=200 if result["status"] == "ok" else 503)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await sidecar.start()
        try:
            yield
        finally:
            await sidecar.stop()

    starlette = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", sidecar.metrics.endpoint),
            Route("/hooks/{hook}", sidecar.receiver.endpoint, methods=["POST"]),
            Route("/hooks/source/{path:path}", sidecar.receiver.source_endpoint),
            *sidecar.nest.routes,  # before /api/{module}/{entity}, which would shadow them
            *http.routes,
            *console.routes,
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        middleware=[Middleware(IgnoreTrailingSlash)],
        lifespan=lifespan,
    )
    return socketio.ASGIApp(sidecar.socketio_door.sio, other_asgi_app=starlette,
                            socketio_path="socket.io")
