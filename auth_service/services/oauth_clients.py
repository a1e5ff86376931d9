"""OAuth clients: the registry of applications that sign their users in with us (admin API).

A client's `client_id` is public. A confidential client also gets a secret of 256 random
bits, shown once (at creation or rotation) and kept only as its SHA-256 hex digest: with
that much entropy a slow hash adds nothing, and the protocol server checks it with
`verify_client_secret`. Registration rules follow RFC 9700 (exact redirect URIs, no
implicit or password grant) and RFC 8252 (native apps); README "OAuth clients".
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from auth_service import errors
from auth_service.db.models import OAuthClient, User
from auth_service.services import audit
from auth_service.services.audit import ClientInfo, EventType
from auth_service.services.revocation import RevocationList, revoke_client_sessions

CLIENT_TYPES = ("confidential", "public")
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
# The OpenID Connect scopes; API scopes come from OAUTH_API_SCOPES (settings.py).
OIDC_SCOPES = ("openid", "profile", "email", "offline_access")
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
SCOPE_TOKEN = re.compile(r"[!#-\[\]-~]+")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
CLIENT_ID_BYTES = 16  # 22 URL-safe characters
CLIENT_SECRET_BYTES = 32  # 256 bits, 43 URL-safe characters

_PRINTABLE_ASCII = re.compile(r"[!-~]+")
_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")

# (field, code, message): one broken registration rule (errors.InvalidClientMetadata).
FieldProblem = tuple[str, str, str]


@dataclass(frozen=True)
class ClientMetadata:
    """What an admin may set on a client, at creation and by replacing it (PUT)."""

    name: str
    redirect_uris: list[str]
    grant_types: list[str]
    scopes: list[str]


@dataclass(frozen=True)
class IssuedClient:
    """A client and its secret in clear: only right after creation or rotation."""

    client: OAuthClient
    client_secret: str | None


def parse_scopes(raw: str) -> tuple[str, ...]:
    """Scopes written space- or comma-separated (OAUTH_API_SCOPES), blanks dropped, in order."""
    found: list[str] = []
    for scope in re.split(r"[\s,]+", raw.strip()):
        if scope and scope not in found:
            found.append(scope)
    return tuple(found)


def hash_client_secret(secret: str) -> str:
    """What the database keeps instead of a client secret: its SHA-256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def verify_client_secret(client: OAuthClient, secret: str) -> bool:
    """Whether `secret` is this confidential client's secret (a public client has none).

    SECURITY: compares the digests in constant time, so the answer's timing tells nothing
    about how much of a guess was right.
    """
    if client.client_secret_hash is None:
        return False
    return hmac.compare_digest(hash_client_secret(secret), client.client_secret_hash)


