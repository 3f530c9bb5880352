"""No log level, trace included, writes passwords, secrets, frames or SQL parameters; library
loggers that log every packet stay at their fixed level whatever NESTMTX_LOG_LEVEL says."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio
import sqlalchemy as sa

from nestmtx_sidecar.logs.setup import LIBRARY_LEVELS, configure_logging
from nestmtx_sidecar.logs.stream import LogStream
from nestmtx_sidecar.security import Redactor
from tests.conftest import RunningSidecar, make_settings
from tests.doors import SocketDoor
from tests.fakes.google import FakeGoogle
from tests.services import start_sidecar

USER_PASSWORD = "carol own pass phrase 77"
WRONG_PASSWORD = "carol wrong pass phrase 77"
# No secret shape: only not logging it (or knowing it) keeps it out.
CLIENT_SECRET = "plain-client-secret-value-8213"


def leaked(text: str, secrets: tuple[str, ...], size: int = 10) -> list[str]:
    """Secrets of which any `size` characters in a row are in the text: a frame truncated in
    the middle leaks the end of a password, not all of it."""
    return [secret for secret in secrets
            if any(secret[at:at + size] in text for at in range(max(1, len(secret) - size + 1)))]


class LogWatcher:
    """A socket receiving the `log` stream (the replay of the last 100 first)."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.entries: list[dict[str, Any]] = []
        self._seen = asyncio.Event()
        self.client.on("log", self._on_log)

    def _on_log(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)
        self._seen.set()

    async def connect(self, url: str, token: str) -> LogWatcher:
        await self.client.connect(url, auth={"token": token}, transports=["websocket"])
        return self

    async def wait_for(self, text: str, within: float = 15.0) -> None:
        async with asyncio.timeout(within):
            while not any(text in entry["msg"] for entry in self.entries):
                self._seen.clear()
                await self._seen.wait()

    def text(self) -> str:
        return "\n".join(entry["msg"] for entry in self.entries)


@pytest.mark.parametrize("level", ["trace", "debug"])
async def test_passwords_and_secrets_reach_no_log_at_any_level(tmp_path: Path, level: str
                                                               ) -> None:
    google = FakeGoogle(client_secret=CLIENT_SECRET)
    async with google.serve():
        sidecar = await asyncio.to_thread(start_sidecar, tmp_path, {
            "NESTMTX_LOG_LEVEL": level, "NESTMTX_GOOGLE_TOKEN_URI": google.token_endpoint,
            "NESTMTX_SDM_API_URL": google.sdm_url})
        try:
            token = await sidecar.login()
            live = await LogWatcher().connect(sidecar.url, token)
            door = await SocketDoor(sidecar.url, token).connect()
            refresh_token = google.issue_refresh_token()
            try:
                assert (await door.call("users", "create", payload={
                    "username": "carol", "password": USER_PASSWORD})).ok()
                assert (await door.call("auth", "create", payload={
                    "username": "carol", "password": USER_PASSWORD})).ok()["bearer"]
                assert (await door.call("auth", "create", payload={
                    "username": "carol", "password": WRONG_PASSWORD})).code == "unauthorized"
                assert (await door.call("credentials", "create", payload={
                    "description": "Home", "oauth_client_id": google.client_id,
                    "oauth_client_secret": CLIENT_SECRET, "dac_project_id": "project-1",
                    "refresh_token": refresh_token})).ok()
            finally:
                await door.close()
            # Its first refresh at Google, logged at info, comes after all of the above.
            authenticated = "credential 1 (Home) authenticated"
            await live.wait_for(authenticated)
            replay = await LogWatcher().connect(sidecar.url, token)
            await replay.wait_for(authenticated)
            await live.client.disconnect()
            await replay.client.disconnect()
        finally:
            await asyncio.to_thread(sidecar.stop)
    assert google.access_tokens, "the credential was never refreshed"
    secrets = (USER_PASSWORD, WRONG_PASSWORD, sidecar.admin_password, CLIENT_SECRET,
               refresh_token, *google.access_tokens, "scrypt$")
    process_log = sidecar.log()
    for where, text in (("process log", process_log), ("log stream", live.text()),
                        ("replay", replay.text())):
        assert leaked(text, secrets) == [], where
    assert "TEXT '" not in process_log  # no websocket frame, however truncated
    assert "Received packet" not in process_log and "emitting event" not in process_log


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """configure_logging changes the process's loggers: put them back afterwards."""
    root = logging.getLogger()
    names = [*LIBRARY_LEVELS, "uvicorn.error"]
    saved = (root.handlers[:], root.level,
             {name: (logging.getLogger(name).level, logging.getLogger(name).filters[:])
              for name in names})
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    for name, (level, filters) in saved[2].items():
        logging.getLogger(name).setLevel(level)
        logging.getLogger(name).filters[:] = filters


@pytest.mark.usefixtures("restored_logging")
def test_at_trace_per_packet_library_loggers_stay_quiet(tmp_path: Path) -> None:
    redactor = Redactor()
    configure_logging(make_settings(tmp_path, log_level="trace"), redactor, LogStream(redactor))
    for name in ("aiortc.rtcrtpreceiver", "aiortc.rtcrtpsender", "aiortc.rtcdtlstransport",
                 "aiortc.rtcsctptransport", "aioice.ice", "uvicorn.error", "websockets.server",
                 "sqlalchemy.engine.Engine", "aiosqlite", "mqtt", "google.auth.transport",
                 "httpcore.http11"):
        assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
    for name in ("engineio.server", "socketio.server", "uvicorn.access"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
    # The sidecar's own detail is what trace and debug are for.
    assert logging.getLogger("nestmtx_sidecar.nest.streaming.source").isEnabledFor(logging.DEBUG)


async def test_a_database_error_is_logged_without_its_sql_parameters(
        server: RunningSidecar, token: str, caplog: pytest.LogCaptureFixture) -> None:
    async with server.sidecar.store.begin() as conn:  # every new user now fails in the database
        await conn.execute(sa.text("CREATE TRIGGER sabotage BEFORE INSERT ON users "
                                   "BEGIN INSERT INTO no_such_table VALUES (1); END"))
    door = await SocketDoor(server.url, token).connect()
    try:
        reply = await door.call("users", "create", payload={
            "username": "param-marker-user", "password": USER_PASSWORD})
    finally:
        await door.close()
    assert reply.code == "internal"
    formatter = logging.Formatter()
    logged = "\n".join(formatter.format(r) for r in caplog.records
                       if r.name.startswith("nestmtx_sidecar."))
    streamed = "\n".join(entry["msg"] for entry in server.sidecar.log_stream.recent)
    for text in (logged, streamed):
        assert "no_such_table" in text  # the error itself is logged...
        assert "param-marker-user" not in text and "scrypt$" not in text  # ...not its values
