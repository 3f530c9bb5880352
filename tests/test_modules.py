"""Every module command end to end over real uvicorn, through each door (HTTP, Socket.IO)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import pytest

from nestmtx_sidecar.modules.cameras import CameraRef
from nestmtx_sidecar.nest.devices.sync import camera_values
from nestmtx_sidecar.storage.store import access_tokens_table, users_table
from tests.conftest import RunningSidecar
from tests.doors import (
    HttpDoor,
    SocketDoor,
    count_rows,
    insert_camera,
    insert_credential,
    open_door,
)

ITEM_SECRETS = ("password", "password_hash", "oauth_client_secret", "refresh_token",
                "access_token", "stream_token", "oauth_state")


@pytest.fixture(params=["http", "socketio"])
async def door(request: pytest.FixtureRequest, server: RunningSidecar, token: str
               ) -> AsyncIterator[HttpDoor | SocketDoor]:
    opened = await open_door(request.param, server.url, token)
    yield opened
    await opened.close()


def assert_no_secret_fields(item: dict) -> None:
    assert not set(item) & set(ITEM_SECRETS), item


# --- users ---------------------------------------------------------------------------------

async def test_users_lcrud(door: HttpDoor | SocketDoor) -> None:
    listed = (await door.call("users", "list")).ok()
    assert [u["username"] for u in listed["items"]] == ["admin"]
    assert listed["total"] == 1

    created = (await door.call("users", "create", payload={
        "username": "viewer", "password": "long enough pw", "can_login": True})).ok()
    assert created["username"] == "viewer" and created["can_login"] is True
    assert isinstance(created["id"], int)
    assert_no_secret_fields(created)

    read = (await door.call("users", "read", entity=created["id"])).ok()
    assert read == created
    # Entities may be sent as digit strings too (HTTP paths always are).
    assert (await door.call("users", "read", entity=str(created["id"]))).ok() == created

    updated = (await door.call("users", "update", entity=created["id"], payload={
        "username": "viewer2", "can_login": False})).ok()
    assert (updated["username"], updated["can_login"]) == ("viewer2", False)

    deleted = (await door.call("users", "delete", entity=created["id"])).ok()
    assert deleted["id"] == created["id"]
    (await door.call("users", "read", entity=created["id"])).error("not_found")
    assert (await door.call("users", "list")).ok()["total"] == 1


async def test_users_refuse_bad_input(door: HttpDoor | SocketDoor) -> None:
    (await door.call("users", "create", payload={"username": "x", "password": "short"})
     ).error("invalid")
    (await door.call("users", "create", payload={"username": "x"})).error("invalid")
    error = (await door.call("users", "create", payload={
        "username": "x", "password": "long enough pw", "is_admin": True})).error("invalid")
    assert error["details"] == [{"field": "is_admin", "message": "unknown field"}]
    (await door.call("users", "create", payload={
        "username": "tab\there", "password": "long enough pw"})).error("invalid")
    (await door.call("users", "create", payload={
        "username": "admin", "password": "long enough pw"})).error("conflict")
    (await door.call("users", "update", entity=1, payload={"can_login": "no"})).error("invalid")
    for entity in (0, -1, "abc", "²", 2**31, "99999999999"):
        (await door.call("users", "read", entity=entity)).error("invalid")
    (await door.call("users", "read", entity=4242)).error("not_found")


async def test_users_cannot_delete_or_lock_out_yourself(door: HttpDoor | SocketDoor) -> None:
    me = (await door.call("users", "list")).ok()["items"][0]["id"]
    error = (await door.call("users", "delete", entity=me)).error("forbidden")
    assert "yourself" in error["message"]
    (await door.call("users", "update", entity=me, payload={"can_login": False})
     ).error("forbidden")


async def test_a_disabled_users_right_password_is_answered_as_a_wrong_one(
        door: HttpDoor | SocketDoor) -> None:
    (await door.call("users", "create", payload={
        "username": "locked", "password": "long enough pw", "can_login": False})).ok()
    right = (await door.call("auth", "create", payload={
        "username": "locked", "password": "long enough pw"})).error("unauthorized")
    wrong = (await door.call("auth", "create", payload={
        "username": "locked", "password": "not the password"})).error("unauthorized")
    assert right == wrong == {"message": "Invalid username or password",
                              "code": "unauthorized", "details": []}


async def test_cannot_delete_the_last_user(server: RunningSidecar) -> None:
    # Only reachable without a caller (no one else is left to be the caller otherwise).
    users_module = server.sidecar.dispatcher.modules["users"]
    with pytest.raises(Exception, match="last user") as caught:
        await users_module.call("delete", None, 1, None)
    assert getattr(caught.value, "code", None) == "forbidden"
    assert await count_rows(server.sidecar, users_table) == 1


async def test_password_change_ends_the_users_other_sessions(
        server: RunningSidecar, door: HttpDoor | SocketDoor) -> None:
    viewer = (await door.call("users", "create", payload={
        "username": "viewer", "password": "long enough pw"})).ok()
    viewer_token = await server.login("viewer", "long enough pw")
    viewer_door = HttpDoor(server.url, viewer_token)
    try:
        (await viewer_door.call("version", "list")).ok()
        (await viewer_door.call("users", "list")).ok()
        (await door.call("users", "update", entity=viewer["id"],
                         payload={"password": "another long pw"})).ok()
        (await viewer_door.call("users", "list")).error("unauthorized")
    finally:
        await viewer_door.close()
    await server.login("viewer", "another long pw")


# --- cameras -------------------------------------------------------------------------------

@pytest.fixture
async def camera_ids(server: RunningSidecar) -> list[int]:
    credential = await insert_credential(server.sidecar)
    return [
        await insert_camera(server.sidecar, credential, "enterprises/p/devices/a",
                            name="Front Door", room="Entrance", protocols=["WEB_RTC"]),
        await insert_camera(server.sidecar, credential, "enterprises/p/devices/b",
                            name="Backyard", room="Garden", protocols=["RTSP"],
                            mtx_path="backyard", is_enabled=True),
        await insert_camera(server.sidecar, credential, "enterprises/p/devices/c",
                            name="Garage", room="Garage", protocols=["RTSP"]),
    ]


async def test_cameras_list_read_update(door: HttpDoor | SocketDoor, camera_ids: list[int]
                                        ) -> None:
    listed = (await door.call("cameras", "list")).ok()
    assert listed["total"] == 3
    for item in listed["items"]:
        assert {"id", "uid", "name", "room", "protocols", "mtx_path", "is_enabled",
                "is_persistent"} <= set(item)
        assert_no_secret_fields(item)
    front = (await door.call("cameras", "read", entity=camera_ids[0])).ok()
    assert (front["uid"], front["name"], front["room"], front["protocols"]) == (
        "enterprises/p/devices/a", "Front Door", "Entrance", ["WEB_RTC"])
    assert (front["mtx_path"], front["is_enabled"], front["is_persistent"]) == (
        None, False, False)

    updated = (await door.call("cameras", "update", entity=camera_ids[0], payload={
        "mtx_path": "home/front-door_1.cam:main~x", "is_enabled": True,
        "is_persistent": True})).ok()
    assert (updated["mtx_path"], updated["is_enabled"], updated["is_persistent"]) == (
        "home/front-door_1.cam:main~x", True, True)
    assert (await door.call("cameras", "read", entity=camera_ids[0])).ok() == updated


def _device(uid: str, name: str) -> dict:
    """A camera as SDM's devices.list answers it."""
    return {"name": uid, "type": "sdm.devices.types.DOORBELL", "traits": {
        "sdm.devices.traits.Info": {"customName": name},
        "sdm.devices.traits.CameraLiveStream": {"supportedProtocols": ["WEB_RTC"]}}}


