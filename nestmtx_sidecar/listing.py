"""The NestMTX list payload: `{search, page, itemsPerPage, sortBy}`, validated."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import Invalid, field_error

DEFAULTS: dict[str, Any] = {"search": None, "page": 1, "itemsPerPage": 10, "sortBy": None}
MAX_ITEMS_PER_PAGE = 1000
MAX_PAGE = 1_000_000_000  # keeps OFFSET inside every database's integer range
MAX_SEARCH = 255
_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,10}")  # ASCII only: str.isdigit() also accepts "²"


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
        raw = {**DEFAULTS, **(payload or {})}
        errors = []
        search = raw["search"]
        if search is not None and not (isinstance(search, str) and len(search) <= MAX_SEARCH
                                       and encodable(search)):
            errors.append(field_error(
                "search", f"must be null or a string of at most {MAX_SEARCH} characters"))
        page = _whole_number(raw["page"])
        if page is None or not 1 <= page <= MAX_PAGE:
            errors.append(field_error("page", f"must be a whole number from 1 to {MAX_PAGE}"))
        per_page = _whole_number(raw["itemsPerPage"])
        if per_page is None or not (per_page == -1 or 1 <= per_page <= MAX_ITEMS_PER_PAGE):
            errors.append(field_error(
                "itemsPerPage", f"must be -1 (all) or a whole number from 1 to {MAX_ITEMS_PER_PAGE}"
            ))
        sort_by, sort_error = _sort_by(raw["sortBy"], sortable)
        if sort_error:
            errors.append(field_error("sortBy", sort_error))
        if errors:
            raise Invalid("Invalid list payload", errors)
        assert page is not None and per_page is not None
        return cls(search or None, page, per_page, sort_by)


def _whole_number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _WHOLE_NUMBER.fullmatch(value):
        return int(value)
    return None


def encodable(text: str) -> bool:
    """False for lone surrogates (valid in JSON escapes, not in UTF-8 or any database)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _sort_by(value: Any, sortable: Collection[str]) -> tuple[list[tuple[str, bool]], str | None]:
    """Accepts Vuetify's `[{key, order}]`, one such object, or `"key"` / `"key:desc"` strings."""
    if value in (None, "", []):
        return [], None
    if isinstance(value, str) and value.startswith(("[", "{")):
        try:
            value = json.loads(value)
        except ValueError:
            return [], "is not valid JSON"
    if isinstance(value, str):
        value = [dict(zip(("key", "order"), part.split(":", 1), strict=False))
                 for part in value.split(",")]
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list):
        return [], "must be a list of {key, order}"
    result = []
    allowed = ", ".join(sorted(sortable))
    for item in value:
        if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
            return [], "must be a list of {key, order}"
        order = item.get("order", "asc")
        if item["key"] not in sortable:
            return [], f"cannot sort by {item['key']!r}; sortable: {allowed}"
        if order not in ("asc", "desc"):
            return [], "order must be 'asc' or 'desc'"
        result.append((item["key"], order == "desc"))
    return result, None
