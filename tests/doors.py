"""The two doors onto the service layer, driven by real clients, behind one test interface.

`HttpDoor` speaks `/api/<module>[/<id>]` through httpx; `SocketDoor` emits `request` through
python-socketio's AsyncClient and checks that the `<requestId>` event and the ack carry the
same reply. Module tests run once through each, so both doors are held to the same contract.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any

import httpx
import socketio
import sqlalchemy as sa

from nestmtx_sidecar.app import Sidecar
from nestmtx_sidecar.errors import SidecarError
from nestmtx_sidecar.storage.store import cameras_table, credentials_table

# The HTTP status each error code must come with (errors.py is the one source of truth).
STATUS = {cls.code: cls.status for cls in (SidecarError, *SidecarError.__subclasses__())}
REPLY_TIMEOUT = 10.0


@dataclass
class Reply:
    body: Any
    status: int | None = None  # HTTP only

    @property
    def code(self) -> str | None:
        """The error code, or None for a success."""
        if isinstance(self.body, dict) and set(self.body) == {"error"}:
            return self.body["error"]["code"]
        return None

    def ok(self) -> Any:
        assert self.code is None, self.body
        return self.body

    def error(self, code: str) -> dict[str, Any]:
        assert self.code == code, self.body
        error = self.body["error"]
        assert set(error) == {"message", "code", "details"}
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["details"], list)
        return error


class HttpDoor:
    name = "http"

    def __init__(self, url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.AsyncClient(base_url=url, headers=headers, timeout=REPLY_TIMEOUT)

    async def call(self, module: str, command: str, entity: Any = None,
                   payload: Any = None) -> Reply:
        path = f"/api/{module}" if entity is None else f"/api/{module}/{entity}"
        if command == "list":
            response = await self.client.get(path, params=payload or {})
        elif command == "create":
            response = await self.client.post(path, json=payload)
        elif command == "read":
            response = await self.client.get(path)
        elif command == "update":
            response = await self.client.put(path, json=payload)
        else:
            response = await self.client.delete(path)
        reply = Reply(response.json(), response.status_code)
        if reply.code is None:
            assert response.status_code == (201 if command == "create" else 200), response.text
        else:
            assert response.status_code == STATUS[reply.code], response.text
        return reply

    async def close(self) -> None:
        await self.client.aclose()


class SocketDoor:
    name = "socketio"
    _ids = itertools.count()

    def __init__(self, url: str, token: str | None) -> None:
        self.url, self.token = url, token
        self.client = socketio.AsyncClient(reconnection=False)

    async def connect(self) -> SocketDoor:
        await self.client.connect(self.url, auth={"token": self.token},
                                  transports=["websocket"], wait_timeout=REPLY_TIMEOUT)
        return self

    async def call(self, module: str, command: str, entity: Any = None,
                   payload: Any = None) -> Reply:
        request: dict[str, Any] = {"command": command, "module": module,
                                   "requestId": f"req-{next(self._ids)}"}
        if entity is not None:
            request["entity"] = entity
        if payload is not None:
            request["payload"] = payload
        return Reply(await self.request(request))

    async def request(self, request: Any, reply_event: str | None = None) -> Any:
        """Emit a raw request; return the reply after checking event and ack agree."""
        event = reply_event or request["requestId"]
        on_event = asyncio.get_running_loop().create_future()
        on_ack = asyncio.get_running_loop().create_future()
        self.client.on(event, lambda data: on_event.done() or on_event.set_result(data))
        try:
            await self.client.emit("request", request,
                                   callback=lambda data: on_ack.set_result(data))
            event_reply, ack_reply = await asyncio.wait_for(
                asyncio.gather(on_event, on_ack), REPLY_TIMEOUT)
        finally:
            self.client.handlers["/"].pop(event, None)
        assert event_reply == ack_reply
        return event_reply

    async def close(self) -> None:
        await self.client.disconnect()


async def open_door(kind: str, url: str, token: str | None) -> HttpDoor | SocketDoor:
    if kind == "http":
        return HttpDoor(url, token)
    return await SocketDoor(url, token).connect()


async def insert_credential(sidecar: Sidecar, description: str = "home") -> int:
    """A credentials row for cameras to belong to (secrets encrypted as the module would)."""
    async with sidecar.store.begin() as conn:
        result = await conn.execute(credentials_table.insert().values(
            description=description, oauth_client_id="client-id.apps.googleusercontent.com",
            oauth_client_secret=sidecar.box.encrypt("client-secret-value"),
            dac_project_id="project-id"))
        return result.inserted_primary_key[0]


async def insert_camera(sidecar: Sidecar, credential_id: int, uid: str, **values: Any) -> int:
    """Camera rows straight into the store: device sync is not what these tests are about."""
    async with sidecar.store.begin() as conn:
        result = await conn.execute(cameras_table.insert().values(
            credential_id=credential_id, uid=uid, **values))
        return result.inserted_primary_key[0]


async def count_rows(sidecar: Sidecar, table: sa.Table) -> int:
    async with sidecar.store.begin() as conn:
        return (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