async def test_a_device_sync_reaches_camera_listeners_and_the_path_cache(
        door: HttpDoor | SocketDoor, server: RunningSidecar) -> None:
    """The cameras module tells its listeners and forgets cached paths itself: no caller of
    sync_devices has to."""
    cameras = server.sidecar.cameras
    heard: list[tuple] = []

    async def listener(before: CameraRef | None, after: CameraRef | None) -> None:
        heard.append((before, after))

    cameras.on_change(listener)
    credential = await insert_credential(server.sidecar)
    uid = "enterprises/p/devices/porch"
    assert await cameras.sync_devices(credential, {uid: camera_values(_device(uid, "Porch"))}
                                      ) == []
    assert heard == []  # a new camera starts disabled: nothing to follow yet
    camera = (await door.call("cameras", "list")).ok()["items"][0]
    (await door.call("cameras", "update", entity=camera["id"],
                     payload={"mtx_path": "porch", "is_enabled": True})).ok()
    heard.clear()
    served = await cameras.by_path("porch")  # cached now, for 2 s
    assert served is not None and served.name == "Porch"

    await cameras.sync_devices(credential, {uid: camera_values(_device(uid, "Front door"))})
    renamed = await cameras.by_path("porch")
    assert renamed == dataclasses.replace(served, name="Front door")
    assert heard == [(served, renamed)]

    gone = await cameras.sync_devices(credential, {})
    assert gone == [renamed]
    assert len(heard) == 2 and heard[1][0] == renamed
    read = (await door.call("cameras", "read", entity=camera["id"])).ok()
    assert (read["name"], read["is_missing"], read["mtx_path"]) == ("Front door", True, "porch")


