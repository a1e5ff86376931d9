"""Helpers for the OAuth tests: registered clients (rows), PKCE, and the authorize pages."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy

from auth_service.db.base import utcnow
from auth_service.db.models import OAuthClient

REDIRECT_URI = "https://app.example.com/callback"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_MFA_TOKEN = re.compile(r'name="mfa_token" value="([^"]+)"')


@dataclass(frozen=True)
class RegisteredClient:
    """A client row we inserted, with its secret in clear (None for a public client)."""

    client_id: str
    client_secret: str | None


def register_client(
    database_url: str,
    *,
    client_type: str = "confidential",
    redirect_uris: tuple[str, ...] = (REDIRECT_URI,),
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token"),
    scopes: tuple[str, ...] = ("openid", "profile", "email", "offline_access"),
) -> RegisteredClient:
    """Insert a client as the admin API would (secret kept as hex SHA-256)."""
    client_id = f"client-{uuid.uuid4().hex[:12]}"
    secret = secrets.token_urlsafe(32) if client_type == "confidential" else None
    engine = sqlalchemy.create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.insert(OAuthClient).values(
                id=uuid.uuid4(),
                client_id=client_id,
                client_secret_hash=hashlib.sha256(secret.encode()).hexdigest() if secret else None,
                name="Sample <App>",
                client_type=client_type,
                redirect_uris=list(redirect_uris),
                grant_types=list(grant_types),
                scopes=list(scopes),
                created_at=utcnow(),
                updated_at=utcnow(),
            )
        )
    engine.dispose()
    return RegisteredClient(client_id, secret)


def pkce_pair() -> tuple[str, str]:
    """A code verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_query(client_id: str, challenge: str, **extra: Any) -> dict[str, str]:
    """An authorization request with PKCE S256, state and nonce."""
    return {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid email profile",
        "state": "state-123",
        "nonce": "nonce-456",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }


def csrf_token(page: str) -> str:
    """The hidden csrf_token of a page's form."""
    found = _CSRF.search(page)
    assert found, page
    return found.group(1)


def mfa_token(page: str) -> str:
    """The hidden mfa_token of the MFA page."""
    found = _MFA_TOKEN.search(page)
    assert found, page
    return found.group(1)


def assert_page_headers(headers: Any) -> None:
    """What every sign-in page must send (the pages contract)."""
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
