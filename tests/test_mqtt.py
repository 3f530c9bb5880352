"""The MQTT bridge against a real mosquitto on a loopback port, with a password."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiomqtt
import httpx
import pytest
import socketio
import sqlalchemy as sa

from nestmtx_sidecar.config import ConfigError
from nestmtx_sidecar.events import Event
from nestmtx_sidecar.mqtt import LOGIN_REFUSED, Broker, MqttBridge
from nestmtx_sidecar.storage.store import cameras_table
from tests.conftest import RunningSidecar, make_settings, serve_in_loop
from tests.services import free_port, require, start_sidecar, wait_for_port

TIMEOUT = 10.0
MQTT_USER, MQTT_PASSWORD = "sidecar", "broker p@ss:word"
INSTALL = "apt-get install mosquitto"


class Mosquitto:
    """A mosquitto broker of our own: password required, persistence on, loopback only."""

    def __init__(self, workdir: Path) -> None:
        path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin"
        binary, passwd = shutil.which("mosquitto", path=path), shutil.which("mosquitto_passwd")
        require(binary is not None and passwd is not None, "mosquitto", INSTALL)
        assert binary and passwd
        self.binary = binary
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir()
        subprocess.run([passwd, "-b", "-c", str(workdir / "passwd"), MQTT_USER, MQTT_PASSWORD],
                       check=True, capture_output=True)
        (workdir / "mosquitto.conf").write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous false\n"
            f"password_file {workdir / 'passwd'}\n"
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            f"user {getpass.getuser()}\n"  # as root, stay root: the files here are root's
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{MQTT_USER}:{quote(MQTT_PASSWORD, safe='')}@127.0.0.1:{self.port}"

    def start(self) -> None:
        with (self.workdir / "mosquitto.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.workdir / "mosquitto.conf")],
                stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, proc=self.proc)

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its sessions and retained messages, then exits."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def client(self, **options: Any) -> aiomqtt.Client:
        return aiomqtt.Client("127.0.0.1", self.port, username=MQTT_USER,
                              password=MQTT_PASSWORD, **options)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path / "mosquitto")
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


class Watcher:
    """An MQTT subscriber that records every message; tests await the ones they expect."""

    def __init__(self, broker: Mosquitto, *topics: str, **options: Any) -> None:
        self.client = broker.client(**options)
        self.topics = topics
        self.messages: list[aiomqtt.Message] = []
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        await self.client.__aenter__()
        self._reader = asyncio.create_task(self._read())
        for topic in self.topics:
            await self.client.subscribe(topic, qos=1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._reader is not None
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self.client.__aexit__(None, None, None)

    async def _read(self) -> None:
        async for message in self.client.messages:
            async with self._changed:
                self.messages.append(message)
                self._changed.notify_all()

    def on(self, topic: str) -> list[aiomqtt.Message]:
        return [m for m in self.messages if m.topic.matches(topic)]

    async def expect(self, topic: str, where: Callable[[aiomqtt.Message], bool] = lambda m: True
                     ) -> aiomqtt.Message:
        """The first message on `topic` (a filter) that satisfies `where`, waiting for it."""
        def found() -> aiomqtt.Message | None:
            return next((m for m in self.on(topic) if where(m)), None)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(found), TIMEOUT)
        message = found()
        assert message is not None
        return message

    async def ask(self, request: Any, reply_topic: str | None = None) -> Any:
        """Publish a request on nestmtx/requests; return the decoded reply."""
        body = request if isinstance(request, bytes) else json.dumps(request)
        seen = len(self.messages)
        topic = reply_topic or f"nestmtx/responses/{request['requestId']}"
        await self.client.publish("nestmtx/requests", body, qos=1)
        message = await self.expect(topic, lambda m: self.messages.index(m) >= seen)
        return decode(message)


def decode(message: aiomqtt.Message) -> Any:
    assert isinstance(message.payload, bytes)
    return json.loads(message.payload) if message.payload else None


def state_is(**expected: Any) -> Callable[[aiomqtt.Message], bool]:
    def check(message: aiomqtt.Message) -> bool:
        state = decode(message)
        return state is not None and all(state.get(k) == v for k, v in expected.items())
    return check


@pytest.fixture
async def mqtt_server(tmp_path: Path, broker: Mosquitto) -> AsyncIterator[RunningSidecar]:
    async with serve_in_loop(make_settings(tmp_path, mqtt_url=broker.url)) as running:
        assert running.sidecar.mqtt is not None
        # Connected and subscribed: a request published from now on is heard.
        await asyncio.wait_for(running.sidecar.mqtt.connected.wait(), TIMEOUT)
        yield running


async def add_camera(server: RunningSidecar, path: str, name: str = "Front door"
                     ) -> tuple[int, int]:
    """A credential and an enabled camera, through their modules as device sync and a user
    would make them."""
    sidecar = server.sidecar
    credential = await sidecar.credentials.create(None, {
        "description": "Home", "oauth_client_id": "client.apps.googleusercontent.com",
        "oauth_client_secret": "client-secret-value", "dac_project_id": "project-id"})
    uid = f"enterprises/project-id/devices/{path}"
    await sidecar.cameras.sync_devices(credential["id"], {uid: {
        "name": name, "room": "Porch", "type": "sdm.devices.types.DOORBELL",
        "protocols": ["RTSP"], "info": {}}})
    async with sidecar.store.begin() as conn:
        camera_id = (await conn.execute(sa.select(cameras_table.c.id).where(
            cameras_table.c.uid == uid))).scalar_one()
    await sidecar.cameras.update(None, camera_id, {"mtx_path": path, "is_enabled": True})
    return credential["id"], camera_id


async def fire(server: RunningSidecar, hook: str, **variables: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers={
            "Authorization": f"Bearer {server.hook_secret}"}) as http:
        reply = await http.post(f"/hooks/{hook}", json=variables)
    assert reply.status_code == 202, reply.text


async def test_hook_events_arrive_on_their_topics_with_the_socketio_payload(
        mqtt_server: RunningSidecar, broker: Mosquitto) -> None:
    _, camera_id = await add_camera(mqtt_server, "front")
    token = await mqtt_server.login()
    from_socket: asyncio.Queue[Any] = asyncio.Queue()
    sio = socketio.AsyncClient(reconnection=False)
    sio.on("nestmtx:*", from_socket.put_nowait)
    await sio.connect(mqtt_server.url, auth={"token": token}, transports=["websocket"])
    async with Watcher(broker, "nestmtx/events/#") as watcher:
        await fire(mqtt_server, "demand", MTX_PATH="front", MTX_QUERY="a=1&b=é %2F")
        await fire(mqtt_server, "read", MTX_PATH="front", MTX_READER_TYPE="rtspSession",
                   MTX_READER_ID="r-1")
        await fire(mqtt_server, "demand", MTX_PATH="nowhere")
        expected = [f"nestmtx/events/camera/{camera_id}/demand",
                    f"nestmtx/events/camera/{camera_id}/read",
                    "nestmtx/events/camera/null/demand"]
        for topic in expected:
            socket_payload = await asyncio.wait_for(from_socket.get(), TIMEOUT)
            message = await watcher.expect(topic)
            assert decode(message) == socket_payload
            assert message.qos == 1
        assert [m.topic.value for m in watcher.messages] == expected
    await sio.disconnect()
    assert decode(watcher.messages[0])["details"]["query"] == "a=1&b=é %2F"


async def test_reader_credentials_in_the_query_are_redacted_on_mqtt(
        mqtt_server: RunningSidecar, broker: Mosquitto) -> None:
    _, camera_id = await add_camera(mqtt_server, "front")
    async with Watcher(broker, "nestmtx/events/#") as watcher:
        await fire(mqtt_server, "read", MTX_PATH="front", MTX_READER_ID="r-1",
                   MTX_QUERY="Token=abc%20def&view=1&sig=0xfeed")
        message = await watcher.expect(f"nestmtx/events/camera/{camera_id}/read")
    assert decode(message)["details"]["query"] == "Token=REDACTED&view=1&sig=REDACTED"
    assert b"abc%20def" not in message.payload and b"0xfeed" not in message.payload


async def test_retained_state_and_discovery_appear_and_go_when_the_camera_is_disabled(
        mqtt_server: RunningSidecar, broker: Mosquitto) -> None:
    credential_id, camera_id = await add_camera(mqtt_server, "porch")
    state_topic = f"nestmtx/state/camera/{camera_id}"
    for hook, extra in [("demand", {}), ("ready", {"MTX_SOURCE_TYPE": "rtspSource"}),
                        ("read", {"MTX_READER_ID": "a"}), ("read", {"MTX_READER_ID": "b"}),
                        ("unread", {"MTX_READER_ID": "a"})]:
        await fire(mqtt_server, hook, MTX_PATH="porch", **extra)
    details = {"path": "porch", "query": "", "name": "Front door", "enabled": True}
    bus = mqtt_server.sidecar.bus
    await bus.publish(Event("camera", "extended", camera_id,
                            {**details, "expiresAt": "2026-11-28T10:05:00.000Z"}))
    await bus.publish(Event("camera", "failed-extension", camera_id,
                            {**details, "error": "Google said no", "reason": "rate_limited"}))
    final = state_is(demand=True, ready=True, readers=1,
                     streamExpiresAt="2026-11-28T10:05:00.000Z")
    async with Watcher(broker, "nestmtx/state/#") as early:
        await early.expect(state_topic, lambda m: final(m) and decode(m)["lastError"] is not None)

    # A subscriber that starts late gets the whole truth at once, as retained messages.
    async with Watcher(broker, "nestmtx/state/#", "homeassistant/#") as late:
        state = await late.expect(state_topic)
        assert state.retain
        body = decode(state)
        assert final(state) and body["id"] == camera_id and body["path"] == "porch"
        assert body["lastError"]["error"] == "Google said no"
        assert body["lastError"]["reason"] == "rate_limited"
        credential_state = await late.expect(f"nestmtx/state/credentials/{credential_id}")
        assert decode(credential_state)["authenticated"] is False
        node = f"nestmtx_camera_{camera_id}"
        config_topics = {
            "streaming": f"homeassistant/binary_sensor/{node}_streaming/config",
            "viewers": f"homeassistant/sensor/{node}_viewers/config",
            "expiry": f"homeassistant/sensor/{node}_stream_expiry/config",
            "authenticated": "homeassistant/binary_sensor/"
                             f"nestmtx_credentials_{credential_id}_authenticated/config",
        }
        configs = {}
        for key, topic in config_topics.items():
            message = await late.expect(topic)
            assert message.retain
            configs[key] = decode(message)
        for key, config in configs.items():
            assert config["availability_topic"] == "nestmtx/status"
            assert (config["payload_available"], config["payload_not_available"]) == \
                ("online", "offline")
            assert config_topics[key].split("/")[2] == config["unique_id"]
        assert len({c["unique_id"] for c in configs.values()}) == 4
        camera_device = configs["streaming"]["device"]
        assert camera_device["identifiers"] == [node] and camera_device["name"] == "Front door"
        assert camera_device["suggested_area"] == "Porch"
        assert all(configs[k]["device"] == camera_device for k in ("viewers", "expiry"))
        assert configs["expiry"]["device_class"] == "timestamp"
        assert {configs[k]["state_topic"] for k in ("streaming", "viewers", "expiry")} == \
            {state_topic}
        assert configs["authenticated"]["device"]["identifiers"] == [
            f"nestmtx_credentials_{credential_id}"]
        everything = b"".join(m.payload for m in late.messages if isinstance(m.payload, bytes))
        assert b"client-secret-value" not in everything

        # Disable the camera (through the MQTT request API): its configs and state go away.
        token = await mqtt_server.login()
        reply = await _update_camera(broker, token, camera_id)
        assert reply["is_enabled"] is False
        for topic in [state_topic, *(config_topics[k] for k in ("streaming", "viewers",
                                                                "expiry"))]:
            await late.expect(topic, lambda m: m.payload == b"")

    # A fresh subscriber finds the credential's config but nothing of the disabled camera.
    async with Watcher(broker, "homeassistant/#", "nestmtx/state/#", "nestmtx/status") as fresh:
        await fresh.expect("nestmtx/status")  # retained messages of earlier filters came first
        topics = {m.topic.value for m in fresh.messages if m.payload}
        assert config_topics["authenticated"] in topics
        assert not any(node in topic or topic == state_topic for topic in topics)


async def _update_camera(broker: Mosquitto, token: str, camera_id: int) -> Any:
    async with Watcher(broker, "nestmtx/responses/#") as requester:
        return await requester.ask({"command": "update", "module": "cameras",
                                    "requestId": "disable-1", "entity": camera_id,
                                    "payload": {"is_enabled": False}, "token": token})


async def test_a_lone_surrogate_in_a_request_gets_its_error_reply(
        mqtt_server: RunningSidecar, broker: Mosquitto) -> None:
    # Valid JSON (an escape) for a string UTF-8 cannot hold: the reply echoes the bad key.
    body = b'{"command": "list", "module": "version", "requestId": "s1", "\\ud800": 1}'
    async with Watcher(broker, "nestmtx/responses/#") as mqtt:
        reply = await mqtt.ask(body, "nestmtx/responses/s1")
    assert reply["error"]["code"] == "invalid"
    assert reply["error"]["details"] == [{"field": "\ud800", "message": "unknown field"}]


async def test_request_api_answers_lcrud_with_and_without_a_token_like_the_socketio_door(
        mqtt_server: RunningSidecar, broker: Mosquitto) -> None:
    token = await mqtt_server.login()
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(mqtt_server.url, auth={"token": token}, transports=["websocket"])

    async def over_socketio(request: dict[str, Any]) -> Any:
        return await sio.call("request", request, timeout=TIMEOUT)

    async with Watcher(broker, "nestmtx/responses/#", "nestmtx/failures") as mqtt:
        # No token: only health and version answer; everything else is refused.
        refused = await mqtt.ask({"command": "list", "module": "users", "requestId": "n1"})
        assert refused["error"]["code"] == "unauthorized"
        assert (await mqtt.ask({"command": "list", "module": "health", "requestId": "n2"})
                )["status"] == "ok"
        version = {"command": "list", "module": "version", "requestId": "n3"}
        assert await mqtt.ask(version) == await over_socketio(version)
        # A bad token is an error even where none is needed, as on HTTP.
        bad = await mqtt.ask({**version, "requestId": "n4", "token": "not-a-token"})
        assert bad["error"]["code"] == "unauthorized"
        wrong_type = await mqtt.ask({**version, "requestId": "n5", "token": 42})
        assert wrong_type["error"]["code"] == "invalid"
        assert wrong_type["error"]["details"] == [{"field": "token", "message": "must be a string"}]
        # Logging in is refused: the reply would be readable by every subscriber.
        login = await mqtt.ask({"command": "create", "module": "auth", "requestId": "n6",
                                "payload": {"username": "admin", "password": "x" * 12}})
        assert login == {"error": {"message": LOGIN_REFUSED, "code": "forbidden", "details": []}}

        # With a token: LCRUD, each answer what the Socket.IO door answers.
        created = await mqtt.ask({"command": "create", "module": "users", "requestId": "c1",
                                  "payload": {"username": "viewer", "password": "pw-123456"},
                                  "token": token})
        assert created["username"] == "viewer"
        user_id = created["id"]
        for request in [
            {"command": "list", "module": "users", "payload": {"sortBy": "username"}},
            {"command": "read", "module": "users", "entity": user_id},
            {"command": "read", "module": "users", "entity": 9999},
            {"command": "list", "module": "nope"},
            {"command": "read", "module": "users"},
            {"command": "frobnicate", "module": "users"},
        ]:
            over_mqtt = await mqtt.ask({**request, "requestId": "same", "token": token})
            assert over_mqtt == await over_socketio({**request, "requestId": "same"}), request
        updated = await mqtt.ask({"command": "update", "module": "users", "requestId": "u1",
                                  "entity": str(user_id), "payload": {"can_login": False},
                                  "token": token})
        assert updated["can_login"] is False
        deleted = await mqtt.ask({"command": "delete", "module": "users", "requestId": "d1",
                                  "entity": user_id, "token": token})
        assert deleted["id"] == user_id
        gone = await over_socketio({"command": "read", "module": "users", "requestId": "g",
                                    "entity": user_id})
        assert gone["error"]["code"] == "not_found"

        # Unusable requests go to failures; one whose requestId cannot name a topic is not run.
        for garbage in [b"not json", b"[1, 2]", json.dumps({"command": "list"}).encode(),
                        json.dumps({"command": "create", "module": "users", "requestId": "x/#",
                                    "payload": {"username": "sneaky", "password": "pw-123456"},
                                    "token": token}).encode()]:
            failure = await mqtt.ask(garbage, "nestmtx/failures")
            assert failure["error"]["code"] in ("bad_request", "invalid"), failure
        users = await over_socketio({"command": "list", "module": "users", "requestId": "l"})
        assert [u["username"] for u in users["items"]] == ["admin"]
        replies = b"".join(m.payload for m in mqtt.messages if isinstance(m.payload, bytes))
        assert b"pw-123456" not in replies and b"scrypt" not in replies
        assert token.encode() not in replies
    await sio.disconnect()


async def test_a_broker_restart_mid_stream_loses_no_event(
        mqtt_server: RunningSidecar, broker: Mosquitto) -> None:
    _, camera_id = await add_camera(mqtt_server, "yard")
    # A persistent session: the broker keeps QoS 1 messages for it while it is away.
    session = {"identifier": "restart-watcher", "clean_session": False}
    topic = f"nestmtx/events/camera/{camera_id}/+"

    def numbers(watcher: Watcher) -> list[str]:
        return [decode(m)["details"]["query"] for m in watcher.on(topic)]

    async with Watcher(broker, topic, **session) as watcher:
        for n in range(1, 4):
            await fire(mqtt_server, "read", MTX_PATH="yard", MTX_QUERY=str(n))
        await watcher.expect(topic, lambda m: decode(m)["details"]["query"] == "3")
        assert numbers(watcher) == ["1", "2", "3"]
    broker.stop()
    for n in range(4, 9):  # the service keeps taking hooks while the broker is down
        await fire(mqtt_server, "read", MTX_PATH="yard", MTX_QUERY=str(n))
    broker.start()
    async with Watcher(broker, **session) as watcher:  # the session remembers the subscription
        await watcher.expect(topic, lambda m: decode(m)["details"]["query"] == "8")
        # QoS 1 is at least once: the broker may hand "3" over again if the watcher's
        # acknowledgement did not reach it before it stopped. Nothing may be missing.
        fresh = [n for n in numbers(watcher) if n not in ("1", "2", "3")]
        assert fresh == ["4", "5", "6", "7", "8"]
    assert mqtt_server.sidecar.mqtt is not None and mqtt_server.sidecar.mqtt.dropped == 0


async def test_the_buffer_is_bounded_counts_drops_and_delivers_the_rest_in_order(
        server: RunningSidecar, tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "late-broker")  # not started yet: the bridge must wait
    sidecar = server.sidecar
    settings = make_settings(tmp_path, mqtt_url=broker.url, mqtt_base="bounded")
    bridge = MqttBridge(settings, sidecar.dispatcher, sidecar.auth, sidecar.cameras,
                        sidecar.credentials, sidecar.redactor, buffer_size=3)
    bridge.start()
    try:
        for n in range(1, 6):
            await bridge.publish(Event("camera", "demand", None, {"n": n}))
        assert bridge.dropped == 2
        broker.start()
        async with Watcher(broker, "bounded/events/#") as watcher:
            await watcher.expect("bounded/events/#", lambda m: decode(m)["details"]["n"] == 5)
            assert [decode(m)["details"]["n"] for m in watcher.messages] == [3, 4, 5]
    finally:
        await bridge.stop()
        broker.stop()


async def test_stale_retained_topics_of_this_sidecar_are_cleared_on_connect(
        tmp_path: Path, broker: Mosquitto) -> None:
    stale = ["homeassistant/sensor/nestmtx_camera_77_viewers/config",
             "homeassistant/binary_sensor/nestmtx_credentials_5_authenticated/config",
             "nestmtx/state/camera/77", "nestmtx/image/camera/77",
             "homeassistant/event/nestmtx_camera_77_device_event/config"]
    foreign = "homeassistant/sensor/kitchen_temperature/config"
    async with broker.client() as client:
        for topic in [*stale, foreign]:
            await client.publish(topic, b'{"left": "over"}', qos=1, retain=True)
    async with serve_in_loop(make_settings(tmp_path, mqtt_url=broker.url)), \
            Watcher(broker, "homeassistant/#", "nestmtx/state/#", "nestmtx/image/#") as watcher:
        for topic in stale:
            await watcher.expect(topic, lambda m: m.payload == b"")
    async with Watcher(broker, "homeassistant/#", "nestmtx/state/#", "nestmtx/image/#",
                       "nestmtx/status") as fresh:
        await fresh.expect("nestmtx/status")
        assert {m.topic.value for m in fresh.messages if m.payload} == {foreign,
                                                                      "nestmtx/status"}


async def test_offline_on_clean_shutdown(tmp_path: Path, broker: Mosquitto) -> None:
    async with Watcher(broker, "nestmtx/status") as watcher:
        async with serve_in_loop(make_settings(tmp_path, mqtt_url=broker.url)):
            await watcher.expect("nestmtx/status", lambda m: m.payload == b"online")
            seen = len(watcher.messages)
        # Only the bridge's own `offline` can arrive here: it disconnected cleanly, so no will.
        message = await watcher.expect("nestmtx/status",
                                       lambda m: watcher.messages.index(m) >= seen)
        assert message.payload == b"offline"


async def test_the_last_will_says_offline_when_the_process_is_killed(
        tmp_path: Path, broker: Mosquitto) -> None:
    async with Watcher(broker, "nestmtx/status") as watcher:
        process = start_sidecar(tmp_path, env={"NESTMTX_MQTT_URL": broker.url})
        try:
            await watcher.expect("nestmtx/status", lambda m: m.payload == b"online")
            seen = len(watcher.messages)
            process.stop(signal.SIGKILL)
            message = await watcher.expect("nestmtx/status",
                                           lambda m: watcher.messages.index(m) >= seen)
            assert message.payload == b"offline"
        finally:
            process.stop()
    async with Watcher(broker, "nestmtx/status") as late:  # the will was retained
        assert (await late.expect("nestmtx/status")).payload == b"offline"
        assert MQTT_PASSWORD not in process.log()
        assert "connected to MQTT broker mqtt://127.0.0.1" in process.log()


async def test_credential_state_follows_its_events_and_deleting_it_clears_its_cameras(
        mqtt_server: RunningSidecar, broker: Mosquitto) -> None:
    credential_id, camera_id = await add_camera(mqtt_server, "garage")
    credential_state = f"nestmtx/state/credentials/{credential_id}"
    credential_config = ("homeassistant/binary_sensor/"
                         f"nestmtx_credentials_{credential_id}_authenticated/config")
    camera_config = f"homeassistant/sensor/nestmtx_camera_{camera_id}_viewers/config"
    bus = mqtt_server.sidecar.bus
    async with Watcher(broker, "nestmtx/#", "homeassistant/#") as watcher:
        await watcher.expect(camera_config, lambda m: bool(m.payload))
        await bus.publish(Event("credentials", "authenticated", credential_id,
                                {"description": "Home"}))
        await watcher.expect(credential_state, state_is(authenticated=True, error=None))
        await bus.publish(Event("credentials", "unauthenticated", credential_id, {
            "description": "Home", "error": "Token has been revoked", "reason": "invalid_grant"}))
        await watcher.expect(credential_state, state_is(authenticated=False,
                                                        error="Token has been revoked"))
        token = await mqtt_server.login()
        deleted = await watcher.ask({"command": "delete", "module": "credentials",
                                     "requestId": "del", "entity": credential_id,
                                     "token": token})
        assert deleted["id"] == credential_id
        for topic in (credential_state, credential_config, camera_config,
                      f"nestmtx/state/camera/{camera_id}"):
            await watcher.expect(topic, lambda m: m.payload == b"")


def test_the_broker_url_is_parsed_and_never_shows_its_password() -> None:
    broker = Broker.from_url("mqtts://home%40assistant:p%2Fss%40w0rd@broker.lan")
    assert (broker.host, broker.port, broker.tls) == ("broker.lan", 8883, True)
    assert (broker.username, broker.password) == ("home@assistant", "p/ss@w0rd")
    assert "w0rd" not in str(broker) and "w0rd" not in repr(broker)
    assert Broker.from_url("mqtt://127.0.0.1").port == 1883
    with pytest.raises(ConfigError, match="port"):
        Broker.from_url("mqtt://127.0.0.1:99999")
    with pytest.raises(ConfigError, match="host"):
        Broker.from_url("mqtt://")


async def test_a_replica_leaving_does_not_leave_the_others_marked_offline(
        mqtt_server: RunningSidecar, broker: Mosquitto, tmp_path: Path) -> None:
    sidecar = mqtt_server.sidecar
    async with Watcher(broker, "nestmtx/status") as watcher:

        def newer_than(count: int) -> Callable[[aiomqtt.Message], bool]:
            return lambda m: watcher.messages.index(m) >= count

        await watcher.expect("nestmtx/status", lambda m: m.payload == b"online")  # this one
        other = MqttBridge(make_settings(tmp_path, mqtt_url=broker.url), sidecar.dispatcher,
                           sidecar.auth, sidecar.cameras, sidecar.credentials, sidecar.redactor)
        seen = len(watcher.messages)
        other.start()
        await watcher.expect("nestmtx/status", newer_than(seen))  # the other one is up
        seen = len(watcher.messages)
        await other.stop()
        await watcher.expect("nestmtx/status",
                             lambda m: newer_than(seen)(m) and m.payload == b"online")
        assert [m.payload for m in watcher.messages[seen:]] == [b"offline", b"online"]


@pytest.mark.parametrize("mqtt_url,loaded", [("", False), ("mqtt://127.0.0.1:1", True)])
def test_aiomqtt_is_imported_only_when_mqtt_is_configured(tmp_path: Path, mqtt_url: str,
                                                         loaded: bool) -> None:
    # A fresh interpreter: this one imported aiomqtt long ago, for these tests.
    program = (
        "import sys\n"
        "from pathlib import Path\n"
        "from nestmtx_sidecar.app import Sidecar, create_app\n"
        "from nestmtx_sidecar.config import Settings, with_generated_secrets\n"
        f"settings = Settings(data_dir=Path({str(tmp_path)!r}), mqtt_url={mqtt_url!r})\n"
        "create_app(Sidecar(with_generated_secrets(settings)))\n"
        "print('aiomqtt' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == str(loaded)
