"""Connection state recovery with the real socket.io-client, through a proxy that cuts it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import socketio
import websockets
from socketio import packet as sio_packet

from nestmtx_sidecar.events import Event
from nestmtx_sidecar.socketio import recovery
from tests.conftest import RunningSidecar
from tests.process_support import metric
from tests.services import SidecarProcess, require, require_binary, wait_until
from tests.tcp_proxy import LoopbackProxy, proxy_to
from tests.test_fanout import fanout_server  # noqa: F401  (fixture: fast and stock paths)
from tests.test_multinode import JS, JsClients, post_hook

pytestmark = pytest.mark.node


async def recovering_client(token: str, url: str, *topics: str) -> JsClients:
    """tests/js/recovering-client.js: one socket.io-client that opts in to recovery."""
    node = require_binary("node", "apt-get install nodejs npm")
    require((JS / "node_modules" / "socket.io-client").is_dir(), "socket.io-client",
            "npm ci --prefix tests/js")
    proc = await asyncio.create_subprocess_exec(
        node, str(JS / "recovering-client.js"), token, url, *topics,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    return JsClients(proc)


def connections(js: JsClients) -> list[bool]:
    """`socket.recovered` of each connection so far."""
    return [ln["recovered"] for ln in js.lines if ln["type"] == "connected"]


def received(js: JsClients, name: str) -> list[tuple[str, str]]:
    """(camera path, offset) of every `name` event, in arrival order."""
    return [(ln["payload"]["details"]["path"], *ln["rest"]) for ln in js.lines
            if ln["type"] == "event" and ln["name"] == name]


async def got(js: JsClients, path: str, name: str = "nestmtx:*") -> None:
    await js.wait_for(lambda ln: ln["type"] == "event" and ln["name"] == name
                      and ln["payload"]["details"]["path"] == path)


async def reconnected(js: JsClients, count: int) -> bool:
    """Whether the `count`th connection (1-based) recovered."""
    await js.wait_for(lambda ln: len(connections(js)) >= count, seconds=20)
    return connections(js)[count - 1]


async def drop(js: JsClients, proxy: LoopbackProxy,
               server: RunningSidecar | SidecarProcess) -> None:
    """Cut the client's connection; return when both ends know it."""
    drops = sum(ln["type"] == "disconnected" for ln in js.lines)
    proxy.cut()
    await js.wait_for(lambda ln: sum(x["type"] == "disconnected" for x in js.lines) > drops)

    async def gone() -> bool:  # another process's state, or one with no event to await
        if isinstance(server, RunningSidecar):
            return server.sidecar.socketio_door.connected == 0
        return await metric(server, "nestmtx_connected_sockets") == 0

    await wait_until(gone, 10)


@pytest.fixture
async def proxy(server: RunningSidecar) -> AsyncIterator[LoopbackProxy]:
    async with proxy_to(server.settings.port) as running:
        yield running


@pytest.fixture
async def js(proxy: LoopbackProxy, token: str) -> AsyncIterator[JsClients]:
    client = await recovering_client(token, proxy.url)
    assert await reconnected(client, 1) is False  # a first connection is new
    yield client
    await client.close()


async def test_a_dropped_client_gets_every_missed_event_once_in_order(
        server: RunningSidecar, proxy: LoopbackProxy, js: JsClients) -> None:
    await post_hook(server, "ready", "cam0")
    await got(js, "cam0")
    await drop(js, proxy, server)
    for n in (1, 2, 3):  # while it is away
        await post_hook(server, "ready", f"cam{n}")
    proxy.resume()
    assert await reconnected(js, 2) is True
    await post_hook(server, "ready", "cam4")  # live again: no gap, no duplicate
    await got(js, "cam4")

    paths = [f"cam{n}" for n in range(5)]
    for topic in Event("camera", "ready", None).topics:
        events = received(js, topic)
        assert [path for path, _ in events] == paths, topic
        offsets = [tuple(map(int, offset.split("-"))) for _, offset in events]
        assert offsets == sorted(set(offsets)), offsets  # one offset per event, increasing


async def test_events_published_while_it_reconnects_arrive_once_in_order(
        server: RunningSidecar, proxy: LoopbackProxy, js: JsClients) -> None:
    # Replay and live delivery race here: events keep coming while the client reconnects.
    await drop(js, proxy, server)
    count = 0

    async def keep_publishing() -> None:
        nonlocal count
        while True:
            await server.sidecar.bus.publish(Event("camera", "ready", None,
                                                   {"path": f"cam{count}"}))
            count += 1
            await asyncio.sleep(0.002)  # pacing the publisher, not waiting for anything

    publisher = asyncio.create_task(keep_publishing())
    try:
        await wait_until(lambda: count >= 20)
        proxy.resume()
        assert await reconnected(js, 2) is True
        resumed_at = count
        await wait_until(lambda: count >= resumed_at + 20)  # and some more, live
    finally:
        publisher.cancel()
    await got(js, f"cam{count - 1}")
    assert [path for path, _ in received(js, "camera:ready")] == [
        f"cam{n}" for n in range(count)]


