"""The `details` of camera events, built in one place, so a reader's credentials never go out.

A reader's query reaches every subscriber, MQTT and the logs; MediaMTX readers put their
credentials there (`?jwt=` for MediaMTX's own JWT auth, `?password=`), so the values of
such parameters read REDACTED. Everything else stays byte for byte: MediaMTX passes the
query raw before v1.18.1 and `url.QueryEscape`d since, so `&`/`=` may also be `%26`/`%3D`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_plus

from ..modules.cameras import CameraRef

REDACTED = "REDACTED"
READER_SECRETS = frozenset({"jwt", "token", "access_token", "auth", "password", "pass",
                            "passwd", "secret", "key", "sig", "signature"})
# (pair separator, name-value separator) of a raw query, and of an escaped one (in which a
# raw `%26` is `%2526`, so a value's own escaped `&` never splits it).
_RAW = re.compile("(&)"), re.compile("(.*?)=", re.DOTALL)
_ESCAPED = re.compile("(%26)", re.IGNORECASE), re.compile("(.*?)%3D", re.IGNORECASE | re.DOTALL)
_DECODINGS = 3  # `%2570` of a twice-encoded name still means `p`


def camera_details(path: str, camera: CameraRef | None, query: str = "",
                   **extra: Any) -> dict[str, Any]:
    """`{path, query, name, enabled}` plus the event's own fields."""
    return {"path": path, "query": redact_query(query),
            "name": camera.name if camera else None,
            "enabled": camera.enabled if camera else False, **extra}


def redact_query(query: str) -> str:
    """The query with the value of every credential parameter (any case) replaced."""
    separator, name_end = _RAW if "&" in query or "=" in query else _ESCAPED
    parts = separator.split(query)  # pairs at even indexes, separators kept between them
    for index in range(0, len(parts), 2):
        pair = name_end.match(parts[index])
        if pair and _parameter_name(pair[1]) in READER_SECRETS:
            parts[index] = pair[0] + REDACTED
    return "".join(parts)


def _parameter_name(raw: str) -> str:
    name = raw
    for _ in range(_DECODINGS):
        decoded = unquote_plus(name)
        if decoded == name:
            break
        name = decoded
    return name.strip().lower()
