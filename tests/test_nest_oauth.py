"""Credentials against the fake Google: first auth, refresh, invalid_grant, outage, consent."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import socketio
import sqlalchemy as sa
from cryptography.fernet import Fernet

from nestmtx_sidecar.modules.credential_consent import CALLBACK_PATH
from nestmtx_sidecar.storage.store import credentials_table, utcnow
from tests.conftest import Events, RunningSidecar, make_settings, serve_in_loop
from tests.doors import HttpDoor, open_door
from tests.fakes.google import FakeGoogle, pkce_challenge
from tests.nest_support import add_credential, nest_sidecar
from tests.services import create_database, free_port


def _secrets(google: FakeGoogle) -> list[str]:
    return [google.client_secret, *google.refresh_tokens, *google.access_tokens]


def _assert_nothing_secret(google: FakeGoogle, *texts: str) -> None:
    for text in texts:
        for secret in _secrets(google):
            assert secret not in text


async def test_first_auth_then_refreshes_ahead_of_expiry(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    # 3 s tokens: google-auth would call them expired on arrival (225 s threshold).
    async with FakeGoogle(token_lifetime=3).serve() as google, \
            nest_sidecar(tmp_path, google) as (running, events, client):
        created = await add_credential(client, google, google.issue_refresh_token())
        first = await events.wait("credentials", "authenticated")
        assert first.entity == created["id"]
        assert first.details == {"description": "Home"}
        refreshed = await events.wait("credentials", "reauthenticated", count=2)
        assert refreshed.entity == created["id"]
        token_calls = [c for c in google.calls if c.endpoint == "token"]
        assert len(token_calls) == 3 and all(c.status == 200 for c in token_calls)
        # each refresh comes before the previous token expired, not in a loop
        gaps = [b.at - a.at for a, b in itertools.pairwise(token_calls)]
        assert all(1.5 < gap < 3.0 for gap in gaps), gaps
        assert len(events.named("credentials", "authenticated")) == 1

        read = (await client.get(f"/api/credentials/{created['id']}")).json()
        assert read["authenticated"] is True and read["auth_error"] is None
        listing = (await client.get("/api/credentials")).text
        sio = socketio.AsyncClient()
        got: asyncio.Future = asyncio.get_running_loop().create_future()
        sio.on("r1", got.set_result)
        await sio.connect(running.url, auth={"token": client.headers["authorization"][7:]},
                          transports=["websocket"])
        await sio.emit("request", {"command": "read", "module": "credentials",
                                   "requestId": "r1", "entity": created["id"]})
        over_socket = await asyncio.wait_for(got, 5)
        await sio.disconnect()
        assert over_socket["authenticated"] is True
        logs = "\n".join(entry["msg"] for entry in running.sidecar.log_stream.recent)
        assert "authenticated" in logs
        _assert_nothing_secret(google, str(created), str(read), listing, str(over_socket), logs,
                               str([e.payload() for e in events.seen]))


async def test_invalid_grant_is_reported_once_with_the_testing_hint(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    async with FakeGoogle().serve() as google, \
            nest_sidecar(tmp_path, google) as (running, events, client):
        running.sidecar.nest.tokens.retry_initial = 0.05  # a retry would show up at once
        created = await add_credential(client, google, "1//revoked-refresh-token-123456")
        event = await events.wait("credentials", "unauthenticated")
        assert event.entity == created["id"]
        assert event.details["reason"] == "invalid_grant"
        assert "7 days" in event.details["error"] and "Testing" in event.details["error"]
        assert "re-authorize" in event.details["error"].lower()
        await asyncio.sleep(1.0)  # nothing to await: this checks that nothing happens
        assert google.count("token") == 1
        read = (await client.get(f"/api/credentials/{created['id']}")).json()
        assert read["authenticated"] is False and "invalid_grant" in read["auth_error"]
        logs = "\n".join(entry["msg"] for entry in running.sidecar.log_stream.recent)
        assert "7 days" in logs
        _assert_nothing_secret(google, logs, str(read))
        assert "1//revoked-refresh-token-123456" not in logs


async def test_outage_reports_unreachable_only_after_expiry_then_recovers(tmp_path):
    async with FakeGoogle(token_lifetime=3).serve() as google, \
            nest_sidecar(tmp_path, google) as (running, events, client):
        keeper = running.sidecar.nest.tokens
        keeper.retry_initial, keeper.retry_max = 0.1, 0.5
        await add_credential(client, google, google.issue_refresh_token())
        await events.wait("credentials", "authenticated")
        expires = time.monotonic() + 3
        google.fail_next("token", *([503] * 1000))
        down = await events.wait("credentials", "unauthenticated", within=10)
        assert time.monotonic() >= expires - 0.1  # not while the token was still good
        assert down.details["reason"] == "unreachable"
        failures = google.count("token", status=503)
        assert failures >= 3  # retried with backoff meanwhile...
        assert failures < 60  # ...not in a tight loop
        google.heal("token")
        back = await events.wait("credentials", "reauthenticated", within=10)
        assert back.at > down.at
        assert len(events.named("credentials", "unauthenticated")) == 1
        read = (await client.get("/api/credentials")).json()["items"][0]
        assert read["authenticated"] is True


async def test_connection_refused_is_transient(tmp_path):
    port = free_port()  # Google "down": nothing listens there yet
    google = FakeGoogle()
    async with nest_sidecar(tmp_path, google, google_token_uri=f"http://127.0.0.1:{port}/token",
                            sdm_api_url=f"http://127.0.0.1:{port}/v1") as (running, events, client):
        keeper = running.sidecar.nest.tokens
        keeper.retry_initial, keeper.retry_max = 0.05, 0.2
        await add_credential(client, google, google.issue_refresh_token())
        event = await events.wait("credentials", "unauthenticated")
        assert event.details["reason"] == "unreachable"  # no token yet: expired at once
        async with google.serve(port):
            await events.wait("credentials", "authenticated")


async def test_consent_callback_exchanges_the_code(tmp_path):
    async with FakeGoogle().serve() as google, \
            nest_sidecar(tmp_path, google) as (running, events, client):
        created = await add_credential(client, google)
        reply = await client.put(f"/api/credentials/{created['id']}",
                                 json={"origin": running.url})
        consent = urlsplit(reply.json())
        query = {k: v[0] for k, v in parse_qs(consent.query).items()}
        assert consent.netloc == "nestservices.google.com"
        assert query["redirect_uri"] == running.url + "/api/oauth2/callback"
        code = google.issue_code(query["redirect_uri"], query["code_challenge"])
        async with httpx.AsyncClient(base_url=running.url) as browser:
            bad = await browser.get("/api/oauth2/callback",
                                    params={"state": "forged", "code": code})
            assert bad.status_code == 400 and "unknown" in bad.text
            incomplete = await browser.get("/api/oauth2/callback", params={"code": code})
            assert incomplete.status_code == 400
            page = await browser.get("/api/oauth2/callback", params={
                "state": query["state"], "code": code,
                "scope": "https://www.googleapis.com/auth/sdm.service",
                "iss": "https://accounts.google.com"})
            assert page.status_code == 200, page.text
            assert "Authorized" in page.text
            reused = await browser.get("/api/oauth2/callback",
                                       params={"state": query["state"], "code": code})
            assert reused.status_code == 400
        event = await events.wait("credentials", "authenticated")
        assert event.entity == created["id"]
        grants = [c.grant for c in google.calls if c.endpoint == "token"]
        assert grants == ["authorization_code"], google.calls
        read = (await client.get(f"/api/credentials/{created['id']}")).json()
        assert read["authenticated"] is True and read["has_refresh_token"] is True
        _assert_nothing_secret(google, page.text, str(read))


async def test_restart_keeps_authentication(tmp_path):
    async with FakeGoogle().serve() as google:
        settings = make_settings(tmp_path, google_token_uri=google.token_endpoint,
                                 sdm_api_url=google.sdm_url)
        async with nest_sidecar(tmp_path, google, port=settings.port) as (_, events, client):
            created = await add_credential(client, google, google.issue_refresh_token())
            await events.wait("credentials", "authenticated")
        async with serve_in_loop(settings) as running:
            assert running.sidecar.nest.tokens.is_authenticated(created["id"])
            token = await running.sidecar.nest.tokens.access_token(created["id"])
            assert token in google.access_tokens
        assert google.count("token") == 1  # the stored token was still good: no refresh


@contextlib.asynccontextmanager
async def consenting(tmp_path: Path) -> AsyncIterator[
        tuple[FakeGoogle, RunningSidecar, Events, httpx.AsyncClient, dict[str, Any]]]:
    """A sidecar sending consent to the fake Google's page, with one credential to authorize:
    (google, running, events, client, the credential)."""
    async with FakeGoogle().serve() as google, \
            nest_sidecar(tmp_path, google, google_consent_url=google.consent_url) as (
                running, events, client):
        yield google, running, events, client, await add_credential(client, google)


async def _consent_url(client: httpx.AsyncClient, running: RunningSidecar, google: FakeGoogle,
                       credential_id: int) -> str:
    """`credentials update {origin}` with the sidecar's callback registered at the fake Google."""
    google.redirect_uris.add(running.url + CALLBACK_PATH)
    reply = await client.put(f"/api/credentials/{credential_id}", json={"origin": running.url})
    assert reply.status_code == 200, reply.text
    return reply.json()


