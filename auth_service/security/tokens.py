"""Access tokens: a key ring that signs JWTs, verifies them strictly and publishes a JWKS."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk, jws, jwt
from jose.backends.base import Key
from jose.exceptions import ExpiredSignatureError, JOSEError, JWTClaimsError

from authgate_common.claims import InvalidClaims, caller
from authgate_common.secrets_file import read_or_create

ALGORITHMS = ("RS256", "ES256", "HS256")
MIN_HS256_SECRET_BYTES = 32
MIN_RSA_KEY_BITS = 2048
# Far above any token we issue; bounds the work spent on hostile input.
MAX_TOKEN_LENGTH = 8192

# SECURITY: python-jose only checks claims it is told to require (require_exp is off by
# default), so every registered claim we rely on is required and verified explicitly.
_DECODE_OPTIONS = {
    "verify_signature": True,
    # NOTE: RFC 7519 §4.1.3: `aud` may be one string or an array; python-jose accepts the
    # token when ours is the string or among the array's strings, and refuses `[]`.
    "verify_aud": True,
    "verify_iat": True,
    "verify_exp": True,
    "verify_nbf": True,
    "verify_iss": True,
    "verify_sub": True,
    "verify_jti": True,
    "verify_at_hash": False,  # only meaningful for OIDC ID tokens
    "require_aud": True,
    "require_iat": True,
    "require_exp": True,
    "require_nbf": True,
    "require_iss": True,
    "require_sub": True,
    "require_jti": True,
    "require_at_hash": False,
}

_B64URL_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

_MESSAGES = {
    "malformed": "the token is not a well-formed JWS",
    "bad_algorithm": "the token's algorithm is not the one this service uses",
    "unknown_kid": "the token's key id is not known",
    "bad_signature": "the token's signature does not verify",
    "expired": "the token has expired",
    "bad_claims": "the token's claims are missing or invalid",
}


class InvalidTokenError(Exception):
    """An access token was refused; `code` is a stable short reason, never the token itself."""

    def __init__(self, code: str) -> None:
        """Build the error from its code alone, so no token content reaches logs."""
        self.code = code
        super().__init__(_MESSAGES.get(code, code))


def _b64url(data: bytes) -> str:
    """Encode base64url without padding (JOSE style)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url; raise ValueError for anything else."""
    if not text or len(text) % 4 == 1 or not set(text) <= _B64URL_ALPHABET:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_to_b64url(value: int, length: int | None = None) -> str:
    """Encode an unsigned integer big-endian, minimal or zero-padded to `length` bytes."""
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return _b64url(value.to_bytes(size, "big"))


def jwk_thumbprint(key: Mapping[str, Any]) -> str:
    """Return the RFC 7638 SHA-256 thumbprint (base64url) of a JWK's required members."""
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "oct": ("k", "kty")}
    members = required.get(key.get("kty", ""))
    if members is None:
        raise ValueError("unsupported JWK key type")
    canonical = json.dumps({m: key[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def public_jwk(
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, algorithm: str
) -> dict[str, Any]:
    """Return the public JWK of a key, with `kid` set to its RFC 7638 thumbprint."""
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        data: dict[str, Any] = {
            "kty": "RSA",
            "n": _int_to_b64url(numbers.n),
            "e": _int_to_b64url(numbers.e),
        }
    else:
        point = public_key.public_numbers()
        # RFC 7518 §6.2.1.2: coordinates are the full field size (32 bytes for P-256).
        data = {
            "kty": "EC",
            "crv": "P-256",
            "x": _int_to_b64url(point.x, 32),
            "y": _int_to_b64url(point.y, 32),
        }
    return {"kty": data["kty"], "kid": jwk_thumbprint(data), "use": "sig", "alg": algorithm, **data}


def _check_key_type(key: Any, algorithm: str, source: str) -> None:
    """Refuse a key that does not fit the algorithm (wrong family, weak size, wrong curve)."""
    if algorithm == "RS256":
        if not isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
            raise ValueError(f"{source}: RS256 needs an RSA key")
        if key.key_size < MIN_RSA_KEY_BITS:
            raise ValueError(f"{source}: RSA keys must have at least {MIN_RSA_KEY_BITS} bits")
    elif algorithm == "ES256":
        if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
            raise ValueError(f"{source}: ES256 needs an EC key")
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"{source}: ES256 needs a P-256 key")


def _generate_private_pem(algorithm: str) -> bytes:
    """Generate a new private key for `algorithm`, as unencrypted PKCS#8 PEM."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if algorithm == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=MIN_RSA_KEY_BITS)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_or_create_dev_key(directory: str | os.PathLike[str], algorithm: str) -> bytes:
    """Return the dev private key PEM at `<directory>/jwt-<alg>-private.pem`, creating it once.

    Several gunicorn workers may start at the same moment; read_or_create lets exactly one
    write the key and the others read it, never a partly written file.
    """
    path = Path(directory) / f"jwt-{algorithm.lower()}-private.pem"
    return read_or_create(path, lambda: _generate_private_pem(algorithm))


def _load_private_key(pem: bytes, algorithm: str, source: str) -> Any:
    """Parse an unencrypted private key PEM and check it fits the algorithm."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as ex:
        raise ValueError(f"{source}: not an unencrypted PEM private key") from ex
    _check_key_type(key, algorithm, source)
    return key


def _load_public_key(path: str, algorithm: str) -> Any:
    """Read a previous key's PEM (public, or private whose public half is used)."""
    pem = Path(path).read_bytes()
    try:
        key: Any = serialization.load_pem_public_key(pem)
    except ValueError:
        key = _load_private_key(pem, algorithm, path).public_key()
    _check_key_type(key, algorithm, path)
    return key


def _public_pem(public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    """Serialise a public key as SubjectPublicKeyInfo PEM (what python-jose accepts)."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class KeyRing:
    """The current signing key plus previous verification keys, with JWT issue/verify/JWKS."""

    def __init__(
        self,
        algorithm: str,
        signing_key: Key,
        kid: str,
        verification_keys: Mapping[str, Key],
        public_jwks: Sequence[Mapping[str, Any]],
    ) -> None:
        """Hold prepared keys; use `KeyRing.load` to build one from configuration."""
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unsupported JWT algorithm {algorithm!r}")
        self.algorithm = algorithm
        self.kid = kid
        self._signing_key = signing_key
        self._verification_keys = dict(verification_keys)
        self._jwks = {"keys": [dict(k) for k in public_jwks]}

    @classmethod
    def load(
        cls,
        algorithm: str,
        private_key_file: str | None,
        secret: str | None,
        previous_public_key_files: Sequence[str],
        dev_key_dir: str | os.PathLike[str],
    ) -> KeyRing:
        """Build the key ring from configuration; raise ValueError naming what is wrong."""
        if algorithm == "HS256":
            return cls._load_hs256(secret, previous_public_key_files)
        if algorithm not in ALGORITHMS:
            raise ValueError(f"JWT_ALGORITHM must be one of {', '.join(ALGORITHMS)}")
        if private_key_file:
            source = private_key_file
            pem = Path(private_key_file).read_bytes()
        else:
            source = f"dev key in {dev_key_dir}"
            pem = load_or_create_dev_key(dev_key_dir, algorithm)
        private_key = _load_private_key(pem, algorithm, source)
        current = public_jwk(private_key.public_key(), algorithm)
        signing_key = jwk.construct(pem, algorithm)
        verification = {
            current["kid"]: jwk.construct(_public_pem(private_key.public_key()), algorithm)
        }
        published = [current]
        for path in previous_public_key_files:
            public_key = _load_public_key(path, algorithm)
            previous = public_jwk(public_key, algorithm)
            if previous["kid"] in verification:
                continue  # the current key listed again during a rotation: publish once
            verification[previous["kid"]] = jwk.construct(_public_pem(public_key), algorithm)
            published.append(previous)
        return cls(algorithm, signing_key, current["kid"], verification, published)

    @classmethod
    def _load_hs256(cls, secret: str | None, previous: Sequence[str]) -> KeyRing:
        """Build an HS256 ring: one shared secret, nothing to publish."""
        if not secret or len(secret.encode("utf-8")) < MIN_HS256_SECRET_BYTES:
            raise ValueError(
                f"JWT_SECRET must be set to at least {MIN_HS256_SECRET_BYTES} bytes for HS256"
            )
        if previous:
            raise ValueError("JWT_PREVIOUS_PUBLIC_KEY_FILES cannot be used with HS256")
        digest = hashlib.sha256(secret.encode("utf-8")).digest()
        # SECURITY: the kid is derived from a hash of the secret, never the secret itself.
        kid = jwk_thumbprint({"kty": "oct", "k": _b64url(digest)})
        key = jwk.construct(secret.encode("utf-8"), "HS256")
        return cls("HS256", key, kid, {kid: key}, [])

    def issue_access_token(
        self,
        *,
        subject: str,
        session_id: str,
        role: str,
        ttl_seconds: int,
        issuer: str,
        audience: str,
        amr: Sequence[str] = ("pwd",),
        now: datetime | None = None,
    ) -> str:
        """Sign an access token for `subject` in session `session_id`.

        `amr` (RFC 8176) says how the session was authenticated: ["pwd"] or ["pwd", "otp"].
        """
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        issued_at = int((now or datetime.now(UTC)).timestamp())
        claims = {
            "iss": issuer,
            "aud": audience,
            "sub": str(subject),
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + ttl_seconds,
            "jti": uuid.uuid4().hex,
            "sid": str(session_id),
            "role": role,
            "amr": list(amr),
        }
        return self.sign(claims, typ="JWT")

    def issue_oauth_access_token(
        self,
        *,
        claims: Mapping[str, Any],
        ttl_seconds: int,
        issuer: str,
        audience: str,
        now: datetime | None = None,
    ) -> str:
        """Sign an OAuth access token (RFC 9068: JOSE header `typ: at+jwt`).

        `claims` carries what the grant decided (`sub`, `client_id`, `scope`, and for a
        user's grant `sid`, `role`, `amr`, `auth_time`); the registered claims are ours.
        """
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        issued_at = int((now or datetime.now(UTC)).timestamp())
        registered = {
            "iss": issuer,
            "aud": audience,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + ttl_seconds,
            "jti": uuid.uuid4().hex,
        }
        return self.sign({**claims, **registered}, typ="at+jwt")

    def sign(self, claims: Mapping[str, Any], *, typ: str) -> str:
        """Sign `claims` with the current key (its `kid` in the header, as in the JWKS)."""
        headers = {"kid": self.kid, "typ": typ}
        # NOTE: python-jose ships no types; jwt.encode returns the compact JWS as a str.
        token: str = jwt.encode(
            dict(claims), self._signing_key, algorithm=self.algorithm, headers=headers
        )
        return token

    def decode_access_token(
        self,
        token: str,
        *,
        issuer: str,
        audience: str,
        leeway: int = 0,
        require_caller: bool = True,
    ) -> dict[str, Any]:
        """Verify an access token and return its claims; raise InvalidTokenError otherwise.

        `require_caller=False` also accepts a token naming no user session (an OAuth
        client_credentials token: no `sid`, no `role`).
        """
        header = _parse_structure(token)
        if header.get("alg") != self.algorithm:
            # SECURITY: never let the token choose its algorithm ("none", HS256 with a public key).
            raise InvalidTokenError("bad_algorithm")
        kid = header.get("kid")
        key = self._verification_keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidTokenError("unknown_kid")
        try:
            # NOTE: python-jose ships no types; jwt.decode returns the claims as a dict.
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[self.algorithm],
                audience=audience,
                issuer=issuer,
                options={**_DECODE_OPTIONS, "leeway": leeway},
            )
        except ExpiredSignatureError:
            raise InvalidTokenError("expired") from None
        except JWTClaimsError:
            raise InvalidTokenError("bad_claims") from None
        except (JOSEError, ValueError, TypeError, KeyError):
            # python-jose reports a missing required claim with the same JWTError class as a
            # bad signature; tell them apart by checking the signature alone.
            raise InvalidTokenError(self._signature_or_claims(token, key)) from None
        if not require_caller:
            return claims
        try:
            caller(claims)
        except InvalidClaims:
            raise InvalidTokenError("bad_claims") from None
        return claims

    def _signature_or_claims(self, token: str, key: Key) -> str:
        """Return "bad_claims" when the signature verifies, else "bad_signature"."""
        try:
            jws.verify(token, key, algorithms=[self.algorithm])
        except (JOSEError, ValueError, TypeError, KeyError):
            return "bad_signature"
        return "bad_claims"

    def signing_jwk(self) -> dict[str, Any]:
        """The current signing key as a private JWK with its `kid`, for a library that
        signs with it itself (Authlib's ID tokens, auth_service/oauth/server.py)."""
        # NOTE: python-jose ships no types; to_dict returns the JWK members as a dict.
        members: dict[str, Any] = self._signing_key.to_dict()
        return {**members, "kid": self.kid}

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """Return the public JWK Set: current key first, then previous ones; empty for HS256."""
        return copy.deepcopy(self._jwks)


def _parse_structure(token: Any) -> dict[str, Any]:
    """Check the compact JWS shape and return its header; raise InvalidTokenError("malformed")."""
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH:
        raise InvalidTokenError("malformed")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidTokenError("malformed")
    try:
        header = json.loads(_b64url_decode(parts[0]))
        payload = json.loads(_b64url_decode(parts[1]))
        _b64url_decode(parts[2])  # an empty signature ("alg": "none") is malformed here
    except ValueError:  # includes JSON and UTF-8 decoding errors
        raise InvalidTokenError("malformed") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise InvalidTokenError("malformed")
    if "crit" in header:
        raise InvalidTokenError("malformed")  # RFC 7515 §4.1.11: we understand no extensions
    return header
