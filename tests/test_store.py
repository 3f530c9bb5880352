"""The SQL store, the same tests on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa

from nestmtx_sidecar.storage.store import (
    Store,
    cameras_table,
    credentials_table,
    users_table,
)
from tests.conftest import RunningSidecar
from tests.doors import HttpDoor, count_rows, insert_camera, insert_credential
from tests.services import create_database, start_sidecar


async def test_crud_and_constraints(any_store_server: RunningSidecar) -> None:
    server = any_store_server
    door = HttpDoor(server.url, await server.login())
    try:
        created = (await door.call("users", "create", payload={
            "username": "Zoë", "password": "long enough pw"})).ok()
        (await door.call("users", "create", payload={
            "username": "Zoë", "password": "long enough pw"})).error("conflict")
        names = (await door.call("users", "list", payload={"search": "zOË"})).ok()
        assert [item["username"] for item in names["items"]] == ["Zoë"]

        credential = await insert_credential(server.sidecar)
        first = await insert_camera(server.sidecar, credential, "devices/1", mtx_path="cam")
        second = await insert_camera(server.sidecar, credential, "devices/2")
        (await door.call("cameras", "update", entity=second, payload={"mtx_path": "cam"})
         ).error("conflict")
        (await door.call("cameras", "update", entity=second, payload={"mtx_path": "cam2"})
         ).ok()
        page = (await door.call("cameras", "list", payload={
            "sortBy": "mtx_path:desc", "itemsPerPage": 1, "page": 2})).ok()
        assert page["total"] == 2 and [c["id"] for c in page["items"]] == [first]
        for entity in (2**31 - 1, str(2**31 - 1)):
            (await door.call("cameras", "read", entity=entity)).error("not_found")

        # Deleting credentials takes their cameras with them (foreign keys on SQLite too).
        (await door.call("credentials", "delete", entity=credential)).ok()
        assert await count_rows(server.sidecar, cameras_table) == 0
        (await door.call("users", "delete", entity=created["id"])).ok()
        assert await count_rows(server.sidecar, users_table) == 1
    finally:
        await door.close()


async def test_migrate_is_idempotent_and_adds_new_columns(any_store_server: RunningSidecar
                                                          ) -> None:
    store: Store = any_store_server.sidecar.store
    async with store.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE cameras DROP COLUMN is_missing"))
    await store.migrate()
    await store.migrate()
    async with store.begin() as conn:
        columns = await conn.run_sync(
            lambda sync: {c["name"] for c in sa.inspect(sync).get_columns("cameras")})
    assert "is_missing" in columns
    credential = await insert_credential(any_store_server.sidecar)
    await insert_camera(any_store_server.sidecar, credential, "devices/x", is_missing=True)
    async with store.begin() as conn:
        assert (await conn.execute(sa.select(cameras_table.c.is_missing))).scalar_one() is True


async def test_secrets_are_encrypted_in_the_database(any_store_server: RunningSidecar) -> None:
    door = HttpDoor(any_store_server.url, await any_store_server.login())
    try:
        (await door.call("credentials", "create", payload={
            "description": "d", "oauth_client_id": "id", "dac_project_id": "p",
            "oauth_client_secret": "GOCSPX-store-secret",
            "refresh_token": "1//store-refresh-token"})).ok()
    finally:
        await door.close()
    async with any_store_server.sidecar.store.begin() as conn:
        row = (await conn.execute(sa.select(credentials_table))).mappings().one()
    stored = " ".join(str(value) for value in row.values())
    assert "GOCSPX-store-secret" not in stored and "1//store-refresh-token" not in stored
    box = any_store_server.sidecar.box
    assert box.decrypt(row["oauth_client_secret"]) == "GOCSPX-store-secret"
    assert box.decrypt(row["refresh_token"]) == "1//store-refresh-token"


@pytest.mark.postgres
async def test_serve_takes_a_plain_postgresql_url(postgres_url: str, tmp_path: Path) -> None:
    url = await create_database(postgres_url, f"s{uuid.uuid4().hex}")
    assert url.startswith("postgresql://")
    sidecar = start_sidecar(tmp_path, env={"NESTMTX_DATABASE_URL": url})
    try:
        token = await sidecar.login()
        door = HttpDoor(sidecar.url, token)
        try:
            assert (await door.call("health", "list")).ok()["checks"] == {"database": "ok"}
            (await door.call("users", "create", payload={
                "username": "pg-user", "password": "long enough pw"})).ok()
        finally:
            await door.close()
    finally:
        sidecar.stop()
    conn = await asyncpg.connect(url)
    try:
        names = await conn.fetch("SELECT username FROM users ORDER BY id")
    finally:
        await conn.close()
    assert [r["username"] for r in names] == ["admin", "pg-user"]
    assert not (sidecar.data_dir / "sidecar.db").exists()
