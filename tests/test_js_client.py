"""The real JavaScript socket.io-client (pinned in tests/js/package-lock.json) vs the sidecar."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import httpx
import pytest

from nestmtx_sidecar.security import token_digest
from nestmtx_sidecar.storage.store import access_tokens_table
from tests.conftest import RunningSidecar
from tests.services import ROOT, require, require_binary

JS = ROOT / "tests" / "js"
pytestmark = pytest.mark.node


async def run_client(**options: Any) -> list[dict[str, Any]]:
    """Run tests/js/client.js in a node subprocess; return what it observed, line by line."""
    node = require_binary("node", "apt-get install nodejs npm")
    require((JS / "node_modules" / "socket.io-client").is_dir(), "socket.io-client",
            "npm ci --prefix tests/js")
    proc = await asyncio.create_subprocess_exec(
        node, str(JS / "client.js"), json.dumps(options),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, (stdout + stderr).decode()
    return [json.loads(line) for line in stdout.decode().splitlines()]


@pytest.mark.parametrize("placement", ["auth", "header", "query"])
async def test_each_token_placement(server: RunningSidecar, token: str, placement: str) -> None:
    connected, replies = await run_client(url=server.url, token=token, placement=placement,
                                          scenario="list")
    assert connected["connected"] is True
    assert replies["event"] == replies["ack"]
    assert [item["username"] for item in replies["event"]["items"]] == ["admin"]


async def test_reconnect_with_a_new_token_as_the_seed_shows(server: RunningSidecar,
                                                            token: str) -> None:
    new_token = await server.login()
    observed = await run_client(url=server.url, token=token, newToken=new_token,
                                placement="all", scenario="reconnect")
    assert observed[0] == {"connected": True}
    # Reply, ack and drop can arrive in one polling payload, so the client may print the drop
    # before its awaited reply resolves. It got the reply at all, so it came before the drop:
    # a disconnected socket.io-client discards later packets.
    assert sorted(observed[1:3], key=str) == [
        {"disconnected": "io server disconnect"},
        {"event": {"revoked": True}, "ack": {"revoked": True}},
    ]
    assert observed[3] == {"reconnected": True}
    assert observed[4]["event"]["name"] == "nestmtx-sidecar"
    # The old token is dead everywhere; only the new one works.
    async with httpx.AsyncClient(base_url=server.url) as http:
        old = await http.get("/api/users", headers={"Authorization": f"Bearer {token}"})
        new = await http.get("/api/users", headers={"Authorization": f"Bearer {new_token}"})
    assert (old.status_code, new.status_code) == (401, 200)


async def refusal(server: RunningSidecar, token: str, placement: str) -> str:
    observed = await run_client(url=server.url, token=token, placement=placement,
                                scenario="refused")
    assert len(observed) == 1, observed
    return observed[0]["connect_error"]


@pytest.mark.parametrize("placement", ["auth", "header", "query"])
async def test_rejected_tokens_get_connect_error(server: RunningSidecar, token: str,
                                                 placement: str) -> None:
    assert await refusal(server, "", "none") == "A bearer token is required"
    assert await refusal(server, "made-up", placement) == "Invalid or revoked token"

    revoked = await server.login()
    async with httpx.AsyncClient(base_url=server.url) as http:
        await http.delete("/api/auth", headers={"Authorization": f"Bearer {revoked}"})
    assert await refusal(server, revoked, placement) == "Invalid or revoked token"

    async with server.sidecar.store.begin() as conn:
        await conn.execute(access_tokens_table.update()
                           .where(access_tokens_table.c.digest == token_digest(token))
                           .values(expires_at=dt.datetime.now(dt.UTC)))
    assert await refusal(server, token, placement) == "Token expired"
