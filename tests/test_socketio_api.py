"""The Socket.IO door with python-socketio's AsyncClient: connect auth, the `request` rules,
replies on `<requestId>` and the ack, `failure`, log-out, revocation and expiry of live sockets.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import socketio

from nestmtx_sidecar.events import Event
from nestmtx_sidecar.security import token_digest
from nestmtx_sidecar.socketio import door as socketio_door
from nestmtx_sidecar.storage.store import access_tokens_table
from tests.conftest import ADMIN_PASSWORD, RunningSidecar
from tests.doors import REPLY_TIMEOUT, SocketDoor

SERVER_DISCONNECT = socketio.AsyncClient.reason.SERVER_DISCONNECT


class Watched:
    """An AsyncClient whose connect refusal and server-side disconnect can be awaited."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        loop = asyncio.get_running_loop()
        self.refused: asyncio.Future[Any] = loop.create_future()
        self.dropped: asyncio.Future[Any] = loop.create_future()
        self.failures: asyncio.Queue[Any] = asyncio.Queue()
        self.received: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()  # every other event
        self.sio.on("connect_error", lambda data: self.refused.done()
                    or self.refused.set_result(data))
        self.sio.on("disconnect", lambda reason=None: self.dropped.done()
                    or self.dropped.set_result(reason))
        self.sio.on("failure", self.failures.put_nowait)
        self.sio.on("*", lambda event, *data: self.received.put_nowait((event, data)))

    async def connect(self, url: str, **options: Any) -> None:
        await self.sio.connect(url, transports=["websocket"], wait_timeout=REPLY_TIMEOUT,
                               **options)

    async def refusal(self, url: str, **options: Any) -> str:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await self.connect(url, **options)
        data = await asyncio.wait_for(self.refused, REPLY_TIMEOUT)
        return data["message"]

    def since(self, marker: str) -> list[str]:
        """Names of the events received (not yet awaited) that mention `marker`, or that
        answer the held request."""
        items = [self.received.get_nowait() for _ in range(self.received.qsize())]
        return [name for name, data in items
                if name == HELD_REQUEST["requestId"] or marker in json.dumps(data)]

    async def receive(self, event: str, marker: str) -> None:
        """Wait for `event` whose data mentions `marker`."""
        while True:
            name, data = await asyncio.wait_for(self.received.get(), REPLY_TIMEOUT)
            if name == event and marker in json.dumps(data):
                return


@pytest.fixture
async def socket(server: RunningSidecar, token: str) -> AsyncIterator[SocketDoor]:
    door = await SocketDoor(server.url, token).connect()
    yield door
    await door.close()


@pytest.fixture
async def held(server: RunningSidecar, monkeypatch: pytest.MonkeyPatch
               ) -> AsyncIterator[tuple[asyncio.Event, asyncio.Event]]:
    """`version list` blocks until released: a request held in flight. (started, release)"""
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_list(caller: Any, payload: Any) -> dict[str, Any]:
        started.set()
        await release.wait()
        return {"name": "held"}

    monkeypatch.setattr(server.sidecar.dispatcher.modules["version"], "list", slow_list)
    yield started, release
    release.set()


HELD_REQUEST = {"command": "list", "module": "version", "requestId": "held"}


async def send_event_and_log(server: RunningSidecar, marker: str) -> None:
    """One camera event and one log line, both mentioning `marker`."""
    await server.sidecar.bus.publish(Event("camera", "ready", 1, {"path": marker}))
    logging.getLogger("nestmtx_sidecar.tests").warning("log line %s", marker)


