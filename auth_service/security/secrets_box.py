"""Secrets we must read back (TOTP seeds), encrypted at rest with a configured Fernet key."""

from __future__ import annotations

from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from authgate_common.secrets_file import read_or_create

DEV_KEY_NAME = "mfa-fernet.key"


def is_fernet_key(value: str) -> bool:
    """Whether `value` is a usable Fernet key (urlsafe base64 of 32 bytes)."""
    try:
        Fernet(value.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return False
    return True


class SecretBox:
    """Encrypts and decrypts small secrets; the ciphertext is authenticated (AES-CBC + HMAC)."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def load(cls, configured_key: str | None, dev_key_dir: Path) -> SecretBox:
        """The configured key, or a key generated once under `dev_key_dir` (embedded default)."""
        if configured_key:
            return cls(configured_key.encode("ascii"))
        return cls(read_or_create(dev_key_dir / DEV_KEY_NAME, Fernet.generate_key))

    def encrypt(self, plaintext: str) -> str:
        """The ciphertext as ASCII text, for a database column."""
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        """The plaintext; ValueError when the ciphertext was not made with this key."""
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise ValueError("the secret was encrypted with another MFA_ENCRYPTION_KEY") from None
