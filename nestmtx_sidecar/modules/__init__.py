"""The service layer: one module per entity, shared by the HTTP, Socket.IO and MQTT doors."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import BadRequest, Invalid, field_error
from ..listing import encodable

COMMANDS = ("list", "create", "read", "update", "delete")
MAX_ID = 2**31 - 1  # ids are 32-bit INTEGER columns on PostgreSQL
_DIGITS = re.compile(r"[0-9]{1,10}")  # ASCII only: str.isdigit() also accepts "²"


@dataclass(frozen=True)
class Caller:
    """Who is asking: an authenticated user and the token they used."""

    user_id: int
    username: str
    token_id: int
    expires_at: dt.datetime


class Module:
    """A NestMTX module; a command it does not define answers with a clear error."""

    name = ""
    public_commands: frozenset[str] = frozenset()

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


def require_mapping(payload: Any) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise Invalid("payload must be an object", [field_error("payload", "not an object")])
    return payload


def reject_unknown(payload: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(str(key) for key in payload if key not in allowed)
    if unknown:
        raise Invalid(
            f"Unknown field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}",
            [field_error(key, "unknown field") for key in unknown],
        )


def string_field(payload: Mapping[str, Any], key: str, *, required: bool, max_length: int = 255,
                 min_length: int = 1) -> str | None:
    value = payload.get(key)
    if value is None:
        if required:
            raise Invalid(f"{key} is required", [field_error(key, "required")])
        return None
    if not isinstance(value, str):
        raise Invalid(f"{key} must be a string", [field_error(key, "must be a string")])
    if not min_length <= len(value) <= max_length:
        raise Invalid(f"{key} must be {min_length} to {max_length} characters long",
                      [field_error(key, "bad length")])
    if any(ord(ch) < 32 or ch == "\x7f" for ch in value) or not encodable(value):
        raise Invalid(f"{key} must not contain control characters or lone surrogates",
                      [field_error(key, "control characters")])
    return value


def bool_field(payload: Mapping[str, Any], key: str) -> bool | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise Invalid(f"{key} must be true or false", [field_error(key, "must be a boolean")])
    return value
