"""Fan-out: the fast path and the stock fallback deliver every event once, in order."""

from __future__ import annotations

import asyncio
import json
import tomllib
from collections.abc import AsyncIterator
from importlib.metadata import version
from pathlib import Path

import engineio.payload
import pytest
import socketio
import websockets
from packaging.requirements import Requirement

from nestmtx_sidecar.events import Event
from nestmtx_sidecar.socketio import fanout
from nestmtx_sidecar.socketio.fanout import FastManager, text_frame
from tests.conftest import RunningSidecar, make_settings, serve_in_loop
from tests.test_metrics import scrape, value


class Subscriber:
    """A python-socketio client recording every event it receives, in order."""

    def __init__(self, topics: tuple[str, ...] = ("camera:ready", "camera:*", "nestmtx:*")
                 ) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.received: list[tuple[str, object]] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        for topic in topics:
            self.client.on(topic, self._recorder(topic))

    def _recorder(self, topic: str):  # type: ignore[no-untyped-def]
        async def record(data: object) -> None:
            self.received.append((topic, data))
            for count, waiter in self._waiters:
                if len(self.received) >= count and not waiter.done():
                    waiter.set_result(None)
        return record

    async def wait_for(self, count: int, seconds: float = 20) -> None:
        if len(self.received) >= count:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((count, waiter))
        await asyncio.wait_for(waiter, seconds)


async def publish(server: RunningSidecar, count: int, size: int = 0) -> list[Event]:
    events = [Event("camera", "ready", n, {"path": f"cam{n}", "pad": "x" * size})
              for n in range(count)]
    for event in events:
        await server.sidecar.bus.publish(event)
    return events


def manager(server: RunningSidecar) -> FastManager:
    result = server.sidecar.socketio_door.sio.manager
    assert isinstance(result, FastManager)
    return result


@pytest.fixture(params=["fast", "stock"])
async def fanout_server(request: pytest.FixtureRequest, tmp_path: Path
                        ) -> AsyncIterator[RunningSidecar]:
    """The fast path as the pinned releases get it (never forced on), and the stock path."""
    async with serve_in_loop(make_settings(tmp_path)) as running:
        if request.param == "fast":
            assert manager(running).fast_path, "the fast path is off on the pinned releases"
        else:
            manager(running).fast_path = False
        yield running


