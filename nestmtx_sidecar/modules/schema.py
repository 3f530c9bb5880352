"""Request body declarations: one per command, used to validate payloads and to describe them.

A `Body` is a tuple of `Field`s. `Body.parse` turns a payload into clean values with the
service's error replies (one `Invalid` naming the first bad field); `Body.schema` is the same
declaration as JSON Schema for the OpenAPI document, so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import Invalid, field_error

Check = Callable[[Any], Any]
Kind = Literal["string", "boolean", "integer"]


def invalid(name: str, problem: str) -> Invalid:
    """The error for one bad field: `<name> <problem>`, with the problem as its detail."""
    return Invalid(f"{name} {problem}", [field_error(name, problem)])


def encodable(text: str) -> bool:
    """False for lone surrogates (valid in JSON escapes, not in UTF-8 or any database)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class Field:
    """One payload field: its JSON type and limits, and how a present value is checked.

    `check` validates and normalises a present value (raising `Invalid`) in place of the
    kind's own checks (and length limits); `schema_extra` then describes what it enforces.
    """

    name: str
    kind: Kind
    required: bool = False
    min_length: int = 1
    max_length: int = 255
    minimum: int | None = None
    maximum: int | None = None
    nullable: bool = False  # null is a value (it clears the field), not the field's absence
    pattern: str = ""  # a string must match it in full; `hint` says what it means
    hint: str = ""
    default: Any = None
    check: Check | None = None
    description: str = ""
    schema_extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def validate(self, value: Any) -> Any:
        if self.check is not None:
            return self.check(value)
        if value is None and self.nullable:  # a check decides what null means itself
            return None
        if self.kind == "string":
            return self._string(value)
        if self.kind == "boolean":
            if not isinstance(value, bool):
                raise Invalid(f"{self.name} must be true or false",
                              [field_error(self.name, "must be a boolean")])
            return value
        raise TypeError(f"field {self.name!r} of kind {self.kind!r} needs a check")

    def _string(self, value: Any) -> str:
        name = self.name
        if not isinstance(value, str):
            raise Invalid(f"{name} must be a string", [field_error(name, "must be a string")])
        if not self.min_length <= len(value) <= self.max_length:
            raise Invalid(f"{name} must be {self.min_length} to {self.max_length} characters long",
                          [field_error(name, "bad length")])
        if any(ord(ch) < 32 or ch == "\x7f" for ch in value) or not encodable(value):
            raise Invalid(f"{name} must not contain control characters or lone surrogates",
                          [field_error(name, "control characters")])
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise invalid(name, self.hint or f"must match {self.pattern}")
        return value

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": [self.kind, "null"] if self.nullable else self.kind}
        if self.kind == "string" and self.check is None:  # a check's limits are in schema_extra
            schema.update(minLength=self.min_length, maxLength=self.max_length,
                          pattern=f"^(?:{self.pattern})$" if self.pattern
                          else "^[^\\u0000-\\u001f\\u007f]*$")  # no control characters
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.default is not None:
            schema["default"] = self.default
        if self.description:
            schema["description"] = self.description
        return {**schema, **self.schema_extra}


@dataclass(frozen=True)
class Body:
    """A JSON object payload: these fields and no others, checked in the order declared."""

    fields: tuple[Field, ...]
    description: str = ""

    @property
    def names(self) -> set[str]:
        return {field.name for field in self.fields}

    def parse(self, payload: Any) -> dict[str, Any]:
        """The values present in a payload; `Invalid` at the first field that is wrong."""
        return self.values(self.shape(payload, self.names))

    @staticmethod
    def shape(payload: Any, allowed: set[str]) -> Mapping[str, Any]:
        """The payload as an object holding only `allowed` fields."""
        if not isinstance(payload, Mapping):
            raise Invalid("payload must be an object", [field_error("payload", "not an object")])
        unknown = sorted(str(key) for key in payload if key not in allowed)
        if unknown:
            raise Invalid(
                f"Unknown field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}",
                [field_error(key, "unknown field") for key in unknown],
            )
        return payload

    def values(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Each declared field that is present, validated; absent and null ones left out."""
        values = {}
        for field in self.fields:
            value = payload.get(field.name)
            if value is None and not (field.nullable and field.name in payload):
                if field.required:
                    raise Invalid(f"{field.name} is required",
                                  [field_error(field.name, "required")])
                continue
            values[field.name] = field.validate(value)
        return values

    def optional(self, *more: Field) -> Body:
        """The same fields, none required (an update), plus `more`."""
        fields = tuple(dataclasses.replace(field, required=False) for field in self.fields)
        return Body(fields + more, self.description)

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "object", "additionalProperties": False,
            "properties": {field.name: field.schema() for field in self.fields},
        }
        required = [field.name for field in self.fields if field.required]
        if required:
            schema["required"] = required
        if self.description:
            schema["description"] = self.description
        return schema


DATE_TIME: Mapping[str, Any] = {"type": "string", "format": "date-time"}


def record(properties: Mapping[str, Any], description: str = "") -> dict[str, Any]:
    """JSON Schema of a reply object that always has exactly these properties."""
    schema = {"type": "object", "additionalProperties": False, "required": list(properties),
              "properties": dict(properties)}
    return {**schema, "description": description} if description else schema


def nullable(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"anyOf": [dict(schema), {"type": "null"}]}
