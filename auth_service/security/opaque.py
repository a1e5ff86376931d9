"""Opaque bearer secrets (refresh and password-reset tokens): made random, stored hashed."""

from __future__ import annotations

import hashlib
import secrets


def new_token() -> str:
    """A fresh token of 256 random bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """The hex SHA-256 that the database keeps instead of the token itself."""
    return hashlib.sha256(token.encode("utf-8", errors="surrogatepass")).hexdigest()
