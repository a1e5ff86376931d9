"""Access-token verification against the auth service's JWKS, with a verified-token cache."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any

import requests
from jose import jwk, jwt
from jose.backends.base import Key
from jose.exceptions import ExpiredSignatureError, JOSEError

from authgate_common.claims import InvalidClaims, caller
from gateway_service.settings import Settings

log = logging.getLogger(__name__)

REVOKED_SID_PREFIX = "authgate:revoked-sid:"
_REQUIRED_CLAIMS = ("exp", "iat", "nbf", "iss", "aud", "sub", "jti")


class TokenError(Exception):
    """The presented token is not acceptable; `description` is safe to show the client."""

    def __init__(self, description: str) -> None:
        """Keep the fixed, client-safe description."""
        super().__init__(description)
        self.description = description


class KeysUnavailable(Exception):
    """The JWKS could not be fetched, so no token can be checked right now."""


@dataclass(frozen=True, slots=True)
class Identity:
    """The verified caller (a user, an app acting for a user, or an app on its own).

    PERF: built once per token and cached with it, so what a request needs of it is
    ready: the rate-limit `bucket` and the identity headers upstreams get.
    """

    user_id: str | None  # None: a client-credential token (no user, no session)
    session_id: str | None
    role: str | None
    client_id: str | None  # None: a first-party token
    scopes: frozenset[str]
    expires_at: float
    bucket: str  # "user:<id>" or "client:<id>": whose rate-limit budget a request uses
    # X-User-Id/-Roles, X-Session-Id for users; X-Client-Id, X-Scopes for OAuth tokens.
    headers: dict[str, str]  # NOTE: never changed after _identity builds it


class JwksKeys:
    """Signing keys by kid from the JWKS; an unknown kid refetches at most once per interval."""

    def __init__(
        self,
        settings: Settings,
        session: requests.Session,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Prepare; keys are fetched on first use."""
        self._url = settings.effective_jwks_url
        self._algorithms = frozenset(settings.jwt_algorithms)
        self._min_refresh = settings.jwks_min_refresh_seconds
        self._max_age = settings.jwks_max_age_seconds
        self._timeout = (settings.connect_timeout, min(settings.read_timeout, 5.0))
        self._session = session
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[str, Key]] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None

    def get(self, kid: str) -> tuple[str, Key] | None:
        """Return (algorithm, key) for kid, refreshing the set when allowed."""
        found = self._keys.get(kid)
        if found is not None and not self._stale():
            return found
        with self._lock:
            found = self._keys.get(kid)
            if found is not None and not self._stale():
                return found
            now = self._clock()
            # Until the first successful fetch, retry every second rather than every interval.
            interval = (
                self._min_refresh if self._fetched_at is not None else min(1.0, self._min_refresh)
            )
            if self._attempted_at is None or now - self._attempted_at >= interval:
                self._attempted_at = now
                self._refresh()
            if self._fetched_at is None:
                raise KeysUnavailable
            return self._keys.get(kid)

    def prefetch(self) -> bool:
        """Try to load the keys now (start-up); True when they are loaded."""
        try:
            self.get("")
        except KeysUnavailable:
            return False
        return True

    def _stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at > self._max_age

    def _refresh(self) -> None:
        try:
            response = self._session.get(self._url, timeout=self._timeout)
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as ex:
            # NOTE: keep serving with the keys we have; the next unknown kid retries later.
            log.warning("JWKS fetch from %s failed: %s", self._url, type(ex).__name__)
            return
        keys: dict[str, tuple[str, Key]] = {}
        for entry in document.get("keys", []) if isinstance(document, dict) else []:
            parsed = self._parse_key(entry)
            if parsed is not None:
                keys[entry["kid"]] = parsed
        self._keys = keys
        self._fetched_at = self._clock()

    def _parse_key(self, entry: Any) -> tuple[str, Key] | None:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            return None
        if entry.get("use", "sig") != "sig":
            return None
        alg = entry.get("alg") or _default_alg(entry)
        # SECURITY: a key only ever verifies the algorithm we pinned and it declares.
        if alg not in self._algorithms:
            return None
        try:
            return alg, jwk.construct(entry, algorithm=alg)
        except JOSEError:
            log.warning("JWKS entry %s could not be loaded", entry.get("kid"))
            return None