async def test_consent_flow_through_google_to_an_authenticated_credential(tmp_path):
    async with consenting(tmp_path) as (google, running, events, client, created):
        url = await _consent_url(client, running, google, created["id"])
        assert url.startswith(google.consent_url + "/project-1/auth?")
        async with httpx.AsyncClient(follow_redirects=True) as browser:
            page = await browser.get(url)  # Google's consent page, then back to the callback
        assert [str(r.url).split("?")[0] for r in page.history] == [url.split("?")[0]]
        assert page.url.path == CALLBACK_PATH
        assert page.status_code == 200 and "Authorized" in page.text, page.text
        event = await events.wait("credentials", "authenticated")
        assert event.entity == created["id"]
        assert [(c.endpoint, c.status) for c in google.calls if c.endpoint != "devices.list"
                ] == [("consent", 302), ("token", 200)]
        read = (await client.get(f"/api/credentials/{created['id']}")).json()
        assert read["authenticated"] is True and read["has_refresh_token"] is True
        _assert_nothing_secret(google, page.text, str(read))


async def test_consent_url_carries_a_pkce_challenge_whose_verifier_is_encrypted_at_rest(
        tmp_path):
    async with consenting(tmp_path) as (google, running, _, client, created):
        query = _query(await _consent_url(client, running, google, created["id"]))
        assert query["code_challenge_method"] == "S256"
        async with running.sidecar.store.begin() as conn:
            row = (await conn.execute(sa.select(credentials_table))).one()
        stored = row.oauth_code_verifier
        verifier = running.sidecar.box.decrypt(stored)
        assert 43 <= len(verifier) <= 128 and verifier not in stored
        assert pkce_challenge(verifier) == query["code_challenge"]
        assert query["state"] not in str(tuple(row))  # only its digest is kept


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def _follow(url: str) -> httpx.Response:
    """A browser at Google's consent page, sent back to the sidecar's callback."""
    async with httpx.AsyncClient(follow_redirects=True) as browser:
        return await browser.get(url)


