"""Access tokens: made, read from an `Authorization` header, and stored as digests."""

from __future__ import annotations

import hashlib
import secrets

# Every token begins with this: one that began with "-" (1 in 64 of bare urlsafe base64)
# would be taken for an option by a command line (`nestmtx-sidecar events --token ...`).
TOKEN_PREFIX = "nmx_"


def new_token() -> str:
    """An opaque bearer token: 256 random bits after TOKEN_PREFIX."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def bearer(header: str) -> str | None:
    """The credential of `Authorization: Bearer <x>` (maybe ""); None for another scheme."""
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def token_digest(token: str) -> str:
    """What the store keeps of a token: a lookup key that cannot be used to log in."""
    return hashlib.sha256(token.encode()).hexdigest()