def test_the_fast_path_is_on_with_the_pinned_releases_and_off_with_any_other(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pins = {Requirement(line).name: Requirement(line).specifier for line in
            tomllib.loads(Path("pyproject.toml").read_text())["project"]["dependencies"]}
    for distribution, release in fanout.TESTED_RELEASES.items():
        assert version(distribution).startswith(release)
        major, minor = (int(part) for part in release.rstrip(".").split("."))
        assert f"{major}.{minor}.0" in pins[distribution]
        assert f"{major}.{minor + 1}.0" not in pins[distribution]  # pinned to that release
    assert fanout.fast_path_supported()
    monkeypatch.setattr(fanout, "version", lambda distribution: "4.99.0")
    assert not fanout.fast_path_supported()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_every_subscriber_gets_every_event_once_in_order(
        fanout_server: RunningSidecar, transport: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # python-engineio's client refuses polling payloads of more than 16 packets (a DoS
    # guard); the server batches whatever is queued, so lift the client's limit.
    monkeypatch.setattr(engineio.payload.Payload, "max_decode_packets", 100_000)
    token = await fanout_server.login()
    subscribers = [Subscriber() for _ in range(5)]
    for sub in subscribers:
        await sub.client.connect(fanout_server.url, auth={"token": token},
                                 transports=[transport])
    events = await publish(fanout_server, 200)
    expected = [(topic, e.payload()) for e in events for topic in e.topics]
    for sub in subscribers:
        await sub.wait_for(len(expected))
        assert sub.received == expected
        # python-socketio's client lingers ~30 s on a graceful polling disconnect: abort.
        await sub.client.eio.disconnect(abort=True)
    used = manager(fanout_server)
    if used.fast_path and transport == "websocket":
        assert used.direct_writes >= len(expected) * len(subscribers) * 0.5
    if not used.fast_path:
        assert used.direct_writes == 0


async def raw_subscriber(server: RunningSidecar, token: str) -> websockets.ClientConnection:
    """A websocket client speaking engine.io and Socket.IO by hand: light enough for hundreds."""
    sock = await websockets.connect(
        f"ws://127.0.0.1:{server.settings.port}/socket.io/?EIO=4&transport=websocket",
        max_size=None, compression=None)
    json.loads((await sock.recv())[1:])  # engine.io OPEN
    await sock.send("40" + json.dumps({"token": token}))
    assert (await sock.recv()).startswith("40")
    return sock


async def test_an_event_reaches_each_of_many_sockets_in_one_write(
        server: RunningSidecar) -> None:
    # 400 sockets x 3 frames: more than one burst slice used to hold, which flushed each
    # socket's three frames as three writes.
    token = await server.login()
    sockets = [await raw_subscriber(server, token) for _ in range(400)]
    writes = manager(server).transport_writes
    (event,) = await publish(server, 1)
    for sock in sockets:
        frames = [await asyncio.wait_for(sock.recv(), 10) for _ in event.topics]
        assert tuple(json.loads(f[2:])[0] for f in frames) == event.topics
    assert manager(server).transport_writes - writes == len(sockets)
    await asyncio.gather(*(sock.close() for sock in sockets))


async def subscribe(sock: websockets.ClientConnection, topic: str) -> None:
    await sock.send(f'421["subscribe",["{topic}"]]')
    while not (await asyncio.wait_for(sock.recv(), 10)).startswith("431"):
        pass  # log lines replayed on connect


async def test_concurrent_deliveries_reach_every_socket_in_the_same_order(
        server: RunningSidecar, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two deliveries that yield every few frames, to rooms that list the same sockets in
    # opposite orders: each socket must still get them in one and the same order.
    monkeypatch.setattr(fanout, "YIELD_EVERY", 2)
    token = await server.login()
    sockets = [await raw_subscriber(server, token) for _ in range(20)]
    for sock in sockets:
        await subscribe(sock, "camera:ready")
    for sock in reversed(sockets):
        await subscribe(sock, "log")
    event = Event("camera", "ready", 7, {"path": "cam7"})
    line = {"level": 30, "message": "marker", "time": 0}
    # The Socket.IO door's own bus subscriber: the bus would start it only after the logs.
    await asyncio.gather(server.sidecar.socketio_door.publish(event),
                         server.sidecar.socketio_door.send_logs([line]))
    orders = set()
    for sock in sockets:
        seen: list[str] = []
        while len(seen) < 2:
            name, data = json.loads((await asyncio.wait_for(sock.recv(), 10))[2:])
            if data.get("entity") == 7 or data.get("message") == "marker":
                seen.append(name)
        orders.add(tuple(seen))
    assert orders == {("camera:ready", "log")}
    await asyncio.gather(*(sock.close() for sock in sockets))


async def test_topic_subscription_narrows_what_a_socket_receives(server: RunningSidecar) -> None:
    token = await server.login()
    everything, chosen = Subscriber(), Subscriber()
    for sub in (everything, chosen):
        await sub.client.connect(server.url, auth={"token": token}, transports=["websocket"])
    reply = await chosen.client.call("subscribe", ["camera:ready"], timeout=5)
    assert reply == {"topics": ["camera:ready"]}
    bad = await chosen.client.call("subscribe", [42], timeout=5)
    assert bad["error"]["code"] == "invalid"
    await publish(server, 3)
    await everything.wait_for(9)
    await chosen.wait_for(3)
    assert [topic for topic, _ in chosen.received] == ["camera:ready"] * 3
    assert await chosen.client.call("unsubscribe", "camera:ready", timeout=5) == {"topics": []}
    for sub in (everything, chosen):
        await sub.client.disconnect()


async def test_a_stalled_client_is_cut_loose_without_delaying_the_others(
        server: RunningSidecar) -> None:
    token = await server.login()
    healthy = Subscriber()
    await healthy.client.connect(server.url, auth={"token": token}, transports=["websocket"])
    stalled = await raw_subscriber(server, token)
    stalled.transport.pause_reading()  # completed the handshake; now it stops reading
    cut_before = value(await scrape(server.url), "nestmtx_sockets_cut_total")
    # 3000 frames of 5 KiB, in rounds the healthy client keeps up with, while the stalled
    # one falls behind past the queue and write-buffer bounds.
    rounds, per_round = 20, 50
    for round_ in range(1, rounds + 1):
        await publish(server, per_round, size=5_000)
        await healthy.wait_for(round_ * per_round * 3, seconds=30)
    assert value(await scrape(server.url), "nestmtx_sockets_cut_total") == cut_before + 1
    assert len(healthy.received) == rounds * per_round * 3
    assert healthy.client.connected
    await healthy.client.disconnect()
    stalled.transport.abort()


def test_text_frame_lengths_follow_rfc_6455() -> None:
    assert text_frame(b"hi") == b"\x81\x02hi"
    assert text_frame(b"a" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert text_frame(b"a" * 70000)[:10] == b"\x81\x7f" + (70000).to_bytes(8, "big")