async def test_a_state_works_once_after_success(tmp_path):
    async with consenting(tmp_path) as (google, running, events, client, created):
        url = await _consent_url(client, running, google, created["id"])
        assert (await _follow(url)).status_code == 200
        await events.wait("credentials", "authenticated")
        # An attacker replays the victim's state with a code for their own Google account.
        query = _query(url)
        attacker = google.issue_code(query["redirect_uri"], pkce_challenge("attacker" * 8))
        async with httpx.AsyncClient(base_url=running.url) as browser:
            replay = await browser.get(CALLBACK_PATH, params={"state": query["state"],
                                                              "code": attacker})
        assert replay.status_code == 400 and "already used" in replay.text
        assert google.count("token") == 1
        assert attacker in google.codes  # never even sent to Google


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_concurrent_callbacks_with_one_state_bind_one_account(tmp_path, request, database):
    overrides = {}
    if database == "postgresql":
        server_url = request.getfixturevalue("postgres_url")
        overrides["database_url"] = await create_database(server_url, f"t{uuid.uuid4().hex}")
    async with FakeGoogle().serve() as google, \
            nest_sidecar(tmp_path, google, google_consent_url=google.consent_url,
                         **overrides) as (running, events, client):
        created = await add_credential(client, google)
        query = _query(await _consent_url(client, running, google, created["id"]))
        codes = [google.issue_code(query["redirect_uri"], query["code_challenge"])
                 for _ in range(4)]
        async with httpx.AsyncClient(base_url=running.url) as browser:
            pages = await asyncio.gather(*(
                browser.get(CALLBACK_PATH, params={"state": query["state"], "code": code})
                for code in codes))
        assert sorted(page.status_code for page in pages) == [200, 400, 400, 400]
        assert google.count("token") == 1
        await events.wait("credentials", "authenticated")


