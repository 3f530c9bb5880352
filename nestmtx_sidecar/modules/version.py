"""`version`: which sidecar this is."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from . import Caller, Module

VERSION = version("nestmtx-sidecar")


class Version(Module):
    name = "version"
    public_commands = frozenset({"list"})

    async def list(self, caller: Caller | None, payload: Any) -> dict[str, Any]:
        return {"name": "nestmtx-sidecar", "version": VERSION}