def _default_alg(entry: dict[str, Any]) -> str | None:
    if entry.get("kty") == "RSA":
        return "RS256"
    if entry.get("kty") == "EC":
        return {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}.get(entry.get("crv", ""))
    return None


class TokenVerifier:
    """Verifies access JWTs: pinned algorithms, iss, aud, exp, nbf, required claims, and
    that the session is not among the `revoked` ones the auth service reported."""

    def __init__(
        self,
        settings: Settings,
        keys: JwksKeys | None,
        clock: Callable[[], float] = time.time,
        revoked: Container[str] = frozenset(),
    ) -> None:
        """Keep the verification parameters; `keys` is None for HS256."""
        self._algorithms = list(settings.jwt_algorithms)
        # Used only without `keys`: create_app passes None exactly for HS256.
        self._secret = settings.jwt_secret
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._keys = keys
        self._clock = clock
        self._options: dict[str, bool | int] = {
            f"require_{claim}": True for claim in _REQUIRED_CLAIMS
        }
        self._options.update(verify_at_hash=False, leeway=settings.jwt_leeway_seconds)
        self._cache: OrderedDict[str, Identity] = OrderedDict()
        self._cache_size = settings.token_cache_size
        self._cache_lock = threading.Lock()
        self._revoked = revoked

    def verify(self, token: str) -> Identity:
        """Return the caller's identity or raise TokenError / KeysUnavailable."""
        # PERF: a token seen before is trusted until its exp; its session is checked anyway.
        identity = self._cache.get(token)
        if identity is not None and identity.expires_at <= self._clock():
            self._forget(token)
            identity = None
        if identity is None:
            identity = self._decode(token)
            self._remember(token, identity)
        # SECURITY: the feed's list (every mode); Redis, when set, is checked by the proxy.
        # A client-credential token has no session to revoke (session_id None): it is
        # short-lived, and its client can be removed, which stops new ones being issued.
        if identity.session_id is not None and identity.session_id in self._revoked:
            raise TokenError("The session has been revoked")
        return identity

    def _decode(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except JOSEError:
            raise TokenError("The access token is malformed") from None
        alg = header.get("alg")
        if alg not in self._algorithms:
            raise TokenError("The access token is invalid")
        key: Any = self._secret
        if self._keys is not None:
            kid = header.get("kid")
            found = self._keys.get(kid) if isinstance(kid, str) else None
            if found is None or found[0] != alg:
                raise TokenError("The access token is invalid")
            key = found[1]
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                options=self._options,
            )
        except ExpiredSignatureError:
            raise TokenError("The access token expired") from None
        except (JOSEError, ValueError, TypeError):
            raise TokenError("The access token is invalid") from None
        return _identity(claims)

    def _remember(self, token: str, identity: Identity) -> None:
        if self._cache_size <= 0:
            return
        with self._cache_lock:
            self._cache[token] = identity
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _forget(self, token: str) -> None:
        with self._cache_lock:
            self._cache.pop(token, None)


def _identity(claims: dict[str, Any]) -> Identity:
    exp = claims.get("exp")
    if not isinstance(exp, int | float):
        raise TokenError("The access token is invalid")
    try:
        who = caller(claims)
    except InvalidClaims:
        raise TokenError("The access token is invalid") from None
    headers: list[tuple[str, str]] = []
    if who.user_id is not None and who.session_id is not None and who.role is not None:
        headers += [
            ("X-User-Id", who.user_id),
            ("X-User-Roles", who.role),
            ("X-Session-Id", who.session_id),
        ]
        bucket = f"user:{who.user_id}"
    elif who.client_id is not None:
        bucket = f"client:{who.client_id}"
    else:  # caller() names a user, a client, or both; never neither
        raise TokenError("The access token is invalid")
    if who.client_id is not None:
        headers += [("X-Client-Id", who.client_id), ("X-Scopes", " ".join(who.scopes))]
    return Identity(
        user_id=who.user_id,
        session_id=who.session_id,
        role=who.role,
        client_id=who.client_id,
        scopes=frozenset(who.scopes),
        expires_at=float(exp),
        bucket=bucket,
        headers=dict(headers),
    )
