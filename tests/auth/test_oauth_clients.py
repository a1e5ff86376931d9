"""The OAuth client registry's admin API: create, list, get, replace, delete, rotate.

Secrets are shown once and stored as SHA-256; the registration rules (RFC 9700, RFC 8252)
answer 422 naming the field; everything is admins only.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy
from auth_api import Api, bearer
from authcheck import assert_problem, rows, sha256_hex

from auth_service.db.models import AuditEvent, OAuthClient, User
from auth_service.services.oauth_clients import verify_client_secret
from auth_service.settings import Settings, SettingsError

CLIENTS = "/api/v1/oauth-clients"

WEB_APP = {
    "name": "Grafana",
    "client_type": "confidential",
    "redirect_uris": ["https://grafana.example.com/login/generic_oauth"],
    "grant_types": ["authorization_code", "refresh_token"],
    "scopes": ["openid", "profile", "email"],
}
NATIVE_APP = {
    "name": "CLI",
    "client_type": "public",
    "redirect_uris": ["http://127.0.0.1/callback", "com.example.cli:/callback"],
    "grant_types": ["authorization_code", "refresh_token"],
    "scopes": ["openid", "offline_access"],
}
MACHINE = {
    "name": "Billing job",
    "client_type": "confidential",
    "grant_types": ["client_credentials"],
}


def client_url(client_id: str) -> str:
    return f"{CLIENTS}/{client_id}"


def stored(database_url: str, client_id: str) -> Any:
    """The client's row, straight from the database (None when gone)."""
    found = rows(
        database_url, sqlalchemy.select(OAuthClient).where(OAuthClient.client_id == client_id)
    )
    return found[0] if found else None


@pytest.fixture
def admin_headers(api: Api, database_url: str) -> dict[str, str]:
    return bearer(api.admin(database_url)["access_token"])


