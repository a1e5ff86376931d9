"""Hostile and broken input: a precise 4xx problem every time, never a 500, never an echo.

Every test here also checks that the password it sent appears neither in the response nor
in anything logged or printed while the request ran.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from auth_api import PASSWORD, Api, bearer
from authcheck import (
    assert_problem,
    user_row,
)
from falcon import testing

CANARY = "Canary-Pa55word-7f3e"
LONG_PASSWORD = "é" * 36 + "a"  # 37 characters, 73 bytes of UTF-8
JSON = {"content-type": "application/json"}


class Watch:
    """Collects everything a request could leak a secret through."""

    def __init__(self, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture) -> None:
        self.caplog = caplog
        self.capsys = capsys

    def assert_clean(self, result: testing.Result, *secrets: str) -> None:
        assert result.status_code < 500, result.text
        captured = self.capsys.readouterr()
        places = {
            "response": result.text,
            "headers": str(result.headers),
            "logs": self.caplog.text,
            "log args": " ".join(str(r.args) + str(r.__dict__) for r in self.caplog.records),
            "stdout": captured.out,
            "stderr": captured.err,
        }
        for secret in secrets:
            forms = {secret, json.dumps(secret)[1:-1], secret.encode("unicode_escape").decode()}
            for where, text in places.items():
                for form in forms:
                    assert form not in text, f"password leaked in {where}"


@pytest.fixture
def watch(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture) -> Iterator[Watch]:
    caplog.set_level(logging.DEBUG)
    yield Watch(caplog, capsys)


@pytest.fixture
def admin(api: Api, database_url: str) -> dict[str, Any]:
    return api.admin(database_url)


# (method, path, needs a token, a valid body, its required fields)
BODY_OPERATIONS = [
    ("POST", "/api/v1/auth/register", False, {"email": "n@example.com", "password": CANARY}),
    ("POST", "/api/v1/auth/login", False, {"email": "n@example.com", "password": CANARY}),
    ("POST", "/api/v1/auth/refresh", False, {"refresh_token": "abc"}),
    ("POST", "/api/v1/auth/logout", False, {"refresh_token": "abc"}),
    ("POST", "/api/v1/auth/password-reset", False, {"email": "n@example.com"}),
    (
        "POST",
        "/api/v1/auth/password-reset/confirm",
        False,
        {"token": "abc", "new_password": CANARY},
    ),
    ("POST", "/api/v1/users", True, {"email": "n@example.com", "password": CANARY}),
    ("PUT", "/api/v1/users/{admin_id}", True, {"full_name": "N"}),
    (
        "PUT",
        "/api/v1/users/me/password",
        True,
        {"current_password": CANARY, "new_password": CANARY},
    ),
]
OPERATION_IDS = [f"{m} {p.rsplit('/api/v1/', 1)[-1]}" for m, p, _, _ in BODY_OPERATIONS]


def send(
    api: Api,
    admin: dict[str, Any],
    op: tuple,
    *,
    body: Any = None,
    raw: bytes | str | None = None,
    headers: dict[str, str] | None = None,
) -> testing.Result:
    method, path, needs_token, _ = op
    all_headers = dict(headers or {})
    if needs_token:
        all_headers.update(bearer(admin["access_token"]))
    url = path.format(admin_id=admin["id"])
    if raw is not None:
        return api.client.simulate_request(method, url, body=raw, headers=all_headers)
    return api.client.simulate_request(method, url, json=body, headers=all_headers)


MALFORMED = [
    b'{"email": ',
    b"{'email': 'a@example.com'}",
    b'{"email": "a@example.com",}',
    b"not json at all",
    b'{"password": "' + CANARY.encode() + b'"',
    b"\xff\xfe{}",
    b'{"email": "a@example.com"} trailing',
]


def check_malformed_json_is_400(api: Api, admin: dict, watch: Watch, op: tuple) -> None:
    for raw in MALFORMED:
        result = send(api, admin, op, raw=raw, headers=JSON)
        assert_problem(result, 400, "malformed-json")
        watch.assert_clean(result, CANARY)


def check_wrong_content_type_is_415(api: Api, admin: dict, watch: Watch, op: tuple) -> None:
    raw = json.dumps(op[3]).encode()
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
        None,
    ):
        headers = {"content-type": content_type} if content_type else {}
        result = send(api, admin, op, raw=raw, headers=headers)
        assert_problem(result, 415, "unsupported-media-type")
        watch.assert_clean(result, CANARY)


def test_json_content_type_with_charset_is_accepted(api: Api) -> None:
    raw = json.dumps({"email": "ada@example.com", "password": PASSWORD}).encode()
    headers = {"content-type": "Application/JSON; charset=utf-8"}
    result = api.client.simulate_post("/api/v1/auth/register", body=raw, headers=headers)
    assert result.status_code == 201, result.text


def check_missing_and_extra_fields_are_422(api: Api, admin: dict, watch: Watch, op: tuple) -> None:
    extra = send(api, admin, op, body={**op[3], "surplus_field": CANARY})
    assert_problem(extra, 422, "validation-error", ["surplus_field"])
    watch.assert_clean(extra, CANARY)
    required = [name for name in op[3] if not (op[0] == "PUT" and name == "full_name")]
    for name in required:
        body = {k: v for k, v in op[3].items() if k != name}
        missing = send(api, admin, op, body=body)
        assert_problem(missing, 422, "validation-error", [name])
        watch.assert_clean(missing, CANARY)


def check_body_of_wrong_json_type_is_422(api: Api, admin: dict, watch: Watch, op: tuple) -> None:
    for body in ([], "text", 5, None, True, [op[3]]):
        result = send(api, admin, op, raw=json.dumps(body).encode(), headers=JSON)
        assert_problem(result, 422, "validation-error", ["body"])
        watch.assert_clean(result, CANARY)


@pytest.mark.parametrize("op", BODY_OPERATIONS, ids=OPERATION_IDS)
def test_every_body_operation_refuses_bad_bodies_precisely(
    api: Api, admin: dict, watch: Watch, op: tuple
) -> None:
    """Malformed JSON 400, wrong content type 415, missing/extra/mistyped fields 422."""
    check_malformed_json_is_400(api, admin, watch, op)
    check_wrong_content_type_is_415(api, admin, watch, op)
    check_missing_and_extra_fields_are_422(api, admin, watch, op)
    check_body_of_wrong_json_type_is_422(api, admin, watch, op)


WRONG_TYPES = [
    ("email", 5),
    ("email", ["a@example.com"]),
    ("password", 12345678),
    ("full_name", {"a": 1}),
    ("email", None),
    ("password", True),
]


def test_wrong_field_types_are_422(api: Api, watch: Watch, database_url: str) -> None:
    for field, value in WRONG_TYPES:
        body = {"email": "ada@example.com", "password": CANARY, field: value}
        result = api.client.simulate_post("/api/v1/auth/register", json=body)
        assert_problem(result, 422, "validation-error", [field])
        watch.assert_clean(result, CANARY)
    assert user_row(database_url, "ada@example.com") is None


# --- bcrypt's 72-byte limit ---------------------------------------------------------------


def test_73_byte_password_on_register_is_422(api: Api, watch: Watch, database_url: str) -> None:
    result = api.register("ada@example.com", LONG_PASSWORD)
    assert_problem(result, 422, "password-too-long", ["password"])
    assert user_row(database_url, "ada@example.com") is None
    watch.assert_clean(result, LONG_PASSWORD)


def test_72_byte_password_is_accepted_and_works(api: Api) -> None:
    password = "é" * 36  # exactly 72 bytes
    assert api.register("ada@example.com", password).status_code == 201
    assert api.login("ada@example.com", password).status_code == 200


def test_73_byte_password_on_create_user_is_422(
    api: Api, admin: dict, watch: Watch, database_url: str
) -> None:
    result = api.client.simulate_post(
        "/api/v1/users",
        json={"email": "ada@example.com", "password": LONG_PASSWORD},
        headers=bearer(admin["access_token"]),
    )
    assert_problem(result, 422, "password-too-long", ["password"])
    assert user_row(database_url, "ada@example.com") is None
    watch.assert_clean(result, LONG_PASSWORD)


def test_73_byte_password_on_reset_confirm_is_422(api: Api, watch: Watch) -> None:
    result = api.client.simulate_post(
        "/api/v1/auth/password-reset/confirm",
        json={"token": "whatever", "new_password": LONG_PASSWORD},
    )
    assert_problem(result, 422, "password-too-long", ["new_password"])
    watch.assert_clean(result, LONG_PASSWORD)


def test_73_byte_password_on_change_password_is_422(
    api: Api, watch: Watch, database_url: str
) -> None:
    user = api.user("ada@example.com")
    before = user_row(database_url, "ada@example.com").hashed_password
    result = api.client.simulate_put(
        "/api/v1/users/me/password",
        json={"current_password": PASSWORD, "new_password": LONG_PASSWORD},
        headers=bearer(user["access_token"]),
    )
    assert_problem(result, 422, "password-too-long", ["new_password"])
    assert user_row(database_url, "ada@example.com").hashed_password == before
    watch.assert_clean(result, LONG_PASSWORD)


def test_73_byte_password_on_login_is_401(api: Api, watch: Watch) -> None:
    api.register("ada@example.com")
    # Its first 72 bytes equal a registered password: bcrypt would accept it if truncated.
    assert api.register("bob@example.com", "é" * 36).status_code == 201
    for email in ("ada@example.com", "bob@example.com", "nobody@example.com"):
        result = api.login(email, LONG_PASSWORD)
        assert_problem(result, 401, "invalid-credentials")
        watch.assert_clean(result, LONG_PASSWORD)


# --- parser limits --------------------------------------------------------------------------


NESTED = [
    "[" * 10000,
    '{"a":' * 5000,
    "[" * 10000 + "]" * 10000,
    '{"a":' * 5000 + "1" + "}" * 5000,
    "[" * 500 + "]" * 500,
    '{"email": ' + "[" * 10000 + "]" * 10000 + "}",
]


@pytest.mark.parametrize("path", ["/api/v1/auth/register", "/api/v1/auth/login"])
def test_deeply_nested_json_is_400_or_422(api: Api, watch: Watch, path: str) -> None:
    for raw in NESTED:
        result = api.client.simulate_post(path, body=raw.encode(), headers=JSON)
        assert result.status_code in (400, 422), result.text
        assert_problem(result, result.status_code)
        watch.assert_clean(result, CANARY)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_json_constants_are_400(api: Api, watch: Watch, constant: str) -> None:
    raw = '{"email": "a@example.com", "password": "' + CANARY + '", "full_name": ' + constant + "}"
    result = api.client.simulate_post("/api/v1/auth/register", body=raw.encode(), headers=JSON)
    assert_problem(result, 400, "malformed-json")
    watch.assert_clean(result, CANARY)


def test_huge_number_in_body_is_a_clean_4xx(api: Api, watch: Watch) -> None:
    raw = '{"email": "a@example.com", "password": "' + CANARY + '", "full_name": ' + "9" * 5000
    result = api.client.simulate_post(
        "/api/v1/auth/register", body=(raw + "}").encode(), headers=JSON
    )
    assert result.status_code in (400, 422)
    assert_problem(result, result.status_code)
    watch.assert_clean(result, CANARY)


def test_body_over_64_kib_is_413(api: Api, watch: Watch, database_url: str) -> None:
    raw = json.dumps({"email": "a@example.com", "password": CANARY, "full_name": "x" * 70000})
    result = api.client.simulate_post("/api/v1/auth/register", body=raw.encode(), headers=JSON)
    assert_problem(result, 413, "content-too-large")
    watch.assert_clean(result, CANARY)


def test_body_just_under_64_kib_is_validated_not_refused(api: Api, watch: Watch) -> None:
    raw = json.dumps({"email": "a@example.com", "password": CANARY, "full_name": "x" * 60000})
    result = api.client.simulate_post("/api/v1/auth/register", body=raw.encode(), headers=JSON)
    assert_problem(result, 422, "validation-error", ["full_name"])
    watch.assert_clean(result, CANARY)


# --- parameters -----------------------------------------------------------------------------


BAD_IDS = [
    "not-a-uuid",
    "1",
    "0b6f0a4e3c1d4a579c2e5d8f1e7a9b01",
    "0b6f0a4e-3c1d-4a57-9c2e-5d8f1e7a9b0g",
    "{0b6f0a4e-3c1d-4a57-9c2e-5d8f1e7a9b01}",
    "%00",
    "' OR 1=1 --",
    "me",
]


def test_non_uuid_user_id_is_422(api: Api, admin: dict, watch: Watch) -> None:
    for user_id, method in itertools.product(BAD_IDS, ("GET", "PUT", "DELETE")):
        kwargs: dict[str, Any] = {"headers": bearer(admin["access_token"])}
        if method == "PUT":
            kwargs["json"] = {"full_name": "x"}
        result = api.client.simulate_request(method, f"/api/v1/users/{user_id}", **kwargs)
        assert_problem(result, 422, "validation-error", ["user_id"])
        watch.assert_clean(result, CANARY)


PAGING = [
    ("limit=99999999999999999999999", "limit"),
    ("limit=" + "9" * 100, "limit"),
    ("offset=-1", "offset"),
    ("offset=99999999999999999999999", "offset"),
    ("limit=abc", "limit"),
    ("limit=1.5", "limit"),
    ("limit=1e2", "limit"),
    ("limit=", "limit"),
    ("limit=1&limit=2", "limit"),
    ("offset=%00", "offset"),
    ("limit=0x10", "limit"),
    ("limit=%EF%BC%95", "limit"),  # a full-width digit five
]


def test_bad_paging_parameters_are_422(api: Api, admin: dict, watch: Watch) -> None:
    for query, field in PAGING:
        result = api.client.simulate_get(
            "/api/v1/users", query_string=query, headers=bearer(admin["access_token"])
        )
        assert_problem(result, 422, "validation-error", [field])
        watch.assert_clean(result, CANARY)


def test_unknown_query_parameters_are_ignored(api: Api, admin: dict) -> None:
    result = api.client.simulate_get(
        "/api/v1/users", query_string="limit=1&debug=1", headers=bearer(admin["access_token"])
    )
    assert result.status_code == 200
    assert result.json["limit"] == 1


# --- odd characters -----------------------------------------------------------------------


def test_unicode_in_strings_round_trips(api: Api, database_url: str) -> None:
    result = api.register("ÄDA@Exämple.com", "pässwörd-日本語-🎉", full_name="Ada 🎉 日本語")
    assert result.status_code == 201, result.text
    assert result.json["email"] == "äda@exämple.com"
    assert result.json["full_name"] == "Ada 🎉 日本語"
    assert api.login("äda@exämple.com", "pässwörd-日本語-🎉").status_code == 200


def test_null_byte_in_password_is_refused(api: Api, watch: Watch) -> None:
    password = "before\x00after-" + CANARY
    result = api.register("ada@example.com", password)
    assert_problem(result, 422, "validation-error", fields=["password"])
    watch.assert_clean(result, CANARY)


# NOTE: PostgreSQL cannot store NUL in text and no driver can encode an unpaired
# surrogate, so every JSON string carrying one is refused as a 422 naming the field.
@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"email": "ada@example.com", "password": PASSWORD, "full_name": "Ada\x00Lovelace"},
            "full_name",
        ),
        ({"email": "a\x00da@example.com", "password": PASSWORD}, "email"),
    ],
    ids=["full_name", "email"],
)
def test_null_byte_in_stored_strings_is_422(api: Api, body: dict, field: str) -> None:
    result = api.client.simulate_post("/api/v1/auth/register", json=body)
    assert_problem(result, 422, "validation-error", fields=[field])


@pytest.mark.parametrize(
    "path",
    ["/api/v1/auth/login", "/api/v1/auth/password-reset"],
    ids=["login", "password-reset"],
)
def test_null_byte_in_looked_up_email_is_422(client: testing.TestClient, path: str) -> None:
    body = {"email": "a\x00@example.com", "password": PASSWORD}
    if path.endswith("password-reset"):
        del body["password"]
    result = client.simulate_post(path, json=body)
    assert_problem(result, 422, "validation-error", fields=["email"])


def test_null_byte_in_full_name_update_is_422(api: Api) -> None:
    user = api.user("ada@example.com")
    result = api.client.simulate_put(
        f"/api/v1/users/{user['id']}",
        json={"full_name": "x\x00y"},
        headers=bearer(user["access_token"]),
    )
    assert_problem(result, 422, "validation-error", fields=["full_name"])


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"email": "a\\ud800@example.com", "password": "long enough"}', "email"),
        (
            '{"email": "a@example.com", "password": "long enough", "full_name": "\\udfff"}',
            "full_name",
        ),
    ],
    ids=["email", "full_name"],
)
def test_lone_surrogate_in_stored_strings_is_422(api: Api, raw: str, field: str) -> None:
    result = api.client.simulate_post("/api/v1/auth/register", body=raw.encode(), headers=JSON)
    assert_problem(result, 422, "validation-error", fields=[field])


def test_lone_surrogate_in_password_or_token_is_handled(client: testing.TestClient) -> None:
    raw = '{"email": "ada@example.com", "password": "long enough\\ud800"}'
    registered = client.simulate_post("/api/v1/auth/register", body=raw.encode(), headers=JSON)
    assert registered.status_code in (201, 422), registered.text
    for path in ("/api/v1/auth/refresh", "/api/v1/auth/logout"):
        raw = '{"refresh_token": "\\ud800abc"}'
        result = client.simulate_post(path, body=raw.encode(), headers=JSON)
        assert result.status_code in (204, 401, 422), result.text
