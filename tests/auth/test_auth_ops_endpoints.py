"""Keys, liveness, the served spec and docs, and how unknown paths and methods are answered."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from auth_api import Api
from authcheck import assert_problem
from falcon import testing
from jose import jwk, jwt

from auth_service.security.tokens import jwk_thumbprint
from auth_service.settings import DEFAULT_SPEC_PATH

JWKS = "/.well-known/jwks.json"


def test_jwks_kid_matches_access_token(api: Api) -> None:
    user = api.user("ada@example.com")
    result = api.client.simulate_get(JWKS)
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("application/json")
    keys = result.json["keys"]
    assert len(keys) == 1
    key = keys[0]
    assert (key["kty"], key["alg"], key["use"]) == ("RSA", "RS256", "sig")
    # kid is the RFC 7638 thumbprint of the key itself.
    assert key["kid"] == jwk_thumbprint(key)
    assert "d" not in key and "p" not in key  # never private parts
    header = jwt.get_unverified_header(user["access_token"])
    assert header["kid"] == key["kid"]
    assert header["alg"] == "RS256"
    assert header["typ"] == "JWT"


def test_access_token_verifies_with_the_jwks_alone(api: Api) -> None:
    user = api.user("ada@example.com")
    keys = api.client.simulate_get(JWKS).json["keys"]
    kid = jwt.get_unverified_header(user["access_token"])["kid"]
    public = jwk.construct(next(k for k in keys if k["kid"] == kid), "RS256")
    claims = jwt.decode(
        user["access_token"],
        public,
        algorithms=["RS256"],
        audience="authgate-api",
        issuer="authgate",
        options={"require_exp": True, "require_sub": True, "require_iat": True},
    )
    assert claims["sub"] == user["id"]
    assert claims["role"] == "user"
    assert set(claims) >= {"iss", "aud", "sub", "iat", "nbf", "exp", "jti", "sid", "role"}
    assert claims["exp"] - claims["iat"] == 3600
    # A token with one byte of the payload changed no longer verifies with that key.
    head, body, sig = user["access_token"].split(".")
    forged = ".".join([head, body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1], sig])
    with pytest.raises(Exception):  # noqa: B017 - jose raises JWTError or JWSError
        jwt.decode(forged, public, algorithms=["RS256"], audience="authgate-api")


def test_healthz(client: testing.TestClient) -> None:
    result = client.simulate_get("/healthz")
    assert result.status_code == 200
    assert result.json == {"status": "ok"}
    assert result.headers["x-request-id"]


def test_openapi_json_is_the_yaml(client: testing.TestClient) -> None:
    result = client.simulate_get("/openapi.json")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("application/json")
    with DEFAULT_SPEC_PATH.open(encoding="utf-8") as handle:
        expected = yaml.safe_load(handle)
    assert json.loads(result.text) == expected


def test_docs_use_only_local_assets(client: testing.TestClient) -> None:
    result = client.simulate_get("/docs")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/html")
    html = result.text
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    references = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(references) >= 3
    assert all(ref.startswith("/docs/assets/") for ref in references), references
    for ref in references:
        asset = client.simulate_get(ref)
        assert asset.status_code == 200, ref
        assert len(asset.content) > 0
    scripts = [ref for ref in references if ref.endswith(".js")]
    init = [client.simulate_get(ref).text for ref in scripts if "init" in ref]
    assert init and "/openapi.json" in init[0]
    assert "https://" not in init[0]


def test_docs_unknown_asset_is_404_problem(client: testing.TestClient) -> None:
    assert_problem(client.simulate_get("/docs/assets/../../etc/passwd"), 404)
    assert_problem(client.simulate_get("/docs/assets/index.html"), 404)


def test_metrics_is_prometheus_text(client: testing.TestClient) -> None:
    client.simulate_get("/healthz")
    result = client.simulate_get("/metrics")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in result.text


@pytest.mark.parametrize("path", ["/nope", "/api/v1/auth/unknown", "/api/v1/users/me/nothing"])
def test_unknown_path_is_404_problem(client: testing.TestClient, path: str) -> None:
    body = assert_problem(client.simulate_get(path), 404, "not-found")
    assert body["title"] == "Not Found"


@pytest.mark.parametrize(
    ("method", "path"), [("DELETE", "/api/v1/auth/login"), ("POST", "/healthz")]
)
def test_unknown_method_is_405_problem(client: testing.TestClient, method: str, path: str) -> None:
    result = client.simulate_request(method, path)
    assert_problem(result, 405, "method-not-allowed")
    assert method not in result.headers["allow"]


def test_trailing_slash_is_not_the_route(client: testing.TestClient) -> None:
    assert_problem(client.simulate_get("/healthz/"), 404)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/healthz", {"GET"}),
        ("GET", "/api/v1/auth/login", {"POST"}),
        ("POST", "/api/v1/auth/me", {"GET"}),
        ("PATCH", "/api/v1/users", {"GET", "POST"}),
    ],
)
def test_wrong_method_is_405_with_allow(
    client: testing.TestClient, method: str, path: str, allowed: set[str]
) -> None:
    result = client.simulate_request(method, path)
    assert_problem(result, 405)
    methods = {part.strip() for part in result.headers["allow"].split(",")}
    assert allowed <= methods
    assert methods - allowed <= {"OPTIONS"}
