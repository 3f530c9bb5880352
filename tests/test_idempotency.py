"""A hook call is delivered once, however often the script retries or spools it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Events, RunningSidecar, make_settings, serve_in_loop
from tests.mediamtx import MediaMTX, busybox_path, curl_path, hook_settings


async def post(server: RunningSidecar, key: str, reader: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url) as client:
        return await client.post("/hooks/read", json={"MTX_PATH": "p", "MTX_READER_ID": reader},
                                 headers={"Authorization": f"Bearer {server.hook_secret}",
                                          "Idempotency-Key": key})


async def test_a_repeated_key_is_accepted_but_delivered_once(server: RunningSidecar) -> None:
    events = Events.subscribed(server.sidecar.bus).seen
    first = await post(server, "1700.000001.42.read", "a")
    again = await post(server, "1700.000001.42.read", "a")
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == {"accepted": True, "duplicate": True}
    await post(server, "1700.000002.42.read", "b")
    await server.sidecar.bus.drain()
    assert [e.details["readerId"] for e in events] == ["a", "b"]


@pytest.mark.parametrize("key", ["", "has space", "x" * 129, "semi;colon"])
async def test_a_malformed_key_is_refused(server: RunningSidecar, key: str) -> None:
    reply = await post(server, key, "a")
    assert reply.status_code == 400
    assert "Idempotency-Key" in reply.json()["error"]["message"]


async def test_a_spooled_copy_of_a_delivered_call_is_not_delivered_again(
        server: RunningSidecar, tmp_path: Path) -> None:
    events = Events.subscribed(server.sidecar.bus).seen
    assert (await post(server, "1700.000003.7.read", "a")).status_code == 202
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "1700.000003.7.read.json").write_text('{"MTX_PATH": "p", "MTX_READER_ID": "a"}')
    (spool / "1700.000004.7.read.json").write_text('{"MTX_PATH": "p", "MTX_READER_ID": "b"}')
    await server.sidecar.receiver.replay_spool(spool)
    await server.sidecar.bus.drain()
    assert [e.details["readerId"] for e in events] == ["a", "b"]
    assert list(spool.iterdir()) == []


async def test_replicas_sharing_redis_deliver_a_key_once(tmp_path: Path,
                                                         redis_url: str) -> None:
    settings = [make_settings(tmp_path / name, redis_url=redis_url) for name in ("a", "b")]
    async with serve_in_loop(settings[0]) as a, serve_in_loop(settings[1]) as b:
        events_a = Events.subscribed(a.sidecar.bus).seen
        events_b = Events.subscribed(b.sidecar.bus).seen
        assert (await post(a, "1700.000005.9.read", "x")).json()["accepted"] is True
        assert (await post(b, "1700.000005.9.read", "x")).json()["duplicate"] is True
        await a.sidecar.bus.drain()
        await b.sidecar.bus.drain()
        assert len(events_a) + len(events_b) == 1


@contextlib.asynccontextmanager
async def reply_swallowing_proxy(target_port: int) -> AsyncIterator[tuple[int, list[int]]]:
    """Forwards to the sidecar, but keeps the first connection's answer from the client."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        swallow = len(connections) == 1
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1",
                                                                         target_port)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter | None) -> None:
            while chunk := await source.read(65536):
                if sink is not None:
                    sink.write(chunk)
                    await sink.drain()

        await asyncio.gather(pump(reader, upstream_writer),
                             pump(upstream_reader, None if swallow else writer),
                             return_exceptions=True)
        for stream in (writer, upstream_writer):
            stream.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], connections
    finally:
        server.close()


@pytest.mark.parametrize("backend", ["busybox", "curl"])
async def test_a_retry_after_a_lost_answer_is_delivered_once(
        server: RunningSidecar, tmp_path: Path, backend: str) -> None:
    events = Events.subscribed(server.sidecar.bus).seen
    tools = (busybox_path if backend == "busybox" else curl_path)(tmp_path / "bin")
    async with reply_swallowing_proxy(server.settings.port) as (port, connections):
        mtx = MediaMTX(hook_settings(), {"PATH": tools, "NESTMTX_URL": f"http://127.0.0.1:{port}",
                                         "NESTMTX_HOOK_SECRET": server.hook_secret})
        result = await mtx.run("read", "porch", MTX_READER_ID="r1")
    assert result.returncode == 0, result.stderr
    assert len(connections) >= 2  # the first answer never reached the script: it retried
    assert [(e.event, e.details["readerId"]) for e in events] == [("read", "r1")]
