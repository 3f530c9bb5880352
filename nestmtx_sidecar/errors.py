"""The service's one error tree; each door turns it into its wire form in one place.

    SidecarError                 root: a message safe to show, `details`, its wire status/code
    ├── BadRequest, Unauthorized, Forbidden, NotFound, Conflict, Invalid, TooManyRequests,
    │   Unavailable              what a request is answered with
    ├── SecretUnreadable         a stored secret does not decrypt with this app key
    ├── ConfigError              a setting is wrong: the process does not start
    ├── DatabaseUnreachable      a command line tool cannot reach or read the database
    ├── PublisherError           a WebRTC camera's stream could not be published to MediaMTX
    └── GoogleError              a call to Google (OAuth, SDM, Pub/Sub) failed
        ├── GoogleAuthError      no usable token, 401/403, invalid_grant, a missing scope
        ├── GoogleApiError       another error answer: GoogleNotFound, GoogleInvalidArgument,
        │                        GoogleFailedPrecondition, GoogleAlreadyExists, GoogleRateLimited
        ├── GoogleUnreachable    5xx, timeouts, refused connections, unusable answers: retry
        └── QuotaExhausted       our own limiter found no slot before the deadline

Only `status` and `code` reach the wire with the message; doors add their own headers.
"""

from __future__ import annotations

from typing import Any


class SidecarError(Exception):
    """An error the service raises on purpose; its message is safe to show."""

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


class SecretUnreadable(SidecarError):
    """A secret stored encrypted does not decrypt: NESTMTX_APP_KEY is not the key it was
    encrypted with. A conflict of the stored state, which re-entering the secret resolves."""

    status, code = 409, "secret_unreadable"


class ConfigError(SidecarError):
    """A setting (file or NESTMTX_* variable) is wrong; the message names it."""

    status, code = 500, "config"


class DatabaseUnreachable(SidecarError):
    status, code = 503, "database_unreachable"


class PublisherError(SidecarError):
    """A WebRTC session could not be established (bad answer, no keyframe, RTSP refused)."""

    status, code = 503, "unavailable"


class GoogleError(SidecarError):
    """A failed call to Google. `reason` is the machine code sent to subscribers: Google's
    status (`failed_precondition`, `invalid_grant`), else the kind's own."""

    status, code = 502, "google_error"
    retryable = False
    default_reason = "google_error"

    def __init__(self, message: str, google_status: str = "", http_status: int = 0) -> None:
        super().__init__(message)
        self.google_status = google_status  # e.g. NOT_FOUND, invalid_grant; "" if none came
        self.http_status = http_status  # Google's answer; 0 if none came

    @property
    def reason(self) -> str:
        return (self.google_status or self.default_reason).lower()


class GoogleAuthError(GoogleError):
    """Google does not accept the credential: no usable access token, 401/403, a refused
    grant or code; re-authorizing (or granting access) is the way out."""

    default_reason = "unauthenticated"

    @property
    def missing_scope(self) -> bool:
        """A 403 for a scope the grant lacks (e.g. Pub/Sub): the consent must be given again."""
        return self.http_status == 403 and "scope" in self.message.lower()


class GoogleApiError(GoogleError):
    """Google answered a call with an error (`google_status`, `http_status`)."""


class GoogleNotFound(GoogleApiError):
    """404: the device, project, topic or subscription does not exist for this credential."""


class GoogleInvalidArgument(GoogleApiError):
    """400 INVALID_ARGUMENT."""


class GoogleFailedPrecondition(GoogleApiError):
    """400 FAILED_PRECONDITION, e.g. a stream that has expired or cannot be extended."""


class GoogleAlreadyExists(GoogleApiError):
    """409 ALREADY_EXISTS (Pub/Sub: the topic or subscription is there already)."""


class GoogleRateLimited(GoogleApiError):
    """429 RESOURCE_EXHAUSTED from Google, or our own pause after one."""


class GoogleUnreachable(GoogleError):
    """5xx, timeouts, refused connections, answers that are not JSON: worth another try."""

    status, code = 504, "google_unreachable"
    retryable = True
    default_reason = "unavailable"


class QuotaExhausted(GoogleError):
    """Our own limiter found no slot before the caller's deadline: Google was not called."""

    status, code = 503, "quota_exhausted"
    default_reason = "quota"

    def __init__(self, retry_after: float | None) -> None:
        when = f"in {retry_after:.1f} s" if retry_after is not None else "after queued calls"
        super().__init__(f"Google's command quota is used up; a slot frees {when}")
        self.retry_after = retry_after


def internal_error() -> dict[str, Any]:
    """The reply for a bug: says nothing about its cause (that goes to the log)."""
    return {"error": {"message": "Internal error", "code": "internal", "details": []}}


def field_error(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}