def create(api: Api, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    result = api.client.simulate_post(CLIENTS, json=body, headers=headers)
    assert result.status_code == 201, result.text
    return dict(result.json)


# --- create -------------------------------------------------------------------------------


def test_confidential_client_gets_its_secret_once_and_only_its_hash_is_stored(
    api: Api, database_url: str, admin_headers: dict[str, str]
) -> None:
    result = api.client.simulate_post(CLIENTS, json=WEB_APP, headers=admin_headers)
    assert result.status_code == 201, result.text
    body = result.json
    assert result.headers["location"] == client_url(body["client_id"])
    assert result.headers["cache-control"] == "no-store"
    assert result.headers["pragma"] == "no-cache"
    assert len(body["client_id"]) == 22
    secret = body["client_secret"]
    assert len(secret) == 43  # 256 bits, URL-safe base64
    for field in ("name", "client_type", "redirect_uris", "grant_types", "scopes"):
        assert body[field] == WEB_APP[field]

    row = stored(database_url, body["client_id"])
    assert row.client_secret_hash == sha256_hex(secret)
    assert secret not in repr(tuple(row))
    assert row.redirect_uris == WEB_APP["redirect_uris"]
    assert verify_client_secret(row, secret)
    assert not verify_client_secret(row, secret[:-1] + ("A" if secret[-1] != "A" else "B"))

    # Never again: not when read, not in the list.
    read = api.client.simulate_get(client_url(body["client_id"]), headers=admin_headers)
    assert read.status_code == 200, read.text
    assert "client_secret" not in read.json
    assert {k: v for k, v in body.items() if k != "client_secret"} == read.json
    listed = api.client.simulate_get(CLIENTS, headers=admin_headers)
    for leak in (secret, row.client_secret_hash, "client_secret"):
        assert leak not in read.text and leak not in listed.text


def test_public_client_has_no_secret(
    api: Api, database_url: str, admin_headers: dict[str, str]
) -> None:
    body = create(api, admin_headers, NATIVE_APP)
    assert "client_secret" not in body
    row = stored(database_url, body["client_id"])
    assert row.client_secret_hash is None and row.client_type == "public"
    assert not verify_client_secret(row, "")
    rotated = api.client.simulate_post(
        f"{client_url(body['client_id'])}/secret", headers=admin_headers
    )
    assert_problem(rotated, 409, "oauth-client-is-public")


def test_machine_client_needs_no_redirect_uris(
    api: Api, database_url: str, admin_headers: dict[str, str]
) -> None:
    body = create(api, admin_headers, MACHINE)
    assert (body["redirect_uris"], body["scopes"]) == ([], [])
    assert stored(database_url, body["client_id"]).grant_types == ["client_credentials"]


def test_api_scopes_come_from_the_setting(make_client: Any, database_url: str) -> None:
    api = Api(make_client(oauth_api_scopes=("invoices:read", "invoices:write")))
    headers = bearer(api.admin(database_url)["access_token"])
    body = create(api, headers, {**MACHINE, "scopes": ["invoices:read"]})
    assert body["scopes"] == ["invoices:read"]
    refused = api.client.simulate_post(
        CLIENTS, json={**MACHINE, "scopes": ["invoices:read", "payroll:read"]}, headers=headers
    )
    problem = assert_problem(refused, 422, "validation-error", ["scopes.1"])
    assert [e["code"] for e in problem["errors"]] == ["unknown-scope"]


# --- validation: each rule names its field ----------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "code"),
    [
        ({"redirect_uris": ["https://app.example.com/cb#frag"]}, "redirect_uris.0", "redirect-uri"),
        ({"redirect_uris": ["https://*.example.com/cb"]}, "redirect_uris.0", "redirect-uri"),
        ({"redirect_uris": ["/relative/cb"]}, "redirect_uris.0", "redirect-uri"),
        ({"redirect_uris": ["http://app.example.com/cb"]}, "redirect_uris.0", "redirect-uri"),
        (
            {"redirect_uris": ["http://127.0.0.1.evil.example/cb"]},
            "redirect_uris.0",
            "redirect-uri",
        ),
        (
            {"redirect_uris": ["https://user:pw@app.example.com/cb"]},
            "redirect_uris.0",
            "redirect-uri",
        ),
        ({"redirect_uris": ["https:///no-host"]}, "redirect_uris.0", "redirect-uri"),
        ({"redirect_uris": ["http://[::1/cb"]}, "redirect_uris.0", "redirect-uri"),
        ({"redirect_uris": ["http://127.0.0.1:99999/cb"]}, "redirect_uris.0", "redirect-uri"),
        ({"redirect_uris": ["https://app.example.com/a b"]}, "redirect_uris.0", "redirect-uri"),
        # A confidential client is a web server: no custom schemes.
        ({"redirect_uris": ["com.example.app:/cb"]}, "redirect_uris.0", "redirect-uri"),
        ({"redirect_uris": []}, "redirect_uris", "required"),
        ({"grant_types": ["refresh_token"], "redirect_uris": []}, "grant_types", "grant-rule"),
        ({"scopes": ["openid", "admin"]}, "scopes.1", "unknown-scope"),
        ({"grant_types": []}, "grant_types", "minItems"),
        ({"grant_types": ["implicit"]}, "grant_types.0", "enum"),
        ({"grant_types": ["password"]}, "grant_types.0", "enum"),
        ({"scopes": ["openid", "openid"]}, "scopes", "uniqueItems"),
        ({"client_type": "trusted"}, "client_type", "enum"),
        ({"name": ""}, "name", "minLength"),
    ],
)
def test_confidential_registration_rules_name_the_field(
    api: Api,
    database_url: str,
    admin_headers: dict[str, str],
    changes: dict[str, Any],
    field: str,
    code: str,
) -> None:
    result = api.client.simulate_post(CLIENTS, json={**WEB_APP, **changes}, headers=admin_headers)
    problem = assert_problem(result, 422, "validation-error", [field])
    assert (field, code) in {(e["field"], e["code"]) for e in problem["errors"]}, problem
    assert rows(database_url, sqlalchemy.select(OAuthClient)) == []


@pytest.mark.parametrize(
    ("changes", "field", "code"),
    [
        ({"grant_types": ["client_credentials"], "redirect_uris": []}, "grant_types", "grant-rule"),
        ({"redirect_uris": ["myapp:/cb"]}, "redirect_uris.0", "redirect-uri"),
        ({"redirect_uris": ["javascript:alert(1)"]}, "redirect_uris.0", "redirect-uri"),
    ],
)
def test_public_registration_rules_name_the_field(
    api: Api, admin_headers: dict[str, str], changes: dict[str, Any], field: str, code: str
) -> None:
    result = api.client.simulate_post(
        CLIENTS, json={**NATIVE_APP, **changes}, headers=admin_headers
    )
    problem = assert_problem(result, 422, "validation-error", [field])
    assert (field, code) in {(e["field"], e["code"]) for e in problem["errors"]}, problem


def test_client_credentials_clients_neither_redirect_nor_hold_user_scopes(
    api: Api, admin_headers: dict[str, str]
) -> None:
    body = {**MACHINE, "redirect_uris": ["https://a.example/cb"], "scopes": ["email"]}
    result = api.client.simulate_post(CLIENTS, json=body, headers=admin_headers)
    problem = assert_problem(result, 422, "validation-error", ["redirect_uris", "scopes.0"])
    assert problem["detail"] == "Invalid fields: redirect_uris, scopes.0"


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example.com/cb?tenant=1",
        "http://127.0.0.1:8765/cb",
        "http://[::1]/cb",
        "http://localhost:3000/cb",
        "com.example.app:/oauth2redirect",
    ],
)
def test_allowed_redirect_uris(api: Api, admin_headers: dict[str, str], uri: str) -> None:
    assert create(api, admin_headers, {**NATIVE_APP, "redirect_uris": [uri]})["redirect_uris"] == [
        uri
    ]