class OAuthClientService:
    """Create, list, read, replace, delete clients and rotate secrets (admins only)."""

    def __init__(
        self,
        sessions: sessionmaker[DbSession],
        *,
        api_scopes: Iterable[str],
        revocations: RevocationList,
    ) -> None:
        self._sessions = sessions
        self._revocations = revocations
        self.allowed_scopes = tuple(dict.fromkeys([*OIDC_SCOPES, *api_scopes]))

    def create_client(
        self,
        actor: User,
        client_type: str,
        metadata: ClientMetadata,
        origin: ClientInfo | None = None,
    ) -> IssuedClient:
        """Register a client (admin only); a confidential one's secret is in the answer."""
        _require_admin(actor)
        return self.register(client_type, metadata, actor_id=actor.id, origin=origin)

    def register(
        self,
        client_type: str,
        metadata: ClientMetadata,
        *,
        actor_id: uuid.UUID | None = None,
        origin: ClientInfo | None = None,
    ) -> IssuedClient:
        """Register a client; with no actor, the operator's CLI (no admin check)."""
        check_metadata(client_type, metadata, self.allowed_scopes)
        confidential = client_type == "confidential"
        secret = secrets.token_urlsafe(CLIENT_SECRET_BYTES) if confidential else None
        client = OAuthClient(
            id=uuid.uuid4(),
            # NOTE: 128 random bits; a collision would be a unique-index error (500), never
            # a silent overwrite.
            client_id=secrets.token_urlsafe(CLIENT_ID_BYTES),
            client_secret_hash=hash_client_secret(secret) if secret else None,
            client_type=client_type,
        )
        _apply(client, metadata)
        with self._sessions.begin() as db:
            db.add(client)
            _record(db, EventType.OAUTH_CLIENT_CREATED, client, actor_id, origin)
        return IssuedClient(client, secret)

    def list_clients(self, actor: User, offset: int, limit: int) -> tuple[list[OAuthClient], int]:
        """One page of clients in creation order, and the total count (admin only)."""
        _require_admin(actor)
        with self._sessions() as db:
            total = db.scalar(select(func.count()).select_from(OAuthClient)) or 0
            clients = list(
                db.scalars(
                    select(OAuthClient)
                    .order_by(OAuthClient.created_at, OAuthClient.id)
                    .offset(offset)
                    .limit(limit)
                )
            )
        return clients, total

    def get_client(self, actor: User, client_id: str) -> OAuthClient:
        """A client by its client_id (admin only)."""
        _require_admin(actor)
        client = self.find(client_id)
        if client is None:
            raise errors.OAuthClientNotFound("No OAuth client with this client_id.")
        return client

    def find(self, client_id: str) -> OAuthClient | None:
        """A client by its client_id, or None: for the protocol server (no actor)."""
        with self._sessions() as db:
            return db.scalars(
                select(OAuthClient).where(OAuthClient.client_id == client_id)
            ).one_or_none()

    def replace_client(
        self,
        actor: User,
        client_id: str,
        metadata: ClientMetadata,
        origin: ClientInfo | None = None,
    ) -> OAuthClient:
        """Replace what may change (name, redirect URIs, grants, scopes); admin only.

        `client_type` never changes: a public client turned confidential would have no
        secret, and a confidential one turned public would keep one it no longer uses.
        Register a new client instead.
        """
        _require_admin(actor)
        with self._sessions.begin() as db:
            client = _load_for_update(db, client_id)
            check_metadata(client.client_type, metadata, self.allowed_scopes)
            before = _metadata_of(client)
            _apply(client, metadata)
            changed = sorted(k for k, v in _metadata_of(client).items() if before[k] != v)
            _record(db, EventType.OAUTH_CLIENT_UPDATED, client, actor.id, origin, fields=changed)
        return client

    def delete_client(self, actor: User, client_id: str, origin: ClientInfo | None = None) -> None:
        """Delete a client (admin only): its client_id and secret stop working at once, and
        so do the sessions its grants opened (their refresh and access tokens)."""
        _require_admin(actor)
        with self._sessions.begin() as db:
            client = _load_for_update(db, client_id)
            revoked = revoke_client_sessions(db, client.client_id)
            _record(
                db, EventType.OAUTH_CLIENT_DELETED, client, actor.id, origin, revoked=len(revoked)
            )
            db.delete(client)
        self._revocations.publish(revoked)

    def rotate_secret(
        self, actor: User, client_id: str, origin: ClientInfo | None = None
    ) -> IssuedClient:
        """Give a confidential client a new secret (admin only); the old one stops working."""
        _require_admin(actor)
        secret = secrets.token_urlsafe(CLIENT_SECRET_BYTES)
        with self._sessions.begin() as db:
            client = _load_for_update(db, client_id)
            if client.client_type != "confidential":
                raise errors.OAuthClientIsPublic(
                    "A public client has no secret; it proves itself with PKCE."
                )
            client.client_secret_hash = hash_client_secret(secret)
            _record(
                db,
                EventType.OAUTH_CLIENT_UPDATED,
                client,
                actor.id,
                origin,
                fields=["client_secret"],
            )
        return IssuedClient(client, secret)


# RFC 8252 §7.3: a native app listens on a port the OS gives it at run time, so for a
# loopback IP literal the port is the one part of a redirect URI that may differ.
LOOPBACK_IPS = frozenset({"127.0.0.1", "::1"})


def redirect_uri_registered(registered: Iterable[str], requested: str) -> bool:
    """Whether `requested` is one of the registered redirect URIs.

    SECURITY: an exact string match (RFC 9700 §2.1), except that an `http` redirect to a
    loopback IP literal registered without a port matches that URI with any port (RFC
    8252 §7.3); scheme, host, path and query still match exactly. Not for `localhost`,
    which a hostile resolver could point elsewhere (RFC 8252 §8.3).
    """
    uris = set(registered)
    if requested in uris:
        return True
    try:
        parts = urlsplit(requested)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_IPS or port is None:
        return False
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if parts.netloc != f"{host}:{port}":  # no user info, one spelling of the address
        return False
    return parts._replace(netloc=host).geturl() in uris


def check_metadata(
    client_type: str, metadata: ClientMetadata, allowed_scopes: Iterable[str]
) -> None:
    """Refuse a registration that breaks a rule (422 naming every offending field)."""
    problems = metadata_problems(client_type, metadata, allowed_scopes)
    if problems:
        raise errors.InvalidClientMetadata(problems)


def metadata_problems(
    client_type: str, metadata: ClientMetadata, allowed_scopes: Iterable[str]
) -> list[FieldProblem]:
    """Every rule a client's metadata breaks beyond the spec's schema (empty: valid)."""
    return [
        *_grant_problems(client_type, metadata),
        *_redirect_problems(client_type, metadata),
        *_scope_problems(metadata, frozenset(allowed_scopes)),
    ]


def _grant_problems(client_type: str, metadata: ClientMetadata) -> list[FieldProblem]:
    grants = set(metadata.grant_types)
    problems = []
    if "client_credentials" in grants and client_type != "confidential":
        problems.append(
            "client_credentials is only for confidential clients (a public client cannot "
            "keep a secret)"
        )
    if "refresh_token" in grants and "authorization_code" not in grants:
        problems.append("refresh_token needs authorization_code (it refreshes a user's grant)")
    return [("grant_types", "grant-rule", message) for message in problems]