async def test_a_state_is_consumed_by_a_failed_exchange_or_a_cancel(tmp_path):
    async with consenting(tmp_path) as (google, running, events, client, created):
        url = await _consent_url(client, running, google, created["id"])
        google.fail_next("token", "invalid_grant")
        failed = await _follow(url)
        assert failed.status_code == 400 and "invalid_grant" in failed.text
        again = await _follow(url)  # Google hands out a new code for the same state
        assert again.status_code == 400 and "already used" in again.text
        assert google.count("token") == 1

        url = await _consent_url(client, running, google, created["id"])
        google.deny_consent = True  # the user clicks Cancel
        cancelled = await _follow(url)
        assert cancelled.status_code == 400
        assert "Authorization cancelled" in cancelled.text and "cancelled" in cancelled.text
        google.deny_consent = False
        after_cancel = await _follow(url)
        assert after_cancel.status_code == 400 and "already used" in after_cancel.text
        assert google.count("token") == 1
        assert not events.named("credentials", "authenticated")
        read = (await client.get(f"/api/credentials/{created['id']}")).json()
        assert read["authenticated"] is False and read["has_refresh_token"] is False


async def test_a_state_expires_after_ten_minutes(tmp_path):
    async with consenting(tmp_path) as (google, running, events, client, created):
        consents = running.sidecar.credentials.consents
        late = await _consent_url(client, running, google, created["id"])
        consents.clock = lambda: utcnow() + dt.timedelta(minutes=10, seconds=5)
        expired = await _follow(late)
        assert expired.status_code == 400 and "expired" in expired.text
        assert google.count("token") == 0
        consents.clock = utcnow
        assert "already used" in (await _follow(late)).text  # consumed all the same

        in_time = await _consent_url(client, running, google, created["id"])
        consents.clock = lambda: utcnow() + dt.timedelta(minutes=9, seconds=50)
        page = await _follow(in_time)
        assert page.status_code == 200 and "Authorized" in page.text
        await events.wait("credentials", "authenticated")


async def test_google_refuses_a_code_issued_for_another_pkce_challenge(tmp_path):
    async with consenting(tmp_path) as (google, running, _, client, created):
        url = await _consent_url(client, running, google, created["id"])
        injected = url.replace(_query(url)["code_challenge"], pkce_challenge("x" * 43))
        page = await _follow(injected)
        assert page.status_code == 400 and "invalid_grant" in page.text
        assert [c.status for c in google.calls if c.endpoint == "token"] == [400]
        read = (await client.get(f"/api/credentials/{created['id']}")).json()
        assert read["authenticated"] is False and read["has_refresh_token"] is False

        # The fake answers as Google does for a wrong or a missing verifier.
        redirect_uri = running.url + CALLBACK_PATH
        form = {"grant_type": "authorization_code", "client_id": google.client_id,
                "client_secret": google.client_secret, "redirect_uri": redirect_uri}
        async with httpx.AsyncClient() as http:
            for verifier, description in (("y" * 43, "Invalid code verifier."),
                                          (None, "Missing code verifier.")):
                code = google.issue_code(redirect_uri, pkce_challenge("x" * 43))
                data = {**form, "code": code} | ({"code_verifier": verifier} if verifier else {})
                reply = await http.post(google.token_endpoint, data=data)
                assert reply.status_code == 400
                assert reply.json() == {"error": "invalid_grant",
                                        "error_description": description}
            code = google.issue_code(redirect_uri, pkce_challenge("x" * 43))
            good = await http.post(google.token_endpoint,
                                   data={**form, "code": code, "code_verifier": "x" * 43})
            assert good.status_code == 200 and good.json()["refresh_token"]


