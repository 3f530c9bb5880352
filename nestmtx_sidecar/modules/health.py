"""`health`: is the service up, and can it reach what it depends on."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import Caller, Contract, Module
from .schema import record

Check = Callable[[], Awaitable[None]]
Status = Callable[[], Awaitable[dict[str, Any]]]
_PUBLIC = {
    "status": {"enum": ["ok", "degraded"]},
    "checks": {"type": "object", "additionalProperties": {"type": "string"},
               "description": "Each dependency's check: `ok` or `error: <type>`."},
    "uptime": {"type": "number", "minimum": 0, "description": "Seconds since start."},
}
# Only with a token, so not required: this replica's details for the console's Status page.
_REPLICA = {
    "version": {"type": "string"},
    "connected_sockets": {"type": "integer", "minimum": 0,
                          "description": "Socket.IO clients on this replica."},
    "lease": record({"name": {"type": "string"}, "held_here": {"type": "boolean"},
                     "replica": {"type": "string"}}, "The Nest lease, as this replica sees it."),
    "mediamtx": {"type": "string", "description": "`ok`, `unreachable (<error>)`, "
                 "`answered HTTP <status>` or `not configured`."},
}
REPLY = {**record(_PUBLIC, "Whether the sidecar can reach what it depends on."),
         "properties": {**_PUBLIC, **_REPLICA}}


class Health(Module):
    name = "health"
    public_commands = frozenset({"list"})
    contract = Contract(replies={"list": REPLY})

    def __init__(self, checks: dict[str, Check], status: Status | None = None) -> None:
        self._checks = checks
        self._status = status
        self._started = time.monotonic()

    async def list(self, caller: Caller | None, payload: Any) -> dict[str, Any]:
        """Check the database (and Redis, when configured); with a token, this replica too."""
        results = {name: await _run(check) for name, check in self._checks.items()}
        healthy = all(value == "ok" for value in results.values())
        reply = {"status": "ok" if healthy else "degraded", "checks": results,
                 "uptime": round(time.monotonic() - self._started, 3)}
        if caller is not None and self._status is not None:
            # Replica details (sockets, lease, MediaMTX) are for logged-in users only: the
            # unauthenticated reply stays what load balancers need.
            reply.update(await self._status())
        return reply


async def _run(check: Check) -> str:
    try:
        await check()
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return "ok"