async def revoke(server: RunningSidecar, token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.delete("/api/auth", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


async def set_expiry(server: RunningSidecar, token: str, seconds: float) -> None:
    async with server.sidecar.store.begin() as conn:
        await conn.execute(access_tokens_table.update()
                           .where(access_tokens_table.c.digest == token_digest(token))
                           .values(expires_at=dt.datetime.now(dt.UTC)
                                   + dt.timedelta(seconds=seconds)))


# --- connecting ----------------------------------------------------------------------------

@pytest.mark.parametrize("placement", ["auth", "header", "query"])
async def test_each_token_placement_connects(server: RunningSidecar, token: str,
                                             placement: str) -> None:
    client = Watched()
    url, options = server.url, {}
    if placement == "auth":
        options["auth"] = {"token": token}
    elif placement == "header":
        options["headers"] = {"Authorization": f"Bearer {token}"}
    else:
        url = f"{server.url}?token={token}"
    await client.connect(url, **options)
    assert client.sio.connected
    await client.sio.disconnect()


async def test_refused_connections_say_why(server: RunningSidecar, token: str) -> None:
    assert await Watched().refusal(server.url) == "A bearer token is required"
    assert await Watched().refusal(server.url, auth={"token": "forged"}) == \
        "Invalid or revoked token"
    assert await Watched().refusal(server.url, auth={"token": 42}) == \
        "A bearer token is required"
    await set_expiry(server, token, -1)
    assert await Watched().refusal(server.url, auth={"token": token}) == "Token expired"
    fresh = await server.login()
    async with httpx.AsyncClient(base_url=server.url) as http:
        await http.delete("/api/auth", headers={"Authorization": f"Bearer {fresh}"})
    assert await Watched().refusal(server.url, auth={"token": fresh}) == \
        "Invalid or revoked token"
    assert server.sidecar.socketio_door.connected == 0


async def test_reconnecting_with_a_new_token(server: RunningSidecar, token: str) -> None:
    client = Watched()
    await client.connect(server.url, auth={"token": token})
    await client.sio.disconnect()
    async with httpx.AsyncClient(base_url=server.url) as http:
        await http.delete("/api/auth", headers={"Authorization": f"Bearer {token}"})
    new_token = await server.login()
    await client.sio.connect(server.url, auth={"token": new_token}, transports=["websocket"])
    door = SocketDoor(server.url, new_token)
    door.client = client.sio
    assert (await door.call("users", "list")).ok()["total"] == 1
    await client.sio.disconnect()


# --- the request contract ------------------------------------------------------------------

async def test_request_as_object_or_json_string(socket: SocketDoor) -> None:
    request = {"command": "list", "module": "version", "requestId": "as-string"}
    reply = await socket.request(json.dumps(request), reply_event="as-string")
    assert reply["name"] == "nestmtx-sidecar"
    assert (await socket.request({**request, "requestId": "as-object"}))["name"] == \
        "nestmtx-sidecar"


@pytest.mark.parametrize("request_body,field", [
    ({"command": "read", "module": "users"}, "entity"),
    ({"command": "update", "module": "users", "payload": {}}, "entity"),
    ({"command": "delete", "module": "users"}, "entity"),
    ({"command": "list", "module": "users", "entity": 1}, "entity"),
    ({"command": "create", "module": "users", "entity": 1, "payload": {}}, "entity"),
    ({"command": "create", "module": "users"}, "payload"),
    ({"command": "update", "module": "users", "entity": 1}, "payload"),
    ({"command": "read", "module": "users", "entity": 1, "payload": {}}, "payload"),
    ({"command": "delete", "module": "users", "entity": 1, "payload": {}}, "payload"),
    ({"command": "list", "module": "users", "payload": [1]}, "payload"),
    ({"command": "list", "module": "users", "entity": {"id": 1}}, "entity"),
    ({"command": "purge", "module": "users"}, "command"),
    ({"command": "list", "module": ""}, "module"),
    ({"command": "list", "module": "users", "extra": 1}, "extra"),
])
async def test_entity_and_payload_presence_rules(socket: SocketDoor, request_body: dict,
                                                 field: str) -> None:
    reply = await socket.request({**request_body, "requestId": "rules"})
    assert reply["error"]["code"] == "invalid"
    assert field in [detail["field"] for detail in reply["error"]["details"]]


async def test_list_payload_is_optional_and_null_means_absent(socket: SocketDoor) -> None:
    reply = await socket.request({"command": "list", "module": "users", "requestId": "n",
                                  "payload": None})
    assert (reply["page"], reply["itemsPerPage"], reply["total"]) == (1, 10, 1)


@pytest.mark.parametrize("raw", [
    "not json", "[1, 2]", 42, None, ["list"], {"command": "list", "module": "users"},
    {"command": "list", "module": "users", "requestId": ""},
    {"command": "list", "module": "users", "requestId": 7},
    {"command": "list", "module": "users", "requestId": "connect"},
    {"command": "list", "module": "users", "requestId": "x" * 257},
])
async def test_unusable_requests_go_to_failure(server: RunningSidecar, token: str,
                                               raw: Any) -> None:
    client = Watched()
    await client.connect(server.url, auth={"token": token})
    acked = asyncio.get_running_loop().create_future()
    await client.sio.emit("request", raw, callback=acked.set_result)
    failure = await asyncio.wait_for(client.failures.get(), REPLY_TIMEOUT)
    assert failure["error"]["code"] in ("bad_request", "invalid")
    assert await asyncio.wait_for(acked, REPLY_TIMEOUT) == failure
    # The connection survives and still answers.
    door = SocketDoor(server.url, token)
    door.client = client.sio
    (await door.call("version", "list")).ok()
    await client.sio.disconnect()


async def test_requests_with_no_or_extra_arguments_are_answered(
        server: RunningSidecar, token: str) -> None:
    client = Watched()
    await client.connect(server.url, auth={"token": token})
    await client.sio.emit("request")
    failure = await asyncio.wait_for(client.failures.get(), REPLY_TIMEOUT)
    assert failure["error"]["message"] == "Request must be an object"
    reply = await client.sio.call("request", ({"command": "list", "module": "version",
                                               "requestId": "extra"}, "ignored"),
                                  timeout=REPLY_TIMEOUT)
    assert reply["name"] == "nestmtx-sidecar"
    await client.sio.disconnect()


async def test_requests_without_ack_are_answered_on_the_event(socket: SocketDoor) -> None:
    got = asyncio.get_running_loop().create_future()
    socket.client.on("no-ack", got.set_result)
    await socket.client.emit("request", {"command": "list", "module": "version",
                                         "requestId": "no-ack"})
    assert (await asyncio.wait_for(got, REPLY_TIMEOUT))["name"] == "nestmtx-sidecar"


async def test_login_over_socketio(socket: SocketDoor) -> None:
    reply = (await socket.call("auth", "create", payload={
        "username": "admin", "password": ADMIN_PASSWORD})).ok()
    assert set(reply) == {"bearer", "expiration", "user"}
    (await socket.call("auth", "create", payload={"username": "admin", "password": "nope"})
     ).error("unauthorized")
    (await socket.call("auth", "delete", entity="someone-else")).error("invalid")
    (await socket.call("auth", "list")).error("bad_request")


# --- log-out, revocation and expiry of live sockets ----------------------------------------

async def test_auth_delete_current_answers_then_drops_every_socket_of_that_token(
        server: RunningSidecar, token: str) -> None:
    other_token = await server.login()
    same, other, caller = Watched(), Watched(), SocketDoor(server.url, token)
    await same.connect(server.url, auth={"token": token})
    await other.connect(server.url, auth={"token": other_token})
    await caller.connect()
    dropped = asyncio.get_running_loop().create_future()
    caller.client.on("disconnect", lambda reason=None: dropped.set_result(reason))

    reply = await caller.call("auth", "delete", entity="current")  # checks event and ack
    assert reply.ok() == {"revoked": True}
    assert await asyncio.wait_for(dropped, REPLY_TIMEOUT) == SERVER_DISCONNECT
    assert await asyncio.wait_for(same.dropped, REPLY_TIMEOUT) == SERVER_DISCONNECT
    assert other.sio.connected
    assert await Watched().refusal(server.url, auth={"token": token}) == \
        "Invalid or revoked token"
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/api/users", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    await other.sio.disconnect()


async def test_http_logout_drops_live_sockets(server: RunningSidecar, token: str) -> None:
    client = Watched()
    await client.connect(server.url, headers={"Authorization": f"Bearer {token}"})
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.delete("/api/auth", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert await asyncio.wait_for(client.dropped, REPLY_TIMEOUT) == SERVER_DISCONNECT


async def test_deleting_a_user_drops_their_sockets(server: RunningSidecar, socket: SocketDoor
                                                   ) -> None:
    viewer = (await socket.call("users", "create", payload={
        "username": "viewer", "password": "long enough pw"})).ok()
    client = Watched()
    await client.connect(server.url, auth={"token": await server.login("viewer",
                                                                       "long enough pw")})
    (await socket.call("users", "delete", entity=viewer["id"])).ok()
    assert await asyncio.wait_for(client.dropped, REPLY_TIMEOUT) == SERVER_DISCONNECT


async def test_live_socket_is_dropped_when_its_token_expires(server: RunningSidecar,
                                                             token: str) -> None:
    await set_expiry(server, token, 1.0)
    client = Watched()
    await client.connect(server.url, auth={"token": token})
    started = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(client.dropped, REPLY_TIMEOUT) == SERVER_DISCONNECT
    assert asyncio.get_running_loop().time() - started < 3
    assert await Watched().refusal(server.url, auth={"token": token}) == "Token expired"


async def test_a_token_revoked_elsewhere_drops_its_live_sockets_at_the_next_sweep(
        server: RunningSidecar, token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socketio_door, "TOKEN_SWEEP_SECONDS", 0.2)
    # A fast second sweeper:
    sweep = asyncio.create_task(server.sidecar.socketio_door.sweep_tokens())
    try:
        client = Watched()
        await client.connect(server.url, auth={"token": token})
        # Another replica (or the CLI) deleted the token: no revocation reached this process.
        async with server.sidecar.store.begin() as conn:
            await conn.execute(access_tokens_table.delete()
                               .where(access_tokens_table.c.digest == token_digest(token)))
        assert await asyncio.wait_for(client.dropped, REPLY_TIMEOUT) == SERVER_DISCONNECT
    finally:
        sweep.cancel()


async def test_a_revoked_socket_with_a_request_in_flight_gets_nothing_and_is_dropped_in_1_s(
        server: RunningSidecar, token: str, held: tuple[asyncio.Event, asyncio.Event]) -> None:
    started, release = held
    revoked, witness = Watched(), Watched()
    await revoked.connect(server.url, auth={"token": token})
    await witness.connect(server.url, auth={"token": await server.login()})
    await revoked.sio.emit("request", HELD_REQUEST)
    await asyncio.wait_for(started.wait(), REPLY_TIMEOUT)

    loop = asyncio.get_running_loop()
    revoked_at = loop.time()
    await revoke(server, token)
    await send_event_and_log(server, "after-revocation")
    assert await asyncio.wait_for(revoked.dropped, 1.0) == SERVER_DISCONNECT
    assert loop.time() - revoked_at < 1.0
    await witness.receive("camera:ready", "after-revocation")
    await witness.receive("log", "after-revocation")
    release.set()
    assert revoked.since("after-revocation") == []  # no event, log line or reply
    assert server.sidecar.socketio_door.connected == 1
    await witness.sio.disconnect()


async def test_a_revoked_socket_leaves_every_room_at_once_and_is_refused_until_dropped(
        server: RunningSidecar, token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sio = server.sidecar.socketio_door.sio
    real_disconnect, let_go = sio.disconnect, asyncio.Event()

    async def late_disconnect(sid: str, **options: Any) -> None:
        await let_go.wait()  # holds the drop, so what happens before it can be seen
        await real_disconnect(sid, **options)

    monkeypatch.setattr(sio, "disconnect", late_disconnect)
    everything, chosen, witness = Watched(), Watched(), Watched()
    for client in (everything, chosen):
        await client.connect(server.url, auth={"token": token})
    await witness.connect(server.url, auth={"token": await server.login()})
    assert (await chosen.sio.call("subscribe", ["camera:ready", "log"], timeout=REPLY_TIMEOUT)
            )["topics"] == ["camera:ready", "log"]

    await revoke(server, token)
    await send_event_and_log(server, "while-being-dropped")
    await witness.receive("camera:ready", "while-being-dropped")
    await witness.receive("log", "while-being-dropped")
    for client in (everything, chosen):
        for event, data in (("subscribe", "camera:*"), ("unsubscribe", "log"),
                            ("request", HELD_REQUEST)):
            reply = await client.sio.call(event, data, timeout=REPLY_TIMEOUT)
            assert reply["error"]["code"] == "unauthorized", (event, reply)
        assert client.since("while-being-dropped") == []  # no event, log line or reply event
    let_go.set()
    for client in (everything, chosen):
        assert await asyncio.wait_for(client.dropped, REPLY_TIMEOUT) == SERVER_DISCONNECT
    await witness.sio.disconnect()


async def test_an_expiring_socket_with_a_request_in_flight_is_dropped_in_1_s(
        server: RunningSidecar, token: str, held: tuple[asyncio.Event, asyncio.Event]) -> None:
    started, _ = held
    loop = asyncio.get_running_loop()
    expires_at = loop.time() + 2.0
    await set_expiry(server, token, 2.0)
    client = Watched()
    await client.connect(server.url, auth={"token": token})
    await client.sio.emit("request", HELD_REQUEST)
    await asyncio.wait_for(started.wait(), REPLY_TIMEOUT)
    assert await asyncio.wait_for(client.dropped, REPLY_TIMEOUT) == SERVER_DISCONNECT
    assert loop.time() < expires_at + 1.0
    assert server.sidecar.socketio_door.connected == 0


async def test_a_token_revoked_while_its_socket_connects_leaves_no_live_socket(
        server: RunningSidecar, token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = server.sidecar.auth
    real_authenticate = auth.authenticate
    checked, go_on = asyncio.Event(), asyncio.Event()

    async def authenticate_then_wait(presented: str | None) -> Any:
        caller = await real_authenticate(presented)
        if not checked.is_set():  # the socket's check: the revocation lands after it
            checked.set()
            await go_on.wait()
        return caller

    monkeypatch.setattr(auth, "authenticate", authenticate_then_wait)
    client = Watched()
    connecting = asyncio.create_task(client.refusal(server.url, auth={"token": token}))
    await asyncio.wait_for(checked.wait(), REPLY_TIMEOUT)
    await revoke(server, token)
    go_on.set()
    assert await connecting == "Invalid or revoked token"
    assert server.sidecar.socketio_door.connected == 0


async def test_logging_out_with_a_request_in_flight_answers_the_log_out_and_drops_in_1_s(
        server: RunningSidecar, token: str, held: tuple[asyncio.Event, asyncio.Event]) -> None:
    started, release = held
    door = SocketDoor(server.url, token)
    client = Watched()
    door.client = client.sio
    await client.connect(server.url, auth={"token": token})
    await client.sio.emit("request", HELD_REQUEST)
    await asyncio.wait_for(started.wait(), REPLY_TIMEOUT)
    loop = asyncio.get_running_loop()
    logged_out_at = loop.time()
    assert (await door.call("auth", "delete", entity="current")).ok() == {"revoked": True}
    assert await asyncio.wait_for(client.dropped, 1.0) == SERVER_DISCONNECT
    assert loop.time() - logged_out_at < 1.0
    release.set()