@pytest.mark.parametrize("path", [
    "has space", "café", "/leading", "trailing/", "~regex", "semi;colon", "a" * 256, 7,
    "new\nline",
])
async def test_cameras_refuse_paths_mediamtx_would_refuse(
        door: HttpDoor | SocketDoor, camera_ids: list[int], path: object) -> None:
    error = (await door.call("cameras", "update", entity=camera_ids[0],
                             payload={"mtx_path": path})).error("invalid")
    assert error["details"][0]["field"] == "mtx_path"


async def test_cameras_mtx_path_is_unique_and_required_to_enable(
        door: HttpDoor | SocketDoor, camera_ids: list[int]) -> None:
    error = (await door.call("cameras", "update", entity=camera_ids[0],
                             payload={"mtx_path": "backyard"})).error("conflict")
    assert "backyard" in error["message"]
    (await door.call("cameras", "update", entity=camera_ids[0], payload={"is_enabled": True})
     ).error("invalid")
    # An enabled camera cannot lose its path; a disabled one can.
    (await door.call("cameras", "update", entity=camera_ids[1], payload={"mtx_path": None})
     ).error("invalid")
    cleared = (await door.call("cameras", "update", entity=camera_ids[1], payload={
        "mtx_path": None, "is_enabled": False})).ok()
    assert cleared["mtx_path"] is None
    # Its old path is free again.
    (await door.call("cameras", "update", entity=camera_ids[0], payload={"mtx_path": "backyard"})
     ).ok()


async def test_cameras_refuse_other_commands_and_fields(
        door: HttpDoor | SocketDoor, camera_ids: list[int]) -> None:
    (await door.call("cameras", "update", entity=camera_ids[0], payload={"name": "x"})
     ).error("invalid")
    (await door.call("cameras", "update", entity=camera_ids[0], payload={"is_enabled": 1})
     ).error("invalid")
    (await door.call("cameras", "update", entity=999, payload={"is_persistent": True})
     ).error("not_found")
    error = (await door.call("cameras", "create", payload={"uid": "x"})).error("bad_request")
    assert "create" in error["message"]
    (await door.call("cameras", "delete", entity=camera_ids[0])).error("bad_request")


# --- credentials ---------------------------------------------------------------------------

NEW_CREDENTIAL = {
    "description": "Home", "oauth_client_id": "123-abc.apps.googleusercontent.com",
    "oauth_client_secret": "GOCSPX-module-test-secret", "dac_project_id": "dac-project-1",
}


async def test_credentials_lcrud_never_return_secrets(door: HttpDoor | SocketDoor) -> None:
    created = (await door.call("credentials", "create", payload=NEW_CREDENTIAL)).ok()
    assert_no_secret_fields(created)
    assert (created["description"], created["oauth_client_id"], created["dac_project_id"]) == (
        "Home", NEW_CREDENTIAL["oauth_client_id"], "dac-project-1")
    assert created["has_refresh_token"] is False and created["authenticated"] is False

    listed = (await door.call("credentials", "list")).ok()
    assert [item["id"] for item in listed["items"]] == [created["id"]]
    assert (await door.call("credentials", "read", entity=created["id"])).ok() == created

    updated = (await door.call("credentials", "update", entity=created["id"], payload={
        "description": "Cabin", "refresh_token": "1//refresh-token-for-module-test"})).ok()
    assert updated["description"] == "Cabin" and updated["has_refresh_token"] is True
    assert_no_secret_fields(updated)
    for reply in (created, listed, updated):
        assert "GOCSPX-module-test-secret" not in str(reply)
        assert "1//refresh-token-for-module-test" not in str(reply)

    deleted = (await door.call("credentials", "delete", entity=created["id"])).ok()
    assert deleted["id"] == created["id"]
    (await door.call("credentials", "read", entity=created["id"])).error("not_found")