async def test_a_recovered_client_is_not_sent_the_log_replay_twice(
        server: RunningSidecar, proxy: LoopbackProxy, token: str) -> None:
    logger = logging.getLogger("nestmtx_sidecar.testing")
    logger.warning("before the first connection")
    js = await recovering_client(token, proxy.url)
    try:
        await logged(js, "before the first connection")  # the replay of the last 100 lines
        await drop(js, proxy, server)
        proxy.resume()
        assert await reconnected(js, 2) is True
        logger.warning("after the recovery")
        await logged(js, "after the recovery")
    finally:
        await js.close()
    messages = [ln["payload"]["msg"] for ln in js.lines if ln["type"] == "log"]
    assert messages.count("before the first connection") == 1


async def logged(js: JsClients, message: str) -> None:
    await js.wait_for(lambda ln: ln["type"] == "log" and ln["payload"]["msg"] == message)


@pytest.mark.parametrize("bound", ["events kept", "session kept"])
async def test_a_client_back_after_the_window_starts_afresh(
        server: RunningSidecar, proxy: LoopbackProxy, js: JsClients, bound: str) -> None:
    # Each 120 s bound in turn, shortened: the bound is the same code either way.
    if bound == "events kept":
        server.sidecar.event_log.window.seconds = 1.0
    else:
        server.sidecar.sessions.seconds = 1.0
    await post_hook(server, "ready", "cam0")
    await got(js, "cam0")
    await drop(js, proxy, server)
    await post_hook(server, "ready", "cam1")
    await asyncio.sleep(1.5)  # the window passing is what is tested: no event marks it
    proxy.resume()
    assert await reconnected(js, 2) is False  # told: it knows it may have missed events
    await post_hook(server, "ready", "cam2")
    await got(js, "cam2")
    assert [path for path, *_ in received(js, "camera:ready")] == ["cam0", "cam2"]


