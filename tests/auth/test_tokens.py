"""Access tokens: round trip, every forgery we know of, key rotation, dev keys, HS256 secrets.

Attack tokens are built here with `cryptography` and `hmac` directly, not with the library
under test, so a bug in how we call python-jose cannot hide in the test's own helpers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jose import jwt as jose_jwt

from auth_service.security.tokens import InvalidTokenError, KeyRing, jwk_thumbprint

ISSUER = "authgate-test"
AUDIENCE = "authgate-api-test"
TTL = 900
ALGORITHMS = ["RS256", "ES256", "HS256"]
REQUIRED_CLAIMS = ["iss", "aud", "sub", "iat", "nbf", "exp", "jti", "sid", "role"]


def b64url(data: bytes) -> str:
    """Encode base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(obj: Any) -> str:
    """Encode a JSON object as a JWS segment."""
    return b64url(json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Split a compact JWS into its decoded header, decoded payload and raw signature."""
    header, payload, signature = token.split(".")
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(payload)), signature


def generate_private_key(algorithm: str) -> Any:
    """Return a fresh private key for an asymmetric algorithm."""
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def write_private_pem(key: Any, path: Path) -> str:
    """Write a private key as PKCS#8 PEM and return the path."""
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(path)


def public_pem(key: Any) -> bytes:
    """Return the public half of a private key as SubjectPublicKeyInfo PEM."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def raw_sign(algorithm: str, key: Any, signing_input: bytes) -> bytes:
    """Sign like JWS does (RFC 7518 §3), with `cryptography`/`hmac` only."""
    if algorithm == "HS256":
        return hmac.new(key, signing_input, hashlib.sha256).digest()
    if algorithm == "RS256":
        return key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


@dataclass
class Material:
    """A key ring together with the raw key it was loaded from, to forge tokens with."""

    algorithm: str
    ring: KeyRing
    key: Any  # cryptography private key, or the HS256 secret bytes

    def sign(self, claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
        """Sign arbitrary claims with the ring's own key, bypassing KeyRing."""
        header = header or {"alg": self.algorithm, "typ": "JWT", "kid": self.ring.kid}
        signing_input = f"{segment(header)}.{segment(claims)}"
        signature = raw_sign(self.algorithm, self.key, signing_input.encode("ascii"))
        return f"{signing_input}.{b64url(signature)}"

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Return a complete, currently valid claim set."""
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "user-1",
            "iat": now,
            "nbf": now,
            "exp": now + TTL,
            "jti": secrets.token_hex(16),
            "sid": "session-1",
            "role": "user",
        }
        claims.update(overrides)
        return claims

    def issue(self, **overrides: Any) -> str:
        """Issue a token through KeyRing with test defaults."""
        arguments: dict[str, Any] = {
            "subject": "user-1",
            "session_id": "session-1",
            "role": "user",
            "ttl_seconds": TTL,
            "issuer": ISSUER,
            "audience": AUDIENCE,
        }
        arguments.update(overrides)
        return self.ring.issue_access_token(**arguments)

    def decode(self, token: str, **overrides: Any) -> dict[str, Any]:
        """Decode with the test issuer and audience."""
        arguments: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE}
        arguments.update(overrides)
        return self.ring.decode_access_token(token, **arguments)


def make_material(algorithm: str, directory: Path) -> Material:
    """Build a key ring from a key file (or secret) the test controls."""
    directory.mkdir(parents=True, exist_ok=True)
    if algorithm == "HS256":
        secret = secrets.token_urlsafe(48)
        ring = KeyRing.load("HS256", None, secret, [], str(directory / "unused"))
        return Material(algorithm, ring, secret.encode("utf-8"))
    key = generate_private_key(algorithm)
    key_file = write_private_pem(key, directory / "current.pem")
    ring = KeyRing.load(algorithm, key_file, None, [], str(directory / "unused"))
    return Material(algorithm, ring, key)


@pytest.fixture(params=ALGORITHMS)
def material(request: pytest.FixtureRequest, tmp_path: Path) -> Material:
    """Return key material for each supported algorithm."""
    return make_material(request.param, tmp_path / "keys")


def assert_refused(material: Material, token: Any, *codes: str, **decode_args: Any) -> None:
    """Assert the token is refused with one of `codes`, and the message leaks nothing."""
    with pytest.raises(InvalidTokenError) as info:
        material.decode(token, **decode_args)
    assert info.value.code in codes
    if isinstance(token, str) and token:
        message = str(info.value)
        assert all(piece not in message for piece in token.split(".") if len(piece) > 8)


# --- round trip -------------------------------------------------------------------------


def test_issue_then_decode_round_trip(material: Material) -> None:
    """A token we issue decodes to exactly the claims we put in, with the expected header."""
    before = int(time.time())
    token = material.issue(subject="user-42", session_id="sid-42", role="admin")
    after = int(time.time())

    claims = material.decode(token)
    assert set(claims) == {*REQUIRED_CLAIMS, "amr"}
    assert claims["amr"] == ["pwd"]
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert claims["sub"] == "user-42"
    assert claims["sid"] == "sid-42"
    assert claims["role"] == "admin"
    assert before <= claims["iat"] <= after
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] == claims["iat"] + TTL
    assert len(claims["jti"]) == 32
    int(claims["jti"], 16)  # uuid4 hex

    header, _, _ = parts(token)
    assert header == {"alg": material.algorithm, "kid": material.ring.kid, "typ": "JWT"}
    assert material.ring.algorithm == material.algorithm


def test_each_token_has_a_fresh_jti(material: Material) -> None:
    """jti is unique per token, so tokens can be told apart even within one second."""
    tokens = {material.issue() for _ in range(5)}
    jtis = {material.decode(token)["jti"] for token in tokens}
    assert len(jtis) == 5


def test_explicit_now_sets_the_times(material: Material) -> None:
    """`now` drives iat/nbf/exp, which is how services and tests pin time."""
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC) - timedelta(seconds=30)
    claims = material.decode(material.issue(now=now))
    assert claims["iat"] == int(now.timestamp())
    assert claims["exp"] == int(now.timestamp()) + TTL


def test_independently_signed_token_is_accepted(material: Material) -> None:
    """Positive control for the forging helper: a correct token signed without KeyRing works."""
    claims = material.claims()
    assert material.decode(material.sign(claims)) == claims


def test_ttl_must_be_positive(material: Material) -> None:
    """A zero or negative lifetime is a programming error, not an instantly expired token."""
    with pytest.raises(ValueError, match="ttl"):
        material.issue(ttl_seconds=0)


# --- forgeries and invalid tokens -------------------------------------------------------


def test_alg_none_is_refused(material: Material) -> None:
    """`alg: none` with an empty signature (and with the real one kept) is refused."""
    _, payload, signature = material.issue().split(".")
    header = segment({"alg": "none", "kid": material.ring.kid, "typ": "JWT"})
    assert_refused(material, f"{header}.{payload}.", "bad_algorithm", "malformed")
    assert_refused(material, f"{header}.{payload}.{signature}", "bad_algorithm")
    for spelling in ("None", "NONE", ""):
        header = segment({"alg": spelling, "kid": material.ring.kid, "typ": "JWT"})
        assert_refused(material, f"{header}.{payload}.", "bad_algorithm", "malformed")


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_hs256_signed_with_the_public_key_is_refused(algorithm: str, tmp_path: Path) -> None:
    """Algorithm confusion: an HMAC over the public PEM (or its JWK JSON) must not verify."""
    material = make_material(algorithm, tmp_path)
    claims = material.claims(role="admin")
    public_jwk = json.dumps(material.ring.jwks()["keys"][0]).encode("utf-8")
    for secret in (public_pem(material.key), public_pem(material.key).strip(), public_jwk):
        header = {"alg": "HS256", "typ": "JWT", "kid": material.ring.kid}
        signing_input = f"{segment(header)}.{segment(claims)}"
        signature = raw_sign("HS256", secret, signing_input.encode("ascii"))
        assert_refused(material, f"{signing_input}.{b64url(signature)}", "bad_algorithm")


def test_hs256_ring_refuses_asymmetric_tokens(tmp_path: Path) -> None:
    """The reverse confusion: an HS256 service does not accept an RS256/ES256 token."""
    material = make_material("HS256", tmp_path)
    for algorithm in ("RS256", "ES256"):
        attacker = generate_private_key(algorithm)
        header = {"alg": algorithm, "typ": "JWT", "kid": material.ring.kid}
        signing_input = f"{segment(header)}.{segment(material.claims())}"
        signature = raw_sign(algorithm, attacker, signing_input.encode("ascii"))
        assert_refused(material, f"{signing_input}.{b64url(signature)}", "bad_algorithm")


def test_other_algorithm_with_a_valid_signature_is_refused(tmp_path: Path) -> None:
    """Pinned algorithm: even a correctly signed token of another family is refused."""
    rs = make_material("RS256", tmp_path / "rs")
    header = {"alg": "RS384", "typ": "JWT", "kid": rs.ring.kid}
    signing_input = f"{segment(header)}.{segment(rs.claims())}"
    signature = rs.key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA384())
    assert_refused(rs, f"{signing_input}.{b64url(signature)}", "bad_algorithm")


def test_tampered_payload_is_refused(material: Material) -> None:
    """Changing any claim (here: escalating the role) breaks the signature."""
    header, payload, signature = material.issue().split(".")
    claims = json.loads(b64url_decode(payload))
    claims["role"] = "admin"
    assert_refused(material, f"{header}.{segment(claims)}.{signature}", "bad_signature")


def test_tampered_signature_is_refused(material: Material) -> None:
    """A signature from another message, or truncated, does not verify."""
    header, payload, signature = material.issue().split(".")
    _, _, other_signature = material.issue(subject="user-2").split(".")
    assert_refused(material, f"{header}.{payload}.{other_signature}", "bad_signature")
    assert_refused(material, f"{header}.{payload}.{signature[:-8]}", "bad_signature", "malformed")


def test_expired_token_is_refused_and_leeway_is_honoured(material: Material) -> None:
    """exp in the past is refused; a leeway larger than the overrun accepts it."""
    token = material.sign(material.claims(exp=int(time.time()) - 30))
    assert_refused(material, token, "expired")
    assert material.decode(token, leeway=120)["sub"] == "user-1"


def test_token_issued_long_ago_is_expired(material: Material) -> None:
    """A token issued through KeyRing two lifetimes ago is expired."""
    from datetime import UTC, datetime, timedelta

    token = material.issue(now=datetime.now(UTC) - timedelta(seconds=2 * TTL))
    assert_refused(material, token, "expired")


def test_not_yet_valid_token_is_refused(material: Material) -> None:
    """nbf in the future is refused (clock games, pre-issued tokens)."""
    from datetime import UTC, datetime, timedelta

    token = material.issue(now=datetime.now(UTC) + timedelta(hours=1))
    assert_refused(material, token, "bad_claims")
    later = int(time.time()) + 3600
    assert_refused(material, material.sign(material.claims(nbf=later)), "bad_claims")


def test_wrong_audience_is_refused(material: Material) -> None:
    """A token for another audience is refused, and so is one checked against another."""
    assert_refused(material, material.issue(audience="other-api"), "bad_claims")
    assert_refused(material, material.issue(), "bad_claims", audience="other-api")


def test_audience_array_containing_ours_is_accepted(material: Material) -> None:
    """RFC 7519 §4.1.3: `aud` may be an array; ours among its members is enough."""
    listed = material.sign(material.claims(aud=["other-api", AUDIENCE]))
    assert material.decode(listed)["aud"] == ["other-api", AUDIENCE]
    assert material.decode(material.sign(material.claims(aud=[AUDIENCE])))["sub"] == "user-1"


@pytest.mark.parametrize(
    "aud",
    [
        ["other-api"],
        [],
        ["other-api", AUDIENCE.upper()],  # audiences are case-sensitive
        [AUDIENCE + " "],
        [[AUDIENCE]],
        [AUDIENCE, 7],  # every member must be a string
        {"aud": AUDIENCE},
    ],
)
def test_audience_array_without_ours_is_refused(material: Material, aud: Any) -> None:
    """An array without our audience, an empty one, or one with non-strings is refused."""
    assert_refused(material, material.sign(material.claims(aud=aud)), "bad_claims")


def test_wrong_issuer_is_refused(material: Material) -> None:
    """A token from another issuer is refused."""
    assert_refused(material, material.issue(issuer="evil"), "bad_claims")
    assert_refused(material, material.issue(), "bad_claims", issuer="someone-else")


def test_unknown_kid_is_refused(material: Material, tmp_path: Path) -> None:
    """A token from another key, or with a changed/missing kid, names an unknown key."""
    stranger = make_material(material.algorithm, tmp_path / "stranger")
    assert stranger.ring.kid != material.ring.kid
    assert_refused(material, stranger.issue(), "unknown_kid")

    base = {"alg": material.algorithm, "typ": "JWT"}
    claims = material.claims()
    for header in ({**base, "kid": "nope"}, base, {**base, "kid": 7}, {**base, "kid": None}):
        assert_refused(material, material.sign(claims, header), "unknown_kid")


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_missing_required_claim_is_refused(material: Material, claim: str) -> None:
    """Every claim is required, even when the signature is perfectly valid."""
    claims = material.claims()
    del claims[claim]
    assert_refused(material, material.sign(claims), "bad_claims")


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("sub", 42),
        ("sid", 42),
        ("sid", ""),
        ("role", None),
        ("role", ["admin"]),
        ("jti", 5),
        ("exp", "tomorrow"),
        ("iat", "now"),
        ("nbf", "now"),
        ("iss", ["authgate-test"]),
    ],
)
def test_claim_of_the_wrong_type_is_refused(material: Material, claim: str, value: Any) -> None:
    """Claims we rely on must have the type we rely on."""
    assert_refused(material, material.sign(material.claims(**{claim: value})), "bad_claims")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "...",
        "x" * 20_000,
        "é.é.é",
        "eyJhbGciOiJSUzI1NiJ9.%%%.abc",
        f"{b64url(b'not json')}.{b64url(b'{}')}.{b64url(b'sig')}",
        f"{segment([1, 2])}.{segment({})}.{b64url(b'sig')}",
        f"{segment({'alg': 'RS256'})}.{segment('str')}.{b64url(b'sig')}",
        f"{segment({'alg': 'RS256'})}.{b64url(bytes([0xFF, 0xFE]))}.{b64url(b'sig')}",
        None,
        b"bytes.are.not.tokens",
        12345,
    ],
)
def test_garbage_is_malformed(material: Material, token: Any) -> None:
    """Anything that is not a compact JWS is refused as malformed, never with another error."""
    assert_refused(material, token, "malformed")


def test_critical_header_extensions_are_refused(material: Material) -> None:
    """RFC 7515 `crit`: we understand no extensions, so such a token must be rejected."""
    header = {"alg": material.algorithm, "typ": "JWT", "kid": material.ring.kid}
    header.update({"crit": ["exp-policy"], "exp-policy": "lax"})
    assert_refused(material, material.sign(material.claims(), header), "malformed")


# --- publication and rotation -----------------------------------------------------------


def test_rfc7638_thumbprint_example() -> None:
    """jwk_thumbprint matches the worked example of RFC 7638 §3.1."""
    example = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJ"
            "ECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FD"
            "W2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
            "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(example) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_jwks_alone_verifies_tokens(algorithm: str, tmp_path: Path) -> None:
    """What the gateway sees (the JWKS) is enough to verify a token, by kid."""
    material = make_material(algorithm, tmp_path)
    jwks = material.ring.jwks()
    assert len(jwks["keys"]) == 1
    published = jwks["keys"][0]
    assert published["kid"] == material.ring.kid == jwk_thumbprint(published)
    assert published["use"] == "sig"
    assert published["alg"] == algorithm
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(published)  # no private members

    token = material.issue()
    claims = jose_jwt.decode(
        token, published, algorithms=[algorithm], audience=AUDIENCE, issuer=ISSUER
    )
    assert claims["sid"] == "session-1"


def test_hs256_publishes_nothing_and_its_kid_hides_the_secret(tmp_path: Path) -> None:
    """An HS256 ring has an empty JWKS, and its kid is neither the secret nor its encoding."""
    secret = "s" * 40
    ring = KeyRing.load("HS256", None, secret, [], str(tmp_path))
    assert ring.jwks() == {"keys": []}
    assert secret not in ring.kid
    assert b64url(secret.encode()) not in ring.kid
    other = KeyRing.load("HS256", None, "t" * 40, [], str(tmp_path))
    assert other.kid != ring.kid
    assert KeyRing.load("HS256", None, secret, [], str(tmp_path)).kid == ring.kid


def test_jwks_returns_a_copy(material: Material) -> None:
    """Callers cannot alter the published keys by mutating the returned dict."""
    material.ring.jwks()["keys"].append({"kid": "injected"})
    assert {"kid": "injected"} not in material.ring.jwks()["keys"]


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
@pytest.mark.parametrize("previous_as", ["public", "private"])
def test_rotation_keeps_old_tokens_valid(algorithm: str, previous_as: str, tmp_path: Path) -> None:
    """After rotation, tokens signed by the previous key verify and the JWKS lists both keys."""
    old = make_material(algorithm, tmp_path / "old")
    old_token = old.issue(subject="user-old")

    previous_file = tmp_path / "previous.pem"
    if previous_as == "public":
        previous_file.write_bytes(public_pem(old.key))
    else:
        write_private_pem(old.key, previous_file)
    new_key = generate_private_key(algorithm)
    new_key_file = write_private_pem(new_key, tmp_path / "new.pem")

    rotated = KeyRing.load(algorithm, new_key_file, None, [str(previous_file)], str(tmp_path))
    not_rotated = KeyRing.load(algorithm, new_key_file, None, [], str(tmp_path))

    assert rotated.kid != old.ring.kid
    claims = rotated.decode_access_token(old_token, issuer=ISSUER, audience=AUDIENCE)
    assert claims["sub"] == "user-old"
    with pytest.raises(InvalidTokenError) as info:
        not_rotated.decode_access_token(old_token, issuer=ISSUER, audience=AUDIENCE)
    assert info.value.code == "unknown_kid"

    kids = [key["kid"] for key in rotated.jwks()["keys"]]
    assert kids == [rotated.kid, old.ring.kid]

    # New tokens are signed with the new key only.
    new_token = rotated.issue_access_token(
        subject="u", session_id="s", role="user", ttl_seconds=TTL, issuer=ISSUER, audience=AUDIENCE
    )
    assert parts(new_token)[0]["kid"] == rotated.kid


def test_current_key_listed_as_previous_is_published_once(tmp_path: Path) -> None:
    """Listing the current key among the previous ones during a rotation does not duplicate it."""
    key = generate_private_key("ES256")
    key_file = write_private_pem(key, tmp_path / "current.pem")
    (tmp_path / "current.pub").write_bytes(public_pem(key))
    ring = KeyRing.load("ES256", key_file, None, [str(tmp_path / "current.pub")], str(tmp_path))
    assert [k["kid"] for k in ring.jwks()["keys"]] == [ring.kid]


# --- configuration errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    "secret", [None, "", "x" * 31, "é" * 15 + "x"], ids=["none", "empty", "31", "31-multibyte"]
)
def test_hs256_needs_a_32_byte_secret(secret: str | None, tmp_path: Path) -> None:
    """A missing or short HS256 secret fails at start-up, naming JWT_SECRET but not the value."""
    with pytest.raises(ValueError, match="JWT_SECRET") as info:
        KeyRing.load("HS256", None, secret, [], str(tmp_path))
    if secret:
        assert secret not in str(info.value)


def test_hs256_accepts_exactly_32_bytes(tmp_path: Path) -> None:
    """32 bytes is enough, counted in UTF-8 (16 times 'é')."""
    ring = KeyRing.load("HS256", None, "é" * 16, [], str(tmp_path))
    token = ring.issue_access_token(
        subject="u", session_id="s", role="user", ttl_seconds=TTL, issuer=ISSUER, audience=AUDIENCE
    )
    assert ring.decode_access_token(token, issuer=ISSUER, audience=AUDIENCE)["sub"] == "u"


def test_hs256_refuses_previous_public_keys(tmp_path: Path) -> None:
    """Previous public keys mean nothing for HS256; configuring them is an error."""
    with pytest.raises(ValueError, match="HS256"):
        KeyRing.load("HS256", None, "x" * 32, ["old.pem"], str(tmp_path))


def weak_rsa_key() -> rsa.RSAPrivateKey:
    """Return a 1024-bit RSA key: the weak key the next test must refuse."""
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505


@pytest.mark.parametrize(
    ("algorithm", "make_key"),
    [
        ("RS256", lambda: ec.generate_private_key(ec.SECP256R1())),
        ("ES256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", lambda: ec.generate_private_key(ec.SECP384R1())),
        ("RS256", weak_rsa_key),
    ],
    ids=["rs256-with-ec", "es256-with-rsa", "es256-with-p384", "rs256-1024-bits"],
)
def test_key_that_does_not_fit_the_algorithm_is_refused(
    algorithm: str, make_key: Callable[[], Any], tmp_path: Path
) -> None:
    """A wrong-family, wrong-curve or weak key fails at start-up."""
    key_file = write_private_pem(make_key(), tmp_path / "key.pem")
    with pytest.raises(ValueError, match=algorithm[:2]):
        KeyRing.load(algorithm, key_file, None, [], str(tmp_path))
    with pytest.raises(ValueError):
        KeyRing.load(algorithm, None, None, [key_file], str(tmp_path / "dev"))


def test_unknown_algorithm_is_refused(tmp_path: Path) -> None:
    """Only RS256, ES256 and HS256 are supported."""
    with pytest.raises(ValueError, match="JWT_ALGORITHM"):
        KeyRing.load("none", None, None, [], str(tmp_path))


# --- dev keys ---------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_dev_key_is_created_once_and_reused(algorithm: str, tmp_path: Path) -> None:
    """Two loads from one empty directory share a key, kept private on disk."""
    dev_dir = tmp_path / "var" / "keys"
    first = KeyRing.load(algorithm, None, None, [], str(dev_dir))
    second = KeyRing.load(algorithm, None, None, [], str(dev_dir))
    assert first.kid == second.kid

    files = list(dev_dir.iterdir())
    assert [f.name for f in files] == [f"jwt-{algorithm.lower()}-private.pem"]
    assert stat.S_IMODE(os.stat(files[0]).st_mode) == 0o600
    # And the key really is shared: a token from one ring verifies with the other.
    token = first.issue_access_token(
        subject="u", session_id="s", role="user", ttl_seconds=TTL, issuer=ISSUER, audience=AUDIENCE
    )
    assert second.decode_access_token(token, issuer=ISSUER, audience=AUDIENCE)["sub"] == "u"


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_concurrent_dev_key_creation_agrees_on_one_key(algorithm: str, tmp_path: Path) -> None:
    """Workers starting together from an empty directory all end up with the same key."""
    dev_dir = tmp_path / "keys"
    workers = 8
    start = threading.Barrier(workers)

    def load(_: int) -> str:
        start.wait()  # release all threads at once to make the race real
        return KeyRing.load(algorithm, None, None, [], str(dev_dir)).kid

    with ThreadPoolExecutor(max_workers=workers) as pool:
        kids = list(pool.map(load, range(workers)))

    assert len(kids) == workers
    assert len(set(kids)) == 1
    # No temporary files left behind by the losers.
    assert [f.name for f in dev_dir.iterdir()] == [f"jwt-{algorithm.lower()}-private.pem"]


def test_dev_key_is_not_used_when_a_key_file_is_given(tmp_path: Path) -> None:
    """An explicit key file wins, and no dev key is generated next to it."""
    material = make_material("RS256", tmp_path / "explicit")
    dev_dir = tmp_path / "dev"
    key_file = write_private_pem(material.key, tmp_path / "k.pem")
    ring = KeyRing.load("RS256", key_file, None, [], str(dev_dir))
    assert ring.kid == material.ring.kid
    assert not dev_dir.exists()