async def test_credentials_update_with_origin_returns_the_consent_url(
        door: HttpDoor | SocketDoor) -> None:
    created = (await door.call("credentials", "create", payload=NEW_CREDENTIAL)).ok()
    url = (await door.call("credentials", "update", entity=created["id"],
                           payload={"origin": "https://nvr.example:2000"})).ok()
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https", "nestservices.google.com", "/partnerconnections/dac-project-1/auth")
    query = parse_qs(parts.query)
    assert query["client_id"] == [NEW_CREDENTIAL["oauth_client_id"]]
    assert query["redirect_uri"] == ["https://nvr.example:2000/api/oauth2/callback"]
    assert query["scope"] == ["https://www.googleapis.com/auth/sdm.service"]
    assert query["access_type"] == ["offline"] and query["response_type"] == ["code"]
    assert len(query["state"][0]) >= 20
    assert NEW_CREDENTIAL["oauth_client_secret"] not in url

    for origin in ("ftp://x", "https://x/path", "not a url", 5):
        (await door.call("credentials", "update", entity=created["id"],
                         payload={"origin": origin})).error("invalid")
    (await door.call("credentials", "update", entity=created["id"], payload={
        "origin": "https://x", "description": "y"})).error("invalid")


async def test_credentials_refuse_bad_input(door: HttpDoor | SocketDoor) -> None:
    missing = {k: v for k, v in NEW_CREDENTIAL.items() if k != "oauth_client_secret"}
    error = (await door.call("credentials", "create", payload=missing)).error("invalid")
    assert error["details"][0]["field"] == "oauth_client_secret"
    (await door.call("credentials", "create", payload={**NEW_CREDENTIAL, "description": ""})
     ).error("invalid")
    (await door.call("credentials", "create", payload={**NEW_CREDENTIAL, "access_token": "x"})
     ).error("invalid")
    (await door.call("credentials", "delete", entity=77)).error("not_found")


async def test_credentials_pubsub_fields_defaults_validation_and_consent_scope(
        door: HttpDoor | SocketDoor) -> None:
    plain = (await door.call("credentials", "create", payload=NEW_CREDENTIAL)).ok()
    assert (plain["gcp_project_id"], plain["pubsub_topic"], plain["pubsub"]) == (None, None, None)

    created = (await door.call("credentials", "create", payload={
        **NEW_CREDENTIAL, "gcp_project_id": "my-home-123"})).ok()
    topic = "projects/my-home-123/topics/nestmtx-dac-project-1"
    assert created["pubsub_topic"] == topic
    assert created["pubsub_subscription"] == \
        "projects/my-home-123/subscriptions/nestmtx-dac-project-1"
    pubsub = created["pubsub"]
    assert (pubsub["topic"], pubsub["status"], pubsub["last_event_at"]) == (topic, "pending", None)
    assert topic in pubsub["instruction"] and "Device Access Console" in pubsub["instruction"]
    url = (await door.call("credentials", "update", entity=created["id"],
                           payload={"origin": "https://nvr.example:2000"})).ok()
    assert parse_qs(urlsplit(url).query)["scope"] == [
        "https://www.googleapis.com/auth/sdm.service https://www.googleapis.com/auth/pubsub"]

    mine = "projects/other-proj/topics/sdm-events"
    updated = (await door.call("credentials", "update", entity=created["id"],
                               payload={"pubsub_topic": mine})).ok()
    assert (updated["pubsub_topic"], updated["pubsub"]["topic"]) == (mine, mine)
    pull_only = (await door.call("credentials", "update", entity=created["id"], payload={
        "gcp_project_id": None, "pubsub_topic": None,
        "pubsub_subscription": "projects/other-proj/subscriptions/events"})).ok()
    assert (pull_only["pubsub_topic"], pull_only["pubsub"]["subscription"]) == (
        None, "projects/other-proj/subscriptions/events")

    for field, value in (("gcp_project_id", "My_Project"), ("gcp_project_id", "abc"),
                         ("gcp_project_id", 7), ("pubsub_topic", "topics/x"),
                         ("pubsub_topic", "projects/my-home-123/topics/goog-x"),
                         ("pubsub_subscription", "projects/my-home-123/topics/abc"),
                         ("pubsub_subscription", "projects/p\n/subscriptions/abc")):
        payload = {**NEW_CREDENTIAL, "gcp_project_id": "my-home-123", field: value}
        error = (await door.call("credentials", "create", payload=payload)).error("invalid")
        assert error["details"][0]["field"] == field, (field, value)
    error = (await door.call("credentials", "create", payload={
        **NEW_CREDENTIAL, "pubsub_topic": mine})).error("invalid")
    assert "needs gcp_project_id" in error["message"]


# --- health, version -----------------------------------------------------------------------

async def test_health_and_version(door: HttpDoor | SocketDoor) -> None:
    health = (await door.call("health", "list")).ok()
    assert health["status"] == "ok" and health["checks"] == {"database": "ok"}
    version = (await door.call("version", "list")).ok()
    assert version["name"] == "nestmtx-sidecar" and version["version"]
    (await door.call("version", "read", entity=1)).error("bad_request")
    (await door.call("nope", "list")).error("not_found")


