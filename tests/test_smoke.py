import asyncio

import httpx
import socketio


async def test_login_and_socket_roundtrip(server, token):
    async with httpx.AsyncClient(base_url=server.url) as client:
        reply = await client.get("/api/users", headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 200
    assert reply.json()["items"][0]["username"] == "admin"
    sio = socketio.AsyncClient()
    got: asyncio.Future = asyncio.get_running_loop().create_future()
    sio.on("r1", lambda data: got.set_result(data))
    await sio.connect(server.url, auth={"token": token}, transports=["websocket"])
    await sio.emit("request", {"command": "list", "module": "users", "requestId": "r1"})
    result = await asyncio.wait_for(got, 5)
    assert result["total"] == 1
    await sio.disconnect()
