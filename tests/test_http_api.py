"""The HTTP door itself: log in and out, statuses, error bodies, bodies and headers."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy as sa

from nestmtx_sidecar.http.api import MAX_BODY
from nestmtx_sidecar.security import token_digest
from nestmtx_sidecar.storage.store import access_tokens_table
from tests.conftest import ADMIN_PASSWORD, RunningSidecar


@pytest.fixture
async def client(server: RunningSidecar) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url) as http:
        yield http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "code", "details"}
    assert body["error"]["code"] == code
    assert "Traceback" not in response.text
    return body["error"]


async def expire(server: RunningSidecar, token: str) -> None:
    """Move a token's expiry into the past, as time would."""
    async with server.sidecar.store.begin() as conn:
        await conn.execute(access_tokens_table.update()
                           .where(access_tokens_table.c.digest == token_digest(token))
                           .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))


async def test_login_returns_an_expiring_bearer(client: httpx.AsyncClient,
                                                server: RunningSidecar) -> None:
    before = dt.datetime.now(dt.UTC)
    reply = await client.post("/api/auth", json={"username": "admin",
                                                 "password": ADMIN_PASSWORD})
    assert reply.status_code == 201
    body = reply.json()
    assert set(body) == {"bearer", "expiration", "user"}
    assert body["user"] == {"id": 1, "username": "admin", "can_login": True}
    expiration = dt.datetime.fromisoformat(body["expiration"])
    ttl = dt.timedelta(seconds=server.settings.token_ttl)
    assert before + ttl - dt.timedelta(seconds=5) < expiration < before + ttl + \
        dt.timedelta(seconds=5)
    # Stored hashed: the database never holds the bearer itself.
    async with server.sidecar.store.begin() as conn:
        digests = (await conn.execute(sa.select(access_tokens_table.c.digest))).scalars().all()
    assert digests == [token_digest(body["bearer"])] and body["bearer"] not in digests
    assert (await client.get("/api/users", headers=bearer(body["bearer"]))).status_code == 200


@pytest.mark.parametrize("credentials", [
    {"username": "admin", "password": "wrong password"},
    {"username": "nobody", "password": ADMIN_PASSWORD},
])
async def test_login_refuses_bad_credentials_alike(client: httpx.AsyncClient,
                                                   credentials: dict) -> None:
    error = assert_error(await client.post("/api/auth", json=credentials), 401, "unauthorized")
    assert error["message"] == "Invalid username or password"


async def test_login_refuses_users_who_may_not_log_in(client: httpx.AsyncClient,
                                                      token: str) -> None:
    await client.post("/api/users", headers=bearer(token), json={
        "username": "locked", "password": "long enough pw", "can_login": False})
    assert_error(await client.post("/api/auth", json={
        "username": "locked", "password": "long enough pw"}), 401, "unauthorized")


@pytest.mark.parametrize("body,status,code", [
    (b"", 422, "invalid"),
    (b"{", 400, "bad_request"),
    (b"[]", 400, "bad_request"),
    (b'"admin"', 400, "bad_request"),
    (b'{"username": "admin"}', 422, "invalid"),
    (b'{"username": "admin", "password": NaN}', 400, "bad_request"),
    (b'{"username": 1, "password": "x"}', 422, "invalid"),
    (b'\xff\xfe', 400, "bad_request"),
    (b"[" * 100_000, 400, "bad_request"),
])
async def test_login_refuses_malformed_bodies(client: httpx.AsyncClient, body: bytes,
                                              status: int, code: str) -> None:
    response = await client.post("/api/auth", content=body,
                                 headers={"content-type": "application/json"})
    assert_error(response, status, code)


async def test_logout_revokes_the_calling_token_only(client: httpx.AsyncClient,
                                                     server: RunningSidecar) -> None:
    first, second = await server.login(), await server.login()
    response = await client.delete("/api/auth", headers=bearer(first))
    assert response.status_code == 200 and response.json() == {"revoked": True}
    assert_error(await client.get("/api/users", headers=bearer(first)), 401, "unauthorized")
    assert_error(await client.delete("/api/auth", headers=bearer(first)), 401, "unauthorized")
    assert (await client.get("/api/users", headers=bearer(second))).status_code == 200
    assert_error(await client.delete("/api/auth"), 401, "unauthorized")


async def test_expired_tokens_are_refused(client: httpx.AsyncClient, server: RunningSidecar,
                                          token: str) -> None:
    await expire(server, token)
    error = assert_error(await client.get("/api/users", headers=bearer(token)), 401,
                         "unauthorized")
    assert error["message"] == "Token expired"


@pytest.mark.parametrize("header", [
    "Bearer not-a-real-token", "Basic YWRtaW46YWRtaW4=", "Bearer", "token-without-scheme",
])
async def test_bad_authorization_headers_are_refused(client: httpx.AsyncClient,
                                                     header: str) -> None:
    response = await client.get("/api/users", headers={"Authorization": header})
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_routes_methods_and_bodies(client: httpx.AsyncClient, token: str) -> None:
    assert_error(await client.get("/api/users/1/extra", headers=bearer(token)), 404,
                 "not_found")
    assert_error(await client.get("/nowhere"), 404, "not_found")
    assert_error(await client.put("/api/users", headers=bearer(token), json={}), 405,
                 "method_not_allowed")
    assert_error(await client.put("/api/auth", json={}), 405, "method_not_allowed")
    assert_error(await client.post("/api/users", headers=bearer(token),
                                   content=b"x" * (MAX_BODY + 1)), 413, "too_large")
    assert_error(await client.get("/api/users/%F0%9F%98%80", headers=bearer(token)), 422,
                 "invalid")
    assert_error(await client.get("/api/%00", headers=bearer(token)), 404, "not_found")
    response = await client.patch("/api/users/1", headers=bearer(token),
                                  json={"username": "root"})
    assert response.status_code == 200 and response.json()["username"] == "root"
    # The query string is the list payload; other query keys are ignored.
    response = await client.get("/api/users?itemsPerPage=1&page=1&other=x",
                                headers=bearer(token))
    assert response.status_code == 200
    assert {k: response.json()[k] for k in ("page", "itemsPerPage", "total")} == {
        "page": 1, "itemsPerPage": 1, "total": 1}


async def test_a_trailing_slash_is_served_not_redirected(client: httpx.AsyncClient,
                                                         token: str) -> None:
    response = await client.get("/api/users/1/", headers=bearer(token))
    assert response.status_code == 200 and response.json()["username"] == "admin"
    response = await client.get("/api/users//", headers=bearer(token))
    assert response.status_code == 200 and response.json()["total"] == 1
    # "0/" as one segment arrives as /api/0/ too (found by the fuzz test).
    assert_error(await client.get("/api/0%2F", headers=bearer(token)), 404, "not_found")


async def test_error_replies_echoing_lone_surrogates_are_still_json(
        client: httpx.AsyncClient, token: str) -> None:
    response = await client.post("/api/users", headers={**bearer(token),
                                                        "content-type": "application/json"},
                                 content=b'{"\\ud800": 1, "username": "\\udfff"}')
    error = assert_error(response, 422, "invalid")
    assert error["details"][0]["field"] == "\ud800"


async def test_health_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok"}
