"""Forged, altered and stale access tokens against GET /auth/me: all 401 invalid_token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from auth_api import Api, bearer
from authcheck import assert_unauthorized_token, execute
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt

from auth_service.db.models import User

ME = "/api/v1/auth/me"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


class Forger:
    """Signs arbitrary tokens with the service's own dev key (what an insider could do)."""

    def __init__(self, var_dir: Path, token: str) -> None:
        self.pem = (var_dir / "keys" / "jwt-rs256-private.pem").read_bytes()
        self.private = serialization.load_pem_private_key(self.pem, password=None)
        self.public_pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.header = jwt.get_unverified_header(token)
        self.claims = jwt.get_unverified_claims(token)

    def sign(
        self, claims: dict[str, Any] | None = None, headers: dict[str, Any] | None = None
    ) -> str:
        extra = {"kid": self.header["kid"], **(headers or {})}
        return jwt.encode(claims or self.claims, self.pem, algorithm="RS256", headers=extra)

    def changed(self, **changes: Any) -> dict[str, Any]:
        claims = {**self.claims, **changes}
        return {k: v for k, v in claims.items() if v is not None}


@pytest.fixture
def victim(api: Api) -> dict[str, Any]:
    return api.user("ada@example.com")


@pytest.fixture
def forger(var_dir: Path, victim: dict[str, Any]) -> Forger:
    return Forger(var_dir, victim["access_token"])


def me(api: Api, token: str) -> Any:
    return api.client.simulate_get(ME, headers=bearer(token))


def test_forger_control_a_correctly_signed_token_is_accepted(api: Api, forger: Forger) -> None:
    # Without this, every "refused" below could be refusing for the wrong reason.
    now = int(time.time())
    token = forger.sign(forger.changed(jti=uuid.uuid4().hex, iat=now, nbf=now))
    assert me(api, token).status_code == 200


def test_alg_none_is_refused(api: Api, forger: Forger, victim: dict[str, Any]) -> None:
    payload = b64json(forger.changed(role="admin"))
    for alg in ("none", "None", "NONE"):
        header = b64json({"alg": alg, "typ": "JWT", "kid": forger.header["kid"]})
        assert_unauthorized_token(me(api, f"{header}.{payload}."))
        signature = victim["access_token"].split(".")[2]
        assert_unauthorized_token(me(api, f"{header}.{payload}.{signature}"))


@pytest.mark.parametrize("key_source", ["pem", "pem-without-newline", "jwks-n"])
def test_hs256_signed_with_the_public_key_is_refused(
    api: Api, forger: Forger, key_source: str
) -> None:
    keys = api.client.simulate_get("/.well-known/jwks.json").json["keys"]
    secret = {
        "pem": forger.public_pem,
        "pem-without-newline": forger.public_pem.strip(),
        "jwks-n": keys[0]["n"].encode(),
    }[key_source]
    header = b64json({"alg": "HS256", "typ": "JWT", "kid": forger.header["kid"]})
    payload = b64json(forger.claims)
    signing_input = f"{header}.{payload}".encode()
    signature = b64(hmac.new(secret, signing_input, hashlib.sha256).digest())
    assert_unauthorized_token(me(api, f"{header}.{payload}.{signature}"))


def test_tampered_payload_is_refused(api: Api, forger: Forger, victim: dict[str, Any]) -> None:
    header, _, signature = victim["access_token"].split(".")
    for change in ({"role": "admin"}, {"exp": forger.claims["exp"] + 86400}):
        payload = b64json(forger.changed(**change))
        assert_unauthorized_token(me(api, f"{header}.{payload}.{signature}"))


def test_tampered_header_is_refused(api: Api, forger: Forger, victim: dict[str, Any]) -> None:
    _, payload, signature = victim["access_token"].split(".")
    header = b64json({**forger.header, "typ": "at+jwt"})
    assert_unauthorized_token(me(api, f"{header}.{payload}.{signature}"))


def test_truncated_signature_is_refused(api: Api, victim: dict[str, Any]) -> None:
    token = victim["access_token"]
    assert_unauthorized_token(me(api, token[:-10]))
    assert_unauthorized_token(me(api, token.rsplit(".", 1)[0] + "."))


