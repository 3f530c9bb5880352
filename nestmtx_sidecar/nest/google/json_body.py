"""Google's answers read safely: a proxy or outage page is not JSON, an error may be a list."""

from __future__ import annotations

from typing import Any

import httpx


def json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The body as a JSON object: {} for JSON of another shape, None when it is not JSON."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else {}
