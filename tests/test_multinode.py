"""Two real `nestmtx-sidecar serve` processes sharing a real Redis and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.conftest import make_settings, serve_in_loop
from tests.fakes.google import Call, FakeGoogle, camera
from tests.process_support import enable_cameras, metric, source
from tests.services import (
    ROOT,
    SidecarProcess,
    create_database,
    free_port,
    require,
    require_binary,
    start_sidecar,
    wait_until,
)

JS = ROOT / "tests" / "js"


class JsClients:
    """tests/js/events-client.js: one socket.io-client per URL, reporting as JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self.lines: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, token: str, *urls: str) -> JsClients:
        node = require_binary("node", "apt-get install nodejs npm")
        require((JS / "node_modules" / "socket.io-client").is_dir(), "socket.io-client",
                "npm ci --prefix tests/js")
        proc = await asyncio.create_subprocess_exec(
            node, str(JS / "events-client.js"), token, *urls,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        clients = cls(proc)
        for url in urls:
            line = await clients.wait_for(lambda ln, url=url: ln["url"] == url)
            assert line["type"] == "connected", line
        return clients

    async def wait_for(self, match: Callable[[dict[str, Any]], bool],
                       seconds: float = 10.0) -> dict[str, Any]:
        """The first reported line, already read or still to come, that matches."""
        assert self._proc.stdout is not None
        for line in self.lines:
            if match(line):
                return line
        async with asyncio.timeout(seconds):
            while True:
                raw = await self._proc.stdout.readline()
                assert raw, "the JavaScript client exited"
                line = json.loads(raw)
                self.lines.append(line)
                if match(line):
                    return line

    def events(self, url: str, name: str) -> list[dict[str, Any]]:
        return [ln["payload"] for ln in self.lines
                if ln["type"] == "event" and ln["url"] == url and ln["name"] == name]

    async def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        await self._proc.wait()


@pytest.fixture
async def shared_env(postgres_url: str, redis_url: str) -> dict[str, str]:
    """What replicas share: database, Redis, app key, hook secret."""
    return {
        "NESTMTX_DATABASE_URL": await create_database(postgres_url, f"mn{uuid.uuid4().hex}"),
        "NESTMTX_REDIS_URL": redis_url,
        "NESTMTX_APP_KEY": Fernet.generate_key().decode(),
        "NESTMTX_HOOK_SECRET": secrets.token_urlsafe(32),
    }


@pytest.fixture
def replicas(tmp_path: Path, shared_env: dict[str, str]
             ) -> Iterator[tuple[SidecarProcess, SidecarProcess]]:
    a = start_sidecar(tmp_path, shared_env)
    try:
        b = start_sidecar(tmp_path, shared_env)
    except BaseException:
        a.stop()
        raise
    yield a, b
    b.stop()
    a.stop()


@pytest.fixture
async def js(replicas: tuple[SidecarProcess, SidecarProcess]) -> AsyncIterator[JsClients]:
    a, b = replicas
    clients = await JsClients.start(await a.login(), a.url, b.url)  # A's token on both
    yield clients
    await clients.close()


async def post_hook(replica: SidecarProcess, hook: str, path: str) -> None:
    async with httpx.AsyncClient(base_url=replica.url) as client:
        reply = await client.post(f"/hooks/{hook}", json={"MTX_PATH": path},
                                  headers={"Authorization": f"Bearer {replica.hook_secret}"})
    assert reply.status_code == 202, reply.text


async def test_hook_on_one_replica_reaches_sockets_on_every_replica_exactly_once(
        replicas: tuple[SidecarProcess, SidecarProcess], js: JsClients) -> None:
    a, b = replicas
    await post_hook(b, "ready", "front")
    # A later event from the same replica travels the same ordered Redis channel: once it
    # is in on both sockets, any duplicate of the first would already have arrived.
    await post_hook(b, "notReady", "marker")
    for url in (a.url, b.url):
        await js.wait_for(lambda ln, url=url: ln.get("name") == "nestmtx:*"
                          and ln["url"] == url and ln["payload"]["event"] == "notReady")
    for url in (a.url, b.url):
        ready = js.events(url, "camera:ready")
        assert len(ready) == 1, (url, ready)
        assert ready[0]["details"]["path"] == "front" and ready[0]["event"] == "ready"
        assert [p["event"] for p in js.events(url, "camera:*")] == ["ready", "notReady"]
        assert [p["event"] for p in js.events(url, "nestmtx:*")] == ["ready", "notReady"]


async def test_token_minted_on_one_replica_works_and_is_revoked_on_all(
        replicas: tuple[SidecarProcess, SidecarProcess]) -> None:
    a, b = replicas
    token = await a.login()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers) as client:
        reply = await client.get(f"{b.url}/api/users")
        assert reply.status_code == 200 and reply.json()["total"] == 1
        assert (await client.delete(f"{b.url}/api/auth")).status_code == 200
        refused = await client.get(f"{a.url}/api/users")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"


