"""How our objects look on the wire (the spec's schemas)."""

from __future__ import annotations

from typing import Any

from auth_service.db.models import OAuthClient, User
from auth_service.services.sessions import TokenPair

TOKEN_RESPONSE_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def user_json(user: User) -> dict[str, Any]:
    """The User schema; never the password hash."""
    return {
        "id": str(user.id),
        "email": user.email,
        "full_name": user.full_name,
        "is_active": user.is_active,
        "is_superuser": user.is_superuser,
        "mfa_enabled": user.mfa_enabled,
        "email_verified": user.email_verified,
        "created_at": user.created_at.isoformat(),
        "updated_at": user.updated_at.isoformat(),
    }


def token_pair_json(pair: TokenPair) -> dict[str, Any]:
    """The TokenPair schema (RFC 6749 §5.1 names)."""
    return {
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "token_type": "bearer",
        "expires_in": pair.expires_in,
    }


def oauth_client_json(client: OAuthClient) -> dict[str, Any]:
    """The OAuthClient schema; never the secret or its hash."""
    return {
        "client_id": client.client_id,
        "name": client.name,
        "client_type": client.client_type,
        "redirect_uris": client.redirect_uris,
        "grant_types": client.grant_types,
        "scopes": client.scopes,
        "created_at": client.created_at.isoformat(),
        "updated_at": client.updated_at.isoformat(),
    }
