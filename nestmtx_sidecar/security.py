"""Passwords, access tokens, secrets at rest, and redaction of secrets from text."""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Hashable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from cryptography.fernet import Fernet, InvalidToken

from .errors import SecretUnreadable

# scrypt as OWASP recommends (N=2^15, r=8, p=1): about 30 ms and 32 MiB per hash.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


def safe_url(text: str) -> str:
    """`text` with the user:password of any URL in it left out, for logs and messages."""
    return re.sub(r"//[^/@\s]*@", "//", text)


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


def bearer(header: str) -> str | None:
    """The credential of `Authorization: Bearer <x>` (maybe ""); None for another scheme."""
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


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
        """The plaintext; SecretUnreadable when this app key did not encrypt it."""
        if ciphertext is None:
            return None
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise SecretUnreadable(
                "A stored secret cannot be decrypted: NESTMTX_APP_KEY is not the key it was "
                "encrypted with (the app key changed)") from None


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


# How many values `add` and `hold` remember, oldest out past it. The live ones are few: about
# three per Nest RTSP camera (stream URL, stream and extension token) and three per credential
# (client secret, refresh and access token), each forgotten when replaced; 4,096 covers over a
# thousand cameras, while values nobody forgets cost at most a few MB.
REMEMBERED = 4096
# Values are indexed by their last characters (8: a random tail for tokens; the prefixes of
# stream URLs and Google tokens are shared by all of them). Shorter values by all of theirs.
_KEY = 8


class Redactor:
    """Removes known secrets and secret-shaped strings from text.

    Known values are found without a regex of all of them: every substring of the text as
    long as an index key is looked up in a dict, so adding a value and redacting a line cost
    the same whether 100 or 50,000 values are remembered. Any value, however
    short, is redacted once it is given. Thread-safe: log records are redacted in any thread.
    """

    def __init__(self, capacity: int = REMEMBERED) -> None:
        self._capacity = capacity
        self._pinned: set[str] = set()
        self._loose: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._slots: collections.OrderedDict[Hashable, frozenset[str]] = (
            collections.OrderedDict())
        self._holders: dict[str, int] = {}  # how many of pinned, loose and slots hold a value
        self._index: dict[str, tuple[str, ...]] = {}  # key (value's tail) -> values
        self._key_lengths: collections.Counter[int] = collections.Counter()
        self._lock = threading.Lock()

    def pin(self, *values: str | None) -> None:
        """Remember values for the life of the process (configured secrets): never dropped."""
        with self._lock:
            for value in _given(values):
                if value not in self._pinned:
                    self._pinned.add(value)
                    self._retain(value)

    def add(self, *values: str | None) -> None:
        """Remember values (tokens, secrets) to scrub; the oldest go past the capacity."""
        with self._lock:
            for value in _given(values):
                if value in self._loose:
                    self._loose.move_to_end(value)
                    continue
                self._loose[value] = None
                self._retain(value)
                if len(self._loose) > self._capacity:
                    self._release(self._loose.popitem(last=False)[0])

    def hold(self, slot: Hashable, *values: str | None) -> None:
        """Remember `values` as what `slot` (one camera's stream, one credential) holds now,
        forgetting what it held before unless another slot still holds it: a replaced token
        is not remembered for ever."""
        fresh = frozenset(_given(values))
        with self._lock:
            before = self._slots.pop(slot, frozenset())
            self._slots[slot] = fresh
            for value in fresh:  # first, so a value held on never leaves the index
                self._retain(value)
            for value in before:
                self._release(value)
            if len(self._slots) > self._capacity:
                for value in self._slots.popitem(last=False)[1]:
                    self._release(value)

    def __len__(self) -> int:
        """How many distinct values are remembered."""
        return len(self._holders)

    def __call__(self, text: str) -> str:
        text = self._scrub_known(text)
        for pattern in _PATTERNS:
            text = pattern.sub(_keep_prefix, text)
        return text

    def _retain(self, value: str) -> None:  # caller holds the lock
        held = self._holders.get(value, 0)
        self._holders[value] = held + 1
        if held == 0:
            key = value[-_KEY:]
            self._index[key] = (*self._index.get(key, ()), value)
            self._key_lengths[len(key)] += 1

    def _release(self, value: str) -> None:  # caller holds the lock
        held = self._holders.pop(value) - 1
        if held:
            self._holders[value] = held
            return
        key = value[-_KEY:]
        rest = tuple(v for v in self._index[key] if v != value)
        if rest:
            self._index[key] = rest
        else:
            del self._index[key]
        self._key_lengths[len(key)] -= 1
        if not self._key_lengths[len(key)]:
            del self._key_lengths[len(key)]

    def _scrub_known(self, text: str) -> str:
        spans: list[tuple[int, int]] = []
        with self._lock:
            find = self._index.get
            for length in self._key_lengths:
                for end in range(length, len(text) + 1):
                    for value in find(text[end - length:end], ()):
                        start = end - len(value)
                        if start >= 0 and text.startswith(value, start):
                            spans.append((start, end))
        if not spans:
            return text
        # Overlapping matches (a value inside another, or two overlapping) become one.
        spans.sort()
        parts: list[str] = []
        done = 0
        for start, end in spans:
            if start >= done:
                parts += (text[done:start], REDACTED)
            done = max(done, end)
        parts.append(text[done:])
        return "".join(parts)


def _given(values: Iterable[str | None]) -> Iterator[str]:
    return (value for value in values if value)


def _keep_prefix(match: re.Match[str]) -> str:
    prefix = match.group(1) if match.re.groups else ""
    return prefix + REDACTED
