"""The `request` contract: parse a NestMTX request, check who may run it, run it, answer."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import (
    BadRequest,
    Invalid,
    NotFound,
    SidecarError,
    Unauthorized,
    field_error,
    internal_error,
)
from ..security import client_address
from . import COMMANDS, Caller, Module

logger = logging.getLogger(__name__)

# Socket.IO clients treat these event names specially, so a reply cannot be sent on them.
RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "disconnecting",
                             "newListener", "removeListener", "failure"})
_ENTITY_COMMANDS = {"read", "update", "delete"}
_PAYLOAD_COMMANDS = {"create", "update"}
_FIELDS = {"command", "module", "requestId", "entity", "payload"}


@dataclass(frozen=True)
class Request:
    command: str
    module: str
    request_id: str
    entity: Any = None
    payload: Any = None


class RequestError(SidecarError):
    """A request that cannot be run; `request_id` is None when no reply event is usable."""

    def __init__(self, error: SidecarError, request_id: str | None) -> None:
        super().__init__(error.message, error.details)
        self.status, self.code = error.status, error.code
        self.request_id = request_id


def parse_json(text: str | bytes) -> Any:
    """Strict JSON (no NaN or Infinity, which JSON.parse rejects); BadRequest otherwise."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise BadRequest("Request is not valid JSON") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def request_json(text: str | bytes) -> Any:
    """The JSON of a request message; RequestError (no usable requestId) otherwise."""
    try:
        return parse_json(text)
    except BadRequest as exc:
        raise RequestError(exc, None) from None


def parse_request(raw: Any, allowed_fields: frozenset[str] = frozenset(_FIELDS)) -> Request:
    """Validate the shape of a request (object or JSON string) by NestMTX's rules."""
    if isinstance(raw, str | bytes):
        raw = request_json(raw)
    if not isinstance(raw, Mapping):
        raise RequestError(BadRequest("Request must be an object"), None)
    request_id = raw.get("requestId")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= 256 or \
            request_id in RESERVED_EVENTS:
        raise RequestError(Invalid(
            "requestId must be a non-empty string of at most 256 characters and not a "
            "reserved event name", [field_error("requestId", "invalid")]), None)
    errors = [field_error(str(key), "unknown field") for key in raw if key not in allowed_fields]
    command, module = raw.get("command"), raw.get("module")
    if not isinstance(command, str) or command not in COMMANDS:
        errors.append(field_error("command", f"must be one of {', '.join(COMMANDS)}"))
        command = None  # unhashable junk must not reach the set lookups below
    if not isinstance(module, str) or not module:
        errors.append(field_error("module", "must be a non-empty string"))
    entity = raw.get("entity")
    if entity is not None and (isinstance(entity, bool) or not isinstance(entity, str | int)):
        errors.append(field_error("entity", "must be a string or an integer"))
    elif command in _ENTITY_COMMANDS and entity is None:
        errors.append(field_error("entity", f"is required for {command}"))
    elif command in COMMANDS and command not in _ENTITY_COMMANDS and entity is not None:
        errors.append(field_error("entity", f"is not allowed for {command}"))
    has_payload = raw.get("payload") is not None
    if command in _PAYLOAD_COMMANDS and not has_payload:
        errors.append(field_error("payload", f"is required for {command}"))
    elif command in ("read", "delete") and has_payload:
        errors.append(field_error("payload", f"is not allowed for {command}"))
    elif has_payload and not isinstance(raw["payload"], Mapping):
        errors.append(field_error("payload", "must be an object"))
    if errors:
        raise RequestError(Invalid("Invalid request", errors), request_id)
    return Request(command, module, request_id, entity, raw.get("payload"))


class Dispatcher:
    """Runs requests against the modules: the one service layer behind every door."""

    def __init__(self, modules: list[Module]) -> None:
        self.modules = {module.name: module for module in modules}

    async def run(self, request: Request, caller: Caller | None,
                  client: str = client_address.UNKNOWN) -> Any:
        """Run one request for `caller` (None: not logged in) from the address `client`."""
        module = self.modules.get(request.module)
        if module is None:
            raise NotFound(f"Unknown module {request.module!r}; known: "
                           f"{', '.join(sorted(self.modules))}")
        if not module.supports(request.command):
            raise BadRequest(
                f"Module {request.module!r} does not support the {request.command!r} command"
            )
        if caller is None and request.command not in module.public_commands:
            raise Unauthorized("A valid bearer token is required")
        context = client_address.CURRENT.set(client)
        try:
            return await module.call(request.command, caller, request.entity, request.payload)
        finally:
            client_address.CURRENT.reset(context)

    async def answer(self, raw: Any, caller: Caller | None,
                     allowed_fields: frozenset[str] = frozenset(_FIELDS),
                     client: str = client_address.UNKNOWN) -> tuple[str | None, Any]:
        """Never raises: returns (requestId or None, result or error object)."""
        try:
            request = parse_request(raw, allowed_fields)
        except RequestError as exc:
            return exc.request_id, exc.to_dict()
        return request.request_id, await self.reply(request, caller, client)

    async def reply(self, request: Request, caller: Caller | None,
                    client: str = client_address.UNKNOWN) -> Any:
        """Never raises: the result of a parsed request, or its error object."""
        try:
            return await self.run(request, caller, client)
        except SidecarError as exc:
            return exc.to_dict()
        except Exception:
            logger.exception("request %s failed", request.request_id)
            return internal_error()
