"""Recovery and event delivery across replicas: two sidecars, one Redis, one PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from tests.services import (
    SidecarProcess,
    create_database,
    free_port,
    redis_server,
    start_sidecar,
    wait_until,
)
from tests.tcp_proxy import proxy_to
from tests.test_multinode import JsClients, post_hook, replicas, shared_env  # noqa: F401
from tests.test_recovery import connections, drop, got, received, reconnected, recovering_client

pytestmark = [pytest.mark.node, pytest.mark.redis, pytest.mark.postgres]


async def test_a_client_dropped_by_one_replica_recovers_on_another(
        replicas: tuple[SidecarProcess, SidecarProcess]) -> None:  # noqa: F811
    a, b = replicas
    async with proxy_to(a.port) as proxy:
        js = await recovering_client(await a.login(), proxy.url)
        try:
            assert await reconnected(js, 1) is False
            await post_hook(b, "ready", "cam0")
            await got(js, "cam0")
            await drop(js, proxy, a)
            for n, replica in enumerate((a, b, a), start=1):  # missed, from either replica
                await post_hook(replica, "ready", f"cam{n}")
            proxy.resume(b.port)  # it comes back through the load balancer to B
            assert await reconnected(js, 2) is True
            await post_hook(a, "ready", "cam4")
            await got(js, "cam4")
        finally:
            await js.close()
    assert connections(js) == [False, True]
    assert [path for path, _ in received(js, "camera:ready")] == [f"cam{n}" for n in range(5)]


async def test_events_reach_every_replica_through_a_redis_pause_and_restart(
        tmp_path: Path, postgres_url: str) -> None:
    port, data = free_port(), tmp_path / "redis"
    data.mkdir()
    env = {
        "NESTMTX_DATABASE_URL": await create_database(postgres_url, f"rr{uuid.uuid4().hex}"),
        "NESTMTX_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "NESTMTX_APP_KEY": Fernet.generate_key().decode(),
        "NESTMTX_HOOK_SECRET": secrets.token_urlsafe(32),
    }
    total = 80
    with contextlib.ExitStack() as stack:
        stack.enter_context(redis_server(port, data))
        a = start_sidecar(tmp_path, env)
        stack.callback(a.stop)
        b = start_sidecar(tmp_path, env)
        stack.callback(b.stop)
        js = await JsClients.start(await a.login(), a.url)
        redis = aioredis.from_url(env["NESTMTX_REDIS_URL"])
        posted = 0

        async def hooks_keep_arriving_on_b() -> None:
            nonlocal posted
            for n in range(total):
                await post_hook(b, "ready", f"cam{n}")
                posted += 1
                await asyncio.sleep(0.02)  # a steady trickle, as MediaMTX sends them

        poster = asyncio.create_task(hooks_keep_arriving_on_b())
        try:
            await wait_until(lambda: posted >= 10, 30)
            await redis.execute_command("CLIENT", "PAUSE", 1500, "ALL")
            await wait_until(lambda: posted >= 40, 30)
            with contextlib.suppress(Exception):  # the server goes away mid-command
                await redis.shutdown(nosave=True)
            await asyncio.sleep(1.0)  # Redis stays down this long while hooks go on
            stack.enter_context(redis_server(port, data))
            await asyncio.wait_for(poster, 60)
            await js.wait_for(lambda ln: ln.get("name") == "camera:ready"
                              and ln["payload"]["details"]["path"] == f"cam{total - 1}",
                              seconds=30)
        finally:
            poster.cancel()
            await redis.aclose()
            await js.close()
    paths = [p["details"]["path"] for p in js.events(a.url, "camera:ready")]
    assert paths == [f"cam{n}" for n in range(total)]  # every one, in order, once

