"""The service's error hierarchy; each door maps it to its wire form in one place."""

from __future__ import annotations

from typing import Any


class SidecarError(Exception):
    """An error a client caused or may act on; its message is safe to show."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, details: list[Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "code": self.code, "details": self.details}}


class BadRequest(SidecarError):
    status, code = 400, "bad_request"


class Unauthorized(SidecarError):
    status, code = 401, "unauthorized"


class Forbidden(SidecarError):
    status, code = 403, "forbidden"


class NotFound(SidecarError):
    status, code = 404, "not_found"


class Conflict(SidecarError):
    status, code = 409, "conflict"


class Invalid(SidecarError):
    status, code = 422, "invalid"


class TooManyRequests(SidecarError):
    """Refused for now; `retry_after` says in how many seconds to try again."""

    status, code = 429, "too_many_requests"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(f"{message}: try again in {retry_after} s",
                         [{"retry_after": retry_after}])
        self.retry_after = retry_after


class Unavailable(SidecarError):
    status, code = 503, "unavailable"


def internal_error() -> dict[str, Any]:
    """The reply for a bug: says nothing about its cause (that goes to the log)."""
    return {"error": {"message": "Internal error", "code": "internal", "details": []}}


def field_error(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}