async def test_more_missed_than_a_socket_may_have_waiting_starts_afresh(
        server: RunningSidecar, proxy: LoopbackProxy, js: JsClients,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The bound is its queue (1000 frames); shortened here to 6 frames, two events.
    monkeypatch.setattr(recovery, "MAX_REPLAY", 6)
    await drop(js, proxy, server)
    for n in range(3):  # nine frames: three events under their three names
        await post_hook(server, "ready", f"cam{n}")
    proxy.resume()
    assert await reconnected(js, 2) is False
    await post_hook(server, "ready", "live")
    await got(js, "live")
    assert [path for path, *_ in received(js, "camera:ready")] == ["live"]


async def test_topic_subscriptions_come_back_with_the_session(
        server: RunningSidecar, proxy: LoopbackProxy, token: str) -> None:
    js = await recovering_client(token, proxy.url, "camera:ready")
    try:
        await js.wait_for(lambda ln: ln["type"] == "subscribed")
        await drop(js, proxy, server)
        await post_hook(server, "ready", "missed")
        await post_hook(server, "notReady", "other")  # not a topic it chose
        proxy.resume()
        assert await reconnected(js, 2) is True
        await post_hook(server, "ready", "live")
        await got(js, "live", "camera:ready")
    finally:
        await js.close()
    names = {ln["name"] for ln in js.lines if ln["type"] == "event"}
    assert names == {"camera:ready"}
    assert [path for path, *_ in received(js, "camera:ready")] == ["missed", "live"]


# -- The wire, byte for byte ---------------------------------------------------------------


async def raw_connect(server: RunningSidecar, auth: dict[str, Any], query: str = ""
                      ) -> tuple[websockets.ClientConnection, str]:
    """A websocket speaking engine.io and Socket.IO by hand; the CONNECT reply's text."""
    sock = await websockets.connect(
        f"ws://127.0.0.1:{server.settings.port}/socket.io/?EIO=4&transport=websocket{query}",
        max_size=None, compression=None)
    await sock.recv()  # engine.io OPEN
    await sock.send("40" + json.dumps(auth))
    return sock, str(await asyncio.wait_for(sock.recv(), 10))


async def next_event(sock: websockets.ClientConnection, name: str) -> str:
    """The next frame carrying event `name` (log lines replayed on connect are skipped)."""
    while True:
        frame = str(await asyncio.wait_for(sock.recv(), 10))
        if frame.startswith("42") and json.loads(frame[2:])[0] == name:
            return frame


async def test_sockets_without_opt_in_get_todays_frames_byte_for_byte(
        fanout_server: RunningSidecar) -> None:  # noqa: F811
    token = await fanout_server.login()
    plain, plain_connect = await raw_connect(fanout_server, {"token": token})
    opted, opted_connect = await raw_connect(fanout_server, {"token": token, "recovery": True})
    by_query, query_connect = await raw_connect(fanout_server, {"token": token}, "&recovery=1")
    assert json.loads(plain_connect[2:]).keys() == {"sid"}
    for reply in (opted_connect, query_connect):
        assert reply.startswith("40")
        assert json.loads(reply[2:]).keys() == {"sid", "pid"}  # the CONNECT reply, patched
    event = Event("camera", "ready", 7, {"path": "cam7"})
    await fanout_server.sidecar.bus.publish(event)
    today = "4" + sio_packet.Packet(sio_packet.EVENT, data=["camera:ready", event.payload()]
                                    ).encode()
    assert await next_event(plain, "camera:ready") == today
    for sock in (opted, by_query):
        tagged = json.loads((await next_event(sock, "camera:ready"))[2:])
        assert tagged[:2] == ["camera:ready", event.payload()]
        assert len(tagged) == 3 and isinstance(tagged[2], str)  # the offset, last
    for sock in (plain, opted, by_query):
        await sock.close()


async def test_a_revoked_token_recovers_nothing(server: RunningSidecar, token: str) -> None:
    sock, reply = await raw_connect(server, {"token": token, "recovery": True})
    pid = json.loads(reply[2:])["pid"]
    await post_hook(server, "ready", "seen")
    offset = json.loads((await next_event(sock, "camera:ready"))[2:])[-1]
    sock.transport.abort()
    await wait_until(lambda: server.sidecar.socketio_door.connected == 0)
    await post_hook(server, "ready", "missed")
    async with httpx.AsyncClient(base_url=server.url) as http:
        reply_ = await http.delete("/api/auth", headers={"Authorization": f"Bearer {token}"})
        assert reply_.status_code == 200
    resume = {"recovery": True, "pid": pid, "offset": offset}
    refused, refusal = await raw_connect(server, {"token": token, **resume})
    assert refusal.startswith("44") and "revoked" in refusal
    await refused.close()
    # The session went with the refusal: not even a valid token of the same user gets it.
    fresh, connect = await raw_connect(server, {"token": await server.login(), **resume})
    assert json.loads(connect[2:])["pid"] != pid
    await post_hook(server, "ready", "after")
    frame = json.loads((await next_event(fresh, "camera:ready"))[2:])
    assert frame[1]["details"]["path"] == "after"
    await fresh.close()


@pytest.mark.parametrize("offset", ["", "12", "x-1", "1-2-3", 42, None, "9" * 60 + "-0"])
async def test_a_malformed_offset_connects_as_new(server: RunningSidecar, token: str,
                                                  offset: Any) -> None:
    sock, reply = await raw_connect(server, {"token": token, "recovery": True})
    pid = json.loads(reply[2:])["pid"]
    sock.transport.abort()
    await wait_until(lambda: server.sidecar.socketio_door.connected == 0)
    again, connect = await raw_connect(
        server, {"token": token, "recovery": True, "pid": pid, "offset": offset})
    assert connect.startswith("40") and json.loads(connect[2:])["pid"] != pid
    await again.close()


# -- python-socketio as a recovering client, as docs/api.md shows it ------------------------


class ResumingClient(socketio.AsyncClient):  # type: ignore[misc]
    """docs/api.md's python-socketio client: keeps the pid and the last offset it saw."""

    def __init__(self, token: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pid: str | None = None
        self.offset: str | None = None
        self.recovered = False
        self._token = token

    def auth(self) -> dict[str, Any]:
        """Called at every (re)connection: the token, and the session to resume if any."""
        resume = {"pid": self.pid, "offset": self.offset} if self.pid and self.offset else {}
        return {"token": self._token, "recovery": True, **resume}

    async def _handle_connect(self, namespace: str, data: Any) -> None:
        pid = (data or {}).get("pid")
        self.recovered = pid is not None and pid == self.pid
        self.pid = pid
        await super()._handle_connect(namespace, data)


async def test_a_python_socketio_client_recovers_as_documented(
        server: RunningSidecar, proxy: LoopbackProxy, token: str) -> None:
    client = ResumingClient(token, reconnection_delay=0.1, reconnection_delay_max=0.2)
    paths: list[str] = []
    connects: asyncio.Queue[bool] = asyncio.Queue()
    arrived: asyncio.Queue[str] = asyncio.Queue()

    @client.on("camera:ready")
    async def on_ready(event: dict[str, Any], offset: str) -> None:
        client.offset = offset
        paths.append(event["details"]["path"])
        arrived.put_nowait(event["details"]["path"])

    client.on("connect", lambda: connects.put_nowait(client.recovered))
    await client.connect(proxy.url, auth=client.auth, transports=["websocket"])
    try:
        assert await asyncio.wait_for(connects.get(), 10) is False
        await post_hook(server, "ready", "cam0")
        assert await asyncio.wait_for(arrived.get(), 10) == "cam0"
        proxy.cut()
        await wait_until(lambda: server.sidecar.socketio_door.connected == 0)
        await post_hook(server, "ready", "cam1")
        proxy.resume()
        assert await asyncio.wait_for(connects.get(), 20) is True
        await post_hook(server, "ready", "cam2")
        while await asyncio.wait_for(arrived.get(), 10) != "cam2":
            pass
    finally:
        await client.disconnect()
    assert paths == ["cam0", "cam1", "cam2"]