async def test_readyz_checks_database_and_redis(
        replicas: tuple[SidecarProcess, SidecarProcess]) -> None:
    for replica in replicas:
        async with httpx.AsyncClient(base_url=replica.url) as client:
            reply = await client.get("/readyz")
        assert reply.status_code == 200, reply.text
        assert reply.json()["checks"] == {"database": "ok", "redis": "ok"}


async def test_readyz_fails_while_redis_is_unreachable(tmp_path: Path) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    async with serve_in_loop(make_settings(tmp_path, redis_url=dead_redis)) as running, \
            httpx.AsyncClient(base_url=running.url) as client:
        reply = await client.get("/readyz")
        alive = await client.get("/healthz")
    assert reply.status_code == 503
    assert reply.json()["checks"]["database"] == "ok"
    assert reply.json()["checks"]["redis"].startswith("error")
    assert alive.status_code == 200


# -- Nest singletons: token refresh and stream extension on the lease holder only ---------


async def holds_lease(replica: SidecarProcess) -> bool:
    return await metric(replica, "nestmtx_lease_held", lease="nest") == 1


def gaps(calls: list[Call]) -> list[float]:
    return [b.at - a.at for a, b in itertools.pairwise(calls)]


async def test_lease_holder_killed_hands_refresh_and_extension_over_without_doubles(
        tmp_path: Path, shared_env: dict[str, str]) -> None:
    # Google's 1-hour tokens and 5-minute streams, scaled down alike.
    google = FakeGoogle(token_lifetime=20, stream_lifetime=15.0)
    google.devices["project-1"] = [camera("porch", "Porch")]
    async with google.serve():
        env = {**shared_env, "NESTMTX_GOOGLE_TOKEN_URI": google.token_endpoint,
               "NESTMTX_SDM_API_URL": google.sdm_url}
        replicas = [start_sidecar(tmp_path, env), start_sidecar(tmp_path, env)]
        try:
            await wait_until(lambda: holds_lease(replicas[0]), 15)
            holder, other = replicas
            assert not await holds_lease(other)

            # Set up on the replica that does not hold the lease: it must still work.
            assert await enable_cameras(other, google) == ["porch"]
            reply = await source(other, "porch")
            assert reply.status_code == 200 and reply.text.startswith("rtsp "), reply.text

            # The holder adopts the stream the other replica started, and extends it.
            await wait_until(lambda: google.count("ExtendRtspStream") == 1, 20)
            ok = {"command": "ExtendRtspStream", "status": "200"}
            assert await metric(holder, "nestmtx_sdm_calls_total", **ok) == 1
            assert await metric(other, "nestmtx_sdm_calls_total", **ok) == 0

            holder.stop(signal.SIGKILL)
            killed_at = time.monotonic()
            await wait_until(lambda: holds_lease(other), 15)
            assert time.monotonic() - killed_at < 15
            # The survivor keeps the same stream alive: it extends, and refreshes the token.
            await wait_until(lambda: google.count("ExtendRtspStream") == 2, 20)
            await wait_until(lambda: any(c.grant == "refresh_token" and c.at > killed_at
                                         for c in google.calls), 20)
            assert await metric(other, "nestmtx_sdm_calls_total", **ok) == 1
            assert await metric(other, "nestmtx_stream_sessions") == 1
        finally:
            for replica in replicas:  # off the loop: the fake Google must answer their Stops
                await asyncio.to_thread(replica.stop)

    extends = [c for c in google.calls if c.endpoint == "ExtendRtspStream"]
    assert [c.status for c in extends] == [200, 200]
    assert all(gap > 8 for gap in gaps(extends)), gaps(extends)  # 12 s apart, not doubled
    assert google.count("GenerateRtspStream") == 1  # the session survived the takeover
    assert google.count("StopRtspStream", status=200) == 1  # the survivor's SIGTERM ended it
    refreshes = [c for c in google.calls if c.grant == "refresh_token"]
    assert all(c.status == 200 for c in refreshes)
    assert all(gap > 8 for gap in gaps(refreshes)), gaps(refreshes)  # one refresher at a time
