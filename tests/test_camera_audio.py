"""The camera `audio` field (opus | aac | none): stored, read and updated on every door."""

from __future__ import annotations

from typing import Any

import pytest
import socketio
import sqlalchemy as sa

from nestmtx_sidecar.storage.store import Store
from tests.conftest import RunningSidecar
from tests.doors import HttpDoor, SocketDoor, insert_camera, insert_credential
from tests.test_modules import door
from tests.test_mqtt import TIMEOUT, Mosquitto, Watcher, add_camera, broker, mqtt_server

__all__ = ["broker", "door", "mqtt_server"]  # fixtures shared with test_modules and test_mqtt


async def test_audio_defaults_to_opus_and_is_updated_and_sorted(
        door: HttpDoor | SocketDoor, server: RunningSidecar) -> None:
    credential = await insert_credential(server.sidecar)
    first = await insert_camera(server.sidecar, credential, "enterprises/p/devices/a",
                                protocols=["WEB_RTC"])
    second = await insert_camera(server.sidecar, credential, "enterprises/p/devices/b",
                                 protocols=["WEB_RTC"])
    assert (await door.call("cameras", "read", entity=first)).ok()["audio"] == "opus"
    for mode in ("aac", "none", "opus", "aac"):
        updated = (await door.call("cameras", "update", entity=first,
                                   payload={"audio": mode})).ok()
        assert updated["audio"] == mode
        assert (await door.call("cameras", "read", entity=first)).ok() == updated
    # The publisher reads it from the camera a hook resolves.
    ref = await server.sidecar.cameras.get_ref(first)
    assert ref is not None and ref.audio == "aac"
    listed = (await door.call("cameras", "list", payload={"sortBy": "audio:desc"})).ok()
    assert [(c["id"], c["audio"]) for c in listed["items"]] == [(second, "opus"), (first, "aac")]


@pytest.mark.parametrize("value", ["mp3", "AAC", "", 1, True, ["aac"], {"mode": "aac"}])
async def test_audio_refuses_anything_but_its_three_modes(
        door: HttpDoor | SocketDoor, server: RunningSidecar, value: object) -> None:
    credential = await insert_credential(server.sidecar)
    camera = await insert_camera(server.sidecar, credential, "enterprises/p/devices/a")
    error = (await door.call("cameras", "update", entity=camera,
                             payload={"audio": value})).error("invalid")
    assert error["details"] == [{"field": "audio", "message": "must be one of opus, aac, none"}]
    assert (await door.call("cameras", "read", entity=camera)).ok()["audio"] == "opus"


async def test_audio_over_mqtt_answers_what_socketio_answers(
        mqtt_server: RunningSidecar, broker: Mosquitto) -> None:
    _, camera_id = await add_camera(mqtt_server, "porch")
    token = await mqtt_server.login()
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(mqtt_server.url, auth={"token": token}, transports=["websocket"])

    async def over_socketio(request: dict[str, Any]) -> Any:
        return await sio.call("request", request, timeout=TIMEOUT)

    try:
        async with Watcher(broker, "nestmtx/responses/#") as mqtt:
            updated = await mqtt.ask({"command": "update", "module": "cameras",
                                      "requestId": "a1", "entity": camera_id,
                                      "payload": {"audio": "none"}, "token": token})
            assert updated["audio"] == "none"
            read = {"command": "read", "module": "cameras", "entity": camera_id}
            assert await over_socketio({**read, "requestId": "r"}) == updated
            bad = await mqtt.ask({"command": "update", "module": "cameras", "requestId": "a2",
                                  "entity": camera_id, "payload": {"audio": "mp3"},
                                  "token": token})
            assert bad["error"]["code"] == "invalid"
            assert bad == await over_socketio({"command": "update", "module": "cameras",
                                               "requestId": "a2", "entity": camera_id,
                                               "payload": {"audio": "mp3"}})
    finally:
        await sio.disconnect()


async def test_migration_adds_audio_as_opus_to_existing_cameras(
        any_store_server: RunningSidecar) -> None:
    sidecar = any_store_server.sidecar
    store: Store = sidecar.store
    credential = await insert_credential(sidecar)
    camera = await insert_camera(sidecar, credential, "enterprises/p/devices/old")
    async with store.begin() as conn:  # a database from before the field existed
        await conn.execute(sa.text("ALTER TABLE cameras DROP COLUMN audio"))
    await store.migrate()
    await store.migrate()
    door = HttpDoor(any_store_server.url, await any_store_server.login())
    try:
        assert (await door.call("cameras", "read", entity=camera)).ok()["audio"] == "opus"
        (await door.call("cameras", "update", entity=camera, payload={"audio": "aac"})).ok()
        assert (await door.call("cameras", "read", entity=camera)).ok()["audio"] == "aac"
    finally:
        await door.close()