# --- list, get, replace, delete, rotate ---------------------------------------------------------


def test_list_pages_in_creation_order_with_total(api: Api, admin_headers: dict[str, str]) -> None:
    ids = [
        create(api, admin_headers, {**MACHINE, "name": f"job {n}"})["client_id"] for n in range(3)
    ]
    first = api.client.simulate_get(
        CLIENTS, params={"offset": 0, "limit": 2}, headers=admin_headers
    )
    assert first.status_code == 200, first.text
    assert (first.json["total"], first.json["offset"], first.json["limit"]) == (3, 0, 2)
    assert [c["client_id"] for c in first.json["items"]] == ids[:2]
    rest = api.client.simulate_get(CLIENTS, params={"offset": 2}, headers=admin_headers)
    assert [c["name"] for c in rest.json["items"]] == ["job 2"]
    assert rest.json["limit"] == 50
    too_big = api.client.simulate_get(CLIENTS, params={"limit": 101}, headers=admin_headers)
    assert_problem(too_big, 422, "validation-error", ["limit"])


def test_replace_changes_everything_but_type_and_secret(
    api: Api, database_url: str, admin_headers: dict[str, str]
) -> None:
    created = create(api, admin_headers, WEB_APP)
    url = client_url(created["client_id"])
    before = stored(database_url, created["client_id"])
    change = {
        "name": "Dashboards",
        "redirect_uris": ["https://dashboards.example.com/cb"],
        "grant_types": ["authorization_code", "client_credentials"],
        "scopes": ["openid"],
    }
    replaced = api.client.simulate_put(url, json=change, headers=admin_headers)
    assert replaced.status_code == 200, replaced.text
    assert {k: replaced.json[k] for k in change} == change
    assert replaced.json["client_type"] == "confidential"
    after = stored(database_url, created["client_id"])
    assert after.redirect_uris == change["redirect_uris"] and after.name == "Dashboards"
    assert after.client_secret_hash == before.client_secret_hash
    assert "client_secret" not in replaced.json

    immutable = api.client.simulate_put(
        url, json={**change, "client_type": "public"}, headers=admin_headers
    )
    assert_problem(immutable, 422, "validation-error", ["client_type"])
    partial = api.client.simulate_put(url, json={"name": "x"}, headers=admin_headers)
    assert_problem(partial, 422, "validation-error", ["redirect_uris"])
    broken = api.client.simulate_put(
        url, json={**change, "redirect_uris": ["http://example.com/cb"]}, headers=admin_headers
    )
    assert_problem(broken, 422, "validation-error", ["redirect_uris.0"])
    assert stored(database_url, created["client_id"]).name == "Dashboards"


def test_public_client_cannot_gain_client_credentials_by_replacement(
    api: Api, admin_headers: dict[str, str]
) -> None:
    created = create(api, admin_headers, NATIVE_APP)
    body = {**NATIVE_APP, "grant_types": ["authorization_code", "client_credentials"]}
    del body["client_type"]
    result = api.client.simulate_put(
        client_url(created["client_id"]), json=body, headers=admin_headers
    )
    assert_problem(result, 422, "validation-error", ["grant_types"])


def test_rotate_secret_replaces_the_old_one(
    api: Api, database_url: str, admin_headers: dict[str, str]
) -> None:
    created = create(api, admin_headers, WEB_APP)
    result = api.client.simulate_post(
        f"{client_url(created['client_id'])}/secret", headers=admin_headers
    )
    assert result.status_code == 200, result.text
    assert result.headers["cache-control"] == "no-store"
    assert result.json["client_id"] == created["client_id"]
    new_secret = result.json["client_secret"]
    assert new_secret != created["client_secret"]
    row = stored(database_url, created["client_id"])
    assert row.client_secret_hash == sha256_hex(new_secret)
    assert verify_client_secret(row, new_secret)
    assert not verify_client_secret(row, created["client_secret"])


def test_delete_removes_the_client(
    api: Api, database_url: str, admin_headers: dict[str, str]
) -> None:
    created = create(api, admin_headers, WEB_APP)
    url = client_url(created["client_id"])
    deleted = api.client.simulate_delete(url, headers=admin_headers)
    assert deleted.status_code == 204, deleted.text
    assert stored(database_url, created["client_id"]) is None
    replacement = {k: v for k, v in WEB_APP.items() if k != "client_type"}
    for again in (
        api.client.simulate_get(url, headers=admin_headers),
        api.client.simulate_delete(url, headers=admin_headers),
        api.client.simulate_put(url, json=replacement, headers=admin_headers),
        api.client.simulate_post(f"{url}/secret", headers=admin_headers),
    ):
        assert_problem(again, 404, "oauth-client-not-found")


