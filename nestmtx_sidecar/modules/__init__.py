"""The service layer: one module per entity, shared by the HTTP, Socket.IO and MQTT doors."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadRequest, Invalid, field_error
from .listing import page_schema
from .schema import Body

COMMANDS = ("list", "create", "read", "update", "delete")
MAX_ID = 2**31 - 1  # ids are 32-bit INTEGER columns on PostgreSQL
_DIGITS = re.compile(r"[0-9]{1,10}")  # ASCII only: str.isdigit() also accepts "²"
ID_SCHEMA: Mapping[str, Any] = {"type": "integer", "minimum": 1, "maximum": MAX_ID}


@dataclass(frozen=True)
class Caller:
    """Who is asking: an authenticated user and the token they used."""

    user_id: int
    username: str
    token_id: int
    expires_at: dt.datetime


@dataclass(frozen=True)
class Contract:
    """What a module's commands take and answer; the API document is generated from it."""

    # The request body of each command (several: the payload is exactly one of them); the
    # commands validate their payloads with these same declarations.
    bodies: Mapping[str, tuple[Body, ...]] = field(default_factory=dict)
    replies: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # JSON Schemas
    failures: Mapping[str, Mapping[int, str]] = field(default_factory=dict)  # beyond the usual
    sortable: frozenset[str] | None = None  # list takes the list payload, sorted by these
    entity: Mapping[str, Any] = field(default_factory=lambda: ID_SCHEMA)  # the id's schema


class Module:
    """A NestMTX module; a command it does not define answers with a clear error."""

    name = ""
    public_commands: frozenset[str] = frozenset()
    contract: Contract = Contract()

    def supports(self, command: str) -> bool:
        return callable(getattr(self, command, None))

    async def call(self, command: str, caller: Caller | None, entity: str | None,
                   payload: Any) -> Any:
        if not self.supports(command):
            raise BadRequest(f"Module {self.name!r} does not support the {command!r} command")
        method = getattr(self, command)
        if command in ("list", "create"):
            return await method(caller, payload)
        if command == "update":
            return await method(caller, entity, payload)
        return await method(caller, entity)


def entity_id(entity: Any) -> int:
    """Entities are database ids; clients send them as numbers or digit strings."""
    number = None
    if isinstance(entity, int) and not isinstance(entity, bool):
        number = entity
    elif isinstance(entity, str) and _DIGITS.fullmatch(entity):
        number = int(entity)
    if number is not None and 0 < number <= MAX_ID:
        return number
    raise Invalid("entity must be a positive integer id", [field_error("entity", "invalid id")])


def entity_replies(item: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The replies of a module of entities: a page of them for list, one for the rest."""
    return {"list": page_schema(item), **dict.fromkeys(COMMANDS[1:], item)}
