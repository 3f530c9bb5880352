"""Secrets at rest, encrypted with the app key."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from ..errors import SecretUnreadable


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

