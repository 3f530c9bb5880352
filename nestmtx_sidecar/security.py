"""Passwords, access tokens, secrets at rest, and redaction of secrets from text."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from cryptography.fernet import Fernet, InvalidToken

# scrypt as OWASP recommends (N=2^15, r=8, p=1): about 30 ms and 32 MiB per hash.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return "$".join(("scrypt", str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P),
                     _b64(salt), _b64(digest)))


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        actual = _scrypt(password, _unb64(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, _unb64(digest))


class PasswordHasher:
    """Hashes and checks passwords off the event loop, in two threads of its own.

    Not the default pool: Google token refreshes run there, and a log-in flood (each check
    ~30-80 ms of CPU and 32 MiB) would delay them. Two workers also cap that memory at 64 MiB.
    """

    def __init__(self, workers: int = 2) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="password-hash")

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._pool, hash_password,
                                                                password)

    async def verify(self, password: str, stored: str) -> bool:
        return await asyncio.get_running_loop().run_in_executor(self._pool, verify_password,
                                                                password, stored)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p,
                          maxmem=_SCRYPT_MAXMEM, dklen=32)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_token() -> str:
    """An opaque bearer token: 256 random bits."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the store keeps of a token: a lookup key that cannot be used to log in."""
    return hashlib.sha256(token.encode()).hexdigest()


class SecretBox:
    """Encrypts secrets at rest with the app key (Fernet: AES-128-CBC + HMAC-SHA256)."""

    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key)

    def encrypt(self, plaintext: str | None) -> str | None:
        if plaintext is None:
            return None
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str | None) -> str | None:
        if ciphertext is None:
            return None
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise ValueError("secret cannot be decrypted: NESTMTX_APP_KEY changed?") from None


REDACTED = "[redacted]"

# Shapes of secrets that may appear in any text: bearer tokens, Google tokens,
# the auth= query of Nest RTSP URLs, and key=value pairs named like secrets.
_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"([?&]auth=)[^&\s\"']+"),
    re.compile(r"\bya29\.[A-Za-z0-9._-]+"),
    re.compile(r"\b1//[A-Za-z0-9._-]{10,}"),
    re.compile(r"\bGOCSPX-[A-Za-z0-9_-]+"),
    re.compile(
        r"(?i)(\b(?:access_token|refresh_token|client_secret|oauth_client_secret|password"
        r"|stream_token|streamToken|streamExtensionToken|token|bearer|code)\b[\"']?\s*[:=]\s*[\"']?)"
        r"[^\s\"'&,}]+"
    ),
]


class Redactor:
    """Removes known secrets and secret-shaped strings from text."""

    def __init__(self) -> None:
        self._known: set[str] = set()
        self._known_pattern: re.Pattern[str] | None = None

    def add(self, *values: str | None) -> None:
        """Remember exact secret values (hook secret, client secrets, tokens) to scrub."""
        fresh = {v for v in values if v and len(v) >= 6} - self._known
        if fresh:
            self._known |= fresh
            self._known_pattern = _alternation(self._known)

    def __call__(self, text: str) -> str:
        if self._known_pattern is not None:
            text = self._known_pattern.sub(REDACTED, text)
        for pattern in _PATTERNS:
            text = pattern.sub(_keep_prefix, text)
        return text


def _keep_prefix(match: re.Match[str]) -> str:
    prefix = match.group(1) if match.re.groups else ""
    return prefix + REDACTED


def _alternation(values: Iterable[str]) -> re.Pattern[str]:
    ordered = sorted(values, key=len, reverse=True)
    return re.compile("|".join(re.escape(v) for v in ordered))
