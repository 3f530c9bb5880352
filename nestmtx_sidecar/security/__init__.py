"""Passwords, tokens, secrets at rest, redaction, and what a failed log-in costs."""

from .passwords import PasswordHasher, hash_password, verify_password
from .redaction import REDACTED, REMEMBERED, Redactor, safe_url
from .secret_box import SecretBox
from .tokens import bearer, new_token, token_digest

__all__ = [
    "REDACTED",
    "REMEMBERED",
    "PasswordHasher",
    "Redactor",
    "SecretBox",
    "bearer",
    "hash_password",
    "new_token",
    "safe_url",
    "token_digest",
    "verify_password",
]