async def test_health_and_version_need_no_token(server: RunningSidecar) -> None:
    anonymous = HttpDoor(server.url, None)
    try:
        (await anonymous.call("health", "list")).ok()
        (await anonymous.call("version", "list")).ok()
        for module in ("users", "cameras", "credentials"):
            (await anonymous.call(module, "list")).error("unauthorized")
    finally:
        await anonymous.close()


# --- list semantics (NestMTX: search, page, itemsPerPage incl. -1, sortBy) -----------------

@pytest.fixture
async def many_users(server: RunningSidecar) -> None:
    module = server.sidecar.dispatcher.modules["users"]
    for name in ("bravo", "alpha", "charlie", "delta_1", "delta%2", "echo"):
        await module.call("create", None, None, {"username": name, "password": "long enough pw"})


async def test_list_paging_search_and_sorting(door: HttpDoor | SocketDoor, many_users: None
                                              ) -> None:
    async def names(**payload: object) -> list[str]:
        result = (await door.call("users", "list", payload=payload)).ok()
        return [item["username"] for item in result["items"]]

    first = (await door.call("users", "list", payload={"itemsPerPage": 3, "page": 1,
                                                       "sortBy": "username"})).ok()
    assert first["total"] == 7 and first["page"] == 1 and first["itemsPerPage"] == 3
    assert first["sortBy"] == [{"key": "username", "order": "asc"}]
    assert [i["username"] for i in first["items"]] == ["admin", "alpha", "bravo"]
    assert await names(itemsPerPage=3, page=3, sortBy="username") == ["echo"]
    assert await names(itemsPerPage=3, page=4, sortBy="username") == []
    assert len(await names(itemsPerPage=-1)) == 7
    assert len(await names()) == 7  # default page size 10
    assert await names(itemsPerPage=2, sortBy="username:desc") == ["echo", "delta_1"]
    # Search is case-insensitive and takes % and _ literally.
    assert await names(search="DELTA") == ["delta_1", "delta%2"]
    assert await names(search="a%") == ["delta%2"]
    assert await names(search="_") == ["delta_1"]
    assert await names(search="zzz") == []


@pytest.mark.parametrize("payload,field", [
    ({"page": 0}, "page"), ({"page": "x"}, "page"), ({"page": "1.5"}, "page"),
    ({"itemsPerPage": 0}, "itemsPerPage"), ({"itemsPerPage": -2}, "itemsPerPage"),
    ({"itemsPerPage": 100000}, "itemsPerPage"), ({"sortBy": "password_hash"}, "sortBy"),
    ({"sortBy": "username:sideways"}, "sortBy"), ({"sortBy": "[oops"}, "sortBy"),
    ({"search": "x" * 300}, "search"), ({"page": "²"}, "page"),
])
async def test_list_refuses_bad_payloads(door: HttpDoor | SocketDoor, payload: dict,
                                         field: str) -> None:
    error = (await door.call("users", "list", payload=payload)).error("invalid")
    assert [d["field"] for d in error["details"]] == [field]


async def test_list_sort_by_vuetify_objects(server: RunningSidecar, token: str,
                                            many_users: None) -> None:
    socket = await SocketDoor(server.url, token).connect()
    try:
        result = (await socket.call("users", "list", payload={
            "sortBy": [{"key": "can_login", "order": "asc"}, {"key": "username",
                                                                "order": "desc"}],
            "itemsPerPage": 2})).ok()
        assert [i["username"] for i in result["items"]] == ["echo", "delta_1"]
        (await socket.call("users", "list", payload={"page": True})).error("invalid")
        (await socket.call("users", "list", payload={"search": 5})).error("invalid")
    finally:
        await socket.close()
    http = HttpDoor(server.url, token)
    try:
        result = (await http.call("users", "list", payload={
            "sortBy": '[{"key": "username", "order": "desc"}]', "itemsPerPage": "1"})).ok()
        assert [i["username"] for i in result["items"]] == ["echo"]
    finally:
        await http.close()


async def test_deleting_a_user_revokes_their_tokens(server: RunningSidecar,
                                                    door: HttpDoor | SocketDoor) -> None:
    viewer = (await door.call("users", "create", payload={
        "username": "viewer", "password": "long enough pw"})).ok()
    await server.login("viewer", "long enough pw")
    before = await count_rows(server.sidecar, access_tokens_table)
    (await door.call("users", "delete", entity=viewer["id"])).ok()
    assert await count_rows(server.sidecar, access_tokens_table) == before - 1
