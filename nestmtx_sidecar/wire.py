"""Bytes to and from clients: the one JSON encoder every door writes with, and the one
bounded body reader every route reads with."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from .errors import BadRequest, SidecarError


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON that survives lone surrogates: JSON may carry them as escapes,
    UTF-8 cannot.

    Error details echo client input, so `{"\\ud800": 1}` must come back as an error, not
    crash the encoder (and leave the client without a reply); `backslashreplace` writes
    exactly the JSON escape `\\ud800`.
    """
    return json.dumps(value, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode("utf-8", "backslashreplace")


class ApiResponse(JSONResponse):
    """A JSON reply written by `dumps`."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


class TooLarge(BadRequest):
    status, code = 413, "too_large"


async def read_body(request: Request, limit: int,
                    too_large: type[SidecarError] = TooLarge) -> bytes:
    """The body, refused as soon as it grows past `limit` (not after buffering it all)."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_large(f"Body larger than {limit} bytes")
    return await read_bounded(request.stream(), limit,
                              lambda: too_large(f"Body larger than {limit} bytes"))


async def read_bounded(chunks: AsyncIterable[bytes], limit: int,
                       overflow: Callable[[], Exception]) -> bytes:
    """A byte stream's bytes, refused with `overflow()` as soon as they pass `limit`."""
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise overflow()
        parts.append(chunk)
    return b"".join(parts)
