"""Baseline: the floor of the stack, a bare python-socketio + uvicorn re-emitter on defaults.

Usage: python python_reemitter.py <port>. POST /hooks/<hook> with the hook's JSON variables
is re-emitted as the product's three events to every connected socket.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

import socketio
import uvicorn

sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*")


async def hooks(scope: dict[str, Any], receive: Any, send: Any) -> None:
    hook = scope["path"].rsplit("/", 1)[-1]
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    variables = json.loads(body)
    payload = {"domain": "camera", "entity": None, "event": hook,
               "details": {"path": variables["MTX_PATH"], "query": variables.get("MTX_QUERY", ""),
                           "name": None, "enabled": False},
               "at": dt.datetime.now(dt.UTC).isoformat()}
    for topic in (f"camera:{hook}", "camera:*", "nestmtx:*"):
        await sio.emit(topic, payload)
    await send({"type": "http.response.start", "status": 202,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"accepted":true}'})


if __name__ == "__main__":
    uvicorn.run(socketio.ASGIApp(sio, other_asgi_app=hooks), host="127.0.0.1",
                port=int(sys.argv[1]), log_level="warning")
