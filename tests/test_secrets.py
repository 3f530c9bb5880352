"""Secrets are encrypted at rest and never appear in any reply (HTTP, Socket.IO) or log."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import socketio

from nestmtx_sidecar.security import REDACTED, Redactor
from tests.conftest import ADMIN_PASSWORD, RunningSidecar
from tests.doors import HttpDoor, SocketDoor

CLIENT_SECRET = "GOCSPX-Zq8wThisIsTheClientSecret"
REFRESH_TOKEN = "1//0gRefreshTokenThatMustNeverLeak"
ODD_SECRET = "plain-looking-secret-42"  # no secret-like shape: only known-value redaction helps
NEW_REFRESH_TOKEN = "another-refresh-token-value-77"


async def exercise(door: HttpDoor | SocketDoor) -> list[Any]:
    """Every credentials command, good and bad, with secrets in play; returns every reply."""
    replies = []
    created = (await door.call("credentials", "create", payload={
        "description": "Home", "oauth_client_id": "cid.apps.googleusercontent.com",
        "oauth_client_secret": CLIENT_SECRET, "dac_project_id": "proj",
        "refresh_token": REFRESH_TOKEN}))
    replies.append(created.body)
    cid = created.ok()["id"]
    second = await door.call("credentials", "create", payload={
        "description": "Cabin", "oauth_client_id": "c2", "oauth_client_secret": ODD_SECRET,
        "dac_project_id": "p2"})
    replies.append(second.body)
    for call in (
        ("credentials", "list", None, {"search": "GOCSPX"}),  # no stored secret matches
        ("credentials", "list", None, None),
        ("credentials", "read", cid, None),
        ("credentials", "update", cid, {"refresh_token": NEW_REFRESH_TOKEN}),
        ("credentials", "update", cid, {"oauth_client_secret": CLIENT_SECRET, "x": 1}),
        ("credentials", "update", cid, {"oauth_client_secret": 5}),
        ("credentials", "update", cid, {"refresh_token": REFRESH_TOKEN + "\n"}),
        ("credentials", "update", cid, {"origin": "https://h.example"}),
        ("credentials", "create", None, {"oauth_client_secret": ODD_SECRET}),
        ("users", "create", None, {"username": "u", "password": "short"}),
        ("users", "list", None, {"sortBy": "password_hash"}),
        ("auth", "create", None, {"username": "admin", "password": ADMIN_PASSWORD + "x"}),
        ("credentials", "delete", cid, None),
    ):
        replies.append((await door.call(*call)).body)
    return replies


def leaked(text: str, secrets: tuple[str, ...]) -> list[str]:
    return [secret for secret in secrets if secret in text]


SECRETS = (CLIENT_SECRET, REFRESH_TOKEN, ODD_SECRET, NEW_REFRESH_TOKEN, ADMIN_PASSWORD, "scrypt$")


@pytest.mark.parametrize("kind", ["http", "socketio"])
async def test_no_secret_in_replies_logs_or_database_file(
        server: RunningSidecar, token: str, kind: str, caplog: pytest.LogCaptureFixture
        ) -> None:
    caplog.set_level(logging.DEBUG)
    log_events: list[dict[str, Any]] = []
    watcher = socketio.AsyncClient(reconnection=False)
    watcher.on("log", log_events.append)
    await watcher.connect(server.url, auth={"token": token}, transports=["websocket"])

    door = HttpDoor(server.url, token) if kind == "http" else \
        await SocketDoor(server.url, token).connect()
    try:
        replies = await exercise(door)
    finally:
        await door.close()
    # A marker logged last tells us the watcher has received everything logged before it.
    marker = asyncio.get_running_loop().create_future()
    watcher.on("log", lambda e: log_events.append(e) or (
        "secrets-test-marker" in e["msg"] and not marker.done() and marker.set_result(None)))
    logging.getLogger("nestmtx_sidecar.test").warning("secrets-test-marker %s", CLIENT_SECRET)
    await asyncio.wait_for(marker, 10)
    await watcher.disconnect()

    assert leaked(repr(replies), SECRETS) == []
    assert leaked(repr(log_events), SECRETS) == []
    assert any(REDACTED in e["msg"] for e in log_events if "secrets-test-marker" in e["msg"])
    assert leaked("\n".join(r.getMessage() for r in caplog.records
                            if r.name.startswith("nestmtx_sidecar.")
                            and "secrets-test-marker" not in r.getMessage()), SECRETS) == []

    # The database file (and its write-ahead log) holds no secret in clear text.
    data = await asyncio.to_thread(_database_bytes, Path(server.settings.data_dir))
    assert data, "no database file found"
    assert [s for s in SECRETS[:4] if s.encode() in data] == []


def _database_bytes(data_dir: Path) -> bytes:
    return b"".join(path.read_bytes() for path in data_dir.glob("sidecar.db*"))


def test_redactor_removes_secret_shapes_and_known_values() -> None:
    redact = Redactor()
    redact.add(ODD_SECRET, "pw")  # however short: it was given as a secret
    text = redact(
        f"Authorization: Bearer abc.def-123 refresh_token={REFRESH_TOKEN} "
        f"{{\"client_secret\": \"{CLIENT_SECRET}\"}} rtsp://h/x?auth=SECRETAUTH&y=1 "
        f"ya29.a0AccessToken {ODD_SECRET} my pw is short "
        '42["r",{"bearer":"opaque-bearer-value","user":1}]')
    for secret in ("abc.def-123", REFRESH_TOKEN, CLIENT_SECRET, "SECRETAUTH", "ya29.a0Access",
                   ODD_SECRET, "opaque-bearer-value", " pw "):
        assert secret not in text
    assert "rtsp://h/x?auth=" + REDACTED + "&y=1" in text and f" my {REDACTED} is short " in text


def test_unknown_users_are_checked_against_a_hash_as_costly_as_a_real_one() -> None:
    from nestmtx_sidecar.modules.auth import _DUMMY_HASH
    from nestmtx_sidecar.security import hash_password, verify_password

    assert _DUMMY_HASH.split("$")[:4] == hash_password("x").split("$")[:4]  # same cost
    assert verify_password("timing-equaliser", _DUMMY_HASH)
