"""`health`: is the service up, and can it reach what it depends on."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..schema import record
from . import Caller, Contract, Module

Check = Callable[[], Awaitable[None]]
REPLY = record({
    "status": {"enum": ["ok", "degraded"]},
    "checks": {"type": "object", "additionalProperties": {"type": "string"},
               "description": "Each dependency's check: `ok` or `error: <type>`."},
    "uptime": {"type": "number", "minimum": 0, "description": "Seconds since start."},
}, "Whether the sidecar can reach what it depends on.")


class Health(Module):
    name = "health"
    public_commands = frozenset({"list"})
    contract = Contract(replies={"list": REPLY})

    def __init__(self, checks: dict[str, Check]) -> None:
        self._checks = checks
        self._started = time.monotonic()

    async def list(self, caller: Caller | None, payload: Any) -> dict[str, Any]:
        """Check the database (and Redis, when configured)."""
        results = {}
        for name, check in self._checks.items():
            try:
                await check()
                results[name] = "ok"
            except Exception as exc:
                results[name] = f"error: {type(exc).__name__}"
        healthy = all(value == "ok" for value in results.values())
        return {"status": "ok" if healthy else "degraded", "checks": results,
                "uptime": round(time.monotonic() - self._started, 3)}
