"""`health`: is the service up, and can it reach what it depends on."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import Caller, Module

Check = Callable[[], Awaitable[None]]


class Health(Module):
    name = "health"
    public_commands = frozenset({"list"})

    def __init__(self, checks: dict[str, Check]) -> None:
        self._checks = checks
        self._started = time.monotonic()

    async def list(self, caller: Caller | None, payload: Any) -> dict[str, Any]:
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