async def test_an_origin_with_user_info_is_refused(tmp_path):
    async with FakeGoogle().serve() as google, \
            nest_sidecar(tmp_path, google) as (_, _, client):
        created = await add_credential(client, google)
        for origin in ("https://user:pw-0123@nvr.example", "https://user@nvr.example:2000"):
            reply = await client.put(f"/api/credentials/{created['id']}",
                                     json={"origin": origin})
            assert reply.status_code == 422, reply.text
            error = reply.json()["error"]
            assert error["details"] == [{"field": "origin",
                                         "message": "must not contain user info"}]
            assert "pw-0123" not in reply.text


async def test_google_refuses_an_unknown_client_or_redirect_uri(tmp_path):
    async with consenting(tmp_path) as (google, running, _, client, created):
        url = await _consent_url(client, running, google, created["id"])
        async with httpx.AsyncClient() as browser:
            google.redirect_uris.clear()
            mismatch = await browser.get(url)
            assert mismatch.status_code == 400 and "redirect_uri_mismatch" in mismatch.text
            google.redirect_uris.add(running.url + CALLBACK_PATH)
            unknown = await browser.get(url.replace(google.client_id, "someone-else"))
            assert unknown.status_code == 400 and "invalid_client" in unknown.text
        assert google.count("token") == 0


async def test_a_changed_app_key_names_the_cause_and_the_way_out(tmp_path):
    """Secrets stored under another NESTMTX_APP_KEY: the sidecar starts, the log, the
    credential and the refused consent say so (never 'Authorization failed'), nothing leaks,
    and re-entering the client secret then authorizing again works."""
    async with FakeGoogle().serve() as google:
        settings = make_settings(tmp_path, google_token_uri=google.token_endpoint,
                                 sdm_api_url=google.sdm_url,
                                 google_consent_url=google.consent_url)
        async with nest_sidecar(tmp_path, google, port=settings.port) as (_, events, client):
            created = await add_credential(client, google, google.issue_refresh_token())
            await events.wait("credentials", "authenticated")
        old_key = (settings.data_dir / "app_key").read_text().strip()  # generated at first
        new_key = Fernet.generate_key().decode()
        async with serve_in_loop(dataclasses.replace(settings, app_key=new_key)) as running:
            token = await running.login()
            logs = "\n".join(entry["msg"] for entry in running.sidecar.log_stream.recent)
            cause = f"The stored secrets of credential {created['id']} (Home) cannot be decrypted"
            assert cause in logs and "NESTMTX_APP_KEY" in logs
            read = (await HttpDoor(running.url, token).call(
                "credentials", "read", created["id"])).ok()
            assert read["authenticated"] is False and read["auth_error"].startswith(cause)
            replies = []
            for kind in ("http", "socketio"):
                door = await open_door(kind, running.url, token)
                try:
                    reply = await door.call("credentials", "update", created["id"],
                                            {"origin": running.url})
                finally:
                    await door.close()
                error = reply.error("secret_unreadable")
                assert reply.status in (409, None)  # HTTP: 409; Socket.IO has no status
                assert error["message"].startswith(cause)
                assert "previous NESTMTX_APP_KEY" in error["message"]
                assert "oauth_client_secret" in error["message"]
                replies.append(reply.body)
            _assert_nothing_secret(google, logs, str(read), str(replies))
            for text in (logs, str(read), str(replies)):
                assert old_key not in text and new_key not in text  # neither key

            async with httpx.AsyncClient(base_url=running.url, timeout=30,
                                         headers={"Authorization": f"Bearer {token}"}) as api:
                events = Events.subscribed(running.sidecar.bus)
                again = await api.put(f"/api/credentials/{created['id']}",
                                      json={"oauth_client_secret": google.client_secret})
                assert again.status_code == 200, again.text
                page = await _follow(await _consent_url(api, running, google, created["id"]))
                assert page.status_code == 200 and "Authorized" in page.text, page.text
                await events.wait("credentials", "authenticated")
                read = (await api.get(f"/api/credentials/{created['id']}")).json()
                assert read["authenticated"] is True and read["auth_error"] is None
