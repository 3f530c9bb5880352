from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from nestmtx_sidecar.app import Sidecar, create_app
from nestmtx_sidecar.config import Settings, with_generated_secrets
from nestmtx_sidecar.events import Event, EventBus
from tests.services import (
    ADMIN_PASSWORD,
    SidecarProcess,
    create_database,
    free_port,
    login,
    postgres_server,
    redis_server,
    serving,
    start_sidecar,
)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL server started for this test session."""
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
def sidecar_process(tmp_path: Path) -> Iterator[SidecarProcess]:
    """A real `nestmtx-sidecar serve` process on SQLite."""
    process = start_sidecar(tmp_path)
    yield process
    process.stop()


class Events:
    """Records every bus event; tests await the one they expect instead of sleeping."""

    def __init__(self) -> None:
        self.seen: list[Event] = []
        self._changed = asyncio.Condition()

    @classmethod
    def subscribed(cls, bus: EventBus) -> Events:
        """A recorder of every event `bus` publishes from now on."""
        events = cls()
        bus.subscribe(events)
        return events

    async def __call__(self, event: Event) -> None:
        async with self._changed:
            self.seen.append(event)
            self._changed.notify_all()

    def named(self, domain: str, name: str) -> list[Event]:
        return [e for e in self.seen if e.domain == domain and e.event == name]

    async def wait(self, domain: str, name: str, count: int = 1, within: float = 15.0,
                   where: Callable[[Event], bool] = lambda e: True) -> Event:
        """The `count`-th event of that name (matching `where`), waiting for it if needed."""
        async with asyncio.timeout(within), self._changed:
            while True:
                found = [e for e in self.named(domain, name) if where(e)]
                if len(found) >= count:
                    return found[count - 1]
                await self._changed.wait()


@dataclass
class RunningSidecar:
    """The sidecar served by real uvicorn on a loopback port, inside the test's event loop."""

    url: str
    sidecar: Sidecar
    settings: Settings

    @property
    def hook_secret(self) -> str:
        return self.settings.hook_secret

    async def login(self, username: str = "admin", password: str = ADMIN_PASSWORD) -> str:
        return await login(self.url, username, password)


@contextlib.asynccontextmanager
async def serve_in_loop(settings: Settings) -> AsyncIterator[RunningSidecar]:
    settings = with_generated_secrets(settings)
    sidecar = Sidecar(settings)
    logging.getLogger().addHandler(sidecar.log_stream)
    config = uvicorn.Config(create_app(sidecar), host="127.0.0.1", port=settings.port,
                            log_config=None, ws_per_message_deflate=False, lifespan="on",
                            proxy_headers=False,  # as `serve` runs it
                            # a long-poll still open at shutdown is not worth waiting for
                            timeout_graceful_shutdown=2)
    try:
        async with serving(config):
            yield RunningSidecar(f"http://127.0.0.1:{settings.port}", sidecar, settings)
    finally:
        logging.getLogger().removeHandler(sidecar.log_stream)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"port": free_port(), "data_dir": tmp_path / "data",
                              "admin_password": ADMIN_PASSWORD, "log_level": "debug"}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningSidecar]:
    """The sidecar on SQLite, served in-process by real uvicorn on a loopback port."""
    async with serve_in_loop(make_settings(tmp_path)) as running:
        yield running


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_store_server(request: pytest.FixtureRequest, tmp_path: Path
                           ) -> AsyncIterator[RunningSidecar]:
    """The in-process sidecar once on SQLite and once on a real PostgreSQL."""
    overrides: dict[str, Any] = {}
    if request.param == "postgresql":
        server_url = request.getfixturevalue("postgres_url")
        overrides["database_url"] = await create_database(server_url, f"t{uuid.uuid4().hex}")
    async with serve_in_loop(make_settings(tmp_path, **overrides)) as running:
        yield running


@pytest.fixture
async def token(server: RunningSidecar) -> str:
    return await server.login()