def test_unknown_client_id_is_404_and_a_malformed_one_422(
    api: Api, admin_headers: dict[str, str]
) -> None:
    assert_problem(
        api.client.simulate_get(client_url("nope"), headers=admin_headers),
        404,
        "oauth-client-not-found",
    )
    assert_problem(
        api.client.simulate_get(client_url("not%20an%20id"), headers=admin_headers),
        422,
        "validation-error",
        ["client_id"],
    )


# --- admins only ------------------------------------------------------------------------------


def test_every_operation_is_admin_only(
    api: Api, database_url: str, admin_headers: dict[str, str]
) -> None:
    created = create(api, admin_headers, WEB_APP)
    url = client_url(created["client_id"])
    user = bearer(api.user("ada@example.com")["access_token"])
    replacement = {k: v for k, v in WEB_APP.items() if k != "client_type"}
    attempts = [
        api.client.simulate_get(CLIENTS, headers=user),
        api.client.simulate_post(CLIENTS, json=WEB_APP, headers=user),
        api.client.simulate_get(url, headers=user),
        api.client.simulate_put(url, json=replacement, headers=user),
        api.client.simulate_delete(url, headers=user),
        api.client.simulate_post(f"{url}/secret", headers=user),
    ]
    for result in attempts:
        assert_problem(result, 403, "forbidden")
    assert_problem(api.client.simulate_get(CLIENTS), 401, "missing-token")
    # Nothing changed: one client, its original secret and name.
    row = stored(database_url, created["client_id"])
    assert row.client_secret_hash == sha256_hex(created["client_secret"])
    assert len(rows(database_url, sqlalchemy.select(OAuthClient))) == 1


# --- configuration ------------------------------------------------------------------------------


def test_oauth_api_scopes_setting() -> None:
    assert Settings.from_env({}).oauth_api_scopes == ()
    spaced = Settings.from_env({"OAUTH_API_SCOPES": " invoices:read, invoices:write  orders "})
    assert spaced.oauth_api_scopes == ("invoices:read", "invoices:write", "orders")
    with pytest.raises(SettingsError, match="OAUTH_API_SCOPES"):
        Settings.from_env({"OAUTH_API_SCOPES": 'quote"d'})


# --- audit trail ----------------------------------------------------------------------------


def test_every_registry_change_is_audited_without_the_secret(
    api: Api, database_url: str, admin_headers: dict[str, str]
) -> None:
    created = create(api, admin_headers, WEB_APP)
    client_id, secret = created["client_id"], created["client_secret"]
    url = client_url(client_id)
    changed = {**WEB_APP, "name": "Grafana 2", "scopes": ["openid"]}
    del changed["client_type"]
    assert api.client.simulate_put(url, json=changed, headers=admin_headers).status_code == 200
    rotated = api.client.simulate_post(f"{url}/secret", headers=admin_headers)
    assert rotated.status_code == 200, rotated.text
    # A refused change (a rule broken) happened not, and leaves no event.
    bad = {**changed, "redirect_uris": ["http://example.com/cb"]}
    assert api.client.simulate_put(url, json=bad, headers=admin_headers).status_code == 422
    assert api.client.simulate_delete(url, headers=admin_headers).status_code == 204

    events = rows(
        database_url,
        sqlalchemy.select(AuditEvent.__table__)
        .where(AuditEvent.event_type.like("oauth_client.%"))
        .order_by(AuditEvent.occurred_at, AuditEvent.id),
    )
    admin_id = rows(database_url, sqlalchemy.select(User.id).where(User.is_superuser))[0].id
    assert [(e.event_type, e.details) for e in events] == [
        ("oauth_client.created", {"client_id": client_id}),
        ("oauth_client.updated", {"client_id": client_id, "fields": ["name", "scopes"]}),
        ("oauth_client.updated", {"client_id": client_id, "fields": ["client_secret"]}),
        ("oauth_client.deleted", {"client_id": client_id, "sessions_revoked": 0}),
    ]
    assert {e.actor_id for e in events} == {admin_id}
    stored_text = str([tuple(e) for e in events])
    for secret_value in (secret, rotated.json["client_secret"], sha256_hex(secret)):
        assert secret_value not in stored_text
    listed = api.client.simulate_get(
        "/api/v1/audit-events", params={"type": "oauth_client.updated"}, headers=admin_headers
    )
    assert listed.status_code == 200, listed.text
    assert [item["details"] for item in listed.json["items"]] == [
        {"client_id": client_id, "fields": ["client_secret"]},
        {"client_id": client_id, "fields": ["name", "scopes"]},
    ]