def _redirect_problems(client_type: str, metadata: ClientMetadata) -> list[FieldProblem]:
    redirects = "authorization_code" in metadata.grant_types
    if redirects and not metadata.redirect_uris:
        return [("redirect_uris", "required", "at least one is required with authorization_code")]
    if not redirects and metadata.redirect_uris:
        return [("redirect_uris", "unexpected", "only clients with authorization_code redirect")]
    return [
        (f"redirect_uris.{index}", "redirect-uri", problem)
        for index, uri in enumerate(metadata.redirect_uris)
        if (problem := redirect_uri_problem(uri, client_type)) is not None
    ]


def redirect_uri_problem(uri: str, client_type: str) -> str | None:
    """Why a redirect URI may not be registered, or None (RFC 9700 §2.1, RFC 8252 §7).

    Exact and absolute, no fragment; https, or http only to a loopback host (a native app
    listening on its own machine). Public clients (native apps) may also use a private-use
    scheme named after a domain they control, in reverse (`com.example.app:/callback`):
    RFC 8252 §7.1 allows it, and the reverse-domain form keeps out `javascript:`, `data:`
    and other schemes no app owns. Confidential clients are web servers: https only.
    """
    if not _PRINTABLE_ASCII.fullmatch(uri):
        return "must be printable ASCII without spaces (percent-encode the rest)"
    if "#" in uri:
        return "must not have a fragment (RFC 6749 §3.1.2)"
    if "*" in uri:
        return "must be exact: wildcards are not supported (RFC 9700 §2.1)"
    scheme, _, rest = uri.partition(":")
    if not rest or not _URI_SCHEME.fullmatch(scheme):
        return "must be an absolute URI (with a scheme)"
    scheme = scheme.lower()
    if scheme in ("https", "http"):
        return _web_redirect_problem(uri, scheme)
    if client_type == "confidential":
        return "must be https (http only on a loopback host) for a confidential client"
    if "." not in scheme:
        return "a private-use scheme must be a domain name in reverse, e.g. com.example.app"
    return None


def _web_redirect_problem(uri: str, scheme: str) -> str | None:
    try:
        parts = urlsplit(uri)
        host = parts.hostname
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError:
        return "has an invalid host or port"
    if not host:
        return "must name a host"
    if "@" in parts.netloc:
        return "must not contain user information"
    if scheme == "http" and host not in LOOPBACK_HOSTS:
        return "http is only for loopback hosts (127.0.0.1, [::1], localhost); use https"
    return None


def _scope_problems(metadata: ClientMetadata, allowed: frozenset[str]) -> list[FieldProblem]:
    user_grant = "authorization_code" in metadata.grant_types
    problems = []
    for index, scope in enumerate(metadata.scopes):
        if scope not in allowed:
            message = "is not offered here (OpenID Connect scopes and OAUTH_API_SCOPES)"
            problems.append((f"scopes.{index}", "unknown-scope", message))
        elif scope in OIDC_SCOPES and not user_grant:
            message = "is about a signed-in user: only with authorization_code"
            problems.append((f"scopes.{index}", "user-scope", message))
    return problems


def _apply(client: OAuthClient, metadata: ClientMetadata) -> None:
    client.name = metadata.name
    client.redirect_uris = list(metadata.redirect_uris)
    client.grant_types = list(metadata.grant_types)
    client.scopes = list(metadata.scopes)


def _metadata_of(client: OAuthClient) -> dict[str, object]:
    return {
        "name": client.name,
        "redirect_uris": list(client.redirect_uris),
        "grant_types": list(client.grant_types),
        "scopes": list(client.scopes),
    }


def _record(
    db: DbSession,
    event_type: EventType,
    client: OAuthClient,
    actor_id: uuid.UUID | None,
    origin: ClientInfo | None,
    fields: list[str] | None = None,
    revoked: int | None = None,
) -> None:
    """One audit event per registry change, in its transaction; the names of changed
    fields only (a new secret is `client_secret`, never its value)."""
    details: dict[str, object] = {"client_id": client.client_id}
    if fields is not None:
        details["fields"] = fields
    if revoked is not None:
        details["sessions_revoked"] = revoked
    audit.record(db, event_type, actor_id=actor_id, origin=origin, details=details)


def _require_admin(actor: User) -> None:
    if not actor.is_superuser:
        raise errors.Forbidden("Only an admin may manage OAuth clients.")


def _load_for_update(db: DbSession, client_id: str) -> OAuthClient:
    client = db.scalars(
        select(OAuthClient).where(OAuthClient.client_id == client_id).with_for_update()
    ).one_or_none()
    if client is None:
        raise errors.OAuthClientNotFound("No OAuth client with this client_id.")
    return client
