"""`version`: which sidecar this is."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from . import Caller, Contract, Module
from .schema import record

VERSION = version("nestmtx-sidecar")


class Version(Module):
    name = "version"
    public_commands = frozenset({"list"})
    contract = Contract(replies={"list": record({"name": {"const": "nestmtx-sidecar"},
                                                 "version": {"type": "string"}})})

    async def list(self, caller: Caller | None, payload: Any) -> dict[str, Any]:
        """Which sidecar this is, and its version."""
        return {"name": "nestmtx-sidecar", "version": VERSION}