BAD_CLAIMS = [
    ("expired", {"exp": -60, "iat": -3660, "nbf": -3660}),
    ("not-yet-valid", {"nbf": 600}),
    ("wrong-aud", {"aud": "someone-else"}),
    ("aud-list-without-ours", {"aud": ["someone-else", "evil"]}),
    ("aud-empty-list", {"aud": []}),
    ("wrong-iss", {"iss": "evil"}),
    ("missing-sid", {"sid": None}),
    ("missing-exp", {"exp": None}),
    ("missing-sub", {"sub": None}),
    ("missing-iat", {"iat": None}),
    ("missing-jti", {"jti": None}),
    ("missing-iss", {"iss": None}),
    ("missing-aud", {"aud": None}),
    ("bad-sid", {"sid": "not-a-uuid"}),
    ("unknown-sid", {"sid": "00000000-0000-0000-0000-000000000000"}),
    ("other-sub", {"sub": "00000000-0000-0000-0000-000000000000"}),
    ("non-uuid-sub", {"sub": "admin"}),
    # An OAuth app's own (client_credentials) token names no user: no account API for it.
    (
        "client-credential",
        {"sid": None, "role": None, "sub": "billing-bot", "client_id": "billing-bot", "scope": ""},
    ),
    ("client-without-session", {"sid": None, "role": None, "client_id": "bot", "scope": ""}),
    ("first-party-with-scope", {"scope": "openid"}),
]


def test_signed_token_with_bad_claims_is_refused(api: Api, forger: Forger) -> None:
    for case, change in BAD_CLAIMS:
        now = int(time.time())
        times = {
            k: now + v for k, v in change.items() if k in ("exp", "iat", "nbf") and v is not None
        }
        claims = forger.changed(**{**change, **times})
        result = me(api, forger.sign(claims))
        assert result.status_code == 401, case
        assert_unauthorized_token(result)


def test_audience_array_is_accepted_only_with_ours(api: Api, forger: Forger) -> None:
    # RFC 7519 §4.1.3: `aud` may be an array; ours among its members is enough.
    ours = forger.claims["aud"]
    accepted = me(api, forger.sign(forger.changed(aud=["billing-api", ours])))
    assert accepted.status_code == 200, accepted.text
    assert accepted.json["email"] == "ada@example.com"
    for aud in (["billing-api"], [], ["billing-api", ours.upper()]):
        assert_unauthorized_token(me(api, forger.sign(forger.changed(aud=aud))))


def test_unknown_kid_is_refused(api: Api, forger: Forger) -> None:
    assert_unauthorized_token(me(api, forger.sign(headers={"kid": "some-other-key"})))
    # A token with no kid at all.
    claims = forger.claims
    no_kid = jwt.encode(claims, forger.pem, algorithm="RS256")
    assert_unauthorized_token(me(api, no_kid))


def test_token_signed_by_another_key_is_refused(api: Api, forger: Forger) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Same kid as the real key: only the signature can tell.
    token = jwt.encode(forger.claims, pem, algorithm="RS256", headers={"kid": forger.header["kid"]})
    assert_unauthorized_token(me(api, token))


def test_token_of_deleted_user_is_refused(
    api: Api, victim: dict[str, Any], database_url: str
) -> None:
    assert me(api, victim["access_token"]).status_code == 200
    execute(database_url, sqlalchemy.delete(User).where(User.id == uuid.UUID(victim["id"])))
    assert_unauthorized_token(me(api, victim["access_token"]))


GARBAGE = [
    "garbage",
    "a.b.c",
    "...",
    "eyJhbGciOiJSUzI1NiJ9",
    "eyJhbGciOiJSUzI1NiJ9.e30.",
    "e30.e30.e30",
    "W10.W10.W10",
    "x" * 9000,
    "a.b.c.d.e",
    "%%%.%%%.%%%",
]


def test_garbage_token_is_refused(api: Api, victim: dict[str, Any]) -> None:
    for token in GARBAGE:
        assert_unauthorized_token(me(api, token))


def test_crit_header_is_refused(api: Api, forger: Forger) -> None:
    assert_unauthorized_token(me(api, forger.sign(headers={"crit": ["exp"]})))
