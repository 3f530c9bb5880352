"""The NestMTX list payload: `{search, page, itemsPerPage, sortBy}`, declared and validated."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import Invalid
from .schema import Field, encodable, invalid

MAX_ITEMS_PER_PAGE = 1000
MAX_PAGE = 1_000_000_000  # keeps OFFSET inside every database's integer range
MAX_SEARCH = 255
_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,10}")  # ASCII only: str.isdigit() also accepts "²"


def _whole_number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _WHOLE_NUMBER.fullmatch(value):
        return int(value)
    return None


def _search(value: Any) -> str | None:
    if value is not None and not (isinstance(value, str) and len(value) <= MAX_SEARCH
                                  and encodable(value)):
        raise invalid("search", f"must be null or a string of at most {MAX_SEARCH} characters")
    return value or None


def _page(value: Any) -> int:
    page = _whole_number(value)
    if page is None or not 1 <= page <= MAX_PAGE:
        raise invalid("page", f"must be a whole number from 1 to {MAX_PAGE}")
    return page


def _items_per_page(value: Any) -> int:
    per_page = _whole_number(value)
    if per_page is None or not (per_page == -1 or 1 <= per_page <= MAX_ITEMS_PER_PAGE):
        raise invalid("itemsPerPage",
                      f"must be -1 (all) or a whole number from 1 to {MAX_ITEMS_PER_PAGE}")
    return per_page


def _sort_by(value: Any, sortable: Collection[str]) -> list[tuple[str, bool]]:
    """Accepts Vuetify's `[{key, order}]`, one such object, or `"key"` / `"key:desc"` strings."""
    if value in (None, "", []):
        return []
    if isinstance(value, str) and value.startswith(("[", "{")):
        try:
            value = json.loads(value)
        except ValueError:
            raise invalid("sortBy", "is not valid JSON") from None
    if isinstance(value, str):
        value = [dict(zip(("key", "order"), part.split(":", 1), strict=False))
                 for part in value.split(",")]
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list):
        raise invalid("sortBy", "must be a list of {key, order}")
    result = []
    allowed = ", ".join(sorted(sortable))
    for item in value:
        if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
            raise invalid("sortBy", "must be a list of {key, order}")
        order = item.get("order", "asc")
        if item["key"] not in sortable:
            raise invalid("sortBy", f"cannot sort by {item['key']!r}; sortable: {allowed}")
        if order not in ("asc", "desc"):
            raise invalid("sortBy", "order must be 'asc' or 'desc'")
        result.append((item["key"], order == "desc"))
    return result


# Over HTTP the fields are the query string, so numbers may also come as digit strings.
SEARCH = Field("search", "string", nullable=True, check=_search,
               description="Case-insensitive substring to look for (`%` and `_` are literal).",
               schema_extra={"maxLength": MAX_SEARCH})
PAGE = Field("page", "integer", minimum=1, maximum=MAX_PAGE, default=1, check=_page,
             description="The page to return, counted from 1.")
ITEMS_PER_PAGE = Field(
    "itemsPerPage", "integer", minimum=-1, maximum=MAX_ITEMS_PER_PAGE, default=10,
    check=_items_per_page, schema_extra={"not": {"const": 0}},
    description=f"Items per page, 1 to {MAX_ITEMS_PER_PAGE}, or -1 for every item.")


def list_fields(sortable: Collection[str]) -> tuple[Field, ...]:
    """The list payload's fields for a module that sorts by `sortable`."""
    keys = sorted(sortable)
    sort_by = Field(
        "sortBy", "string", nullable=True, check=functools.partial(_sort_by, sortable=sortable),
        description="Sort keys, `key` or `key:desc`, comma-separated (or the JSON text of "
        f"Vuetify's `[{{key, order}}]`). Sortable: {', '.join(keys)}.",
        schema_extra={"examples": [keys[0], f"{keys[0]}:desc"]} if keys else {})
    return SEARCH, PAGE, ITEMS_PER_PAGE, sort_by


DEFAULTS: dict[str, Any] = {"sortBy": None, **{
    declared.name: declared.default for declared in (SEARCH, PAGE, ITEMS_PER_PAGE)}}


@dataclass(frozen=True)
class ListQuery:
    search: str | None = None
    page: int = 1
    items_per_page: int = 10  # -1 means every item, as in Vuetify's data tables
    sort_by: list[tuple[str, bool]] = field(default_factory=list)  # (key, descending)

    def echo(self) -> dict[str, Any]:
        """The payload as NestMTX echoes it in the result, normalised (never raw input)."""
        return {"search": self.search, "page": self.page, "itemsPerPage": self.items_per_page,
                "sortBy": [{"key": key, "order": "desc" if descending else "asc"}
                           for key, descending in self.sort_by] or None}

    @classmethod
    def parse(cls, payload: Mapping[str, Any] | None, sortable: Collection[str]) -> ListQuery:
        """Every bad field is reported at once (unlike a body's first), as data tables show them."""
        raw = {**DEFAULTS, **(payload or {})}
        values, errors = {}, []
        for declared in list_fields(sortable):
            try:
                values[declared.name] = declared.validate(raw[declared.name])
            except Invalid as exc:
                errors.extend(exc.details)
        if errors:
            raise Invalid("Invalid list payload", errors)
        return cls(values["search"], values["page"], values["itemsPerPage"], values["sortBy"])


def page_schema(item: Mapping[str, Any]) -> dict[str, Any]:
    """JSON Schema of a list result whose items are `item`: the payload echoed, and a page."""
    echo = {declared.name: declared.schema() for declared in (SEARCH, PAGE, ITEMS_PER_PAGE)}
    echo["sortBy"] = {"type": ["array", "null"], "items": {
        "type": "object", "required": ["key", "order"], "additionalProperties": False,
        "properties": {"key": {"type": "string"}, "order": {"enum": ["asc", "desc"]}}}}
    return {"type": "object", "additionalProperties": False,
            "required": [*echo, "total", "items"],
            "properties": {**echo, "total": {"type": "integer", "minimum": 0},
                           "items": {"type": "array", "items": item}}}
